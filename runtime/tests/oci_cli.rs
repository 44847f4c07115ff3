//! The `berth-runtime` CLI on OCI bundles (root required): lifecycle, `run` exit codes,
//! namespaces, user namespaces, mounts, hooks, bad bundles, `exec`, `list` and `state`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bundle::Bundle;
use serde_json::{json, Value};

#[test]
fn lifecycle_create_start_kill_delete() {
    let b = Bundle::new();
    let out = b.dir.join("rootfs/out");
    b.script("echo started > /out; exec sleep 60");
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let (code, _, err) = b.cli(&["create", "--pid-file", "pidf", "c1"]);
    assert_eq!(code, 0, "create: {err}");
    let s = b.state("c1");
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["id"], "c1");
    assert_eq!(s["ociVersion"], "1.0.2-dev");
    assert_eq!(s["bundle"], json!(b.dir.canonicalize().unwrap()));
    let pid = s["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(fs::read_to_string(b.dir.join("pidf")).unwrap(), pid.to_string());
    assert!(!out.exists(), "the process ran before start");
    // A second create with the same id is refused.
    let (code, _, err) = b.cli(&["create", "c1"]);
    assert_eq!(code, 1);
    assert!(err.contains("container with id exists: c1"), "{err}");

    let (code, _, err) = b.cli(&["start", "c1"]);
    assert_eq!(code, 0, "start: {err}");
    assert_eq!(b.state("c1")["status"], "running");
    // The shell creates the file before it writes the line: wait for the line.
    let end = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(&out).unwrap_or_default() != "started\n" && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fs::read_to_string(&out).unwrap(), "started\n");
    let (code, _, err) = b.cli(&["start", "c1"]);
    assert_eq!(code, 1, "second start must fail");
    assert!(err.contains("already running"), "{err}");

    // `list` shape.
    let (code, out, _) = b.cli(&["list"]);
    assert_eq!(code, 0);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "c1");
    assert_eq!(row[1], pid.to_string());
    assert_eq!(row[2], "running");
    assert_eq!(row[5], "root");

    // Running: delete without --force refuses.
    let (code, _, err) = b.cli(&["delete", "c1"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot delete container c1 that is not stopped: running"), "{err}");
    assert_eq!(b.state("c1")["status"], "running", "a refused delete changes nothing");

    let (code, _, err) = b.cli(&["kill", "c1", "KILL"]);
    assert_eq!(code, 0, "kill: {err}");
    let s = b.wait_status("c1", "stopped");
    assert_eq!(s["status"], "stopped", "{s}");
    let (code, _, err) = b.cli(&["kill", "c1"]);
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");

    let (code, _, err) = b.cli(&["delete", "c1"]);
    assert_eq!(code, 0, "delete: {err}");
    assert!(!b.root.join("c1").exists(), "state dir left behind");
    let (code, _, err) = b.cli(&["state", "c1"]);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "container \"c1\" does not exist");
}

#[test]
fn kill_default_is_sigterm() {
    let b = Bundle::new();
    b.script("trap 'exit 0' TERM; while true; do sleep 0.05; done");
    let (code, _, err) = b.cli(&["run", "-d", "t1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.state("t1")["status"], "running");
    std::thread::sleep(Duration::from_millis(100));
    let (code, _, err) = b.cli(&["kill", "t1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(b.wait_status("t1", "stopped")["status"], "stopped");
    assert_eq!(b.cli(&["delete", "t1"]).0, 0);
}

#[test]
fn run_exit_codes() {
    let b = Bundle::new();
    b.script("cat /etc/hello; exit 0");
    let (code, out, err) = b.cli(&["run", "r0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from the bundle\n");
    assert!(!b.root.join("r0").exists(), "run leaves no state behind");
    b.script("exit 3");
    assert_eq!(b.cli(&["run", "r3"]).0, 3);
    // Without a pid namespace of its own the shell is not an init and can be killed by itself.
    b.edit(|c| {
        c["process"]["args"] = json!(["sh", "-c", "kill -9 $$"]);
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let (code, _, err) = b.cli(&["run", "r9"]);
    assert_eq!(code, 137, "{err}");
    // A missing command: 127-style failure reported with the step.
    b.script("exit 0");
    b.edit(|c| c["process"]["args"] = json!(["/bin/nope"]));
    let (code, _, err) = b.cli(&["run", "rx"]);
    assert_ne!(code, 0);
    assert!(err.contains("exec /bin/nope") && err.contains("ENOENT"), "{err}");
    assert!(!b.root.join("rx").exists());
    // terminal without a console socket is refused clearly.
    b.edit(|c| c["process"]["terminal"] = json!(true));
    let (code, _, err) = b.cli(&["run", "rt"]);
    assert_eq!(code, 1);
    assert!(err.contains("--console-socket"), "{err}");
}

#[test]
fn namespaces_new_shared_and_joined() {
    let b = Bundle::new();
    let name = format!("berth-test-{}", std::process::id());
    let added = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
    assert!(added.success());
    let netns = PathBuf::from("/run/netns").join(&name);
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(&netns).unwrap().ino();
    let host_uts = fs::read_link("/proc/self/ns/uts").unwrap();
    b.script("readlink /proc/self/ns/net; readlink /proc/self/ns/uts; hostname; echo pid=$$");
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        for n in ns.iter_mut() {
            if n["type"] == "network" {
                n["path"] = json!(netns);
            }
        }
    });
    let (code, out, err) = b.cli(&["run", "n1"]);
    let _ = Command::new("ip").args(["netns", "delete", &name]).status();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("net:[{ino}]")), "did not join the netns {ino}: {out}");
    assert!(!out.contains(&host_uts.display().to_string()), "uts must be new: {out}");
    assert!(out.contains("runc\n"), "{out}");
    assert!(out.contains("pid=1\n"), "{out}");

    // Unknown path: an error naming the field.
    b.edit(|c| c["linux"]["namespaces"][1]["path"] = json!("/nonexistent/ns"));
    let (code, _, err) = b.cli(&["run", "n2"]);
    assert_eq!(code, 1);
    assert!(err.contains("linux.namespaces[1].path"), "{err}");
}

#[test]
fn user_namespace_with_mappings() {
    let b = Bundle::new();
    b.script("cat /proc/self/uid_map /proc/self/gid_map; id -u; cat /etc/hello; ls /dev/null");
    b.edit(|c| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let (code, out, err) = b.cli(&["run", "u1"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{out}");
    assert!(out.contains("\n0\n"), "{out}");
    assert!(out.contains("from the bundle\n"), "rootfs unreadable: {out}");
    assert!(out.contains("/dev/null\n"), "{out}");

    // A bad mapping names the field.
    b.edit(|c| c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 0}]));
    let (code, _, err) = b.cli(&["run", "u2"]);
    assert_eq!(code, 1);
    assert!(err.contains("linux.uidMappings[0].size"), "{err}");
    assert!(!b.root.join("u2").exists());
}

#[test]
fn mounts_tmpfs_ro_bind_nosuid() {
    let b = Bundle::new();
    let data = b.dir.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "bound\n").unwrap();
    b.script(
        "grep ' /mnt/t ' /proc/mounts; cat /mnt/ro/f; touch /mnt/ro/g 2>/dev/null && echo ro-writable; \
         touch /mnt/t/x && echo tmpfs-writable; cat /etc/file; echo end",
    );
    b.edit(|c| {
        let m = c["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                      "options": ["nosuid", "nodev", "size=1m", "mode=700"]}));
        m.push(json!({"destination": "/mnt/ro", "type": "bind", "source": "data", "options": ["rbind", "ro"]}));
        m.push(json!({"destination": "/etc/file", "type": "bind", "source": data.join("f"), "options": ["bind"]}));
    });
    let (code, out, err) = b.cli(&["run", "m1"]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().next().unwrap_or("");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{out}");
    assert!(line.contains("size=1024k") && line.contains("mode=700"), "{out}");
    assert!(out.contains("bound\nbound\n") || out.matches("bound").count() == 2, "{out}");
    assert!(!out.contains("ro-writable"), "{out}");
    assert!(out.contains("tmpfs-writable"), "{out}");
    assert!(out.contains("end"), "{out}");

    // `..` in a destination is refused, naming the field.
    b.edit(|c| c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/../x", "type": "tmpfs"})));
    let (code, _, err) = b.cli(&["run", "m2"]);
    assert_eq!(code, 1);
    assert!(err.contains("mounts[10].destination"), "{err}");
}

#[test]
fn hooks_run_in_order_with_the_state() {
    let b = Bundle::new();
    let logdir = b.dir.join("hooklog");
    fs::create_dir_all(&logdir).unwrap();
    let log = logdir.join("hooks.log");
    let hook = |name: &str, file: &Path| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", file.display())],
               "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})
    };
    b.script("echo main >> /hooklog/hooks.log");
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind",
            "source": logdir, "options": ["bind"]}));
        c["hooks"] = json!({
            "prestart": [hook("prestart", &log)],
            "createRuntime": [hook("createRuntime", &log)],
            "createContainer": [hook("createContainer", &log)],
            "startContainer": [hook("startContainer", Path::new("/hooklog/hooks.log"))],
            "poststart": [hook("poststart", &log)],
            "poststop": [hook("poststop", &log)],
        });
    });
    let (code, _, err) = b.cli(&["run", "hk"]);
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&log).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect();
    let main = names.iter().position(|n| *n == "main").unwrap_or(usize::MAX);
    assert_eq!(
        names.iter().filter(|n| **n != "main").copied().collect::<Vec<_>>(),
        ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "{text}"
    );
    assert!(main > 3 && main < 6, "main ran out of order: {text}");
    // The state each hook receives: `created` through create and start, as crun sends.
    for line in text.lines().filter(|l| !l.starts_with("main")) {
        let (name, state) = line.split_once(' ').unwrap();
        let v: Value = serde_json::from_str(state).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["id"], "hk", "{line}");
        // The pid is REQUIRED while created or running.
        assert!(name == "poststop" || v["pid"].as_i64().is_some_and(|p| p > 0), "{line}");
        let want = match name {
            "poststart" => "running",
            "poststop" => "stopped",
            _ => "created",
        };
        assert_eq!(v["status"], want, "{line}");
    }

    // A failing hook stops the create and leaves nothing behind.
    b.edit(|c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]}));
    let (code, _, err) = b.cli(&["run", "hk2"]);
    assert_eq!(code, 1);
    assert!(err.contains("hooks.createRuntime[0]"), "{err}");
    assert!(!b.root.join("hk2").exists());
}

#[test]
fn bad_bundles_name_the_field_and_leave_nothing() {
    let b = Bundle::new();
    b.script("exit 0");
    let check = |want: &str| {
        let (code, _, err) = b.cli(&["create", "bad"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(want), "expected `{want}` in: {err}");
        assert!(!b.root.join("bad").exists(), "state left behind for {want}");
    };
    let good = fs::read_to_string(b.dir.join("config.json")).unwrap();
    b.edit(|c| c["root"]["path"] = json!("nope"));
    check("root.path: directory");
    fs::write(b.dir.join("config.json"), "{ \"ociVersion\": ").unwrap();
    check("invalid JSON");
    fs::write(b.dir.join("config.json"), &good).unwrap();
    b.edit(|c| c["linux"]["namespaces"][2] = json!({"type": "foo"}));
    check("linux.namespaces[2].type: unknown namespace type \"foo\"");
    fs::write(b.dir.join("config.json"), &good).unwrap();
    b.edit(|c| c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": "x", "size": 1}]));
    check("linux.uidMappings[0].hostID");
    fs::write(b.dir.join("config.json"), &good).unwrap();
    b.edit(|c| c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]));
    check("linux.uidMappings: mappings need a new \"user\" namespace");
    fs::remove_file(b.dir.join("config.json")).unwrap();
    check("config.json");
    let (code, _, err) = b.cli(&["spec"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = b.cli(&["spec"]);
    assert_eq!(code, 1);
    assert!(err.contains("config.json exists"), "{err}");
}

#[test]
fn exec_joins_the_running_container() {
    let b = Bundle::new();
    b.script("exec sleep 60");
    b.edit(|c| c["process"]["noNewPrivileges"] = json!(true));
    let (code, _, err) = b.cli(&["run", "-d", "e1"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = b.cli(&[
        "exec",
        "e1",
        "--",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo pid=$$; exit 5",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(out.starts_with("runc\n"), "not in the container's uts ns: {out}");
    assert!(out.contains("sleep 60"), "not in the container's pid ns: {out}");
    assert!(!out.contains("pid=1\n"), "{out}");
    let (code, _, err) = b.cli(&["delete", "--force", "e1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!b.root.join("e1").exists());
}

#[test]
fn state_and_list_json_shapes() {
    let b = Bundle::new();
    b.script("exec sleep 60");
    assert_eq!(b.cli(&["create", "s1"]).0, 0);
    let s = b.state("s1");
    for key in ["ociVersion", "id", "status", "pid", "bundle", "rootfs", "created", "owner"] {
        assert!(s.get(key).is_some(), "state lacks {key}: {s}");
    }
    let (code, out, _) = b.cli(&["list", "--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], "s1");
    assert_eq!(v[0]["status"], "created");
    let (_, out, _) = b.cli(&["list", "-q"]);
    assert_eq!(out, "s1\n");
    // The spec: deleting a container that is not stopped is an error that changes nothing.
    let (code, _, err) = b.cli(&["delete", "s1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not stopped: created"), "{err}");
    assert_eq!(b.state("s1")["status"], "created");
    let (code, _, err) = b.cli(&["delete", "--force", "s1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!b.root.join("s1").exists());
}

#[test]
fn terminal_through_a_console_socket() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixListener;

    let b = Bundle::new();
    b.edit(|c| {
        c["process"]["terminal"] = json!(true);
        c["process"]["args"] = json!([
            "sh",
            "-c",
            "tty; stat -c 'console-major %t' /dev/console; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; sleep 0.2"
        ]);
    });
    let socket = b._tmp.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || -> OwnedFd {
        let (stream, _) = listener.accept().unwrap();
        // One byte of payload and one descriptor, as runc's protocol sends.
        let mut buf = [0u8; 64];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the descriptor was just received and is owned by nobody else.
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        panic!("no descriptor received");
    });
    let (code, _, err) = b.cli(&["create", "tty1", "--console-socket", socket.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let master = receiver.join().unwrap();
    let (code, _, err) = b.cli(&["start", "tty1"]);
    assert_eq!(code, 0, "{err}");
    let mut out = String::new();
    let mut file = fs::File::from(master);
    let mut buf = [0u8; 256];
    // Read until the container closes its side (EIO on a pty master).
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
        if out.contains("is-a-tty") {
            break;
        }
    }
    assert!(out.contains("/dev/pts/") || out.contains("/dev/console"), "tty: {out}");
    // /dev/console is the pty (major 136 = 0x88), as the spec asks with a terminal.
    assert!(out.contains("console-major 88"), "{out}");
    assert!(out.contains("is-a-tty"), "{out}");
    b.wait_status("tty1", "stopped");
    assert_eq!(b.cli(&["delete", "tty1"]).0, 0);
}

#[test]
fn time_namespace_with_offsets() {
    assert!(
        Path::new("/proc/self/ns/time").exists(),
        "this kernel has no time namespaces (Linux 5.6+ with CONFIG_TIME_NS); the OCI spec's timeOffsets need them"
    );
    let b = Bundle::new();
    b.script("cut -d. -f1 /proc/uptime");
    b.edit(|c| {
        c["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}, "monotonic": {"secs": 0, "nanosecs": 0}});
    });
    let (code, out, err) = b.cli(&["run", "time1"]);
    assert_eq!(code, 0, "{err}");
    let inside: u64 = out.trim().parse().unwrap_or_else(|_| panic!("{out}"));
    let host: u64 = fs::read_to_string("/proc/uptime").unwrap().split('.').next().unwrap().parse().unwrap();
    assert!(inside >= host + 86400 * 365 - 5, "uptime inside {inside}, host {host}");
}

#[test]
fn log_file_in_json_lines() {
    let b = Bundle::new();
    let log = b._tmp.path().join("runtime.log");
    let log_arg = log.to_str().unwrap().to_string();
    let (code, _, _) = b.cli(&["--log", &log_arg, "--log-format", "json", "state", "nope"]);
    assert_eq!(code, 1);
    let text = fs::read_to_string(&log).unwrap();
    let line = text.lines().last().unwrap_or_else(|| panic!("empty log"));
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["level"], "error", "{line}");
    assert!(v["msg"].as_str().unwrap().contains("container \"nope\" does not exist"), "{line}");
    assert!(v["time"].is_string(), "{line}");
}
