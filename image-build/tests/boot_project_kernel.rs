//! The project kernel (kernel-config/build: tinyconfig + the fragments, everything built in)
//! boots berth: the hello example, one machine exercising every other area (network and the
//! container bridge, the data disk, configuration at boot, cgroup limits, the secure defaults,
//! the power button), the ISO under SeaBIOS, and a PC's e1000e NIC and AHCI disk with the
//! drivers built in (`hardware = ["metal", "vmware"]`). `berth kernel check` passes on it.
//!
//! The kernel is built once per change of the source or the fragments and cached outside the
//! checkout (about 10 min on 2 cores the first time).

mod common;

use std::path::Path;
use std::process::Command;

use berth_qemu::{default_timeout, GuestShutdown, Vm, VmConfig};

#[test]
fn check_passes_on_the_project_kernel() {
    let kernel = common::project_kernel();
    let o = common::run_berth(&["kernel", "check", kernel.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{report}{}", String::from_utf8_lossy(&o.stderr));
    assert!(report.contains("CONFIG_OVERLAY_FS"), "{report}");
}

#[test]
fn hello_example_boots_on_the_project_kernel() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let out = common::build(dir.path(), "hello", &common::with_project_kernel(&example));
    let mut vm = common::boot(&out);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    for line in
        ["hello | hello from hello", "hello | memory limit: 67108864", "hello | root filesystem: overlay"]
    {
        assert!(c.lines().any(|l| l.trim_end() == line), "missing `{line}` in:\n{c}");
    }
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{c}");
    let packed = std::fs::read(out.join("vmlinuz")).unwrap();
    assert!(packed == std::fs::read(common::project_kernel()).unwrap(), "the image holds the project kernel");
}

/// One machine, one check per area.
const AREAS: &str = r#"
[kernel]
cmdline = "console=ttyS0"

[system]
hostname = "from-image"

[storage]
disk = "serial:data"

[[onboot]]
name = "oom"
image = "oci:images/busybox:latest"
memory = "16m"
command = ["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived"]

[[onboot]]
name = "secure"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status | tr -s '\\t' ' '; echo hostname=$(cat /etc/hostname 2>/dev/null || hostname)"]

[[service]]
name = "web"
image = "oci:images/busybox:latest"
net = "bridge"
depends_on = ["network"]
volumes = ["web:/data"]
command = ["sh", "-c", "wget -q -O /data/page http://10.0.2.2:PORT/ && sync /data/page && echo fetched=$(cat /data/page); trap 'exit 0' TERM; sleep 1000 & wait"]
"#;

#[test]
fn every_area_works_on_the_project_kernel() {
    let port = common::serve_page("host-page");
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let config = common::with_project_kernel(&AREAS.replace("PORT", &port.to_string()));
    let out = common::build(dir.path(), "areas", &config);
    let disk = dir.path().join("data.raw");
    std::fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    let fragment = dir.path().join("site.toml");
    std::fs::write(&fragment, "[system]\nhostname = \"from-fwcfg\"\n").unwrap();

    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    let mut cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
    cfg.console_log = Some(out.join("console.log"));
    let mut args = berth_qemu::user_net_args(&[]);
    args.extend([
        "-drive".to_string(),
        format!("if=none,id=data,file={},format=raw", disk.display()),
        "-device".to_string(),
        "virtio-blk-pci,drive=data,serial=data".to_string(),
        "-fw_cfg".to_string(),
        format!("name=opt/berth/config,file={}", fragment.display()),
    ]);
    cfg.extra_args = args;
    let mut vm = Vm::start(cfg).expect("start qemu");
    vm.wait_for_line(|l| l.contains("web | fetched="), default_timeout()).unwrap();
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    let events = vm.events();
    let has = |name: &str, key: &str, value: &str| {
        events.iter().any(|e| e.name == name && e.get(key) == Some(value))
    };
    assert!(has("container.exited", "oom_killed", "true"), "cgroup memory limit: {c}");
    assert!(c.contains("secure | Seccomp: 2"), "seccomp filter: {c}");
    assert!(c.contains("secure | NoNewPrivs: 1"), "{c}");
    let caps = berth_runtime::defaults::default_capabilities().unwrap();
    assert!(c.contains(&format!("secure | CapEff: {caps:016x}")), "berth's default capabilities: {c}");
    assert!(has("config.applied", "source", "fw_cfg"), "fw_cfg: {c}");
    assert!(c.contains("secure | hostname=secure"), "{c}");
    assert!(has("network.address", "source", "dhcp"), "DHCP: {c}");
    assert!(events.iter().any(|e| e.name == "network.bridge"), "bridge: {c}");
    assert!(c.contains("web | fetched=host-page"), "NAT from the bridge: {c}");
    assert!(has("storage.formatted", "device", "/dev/vda"), "data disk: {c}");
    assert!(has("storage.unmounted", "result", "unmounted"), "{c}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "power button: {c}");
    let machine = events.iter().find(|e| e.name == "config.applied").and_then(|e| e.get("changed"));
    assert_eq!(machine, Some("system.hostname"), "{c}");
}

#[test]
fn the_iso_boots_under_seabios_and_ovmf_on_the_project_kernel() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    std::fs::write(dir.path().join("hello.toml"), common::with_project_kernel(&example)).unwrap();
    let out = dir.path().join("out");
    let o = common::run_berth(&[
        "build",
        dir.path().join("hello.toml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "iso",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = run_iso(&out.join("berth.iso"), &[]);
    assert!(run.contains("hello | hello from hello"), "{run}");
    // UEFI: the ISO's GRUB hands the same kernel to its EFI stub.
    let run = run_iso(&out.join("berth.iso"), &["--uefi"]);
    assert!(run.contains("Welcome to GRUB") && run.contains("hello | hello from hello"), "{run}");
}

/// `berth run IMAGE.iso` (as a CD; SeaBIOS, or OVMF with `--uefi` in `extra`), its console.
fn run_iso(iso: &Path, extra: &[&str]) -> String {
    let o = Command::new(common::berth())
        .args(["run", "--no-net", "--timeout", "120"])
        .args(extra)
        .arg(iso)
        .output()
        .expect("run berth run");
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    text
}

/// The project kernel builds physical machines' and VMware's drivers in (no modules): an image
/// naming those sets passes the kernel check, and a PC with an e1000e NIC and an AHCI data disk
/// (no virtio device) gets its address, mounts the disk by label and serves.
#[test]
fn the_project_kernel_drives_a_pc_with_its_drivers_built_in() {
    let port = common::serve_page("built-in-page");
    let config = format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"
hardware = ["metal", "vmware"]

[system]
when_done = "poweroff"

[storage]
disk = "label:berth-data"

[[service]]
name = "fetch"
image = "oci:images/busybox:latest"
net = "bridge"
depends_on = ["network"]
command = ["sh", "-c", "echo page=$(wget -q -O - http://10.0.2.2:{port}/) nic=$(ls /sys/bus/pci/drivers | grep -c e1000e)"]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let out = common::build(dir.path(), "pc", &common::with_project_kernel(&config));
    let disk = common::labelled_data_disk(dir.path(), "sata.img");
    let mut args: Vec<String> =
        ["-netdev", "user,id=n0", "-device", "e1000e,netdev=n0"].map(String::from).to_vec();
    args.extend(common::ahci_disk_args(&disk));
    let mut vm = common::boot_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    vm.wait_exit(default_timeout() * 2).unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
    let c = vm.console_text();
    assert!(c.contains("fetch | page=built-in-page nic=1"), "{c}");
    let mounted =
        vm.events().into_iter().find(|e| e.name == "storage.mounted").unwrap_or_else(|| panic!("{c}"));
    assert!(mounted.get("device").unwrap().starts_with("/dev/sd"), "{mounted:?}");
    // Nothing was loaded: the kernel has no modules.
    assert!(!vm.events().iter().any(|e| e.name == "module.loaded"), "{c}");
}
