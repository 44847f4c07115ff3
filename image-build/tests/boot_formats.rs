//! Every bootable format: the hello example built as UKI, ISO, raw EFI disk, qcow2, VHDX and
//! the clouds' formats (Azure's fixed VHD, GCE's archive, a streamOptimized VMDK), each booted
//! by `berth run` under the firmware its format needs (ISO: SeaBIOS as a CD and as a disk, and
//! OVMF through its GRUB; disks and UKI: OVMF); `qemu-img check`/`info` on the disk formats;
//! two builds byte-identical; a missing host tool named with its Debian package.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const FORMATS: [&str; 8] = ["uki", "iso", "raw-efi", "qcow2", "vhdx", "vhd", "gce", "vmdk"];
/// The image files those formats write.
const IMAGES: [&str; 8] =
    ["berth.efi", "berth.iso", "disk.raw", "disk.qcow2", "disk.vhdx", "disk.vhd", "gce.tar.gz", "disk.vmdk"];

/// The hello example built with every format, once for all tests: (temp dir, output dir).
fn built() -> &'static (tempfile::TempDir, PathBuf) {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| build_all("a"))
}

fn build_all(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let config = dir.path().join(format!("{name}.toml"));
    std::fs::write(&config, example).unwrap();
    let out = dir.path().join(format!("{name}.out"));
    let mut args =
        vec!["build".to_string(), config.display().to_string(), "-o".into(), out.display().to_string()];
    for f in FORMATS {
        args.extend(["--format".to_string(), f.to_string()]);
    }
    let o = common::run_berth(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (dir, out)
}

/// `berth run` on `image` (plus `extra` arguments): the console text; asserts a clean power-off
/// after the hello container ran.
fn boot(image: &Path, extra: &[&str]) -> String {
    let console = run_image(image, extra);
    assert!(console.contains("hello | hello from hello"), "{}: {console}", image.display());
    console
}

/// `berth run` on `image`: the console text; asserts a clean power-off.
fn run_image(image: &Path, extra: &[&str]) -> String {
    let o = Command::new(common::berth())
        .arg("run")
        .arg(image)
        .args(["--timeout", "120", "--no-net"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stdout).to_string();
    let tail: String =
        console.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(
        o.status.success(),
        "{} {extra:?}: {}\n{tail}",
        image.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(console.contains("event=shutdown.complete action=poweroff"), "{tail}");
    console
}

#[test]
fn iso_boots_with_bios_as_cd_and_disk_and_with_uefi() {
    let (_, out) = built();
    let iso = out.join("berth.iso");
    let bios = boot(&iso, &[]);
    assert!(bios.contains("ISOLINUX"), "isolinux (BIOS) booted it");
    let uefi = boot(&iso, &["--uefi"]);
    assert!(!uefi.contains("ISOLINUX"), "the UEFI boot went through the EFI image, not isolinux");
    assert!(uefi.contains("Welcome to GRUB"), "the EFI image's GRUB loaded the kernel: {uefi}");
    // GRUB passed the command line ("console=ttyS0 quiet"): quiet hides the kernel's banner.
    assert!(!uefi.contains("] Linux version"), "GRUB lost `quiet` from the command line: {uefi}");
    // The kernel and initramfs are stored once: the ISO is them plus about 1 MiB.
    let len = |name: &str| std::fs::metadata(out.join(name)).unwrap().len();
    let payload = len("vmlinuz") + len("initrd.img");
    assert!(
        len("berth.iso") < payload + (2 << 20),
        "ISO {} bytes for {payload} of payload",
        len("berth.iso")
    );
    // As a USB stick: the same file attached as a disk (isohybrid MBR), under SeaBIOS.
    let disk = out.join("iso-as-disk.raw");
    std::fs::copy(&iso, &disk).unwrap();
    // A raw file that starts like an ISO is still detected as ISO by `berth run`, so boot it
    // with QEMU directly as a virtio disk.
    let vm = berth_qemu::VmConfig {
        extra_args: vec![
            "-drive".into(),
            format!("file={},format=raw,if=virtio,readonly=on", disk.display()),
        ],
        ..Default::default()
    };
    let mut vm = berth_qemu::Vm::start(vm).unwrap();
    let t = berth_qemu::default_timeout() * 2;
    vm.wait_for_line(|l| l.contains("hello | hello from hello"), t).unwrap();
    vm.wait_exit(t).unwrap();
}

#[test]
fn efi_disk_formats_and_uki_boot_with_uefi() {
    let (_, out) = built();
    for file in ["disk.raw", "disk.qcow2", "disk.vhdx", "berth.efi"] {
        boot(&out.join(file), &[]);
    }
    for file in ["disk.qcow2", "disk.vhdx"] {
        let o = Command::new("qemu-img").args(["check"]).arg(out.join(file)).output().unwrap();
        assert!(o.status.success(), "qemu-img check {file}: {}", String::from_utf8_lossy(&o.stdout));
        assert!(String::from_utf8_lossy(&o.stdout).contains("No errors"), "{file}");
    }
}

#[test]
fn cloud_formats_boot_and_pass_the_clouds_checks() {
    let (_, out) = built();
    for file in ["disk.vhd", "disk.vmdk", "gce.tar.gz"] {
        boot(&out.join(file), &[]);
    }
    let qemu_img = |args: &[&str], file: &str| {
        let o = Command::new("qemu-img").args(args).arg(out.join(file)).output().unwrap();
        assert!(o.status.success(), "qemu-img {args:?} {file}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Azure: a fixed VHD whose virtual size is a whole number of MiB (the raw disk before the
    // 512-byte footer).
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output", "json", "-f", "vpc"], "disk.vhd")).unwrap();
    let size = info["virtual-size"].as_u64().unwrap();
    assert_eq!(size % (1 << 20), 0, "{info}");
    assert_eq!(std::fs::metadata(out.join("disk.vhd")).unwrap().len(), size + 512, "{info}");
    assert_eq!(size, std::fs::metadata(out.join("disk.raw")).unwrap().len(), "the raw disk, then the footer");
    // VMware / AWS: streamOptimized, and qemu-img finds no errors.
    let info: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output", "json"], "disk.vmdk")).unwrap();
    assert_eq!(info["format"], "vmdk", "{info}");
    assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized", "{info}");
    assert!(qemu_img(&["check"], "disk.vmdk").contains("No errors"));
    // GCE: the raw disk a whole number of GiB (so every disk format of this build is).
    assert_eq!(std::fs::metadata(out.join("disk.raw")).unwrap().len() % (1 << 30), 0);
    let listing = Command::new("tar").args(["-tvzf"]).arg(out.join("gce.tar.gz")).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.trim_end().ends_with(" disk.raw"), "{listing}");
}

#[test]
fn every_format_is_byte_identical_on_rebuild() {
    let (_, first) = built();
    let (_d, second) = build_all("b");
    for file in ["vmlinuz", "initrd.img", "cmdline"].iter().chain(&IMAGES).copied() {
        assert!(
            common::same_bytes(&first.join(file), &second.join(file)),
            "{file} differs between two builds"
        );
    }
}

#[test]
fn a_missing_tool_is_named_with_its_package() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let config = dir.path().join("hello.toml");
    std::fs::write(&config, example).unwrap();
    let out = dir.path().join("out");
    // A PATH without /usr/bin: objcopy (binutils) cannot be found.
    let o = Command::new(common::berth())
        .env("BERTH_INIT", common::init_binary())
        .env("PATH", "/nonexistent")
        .arg("build")
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .args(["--format", "uki"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("apt-get install binutils"), "{err}");
    assert!(!out.exists(), "nothing half-written");
}

#[test]
fn inspect_reads_every_format() {
    let (_, out) = built();
    let mut reports = Vec::new();
    for image in [""].iter().chain(&IMAGES).copied() {
        let path = if image.is_empty() { out.clone() } else { out.join(image) };
        let o = common::run_berth(&["inspect", "--json", path.to_str().unwrap()]);
        assert!(o.status.success(), "{image}: {}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(r["kernel_version"].as_str().unwrap().starts_with("6.1."), "{r}");
        let disk = image.starts_with("disk.") || image == "gce.tar.gz";
        let cloud = ["disk.vhd", "disk.vmdk", "gce.tar.gz"].contains(&image);
        assert_eq!(r["cloud"].is_object(), cloud, "{image}: {r}");
        if cloud {
            let format = r["format"].as_str().unwrap();
            assert_eq!(format, image.trim_start_matches("disk.").trim_end_matches(".tar.gz"), "{r}");
            assert!(r["cloud"]["disk_bytes"].as_u64().unwrap() >= 1 << 30, "{r}");
        }
        let cmdline = r["cmdline"].as_str().unwrap().to_string();
        if disk {
            // The disks boot from their verified system partition: its root hash is on the
            // command line, and inspect checked the partition's hash tree against it.
            let s = &r["system_partition"];
            assert_eq!(s["verified"], true, "{image}: {r}");
            assert!(cmdline.starts_with(
                "console=ttyS0 quiet berth.system=partlabel:berth-system-a,partlabel:berth-system-b berth.verity="
            ));
            assert_eq!(s["partition"], "berth-system-a", "{image}: {r}");
            // systemd-boot boots slot A's UKI, the one entry.
            assert_eq!(r["boot"]["entries"], serde_json::json!(["berth-1-a.efi"]), "{image}: {r}");
            assert_eq!(r["boot"]["default"], "berth-1-a.efi", "{image}: {r}");
            assert!(cmdline.contains(s["root_hash"].as_str().unwrap()), "{r}");
            let names: Vec<&str> =
                r["partitions"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
            assert_eq!(names, ["EFI system partition", "berth-system-a", "berth-system-b"], "{image}");
            let bytes: Vec<u64> =
                r["partitions"].as_array().unwrap().iter().map(|p| p["bytes"].as_u64().unwrap()).collect();
            assert_eq!(bytes[1], bytes[2], "the slots are as large: {r}");
            assert!(bytes[1] >= 512 << 20, "the default slot size: {r}");
            assert!(
                r["modules"]["dm-verity"].as_u64().is_some(),
                "the slim initramfs reaches the partition: {r}"
            );
            assert!(
                r["initrd_unpacked_bytes"].as_u64().unwrap() < 8 << 20,
                "no layers in the disk's initramfs: {r}"
            );
        } else {
            assert_eq!(cmdline, "console=ttyS0 quiet", "{image}");
            assert!(r["system_partition"].is_null() && r["partitions"].as_array().unwrap().is_empty());
        }
        assert!(r["modules"]["overlay"].as_u64().unwrap() > 100_000, "{r}");
        assert!(r["modules"].get("hv_vmbus").is_some(), "vhdx images pack Hyper-V's drivers: {r}");
        let c = &r["containers"][0];
        assert_eq!((c["name"].as_str(), c["kind"].as_str()), (Some("hello"), Some("onboot")));
        assert!(c["digest"].as_str().unwrap().starts_with("sha256:"));
        let layer = &c["layers"][0];
        assert!(
            layer[0].as_str().unwrap().starts_with("sha256:") && layer[1].as_u64().unwrap() > 1_000_000,
            "{c}"
        );
        assert!(r["image_bytes"].as_u64().unwrap() > r["initrd_bytes"].as_u64().unwrap());
        // What every format must agree on: the kernel, the containers and their layers.
        reports.push(serde_json::json!([r["kernel_version"], r["containers"], r["layers_bytes"]]));
    }
    assert!(reports.windows(2).all(|w| w[0] == w[1]), "every format holds the same boot: {reports:#?}");
    let text = common::run_berth(&["inspect", out.join("berth.iso").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("hello (onboot)") && text.contains("layer sha256:"), "{text}");
}

#[test]
fn data_partition_and_an_extra_disk() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let config = r#"
[kernel]
cmdline = "console=ttyS0 quiet"
modules = ["virtio_blk"]

[system]
when_done = "poweroff"

[[onboot]]
name = "disks"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "cat /proc/partitions | tail -n +3"]
"#;
    std::fs::write(dir.path().join("disks.toml"), config).unwrap();
    let out = dir.path().join("out");
    let o = common::run_berth(&[
        "build",
        dir.path().join("disks.toml").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "qcow2",
        "--data-size",
        "64m",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let extra = dir.path().join("extra.raw");
    std::fs::File::create(&extra).unwrap().set_len(32 << 20).unwrap();
    let console = run_image(&out.join("disk.qcow2"), &["--disk", extra.to_str().unwrap()]);
    let sizes: Vec<(String, u64)> = console
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("disks | "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(3)?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect();
    let size = |name: &str| sizes.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
    // /proc/partitions counts 1 KiB blocks: the data partition (after the ESP and the two
    // system slots) is 64 MiB, the extra disk 32 MiB.
    assert_eq!(size("vda4"), Some(64 * 1024), "{sizes:?}");
    assert!(size("vda1").is_some_and(|s| s >= 64 * 1024), "the ESP: {sizes:?}");
    assert_eq!(size("vda2"), Some(512 * 1024), "slot A: {sizes:?}");
    assert_eq!(size("vda3"), Some(512 * 1024), "slot B: {sizes:?}");
    assert_eq!(size("vdb"), Some(32 * 1024), "{sizes:?}");
}

/// `berth run --memory` below what an image needs warns, with the need; enough does not.
#[test]
fn run_warns_when_memory_is_below_what_the_image_needs() {
    let (_, built) = built();
    // A copy: `berth run` locks a disk it attaches, and other tests read the shared build.
    let copy = tempfile::tempdir().unwrap();
    let out = copy.path().to_path_buf();
    for file in ["vmlinuz", "initrd.img", "cmdline", "disk.qcow2", "berth.efi"] {
        std::fs::copy(built.join(file), out.join(file)).unwrap();
    }
    let stderr = |image: &Path, mib: &str| -> String {
        let o = Command::new(common::berth())
            .args(["run", "--no-net", "--timeout", "2", "--memory", mib])
            .arg(image)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for (image, mib, need) in [
        (out.clone(), "64", "96 MiB"),
        (out.join("disk.qcow2"), "128", "192 MiB"),
        (out.join("berth.efi"), "128", "192 MiB"),
    ] {
        let err = stderr(&image, mib);
        assert!(err.contains(&format!("--memory {mib} is below the {need}")), "{}: {err}", image.display());
    }
    for image in [out.clone(), out.join("disk.qcow2")] {
        let err = stderr(&image, "512");
        assert!(!err.contains("is below"), "{}: {err}", image.display());
    }
}
