//! Fuzzes what `berth build` reads from outside: OCI layouts (`oci-layout`, `index.json`, nested
//! indexes, manifests, image configurations), `docker save` archives (`manifest.json`, the
//! configuration, the tar itself), layer tars (headers, PAX records, GNU long names) and a
//! registry's `WWW-Authenticate` challenges and Docker's `config.json`. The engine is
//! `init/tests/support/fuzz.rs`; run longer with `BERTH_FUZZ_SECONDS=600 cargo test -p
//! berth-image-build --test fuzz_inputs`.

#[path = "../../init/tests/support/fuzz.rs"]
mod fuzz;

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use berth_image_build::blobs::{sha256_bytes, BlobCache};
use berth_image_build::layer::{for_each_entry, image_accounts, resolve_user_in, scan_layer};
use berth_image_build::reference::ImageRef;
use berth_image_build::registry::auth::{credentials_from_docker_config, parse_www_authenticate};
use berth_image_build::source::{self, Compression, LayerBlob, ResolvedImage};
use fuzz::Target;

/// A scratch directory, in memory when possible: the blob cache syncs every blob it stores,
/// which on a disk would make each case cost milliseconds.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-fuzz-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// A small layer with one entry of each kind berth converts.
fn layer_tar(with_pax: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = common::tar_header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "etc/", &[][..]).unwrap();
    common::tar_file(&mut b, "etc/passwd", b"root:x:0:0::/root:/bin/sh\nwww:x:33:33::/:/bin/sh\n");
    common::tar_file(&mut b, "etc/group", b"root:x:0:\nwww:x:33:root\n");
    let mut h = common::tar_header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "bin/sh", "busybox").unwrap();
    let mut h = common::tar_header(tar::EntryType::Link, 0o644, 0);
    b.append_link(&mut h, "etc/passwd-", "etc/passwd").unwrap();
    common::tar_file(&mut b, "var/.wh.cache", b"");
    common::tar_file(&mut b, "opt/.wh..wh..opq", b"");
    let mut h = common::tar_header(tar::EntryType::Char, 0o600, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", &[][..]).unwrap();
    let mut h = common::tar_header(tar::EntryType::Fifo, 0o600, 0);
    b.append_data(&mut h, "run/fifo", &[][..]).unwrap();
    if with_pax {
        common::tar_pax(
            &mut b,
            &[("path", "usr/share/a-long-name-from-pax"), ("uid", "70000"), ("mtime", "1700000000.5")],
        );
        common::tar_file(&mut b, "placeholder", b"pax data");
        let long = format!("usr/lib/{}/file", "d".repeat(120));
        let mut h = common::tar_header(tar::EntryType::Regular, 0o644, 2);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Parses an octal (or base-256) tar number field.
fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Some(field[1..].iter().fold(0u64, |n, b| n.wrapping_shl(8) | u64::from(*b)));
    }
    let text = std::str::from_utf8(field).ok()?.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Recomputes the checksum of every header block, following the sizes, so that mutations get
/// past the checksum test into the header and PAX parsing. Applied to 3 inputs in 4 (chosen
/// from the input's bytes: a regression input replays the same way).
fn fix_checksums(tar: &mut [u8]) {
    if tar.iter().fold(0u8, |a, b| a.wrapping_add(*b)) % 4 == 0 {
        return;
    }
    let mut at = 0usize;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        if block.iter().all(|b| *b == 0) {
            at += 512;
            continue;
        }
        let size = tar_number(&block[124..136]).unwrap_or(0);
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let Some(next) = size.checked_add(511).map(|s| s / 512 * 512).and_then(|s| s.checked_add(512)) else {
            break;
        };
        let Ok(next) = usize::try_from(next) else { break };
        let Some(n) = at.checked_add(next) else { break };
        at = n;
    }
}

/// Tokens of tar headers and PAX records.
const TAR_DICT: &[&[u8]] = &[
    b"ustar\x0000",
    b"ustar  \x00",
    b"0000644\x00",
    b"00000000000\x00",
    b"77777777777\x00",
    b"\x80\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    b"././@LongLink\x00",
    b"30 path=a/../../etc/shadow\n",
    b"20 uid=99999999999\n",
    b"19 gid=-1\n",
    b"27 mtime=1e999\n",
    b"9999 size=1\n",
    b"0 x=\n",
    b"18 linkpath=/x\n",
    b"22 GNU.sparse.size=9\n",
    b"../",
    b"/",
    b".wh.",
    b".wh..wh..opq",
    b"etc/passwd",
    b"x",
    b"g",
    b"L",
    b"K",
    b"S",
    b"1",
    b"2",
    b"3",
    b"5",
    b"7",
];

fn blob_for(dir: &Path, bytes: &[u8], compression: Compression, diff_id: Option<String>) -> LayerBlob {
    let path = dir.join("layer");
    fs::write(&path, bytes).unwrap();
    LayerBlob { digest: sha256_bytes(bytes), diff_id, compression, path, size: bytes.len() as u64 }
}

/// What `berth build` does with a layer: pass 1, pass 2 reading every entry's data, the
/// accounts found, a user looked up.
fn read_layer(blob: &LayerBlob) -> Result<(), String> {
    let summary = scan_layer(blob).map_err(|e| format!("{e:#}"))?;
    let mut entries = 0u64;
    for_each_entry(blob, |_, data| {
        entries += 1;
        std::io::copy(&mut data.take(1 << 20), &mut std::io::sink())?;
        Ok(())
    })
    .map_err(|e| format!("{e:#}"))?;
    assert_eq!(entries, summary.entries, "pass 1 and pass 2 disagree on the entries");
    let summaries = [summary];
    let _ = image_accounts(&summaries);
    let _ = resolve_user_in(&summaries, "www:root");
    let _ = resolve_user_in(&summaries, "33");
    Ok(())
}

/// Layer tars (uncompressed, and gzip), read as the builder reads them.
#[test]
fn layer_tar_entries() {
    let dir = scratch();
    let plain = layer_tar(true);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer_tar(false)).unwrap();
    let seeds = vec![plain, layer_tar(false), gz.finish().unwrap()];
    let mut target = Target::new("layer_tar", seeds, TAR_DICT);
    target.max_len = 32 << 10;
    let dir_path = dir.path().to_path_buf();
    fuzz::run(target, move |input| {
        let _keep = &dir;
        let mut bytes = input.to_vec();
        let compression = Compression::sniff(&bytes);
        if compression == Compression::None {
            fix_checksums(&mut bytes);
        }
        // The diff id of what was written, when it is the tar itself (else unchecked).
        let diff_id = (compression == Compression::None).then(|| sha256_bytes(&bytes));
        let blob = blob_for(&dir_path, &bytes, compression, diff_id);
        read_layer(&blob)
    });
}

const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The valid documents of a one-layer image, for `layer`.
struct Docs {
    layer: Vec<u8>,
    config: Vec<u8>,
}

impl Docs {
    fn new() -> Docs {
        let layer = layer_tar(false);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"],"Env":["PATH=/bin"],"User":"www","WorkingDir":"/","Entrypoint":null,"Labels":{{"a":"b"}},"ExposedPorts":{{"80/tcp":{{}}}}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}},"history":[{{"created_by":"x"}}]}}"#,
            sha256_bytes(&layer)
        )
        .into_bytes();
        Docs { layer, config }
    }

    fn manifest(&self, config: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            sha256_bytes(config),
            config.len(),
            sha256_bytes(&self.layer),
            self.layer.len()
        )
        .into_bytes()
    }

    /// An index naming `doc` (a manifest, or a nested index) as `latest`.
    fn index(doc: &[u8], media_type: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_INDEX}","manifests":[{{"mediaType":"{media_type}","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
            sha256_bytes(doc),
            doc.len()
        )
        .into_bytes()
    }

    /// A nested (multi-platform) index naming `manifest` for linux/amd64.
    fn nested(manifest: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},{{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            "0".repeat(64),
            sha256_bytes(manifest),
            manifest.len()
        )
        .into_bytes()
    }
}

/// JSON tokens.
const JSON_DICT: &[&[u8]] = &[
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"\"\"",
    b",",
    b":",
    b"\"sha256:",
    b"\"sha512:",
    b"0000000000000000000000000000000000000000000000000000000000000000",
    b"\"size\":18446744073709551615",
    b"\"size\":67108865",
    b"\"schemaVersion\":1",
    b"\"mediaType\":\"application/vnd.oci.image.index.v1+json\"",
    b"\"mediaType\":\"application/vnd.docker.distribution.manifest.list.v2+json\"",
    b"\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\"",
    b"\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\"",
    b"\"architecture\":\"arm64\"",
    b"\"os\":\"windows\"",
    b"\"diff_ids\":[]",
    b"\"Config\":\"",
    b"\"Layers\":[\"",
    b"\"RepoTags\":null",
    b"../",
    b"\\u0000",
    b"\\ud800",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

/// A rejected image's message must name the JSON error's place.
fn check_image_error(e: &str) {
    if e.contains("invalid JSON") {
        assert!(e.contains(" line ") && e.contains(" column "), "a JSON error without its place: {e:?}");
    }
}

/// What the build does with a resolved image: read its layers.
fn use_image(image: &ResolvedImage) -> Result<(), String> {
    for layer in &image.layers {
        read_layer(layer)?;
    }
    Ok(())
}

/// An OCI layout: the input's first byte picks the document that is mutated (0 `index.json`,
/// 1 a nested index, 2 the manifest, 3 the configuration, 4 `oci-layout`); the others are valid
/// and name it by its real digest and size, so the mutation reaches the parsing after the
/// digest checks.
#[test]
fn oci_layout() {
    let docs = Docs::new();
    let manifest = docs.manifest(&docs.config);
    let nested = Docs::nested(&manifest);
    let originals: Vec<Vec<u8>> = vec![
        Docs::index(&manifest, MEDIA_OCI_MANIFEST),
        nested.clone(),
        manifest.clone(),
        docs.config.clone(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ];
    let seeds: Vec<Vec<u8>> = originals
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut s = vec![u8::try_from(i).unwrap()];
            s.extend_from_slice(d);
            s
        })
        .collect();
    let base = scratch();
    let mut case = 0u64;
    let mut target = Target::new("oci_layout", seeds, JSON_DICT);
    target.max_len = 16 << 10;
    fuzz::run(target, move |input| {
        let Some((&which, doc)) = input.split_first() else { return Err("empty".into()) };
        case += 1;
        let dir = base.path().join(format!("case-{}", case % 2));
        let _ = fs::remove_dir_all(&dir);
        let blobs = dir.join("layout/blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let digest = sha256_bytes(bytes);
            fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        };
        put(&docs.layer);
        let (config, manifest_doc);
        let which = which % 5;
        config = if which == 3 { doc.to_vec() } else { docs.config.clone() };
        put(&config);
        manifest_doc = if which == 2 { doc.to_vec() } else { docs.manifest(&config) };
        put(&manifest_doc);
        let index = match which {
            0 => doc.to_vec(),
            1 => {
                put(doc);
                Docs::index(doc, MEDIA_OCI_INDEX)
            }
            _ => Docs::index(&manifest_doc, MEDIA_OCI_MANIFEST),
        };
        let layout = dir.join("layout");
        fs::write(layout.join("index.json"), index).unwrap();
        let oci_layout: &[u8] = if which == 4 { doc } else { br#"{"imageLayoutVersion":"1.0.0"}"# };
        fs::write(layout.join("oci-layout"), oci_layout).unwrap();
        let cache = BlobCache::new(dir.join("cache"));
        let tag = (input.len() % 2 == 0).then(|| "latest".to_string());
        let image = ImageRef::OciLayout { dir: layout, tag };
        let resolved = source::resolve(&image, &cache).map_err(|e| e.to_string());
        let resolved = resolved.inspect_err(|e| check_image_error(e))?;
        use_image(&resolved)
    });
}

/// Writes a `docker save` archive of `members`.
fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        common::tar_file(&mut b, name, data);
    }
    b.into_inner().unwrap()
}

/// A `docker save` archive: the input's first byte picks what is mutated (0 `manifest.json`,
/// 1 the configuration, named by its real digest, 2 the archive's own bytes, checksums
/// repaired).
#[test]
fn docker_archive() {
    let docs = Docs::new();
    fn config_name(config: &[u8]) -> String {
        format!("{}.json", sha256_bytes(config).trim_start_matches("sha256:"))
    }
    fn manifest_json(config: &[u8]) -> Vec<u8> {
        format!(
            r#"[{{"Config":"{}","RepoTags":["app:latest"],"Layers":["abc/layer.tar"]}}]"#,
            config_name(config)
        )
        .into_bytes()
    }
    let layer = docs.layer.clone();
    let whole = move |manifest: &[u8], config: &[u8]| {
        archive(&[
            ("abc/layer.tar", &layer),
            (&config_name(config), config),
            ("manifest.json", manifest),
            ("repositories", b"{}"),
        ])
    };
    let mut seeds = vec![
        [&[0u8][..], &manifest_json(&docs.config)].concat(),
        [&[1u8][..], &docs.config].concat(),
        [&[2u8][..], &whole(&manifest_json(&docs.config), &docs.config)].concat(),
    ];
    // A symlinked layer, as podman writes them, and an OCI-archive look-alike.
    let linked = {
        let mut b = tar::Builder::new(Vec::new());
        common::tar_file(&mut b, "blobs/sha256/layer", &docs.layer);
        let mut h = common::tar_header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "abc/layer.tar", "../blobs/sha256/layer").unwrap();
        common::tar_file(&mut b, &config_name(&docs.config), &docs.config);
        common::tar_file(&mut b, "manifest.json", &manifest_json(&docs.config));
        b.into_inner().unwrap()
    };
    seeds.push([&[2u8][..], &linked].concat());
    let mut dict = JSON_DICT.to_vec();
    dict.extend_from_slice(TAR_DICT);
    let base = scratch();
    let mut case = 0u64;
    let mut target = Target::new("docker_archive", seeds, &dict);
    target.max_len = 32 << 10;
    fuzz::run(target, move |input| {
        let Some((&which, doc)) = input.split_first() else { return Err("empty".into()) };
        case += 1;
        let dir = base.path().join(format!("case-{}", case % 2));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let bytes = match which % 3 {
            0 => whole(doc, &docs.config),
            1 => whole(&manifest_json(doc), doc),
            _ => {
                let mut raw = doc.to_vec();
                fix_checksums(&mut raw);
                raw
            }
        };
        let file: PathBuf = dir.join("image.tar");
        fs::write(&file, bytes).unwrap();
        let cache = BlobCache::new(dir.join("cache"));
        let resolved = source::resolve(&ImageRef::DockerArchive { file }, &cache).map_err(|e| e.to_string());
        let resolved = resolved.inspect_err(|e| check_image_error(e))?;
        use_image(&resolved)
    });
}

/// A registry's `WWW-Authenticate` header (as text: a header that is not is never parsed).
#[test]
fn www_authenticate() {
    let seeds: Vec<Vec<u8>> = [
        r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull""#,
        r#"Basic realm="registry", Bearer realm="https://a/t", error="invalid_token""#,
        r#"Bearer realm="a\"b\\c",scope=x"#,
        "Negotiate, Basic",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let dict: &[&[u8]] =
        &[b"Bearer ", b"Basic ", b"realm=", b"\"", b"\\", b",", b"=", b" ", b"\t", b"scope="];
    fuzz::run(Target::new("www_authenticate", seeds, dict), |input| {
        let header = String::from_utf8_lossy(input);
        let challenges = parse_www_authenticate(&header);
        for c in &challenges {
            assert!(!c.scheme.is_empty(), "a challenge without a scheme: {c:?}");
        }
        if challenges.is_empty() {
            Err("no challenge".into())
        } else {
            Ok(())
        }
    });
}

/// Docker's `config.json`, where berth finds registry credentials.
#[test]
fn docker_config_json() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"auths":{"registry.example":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"auth":"YTpi"}}}"#,
        r#"{"auths":{"http://registry.example/v2/":{"auth":" dXNlcjpwYXNz "}},"credsStore":"desktop"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz::run(Target::new("docker_config_json", seeds, JSON_DICT), |input| {
        let text = String::from_utf8_lossy(input);
        let mut rejected = Vec::new();
        for registry in ["registry.example", "docker.io"] {
            if let Err(e) = credentials_from_docker_config(&text, registry, "~/.docker/config.json") {
                assert!(e.starts_with("~/.docker/config.json"), "an error without the file: {e:?}");
                rejected.push(e);
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(rejected.join("; "))
        }
    });
}
