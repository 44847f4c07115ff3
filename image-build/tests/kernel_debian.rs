//! The Debian cloud kernel: fetched into the default cache (later runs reuse it), and module
//! resolution against its real modules tree.

use std::cell::RefCell;
use std::fs;
use std::sync::{Mutex, OnceLock};

use berth_image_build::kernel::{
    debian_cloud_kernel, debian_version_cmp, default_cache_dir, kernel_from_dir, kernel_package_from_depends,
    Kernel,
};
use berth_image_build::modules::{alias_table, module_depends, resolve_modules, ModuleError, ModuleFile};

/// Fetch (or reuse) the kernel once per test binary; tests run in parallel.
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    KERNEL.get_or_init(|| {
        debian_cloud_kernel(&default_cache_dir(), &|line| eprintln!("kernel: {line}"))
            .expect("fetch the Debian cloud kernel (is `apt-get update` done?)")
    })
}

fn names(modules: &[ModuleFile]) -> Vec<&str> {
    modules.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn kernel_is_a_cloud_bzimage() {
    let k = kernel();
    assert!(k.version.starts_with("6.1.") && k.version.ends_with("-cloud-amd64"), "{}", k.version);
    let image = fs::read(&k.vmlinuz).unwrap();
    assert_eq!(&image[0x202..0x206], b"HdrS", "bzImage setup header magic");
    assert!(k.modules_dir.ends_with(format!("lib/modules/{}", k.version)));
    assert!(k.modules_dir.join("kernel").is_dir());
}

#[test]
fn second_call_uses_the_cache_without_apt_get() {
    let first = kernel().clone();
    let lines = RefCell::new(Vec::<String>::new());
    let again =
        debian_cloud_kernel(&default_cache_dir(), &|l| lines.borrow_mut().push(l.to_string())).unwrap();
    assert_eq!(again, first);
    let lines = lines.into_inner();
    assert!(lines.iter().all(|l| !l.contains("apt-get")), "ran apt-get: {lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("using cached kernel")), "{lines:?}");

    // The cached tree is also usable as a plain extracted kernel.
    let root = first.vmlinuz.parent().unwrap().parent().unwrap();
    assert_eq!(kernel_from_dir(root).unwrap(), first);
}

#[test]
fn overlay_is_a_module() {
    let mods = resolve_modules(&kernel().modules_dir, &["overlay".to_string()]).unwrap();
    assert_eq!(names(&mods), ["overlay"]);
    assert_eq!(mods[0].rel_path, "kernel/fs/overlayfs/overlay.ko");
    assert!(mods[0].path.is_file());
}

#[test]
fn dependencies_come_first() {
    let dir = &kernel().modules_dir;
    // virtio_net -> virtio_ring, virtio, net_failover -> failover (checked with modinfo).
    let vnet = resolve_modules(dir, &["virtio-net".to_string()]).unwrap();
    let order = names(&vnet);
    let pos =
        |n: &str| order.iter().position(|x| *x == n).unwrap_or_else(|| panic!("{n} missing in {order:?}"));
    assert_eq!(order.last(), Some(&"virtio_net"));
    assert!(pos("failover") < pos("net_failover"));
    assert!(pos("net_failover") < pos("virtio_net"));
    assert!(pos("virtio_ring") < pos("virtio"));
    // Every module comes after everything its modinfo says it depends on.
    for (i, m) in vnet.iter().enumerate() {
        for dep in module_depends(&m.path).unwrap() {
            let j = pos(&dep);
            assert!(j < i, "{} before its dependency {dep}: {order:?}", m.name);
        }
    }

    // Several wanted modules: shared dependencies once, order deterministic.
    let wanted: Vec<String> =
        ["virtio_net", "virtio_blk", "overlay", "virtio_net"].iter().map(|s| s.to_string()).collect();
    let many = resolve_modules(dir, &wanted).unwrap();
    let many_names = names(&many);
    let mut unique = many_names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), many_names.len(), "duplicates in {many_names:?}");
    assert_eq!(many, resolve_modules(dir, &wanted).unwrap());
    assert!(many_names.contains(&"virtio_blk") && many_names.contains(&"overlay"));
}

#[test]
fn unknown_module_is_an_error() {
    let err = resolve_modules(&kernel().modules_dir, &["no_such_module".to_string()]).unwrap_err();
    assert!(matches!(err, ModuleError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "kernel module `no_such_module` is neither built into kernel {} nor shipped as a module",
            kernel().version
        )
    );
}

#[test]
fn builtin_modules_are_skipped() {
    // The real kernel: ext4 is built in.
    let dir = &kernel().modules_dir;
    assert!(resolve_modules(dir, &["ext4".to_string()]).unwrap().is_empty());

    // A fake modules directory with only a modules.builtin.
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("6.1.0-99-cloud-amd64");
    fs::create_dir_all(fake.join("kernel")).unwrap();
    fs::write(
        fake.join("modules.builtin"),
        "kernel/fs/overlayfs/overlay.ko\nkernel/drivers/net/virtio_net.ko\n",
    )
    .unwrap();
    let got = resolve_modules(&fake, &["overlay".to_string(), "virtio-net".to_string()]).unwrap();
    assert!(got.is_empty(), "{got:?}");
    let err = resolve_modules(&fake, &["veth".to_string()]).unwrap_err();
    assert!(err.to_string().contains("kernel 6.1.0-99-cloud-amd64"), "{err}");
}

#[test]
fn compressed_modules_are_refused_when_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("6.1.0-99-cloud-amd64");
    fs::create_dir_all(fake.join("kernel/fs/overlayfs")).unwrap();
    fs::write(fake.join("kernel/fs/overlayfs/overlay.ko.xz"), b"not really xz").unwrap();
    let err = resolve_modules(&fake, &["overlay".to_string()]).unwrap_err();
    assert!(matches!(err, ModuleError::Compressed { .. }), "{err}");
    assert!(err.to_string().contains("compressed modules are not supported yet"));
    // Not needed: no error.
    assert!(resolve_modules(&fake, &[]).unwrap().is_empty());
}

#[test]
fn depends_field_parsing() {
    assert_eq!(
        kernel_package_from_depends("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"),
        Some(("linux-image-6.1.0-56-cloud-amd64".to_string(), Some("6.1.192-2".to_string())))
    );
    assert_eq!(
        kernel_package_from_depends(
            "initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-cloud-amd64:amd64 (>= 6.12) | linux-image-6.12.9-cloud-amd64-unsigned"
        ),
        Some(("linux-image-6.12.9-cloud-amd64".to_string(), None))
    );
    assert_eq!(kernel_package_from_depends("linux-image-cloud-amd64, foo"), None);
}

#[test]
fn debian_version_order() {
    use std::cmp::Ordering::*;
    assert_eq!(debian_version_cmp("6.1.0-40-cloud-amd64", "6.1.0-9-cloud-amd64"), Greater);
    assert_eq!(debian_version_cmp("6.1.0-56-cloud-amd64", "6.12.0-1-cloud-amd64"), Less);
    assert_eq!(debian_version_cmp("1.0~rc1", "1.0"), Less);
    assert_eq!(debian_version_cmp("1:0.9", "1.0"), Greater);
    assert_eq!(debian_version_cmp("1.0a", "1.0+"), Less);
    assert_eq!(debian_version_cmp("01.0", "1.0"), Equal);
}

/// The packed modules' `modules.alias` finds the driver of each device QEMU emulates (the
/// vendor and device IDs QEMU gives them), kmod's way.
#[test]
fn the_alias_table_names_each_devices_driver() {
    let wanted: Vec<String> =
        ["virtio_net", "virtio_blk", "vmxnet3", "vmw_pvscsi", "ata_piix", "qemu_fw_cfg"]
            .map(String::from)
            .to_vec();
    let mods = resolve_modules(&kernel().modules_dir, &wanted).unwrap();
    let table = alias_table(&mods).unwrap();
    for (modalias, driver) in [
        ("virtio:d00000001v00001AF4", "virtio_net"),
        ("virtio:d00000002v00001AF4", "virtio_blk"),
        ("pci:v000015ADd000007B0sv000015ADsd000007B0bc02sc00i01", "vmxnet3"),
        ("pci:v000015ADd000007C0sv000015ADsd000007C0bc01sc00i00", "vmw_pvscsi"),
        ("pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80", "ata_piix"),
        ("acpi:QEMU0002:", "qemu_fw_cfg"),
    ] {
        assert_eq!(table.modules_for(modalias), [driver], "{modalias}");
    }
    assert!(
        table.modules_for("pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00").is_empty(),
        "no e1000e packed"
    );
    let text = table.to_string();
    assert!(text.starts_with("# Aliases extracted from modules themselves.\nalias "), "{text}");
}
