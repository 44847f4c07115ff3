//! Shared by the host tests: a busybox layer, a spec, running a container to completion, and
//! OCI bundles for the CLI ([`bundle`]).
#![allow(dead_code)]

pub mod bundle;

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_runtime::{launch, ContainerSpec, Stdio};

/// A busybox root filesystem (every applet linked) as a single layer.
pub fn busybox_layer(dir: &Path) -> PathBuf {
    let root = dir.join("layer");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/hello"), "from the image\n").unwrap();
    root
}

/// A spec running `sh -c SCRIPT` as root in fresh namespaces, output to `stdout`.
pub fn spec(dir: &Path, script: &str, stdout: i32) -> ContainerSpec {
    ContainerSpec {
        name: "t".into(),
        hostname: "box-1".into(),
        layers: vec![busybox_layer(dir)],
        state_dir: dir.join("state"),
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        working_dir: "/work/here".into(),
        new_net: true,
        stdio: Stdio::Fds([0, stdout, stdout]),
        ..Default::default()
    }
}

/// A pipe for the container's output.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// Runs the spec to completion and returns (exit code, output).
pub fn run(spec: &ContainerSpec, out: (OwnedFd, OwnedFd)) -> (Option<i32>, String) {
    let (r, w) = out;
    let c = launch(spec).unwrap_or_else(|e| panic!("launch failed: {e}"));
    drop(w);
    let mut text = String::new();
    fs::File::from(r).read_to_string(&mut text).unwrap();
    let info = c.wait().unwrap();
    (info.code, text)
}

/// Runs `script` in a container made by `spec` and adjusted by `adjust`.
pub fn run_script(script: &str, adjust: impl FnOnce(&mut ContainerSpec)) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (r, w) = pipe();
    let mut s = spec(dir.path(), script, w.as_raw_fd());
    adjust(&mut s);
    run(&s, (r, w))
}
