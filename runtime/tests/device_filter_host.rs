//! The eBPF device filter loads and attaches on this host's cgroup v2 hierarchy, and a process
//! in that cgroup can open what Docker's default rules allow and nothing else (a cgroup v2
//! directory is all the device controller needs, no controllers).
//!
//! Where no cgroup v2 hierarchy is mounted, the test mounts one in a temporary directory (root
//! can mount cgroup2 beside a v1 or hybrid layout); a kernel without cgroup v2 fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted cgroup v2 hierarchy: an existing one, or one this test mounted (unmounted on drop).
struct Hierarchy {
    path: PathBuf,
    _mounted: Option<tempfile::TempDir>,
}

impl Drop for Hierarchy {
    fn drop(&mut self) {
        if self._mounted.is_some() {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn cgroup2() -> Hierarchy {
    let existing = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists());
    if let Some(path) = existing {
        return Hierarchy { path: path.to_path_buf(), _mounted: None };
    }
    let dir = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("cgroup2"),
        dir.path(),
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap_or_else(|e| {
        panic!("no cgroup v2 hierarchy is mounted and mounting one failed ({e}): berth needs cgroup v2")
    });
    Hierarchy { path: dir.path().to_path_buf(), _mounted: Some(dir) }
}

#[test]
fn device_filter_attaches_and_refuses() {
    let hierarchy = cgroup2();
    let dir = hierarchy.path.join(format!("berth-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let attached =
        berth_runtime::device_filter::attach(&dir, berth_runtime::device_filter::DOCKER_DEFAULT_RULES);
    // The shell moves itself into the cgroup, then opens an allowed device (/dev/null, 1:3)
    // and a refused one (/dev/kmsg, 1:11; not in Docker's list).
    let script = format!(
        "echo $$ > {}/cgroup.procs || exit 9; (: < /dev/null) && echo null=ok; (: < /dev/kmsg) && echo kmsg=ok; exit 0",
        dir.display()
    );
    let out = attached.as_ref().ok().map(|()| Command::new("sh").arg("-c").arg(&script).output().unwrap());
    let _ = std::fs::remove_dir(&dir);
    attached.unwrap_or_else(|e| panic!("{e}"));
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stdout}{stderr}", out.status);
    assert!(stdout.contains("null=ok"), "an allowed device was refused: {stdout}{stderr}");
    assert!(!stdout.contains("kmsg=ok"), "/dev/kmsg was not refused: {stdout}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}
