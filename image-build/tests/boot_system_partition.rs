//! The verified system partition, booted: PID 1 finds the disk the command line names, puts a
//! dm-verity device over it with the root hash the command line carries (device-mapper ioctls,
//! no veritysetup in the image), mounts its squashfs read-only, and a container reads a layer's
//! files from it. A byte flipped inside a file on the disk makes reading that file an I/O
//! error, while the rest of the partition, PID 1 and the shutdown go on.

mod common;

use std::path::{Path, PathBuf};

use berth_image_build::layer::scan_layer;
use berth_image_build::system_partition::write_squashfs;
use berth_image_build::verity::hash_tree;
use berth_qemu::{default_timeout, GuestShutdown};
use berth_schema::verity::VeritySpec;
use sha2::{Digest as _, Sha256};

/// 256 KiB that no compressor shrinks: two whole squashfs blocks, stored as they are.
fn incompressible() -> Vec<u8> {
    let mut out = Vec::new();
    let mut h: [u8; 32] = Sha256::digest(b"berth").into();
    while out.len() < 256 * 1024 {
        h = Sha256::digest(h).into();
        out.extend_from_slice(&h);
    }
    out
}

/// A system disk (squashfs + hash tree) with one layer holding `hello.txt` and `blob.bin`; with
/// `corrupt`, one byte of `blob.bin` is flipped on the disk after the tree was computed.
fn system_disk(dir: &Path, corrupt: bool) -> (PathBuf, VeritySpec, String) {
    let blob_data = incompressible();
    let mut b = tar::Builder::new(Vec::new());
    common::tar_file(&mut b, "hello.txt", b"verified hello\n");
    common::tar_file(&mut b, "blob.bin", &blob_data);
    let tar = b.into_inner().unwrap();
    let layer = common::layer_blob(dir, tar);
    let digest = layer.digest.clone();
    let summary = scan_layer(&layer).unwrap();
    let image = dir.join("system.squashfs");
    write_squashfs(&image, b"{}", &[(&layer, &summary)], 1_700_000_000).unwrap();
    let mut data = std::fs::read(&image).unwrap();
    let tree = hash_tree(&mut data.as_slice(), [7; 32]).unwrap();
    if corrupt {
        let at = data.windows(64).position(|w| w == &blob_data[..64]).expect("blob.bin stored as it is");
        // Far from the superblock and inode tables (block 0 holds the superblock and the start of
        // blob.bin): a block of blob.bin alone.
        data[at + 200_000] ^= 0x01;
    }
    data.extend_from_slice(&tree.tree);
    let disk = dir.join("system.disk");
    std::fs::write(&disk, &data).unwrap();
    (disk, tree.spec(), digest.trim_start_matches("sha256:").to_string())
}

fn config(spec: &VeritySpec, hex: &str) -> String {
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet berth.system=serial:berth-system berth.verity={spec}"
modules = ["dm-verity", "squashfs", "virtio_blk"]

[system]
when_done = "poweroff"

[[onboot]]
name = "reader"
image = "oci:images/busybox:latest"
binds = ["/berth/system:/system:ro"]
command = ["sh", "-c", "cat /system/layers/{hex}/hello.txt; if cat /system/layers/{hex}/blob.bin > /dev/null; then echo BLOB-OK; else echo BLOB-FAILED; fi"]
"#
    )
}

fn boot(corrupt: bool) -> (String, VeritySpec) {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let (disk, spec, hex) = system_disk(dir.path(), corrupt);
    let out = common::build(dir.path(), "system", &config(&spec, &hex));
    let drive = format!("if=none,id=sys,file={},format=raw,readonly=on", disk.display());
    let mut vm = common::boot_with(
        &out,
        &["-drive", &drive, "-device", "virtio-blk-pci,drive=sys,serial=berth-system"],
    );
    let t = default_timeout();
    let mounted = vm.wait_for_event("system_partition.mounted", |_| true, t);
    vm.wait_exit(t).unwrap();
    let console = vm.console_text();
    let mounted = mounted.unwrap_or_else(|e| panic!("{e}: {console}"));
    assert_eq!(mounted.get("root_hash"), Some(spec.root_hex().as_str()), "{console}");
    assert_eq!(mounted.get("disk"), Some("vda"), "{console}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
    (console, spec)
}

#[test]
fn a_container_reads_its_layer_from_the_verified_partition() {
    let (console, _) = boot(false);
    assert!(console.contains("reader | verified hello"), "{console}");
    assert!(console.contains("reader | BLOB-OK"), "{console}");
}

#[test]
fn a_flipped_byte_is_an_io_error_and_the_machine_goes_on() {
    let (console, _) = boot(true);
    assert!(console.contains("reader | BLOB-FAILED"), "reading the changed file failed: {console}");
    assert!(console.contains("reader | verified hello"), "the rest of the partition reads: {console}");
    assert!(console.contains("verity"), "the kernel names the verity failure: {console}");
}
