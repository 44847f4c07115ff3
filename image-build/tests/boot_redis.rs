//! A real application from a Debian root filesystem (redis from `debootstrap --variant=minbase
//! --include=redis-server`, 222 MB, cached) as an appliance: from `disk.qcow2` under OVMF it
//! answers PING through its published port in a 256 MiB machine; the same image as
//! kernel+initrd (its layers unpacked into RAM) fails in 512 MiB — PID 1 says the initramfs did
//! not fit and what to do — and answers with the memory `berth build` says it needs.

mod common;

use std::process::Command;
use std::time::Instant;

use berth_qemu::{default_timeout, user_net_args, Vm, VmConfig};
use common::redis;

/// The MiB `berth build` printed for a layout (`needs N MiB of guest RAM as kernel+initrd`,
/// `N MiB from the disk`).
fn printed_need(stderr: &str, after: &str) -> u64 {
    let at = stderr.find(after).unwrap_or_else(|| panic!("`{after}` in {stderr}"));
    let words: Vec<&str> = stderr[..at].split_whitespace().collect();
    let n = words.iter().rposition(|w| *w == "MiB").expect("N MiB");
    words[n - 1].parse().unwrap()
}

#[test]
fn redis_boots_from_the_disk_in_256_mib_while_its_initramfs_needs_far_more() {
    let root = redis::rootfs();
    let du = Command::new("du").args(["-sb"]).arg(&root).output().unwrap();
    let bytes: u64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap().parse().unwrap();
    assert!(bytes >= 150_000_000, "a real Debian root filesystem: {bytes} bytes");

    let dir = tempfile::tempdir().unwrap();
    redis::image(dir.path());
    let config = dir.path().join("redis.toml");
    std::fs::write(&config, redis::CONFIG).unwrap();
    let out = dir.path().join("out");
    let stderr = common::build_formats(&config, &out, &["qcow2"], &[]);
    let in_ram = printed_need(&stderr, "of guest RAM as kernel+initrd");
    let from_disk = printed_need(&stderr, "from the disk");
    assert!(in_ram > 512, "the initramfs layout needs more than 512 MiB: {stderr}");
    assert!(from_disk <= 256, "{stderr}");

    // From the disk, under OVMF, in 256 MiB: redis answers through the published port.
    let port = redis::free_port();
    let mut cfg = VmConfig { memory_mib: 256, ..VmConfig::default() };
    cfg.extra_args
        .extend(["-bios".to_string(), berth_image_build::formats::ovmf().unwrap().display().to_string()]);
    cfg.extra_args.extend([
        "-drive".to_string(),
        format!("file={},format=qcow2,if=virtio", out.join("disk.qcow2").display()),
    ]);
    cfg.extra_args.extend(user_net_args(&[(port, 6379)]));
    let vm = Vm::start(cfg).unwrap();
    let answered = redis::wait_pong(port, Instant::now() + 2 * default_timeout());
    assert!(answered, "no PONG from the disk in 256 MiB: {}", vm.console_tail(40));
    let mounted = vm.events().into_iter().find(|e| e.name == "system_partition.mounted");
    assert!(mounted.is_some(), "{}", vm.console_tail(40));
    drop(vm);

    // kernel+initrd in 512 MiB: the initramfs does not fit, and PID 1 says so.
    let boot_in_ram = |mib: u32, port: u16| -> Vm {
        let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
        let mut cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
        cfg.memory_mib = mib;
        cfg.extra_args.extend(user_net_args(&[(port, 6379)]));
        Vm::start(cfg).unwrap()
    };
    let vm = boot_in_ram(512, redis::free_port());
    let failed = vm.wait_for_event("boot.failed", |_| true, 2 * default_timeout());
    let failed = failed.unwrap_or_else(|e| panic!("{e}: {}", vm.console_tail(40)));
    let error = failed.get("error").unwrap_or_default();
    assert!(
        error.contains("does not fit in the machine's memory") && error.contains("disk format"),
        "{error}"
    );
    drop(vm);

    // With what `berth build` printed, it answers.
    let port = redis::free_port();
    let vm = boot_in_ram(u32::try_from(in_ram).unwrap(), port);
    let answered = redis::wait_pong(port, Instant::now() + 2 * default_timeout());
    assert!(answered, "no PONG with the {in_ram} MiB berth build printed: {}", vm.console_tail(40));
}

/// `[system] memory` below what a requested layout needs is refused, naming the field.
#[test]
fn system_memory_below_the_need_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let build = |memory: &str, formats: &[&str]| -> (bool, String) {
        let config = dir.path().join("hello.toml");
        std::fs::write(&config, example.replace("[system]", &format!("[system]\nmemory = \"{memory}\"")))
            .unwrap();
        let out = dir.path().join(format!("out-{memory}-{}", formats.len()));
        let mut args = vec!["build", config.to_str().unwrap(), "-o", out.to_str().unwrap()];
        for f in formats {
            args.extend(["--format", f]);
        }
        let o = common::run_berth(&args);
        if !o.status.success() {
            assert!(!out.exists(), "nothing half-written");
        }
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok, err) = build("64m", &[]);
    assert!(!ok && err.contains("[system] memory = 64 MiB") && err.contains("as kernel+initrd"), "{err}");
    let (ok, err) = build("128m", &["qcow2"]);
    assert!(!ok && err.contains("192 MiB from the disk"), "{err}");
    assert!(!err.contains("kernel+initrd ("), "only the layout asked for: {err}");
    assert!(build("128m", &[]).0, "kernel+initrd of hello fits 128 MiB");
    assert!(build("256m", &["qcow2"]).0);
}
