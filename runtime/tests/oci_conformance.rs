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

/// One bad config: what to change, and what the error must name.
type BadCase = (&'static str, fn(&mut serde_json::Value));

#[test]
fn invalid_and_unsupported_fields_are_refused_naming_them() {
    let cases: &[BadCase] = &[
        ("ociVersion: \"1.x\" is not a SemVer", |c| c["ociVersion"] = json!("1.x")),
        ("root.path: missing", |c| c["root"] = json!({"readonly": true})),
        ("process.user.uid: missing", |c| c["process"]["user"] = json!({"gid": 0})),
        ("process.rlimits[1].type: RLIMIT_NOFILE is given twice", |c| {
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10},
                                             {"type": "RLIMIT_NOFILE", "soft": 20, "hard": 20}])
        }),
        ("process.rlimits[0].soft: missing", |c| {
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 10}])
        }),
        ("linux.devices[0].major: missing", |c| {
            c["linux"]["devices"] = json!([{"path": "/dev/x", "type": "c", "minor": 3}])
        }),
        ("linux.namespaces[2]: duplicate namespace type", |c| {
            c["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "pid"}, {"type": "pid"}])
        }),
        ("linux.namespaces[0].path: \"netns\" must be an absolute path", |c| {
            c["linux"]["namespaces"] = json!([{"type": "network", "path": "netns"}, {"type": "mount"}])
        }),
        ("hooks.createRuntime[0].path: \"true\" must be an absolute path", |c| {
            c["hooks"] = json!({"createRuntime": [{"path": "true"}]})
        }),
        ("hooks.poststart[0].timeout: 0 must be", |c| {
            c["hooks"] = json!({"poststart": [{"path": "/bin/true", "timeout": 0}]})
        }),
        ("linux.seccomp.defaultErrnoRet", |c| {
            c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1})
        }),
        ("linux.seccomp.syscalls[0].errnoRet", |c| {
            c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]})
        }),
        (
            "linux.seccomp.syscalls[0].names: empty",
            |c| c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
        ),
        ("annotations: a key is empty", |c| c["annotations"] = json!({"": "x"})),
        ("linux.resources.devices[0].allow: missing", |c| {
            c["linux"]["resources"] = json!({"devices": [{"access": "rwm"}]})
        }),
        ("linux.resources.pids.limit: missing", |c| c["linux"]["resources"] = json!({"pids": {}})),
        ("process.apparmorProfile: AppArmor", |c| c["process"]["apparmorProfile"] = json!("docker-default")),
        ("process.selinuxLabel", |c| {
            c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0")
        }),
        ("linux.mountLabel", |c| c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0")),
        ("process.scheduler", |c| c["process"]["scheduler"] = json!({"policy": "SCHED_FIFO", "priority": 1})),
        ("process.ioPriority", |c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE"})),
        ("process.execCPUAffinity", |c| c["process"]["execCPUAffinity"] = json!({"initial": "0"})),
        ("linux.intelRdt", |c| c["linux"]["intelRdt"] = json!({"closID": "x"})),
        ("linux.resources.rdma", |c| {
            c["linux"]["resources"] = json!({"rdma": {"mlx5_1": {"hcaHandles": 3}}})
        }),
        ("linux.resources.network", |c| c["linux"]["resources"] = json!({"network": {"classID": 1}})),
        ("linux.resources.memory.disableOOMKiller", |c| {
            c["linux"]["resources"] = json!({"memory": {"disableOOMKiller": true}})
        }),
        ("linux.resources.cpu.realtimeRuntime", |c| {
            c["linux"]["resources"] = json!({"cpu": {"realtimeRuntime": 1000}})
        }),
        ("linux.resources.cpu.idle", |c| c["linux"]["resources"] = json!({"cpu": {"idle": 1}})),
        ("linux.resources.cpu.burst", |c| c["linux"]["resources"] = json!({"cpu": {"burst": 1000}})),
        ("linux.resources.unified", |c| {
            c["linux"]["resources"] = json!({"unified": {"memory.high": "1000000"}})
        }),
        ("linux.personality", |c| c["linux"]["personality"] = json!({"domain": "LINUX32"})),
        ("mounts[0].uidMappings", |c| {
            c["mounts"][0]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}])
        }),
        ("process.cwd: \"rel\" must be an absolute path", |c| c["process"]["cwd"] = json!("rel")),
        ("process.args: empty", |c| c["process"]["args"] = json!([])),
        ("process: missing", |c| {
            c.as_object_mut().unwrap().remove("process");
        }),
        ("process.rlimits[0].type: unknown resource", |c| {
            c["process"]["rlimits"] = json!([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}])
        }),
        ("linux.maskedPaths[0]: \"proc/kcore\" must be an absolute path", |c| {
            c["linux"]["maskedPaths"] = json!(["proc/kcore"])
        }),
        ("linux.readonlyPaths[0]", |c| c["linux"]["readonlyPaths"] = json!(["x"])),
        ("root: missing", |c| {
            c.as_object_mut().unwrap().remove("root");
        }),
        ("destination", |c| {
            c["mounts"][0].as_object_mut().unwrap().remove("destination").map(drop).unwrap_or(())
        }),
        ("linux.resources.blockIO.throttleReadBpsDevice[0].rate: missing", |c| {
            c["linux"]["resources"] =
                json!({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}})
        }),
        ("linux.resources.hugepageLimits[0]: pageSize and limit are REQUIRED", |c| {
            c["linux"]["resources"] = json!({"hugepageLimits": [{"pageSize": "2MB"}]})
        }),
        ("linux.resources.memory.kernel", |c| {
            c["linux"]["resources"] = json!({"memory": {"kernel": 1_000_000}})
        }),
        ("linux.resources.memory.kernelTCP", |c| {
            c["linux"]["resources"] = json!({"memory": {"kernelTCP": 1_000_000}})
        }),
        ("linux.resources.memory.swappiness", |c| {
            c["linux"]["resources"] = json!({"memory": {"swappiness": 10}})
        }),
        ("linux.resources.memory.useHierarchy", |c| {
            c["linux"]["resources"] = json!({"memory": {"useHierarchy": false}})
        }),
        ("linux.resources.blockIO.weightDevice", |c| {
            c["linux"]["resources"] =
                json!({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 10}]}})
        }),
        ("linux.resources.blockIO.leafWeight", |c| {
            c["linux"]["resources"] = json!({"blockIO": {"leafWeight": 10}})
        }),
        ("mounts[0].options: mount option `tmpcopyup`", |c| {
            c["mounts"][0] =
                json!({"destination": "/proc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup"]})
        }),
        ("is the runtime's or the host's own mount namespace", |c| {
            for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "mount" {
                    n["path"] = json!("/proc/self/ns/mnt");
                }
            }
        }),
        // A namespace file of another type: setns refuses it, naming the namespace.
        ("setns: EINVAL (Invalid argument) [net namespace]", |c| {
            for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "network" {
                    n["path"] = json!("/proc/self/ns/uts");
                }
            }
        }),
    ];
    let b = Bundle::new();
    b.script("exit 0");
    let good = b.config();
    for (want, edit) in cases {
        let mut c = good.clone();
        edit(&mut c);
        fs::write(b.dir.join("config.json"), serde_json::to_string(&c).unwrap()).unwrap();
        let (code, _, err) = b.cli(&["create", "bad"]);
        assert_eq!(code, 1, "accepted ({want}): {err}");
        assert!(err.contains(want), "expected `{want}` in: {err}");
        assert!(!b.root.join("bad").exists(), "state left behind for {want}");
    }
    // Neutral values of unsupported fields, as generators write them, are accepted.
    let mut c = good.clone();
    c["linux"]["personality"] = json!({"domain": "LINUX"});
    c["linux"]["resources"] = json!({"memory": {"disableOOMKiller": false}, "unified": {}});
    c["process"]["apparmorProfile"] = json!("");
    fs::write(b.dir.join("config.json"), serde_json::to_string(&c).unwrap()).unwrap();
    let (code, _, err) = b.cli(&["--cgroup-manager=disabled", "run", "neutral"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_properties_are_ignored_and_annotations_kept() {
    let b = Bundle::new();
    b.script("exec sleep 60");
    b.edit(|c| {
        c["x-vendor"] = json!({"anything": [1, 2]});
        c["process"]["x-unknown"] = json!(true);
        c["annotations"] = json!({"com.example.k": "v"});
    });
    let (code, _, err) = b.cli(&["create", "a1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.state("a1")["annotations"]["com.example.k"], "v");
    assert_eq!(b.cli(&["delete", "--force", "a1"]).0, 0);
}

#[test]
fn domainname_relative_destinations_and_mount_flags() {
    let b = Bundle::new();
    b.script("cat /proc/sys/kernel/domainname; awk '$2 == \"/mnt/rel\" {print $4}' /proc/mounts");
    b.edit(|c| {
        c["domainname"] = json!("example.org");
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "mnt/rel", "type": "tmpfs",
            "source": "tmpfs", "options": ["lazytime", "nosuid"]}));
    });
    let (code, out, err) = b.cli(&["run", "d1"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("example.org"), "{out}");
    let options = lines.next().unwrap_or_default();
    assert!(options.split(',').any(|o| o == "lazytime"), "a relative destination is under /: {out}");
}

#[test]
fn capabilities_that_cannot_be_granted_are_warnings() {
    let b = Bundle::new();
    b.script("grep ^CapEff /proc/self/status");
    b.edit(|c| c["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_NOT_A_CAP")));
    let (code, out, err) = b.cli(&["run", "c1"]);
    assert_eq!(code, 0, "an unknown capability must not fail the container: {err}");
    assert!(out.starts_with("CapEff:"), "{out}");
    assert!(err.contains("warning") && err.contains("CAP_NOT_A_CAP"), "{err}");
    // runc's default config lists ambient capabilities without an inheritable set.
    assert!(err.contains("process.capabilities.ambient") && err.contains("CAP_KILL"), "{err}");
}

/// Runs the CLI in a mount namespace where `/sys/fs/cgroup` is an empty tmpfs: a host without
/// cgroup v2, whatever this host has.
fn cli_without_cgroup_v2(b: &Bundle, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", "mount -t tmpfs none /sys/fs/cgroup && exec \"$@\"", "sh"])
        .arg(common::bundle::BIN)
        .arg("--root")
        .arg(&b.root)
        .args(args)
        .current_dir(&b.dir)
        .stdin(std::process::Stdio::null());
    let o = cmd.output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn resources_that_cannot_be_applied_are_an_error() {
    let b = Bundle::new();
    b.script("exit 0");
    b.edit(|c| c["linux"]["resources"] = json!({"memory": {"limit": 100_000_000}, "pids": {"limit": 50}}));
    let (code, err) = cli_without_cgroup_v2(&b, &["create", "r1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("linux.resources (memory.limit, pids.limit)")
            && err.contains("--cgroup-manager=disabled"),
        "{err}"
    );
    assert!(!b.root.join("r1").exists());
    // Asked for: runs, and says what it does not apply.
    let (code, err) = cli_without_cgroup_v2(&b, &["--cgroup-manager=disabled", "run", "r2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("linux.resources NOT applied: memory.limit, pids.limit"), "{err}");
    // Without resources nothing is needed.
    b.edit(|c| c["linux"].as_object_mut().unwrap().remove("resources").map(drop).unwrap_or(()));
    let (code, err) = cli_without_cgroup_v2(&b, &["run", "r3"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_failure_after_launch_leaves_no_process_behind() {
    // The console socket is missing: create fails after the container's process exists.
    let b = Bundle::new();
    let pid_log = b.dir.join("pid");
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["args"] = json!(["sleep", "60"]);
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c",
            format!("sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p' > {}", pid_log.display())]}]});
    });
    let pid_file = b.dir.join("pidfile");
    let (code, _, err) = b.cli(&[
        "create",
        "--console-socket",
        "/nonexistent.sock",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "f1",
    ]);
    assert_eq!(code, 1, "{err}");
    let pid: i32 = fs::read_to_string(&pid_log).unwrap().trim().parse().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "container process {pid} left running");
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(!b.root.join("f1").exists());
}

#[test]
fn a_device_path_holding_another_file_is_an_error() {
    let b = Bundle::new();
    b.script("stat -c '%t:%T' /dev/x");
    // No /dev tmpfs: the nodes are made in the rootfs itself.
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/dev");
        c["linux"]["devices"] = json!([{"path": "/dev/x", "type": "c", "major": 1, "minor": 3}]);
    });
    let (code, out, err) = b.cli(&["run", "d1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1:3\n");
    // The same device already there is kept (a second run).
    let (code, _, err) = b.cli(&["run", "d2"]);
    assert_eq!(code, 0, "{err}");
    // Another file is not replaced.
    fs::remove_file(b.dir.join("rootfs/dev/x")).unwrap();
    fs::write(b.dir.join("rootfs/dev/x"), "data").unwrap();
    let (code, _, err) = b.cli(&["run", "d3"]);
    assert_eq!(code, 1);
    assert!(err.contains("mknod") && err.contains("EEXIST"), "{err}");
    assert_eq!(fs::read_to_string(b.dir.join("rootfs/dev/x")).unwrap(), "data");
}

#[test]
fn a_failing_create_hook_still_runs_poststop() {
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let b = Bundle::new();
        let marker = b.dir.join("poststop-ran");
        b.script("exit 0");
        b.edit(|c| {
            c["hooks"] = json!({
                kind: [{"path": "/bin/false"}],
                "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", marker.display())]}],
            });
        });
        let (code, _, err) = b.cli(&["run", "k1"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("hooks.{kind}[0]")), "{err}");
        let state =
            fs::read_to_string(&marker).unwrap_or_else(|_| panic!("no poststop after a failing {kind} hook"));
        assert!(state.contains("\"status\":\"stopped\""), "{state}");
        assert!(!b.root.join("k1").exists());
    }
}

#[test]
fn poststart_runs_once_the_program_is_executed() {
    let b = Bundle::new();
    let seen = b.dir.join("exe");
    b.script("exec sleep 60");
    b.edit(|c| {
        c["hooks"] = json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c",
            format!("pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); readlink /proc/$pid/exe > {}", seen.display())]}]});
    });
    assert_eq!(b.cli(&["create", "p1"]).0, 0);
    let (code, _, err) = b.cli(&["start", "p1"]);
    assert_eq!(code, 0, "{err}");
    let exe = fs::read_to_string(&seen).unwrap();
    assert!(exe.trim_end().ends_with("/bin/busybox"), "poststart saw {exe:?}, not the user's program");
    assert_eq!(b.cli(&["delete", "--force", "p1"]).0, 0);
}

#[test]
fn defaults_of_a_runc_spec_bundle() {
    // Read-only root, the default devices and /dev links, mounts in order, hard rlimits, an
    // oomScoreAdj left alone when unset.
    let b = Bundle::new();
    let data = b.dir.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "bound\n").unwrap();
    b.script(
        "touch /x 2>/dev/null && echo root-writable || echo root-read-only; \
         stat -c '%n %t:%T' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; \
         for l in ptmx fd stdin stdout stderr; do readlink /dev/$l; done; \
         cat /mnt/a/b/f; ulimit -Hn; ulimit -Sn; cat /proc/self/oom_score_adj",
    );
    b.edit(|c| {
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/mnt/a", "type": "tmpfs", "source": "tmpfs"}));
        m.push(json!({"destination": "/mnt/a/b", "type": "bind", "source": data, "options": ["bind", "ro"]}));
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]);
        c["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_DAC_OVERRIDE"));
    });
    let (code, out, err) = b.cli(&["run", "r1"]);
    assert_eq!(code, 0, "{err}");
    let want = "root-read-only\n/dev/null 1:3\n/dev/zero 1:5\n/dev/full 1:7\n/dev/random 1:8\n/dev/urandom 1:9\n/dev/tty 5:0\n\
                pts/ptmx\n/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\nbound\n200\n100\n";
    assert!(out.starts_with(want), "{out}");
    let own = fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert_eq!(out.lines().last(), Some(own.trim()), "oomScoreAdj unset: inherited");
}

#[test]
fn lifecycle_operations_refused_in_the_wrong_state() {
    let b = Bundle::new();
    let log = b.dir.join("log");
    b.script("exit 0");
    b.edit(|c| {
        c["hooks"] = json!({"createRuntime": [
            {"path": "/bin/sh", "args": ["sh", "-c", format!("echo a >> {}", log.display())]},
            {"path": "/bin/sh", "args": ["sh", "-c", format!("echo b >> {}", log.display())]}]});
    });
    assert_eq!(b.cli(&["create", "a/b"]).2.trim(), "invalid container id format: a/b");
    for cmd in ["state", "start", "kill", "delete", "create"] {
        assert_ne!(b.cli(&[cmd]).0, 0, "{cmd} without an id");
    }
    assert_eq!(b.cli(&["create", "w1"]).0, 0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "a\nb\n", "hooks of one kind run in order");
    // A config changed after create is not read again: the new poststart hook does not run.
    b.edit(|c| c["hooks"] = json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", format!("echo late >> {}", log.display())]}]}));
    assert_eq!(b.cli(&["start", "w1"]).0, 0);
    assert_eq!(b.wait_status("w1", "stopped")["status"], "stopped");
    assert_eq!(fs::read_to_string(&log).unwrap(), "a\nb\n");
    let (code, _, err) = b.cli(&["start", "w1"]);
    assert_eq!(code, 1);
    assert!(err.contains("has stopped"), "{err}");
    assert_eq!(b.cli(&["delete", "w1"]).0, 0);
}

#[test]
fn a_start_container_hook_resolves_in_the_container() {
    let b = Bundle::new();
    let out = out_dir(&b);
    let hook = b.dir.join("rootfs/bin/hook-only-here");
    fs::write(&hook, "#!/bin/sh\necho from-inside > /out/hook\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    b.script("exit 0");
    b.edit(|c| c["hooks"] = json!({"startContainer": [{"path": "/bin/hook-only-here"}]}));
    let (code, _, err) = b.cli(&["run", "sc1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_to_string(out.join("hook")).unwrap(), "from-inside\n");
}

#[test]
fn container_namespace_hooks_run_in_its_pid_namespace() {
    let b = Bundle::new();
    let out = out_dir(&b);
    let record = |file: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("{{ readlink /proc/self/ns/pid; sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'; }} > {file}")]})
    };
    b.script("readlink /proc/self/ns/pid > /out/container");
    b.edit(|c| {
        c["hooks"] = json!({
            // Before pivot_root the container's mount namespace still shows the host's paths.
            "createContainer": [record(&out.join("createContainer").display().to_string())],
            "startContainer": [record("/out/startContainer")],
        });
    });
    let (code, _, err) = b.cli(&["run", "pn1"]);
    assert_eq!(code, 0, "{err}");
    let container = fs::read_to_string(out.join("container")).unwrap();
    let own = fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(container.trim(), own.display().to_string(), "the container has its own pid namespace");
    for hook in ["createContainer", "startContainer"] {
        let text = fs::read_to_string(out.join(hook)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(container.trim()), "{hook} ran outside the container's pid namespace");
        assert_eq!(lines.next(), Some("1"), "{hook} must get the pid as the container sees it: {text}");
    }
}

#[test]
fn a_shared_root_propagates_volume_mounts_back_to_the_host() {
    // Kubernetes' Bidirectional volumes: rootfsPropagation rshared and an rshared bind of a
    // shared host mount; what the container mounts inside shows on the host.
    let b = Bundle::new();
    let vol = b._tmp.path().join("vol");
    fs::create_dir_all(&vol).unwrap();
    let _cleanup = Unmount(vec![vol.clone()]);
    mount(&["-t", "tmpfs", "-o", "size=1m", "vol", vol.to_str().unwrap()]);
    mount(&["--make-shared", vol.to_str().unwrap()]);
    b.script("mkdir -p /vol/sub && mount -t tmpfs -o size=1m inner /vol/sub && echo made > /vol/sub/f");
    b.edit(|c| {
        c["linux"]["rootfsPropagation"] = json!("rshared");
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/vol", "type": "bind",
            "source": vol, "options": ["rbind", "rw", "rshared"]}));
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
        }
    });
    let (code, _, err) = b.cli(&["run", "bd1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(vol.join("sub/f")).unwrap_or_default(),
        "made\n",
        "the container's mount did not reach the host: {err}"
    );
}
