//! Boots the Debian cloud kernel with a busybox initramfs under QEMU.
//!
//! The kernel is fetched once (apt-get download) into `$BERTH_CACHE_DIR/test-kernel/` or
//! `$HOME/.cache/berth/test-kernel/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_qemu::{default_timeout, GuestShutdown, Vm, VmConfig};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// The cached Debian cloud kernel, downloaded on first use.
fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let dir = match std::env::var_os("BERTH_CACHE_DIR") {
                Some(d) => PathBuf::from(d).join("test-kernel"),
                None => {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/berth/test-kernel")
                }
            };
            let vmlinuz = dir.join("vmlinuz");
            if vmlinuz.exists() {
                return vmlinuz;
            }
            std::fs::create_dir_all(&dir).unwrap();
            let work = tempfile::tempdir_in(&dir).unwrap();
            let download = |pkg: &str| {
                run(Command::new("apt-get").args(["download", pkg]).current_dir(work.path()));
                std::fs::read_dir(work.path())
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        name.starts_with(&format!("{pkg}_")) && name.ends_with(".deb")
                    })
                    .unwrap_or_else(|| panic!("apt-get download {pkg} left no .deb"))
            };
            let meta = download("linux-image-cloud-amd64");
            let out = Command::new("dpkg-deb").arg("-f").arg(&meta).arg("Depends").output().unwrap();
            let depends = String::from_utf8(out.stdout).unwrap();
            let image = depends
                .split([',', '|'])
                .map(|d| d.split_whitespace().next().unwrap_or(""))
                .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
                .unwrap_or_else(|| panic!("no versioned kernel in Depends: {depends}"))
                .to_string();
            let deb = download(&image);
            let root = work.path().join("root");
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
            let version = image.trim_start_matches("linux-image-");
            let tmp = work.path().join("vmlinuz");
            std::fs::copy(root.join(format!("boot/vmlinuz-{version}")), &tmp).unwrap();
            std::fs::rename(&tmp, &vmlinuz).unwrap();
            vmlinuz
        })
        .clone()
}

/// A newc initramfs with static busybox and `init_script` as `/init`.
fn initramfs(dir: &Path, init_script: &str) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("init"), init_script).unwrap();
    run(Command::new("chmod").arg("755").arg(root.join("init")));
    let cpio = dir.join("initrd.cpio");
    let list = Command::new("find").arg(".").current_dir(&root).output().unwrap();
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&cpio).unwrap())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&list.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    cpio
}

const READY_THEN_POWEROFF: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo \"@berth ms=1 event=test.ready uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)\"
/bin/busybox poweroff -f
";

const READY_THEN_SLEEP: &str = "#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo '@berth ms=1 event=test.ready'
while :; do /bin/busybox sleep 1000; done
";

fn boot(dir: &Path, init_script: &str) -> Vm {
    let cfg = VmConfig::new(kernel(), initramfs(dir, init_script), "console=ttyS0 quiet panic=-1");
    Vm::start(cfg).unwrap()
}

#[test]
fn boots_to_init_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut vm = boot(dir.path(), READY_THEN_POWEROFF);
    let ready = vm.wait_for_event("test.ready", |_| true, default_timeout()).unwrap();
    let at = start.elapsed();
    let status = vm.wait_exit(default_timeout()).unwrap();
    eprintln!(
        "accel {:?}: test.ready after {at:?} (guest uptime {}), exit {status} after {:?}",
        vm.accel(),
        ready.get("uptime").unwrap_or("?"),
        start.elapsed()
    );
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < default_timeout());
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
    assert_eq!(vm.events().len(), 1);
    assert!(vm.console_text().contains("@berth ms=1 event=test.ready"));
}

#[test]
fn qmp_powerdown_is_accepted_and_quit_ends_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = boot(dir.path(), READY_THEN_SLEEP);
    vm.wait_for_event("test.ready", |_| true, default_timeout()).unwrap();
    let mut qmp = vm.qmp().unwrap();
    assert!(qmp.greeting()["QMP"]["version"]["qemu"]["major"].is_number());
    let status = qmp.execute("query-status", serde_json::Value::Null).unwrap();
    assert_eq!(status["status"], "running");
    qmp.system_powerdown().unwrap();
    qmp.wait_event("POWERDOWN", Duration::from_secs(10)).unwrap();
    // busybox as PID 1 ignores the power button: QEMU still runs.
    std::thread::sleep(Duration::from_millis(300));
    assert!(vm.try_wait().unwrap().is_none());
    qmp.quit().unwrap();
    let status = vm.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn dropping_the_vm_kills_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let vm = boot(dir.path(), READY_THEN_SLEEP);
    vm.wait_for_event("test.ready", |_| true, default_timeout()).unwrap();
    let pid = vm.pid();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap();
    assert!(comm.starts_with("qemu"), "{comm}");
    drop(vm);
    // Reaped: the pid is gone (or, very unlikely, reused by something that is not QEMU).
    match std::fs::read_to_string(proc_dir.join("comm")) {
        Err(_) => {}
        Ok(comm) => assert!(!comm.starts_with("qemu"), "QEMU {pid} still runs"),
    }
}

#[test]
fn wait_for_line_timeout_shows_the_console_tail() {
    let dir = tempfile::tempdir().unwrap();
    let vm = boot(dir.path(), READY_THEN_SLEEP);
    vm.wait_for_line(|l| l.contains("event=test.ready"), default_timeout()).unwrap();
    let start = Instant::now();
    let err =
        vm.wait_for_line(|l| l.contains("no such line"), Duration::from_secs(1)).unwrap_err().to_string();
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("@berth ms=1 event=test.ready"), "{err}");
}

#[test]
fn waiting_stops_early_when_qemu_exits() {
    let dir = tempfile::tempdir().unwrap();
    let vm = boot(dir.path(), READY_THEN_POWEROFF);
    let start = Instant::now();
    let err = vm.wait_for_line(|l| l.contains("no such line"), default_timeout()).unwrap_err().to_string();
    assert!(err.contains("QEMU exited"), "{err}");
    assert!(err.contains("reboot: Power down"), "{err}");
    assert!(start.elapsed() < default_timeout() / 2);
}

#[test]
fn qemu_start_errors_are_reported() {
    let cfg = VmConfig::new("/nonexistent/vmlinuz", "", "console=ttyS0");
    let vm = Vm::start(cfg).unwrap();
    let err = vm.wait_for_line(|_| true, default_timeout()).unwrap_err().to_string();
    assert!(err.contains("QEMU exited") && err.contains("nonexistent"), "{err}");
}

/// A guest on probation that shows progress (here the `test.ready` event; with `quiet` the
/// kernel prints nothing before it) is kept: `start_on_probation` returns as soon as the line
/// comes, under the candidate accelerator, with no restart. TCG is the candidate so that this
/// runs on every host; only a KVM candidate records a verdict, so none is recorded.
#[test]
fn a_guest_showing_progress_on_probation_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let verdicts = berth_qemu::VerdictCache::in_dir(&dir.path().join("cache"));
    let mut cfg =
        VmConfig::new(kernel(), initramfs(dir.path(), READY_THEN_SLEEP), "console=ttyS0 quiet panic=-1");
    cfg.progress_deadline = default_timeout();
    cfg.verdicts = verdicts.clone();
    let start = Instant::now();
    let mut vm = Vm::start_on_probation(cfg, berth_qemu::Accel::Tcg).unwrap();
    let returned = start.elapsed();
    assert_eq!(vm.accel(), berth_qemu::Accel::Tcg);
    assert_eq!(vm.accel_reason(), "on probation");
    assert_eq!(vm.events().iter().filter(|e| e.name == "test.ready").count(), 1, "{}", vm.console_tail(20));
    assert!(returned < default_timeout(), "returned after {returned:?}");
    assert!(vm.try_wait().unwrap().is_none(), "the same guest runs on");
    assert_eq!(verdicts.load(&berth_qemu::HostKey::current()), None);
    vm.kill();
}
