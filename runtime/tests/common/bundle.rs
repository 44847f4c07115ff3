//! An OCI bundle with a busybox rootfs, and the `berth-runtime` CLI run on it.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The CLI under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");

/// A bundle made by `berth-runtime spec` (less `linux.resources`) with a busybox rootfs, in a
/// world-readable temp dir.
pub struct Bundle {
    /// The temp dir holding the bundle and the state root.
    pub _tmp: tempfile::TempDir,
    /// The bundle directory.
    pub dir: PathBuf,
    /// The `--root` state directory.
    pub root: PathBuf,
}

impl Bundle {
    pub fn new() -> Bundle {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("bundle");
        let bin = dir.join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        // Mount points exist already: in a user namespace the (host root owned) rootfs is not
        // writable for the container's root.
        for d in ["etc", "proc", "dev", "sys", "mnt"] {
            fs::create_dir_all(dir.join("rootfs").join(d)).unwrap();
        }
        fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
            symlink("busybox", bin.join(applet)).unwrap();
        }
        fs::write(dir.join("rootfs/etc/hello"), "from the bundle\n").unwrap();
        let status = Command::new(BIN).arg("spec").current_dir(&dir).status().unwrap();
        assert!(status.success());
        let root = tmp.path().join("state");
        let b = Bundle { _tmp: tmp, dir, root };
        // Without runc's deny-all device rule: these tests run on hosts with and without
        // cgroup v2, and limits that cannot be applied are an error (tests that need them set
        // them).
        b.edit(|c| c["linux"].as_object_mut().unwrap().remove("resources").map(drop).unwrap_or(()));
        b
    }

    pub fn config(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(self.dir.join("config.json")).unwrap()).unwrap()
    }

    pub fn edit(&self, f: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        f(&mut c);
        fs::write(self.dir.join("config.json"), serde_json::to_string_pretty(&c).unwrap()).unwrap();
    }

    /// Sets the command (`sh -c SCRIPT`), no terminal.
    pub fn script(&self, script: &str) {
        self.edit(|c| {
            c["process"]["terminal"] = json!(false);
            c["process"]["args"] = json!(["sh", "-c", script]);
        });
    }

    /// Runs the CLI with `--root`; output goes through files (a container started by `create`
    /// keeps its inherited descriptors open, so pipes would never reach EOF).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self._tmp.path().join(format!("out-{}", rand()));
        let err = self._tmp.path().join(format!("err-{}", rand()));
        let status = Command::new(BIN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        (status.code().unwrap_or(-1), fs::read_to_string(&out).unwrap(), fs::read_to_string(&err).unwrap())
    }

    pub fn state(&self, id: &str) -> Value {
        let (code, out, err) = self.cli(&["state", id]);
        assert_eq!(code, 0, "state failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("state is not JSON ({e}): {out}"))
    }

    pub fn wait_status(&self, id: &str, want: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id);
            if s["status"] == want || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A number unique in this process.
pub fn rand() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
