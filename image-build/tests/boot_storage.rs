//! Storage inside containers: tmpfs mounts with a size limit (Docker's `--tmpfs`).

mod common;

use berth_qemu::default_timeout;

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "tmp"
image = "oci:images/busybox:latest"
read_only = true
tmpfs = ["/cache:size=8m", "/fast:size=4m,exec"]
command = ["sh", "-c", """
echo cache-kb=$(df -k /cache | tail -1 | awk '{print $2}')
dd if=/dev/zero of=/cache/big bs=1M count=9 2>/dev/null && echo over-limit-written || echo over-limit-refused
rm -f /cache/big
cp /bin/busybox /cache/true && /cache/true && echo cache-exec=yes || echo cache-exec=no
cp /bin/busybox /fast/true && /fast/true && echo fast-exec=yes || echo fast-exec=no
touch /root-file 2>/dev/null && echo root=writable || echo root=read-only
"""]
"#;

fn field<'a>(console: &'a str, key: &str) -> &'a str {
    let prefix = format!("tmp | {key}=");
    console.lines().find_map(|l| l.trim_end().strip_prefix(prefix.as_str())).unwrap_or("")
}

#[test]
fn tmpfs_mounts_have_their_size_and_options() {
    let (_dir, out) = common::build_fresh("tmpfs", CONFIG);
    let mut vm = common::boot(&out);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "cache-kb"), "8192", "{c}");
    assert!(c.contains("tmp | over-limit-refused"), "{c}");
    assert_eq!(field(&c, "cache-exec"), "no", "noexec by default: {c}");
    assert_eq!(field(&c, "fast-exec"), "yes", "{c}");
    assert_eq!(field(&c, "root"), "read-only", "{c}");
}

// ---------------------------------------------------------------------------------------------
// The data disk: formatted on first boot, checked and mounted on every boot, never formatted
// when it holds anything.

/// A service that appends one record per boot to a named volume, fsyncs it and reports.
const DISK_CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[storage]
disk = "serial:berth-data"

[[onboot]]
name = "plain"
image = "oci:images/busybox:latest"
command = ["echo", "plain ran"]

[[service]]
name = "writer"
image = "oci:images/busybox:latest"
volumes = ["records:/data"]
command = ["sh", "-c", "echo boot >> /data/boots && sync /data/boots && echo boots=$(wc -l < /data/boots) && exec sleep 1000"]
"#;

/// QEMU arguments for a virtio disk with a serial number.
fn disk_args(path: &std::path::Path, format: &str) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=none,id=data,file={},format={format}", path.display()),
        "-device".into(),
        "virtio-blk-pci,drive=data,serial=berth-data".into(),
    ]
}

fn boot_disk(out: &std::path::Path, disk: &std::path::Path, format: &str) -> berth_qemu::Vm {
    let args = disk_args(disk, format);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    common::boot_with(out, &refs)
}

fn event<'a>(events: &'a [berth_qemu::Event], name: &str) -> Option<&'a berth_qemu::Event> {
    events.iter().find(|e| e.name == name)
}

/// `dumpe2fs -h` of an ext4 filesystem inside a qcow2 image (converted to raw first).
fn superblock_report(dir: &std::path::Path, qcow2: &std::path::Path) -> String {
    let raw = dir.join("check.raw");
    let o = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(qcow2)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new("dumpe2fs").arg("-h").arg(&raw).output().unwrap();
    let _ = std::fs::remove_file(&raw);
    assert!(o.status.success(), "dumpe2fs: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn powerdown(vm: &mut berth_qemu::Vm) {
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(default_timeout()).unwrap();
}

#[test]
fn blank_disk_is_formatted_then_survives_a_power_button_shutdown() {
    let (dir, out) = common::build_fresh("disk", DISK_CONFIG);
    let qcow2 = dir.path().join("data.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg("256M")
        .output()
        .unwrap();
    assert!(o.status.success());

    let mut vm = boot_disk(&out, &qcow2, "qcow2");
    vm.wait_for_line(|l| l.contains("writer | boots="), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    assert!(c.contains("writer | boots=1"), "{c}");
    let events = vm.events();
    let formatted = event(&events, "storage.formatted").expect("storage.formatted");
    assert_eq!(formatted.get("label"), Some("berth-data"));
    let mounted = event(&events, "storage.mounted").expect("storage.mounted");
    assert_eq!(mounted.get("mount"), Some("/var/lib/berth"));
    assert_eq!(mounted.get("formatted"), Some("true"));
    assert_eq!(event(&events, "storage.unmounted").and_then(|e| e.get("result")), Some("unmounted"), "{c}");
    // The filesystem was left clean: no journal to replay.
    let report = superblock_report(dir.path(), &qcow2);
    assert!(report.lines().any(|l| l.starts_with("Filesystem state:") && l.ends_with(" clean")), "{report}");
    assert!(!report.contains("needs_recovery"), "{report}");
    assert!(report.contains("Filesystem volume name:   berth-data"), "{report}");

    // Second boot: not formatted again, the record is there, the check found it clean.
    let mut vm = boot_disk(&out, &qcow2, "qcow2");
    vm.wait_for_line(|l| l.contains("writer | boots="), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    assert!(c.contains("writer | boots=2"), "{c}");
    let events = vm.events();
    assert!(event(&events, "storage.formatted").is_none(), "formatted twice: {c}");
    let mounted = event(&events, "storage.mounted").expect("storage.mounted");
    assert_eq!((mounted.get("formatted"), mounted.get("was_clean")), (Some("false"), Some("true")), "{c}");
    assert_eq!(event(&events, "storage.checked").and_then(|e| e.get("exit")), Some("0"), "{c}");
}

#[test]
fn a_disk_holding_data_is_refused_untouched() {
    let (dir, out) = common::build_fresh("disk-data", DISK_CONFIG);
    let raw = dir.path().join("data.raw");
    let mut bytes = vec![0u8; 32 << 20];
    for (i, b) in bytes[8192..16384].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    std::fs::write(&raw, &bytes).unwrap();

    let mut vm = boot_disk(&out, &raw, "raw");
    vm.wait_for_line(|l| l.contains("plain | plain ran"), default_timeout()).unwrap();
    vm.wait_for_event("container.failed", |e| e.get("name") == Some("writer"), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    let events = vm.events();
    let failed = event(&events, "storage.failed").expect("storage.failed");
    let error = failed.get("error").unwrap_or_default();
    assert!(error.contains("holds data (a non-zero byte at offset 8192)"), "{error}");
    assert!(error.contains("left untouched"), "{error}");
    let writer = events.iter().find(|e| e.name == "container.failed" && e.get("name") == Some("writer"));
    assert!(writer.is_some_and(|e| e.get("error").unwrap_or_default().contains("data disk")), "{c}");
    assert!(event(&events, "storage.formatted").is_none());
    assert!(std::fs::read(&raw).unwrap() == bytes, "the disk's bytes changed");
}
