//! Storage inside containers: tmpfs mounts with a size limit (Docker's `--tmpfs`).

mod common;

use std::path::Path;

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
command = ["sh", "-c", "echo boot >> /data/boots && sync /data/boots && echo size-mb=$(df -m /data | tail -1 | awk '{print $2}') && echo boots=$(wc -l < /data/boots) && trap 'exit 0' TERM; sleep 1000 & wait"]
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
    let qcow2 = blank_qcow2(dir.path(), "256M");

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

    // Second boot, on a disk grown to 384 MiB: not formatted again, the record is there, the
    // check found it clean, the filesystem grew.
    let o = std::process::Command::new("qemu-img")
        .args(["resize", "-q"])
        .arg(&qcow2)
        .arg("384M")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // This time the disk is found by its filesystem's label.
    let out = common::build(
        dir.path(),
        "disk-by-label",
        &DISK_CONFIG.replace("serial:berth-data", "label:berth-data"),
    );
    let mut vm = boot_disk(&out, &qcow2, "qcow2");
    vm.wait_for_line(|l| l.contains("writer | boots="), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    assert!(c.contains("writer | boots=2"), "{c}");
    let events = vm.events();
    assert!(event(&events, "storage.formatted").is_none(), "formatted twice: {c}");
    let mounted = event(&events, "storage.mounted").expect("storage.mounted");
    assert_eq!((mounted.get("formatted"), mounted.get("was_clean")), (Some("false"), Some("true")), "{c}");
    assert_eq!(mounted.get("device"), Some("/dev/vda"), "found by label: {c}");
    assert_eq!(event(&events, "storage.checked").and_then(|e| e.get("exit")), Some("0"), "{c}");
    let grown = event(&events, "storage.grown").expect("storage.grown");
    assert_eq!(grown.get("to"), Some((384u64 << 20).to_string().as_str()), "{c}");
    assert!(c.contains("writer | size-mb=3"), "df sees the larger filesystem: {c}");
}

#[test]
fn the_data_disk_is_chosen_at_boot_through_fw_cfg() {
    // The image names a disk this machine does not have; the deployment's fragment names the
    // one it has and another mount point.
    let config = DISK_CONFIG.replace("serial:berth-data", "serial:factory-default");
    let (dir, out) = common::build_fresh("disk-fw-cfg", &config);
    let qcow2 = blank_qcow2(dir.path(), "64M");
    let fragment = dir.path().join("site.toml");
    std::fs::write(&fragment, "[storage]\ndisk = \"serial:berth-data\"\nmount = \"/srv/data\"\n").unwrap();
    let mut args = disk_args(&qcow2, "qcow2");
    args.extend(["-fw_cfg".to_string(), format!("name=opt/berth/config,file={}", fragment.display())]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = common::boot_with(&out, &refs);
    vm.wait_for_line(|l| l.contains("writer | boots="), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    let events = vm.events();
    let applied = event(&events, "config.applied").expect("config.applied");
    assert_eq!(applied.get("changed"), Some("storage"), "{c}");
    let mounted = event(&events, "storage.mounted").expect("storage.mounted");
    assert_eq!((mounted.get("mount"), mounted.get("formatted")), (Some("/srv/data"), Some("true")), "{c}");
    assert!(c.contains("writer | boots=1"), "{c}");
}

#[test]
fn a_disk_holding_data_is_refused_untouched() {
    // Named by its path this time.
    let (dir, out) = common::build_fresh("disk-data", &DISK_CONFIG.replace("serial:berth-data", "/dev/vda"));
    let raw = dir.path().join("data.raw");
    let mut bytes = vec![0u8; 32 << 20];
    for (i, b) in bytes[8192..16384].iter_mut().enumerate() {
        *b = (i * 7 + 3).to_le_bytes()[0]; // a byte pattern: the low 8 bits
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

/// Named volumes and a persistent writable layer, on the data partition of berth's own EFI
/// disk (found by its GPT name). The image has three layers (see [`layered_image`]): the
/// `/etc` volume is filled from their merged view.
const VOLUMES_CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[storage]
disk = "partlabel:berth-data"

[[service]]
name = "keeper"
image = "oci:images/busybox:layered"
volumes = ["state:/state", "app-home:/home/app", "config:/etc:ro"]
persistent = true
restart = "on-failure"
command = ["sh", "-c", """
echo x >> /state/starts && sync /state/starts
echo y >> /layer-file && sync /layer-file
n=$(wc -l < /state/starts)
echo "run=$n layer=$(wc -l < /layer-file) home=$(stat -c %u:%g /home/app) passwd=$(grep -c '^app:' /etc/passwd) resolv=$(test -s /etc/resolv.conf && echo yes)"
touch /etc/x 2>/dev/null && echo etc=writable || echo etc=read-only
echo "motd=$(cat /etc/motd) note=$(test -e /etc/note && echo present || echo deleted)"
[ "$n" = 1 ] && exit 1
trap 'exit 0' TERM; sleep 1000 & wait
"""]
"#;

/// `images/busybox:layered`: busybox, then a layer adding `/etc/motd` ("two") and `/etc/note`,
/// then one replacing `/etc/motd` ("three") and deleting `/etc/note` (an OCI whiteout).
fn layered_image(dir: &Path) {
    let layout = dir.join("images/busybox");
    for (tag, base, files) in [
        ("two", "latest", &[("etc/motd", "two"), ("etc/note", "from layer two")][..]),
        ("layered", "two", &[("etc/motd", "three"), ("etc/.wh.note", "")][..]),
    ] {
        let root = dir.join(format!("layer-{tag}"));
        for (path, text) in files {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), format!("{text}\n")).unwrap();
        }
        let args = ["image", "import", root.to_str().unwrap(), "--tag", tag, "--base", base, "-o"];
        let o = common::run_berth(&[&args[..], &[layout.to_str().unwrap()]].concat());
        assert!(o.status.success(), "import {tag}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn volumes_and_a_persistent_layer_survive_restarts_and_reboots() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    layered_image(dir.path());
    std::fs::write(dir.path().join("vol.toml"), VOLUMES_CONFIG).unwrap();
    let out = dir.path().join("out");
    let o = common::run_berth(&[
        "build",
        dir.path().join("vol.toml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "raw-efi",
        "--data-size",
        "64m",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let disk = out.join("disk.raw");
    let run = |c: &str, n: u32| -> Option<String> {
        let prefix = format!("keeper | run={n} ");
        c.lines().find_map(|l| l.trim_end().strip_prefix(prefix.as_str()).map(str::to_string))
    };

    // First boot: the partition is formatted; the first run fails and is restarted.
    let mut vm = boot_disk(&out, &disk, "raw");
    vm.wait_for_line(|l| l.contains("keeper | run=2 "), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    let events = vm.events();
    let mounted = event(&events, "storage.mounted").expect("storage.mounted");
    assert_eq!(
        mounted.get("device"),
        Some("/dev/vda4"),
        "the berth-data partition, after the two system slots: {c}"
    );
    assert_eq!(mounted.get("formatted"), Some("true"));
    assert_eq!(run(&c, 1).as_deref(), Some("layer=1 home=1000:1000 passwd=1 resolv=yes"), "{c}");
    assert_eq!(run(&c, 2).as_deref(), Some("layer=2 home=1000:1000 passwd=1 resolv=yes"), "restart: {c}");
    assert!(c.contains("keeper | etc=read-only"), "{c}");
    assert!(c.contains("keeper | motd=three note=deleted"), "copy-up of the merged layers: {c}");
    let created: Vec<&str> =
        events.iter().filter(|e| e.name == "volume.created").filter_map(|e| e.get("name")).collect();
    assert_eq!(created, ["state", "app-home", "config"], "made once, on the first start");

    // Second boot: both the volume and the writable layer kept their data.
    let mut vm = boot_disk(&out, &disk, "raw");
    vm.wait_for_line(|l| l.contains("keeper | run="), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    assert_eq!(run(&c, 3).as_deref(), Some("layer=3 home=1000:1000 passwd=1 resolv=yes"), "reboot: {c}");
    assert!(vm.events().iter().all(|e| e.name != "volume.created" && e.name != "storage.formatted"), "{c}");
}

fn have(console: &str) -> (u64, String) {
    let line = console
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("records | have="))
        .unwrap_or_else(|| panic!("no have= line: {console}"));
    let (n, gap) = line.split_once(" gap=").unwrap_or((line, ""));
    (n.parse().unwrap(), gap.to_string())
}

/// A blank qcow2 data disk of `size` (qemu-img's spelling, like "128M").
fn blank_qcow2(dir: &std::path::Path, size: &str) -> std::path::PathBuf {
    let qcow2 = dir.join("data.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow2)
        .arg(size)
        .output()
        .unwrap();
    assert!(o.status.success());
    qcow2
}

#[test]
fn a_power_cut_loses_no_fsynced_record() {
    let (dir, out) = common::build_fresh("records", &common::records_config(None));
    let qcow2 = blank_qcow2(dir.path(), "128M");
    // Killed mid-write, twice: after the first records, and again after recovering.
    let mut synced = 0u64;
    for round in 0..2 {
        let mut vm = boot_disk(&out, &qcow2, "qcow2");
        let target = synced + 40;
        let wanted = format!("records | synced={target}");
        vm.wait_for_line(|l| l.trim_end() == wanted, default_timeout()).unwrap();
        vm.kill();
        let c = vm.console_text();
        let (n, gap) = have(&c);
        assert_eq!(gap, "", "records out of sequence after round {round}: {c}");
        assert!(n >= synced, "round {round}: {n} records on disk, {synced} were fsync'd: {c}");
        if round == 1 {
            let mounted = vm.events().into_iter().find(|e| e.name == "storage.mounted").unwrap();
            assert_eq!(mounted.get("was_clean"), Some("false"), "the journal needed replaying: {c}");
        }
        synced = c
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("records | synced="))
            .filter_map(|v| v.parse().ok())
            .max()
            .unwrap();
        assert!(synced >= target);
    }
    // A last boot, shut down cleanly, counts them all.
    let mut vm = boot_disk(&out, &qcow2, "qcow2");
    vm.wait_for_line(|l| l.contains("records | have="), default_timeout()).unwrap();
    powerdown(&mut vm);
    let c = vm.console_text();
    let (n, gap) = have(&c);
    assert_eq!(gap, "", "{c}");
    assert!(n >= synced, "{n} records on disk, {synced} were fsync'd: {c}");
}

#[test]
fn twenty_boot_write_power_button_cycles_keep_every_record() {
    let (dir, out) = common::build_fresh("cycles", &common::records_config(Some(1)));
    let qcow2 = blank_qcow2(dir.path(), "128M");
    for cycle in 0..20u64 {
        let mut vm = boot_disk(&out, &qcow2, "qcow2");
        let wanted = format!("records | synced={}", cycle + 1);
        vm.wait_for_line(|l| l.trim_end() == wanted, default_timeout())
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        powerdown(&mut vm);
        let c = vm.console_text();
        assert_eq!(have(&c), (cycle, String::new()), "cycle {cycle}: {c}");
        let unmounted = vm.events().into_iter().find(|e| e.name == "storage.unmounted");
        assert_eq!(unmounted.and_then(|e| e.get("result").map(str::to_string)).as_deref(), Some("unmounted"));
    }
    let report = superblock_report(dir.path(), &qcow2);
    assert!(report.lines().any(|l| l.starts_with("Filesystem state:") && l.ends_with(" clean")), "{report}");
}
