//! An image carries depmod's `modules.alias` and `modules.dep` for the modules it packs
//! (Debian's kernel package ships neither): PID 1 finds there which packed module a device
//! needs, and what to load before it.

mod common;

use berth_image_build::cpio::read_archive;
use berth_schema::modalias::{AliasTable, ModuleDeps};

#[test]
fn the_initramfs_holds_the_packed_modules_alias_table() {
    let config = "[kernel]\nmodules = [\"vmxnet3\"]\n\n[[onboot]]\nname = \"x\"\nimage = \"oci:images/busybox:latest\"\n";
    let (_dir, out) = common::build_fresh("aliases", config);
    let initrd = std::fs::read(out.join("initrd.img")).unwrap();
    let records = read_archive(zstd::decode_all(initrd.as_slice()).unwrap().as_slice()).unwrap();
    let table = records
        .iter()
        .find(|r| r.path.starts_with("lib/modules/") && r.path.ends_with("/modules.alias"))
        .unwrap_or_else(|| {
            panic!("no modules.alias in {:?}", records.iter().map(|r| &r.path).collect::<Vec<_>>())
        });
    let table = AliasTable::parse(&String::from_utf8(table.data.clone()).unwrap()).unwrap();
    assert_eq!(table.modules_for("pci:v000015ADd000007B0sv000015ADsd000007B0bc02sc00i01"), ["vmxnet3"]);
    assert_eq!(
        table.modules_for("virtio:d00000001v00001AF4"),
        ["virtio_net"],
        "the NIC driver packed by default"
    );
    // modules.dep: virtio_net after what it needs (the virtio core, net_failover), all packed.
    let deps = records.iter().find(|r| r.path.ends_with("/modules.dep")).expect("modules.dep");
    let deps = ModuleDeps::parse(&String::from_utf8(deps.data.clone()).unwrap()).unwrap();
    let order = deps.load_order(&["virtio_net"], &[]);
    let names: Vec<String> = order.iter().map(|f| berth_schema::modalias::name_of_file(f)).collect();
    assert_eq!(names, ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net"], "{order:?}");
    for f in &order {
        assert!(records.iter().any(|r| r.path.ends_with(f.as_str())), "{f} is not packed");
    }
    // Every module named in the table is packed beside it.
    for a in &table.aliases {
        assert!(
            records.iter().any(|r| r.path.ends_with(&format!("/{}.ko", a.module))
                || r.path.ends_with(&format!("/{}.ko", a.module.replace('_', "-")))),
            "{} is not packed",
            a.module
        );
    }
}

/// `berth build` of `config` (busybox image at hand); its stderr and the initramfs's size.
fn build_reporting(dir: &std::path::Path, name: &str, config: &str) -> (String, u64) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    let out = dir.join(format!("{name}.out"));
    let o = common::run_berth(&["build", file.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (stderr, std::fs::metadata(out.join("initrd.img")).unwrap().len())
}

#[test]
fn the_build_says_what_a_hardware_set_adds() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let containers = "\n[[onboot]]\nname = \"x\"\nimage = \"oci:images/busybox:latest\"\n";
    let (stderr, with) =
        build_reporting(dir.path(), "vmware", &format!("[kernel]\nhardware = [\"vmware\"]\n{containers}"));
    let prefix = "berth: drivers by device ([kernel] hardware) vmware: ";
    let line = stderr.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("{stderr}"));
    // vmxnet3, vmw_pvscsi, vmw_balloon, vmw_vmci and what they need besides the packed ones.
    let (count, rest) = line.split_once(" driver modules, ").unwrap_or_else(|| panic!("{line}"));
    let count: usize = count.parse().unwrap();
    let mib: f64 = rest.strip_suffix(" MiB uncompressed").unwrap().parse().unwrap();
    assert!(count >= 4 && mib > 0.1, "{line}");
    // `berth inspect` lists the set and its drivers.
    let o = common::run_berth(&["inspect", "--json", dir.path().join("vmware.out").to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["hardware"], serde_json::json!(["vmware"]), "{r}");
    for m in ["vmxnet3", "vmw_pvscsi", "vmw_balloon", "vmw_vmci"] {
        assert!(r["modules"][m].as_u64().is_some_and(|b| b > 0), "{m}: {r}");
    }
    let o = common::run_berth(&["inspect", dir.path().join("vmware.out").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hardware    vmware (drivers loaded by device)\n"));

    // Without a set: no such line, and a smaller initramfs.
    let (stderr, without) = build_reporting(dir.path(), "plain", containers);
    assert!(!stderr.contains("drivers by device"), "{stderr}");
    assert!(without < with, "{without} >= {with}");
}
