//! Updates in place in the VM tests and the benchmark: the images, booting a disk as a machine
//! (OVMF, a NIC, reboots restart it), pushing bundles, following events across reboots.

use std::fs;
use std::path::Path;
use std::time::Duration;

use berth_qemu::{Event, Vm, VmConfig};

use super::registry::Registry;

/// An image of busybox (the same layer as `images/busybox`) plus a layer with `/greeting`.
pub fn greeting_image(dir: &Path, v: &str) {
    let root = dir.join(format!("{v}-greeting"));
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("greeting"), format!("hello from {v}\n")).unwrap();
    let o = super::run_berth(&[
        "image",
        "import",
        root.to_str().unwrap(),
        "--tag",
        v,
        "-o",
        dir.join("images/busybox").to_str().unwrap(),
        "--base",
        "latest",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Pushes the bundle of build `bundle` to `target` (`HOST:PORT/REPO:TAG`, plain HTTP).
pub fn push(bundle: &Path, target: &str) {
    let registry = target.split('/').next().unwrap();
    let o = super::run_berth(&[
        "update",
        "push",
        bundle.to_str().unwrap(),
        target,
        "--insecure-registry",
        registry,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Boots `disk` as a machine: OVMF, a virtio NIC on user networking, 512 MiB, a guest reboot
/// restarting it; the console also goes to `log`.
pub fn boot(disk: &Path, log: &Path) -> Vm {
    boot_with_disks(disk, log, &[])
}

/// [`boot`], with more raw disks attached after it (`vdb`, …).
pub fn boot_with_disks(disk: &Path, log: &Path, more: &[&Path]) -> Vm {
    let mut extra_args = vec![
        "-bios".into(),
        berth_image_build::formats::ovmf().unwrap().display().to_string(),
        "-drive".into(),
        format!("file={},format=raw,if=virtio", disk.display()),
    ];
    for d in more {
        extra_args
            .extend(["-drive".into(), format!("file={},format=raw,if=virtio,readonly=on", d.display())]);
    }
    extra_args.extend(berth_qemu::user_net_args(&[]));
    let cfg = VmConfig {
        memory_mib: 512,
        allow_reboot: true,
        console_log: Some(log.to_path_buf()),
        extra_args,
        ..VmConfig::default()
    };
    Vm::start(cfg).expect("start qemu")
}

/// Waits for event `name` whose fields match, after `after` events were seen; returns it and
/// how many events there are now.
pub fn wait(
    vm: &Vm,
    after: usize,
    name: &str,
    matches: impl Fn(&Event) -> bool,
    secs: u64,
) -> (Event, usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let events = vm.events();
        if let Some((i, e)) =
            events.iter().enumerate().skip(after).find(|(_, e)| e.name == name && matches(e))
        {
            return (e.clone(), i + 1);
        }
        if let Some(f) = events.iter().skip(after).find(|e| e.name == "update.failed") {
            panic!("update.failed: {f:?}\n{}", vm.console_tail(80));
        }
        assert!(std::time::Instant::now() < deadline, "no {name} within {secs} s:\n{}", vm.console_tail(120));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The blob digests the registry served (GET) since request `from`.
pub fn blobs_fetched(registry: &Registry, from: usize) -> Vec<String> {
    registry
        .requests()
        .iter()
        .skip(from)
        .filter_map(|r| r.strip_prefix("GET ").and_then(|p| p.split("/blobs/").nth(1)).map(str::to_string))
        .collect()
}

/// A new RSA key pair (PEM, not encrypted) with a self-signed certificate, as `berth build
/// --sign-key/--sign-cert` take: (key, certificate).
pub fn key_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pem")));
    let o = std::process::Command::new("openssl")
        .args(["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (key, cert)
}
