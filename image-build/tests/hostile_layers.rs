//! Hostile image layers are refused by `berth build` before anything is written: each refusal
//! names the image, the layer digest, the entry and the rules (docs/images.md, "What a layer
//! may contain"), and leaves no output and no staging directory behind. A legitimate layer
//! using what the rules allow (absolute and relative symlinks, hard links to earlier files,
//! whiteouts, an opaque directory, absolute entry names) still builds, and lands under its own
//! directory only. Nothing here boots: the kernel is a synthetic bzImage (header and embedded
//! configuration only).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use berth_image_build::blobs::sha256_bytes;
use berth_image_build::cpio::read_archive;
use berth_image_build::kernel_check;
use sha2::{Digest as _, Sha256};
use tar::EntryType::{self, *};

/// The configuration of kernel-config/fragments, all merged: a kernel that has what berth needs.
fn kernel_config() -> String {
    kernel_check::fragments().iter().map(|(_, text)| *text).collect::<Vec<_>>().join("\n")
}

/// A tar layer written member by member, names straight into the header bytes (`tar::Builder`
/// refuses `..`, and some of these names on purpose are not what a sane writer makes).
struct Layer(Vec<u8>);

impl Layer {
    fn new() -> Layer {
        Layer(Vec::new())
    }

    /// A raw header: `name` and `link` (at most 100 bytes each) as given, `size` as announced,
    /// then `data` (which may be shorter than `size` when the layer is meant to be cut short).
    fn raw(&mut self, kind: EntryType, name: &[u8], link: &[u8], size: u64, data: &[u8]) -> &mut Layer {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == Directory { 0o755 } else { 0o644 });
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn entry(&mut self, kind: EntryType, name: &str, link: &str) -> &mut Layer {
        self.raw(kind, name.as_bytes(), link.as_bytes(), 0, b"")
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.raw(Regular, name.as_bytes(), b"", data.len() as u64, data)
    }

    /// A GNU long name (`L`) for the next member.
    fn long_name(&mut self, name: &[u8]) -> &mut Layer {
        let mut data = name.to_vec();
        data.push(0);
        self.raw(GNULongName, b"././@LongLink", b"", data.len() as u64, &data)
    }

    /// A PAX extended header (`x`) with the given records, for the next member.
    fn pax(&mut self, records: &[(&str, &str)]) -> &mut Layer {
        let data = common::pax_records(records);
        self.raw(XHeader, b"PaxHeaders/entry", b"", data.len() as u64, &data)
    }

    /// The archive with its end marker.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// A layer blob as the layout stores it: bytes, media type, diff id.
type Blob = (Vec<u8>, &'static str, String);

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Writes `bytes` as a blob of the layout at `dir`; returns its descriptor fields.
fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = sha256_bytes(bytes);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(hex(&digest)), bytes).unwrap();
    (digest, bytes.len())
}

/// Writes an OCI image layout at `dir` (tag `latest`) with `layers` as `(blob, media type,
/// diff id)`, bottom first; the image runs `/bin/true`. Returns the layers' digests.
fn oci_image(dir: &Path, layers: &[Blob]) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for (bytes, media_type, _) in layers {
        let (digest, size) = blob(dir, bytes);
        descriptors.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": size}));
        digests.push(digest);
    }
    let diff_ids: Vec<&String> = layers.iter().map(|(_, _, d)| d).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = blob(dir, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": descriptors,
    });
    let (manifest_digest, manifest_size) = blob(dir, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    digests
}

/// An uncompressed layer: its digest is its diff id.
fn plain(tar: Vec<u8>) -> Blob {
    let diff_id = sha256_bytes(&tar);
    (tar, "application/vnd.oci.image.layer.v1.tar", diff_id)
}

/// A directory with the synthetic kernel.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bzImage"), common::synthetic_bzimage(Some(&kernel_config()))).unwrap();
    dir
}

/// Builds a config running `images/NAME` in `dir` into `dir/NAME.out`.
fn build(dir: &Path, name: &str) -> (Output, String, PathBuf) {
    let config = format!(
        "[network]\nauto = false\n\n[kernel]\npath = \"bzImage\"\n\n\
         [[onboot]]\nname = \"app\"\nimage = \"oci:images/{name}:latest\"\n"
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    let out_dir = dir.join(format!("{name}.out"));
    let out = common::run_berth(&[
        "build",
        file.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--cache-dir",
        dir.join("cache").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr, out_dir)
}

/// Builds an image of `layers` named `name`, expects a refusal naming the image, the hostile
/// layer (the last), the entry (`entry` as the message quotes it) and `reason`, and nothing
/// written.
fn refused(dir: &Path, name: &str, layers: Vec<Blob>, entry: &str, reason: &str) {
    let digests = oci_image(&dir.join("images").join(name), &layers);
    let (out, stderr, out_dir) = build(dir, name);
    assert!(!out.status.success(), "{name}: the build succeeded: {stderr}");
    let context = format!("{name}: {stderr}");
    assert!(stderr.contains(&format!("image oci:images/{name}:latest")), "no image reference in {context}");
    assert!(stderr.contains(digests.last().unwrap()), "no layer digest in {context}");
    assert!(stderr.contains(&format!("entry {entry}")), "no entry {entry} in {context}");
    assert!(stderr.contains(reason), "no {reason:?} in {context}");
    assert!(stderr.contains("What a layer may contain"), "no hint in {context}");
    assert!(!stderr.contains("panicked"), "{context}");
    assert!(!out_dir.exists(), "{name}: output written despite the error");
    common::assert_no_staging(dir, name);
}

fn tar(build: impl FnOnce(&mut Layer)) -> Blob {
    let mut layer = Layer::new();
    build(&mut layer);
    plain(layer.finish())
}

#[test]
fn entries_through_a_symlink_of_the_same_layer_are_refused() {
    let dir = project();
    let cases: [(&str, &str, &str); 4] = [
        ("abs", "/", "a/etc/passwd"),
        ("rel", "../..", "a/b/c"),
        ("sub", "sub", "a/b"),
        ("berth", "/berth", "a/plan.json"),
    ];
    for (name, target, below) in cases {
        let layer = tar(|l| {
            l.entry(Directory, "etc/", "").entry(Symlink, "a", target).file(below, b"root::0:0::/:/bin/sh\n");
        });
        refused(
            dir.path(),
            &format!("through-{name}"),
            vec![layer],
            &format!("{below:?}"),
            "through the symlink",
        );
    }
    // A whiteout and an opaque marker under the symlink too (PID 1 would mark its target).
    let layer = tar(|l| {
        l.entry(Symlink, "a", "/").file("a/.wh.etc", b"");
    });
    refused(dir.path(), "through-whiteout", vec![layer], "\"a/.wh.etc\"", "through the symlink");
    let layer = tar(|l| {
        l.entry(Symlink, "a", "/").file("a/.wh..wh..opq", b"");
    });
    refused(dir.path(), "through-opaque", vec![layer], "\"a/.wh..wh..opq\"", "through the symlink");
    // A lower layer's symlink is not this layer's: the upper layer has its own directory.
    let lower = tar(|l| {
        l.entry(Symlink, "a", "/");
    });
    let upper = tar(|l| {
        l.entry(Directory, "a/", "").file("a/b", b"x");
    });
    oci_image(&dir.path().join("images/two-layers"), &[lower, upper]);
    let (out, stderr, _) = build(dir.path(), "two-layers");
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn hard_links_outside_the_layer_are_refused() {
    let dir = project();
    let cases: [(&str, Vec<Blob>, &str, &str); 6] = [
        (
            "dotdot",
            vec![tar(|l| {
                l.file("f", b"x").raw(Link, b"l", b"../../init", 0, b"");
            })],
            "\"l\"",
            "`..`",
        ),
        (
            "absolute",
            vec![tar(|l| {
                l.file("f", b"x").entry(Link, "l", "/init");
            })],
            "\"l\"",
            "not an earlier entry of the same layer",
        ),
        (
            // The target exists in a lower layer only.
            "lower",
            vec![
                tar(|l| {
                    l.file("bin/sh", b"x");
                }),
                tar(|l| {
                    l.entry(Link, "bin/ash", "bin/sh");
                }),
            ],
            "\"bin/ash\"",
            "not an earlier entry of the same layer",
        ),
        (
            "later",
            vec![tar(|l| {
                l.entry(Link, "l", "f").file("f", b"x");
            })],
            "\"l\"",
            "not an earlier entry of the same layer",
        ),
        (
            "dir",
            vec![tar(|l| {
                l.entry(Directory, "etc/", "").entry(Link, "l", "/etc");
            })],
            "\"l\"",
            "which is a directory",
        ),
        (
            "through-symlink",
            vec![tar(|l| {
                l.file("d/f", b"x").entry(Symlink, "s", "d").entry(Link, "l", "s/f");
            })],
            "\"l\"",
            "through the symlink \"s\"",
        ),
    ];
    for (name, layers, entry, reason) in cases {
        refused(dir.path(), &format!("link-{name}"), layers, entry, reason);
    }
}

#[test]
fn dotdot_in_entry_paths_is_refused() {
    let dir = project();
    for (name, path) in [("lead", "../../init"), ("mid", "a/../../b"), ("root", "/../berth/plan.json")] {
        let layer = tar(|l| {
            l.file(path, b"x");
        });
        refused(dir.path(), &format!("dotdot-{name}"), vec![layer], &format!("{path:?}"), "contains `..`");
    }
}

#[test]
fn replacing_a_filled_directory_or_a_symlink_is_refused() {
    let dir = project();
    let layer = tar(|l| {
        l.entry(Directory, "a/", "").file("a/f", b"x").entry(Symlink, "a", "/");
    });
    refused(dir.path(), "symlink-over-dir", vec![layer], "\"a\"", "replacing the directory \"a\"");
    let layer = tar(|l| {
        l.file("a/b/f", b"x").file("a", b"now a file");
    });
    refused(dir.path(), "file-over-dir", vec![layer], "\"a\"", "replacing the directory \"a\"");
    let layer = tar(|l| {
        l.entry(Symlink, "a", "/etc").entry(Directory, "a/", "");
    });
    refused(dir.path(), "dir-over-symlink", vec![layer], "\"a/\"", "a directory replacing the symlink \"a\"");
}

#[test]
fn absurd_sizes_names_and_numbers_are_refused() {
    let dir = project();
    let root = dir.path();
    // 64 GiB + 1 announced; the data is not even there (refused before reading it).
    let layer = tar(|l| {
        l.raw(Regular, b"huge", b"", (64 << 30) + 1, b"");
    });
    refused(root, "huge-file", vec![layer], "\"huge\"", "at most 68719476736 bytes (64 GiB)");
    let layer = tar(|l| {
        l.pax(&[("size", "68719476737")]).raw(Regular, b"huge-pax", b"", 0, b"");
    });
    refused(root, "huge-pax", vec![layer], "\"huge-pax\"", "at most 68719476736 bytes (64 GiB)");

    let long_path = format!("{}/f", ["d"; 2048].join("/"));
    let layer = tar(|l| {
        l.long_name(long_path.as_bytes()).raw(Regular, b"short", b"", 0, b"");
    });
    refused(root, "long-path", vec![layer], &format!("{:?}", &long_path[..200]), "4097 bytes long");
    let long_name = format!("dir/{}", "n".repeat(256));
    let layer = tar(|l| {
        l.long_name(long_name.as_bytes()).raw(Regular, b"short", b"", 0, b"");
    });
    refused(root, "long-name", vec![layer], "\"dir/nnnn", "256 bytes long");
    let layer = tar(|l| {
        l.raw(Regular, b"a\nb", b"", 0, b"");
    });
    refused(root, "newline", vec![layer], "\"a\\nb\"", "contains a newline");
    let layer = tar(|l| {
        l.long_name(b"a\0b").raw(Regular, b"short", b"", 0, b"");
    });
    refused(root, "nul", vec![layer], "\"a\\0b\"", "contains a NUL");
    let layer = tar(|l| {
        l.raw(Regular, b"caf\xe9", b"", 0, b"");
    });
    refused(root, "latin1", vec![layer], "\"caf\u{fffd}\"", "is not UTF-8");
    let layer = tar(|l| {
        l.raw(Symlink, b"s", b"a\nb", 0, b"");
    });
    refused(root, "link-newline", vec![layer], "\"s\"", "link target \"a\\nb\" contains a newline");

    for (key, value) in
        [("uid", "99999999999999999999999"), ("gid", "4294967296"), ("mtime", "1e99"), ("size", "12x")]
    {
        let layer = tar(|l| {
            l.pax(&[(key, value)]).file("f", b"");
        });
        let reason = if key == "gid" {
            "gid 4294967296 out of range".to_string()
        } else {
            format!("PAX record {key}=")
        };
        refused(root, &format!("pax-{key}"), vec![layer], "\"f\"", &reason);
    }
}

#[test]
fn more_entries_than_the_limit_are_refused() {
    let dir = project();
    // 1,000,001 copies of the same directory header (duplicates are legal): 512 MB of tar,
    // a few hundred kB as zstd.
    let mut one = Layer::new();
    one.entry(Directory, "d/", "");
    let block = one.0;
    let mut hasher = Sha256::new();
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    for _ in 0..1_000_001 {
        encoder.write_all(&block).unwrap();
        hasher.update(&block);
    }
    encoder.write_all(&[0u8; 1024]).unwrap();
    hasher.update([0u8; 1024]);
    let compressed = encoder.finish().unwrap();
    let diff_id = format!("sha256:{}", hex_of(&hasher.finalize()));
    let layer = (compressed, "application/vnd.oci.image.layer.v1.tar+zstd", diff_id);
    refused(dir.path(), "many", vec![layer], "\"d/\"", "more than 1000000 entries");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_legitimate_layer_still_builds_inside_its_directory() {
    let dir = project();
    let base = tar(|l| {
        l.entry(Directory, "etc/", "")
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
            .file("etc/old", b"removed above")
            .entry(Directory, "var/", "")
            .file("var/cache", b"hidden above");
    });
    let top = tar(|l| {
        l.entry(Directory, "./", "")
            .entry(Directory, "/bin/", "")
            .file("/bin/true", b"#!/bin/sh\n")
            .entry(Link, "bin/false", "/bin/true")
            .entry(Link, "./bin/also-true", "bin//true")
            .entry(Symlink, "etc/alt", "/etc")
            .entry(Symlink, "bin/up", "../etc/../etc")
            .entry(Symlink, "bin/sh", "true")
            .file("etc/.wh.old", b"")
            .entry(Directory, "var/", "")
            .file("var/.wh..wh..opq", b"")
            .file("var/new", b"fresh")
            .entry(Directory, "empty/", "")
            .entry(Symlink, "empty", "/var")
            .entry(Symlink, "swapped", "/")
            .file("swapped", b"a file now")
            .file("etc/alt-sibling/x", b"beside the symlink, not under it");
    });
    let digests = oci_image(&dir.path().join("images/legit"), &[base, top]);
    let (out, stderr, out_dir) = build(dir.path(), "legit");
    assert!(out.status.success(), "{stderr}");

    let initrd = std::fs::read(out_dir.join("initrd.img")).unwrap();
    let records = read_archive(zstd::decode_all(initrd.as_slice()).unwrap().as_slice()).unwrap();
    let prefixes: Vec<String> = digests.iter().map(|d| format!("berth/layers/{}", hex(d))).collect();
    let top_dir = &prefixes[1];
    let find = |path: &str| {
        let full = format!("{top_dir}/{path}");
        records.iter().rev().find(|r| r.path == full).unwrap_or_else(|| panic!("{full} not packed")).clone()
    };
    const S_IFMT: u32 = 0o170000;
    assert_eq!(find("etc/alt").mode & S_IFMT, 0o120000);
    assert_eq!(find("etc/alt").data, b"/etc");
    assert_eq!(find("bin/up").data, b"../etc/../etc");
    assert_eq!(find("etc/old").mode & S_IFMT, 0o020000, "whiteout as a character device");
    assert_eq!(find("empty").data, b"/var");
    assert_eq!(find("swapped").data, b"a file now");
    assert_eq!(find("bin/true").data, b"#!/bin/sh\n");
    assert_eq!(find("bin/false").mode & S_IFMT, 0o100000);
    // Every record of the layers is inside one layer's directory; the rest of the initramfs is
    // the builder's own.
    for r in &records {
        if r.path.starts_with("berth/layers/") {
            assert!(
                prefixes.iter().any(|p| r.path == *p || r.path.starts_with(&format!("{p}/"))),
                "{} is outside every layer's directory",
                r.path
            );
        }
    }
    let plan = records.iter().filter(|r| r.path == "berth/plan.json").count();
    assert_eq!(plan, 1, "one plan, written by the builder");
    let plan = records.iter().find(|r| r.path == "berth/plan.json").unwrap();
    assert!(String::from_utf8_lossy(&plan.data).contains("\"var\""), "the opaque directory is in the plan");
}
