//! The verified system partition, booted from a disk `berth build` made: PID 1 loads the slim
//! initramfs's modules, puts a dm-verity device over the slot partition whose blocks match the
//! root hash on the UKI's command line (device-mapper ioctls, no veritysetup in the image),
//! mounts its squashfs read-only and runs a container whose layer is read from it. The same UKI
//! boots from slot B when its blocks are there. A byte flipped inside a layer's file on the
//! disk makes reading that file an I/O error and an event naming the partition, while the rest
//! of the partition, PID 1 and the shutdown go on.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_qemu::Event;
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

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[network]
auto = false

[system]
when_done = "poweroff"

[[onboot]]
name = "reader"
image = "oci:images/data:latest"
command = ["sh", "-c", "cat /data/hello.txt; if cat /data/blob.bin > /dev/null; then echo BLOB-OK; else echo BLOB-FAILED; fi; cat /data/hello.txt"]
"#;

/// The raw EFI disk of [`CONFIG`], whose image holds busybox, `/data/hello.txt` and
/// `/data/blob.bin` in one layer.
fn built_disk(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("data/hello.txt"), b"verified hello\n").unwrap();
    std::fs::write(root.join("data/blob.bin"), incompressible()).unwrap();
    common::import_image(dir, &root, "data", &[]);
    let config = dir.join("reader.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.join("out");
    common::build_formats(&config, &out, &["raw-efi"], &[]);
    out.join("disk.raw")
}

/// Boots `disk` with `berth run`: the console and the events on it.
fn boot(disk: &Path) -> (String, Vec<Event>) {
    let o = Command::new(common::berth())
        .args(["run", "--timeout", "120", "--no-net"])
        .arg(disk)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}\n{console}", String::from_utf8_lossy(&o.stderr));
    let events = console.lines().filter_map(Event::parse).collect();
    (console, events)
}

/// The partition named `name` of `disk`: (offset, bytes).
fn partition(disk: &Path, name: &str) -> (u64, u64) {
    let table = berth_image_build::formats::read_gpt(disk).unwrap();
    let p = table.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name}: {table:?}"));
    (p.offset, p.bytes)
}

/// The first `len` bytes of `disk` at `offset`.
fn read_at(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; usize::try_from(len).unwrap()];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn write_at(disk: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn event<'e>(events: &'e [Event], name: &str) -> Option<&'e Event> {
    events.iter().find(|e| e.name == name)
}

#[test]
fn a_container_reads_its_layer_from_the_verified_partition() {
    let dir = tempfile::tempdir().unwrap();
    let disk = built_disk(dir.path());
    let (console, events) = boot(&disk);
    let mounted = event(&events, "system_partition.mounted").unwrap_or_else(|| panic!("{console}"));
    assert_eq!(mounted.get("disk"), Some("vda2"), "{console}");
    assert_eq!(mounted.get("slot"), Some("a"), "{console}");
    assert!(console.contains("reader | verified hello"), "{console}");
    assert!(console.contains("reader | BLOB-OK"), "{console}");
    assert!(event(&events, "system_partition.corrupted").is_none(), "{console}");
    assert!(event(&events, "shutdown.complete").is_some(), "{console}");
}

#[test]
fn a_flipped_byte_is_an_io_error_an_event_and_the_machine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let disk = built_disk(dir.path());
    let (offset, _) = partition(&disk, "berth-system-a");
    let bytes = read_at(&disk, offset, 8 << 20);
    let blob = incompressible();
    let at = bytes.windows(64).position(|w| w == &blob[..64]).expect("blob.bin stored as it is");
    // Well inside blob.bin's second squashfs block: data only, no metadata of the filesystem.
    let target = offset + at as u64 + 200_000;
    write_at(&disk, target, &[read_at(&disk, target, 1)[0] ^ 0x01]);
    let (console, events) = boot(&disk);
    assert!(console.contains("reader | BLOB-FAILED"), "reading the changed file fails: {console}");
    assert_eq!(
        console.matches("reader | verified hello").count(),
        2,
        "the rest reads, before and after: {console}"
    );
    let corrupted =
        event(&events, "system_partition.corrupted").unwrap_or_else(|| panic!("no event: {console}"));
    assert_eq!(corrupted.get("partition"), Some("berth-system-a"), "{console}");
    assert_eq!(corrupted.get("disk"), Some("vda2"), "{console}");
    assert_eq!(corrupted.get("kind"), Some("data"), "{console}");
    assert!(event(&events, "shutdown.complete").is_some(), "PID 1 stays up and powers off: {console}");
    assert!(!console.contains("Kernel panic") && !console.contains("PID 1 bug"), "{console}");
}

#[test]
fn the_same_uki_boots_from_slot_b_when_its_blocks_are_there() {
    let dir = tempfile::tempdir().unwrap();
    let disk = built_disk(dir.path());
    let (a, a_bytes) = partition(&disk, "berth-system-a");
    let (b, b_bytes) = partition(&disk, "berth-system-b");
    assert_eq!(a_bytes, b_bytes, "the slots are as large");
    // Slot A's blocks move to slot B; slot A is left blank.
    let used = 16 << 20;
    let content = read_at(&disk, a, used);
    write_at(&disk, b, &content);
    write_at(&disk, a, &vec![0u8; content.len()]);
    let (console, events) = boot(&disk);
    let mounted = event(&events, "system_partition.mounted").unwrap_or_else(|| panic!("{console}"));
    assert_eq!(mounted.get("slot"), Some("b"), "{console}");
    assert_eq!(mounted.get("partition"), Some("berth-system-b"), "{console}");
    assert_eq!(mounted.get("disk"), Some("vda3"), "{console}");
    assert!(console.contains("reader | BLOB-OK"), "{console}");
    assert!(event(&events, "system_partition.failed").is_none(), "{console}");

    // A blank slot B as well: nothing matches, and the machine says so (and waits, with no
    // plan, for a shutdown request that does not come: the run ends at its timeout).
    write_at(&disk, b, &vec![0u8; content.len()]);
    let o = Command::new(common::berth())
        .args(["run", "--timeout", "60", "--no-net"])
        .arg(&disk)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stdout).into_owned();
    let events: Vec<Event> = console.lines().filter_map(Event::parse).collect();
    let failed = event(&events, "system_partition.failed").unwrap_or_else(|| panic!("{console}"));
    let error = failed.get("error").unwrap_or_default();
    assert!(error.contains("no partition matches the root hash"), "{console}");
    assert!(
        error.contains("partlabel:berth-system-a") && error.contains("partlabel:berth-system-b"),
        "{error}"
    );
}
