//! `berth image import`: turn a root filesystem directory into a single-layer OCI image in an
//! OCI image layout, like `docker import`, reproducibly; with a base image (`--base TAG`), the
//! directory becomes one more layer on top of that image's layers, like a Dockerfile's `FROM`
//! and `COPY` (files named `.wh.NAME` in the directory are OCI whiteouts: they delete NAME of
//! the layers below).
//!
//! The layer is a gzip tar of the directory: entries sorted by path (so every directory comes
//! before its contents), owners, permissions, symlinks, hard links and device nodes preserved,
//! every mtime set to `SOURCE_DATE_EPOCH` (or 0), no user or group names, and a gzip header
//! without timestamp or file name. Importing the same directory twice gives byte-identical
//! blobs and the same manifest digest.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::blobs::{BlobCache, HashingWriter};
use crate::image_config::ImageConfig;
use crate::source::spec::{
    Descriptor, Manifest, OciLayoutFile, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST, REF_NAME_ANNOTATION,
};

/// Image configuration settings for an imported image (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env`, as `KEY=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// The timestamp for every mtime and `created`; `None`: the `SOURCE_DATE_EPOCH`
    /// environment variable if set (then `created` is written), else 0 (and no `created`).
    pub source_date_epoch: Option<u64>,
    /// A tag of the same layout: the new layer goes on top of that image's layers, and its
    /// settings are the base's, each given option replacing the base's (`env` by key).
    pub base: Option<String>,
}

/// What an imported image starts from: the layers, diff ids, history and settings of a base
/// image, or nothing.
#[derive(Default)]
struct Base {
    layers: Vec<Descriptor>,
    diff_ids: Vec<Value>,
    history: Vec<Value>,
    config: ImageConfig,
}

/// Reads the image tagged `tag` in the layout at `layout_dir`.
fn read_base(layout_dir: &Path, tag: &str) -> Result<Base> {
    let index_path = layout_dir.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&index_path).with_context(|| format!("--base {tag}: reading {}", index_path.display()))?,
    )
    .with_context(|| format!("{}: invalid JSON", index_path.display()))?;
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["annotations"][REF_NAME_ANNOTATION].as_str() == Some(tag)))
        .with_context(|| {
            format!(
                "--base {tag}: no image tagged {tag:?} in {}; import the base there first",
                layout_dir.display()
            )
        })?;
    let blob = |digest: &str| -> Result<Vec<u8>> {
        let hex = digest.strip_prefix("sha256:").with_context(|| format!("unsupported digest {digest}"))?;
        let path = layout_dir.join("blobs/sha256").join(hex);
        fs::read(&path).with_context(|| format!("--base {tag}: reading {}", path.display()))
    };
    let manifest: Manifest = serde_json::from_slice(&blob(entry["digest"].as_str().unwrap_or_default())?)
        .with_context(|| format!("--base {tag}: the manifest is not an OCI image manifest"))?;
    let config: Value = serde_json::from_slice(&blob(&manifest.config.digest)?)
        .with_context(|| format!("--base {tag}: the image configuration is not JSON"))?;
    let diff_ids = config["rootfs"]["diff_ids"].as_array().cloned().unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        bail!("--base {tag}: {} layers but {} diff_ids", manifest.layers.len(), diff_ids.len());
    }
    let settings = match &config["config"] {
        Value::Null => ImageConfig::default(),
        v => serde_json::from_value(v.clone())
            .with_context(|| format!("--base {tag}: the image configuration's `config` is malformed"))?,
    };
    Ok(Base {
        layers: manifest.layers,
        diff_ids,
        history: config["history"].as_array().cloned().unwrap_or_default(),
        config: settings,
    })
}

/// The base's settings with the given options in their place; `env` replaces by key.
fn merge_settings(base: ImageConfig, opts: &ImportOptions) -> ImageConfig {
    let mut env = base.env;
    for kv in &opts.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|old| old.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    ImageConfig {
        entrypoint: opts.entrypoint.clone().unwrap_or(base.entrypoint),
        cmd: opts.cmd.clone().unwrap_or(base.cmd),
        env,
        working_dir: opts.working_dir.clone().unwrap_or(base.working_dir),
        user: opts.user.clone().unwrap_or(base.user),
    }
}

/// One file system object to archive.
struct Item {
    rel: String,
    abs: PathBuf,
    meta: Metadata,
}

/// Imports `rootfs` as a one-layer image (or a layer on top of `opts.base`) tagged `tag` into
/// the OCI layout `layout_dir`
/// (created if needed; an existing image with the same tag is replaced in `index.json`, others
/// are kept). Returns the manifest digest. Every file is written to a temporary file and
/// renamed. Concurrent imports into the same layout may lose one's `index.json` update.
pub fn import_rootfs(rootfs: &Path, layout_dir: &Path, tag: &str, opts: &ImportOptions) -> Result<String> {
    validate_tag(tag)?;
    if !rootfs.is_dir() {
        bail!("{}: not a directory (give the root filesystem to import)", rootfs.display());
    }
    let epoch = match opts.source_date_epoch {
        Some(e) => Some(e),
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
            ),
            Err(_) => None,
        },
    };
    fs::create_dir_all(layout_dir).with_context(|| format!("creating {}", layout_dir.display()))?;
    let root_abs = fs::canonicalize(rootfs)?;
    let layout_abs = fs::canonicalize(layout_dir)?;
    if layout_abs.starts_with(&root_abs) {
        bail!(
            "the output {} is inside the imported directory {}: choose another output",
            layout_dir.display(),
            rootfs.display()
        );
    }

    let mut items = Vec::new();
    collect(rootfs, "", &mut items)?;
    items.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));

    let base = match &opts.base {
        Some(tag) => read_base(layout_dir, tag)?,
        None => Base::default(),
    };
    let cache = BlobCache::new(layout_dir.to_path_buf());
    let (layer_digest, layer_size, diff_id) = write_layer(&cache, &items, epoch.unwrap_or(0))?;

    let image_config = merge_settings(base.config, opts);
    let mut diff_ids = base.diff_ids;
    diff_ids.push(json!(diff_id));
    let mut config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let mut history = json!({ "created_by": "berth image import" });
    if let Some(epoch) = epoch {
        let created = rfc3339(epoch);
        config["created"] = json!(created);
        history["created"] = json!(created);
    }
    let mut histories = base.history;
    histories.push(history);
    config["history"] = json!(histories);
    let config_bytes = serde_json::to_vec(&config)?;
    let (config_digest, _, config_size) = cache.insert_computing(config_bytes.as_slice())?;

    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
        config: descriptor(MEDIA_OCI_CONFIG, config_digest, config_size),
        layers: base
            .layers
            .into_iter()
            .chain([descriptor(MEDIA_OCI_LAYER_GZIP, layer_digest, layer_size)])
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let (manifest_digest, _, manifest_size) = cache.insert_computing(manifest_bytes.as_slice())?;

    write_oci_layout(layout_dir)?;
    update_index(layout_dir, tag, &manifest_digest, manifest_size)?;
    Ok(manifest_digest)
}

fn descriptor(media_type: &str, digest: String, size: u64) -> Descriptor {
    Descriptor { media_type: media_type.to_string(), digest, size, platform: None, annotations: None }
}

/// Tags must be addressable as `oci:DIR:TAG`: Docker's tag grammar.
fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if !ok {
        bail!("invalid tag {tag:?}: use letters, digits, `_`, `.` and `-` (at most 128, not starting with `.` or `-`)");
    }
    Ok(())
}

/// Collects everything under `dir` (relative names under `prefix`), without following symlinks.
fn collect(dir: &Path, prefix: &str, items: &mut Vec<Item>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let abs = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!("{}: the name is not UTF-8", abs.display());
        };
        let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let meta = fs::symlink_metadata(&abs).with_context(|| format!("{}", abs.display()))?;
        let is_dir = meta.is_dir();
        items.push(Item { rel: rel.clone(), abs: abs.clone(), meta });
        if is_dir {
            collect(&abs, &rel, items)?;
        }
    }
    Ok(())
}

/// Writes the gzip tar layer into the layout's blobs; returns `(digest, size, diff_id)`.
fn write_layer(cache: &BlobCache, items: &[Item], mtime: u64) -> Result<(String, u64, String)> {
    let blob = cache.writer()?;
    // The builder's defaults: no file name, mtime 0; fix the OS byte explicitly too.
    let gzip = flate2::GzBuilder::new().operating_system(255).write(blob, flate2::Compression::default());
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));
    let mut first_link: HashMap<(u64, u64), String> = HashMap::new();
    for item in items {
        append(&mut tar, item, mtime, &mut first_link)
            .with_context(|| format!("archiving {}", item.abs.display()))?;
    }
    let hashing = tar.into_inner()?;
    let (gzip, diff_id, _) = hashing.finish();
    let blob = gzip.finish()?;
    let (digest, _, size) = blob.commit(None)?;
    Ok((digest, size, diff_id))
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    item: &Item,
    mtime: u64,
    first_link: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    let meta = &item.meta;
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(mtime);
    header.set_size(0);
    let file_type = meta.file_type();
    if !file_type.is_dir() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = first_link.get(&key) {
            header.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut header, &item.rel, first)?;
            return Ok(());
        }
        first_link.insert(key, item.rel.clone());
    }
    if file_type.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        tar.append_data(&mut header, &item.rel, io::empty())?;
    } else if file_type.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = File::open(&item.abs)?;
        let reader = ExactReader { inner: file.take(meta.len()), remaining: meta.len() };
        tar.append_data(&mut header, &item.rel, reader)?;
    } else if file_type.is_symlink() {
        header.set_entry_type(tar::EntryType::Symlink);
        let target = fs::read_link(&item.abs)?;
        tar.append_link(&mut header, &item.rel, target)?;
    } else if file_type.is_char_device() || file_type.is_block_device() {
        header.set_entry_type(if file_type.is_char_device() {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        });
        let (major, minor) = split_dev(meta.rdev());
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
        tar.append_data(&mut header, &item.rel, io::empty())?;
    } else if file_type.is_fifo() {
        header.set_entry_type(tar::EntryType::Fifo);
        tar.append_data(&mut header, &item.rel, io::empty())?;
    } else {
        log::warn!("{}: skipping a socket", item.abs.display());
    }
    Ok(())
}

/// Linux's `major()` / `minor()` of a `dev_t`.
fn split_dev(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// Reads exactly the size announced in the tar header, or fails (a file that shrank while
/// archived would otherwise corrupt the archive).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let mut perms = tmp.as_file().metadata()?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file().set_permissions(perms)?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_oci_layout(layout_dir: &Path) -> Result<()> {
    let path = layout_dir.join("oci-layout");
    if path.exists() {
        let existing: OciLayoutFile = serde_json::from_slice(&fs::read(&path)?)
            .with_context(|| format!("{}: not an oci-layout file", path.display()))?;
        if !existing.image_layout_version.starts_with("1.") {
            bail!("{}: unsupported imageLayoutVersion {:?}", path.display(), existing.image_layout_version);
        }
        return Ok(());
    }
    write_atomic(&path, br#"{"imageLayoutVersion":"1.0.0"}"#)
}

/// Adds (or replaces, in place) the `index.json` entry annotated with `tag`.
fn update_index(layout_dir: &Path, tag: &str, digest: &str, size: u64) -> Result<()> {
    let path = layout_dir.join("index.json");
    let mut index: Value = if path.exists() {
        serde_json::from_slice(&fs::read(&path)?)
            .with_context(|| format!("{}: invalid JSON", path.display()))?
    } else {
        json!({ "schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [] })
    };
    let entry = json!({
        "mediaType": MEDIA_OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "annotations": { REF_NAME_ANNOTATION: tag },
    });
    let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
        bail!("{}: no `manifests` array", path.display());
    };
    let has_tag = |m: &Value| m["annotations"][REF_NAME_ANNOTATION].as_str() == Some(tag);
    match manifests.iter().position(has_tag) {
        Some(i) => {
            manifests[i] = entry;
            let mut n = 0;
            manifests.retain(|m| {
                n += 1;
                n - 1 == i || !has_tag(m)
            });
        }
        None => manifests.push(entry),
    }
    write_atomic(&path, &serde_json::to_vec(&index)?)
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let (year, month, day, hour, minute, second) = berth_runtime::civil_time::utc_civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn tags() {
        assert!(validate_tag("1.4").is_ok());
        assert!(validate_tag("latest").is_ok());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_tag("a:b").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_tag(".x").is_err());
    }

    #[test]
    fn devices() {
        // glibc's makedev().
        fn makedev(major: u64, minor: u64) -> u64 {
            (major & 0xfff) << 8 | (major & !0xfff) << 32 | (minor & 0xff) | (minor & !0xff) << 12
        }
        assert_eq!(split_dev(0x103), (1, 3));
        assert_eq!(split_dev(makedev(5000, 70_000)), (5000, 70_000));
    }
}
