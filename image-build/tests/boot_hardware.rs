//! Drivers by device: a machine with VMware's devices and no virtio NIC finds its drivers among
//! the packed ones by modalias (`[kernel] hardware = ["vmware"]`), loads them off PID 1's path,
//! says so (`module.loaded`) and gets its DHCP address on the vmxnet3 NIC; without a
//! VMware device none of those drivers is loaded. The VMDK boots from a PVSCSI disk (its slim
//! initramfs loads PVSCSI by modalias) and serves on vmxnet3.

mod common;

use berth_qemu::default_timeout;

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"
hardware = ["vmware"]

[system]
when_done = "poweroff"

[[service]]
name = "fetch"
image = "oci:images/busybox:latest"
depends_on = ["network"]
net = "host"
command = ["sh", "-c", "echo nic=$(basename $(readlink /sys/class/net/eth0/device/driver)) && ip -4 addr show eth0 | grep -o 'inet [0-9.]*'"]
"#;

#[test]
fn a_vmxnet3_nic_gets_its_driver_by_modalias_and_an_address() {
    let (_dir, out) = common::build_fresh("vmware", CONFIG);
    let mut vm = common::boot_with(&out, &["-netdev", "user,id=n0", "-device", "vmxnet3,netdev=n0"]);
    let t = default_timeout();
    vm.wait_exit(t * 2).unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
    let c = vm.console_text();
    let events = vm.events();
    let loaded = events
        .iter()
        .find(|e| e.name == "module.loaded" && e.get("name") == Some("vmxnet3"))
        .unwrap_or_else(|| panic!("vmxnet3 not loaded:\n{c}"));
    assert!(loaded.get("device").unwrap().starts_with("pci:v000015ADd000007B0"), "{loaded:?}");
    let address =
        events.iter().find(|e| e.name == "network.address").unwrap_or_else(|| panic!("no address:\n{c}"));
    assert_eq!(address.get("address"), Some("10.0.2.15/24"), "{address:?}");
    assert!(c.contains("fetch | nic=vmxnet3"), "{c}");
    assert!(c.contains("fetch | inet 10.0.2.15"), "{c}");
    // Nothing the machine lacks is loaded: no PVSCSI controller, no PVSCSI driver.
    assert!(!events.iter().any(|e| e.name == "module.loaded" && e.get("name") == Some("vmw_pvscsi")), "{c}");

    // The same image on virtio: no VMware driver at all.
    let mut vm = common::boot_with(
        &out,
        &berth_qemu::user_net_args(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    vm.wait_exit(t * 2).unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
    let events = vm.events();
    assert!(events.iter().any(|e| e.name == "network.address"), "{}", vm.console_text());
    let vmware: Vec<_> = events
        .iter()
        .filter(|e| e.name == "module.loaded" && e.get("name").is_some_and(|n| n.starts_with("vm")))
        .collect();
    assert!(vmware.is_empty(), "{vmware:?}");
}

/// The kernel, initramfs and command line of the UKI a disk image's firmware would start: its
/// ESP's default entry, split into the UKI's sections.
fn uki_parts(
    dir: &std::path::Path,
    image: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let run = |cmd: &mut std::process::Command| {
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let o = common::run_berth(&["inspect", "--json", image.to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let esp = &r["partitions"][0];
    assert_eq!(esp["name"], "EFI system partition", "{r}");
    let raw = dir.join("esp.raw");
    run(std::process::Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(image).arg(&raw));
    let entry = r["boot"]["default"].as_str().unwrap();
    let uki = dir.join("entry.efi");
    run(std::process::Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@{}", raw.display(), esp["offset"].as_u64().unwrap()))
        .arg(format!("::/EFI/Linux/{entry}"))
        .arg(&uki));
    std::fs::remove_file(&raw).unwrap();
    let (kernel, initrd, cmdline) = (dir.join("uki.linux"), dir.join("uki.initrd"), dir.join("uki.cmdline"));
    run(std::process::Command::new("objcopy")
        .arg(format!("--dump-section=.linux={}", kernel.display()))
        .arg(format!("--dump-section=.initrd={}", initrd.display()))
        .arg(format!("--dump-section=.cmdline={}", cmdline.display()))
        .arg(&uki)
        .arg(dir.join("uki.out")));
    let cmdline = std::fs::read_to_string(&cmdline).unwrap().trim_end_matches(['\0', '\n']).to_string();
    (kernel, initrd, cmdline)
}

/// A VMware machine with no virtio device: the VMDK as its only disk, on a PVSCSI controller,
/// and a vmxnet3 NIC. The VMDK's own kernel, initramfs and command line boot (its UKI's: the
/// firmware step is QEMU's, as Debian's OVMF has no PVSCSI driver and VMware's firmware does);
/// the slim initramfs loads PVSCSI by its modalias to reach the system partition; the booted
/// system loads vmxnet3 and a bridge container fetches a host page.
#[test]
fn the_vmdk_boots_from_pvscsi_and_serves_on_vmxnet3() {
    let port = common::serve_page("vmware-page!");
    let config = format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"
hardware = ["vmware"]

[system]
when_done = "poweroff"

[[service]]
name = "fetch"
image = "oci:images/busybox:latest"
net = "bridge"
depends_on = ["network"]
command = ["sh", "-c", "echo page=$(wget -q -O - http://10.0.2.2:{port}/)"]
"#
    );
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let file = dir.path().join("vmdk.toml");
    std::fs::write(&file, config).unwrap();
    let out = dir.path().join("vmdk.out");
    common::build_formats(&file, &out, &["vmdk"], &[]);
    let vmdk = out.join("disk.vmdk");
    let (kernel, initrd, cmdline) = uki_parts(dir.path(), &vmdk);
    assert!(cmdline.contains("berth.system=partlabel:berth-system-a"), "{cmdline}");
    // QEMU writes no streamOptimized VMDK: the guest's writes go to an overlay.
    let overlay = dir.path().join("overlay.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "vmdk", "-b"])
        .arg(&vmdk)
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cfg = berth_qemu::VmConfig::new(kernel, initrd, &cmdline);
    cfg.memory_mib = 1024;
    cfg.extra_args = [
        "-device",
        "pvscsi,id=pv",
        "-drive",
        &format!("file={},if=none,id=d0,format=qcow2", overlay.display()),
        "-device",
        "scsi-hd,drive=d0,bus=pv.0",
        "-netdev",
        "user,id=n0",
        "-device",
        "vmxnet3,netdev=n0",
    ]
    .map(String::from)
    .to_vec();
    let mut vm = berth_qemu::Vm::start(cfg).unwrap();
    vm.wait_exit(default_timeout() * 2).unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(60)));
    let c = vm.console_text();
    assert!(c.contains("fetch | page=vmware-page!"), "{c}");
    let loaded = |name: &str| {
        vm.events()
            .into_iter()
            .find(|e| e.name == "module.loaded" && e.get("name") == Some(name))
            .and_then(|e| e.get("device").map(str::to_string))
    };
    let pvscsi = loaded("vmw_pvscsi").unwrap_or_else(|| panic!("PVSCSI not loaded by modalias:\n{c}"));
    assert!(pvscsi.starts_with("pci:v000015ADd000007C0"), "{pvscsi}");
    let vmxnet3 = loaded("vmxnet3").unwrap_or_else(|| panic!("{c}"));
    assert!(vmxnet3.starts_with("pci:v000015ADd000007B0"), "{vmxnet3}");
    // PVSCSI came in the slim initramfs, before the system partition was mounted.
    common::assert_in_order(
        &common::event_names(&vm),
        &["module.loaded:vmw_pvscsi", "system_partition.mounted"],
    );
}
