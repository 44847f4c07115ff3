//! Launches real containers on the host (root required): namespaces, overlay root, /dev,
//! pivot_root, and step errors. cgroup limits are tested in a booted VM (the host has no cgroup v2
//! controllers).

mod common;

use std::fs;
use std::os::fd::AsRawFd;

use berth_runtime::{launch, BindMount};
use common::{pipe, run, spec};

#[test]
fn runs_in_fresh_namespaces_on_an_overlay_root() {
    let dir = tempfile::tempdir().unwrap();
    let (r, w) = pipe();
    let script = "echo host=$(hostname); echo pid=$$; echo cwd=$(pwd); cat /etc/hello; \
                  grep ' / ' /proc/mounts | cut -d' ' -f3 2>/dev/null || grep ' / ' /proc/mounts; \
                  ls /proc | grep -c '^[0-9]' ; ls /sys/class/net; stat -c %t:%T /dev/null; \
                  echo written > /etc/new && cat /etc/new; ls -d /dev/pts /dev/shm";
    let s = spec(dir.path(), script, w.as_raw_fd());
    let (code, out) = run(&s, (r, w));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("host=box-1\n"), "{out}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("cwd=/work/here\n"), "{out}");
    assert!(out.contains("from the image\n"), "{out}");
    assert!(out.contains("overlay"), "root is not an overlay: {out}");
    assert!(out.contains("\nlo\n"), "only lo in a new net ns: {out}");
    assert!(out.contains("1:3\n"), "/dev/null is 1:3: {out}");
    assert!(out.contains("written\n"), "{out}");
    // The writable layer never reaches the image layer.
    assert!(!s.layers[0].join("etc/new").exists());
}

#[test]
fn read_only_root_and_binds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("f"), "bound\n").unwrap();
    let (r, w) = pipe();
    let mut s = spec(dir.path(), "cat /mnt/data/f; touch /x 2>/dev/null && echo root-rw; touch /mnt/data/g 2>/dev/null && echo bind-rw; echo end", w.as_raw_fd());
    s.read_only = true;
    s.working_dir = "/".into();
    s.binds = vec![BindMount { source: data.clone(), target: "/mnt/data".into(), read_only: true }];
    let (code, out) = run(&s, (r, w));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("bound\n"), "{out}");
    assert!(!out.contains("root-rw"), "root should be read-only: {out}");
    assert!(!out.contains("bind-rw"), "bind should be read-only: {out}");
    assert!(out.contains("end"), "{out}");
}

#[test]
fn user_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (r, w) = pipe();
    let mut s = spec(dir.path(), "id -u; id -g; id -G; exit 7", w.as_raw_fd());
    s.uid = 1000;
    s.gid = 1001;
    s.additional_gids = vec![10, 20];
    s.working_dir = "/".into();
    let (code, out) = run(&s, (r, w));
    assert_eq!(code, Some(7), "{out}");
    assert!(out.starts_with("1000\n1001\n"), "{out}");
    assert!(out.contains("10 20") || out.contains("1001 10 20"), "{out}");
}

#[test]
fn missing_command_is_a_step_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "", 1);
    s.args = vec!["/bin/nope".into()];
    let e = launch(&s).unwrap_err();
    assert_eq!(e.errno, nix::errno::Errno::ENOENT, "{e}");
    assert!(e.to_string().starts_with("exec /bin/nope: ENOENT"), "{e}");

    s.args = vec!["nope".into()];
    let e = launch(&s).unwrap_err();
    assert!(e.to_string().contains("PATH=/bin"), "{e}");
}

#[test]
fn missing_layer_is_a_step_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), "true", 1);
    s.layers.push(dir.path().join("absent"));
    let e = launch(&s).unwrap_err();
    assert!(e.to_string().starts_with("mount overlay: ENOENT"), "{e}");
}
