//! `berth build --format update`: the disk's slot as an OCI image layout that other tools read
//! (skopeo), whose blobs are the disk's own UKI and system partition pieces, byte for byte; a
//! layer unchanged between two versions is the same piece (the same digest) in both bundles,
//! and a changed blob is refused when the bundle is read.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use berth_image_build::update_bundle;

fn config(greeting: &str) -> String {
    format!(
        r#"
[[service]]
name = "greeter"
image = "oci:images/{greeting}:latest"
command = ["sh", "-c", "cat /greeting; sleep 1000"]

[[service]]
name = "base"
image = "oci:images/busybox:latest"
command = ["sleep", "1000"]
"#
    )
}

/// An image of busybox plus `/greeting`, named `name`.
fn greeting_image(dir: &Path, name: &str) {
    let root = dir.join(format!("{name}-root"));
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("greeting"), format!("{name}\n")).unwrap();
    common::import_image(dir, &root, name, &[]);
}

fn build(dir: &Path, greeting: &str) -> std::path::PathBuf {
    let file = dir.join(format!("{greeting}.toml"));
    fs::write(&file, config(greeting)).unwrap();
    let out = dir.join(format!("out-{greeting}"));
    common::build_formats(&file, &out, &["raw-efi", "update"], &[]);
    out
}

#[test]
fn the_bundle_is_the_disks_slot_piece_by_piece() {
    let tmp = tempfile::tempdir().unwrap();
    common::busybox_image(tmp.path());
    greeting_image(tmp.path(), "v1");
    greeting_image(tmp.path(), "v2");
    let (v1, v2) = (build(tmp.path(), "v1"), build(tmp.path(), "v2"));
    let (b1, b2) =
        (update_bundle::open(&v1.join("update")).unwrap(), update_bundle::open(&v2.join("update")).unwrap());

    // A standard tool reads it as an OCI artifact.
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", v1.join("update").display()))
        .output()
        .expect("run skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.berth.update.v1", "{manifest}");

    // Its blobs are the disk's: the pieces at their offsets of slot A, and the root hash the
    // disk's UKI carries.
    let disk = v1.join("disk.raw");
    let table = berth_image_build::formats::read_gpt(&disk).unwrap();
    let slot_a = table.iter().find(|p| p.name == "berth-system-a").unwrap();
    let mut f = fs::File::open(&disk).unwrap();
    for (piece, d) in b1.index.pieces.iter().zip(&b1.bundle.pieces) {
        let mut on_disk = vec![0u8; usize::try_from(piece.bytes).unwrap()];
        f.seek(SeekFrom::Start(slot_a.offset + piece.offset)).unwrap();
        f.read_exact(&mut on_disk).unwrap();
        assert!(fs::read(b1.blob(&d.digest)).unwrap() == on_disk, "piece `{}`", piece.path);
    }
    let (_, _, cmdline) = berth_image_build::inspect::boot_files_of(&disk).unwrap();
    assert!(cmdline.contains(&format!("berth.verity={}", b1.bundle.spec)), "{cmdline}");
    assert!(fs::read(b1.blob(&b1.bundle.uki.digest)).unwrap().starts_with(b"MZ"), "the UKI");

    // busybox's layer is the same piece in both versions; the greeting layers and the base
    // (the plan) differ.
    let digests = |b: &update_bundle::Opened| -> Vec<(String, String)> {
        b.index.pieces.iter().map(|p| (p.path.clone(), p.digest.clone())).collect()
    };
    let (d1, d2) = (digests(&b1), digests(&b2));
    let shared: Vec<&(String, String)> = d1.iter().filter(|p| d2.contains(p)).collect();
    assert!(shared.iter().any(|(path, _)| path.starts_with("layers/")), "{d1:?}\n{d2:?}");
    assert!(shared.iter().any(|(path, _)| path == "modules"), "the same kernel's modules: {d1:?}");
    assert_ne!(d1[0], d2[0], "the base holds the plan");
    assert_eq!(d1.len(), d2.len());

    // Reproducible.
    let again = tmp.path().join("again");
    common::build_formats(&tmp.path().join("v1.toml"), &again, &["update"], &[]);
    let again = update_bundle::open(&again.join("update")).unwrap();
    assert_eq!(again.manifest.1, b1.manifest.1, "the same manifest digest");

    // A changed blob is refused when the bundle is read.
    let piece = b1.blob(&b1.bundle.pieces[1].digest);
    let mut bytes = fs::read(&piece).unwrap();
    bytes[100] ^= 1;
    fs::write(&piece, bytes).unwrap();
    let err = update_bundle::open(&v1.join("update")).unwrap_err().to_string();
    assert!(err.contains("does not match its digest"), "{err}");
}
