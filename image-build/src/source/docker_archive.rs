//! Reading an image from a `docker save` / `podman save` tarball (`docker-archive:FILE`).
//!
//! The archive is indexed once (member name → offset, size or link target), then members are
//! read by seeking, so `manifest.json` may come anywhere. An archive that is itself gzip- or
//! zstd-compressed is first decompressed into a temporary file in the cache directory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use super::spec::{Compression, Descriptor, Manifest, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST};
use super::{check_config, ImageError, LayerBlob, ResolvedImage};
use crate::blobs::{sha256_bytes, sha256_reader, validate_digest, BlobCache, BlobError};
use crate::image_config::ConfigFile;

/// Largest JSON member (manifest.json, configuration) berth reads into memory.
const MAX_JSON_SIZE: u64 = 64 << 20;

/// How many symlinks in a row berth follows inside an archive.
const MAX_LINKS: usize = 8;

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
struct ArchiveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// What an archive member is.
#[derive(Debug, Clone)]
enum Member {
    /// A regular file: where its data starts and how long it is.
    File { offset: u64, size: u64 },
    /// A symlink (already resolved to an archive path) or hard link.
    Link(String),
}

/// An indexed archive.
struct Archive<'a> {
    reference: &'a str,
    name: String,
    file: File,
    members: HashMap<String, Member>,
}

/// See [`super::resolve`].
pub(super) fn resolve(reference: &str, path: &Path, cache: &BlobCache) -> Result<ResolvedImage, ImageError> {
    if !path.exists() {
        return Err(ImageError::NoSuchFile { reference: reference.to_string(), file: path.to_path_buf() });
    }
    let archive = Archive::open(reference, path, cache)?;

    let manifests: Vec<ArchiveManifest> =
        archive.parse_json("manifest.json", &archive.read_json("manifest.json")?)?;
    let entry = match manifests.as_slice() {
        [only] => only,
        [] => return Err(archive.invalid("manifest.json lists no images".to_string())),
        many => {
            let tags: Vec<String> =
                many.iter().flat_map(|m| m.repo_tags.clone().unwrap_or_default()).collect();
            return Err(archive.invalid(format!(
                "the archive holds {} images ({}); berth reads archives of one image: `docker save` only the one you need",
                many.len(),
                tags.join(", ")
            )));
        }
    };

    // The configuration: digest of its bytes, checked against its name when that is a digest.
    let config_bytes = archive.read_json(&entry.config)?;
    let config_digest = sha256_bytes(&config_bytes);
    if let Some(expected) = digest_from_name(&entry.config) {
        if expected != config_digest {
            return Err(archive.bad(
                "config",
                &expected,
                &entry.config,
                BlobError::DigestMismatch { expected: expected.clone(), actual: config_digest },
            ));
        }
    }
    let config: ConfigFile = archive.parse_json(&entry.config, &config_bytes)?;
    check_config(reference, &config, entry.layers.len())?;
    cache
        .insert_from_reader(&config_digest, config_bytes.as_slice())
        .map_err(|source| archive.cache_error(source))?;

    let mut layers = Vec::with_capacity(entry.layers.len());
    for (i, (member, diff_id)) in entry.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        layers.push(archive.copy_layer(cache, i + 1, member, diff_id)?);
    }

    // A canonical OCI manifest for what is now in the cache; its digest names the image.
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
        config: Descriptor {
            media_type: MEDIA_OCI_CONFIG.to_string(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: None,
        },
        layers: layers
            .iter()
            .map(|l: &LayerBlob| Descriptor {
                media_type: l.compression.oci_media_type().to_string(),
                digest: l.digest.clone(),
                size: l.size,
                platform: None,
                annotations: None,
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Invalid {
        reference: reference.to_string(),
        message: format!("cannot serialize the synthesized manifest: {e}"),
    })?;
    let manifest_digest = sha256_bytes(&manifest_bytes);
    cache
        .insert_from_reader(&manifest_digest, manifest_bytes.as_slice())
        .map_err(|source| archive.cache_error(source))?;

    Ok(ResolvedImage { manifest_digest, config_digest, config: config.config, layers })
}

/// The digest a member name implies: `<64 hex>.json` or `blobs/sha256/<64 hex>`.
/// (`<hex>/layer.tar` names a legacy layer id, not a digest.)
fn digest_from_name(name: &str) -> Option<String> {
    let hex = name.strip_prefix("blobs/sha256/").or_else(|| name.strip_suffix(".json"))?;
    let digest = format!("sha256:{hex}");
    validate_digest(&digest).ok()?;
    Some(digest)
}

/// Normalizes an archive member name: no leading `./` or `/`, no trailing `/`, no `.`
/// components; `None` if it climbs out with `..`.
fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

impl<'a> Archive<'a> {
    fn open(reference: &'a str, path: &Path, cache: &BlobCache) -> Result<Self, ImageError> {
        let name = path.display().to_string();
        let io_err =
            |source| ImageError::Io { reference: reference.to_string(), location: name.clone(), source };
        let mut file = File::open(path).map_err(io_err)?;
        let mut head = [0u8; 4];
        let n = read_head(&mut file, &mut head).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let file = match Compression::sniff(&head[..n]) {
            Compression::None => file,
            compression => {
                // `docker save | gzip`: decompress once into an anonymous temporary file.
                let tmp_dir = cache.root().join("tmp");
                fs::create_dir_all(&tmp_dir).map_err(|source| ImageError::Io {
                    reference: reference.to_string(),
                    location: tmp_dir.display().to_string(),
                    source,
                })?;
                let mut tmp = tempfile::tempfile_in(&tmp_dir).map_err(|source| ImageError::Io {
                    reference: reference.to_string(),
                    location: tmp_dir.display().to_string(),
                    source,
                })?;
                let mut reader = crate::layer::decompress(compression, file).map_err(io_err)?;
                io::copy(&mut reader, &mut tmp).map_err(io_err)?;
                tmp.seek(SeekFrom::Start(0)).map_err(io_err)?;
                tmp
            }
        };
        let mut archive = Archive { reference, name, file, members: HashMap::new() };
        archive.index().map_err(|source| ImageError::Io {
            reference: reference.to_string(),
            location: format!("{} (reading the tar archive)", archive.name),
            source,
        })?;
        if !archive.members.contains_key("manifest.json") {
            let hint = if archive.members.contains_key("index.json") {
                "it looks like an OCI archive: unpack it (`mkdir DIR && tar -xf FILE -C DIR`) and use oci:DIR:TAG"
            } else if archive.members.contains_key("repositories") {
                "it is in the pre-1.10 `docker save` format: save it again with a current docker or podman"
            } else {
                "it is not a `docker save` archive"
            };
            return Err(archive.invalid(format!("{} has no manifest.json: {hint}", archive.name)));
        }
        Ok(archive)
    }

    /// Records every member's position (later duplicates win, as when extracting).
    fn index(&mut self) -> io::Result<()> {
        let mut tar = tar::Archive::new(&self.file);
        for entry in tar.entries_with_seek()? {
            let entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normalize(&raw) else {
                continue;
            };
            let member = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    Member::File { offset: entry.raw_file_position(), size: entry.size() }
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let joined = if target.starts_with('/') {
                        target
                    } else {
                        match path.rsplit_once('/') {
                            Some((parent, _)) => format!("{parent}/{target}"),
                            None => target,
                        }
                    };
                    match normalize(&joined) {
                        Some(t) => Member::Link(t),
                        None => continue,
                    }
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    match normalize(&target) {
                        Some(t) => Member::Link(t),
                        None => continue,
                    }
                }
                _ => continue,
            };
            self.members.insert(path, member);
        }
        Ok(())
    }

    fn location(&self, member: &str) -> String {
        format!("{}!{member}", self.name)
    }

    fn invalid(&self, message: String) -> ImageError {
        ImageError::Invalid { reference: self.reference.to_string(), message }
    }

    fn cache_error(&self, source: BlobError) -> ImageError {
        ImageError::Cache { reference: self.reference.to_string(), source: Box::new(source) }
    }

    fn bad(&self, what: &str, digest: &str, member: &str, source: BlobError) -> ImageError {
        ImageError::BadBlob {
            reference: self.reference.to_string(),
            what: what.to_string(),
            digest: digest.to_string(),
            location: self.location(member),
            source: Box::new(source),
        }
    }

    fn io(&self, member: &str, source: io::Error) -> ImageError {
        ImageError::Io { reference: self.reference.to_string(), location: self.location(member), source }
    }

    /// Where a member's data is: `(offset, size)`, following links.
    fn find(&self, member: &str) -> Result<(u64, u64), ImageError> {
        let mut name = normalize(member).unwrap_or_default();
        for _ in 0..MAX_LINKS {
            match self.members.get(&name) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => name = target.clone(),
                None => {
                    return Err(self.invalid(format!(
                        "{} has no member {member:?} (named by manifest.json); the archive is incomplete",
                        self.name
                    )))
                }
            }
        }
        Err(self.invalid(format!("{}: member {member:?}: too many levels of links", self.name)))
    }

    /// A reader for a member's data.
    fn open_member(&self, member: &str) -> Result<(io::Take<&File>, u64), ImageError> {
        let (offset, size) = self.find(member)?;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset)).map_err(|e| self.io(member, e))?;
        Ok((file.take(size), size))
    }

    fn read_json(&self, member: &str) -> Result<Vec<u8>, ImageError> {
        let (mut reader, size) = self.open_member(member)?;
        if size > MAX_JSON_SIZE {
            return Err(self.invalid(format!(
                "{} is {size} bytes; berth reads JSON documents up to {MAX_JSON_SIZE} bytes",
                self.location(member)
            )));
        }
        // Only a hint: the size is at most MAX_JSON_SIZE, and read_to_end grows the vector anyway.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader.read_to_end(&mut bytes).map_err(|e| self.io(member, e))?;
        Ok(bytes)
    }

    fn parse_json<T: serde::de::DeserializeOwned>(
        &self,
        member: &str,
        bytes: &[u8],
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            reference: self.reference.to_string(),
            location: self.location(member),
            source,
        })
    }

    /// Copies a layer member into the cache, verifying its uncompressed digest against
    /// `diff_id` (and its stored digest against its name for `blobs/sha256/<hex>`).
    fn copy_layer(
        &self,
        cache: &BlobCache,
        number: usize,
        member: &str,
        diff_id: &str,
    ) -> Result<LayerBlob, ImageError> {
        let what = format!("layer {number}");
        let (mut reader, _) = self.open_member(member)?;
        let mut writer = cache.writer().map_err(|e| self.cache_error(e))?;
        io::copy(&mut reader, &mut writer).map_err(|e| self.io(member, e))?;
        let temp = writer.temp_path().to_path_buf();
        let temp_err = |source| self.cache_error(BlobError::Io { path: temp.clone(), source });
        let mut head = [0u8; 4];
        let mut temp_file = File::open(&temp).map_err(temp_err)?;
        let n = read_head(&mut temp_file, &mut head).map_err(temp_err)?;
        let compression = Compression::sniff(&head[..n]);
        let stored_digest = writer.digest();
        let uncompressed_digest = match compression {
            Compression::None => stored_digest.clone(),
            _ => {
                temp_file.seek(SeekFrom::Start(0)).map_err(temp_err)?;
                let reader =
                    crate::layer::decompress(compression, temp_file).map_err(|e| self.io(member, e))?;
                sha256_reader(reader).map_err(|e| self.io(member, e))?.0
            }
        };
        if uncompressed_digest != diff_id {
            return Err(self.bad(
                &format!("{what} (diff id)"),
                diff_id,
                member,
                BlobError::DigestMismatch { expected: diff_id.to_string(), actual: uncompressed_digest },
            ));
        }
        let expected = digest_from_name(member);
        let (digest, path, size) = writer.commit(expected.as_deref()).map_err(|source| match source {
            BlobError::DigestMismatch { .. } => {
                self.bad(&what, expected.as_deref().unwrap_or(""), member, source)
            }
            other => self.cache_error(other),
        })?;
        Ok(LayerBlob { digest, diff_id: Some(diff_id.to_string()), compression, path, size })
    }
}

/// Reads up to `buf.len()` bytes from the start of a reader (fewer at end of file).
fn read_head(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let hex = "a".repeat(64);
        assert_eq!(digest_from_name(&format!("{hex}.json")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_from_name(&format!("blobs/sha256/{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_from_name(&format!("{hex}/layer.tar")), None);
        assert_eq!(digest_from_name("config.json"), None);
        assert_eq!(normalize("./a//b/./c/").as_deref(), Some("a/b/c"));
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../b"), None);
    }
}
