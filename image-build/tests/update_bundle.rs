//! `berth build --format update`: the disk's slot as an OCI image layout that other tools read
//! (skopeo), whose blobs are the disk's own UKI and system partition pieces, byte for byte; a
//! layer unchanged between two versions is the same piece (the same digest) in both bundles,
//! and a changed blob is refused when the bundle is read. `berth update push` puts it in a
//! real registry (Debian's `docker-registry` on 127.0.0.1), sending only the blobs the
//! repository does not have.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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

fn build(dir: &Path, greeting: &str) -> PathBuf {
    let file = dir.join(format!("{greeting}.toml"));
    fs::write(&file, config(greeting)).unwrap();
    let out = dir.join(format!("out-{greeting}"));
    common::build_formats(&file, &out, &["raw-efi", "update"], &[]);
    out
}

/// v1 and v2 built with their bundles, read back.
fn two_versions(dir: &Path) -> ((PathBuf, update_bundle::Opened), (PathBuf, update_bundle::Opened)) {
    common::busybox_image(dir);
    greeting_image(dir, "v1");
    greeting_image(dir, "v2");
    let open = |out: PathBuf| {
        let opened = update_bundle::open(&out.join("update")).unwrap();
        (out, opened)
    };
    (open(build(dir, "v1")), open(build(dir, "v2")))
}

#[test]
fn the_bundle_is_the_disks_slot_piece_by_piece() {
    let tmp = tempfile::tempdir().unwrap();
    let ((v1, b1), (_, b2)) = two_versions(tmp.path());

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

fn push(bundle: &Path, target: &str) -> (String, String) {
    let o = common::run_berth(&[
        "update",
        "push",
        bundle.to_str().unwrap(),
        target,
        "--insecure-registry",
        target.split('/').next().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (String::from_utf8_lossy(&o.stdout).trim().to_string(), stderr)
}

#[test]
fn a_pushed_bundle_sends_only_the_blobs_the_registry_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let ((v1, b1), (v2, b2)) = two_versions(tmp.path());
    let registry = common::registry::Registry::start(tmp.path(), None);
    let repo = format!("{}/fleet/app", registry.host());

    // All of v1's blobs go, then none on a second push; the output is the manifest digest.
    let (digest, said) = push(&v1, &format!("{repo}:v1"));
    assert_eq!(digest, b1.manifest.1);
    let blobs = b1.descriptors().unwrap().len();
    assert!(said.contains(&format!("{blobs} blobs sent")) && said.contains("0 already there"), "{said}");
    let (_, said) = push(&v1.join("update"), &format!("{repo}:v1"));
    assert!(said.contains("0 blobs sent") && said.contains(&format!("{blobs} already there")), "{said}");

    // v2 sends what v1 did not have: its UKI, index, config, base and greeting layer.
    let have: Vec<String> = b1.descriptors().unwrap().into_iter().map(|d| d.digest).collect();
    let new = b2.descriptors().unwrap().iter().filter(|d| !have.contains(&d.digest)).count();
    assert!(new < b2.descriptors().unwrap().len(), "busybox's layer and the modules are shared");
    let (digest, said) = push(&v2, &format!("{repo}:v2"));
    assert_eq!(digest, b2.manifest.1);
    assert!(said.contains(&format!("{new} blobs sent")), "{said}\nregistry: {}", registry.log());

    // skopeo reads it back from the registry as pushed.
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{repo}:v2"))
        .output()
        .expect("run skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout == b2.manifest.0, "the manifest as pushed");

    // A tag is needed, and a changed bundle is refused before anything is sent.
    let o =
        common::run_berth(&["update", "push", v1.to_str().unwrap(), &format!("{repo}@{}", b1.manifest.1)]);
    assert!(!o.status.success());
    let piece = b2.blob(&b2.bundle.pieces[0].digest);
    let mut bytes = fs::read(&piece).unwrap();
    bytes[10] ^= 1;
    fs::write(&piece, bytes).unwrap();
    let o = common::run_berth(&[
        "update",
        "push",
        v2.to_str().unwrap(),
        &format!("{repo}:v3"),
        "--insecure-registry",
        &registry.host(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("does not match its digest"), "{err}");
}
