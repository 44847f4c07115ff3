//! `docker save` archives built by hand: plain, gzip layers, OCI-style members behind symlinks,
//! a gzip-compressed archive, zstd layers; and the errors for corrupt ones.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_image_build::blobs::{sha256_bytes, BlobCache};
use berth_image_build::layer::{for_each_entry, resolve_user};
use berth_image_build::reference::ImageRef;
use berth_image_build::source::{resolve, Compression, ImageError, ResolvedImage};

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// An uncompressed layer tar with a program and the account files.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("bin/hello", b"#!/bin/sh\necho hello\n", 0o755);
    add("etc/passwd", b"root:x:0:0::/root:/bin/sh\nweb:x:33:33::/srv:/bin/sh\n", 0o644);
    add("etc/group", b"root:x:0:\nweb:x:33:\nlog:x:4:web\n", 0o644);
    b.into_inner().unwrap()
}

fn config_json(diff_id: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/hello"],"Env":null,"User":"web"}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes()
}

enum Member<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn archive(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        match m {
            Member::File(path, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
            Member::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A classic `docker save` archive (manifest.json last, `<id>/layer.tar`, `<hex>.json`).
fn classic(layer: &[u8], diff_id: &str) -> Vec<u8> {
    let config = config_json(diff_id);
    let config_name = format!("{}.json", hex(&sha256_bytes(&config)));
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["hello:latest"],"Layers":["0123abcd/layer.tar"]}}]"#
    );
    archive(&[
        Member::File("0123abcd/layer.tar", layer),
        Member::File(&config_name, &config),
        Member::File("manifest.json", manifest.as_bytes()),
    ])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

fn resolve_file(path: &Path, cache: &BlobCache) -> Result<ResolvedImage, ImageError> {
    let image = ImageRef::parse(&format!("docker-archive:{}", path.display()), Path::new("/")).unwrap();
    resolve(&image, cache)
}

fn check_image(image: &ResolvedImage) {
    assert_eq!(image.config.cmd, vec!["/bin/hello".to_string()]);
    assert_eq!(image.config.user, "web");
    assert_eq!(image.layers.len(), 1);
    let mut paths = Vec::new();
    for_each_entry(&image.layers[0], |e, data| {
        if e.path == "bin/hello" {
            let mut s = String::new();
            data.read_to_string(&mut s)?;
            assert!(s.contains("echo hello"));
        }
        paths.push(e.path.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(paths, vec!["bin/hello", "etc/passwd", "etc/group"]);
    assert_eq!(resolve_user(&image.layers, &image.config.user).unwrap(), (33, 33, vec![4]));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn classic_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let layer = layer_tar();
    let diff_id = sha256_bytes(&layer);
    let path = write(tmp.path(), "hello.tar", &classic(&layer, &diff_id));

    let image = resolve_file(&path, &cache).unwrap();
    check_image(&image);
    let l = &image.layers[0];
    assert_eq!(l.digest, diff_id);
    assert_eq!(l.diff_id.as_deref(), Some(diff_id.as_str()));
    assert_eq!(l.compression, Compression::None);
    assert!(l.path.starts_with(cache.root()));
    assert_eq!(fs::read(&l.path).unwrap(), layer);
    // Config and the synthesized manifest are in the cache; the digest is stable.
    assert!(cache.get(&image.config_digest).is_some());
    assert!(cache.get(&image.manifest_digest).is_some());
    let again = resolve_file(&path, &cache).unwrap();
    assert_eq!(again.manifest_digest, image.manifest_digest);

    // Relative to the config file's directory.
    let relative = ImageRef::parse("docker-archive:hello.tar", tmp.path()).unwrap();
    assert_eq!(resolve(&relative, &cache).unwrap(), image);
}

#[test]
fn wrong_diff_id_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let layer = layer_tar();
    let wrong = sha256_bytes(b"something else");
    let path = write(tmp.path(), "bad.tar", &classic(&layer, &wrong));
    let err = resolve_file(&path, &cache).unwrap_err();
    assert!(matches!(err, ImageError::BadBlob { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("layer 1"), "{message}");
    assert!(message.contains("0123abcd/layer.tar"), "{message}");
    assert!(message.contains(&wrong), "{message}");
    // Nothing unverified was left in the cache.
    let leftovers: Vec<_> = fs::read_dir(cache.blob_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn config_name_must_match_its_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let layer = layer_tar();
    let config = config_json(&sha256_bytes(&layer));
    let name = format!("{}.json", "ab".repeat(32));
    let manifest = format!(r#"[{{"Config":"{name}","RepoTags":null,"Layers":["l/layer.tar"]}}]"#);
    let bytes = archive(&[
        Member::File("manifest.json", manifest.as_bytes()),
        Member::File("l/layer.tar", &layer),
        Member::File(&name, &config),
    ]);
    let path = write(tmp.path(), "x.tar", &bytes);
    let err = resolve_file(&path, &cache).unwrap_err().to_string();
    assert!(err.contains("config") && err.contains(&name), "{err}");
}

#[test]
fn newer_docker_layout_gzip_layers_and_compressed_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let layer = layer_tar();
    let diff_id = sha256_bytes(&layer);
    let gz_layer = gzip(&layer);
    let gz_digest = sha256_bytes(&gz_layer);
    let config = config_json(&diff_id);
    let config_digest = sha256_bytes(&config);
    let layer_member = format!("blobs/sha256/{}", hex(&gz_digest));
    let config_member = format!("blobs/sha256/{}", hex(&config_digest));
    // Docker 25+: the legacy names are symlinks into blobs/.
    let manifest = format!(
        r#"[{{"Config":"{config_member}","RepoTags":["hello:1"],"Layers":["{}/layer.tar"]}}]"#,
        "f".repeat(64)
    );
    let link_target = format!("../{layer_member}");
    let link = format!("{}/layer.tar", "f".repeat(64));
    let bytes = archive(&[
        Member::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        Member::File(&layer_member, &gz_layer),
        Member::File(&config_member, &config),
        Member::Symlink(&link, &link_target),
        Member::File("manifest.json", manifest.as_bytes()),
    ]);
    let path = write(tmp.path(), "new.tar", &bytes);
    let image = resolve_file(&path, &cache).unwrap();
    check_image(&image);
    assert_eq!(image.layers[0].compression, Compression::Gzip);
    assert_eq!(image.layers[0].digest, gz_digest);
    assert_eq!(image.config_digest, config_digest);

    // `docker save | gzip > x.tar.gz` is read too, with the same result.
    let gz_path = write(tmp.path(), "new.tar.gz", &gzip(&bytes));
    assert_eq!(resolve_file(&gz_path, &cache).unwrap(), image);
}

#[test]
fn zstd_layer_with_several_frames() {
    let status = Command::new("zstd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("zstd: {e} (scripts/setup.sh installs it)"));
    assert!(status.success());
    let zstd = |data: &[u8]| -> Vec<u8> {
        let mut child = Command::new("zstd")
            .args(["-q", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let layer = layer_tar();
    let diff_id = sha256_bytes(&layer);
    let (first, second) = layer.split_at(700);
    let mut compressed = zstd(first);
    compressed.extend(zstd(second));
    let path = write(tmp.path(), "z.tar", &classic(&compressed, &diff_id));
    let image = resolve_file(&path, &cache).unwrap();
    assert_eq!(image.layers[0].compression, Compression::Zstd);
    check_image(&image);
}

#[test]
fn archive_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = BlobCache::new(tmp.path().join("cache"));
    let err = resolve_file(&tmp.path().join("missing.tar"), &cache).unwrap_err().to_string();
    assert!(err.contains("no such file") && err.contains("docker save"), "{err}");

    let oci = write(tmp.path(), "oci.tar", &archive(&[Member::File("index.json", b"{}")]));
    let err = resolve_file(&oci, &cache).unwrap_err().to_string();
    assert!(err.contains("no manifest.json") && err.contains("oci:DIR"), "{err}");

    let layer = layer_tar();
    let config = config_json(&sha256_bytes(&layer));
    let two = r#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l.tar"]},{"Config":"c.json","RepoTags":["b:2"],"Layers":["l.tar"]}]"#;
    let path = write(
        tmp.path(),
        "two.tar",
        &archive(&[
            Member::File("manifest.json", two.as_bytes()),
            Member::File("c.json", &config),
            Member::File("l.tar", &layer),
        ]),
    );
    let err = resolve_file(&path, &cache).unwrap_err().to_string();
    assert!(err.contains("2 images") && err.contains("a:1, b:2"), "{err}");

    let missing_layer = r#"[{"Config":"c.json","Layers":["nope.tar"]}]"#;
    let path = write(
        tmp.path(),
        "incomplete.tar",
        &archive(&[Member::File("manifest.json", missing_layer.as_bytes()), Member::File("c.json", &config)]),
    );
    let err = resolve_file(&path, &cache).unwrap_err().to_string();
    assert!(err.contains("nope.tar"), "{err}");
}
