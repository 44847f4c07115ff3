//! Physical machines' devices, emulated by QEMU with no virtio device at all: Debian's generic
//! kernel (`[kernel] source = "debian-generic"`) with the `metal` driver set, each driver
//! loaded by the modalias of a device the machine has.
//!
//! * A PC: an e1000e NIC gets its DHCP address and a bridge container fetches a host page; an
//!   AHCI disk is the data disk, found by its label; a USB stick on xHCI carries the NoCloud
//!   config drive; a USB keyboard (the PS/2 one removed) types into the debug console on the
//!   screen, through QMP `send-key`.
//! * NVMe and hotplug: an NVMe data disk; a machine booted without a NIC gets one added
//!   (`device_add e1000e`): the kernel's uevent brings its driver, then an address.
//! * e1000 and rtl8139 NICs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_qemu::{default_timeout, Vm};
use serde_json::json;

use common::serve_page;

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A FAT image labelled CIDATA whose user-data sets the hostname.
fn nocloud_stick(dir: &Path) -> PathBuf {
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: iid-metal-01\n").unwrap();
    std::fs::write(seed.join("user-data"), "[system]\nhostname = \"from-usb-stick\"\n").unwrap();
    let img = dir.join("stick.img");
    run(Command::new("mkfs.vfat").args(["-n", "CIDATA", "-C"]).arg(&img).arg("2048"));
    for f in ["meta-data", "user-data"] {
        run(Command::new("mcopy").arg("-i").arg(&img).arg(seed.join(f)).arg(format!("::/{f}")));
    }
    img
}

/// The QMP qcodes that type `c` on a US keyboard.
fn qcodes(c: char) -> Vec<String> {
    let shifted = |k: &str| vec!["shift".to_string(), k.to_string()];
    match c {
        'a'..='z' | '0'..='9' => vec![c.to_string()],
        ' ' => vec!["spc".into()],
        '\n' => vec!["ret".into()],
        '-' => vec!["minus".into()],
        '=' => vec!["equal".into()],
        '.' => vec!["dot".into()],
        '/' => vec!["slash".into()],
        '>' => shifted("dot"),
        '$' => shifted("4"),
        '(' => shifted("9"),
        ')' => shifted("0"),
        '*' => shifted("8"),
        _ => panic!("no key for {c:?}"),
    }
}

/// Types `text` on the machine's keyboard.
fn type_text(vm: &Vm, text: &str) {
    let mut qmp = vm.qmp().unwrap();
    for c in text.chars() {
        let keys: Vec<_> = qcodes(c).into_iter().map(|k| json!({"type": "qcode", "data": k})).collect();
        qmp.execute("send-key", json!({"keys": keys, "hold-time": 20})).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// The module the machine loaded by this name, and the device it was for.
fn loaded(vm: &Vm, name: &str) -> Option<String> {
    vm.events()
        .into_iter()
        .find(|e| e.name == "module.loaded" && e.get("name") == Some(name))
        .and_then(|e| e.get("device").map(str::to_string))
}

fn fetch_service(port: u16) -> String {
    format!(
        r#"
[[service]]
name = "fetch"
image = "oci:images/busybox:latest"
net = "bridge"
depends_on = ["network"]
command = ["sh", "-c", "echo machine=$(grep 127.0.1.1 /etc/hosts | cut -f2) page=$(wget -q -O - http://10.0.2.2:{port}/)"]
"#
    )
}

#[test]
fn a_pc_finds_its_nic_sata_disk_usb_stick_and_keyboard() {
    let port = serve_page("host-page-ok");
    let config = format!(
        r#"
[kernel]
source = "debian-generic"
hardware = ["metal"]
cmdline = "console=ttyS0 console=tty0"

[system]
config_drive = true

[storage]
disk = "label:berth-data"
{}
[console]
name = "shell"
image = "oci:images/busybox:latest"
command = ["sh"]
devices = ["/dev/kmsg"]
"#,
        fetch_service(port)
    );
    let (dir, out) = common::build_fresh("pc", &config);
    let disk = common::labelled_data_disk(dir.path(), "sata.img");
    let stick = nocloud_stick(dir.path());
    let usb = format!("file={},format=raw,if=none,id=stick,readonly=on", stick.display());
    // No PS/2 keyboard: keys can only come from the USB one.
    let mut args: Vec<String> =
        ["-machine", "i8042=off", "-netdev", "user,id=n0", "-device", "e1000e,netdev=n0"]
            .map(String::from)
            .to_vec();
    args.extend(common::ahci_disk_args(&disk));
    args.extend(
        ["-device", "qemu-xhci,id=xhci", "-drive", &usb, "-device", "usb-storage,bus=xhci.0,drive=stick"]
            .into_iter()
            .chain(["-device", "usb-kbd,bus=xhci.0"])
            .map(String::from),
    );
    let vm = common::boot_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let line = vm
        .wait_for_line(|l| l.contains("fetch | machine="), t * 2)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(60)));
    let c = vm.console_text();
    assert!(line.contains("machine=from-usb-stick page=host-page-ok"), "{line}\n{c}");

    // Each driver came by its device's modalias.
    let e1000e = loaded(&vm, "e1000e").unwrap_or_else(|| panic!("no e1000e:\n{c}"));
    assert!(e1000e.starts_with("pci:v00008086d000010D3"), "{e1000e}");
    let ahci = loaded(&vm, "ahci").unwrap_or_else(|| panic!("no ahci:\n{c}"));
    assert!(ahci.starts_with("pci:v00008086d00002922"), "{ahci}");
    let xhci = loaded(&vm, "xhci_pci").unwrap_or_else(|| panic!("no xhci_pci:\n{c}"));
    assert!(xhci.contains("bc0Csc03i30"), "{xhci}");
    let stick = loaded(&vm, "usb_storage").unwrap_or_else(|| panic!("no usb_storage:\n{c}"));
    assert!(stick.starts_with("usb:v46F4p0001") && stick.contains("ic08isc06ip50"), "{stick}");
    assert!(loaded(&vm, "usbhid").is_some_and(|d| d.starts_with("usb:v0627p0001")), "{c}");
    // Nothing the machine lacks: no other NIC or storage driver.
    for absent in ["igb", "r8169", "8139cp", "nvme", "e1000", "vmxnet3"] {
        assert_eq!(loaded(&vm, absent), None, "{absent}\n{c}");
    }
    let events = vm.events();
    let drive = events.iter().find(|e| e.name == "config.drive").unwrap_or_else(|| panic!("{c}"));
    assert_eq!(drive.get("fs"), Some("vfat"), "{drive:?}");
    assert!(drive.get("device").unwrap().starts_with("/dev/sd"), "{drive:?}");
    let mounted = events.iter().find(|e| e.name == "storage.mounted").unwrap_or_else(|| panic!("{c}"));
    assert!(mounted.get("device").unwrap().starts_with("/dev/sd"), "{mounted:?}");
    // The disks' drivers came before the disk was used, the NIC's after the first container.
    common::assert_in_order(
        &common::event_names(&vm),
        &["module.loaded:ahci", "storage.mounted", "container.started:fetch"],
    );

    // The debug console is on the screen (the last console=), where the USB keyboard types.
    vm.wait_for_event("container.started", |e| e.get("name") == Some("shell"), t).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    type_text(&vm, "echo typed-$((6*7)) >/dev/kmsg\n");
    vm.wait_for_line(|l| l.contains("typed-42"), t)
        .unwrap_or_else(|e| panic!("{e}: the keys did not reach the shell\n{}", vm.console_tail(30)));
}

#[test]
fn an_nvme_disk_and_a_nic_added_while_running() {
    let port = serve_page("hotplug-page-ok");
    let config = format!(
        "[kernel]\nsource = \"debian-generic\"\nhardware = [\"metal\"]\ncmdline = \"console=ttyS0\"\n\n\
         [system]\nwhen_done = \"poweroff\"\n\n[storage]\ndisk = \"label:berth-data\"\n{}",
        fetch_service(port)
    );
    let (dir, out) = common::build_fresh("hotplug", &config);
    let disk = common::labelled_data_disk(dir.path(), "nvme.img");
    let nvme = format!("file={},format=raw,if=none,id=nv", disk.display());
    let mut vm = common::boot_with(&out, &["-drive", &nvme, "-device", "nvme,drive=nv,serial=berth-nvme"]);
    let t = default_timeout();
    // No NIC yet: the network waits.
    vm.wait_for_event("network.waiting", |_| true, t)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
    let mounted = vm.wait_for_event("storage.mounted", |_| true, t).unwrap();
    assert!(mounted.get("device").unwrap().starts_with("/dev/nvme0n1"), "{mounted:?}");
    let nvme_driver = loaded(&vm, "nvme").unwrap_or_else(|| panic!("{}", vm.console_text()));
    assert!(nvme_driver.starts_with("pci:v00001B36d00000010"), "{nvme_driver}");
    assert_eq!(loaded(&vm, "e1000e"), None);
    // The boot's pass over the devices (right after the containers start) is over before the
    // NIC comes.
    vm.wait_for_event("drivers.pass", |e| e.get("trigger") == Some("boot"), t).unwrap();

    let mut qmp = vm.qmp().unwrap();
    qmp.execute("netdev_add", json!({"type": "user", "id": "hot0"})).unwrap();
    qmp.execute("device_add", json!({"driver": "e1000e", "netdev": "hot0", "id": "nic1"})).unwrap();
    let line = vm
        .wait_for_line(|l| l.contains("fetch | machine="), t * 2)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(60)));
    assert!(line.contains("page=hotplug-page-ok"), "{line}");
    let e1000e = loaded(&vm, "e1000e").unwrap_or_else(|| panic!("{}", vm.console_text()));
    assert!(e1000e.starts_with("pci:v00008086d000010D3"), "{e1000e}");
    common::assert_in_order(
        &common::event_names(&vm),
        &["network.waiting", "module.loaded:e1000e", "network.address", "container.started:fetch"],
    );
    // The kernel's uevent for the new device brought a pass of its own, which loaded it.
    let events = vm.events();
    let at = |pred: &dyn Fn(&berth_qemu::Event) -> bool| events.iter().position(pred).unwrap();
    let boot_pass = at(&|e| e.name == "drivers.pass" && e.get("trigger") == Some("boot"));
    let loaded_at = at(&|e| e.name == "module.loaded" && e.get("name") == Some("e1000e"));
    let uevent_pass = at(&|e| e.name == "drivers.pass" && e.get("trigger") == Some("uevent"));
    assert!(boot_pass < loaded_at && loaded_at < uevent_pass, "{events:#?}");
    assert_ne!(events[uevent_pass].get("loaded"), Some("0"), "{events:#?}");
    vm.wait_exit(t).unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
}

#[test]
fn e1000_and_rtl8139_nics_get_their_drivers_and_an_address() {
    let port = serve_page("nic-page-ok");
    let config = format!(
        "[kernel]\nsource = \"debian-generic\"\nhardware = [\"metal\"]\ncmdline = \"console=ttyS0 quiet\"\n\n\
         [system]\nwhen_done = \"poweroff\"\n{}",
        fetch_service(port)
    );
    let (_dir, out) = common::build_fresh("nics", &config);
    for (device, driver, id) in
        [("e1000", "e1000", "pci:v00008086d0000100E"), ("rtl8139", "8139cp", "pci:v000010ECd00008139")]
    {
        let nic = format!("{device},netdev=n0");
        let mut vm = common::boot_with(&out, &["-netdev", "user,id=n0", "-device", &nic]);
        vm.wait_exit(default_timeout() * 2)
            .unwrap_or_else(|e| panic!("{device}: {e}\n{}", vm.console_tail(40)));
        let c = vm.console_text();
        assert!(c.contains("fetch | machine=") && c.contains("page=nic-page-ok"), "{device}:\n{c}");
        let for_device = loaded(&vm, driver).unwrap_or_else(|| panic!("{device}: no {driver}:\n{c}"));
        assert!(for_device.starts_with(id), "{device}: {for_device}");
        let address = vm.events().into_iter().find(|e| e.name == "network.address").unwrap();
        assert_eq!(address.get("address"), Some("10.0.2.15/24"), "{device}: {address:?}");
    }
}
