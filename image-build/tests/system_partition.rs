//! The system partition (an index, then squashfs pieces made from tar streams, no root): each
//! layer once by digest, each its own piece, with what overlayfs needs — whiteouts as 0:0
//! character devices, opaque directories' xattr, the root's too — owners, modes, hard links,
//! device nodes and symlinks exact; the same bytes on every build, the same piece digest for
//! the same layer in another image; whole 4 KiB blocks for the verity tree. Read back with
//! `sqfs2tar`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use berth_image_build::layer::scan_layer;
use berth_image_build::source::LayerBlob;
use berth_image_build::system_partition::{read_pieces, write_verified, Content, PackedFile};
use berth_image_build::verity::BLOCK_SIZE;

fn layer(dir: &Path, tar: Vec<u8>) -> LayerBlob {
    common::layer_blob(dir, tar)
}

fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &str,
    mode: u32,
    owner: u64,
    data: &[u8],
) {
    let mut h = common::tar_header(kind, mode, data.len() as u64);
    h.set_uid(owner);
    h.set_gid(owner);
    b.append_data(&mut h, path, data).unwrap();
}

/// What `sqfs2tar` reads back: path → (kind, mode, uid, link target, device, opaque xattr).
type Listing = BTreeMap<String, (char, u32, u64, String, (u32, u32), bool)>;

/// Every piece of the partition at `offset` of `image`, listed under where it is mounted.
fn read_back(image: &Path, offset: u64) -> Listing {
    let (_, pieces) = read_pieces(image, offset).unwrap();
    let mut listing = Listing::new();
    for (piece, tar_bytes) in pieces {
        list_piece(&mut listing, &piece.path, &tar_bytes);
    }
    listing
}

fn list_piece(listing: &mut Listing, at: &str, tar_bytes: &[u8]) {
    let mut archive = tar::Archive::new(tar_bytes);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let opaque = e
            .pax_extensions()
            .unwrap()
            .map(|exts| {
                exts.flatten()
                    .any(|x| x.key() == Ok("SCHILY.xattr.trusted.overlay.opaque") && x.value_bytes() == b"y")
            })
            .unwrap_or(false);
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            _ => '?',
        };
        let device = (h.device_major().unwrap().unwrap_or(0), h.device_minor().unwrap().unwrap_or(0));
        let link = e.link_name().unwrap().map(|l| l.display().to_string()).unwrap_or_default();
        let path = e
            .path()
            .unwrap()
            .display()
            .to_string()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let path = match (at, path.as_str()) {
            ("", p) => p.to_string(),
            (at, "" | ".") => at.to_string(),
            (at, p) => format!("{at}/{p}"),
        };
        listing.insert(path, (kind, h.mode().unwrap() & 0o7777, h.uid().unwrap(), link, device, opaque));
    }
}

#[test]
fn layers_once_by_digest_with_everything_overlayfs_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Directory, "etc/", 0o755, 0, b"");
    entry(&mut b, tar::EntryType::Regular, "etc/app.conf", 0o4750, 1000, b"conf");
    entry(&mut b, tar::EntryType::Regular, "etc/.wh.gone", 0o644, 0, b"");
    entry(&mut b, tar::EntryType::Directory, "cache/", 0o700, 1000, b"");
    entry(&mut b, tar::EntryType::Regular, "cache/.wh..wh..opq", 0o644, 0, b"");
    let mut h = common::tar_header(tar::EntryType::Link, 0o644, 0);
    h.set_link_name("etc/app.conf").unwrap();
    b.append_data(&mut h, "etc/same.conf", &[][..]).unwrap();
    let mut h = common::tar_header(tar::EntryType::Symlink, 0o777, 0);
    h.set_link_name("../etc/app.conf").unwrap();
    b.append_data(&mut h, "cache/link", &[][..]).unwrap();
    let mut h = common::tar_header(tar::EntryType::Char, 0o666, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "etc/null", &[][..]).unwrap();
    let shared = layer(tmp.path(), b.into_inner().unwrap());
    let mut b = tar::Builder::new(Vec::new());
    common::tar_file(&mut b, "other", b"x");
    let other = layer(tmp.path(), b.into_inner().unwrap());
    let (s1, s2) = (scan_layer(&shared).unwrap(), scan_layer(&other).unwrap());
    // Three containers use `shared`, one `other`.
    let layers = [(&shared, &s1), (&other, &s2), (&shared, &s1), (&shared, &s1)];
    let module = tmp.path().join("dm-verity.ko");
    fs::write(&module, b"\x7fELF module").unwrap();
    let files =
        [PackedFile { dest: "modules/6.1.0/kernel/dm-verity.ko".into(), source: module, mode: 0o644 }];
    let content = Content { plan_json: br#"{"version":2}"#, files: &files, layers: &layers };
    let image = tmp.path().join("system.img");
    let made = write_verified(&image, &content, 1_700_000_000).unwrap();
    let paths: Vec<&str> = made.index.pieces.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths.len(), 4, "the base, the modules, each layer once: {paths:?}");
    assert_eq!(&paths[..2], ["", "modules"]);

    let listing = read_back(&image, 0);
    let hex = |b: &LayerBlob| b.digest.trim_start_matches("sha256:").to_string();
    let layer_dirs: Vec<&String> =
        listing.keys().filter(|p| p.starts_with("layers/") && p.matches('/').count() == 1).collect();
    assert_eq!(layer_dirs.len(), 2, "each layer once: {layer_dirs:?}");
    let at = |p: &str| {
        listing.get(&format!("layers/{}/{p}", hex(&shared))).unwrap_or_else(|| panic!("{p}: {listing:#?}"))
    };
    assert_eq!(at("etc/app.conf").0, 'f');
    assert_eq!((at("etc/app.conf").1, at("etc/app.conf").2), (0o4750, 1000), "mode with setuid, owner");
    assert_eq!((at("etc/gone").0, at("etc/gone").4), ('c', (0, 0)), "the whiteout as overlayfs reads it");
    assert!(at("cache").5, "the opaque directory carries trusted.overlay.opaque=y");
    assert!(!at("etc").5);
    assert_eq!((at("cache").1, at("cache").2), (0o700, 1000));
    assert_eq!((at("etc/null").0, at("etc/null").4), ('c', (1, 3)), "a device node");
    assert_eq!((at("cache/link").0, at("cache/link").3.as_str()), ('l', "../etc/app.conf"));
    let same = at("etc/same.conf");
    assert!(same.0 == 'h' || same.0 == 'f', "a hard link: {same:?}");
    assert!(listing.contains_key("plan.json"));
    assert_eq!(listing["modules/6.1.0/kernel/dm-verity.ko"].0, 'f', "a module, with its directories");
    assert_eq!(listing["modules/6.1.0"].0, 'd');

    // A layer whose root is opaque keeps the xattr on its piece's root.
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Regular, ".wh..wh..opq", 0o644, 0, b"");
    common::tar_file(&mut b, "only", b"y");
    let opaque_root = layer(tmp.path(), b.into_inner().unwrap());
    let s3 = scan_layer(&opaque_root).unwrap();
    let with_opaque = [(&other, &s2), (&opaque_root, &s3)];
    let content2 = Content { plan_json: br#"{"version":2}"#, files: &files, layers: &with_opaque };
    let image2 = tmp.path().join("system2.img");
    let made2 = write_verified(&image2, &content2, 1_700_000_000).unwrap();
    let listing2 = read_back(&image2, 0);
    let root = &listing2[&format!("layers/{}", hex(&opaque_root))];
    assert!(root.5, "the opaque root: {listing2:#?}");
    assert!(!listing2[&format!("layers/{}", hex(&other))].5);
    // `other` is the same piece, with the same digest, in both partitions; the base is not.
    let digest = |m: &berth_image_build::system_partition::Verified, h: &str| {
        m.index.pieces.iter().find(|p| p.path.ends_with(h)).map(|p| p.digest.clone()).unwrap()
    };
    assert_eq!(digest(&made, &hex(&other)), digest(&made2, &hex(&other)));
    assert_ne!(made.index.pieces[0].digest, made2.index.pieces[0].digest);

    // Reproducible, and whole verity blocks.
    let again = tmp.path().join("again.img");
    let made_again = write_verified(&again, &content, 1_700_000_000).unwrap();
    let (a, b) = (fs::read(&image).unwrap(), fs::read(&again).unwrap());
    assert!(a == b, "two builds differ");
    assert_eq!(made_again.spec, made.spec);
    assert_eq!(made.index.data_bytes() % BLOCK_SIZE as u64, 0);
}

/// A built disk: three containers on the busybox image and one on another image share the
/// busybox layer, which the disk's system partition stores once (a layer directory per
/// distinct layer, counted), and the plan, the modules and the layers are all on it.
#[test]
fn a_layer_used_by_three_containers_is_stored_once_on_a_built_disk() {
    let tmp = tempfile::tempdir().unwrap();
    common::busybox_image(tmp.path());
    let root = tmp.path().join("other-root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/other"), b"other\n").unwrap();
    common::import_image(tmp.path(), &root, "other", &[]);
    let mut config = String::from("[kernel]\ncmdline = \"console=ttyS0\"\n");
    for (name, image) in [("a", "busybox"), ("b", "busybox"), ("c", "busybox"), ("d", "other")] {
        config.push_str(&format!(
            "[[service]]\nname = \"{name}\"\nimage = \"oci:images/{image}:latest\"\ncommand = [\"/bin/true\"]\n"
        ));
    }
    let file = tmp.path().join("shared.toml");
    fs::write(&file, config).unwrap();
    let out = tmp.path().join("out");
    common::build_formats(&file, &out, &["raw-efi"], &[]);

    let disk = out.join("disk.raw");
    let table = berth_image_build::formats::read_gpt(&disk).unwrap();
    let part = table.iter().find(|p| p.name == "berth-system-a").expect("slot A's system partition");
    let listing = read_back(&disk, part.offset);
    let layer_dirs: Vec<&String> =
        listing.keys().filter(|p| p.starts_with("layers/") && p.matches('/').count() == 1).collect();
    assert_eq!(layer_dirs.len(), 2, "busybox's layer once, the other image's once: {layer_dirs:?}");
    assert!(listing.contains_key("plan.json"));
    assert!(listing.keys().any(|p| p.starts_with("modules/") && p.ends_with("/overlay.ko")), "{listing:#?}");
    // The initramfs of the disk's UKI holds no layer.
    let report = common::run_berth(&["inspect", "--json", disk.to_str().unwrap()]);
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(report["initrd_unpacked_bytes"].as_u64().unwrap() < 8 << 20, "{report}");
    assert_eq!(report["containers"].as_array().unwrap().len(), 4);
}

#[test]
fn both_slots_are_as_large_as_slot_size_says_and_a_payload_too_large_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    common::busybox_image(tmp.path());
    let config = |slot: &str| {
        format!(
            "[system]\nslot_size = \"{slot}\"\n[[service]]\nname = \"a\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"/bin/true\"]\n"
        )
    };
    let file = tmp.path().join("slots.toml");
    fs::write(&file, config("600m")).unwrap();
    let out = tmp.path().join("out");
    common::build_formats(&file, &out, &["raw-efi"], &[]);
    let table = berth_image_build::formats::read_gpt(&out.join("disk.raw")).unwrap();
    let sizes: Vec<(&str, u64)> = table.iter().map(|p| (p.name.as_str(), p.bytes >> 20)).collect();
    assert_eq!(&sizes[1..], [("berth-system-a", 600), ("berth-system-b", 600)], "{sizes:?}");

    fs::write(&file, config("1k")).unwrap();
    let refused = tmp.path().join("refused");
    let o = common::run_berth(&[
        "build",
        file.to_str().unwrap(),
        "-o",
        refused.to_str().unwrap(),
        "--format",
        "raw-efi",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("slots.toml") && err.contains("[system] slot_size"), "{err}");
    assert!(err.contains("set it to at least"), "{err}");
    assert!(!refused.exists(), "nothing half-written");
}
