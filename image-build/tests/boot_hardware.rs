//! Drivers by device: a machine with VMware's devices and no virtio NIC finds its drivers among
//! the packed ones by modalias (`[kernel] hardware = ["vmware"]`), loads them off PID 1's path,
//! says so (`module.loaded`) and gets its DHCP address on the vmxnet3 NIC; without a
//! VMware device none of those drivers is loaded.

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
