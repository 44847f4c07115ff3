//! Reading an image from an OCI image layout directory (`oci:DIR[:TAG]`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::spec::{
    Compression, Descriptor, Index, Manifest, OciLayoutFile, MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use super::{check_config, ImageError, LayerBlob, ResolvedImage};
use crate::blobs::{validate_digest, BlobCache};
use crate::image_config::ConfigFile;

/// How deep nested indexes may go before berth gives up (loops are impossible with content
/// addressing, but a malicious layout could still chain many).
const MAX_INDEX_DEPTH: usize = 4;

/// Largest JSON document (manifest, index, configuration) berth reads into memory.
const MAX_JSON_SIZE: u64 = 64 << 20;

/// The reader for one layout directory.
struct Layout<'a> {
    reference: &'a str,
    dir: &'a Path,
    cache: &'a BlobCache,
}

/// See [`super::resolve`].
pub(super) fn resolve(
    reference: &str,
    dir: &Path,
    tag: Option<&str>,
    cache: &BlobCache,
) -> Result<ResolvedImage, ImageError> {
    let layout = Layout { reference, dir, cache };
    if !dir.exists() {
        return Err(ImageError::NoSuchDirectory { reference: reference.to_string(), dir: dir.to_path_buf() });
    }
    if !dir.is_dir() {
        return Err(layout.not_layout("it is not a directory"));
    }
    layout.check_layout_file()?;
    let index_path = dir.join("index.json");
    if !index_path.is_file() {
        return Err(layout.not_layout("there is no index.json"));
    }
    let index: Index = layout.parse_json(&index_path, &layout.read_file(&index_path)?)?;
    let mut desc = layout.select_tagged(&index_path, &index, tag)?;

    let mut depth = 0;
    let (manifest_desc, manifest) = loop {
        let bytes = layout.fetch_json(&desc, "manifest")?;
        let location = layout.blob_location(&desc.digest);
        let value: serde_json::Value = layout.parse_json_str(&location, &bytes)?;
        let is_index = match desc.media_type.as_str() {
            MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => true,
            MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => false,
            // The media type is optional in index.json entries: look at the document.
            "" => value.get("manifests").is_some(),
            other => {
                return Err(layout.invalid(format!(
                    "manifest {} has media type {other:?}, which is not a container image",
                    desc.digest
                )))
            }
        };
        if !is_index {
            let manifest: Manifest = layout.parse_json_str(&location, &bytes)?;
            break (desc, manifest);
        }
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(layout.invalid(format!("image indexes nested more than {MAX_INDEX_DEPTH} deep")));
        }
        let nested: Index = layout.parse_json_str(&location, &bytes)?;
        desc = layout.select_platform(&desc.digest, &nested)?;
    };

    if manifest.schema_version != 2 {
        return Err(layout.invalid(format!(
            "manifest {} has schemaVersion {}, berth reads version 2",
            manifest_desc.digest, manifest.schema_version
        )));
    }
    match manifest.config.media_type.as_str() {
        MEDIA_OCI_CONFIG | MEDIA_DOCKER_CONFIG | "" => {}
        other => {
            return Err(layout.invalid(format!(
                "manifest {} has a config of media type {other:?}: it is not a container image",
                manifest_desc.digest
            )))
        }
    }
    let config_bytes = layout.fetch_json(&manifest.config, "config")?;
    let config: ConfigFile =
        layout.parse_json_str(&layout.blob_location(&manifest.config.digest), &config_bytes)?;
    check_config(reference, &config, manifest.layers.len())?;

    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, (desc, diff_id)) in manifest.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let what = format!("layer {}", i + 1);
        let compression = Compression::from_layer_media_type(&desc.media_type).ok_or_else(|| {
            layout.invalid(format!(
                "{what} {} has media type {:?}, which is not a layer berth can read (tar, tar+gzip, tar+zstd)",
                desc.digest, desc.media_type
            ))
        })?;
        if compression == Compression::None && desc.digest != *diff_id {
            return Err(layout.invalid(format!(
                "{what} is uncompressed but its digest {} differs from its diff id {diff_id}",
                desc.digest
            )));
        }
        let path = layout.fetch(desc, &what)?;
        layers.push(LayerBlob {
            digest: desc.digest.clone(),
            diff_id: Some(diff_id.clone()),
            compression,
            path,
            size: desc.size,
        });
    }
    Ok(ResolvedImage {
        manifest_digest: manifest_desc.digest,
        config_digest: manifest.config.digest,
        config: config.config,
        layers,
    })
}

impl Layout<'_> {
    fn not_layout(&self, reason: &str) -> ImageError {
        ImageError::NotOciLayout {
            reference: self.reference.to_string(),
            dir: self.dir.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    fn invalid(&self, message: String) -> ImageError {
        ImageError::Invalid { reference: self.reference.to_string(), message }
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, ImageError> {
        fs::read(path).map_err(|source| ImageError::Io {
            reference: self.reference.to_string(),
            location: path.display().to_string(),
            source,
        })
    }

    fn parse_json<T: serde::de::DeserializeOwned>(&self, path: &Path, bytes: &[u8]) -> Result<T, ImageError> {
        self.parse_json_str(&path.display().to_string(), bytes)
    }

    fn parse_json_str<T: serde::de::DeserializeOwned>(
        &self,
        location: &str,
        bytes: &[u8],
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            reference: self.reference.to_string(),
            location: location.to_string(),
            source,
        })
    }

    fn check_layout_file(&self) -> Result<(), ImageError> {
        let path = self.dir.join("oci-layout");
        if !path.is_file() {
            return Err(self.not_layout("there is no oci-layout file"));
        }
        let file: OciLayoutFile = self.parse_json(&path, &self.read_file(&path)?)?;
        if !file.image_layout_version.starts_with("1.") {
            return Err(self.not_layout(&format!(
                "unsupported imageLayoutVersion {:?} (berth reads 1.x)",
                file.image_layout_version
            )));
        }
        Ok(())
    }

    /// Picks the index entry for `tag` (or the only entry).
    fn select_tagged(
        &self,
        index_path: &Path,
        index: &Index,
        tag: Option<&str>,
    ) -> Result<Descriptor, ImageError> {
        let available: Vec<String> =
            index.manifests.iter().filter_map(|d| d.ref_name().map(str::to_string)).collect();
        match tag {
            Some(tag) => {
                index.manifests.iter().find(|d| d.ref_name() == Some(tag)).cloned().ok_or_else(|| {
                    ImageError::TagNotFound {
                        reference: self.reference.to_string(),
                        index: index_path.to_path_buf(),
                        tag: tag.to_string(),
                        available,
                    }
                })
            }
            None => match index.manifests.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(self.not_layout("index.json lists no images")),
                many => Err(ImageError::AmbiguousImage {
                    reference: self.reference.to_string(),
                    index: index_path.to_path_buf(),
                    count: many.len(),
                    available,
                }),
            },
        }
    }

    /// Picks the linux/amd64 entry of a nested index.
    fn select_platform(&self, digest: &str, index: &Index) -> Result<Descriptor, ImageError> {
        super::select_platform(self.reference, digest, index)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.dir.join("blobs").join(algorithm).join(hex)
    }

    fn blob_location(&self, digest: &str) -> String {
        self.blob_path(digest).display().to_string()
    }

    /// Verifies a blob against its descriptor while copying it into the cache; returns the
    /// cached path.
    fn fetch(&self, desc: &Descriptor, what: &str) -> Result<PathBuf, ImageError> {
        let bad = |source| ImageError::BadBlob {
            reference: self.reference.to_string(),
            what: what.to_string(),
            digest: desc.digest.clone(),
            location: self.blob_location(&desc.digest),
            source: Box::new(source),
        };
        validate_digest(&desc.digest).map_err(bad)?;
        let path = self.blob_path(&desc.digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::BlobMissing {
                    reference: self.reference.to_string(),
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    path,
                })
            }
            Err(source) => {
                return Err(ImageError::Io {
                    reference: self.reference.to_string(),
                    location: path.display().to_string(),
                    source,
                })
            }
        };
        let (cached, _) = self.cache.insert_verified(&desc.digest, Some(desc.size), file).map_err(bad)?;
        Ok(cached)
    }

    /// [`Layout::fetch`] for a JSON document, returning its bytes.
    fn fetch_json(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
        if desc.size > MAX_JSON_SIZE {
            return Err(self.invalid(format!(
                "{what} {} is {} bytes; berth reads JSON documents up to {MAX_JSON_SIZE} bytes",
                desc.digest, desc.size
            )));
        }
        let cached = self.fetch(desc, what)?;
        self.read_file(&cached)
    }
}
