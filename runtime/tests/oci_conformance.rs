//! The runtime spec's cases that runc and crun handle, on real bundles through the CLI (root
//! required): user namespaces through `create`/`start`, `rootfsPropagation`, FIFO devices, a
//! mount namespace joined by path, and what hook failures do.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bundle::Bundle;
use serde_json::json;

/// A directory bound read-write at `/out` in the container, writable by any uid (a user
/// namespace's root is an unprivileged host uid).
fn out_dir(b: &Bundle) -> PathBuf {
    let out = b.dir.join("out");
    fs::create_dir_all(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
    // The mount point exists: a user namespace's root cannot create it in the host-owned rootfs.
    fs::create_dir_all(b.dir.join("rootfs/out")).unwrap();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/out", "type": "bind",
            "source": out, "options": ["rbind", "rw"]}));
    });
    out
}

/// Waits up to 10 s for `file` to hold a line `done`; returns its text.
fn wait_done(file: &Path) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(file).unwrap_or_default();
        if text.lines().any(|l| l == "done") || Instant::now() > end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `mount ARGS`, panicking on failure.
fn mount(args: &[&str]) {
    let status = Command::new("mount").args(args).status().unwrap();
    assert!(status.success(), "mount {args:?} failed");
}

/// Unmounts (recursively, lazily) what a test mounted, even when it fails.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-R").arg("-l").arg(p).status();
        }
    }
}

fn add_user_namespace(b: &Bundle) {
    b.edit(|c| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
}

#[test]
fn user_namespace_through_create_start_state_kill_delete() {
    let b = Bundle::new();
    let out = out_dir(&b);
    b.script(
        "{ id -u; cat /proc/self/uid_map; stat -c '%F %a' /dev/fifo0; echo done; } > /out/log; exec sleep 60",
    );
    add_user_namespace(&b);
    b.edit(|c| c["linux"]["devices"] = json!([{"path": "/dev/fifo0", "type": "p", "fileMode": 0o620}]));

    let (code, _, err) = b.cli(&["create", "u1"]);
    assert_eq!(code, 0, "create: {err}");
    let s = b.state("u1");
    assert_eq!(s["status"], "created", "the container's init must wait for start: {s}\n{err}");
    let pid = s["pid"].as_i64().unwrap();
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(uid_map.split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"]);

    let (code, _, err) = b.cli(&["start", "u1"]);
    assert_eq!(code, 0, "start: {err}");
    let text = wait_done(&out.join("log"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "root in the user namespace: {text}");
    assert_eq!(
        lines.get(1).map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["0", "100000", "65536"])
    );
    assert_eq!(lines.get(2), Some(&"fifo 620"), "a FIFO device, made in the user namespace: {text}");
    assert_eq!(b.state("u1")["status"], "running");
    // Seen from the host, the process runs as the mapped uid.
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.contains("100000")), "{status}");

    let (code, _, err) = b.cli(&["kill", "u1", "KILL"]);
    assert_eq!(code, 0, "kill: {err}");
    assert_eq!(b.wait_status("u1", "stopped")["status"], "stopped");
    let (code, _, err) = b.cli(&["delete", "u1"]);
    assert_eq!(code, 0, "delete: {err}");
    assert!(!b.root.join("u1").exists());
}

#[test]
fn a_failure_after_create_is_told_on_stderr() {
    // A step that fails once `create` has returned (here the command, missing) must not vanish:
    // the container's stderr (create's) says which step failed.
    let b = Bundle::new();
    b.edit(|c| {
        c["process"]["terminal"] = json!(false);
        c["process"]["args"] = json!(["/no/such/program"]);
    });
    let err_file = b.dir.join("create.err");
    let status = Command::new(common::bundle::BIN)
        .arg("--root")
        .arg(&b.root)
        .args(["create", "e1"])
        .current_dir(&b.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err_file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(b.cli(&["start", "e1"]).0, 0);
    assert_eq!(b.wait_status("e1", "stopped")["status"], "stopped");
    let end = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&err_file).unwrap().contains("/no/such/program") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = fs::read_to_string(&err_file).unwrap();
    assert!(err.contains("exec /no/such/program") && err.contains("errno 2"), "{err}");
    assert_eq!(b.cli(&["delete", "e1"]).0, 0);
}

/// The container's `/` line of `/proc/self/mountinfo`, and whether it saw the host's mount at
/// `/mnt` made between `create` and `start`, for one `rootfsPropagation`.
fn propagation_seen(propagation: &str) -> (String, bool) {
    let b = Bundle::new();
    let out = out_dir(&b);
    let rootfs = b.dir.join("rootfs");
    // The rootfs on a shared mount of its own, as on a systemd host.
    let _cleanup = Unmount(vec![rootfs.clone()]);
    mount(&["--bind", rootfs.to_str().unwrap(), rootfs.to_str().unwrap()]);
    mount(&["--make-shared", rootfs.to_str().unwrap()]);
    b.script(
        "{ awk '$5 == \"/\"' /proc/self/mountinfo; \
         if [ -e /mnt/marker ]; then echo seen; else echo unseen; fi; echo done; } > /out/log",
    );
    b.edit(|c| c["linux"]["rootfsPropagation"] = json!(propagation));
    let id = format!("p-{propagation}");
    let (code, _, err) = b.cli(&["create", &id]);
    assert_eq!(code, 0, "create with rootfsPropagation {propagation}: {err}");
    // A host mount under the rootfs, after the container's mounts were made.
    let marker_dir = rootfs.join("mnt");
    mount(&["-t", "tmpfs", "-o", "size=1m", "marker", marker_dir.to_str().unwrap()]);
    fs::write(marker_dir.join("marker"), "x").unwrap();
    let (code, _, err) = b.cli(&["start", &id]);
    assert_eq!(code, 0, "start: {err}");
    let text = wait_done(&out.join("log"));
    assert_eq!(b.wait_status(&id, "stopped")["status"], "stopped");
    assert_eq!(b.cli(&["delete", &id]).0, 0);
    let root_line = text.lines().next().unwrap_or_default().to_string();
    assert_eq!(root_line.split_whitespace().nth(4), Some("/"), "no root line: {text}");
    (root_line, text.lines().any(|l| l == "seen"))
}

/// The optional fields of a mountinfo line (between the options and `-`).
fn optional_fields(line: &str) -> Vec<String> {
    line.split_whitespace()
        .skip(6)
        .take_while(|f| *f != "-")
        .map(|f| f.split(':').next().unwrap().to_string())
        .collect()
}

#[test]
fn rootfs_propagation_shared_slave_private_unbindable() {
    let (line, seen) = propagation_seen("slave");
    assert_eq!(optional_fields(&line), ["master"], "{line}");
    assert!(seen, "a slave root receives the host's mounts");

    let (line, seen) = propagation_seen("rslave");
    assert_eq!(optional_fields(&line), ["master"], "{line}");
    assert!(seen, "a slave root receives the host's mounts");

    let (line, seen) = propagation_seen("private");
    assert_eq!(optional_fields(&line), Vec::<String>::new(), "{line}");
    assert!(!seen, "a private root receives nothing from the host");

    let (line, _) = propagation_seen("shared");
    assert!(optional_fields(&line).contains(&"shared".to_string()), "{line}");

    let (line, seen) = propagation_seen("unbindable");
    assert_eq!(optional_fields(&line), ["unbindable"], "{line}");
    assert!(!seen);
}

#[test]
fn a_fifo_device_is_made() {
    let b = Bundle::new();
    b.script("stat -c '%F %a %u:%g' /dev/pipe/p0; echo hi > /dev/pipe/p0 & cat /dev/pipe/p0; wait");
    b.edit(|c| {
        c["linux"]["devices"] =
            json!([{"path": "/dev/pipe/p0", "type": "p", "fileMode": 0o646, "uid": 7, "gid": 8}]);
    });
    let (code, out, err) = b.cli(&["run", "f1"]);
    assert_eq!(code, 0, "{err}");
    // Others may read and write: the container's root has no CAP_DAC_OVERRIDE.
    assert_eq!(out, "fifo 646 7:8\nhi\n");

    b.edit(|c| c["linux"]["devices"] = json!([{"path": "/dev/x", "type": "a", "major": 1, "minor": 3}]));
    let (code, _, err) = b.cli(&["run", "f2"]);
    assert_eq!(code, 1);
    assert!(err.contains("linux.devices[0].type"), "{err}");
}

#[test]
fn a_mount_namespace_is_joined_by_path() {
    let b = Bundle::new();
    // A mount namespace kept by a bind mount of its nsfs file (the mount holding the file must
    // be private), in which a tmpfs with a marker sits on the rootfs's /mnt.
    let nsdir = b.dir.join("ns");
    fs::create_dir_all(&nsdir).unwrap();
    let nsfile = nsdir.join("mnt");
    let _cleanup = Unmount(vec![nsdir.clone(), nsfile.clone()]);
    mount(&["--bind", nsdir.to_str().unwrap(), nsdir.to_str().unwrap()]);
    mount(&["--make-private", nsdir.to_str().unwrap()]);
    fs::write(&nsfile, "").unwrap();
    let mnt = b.dir.join("rootfs/mnt");
    let status = Command::new("unshare")
        .arg(format!("--mount={}", nsfile.display()))
        .args(["--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs -o size=1m joined {0} && echo joined > {0}/marker", mnt.display()))
        .status()
        .unwrap();
    assert!(status.success(), "unshare failed");
    assert!(!mnt.join("marker").exists(), "the marker must live only in the other namespace");

    b.script("cat /mnt/marker; readlink /proc/self/ns/mnt");
    b.edit(|c| {
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "mount" {
                n["path"] = json!(nsfile);
            }
        }
    });
    let (code, out, err) = b.cli(&["run", "m1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("joined\n"), "{out}");
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(&nsfile).unwrap().ino();
    assert!(out.contains(&format!("mnt:[{ino}]")), "not the joined namespace ({ino}): {out}");
}

#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_rest_go_on() {
    let b = Bundle::new();
    let log = b.dir.join("hooks.log");
    let runtime_log = b.dir.join("runtime.log");
    let note = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
    let fail = json!({"path": "/bin/false"});
    b.script("exec sleep 60");
    b.edit(|c| {
        c["hooks"] = json!({
            "poststart": [fail.clone(), note("poststart-after-failure")],
            "poststop": [fail.clone(), note("poststop-after-failure")],
        });
    });
    let runtime_log_arg = runtime_log.display().to_string();
    let (code, _, err) = b.cli(&["--log", &runtime_log_arg, "create", "h1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = b.cli(&["--log", &runtime_log_arg, "start", "h1"]);
    assert_eq!(code, 0, "a failing poststart hook must not fail start: {err}");
    assert!(err.contains("warning") && err.contains("hooks.poststart[0]"), "{err}");
    assert_eq!(b.state("h1")["status"], "running", "the container goes on");
    let (code, _, err) = b.cli(&["--log", &runtime_log_arg, "delete", "--force", "h1"]);
    assert_eq!(code, 0, "a failing poststop hook must not fail delete: {err}");
    assert!(err.contains("hooks.poststop[0]"), "{err}");
    assert!(!b.root.join("h1").exists(), "delete goes on after the failing hook");
    assert_eq!(fs::read_to_string(&log).unwrap(), "poststart-after-failure\npoststop-after-failure\n");
    let logged = fs::read_to_string(&runtime_log).unwrap();
    let warnings: Vec<&str> =
        logged.lines().filter(|l| l.contains("level=warning") && l.contains("hooks.")).collect();
    assert_eq!(warnings.len(), 2, "{logged}");

    // The same with `run`.
    b.script("exit 0");
    let (code, _, err) = b.cli(&["run", "h2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("hooks.poststart[0]") && err.contains("hooks.poststop[0]"), "{err}");
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 4);
}

#[test]
fn a_failing_start_container_hook_stops_the_container() {
    let b = Bundle::new();
    b.script("exec sleep 60");
    b.edit(|c| c["hooks"] = json!({"startContainer": [{"path": "/bin/false"}]}));
    let (code, _, err) = b.cli(&["create", "s1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = b.cli(&["start", "s1"]);
    assert_eq!(code, 1);
    assert!(err.contains("hooks.startContainer[0]"), "{err}");
    assert_eq!(b.wait_status("s1", "stopped")["status"], "stopped", "the runtime must stop the container");
    assert_eq!(b.cli(&["delete", "s1"]).0, 0);
}
