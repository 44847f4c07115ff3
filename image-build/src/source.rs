//! Resolving an [`ImageRef`] to verified blobs in the [`BlobCache`]: the seam between "where an
//! image comes from" (OCI layout directory, `docker save` archive, later a registry) and the
//! build, which only ever reads plain, verified files from the cache.
//!
//! Every blob read is checked against its digest (and size, where a descriptor gives one) while
//! it is copied into the cache, so the paths in a [`ResolvedImage`] are immutable,
//! content-addressed files.

mod docker_archive;
mod oci_layout;
pub mod spec;

use std::io;
use std::path::PathBuf;

use crate::blobs::{BlobCache, BlobError};
use crate::image_config::{ConfigFile, ImageConfig};
use crate::reference::ImageRef;
use crate::registry::PullOptions;

pub use spec::Compression;
use spec::{Descriptor, Index};

/// An image whose manifest, configuration and layers were verified and stored in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Digest of the image manifest: for an OCI layout the platform-specific manifest (after
    /// following a multi-platform index); for a docker archive the OCI manifest berth
    /// synthesizes from the archive (see [`resolve`]). Either way the manifest is in the cache.
    pub manifest_digest: String,
    /// Digest of the image configuration JSON (Docker's "image ID"); the file is in the cache.
    pub config_digest: String,
    /// The process defaults of the image.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerBlob>,
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    /// Digest of the uncompressed tar, from the image configuration's `rootfs.diff_ids`.
    /// `layer::scan_layer` and `layer::for_each_entry` verify it while reading.
    pub diff_id: Option<String>,
    /// How the blob is compressed (from its media type, or sniffed for docker archives).
    pub compression: Compression,
    /// The verified file in the blob cache.
    pub path: PathBuf,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// Why an image could not be resolved. Messages name the reference, the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An `oci:` directory does not exist.
    #[error("{reference}: no such directory (build it with `berth image import ROOTFS --tag NAME -o {}`, or `skopeo copy docker://IMAGE oci:{}:TAG`)", dir.display(), dir.display())]
    NoSuchDirectory {
        /// The reference as resolved.
        reference: String,
        /// The missing directory.
        dir: PathBuf,
    },
    /// A `docker-archive:` file does not exist.
    #[error("{reference}: no such file (create it with `docker save IMAGE -o {}` or `podman save IMAGE -o {}`)", file.display(), file.display())]
    NoSuchFile {
        /// The reference as resolved.
        reference: String,
        /// The missing file.
        file: PathBuf,
    },
    /// A directory is not an OCI image layout.
    #[error("{reference}: {} is not an OCI image layout: {reason} (create one with `berth image import` or `skopeo copy … oci:DIR:TAG`)", dir.display())]
    NotOciLayout {
        /// The reference as resolved.
        reference: String,
        /// The directory.
        dir: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// No manifest carries the requested tag.
    #[error("{reference}: no image tagged {tag:?} in {}; available tags: {}", index.display(), list(available))]
    TagNotFound {
        /// The reference as resolved.
        reference: String,
        /// The `index.json` searched.
        index: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags present.
        available: Vec<String>,
    },
    /// No tag was given and the layout holds several images.
    #[error("{reference}: {} holds {count} images; pick one with `oci:DIR:TAG` (available tags: {})", index.display(), list(available))]
    AmbiguousImage {
        /// The reference as resolved.
        reference: String,
        /// The `index.json`.
        index: PathBuf,
        /// How many manifests it lists.
        count: usize,
        /// The tags present.
        available: Vec<String>,
    },
    /// A multi-platform index has no linux/amd64 image.
    #[error("{reference}: the image index {digest} has no linux/amd64 image (berth guests are linux/amd64); it has: {}", list(available))]
    NoMatchingPlatform {
        /// The reference as resolved.
        reference: String,
        /// The index digest.
        digest: String,
        /// The platforms present.
        available: Vec<String>,
    },
    /// A blob named by a descriptor is not in the layout.
    #[error("{reference}: {what} {digest} is missing: {} does not exist (the image is incomplete; re-create or re-copy it)", path.display())]
    BlobMissing {
        /// The reference as resolved.
        reference: String,
        /// Which blob (`manifest`, `config`, `layer 2`, …).
        what: String,
        /// Its digest.
        digest: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// A blob's content does not match its digest or size, or its digest is invalid.
    #[error("{reference}: {what} {digest} in {location}: {source}")]
    BadBlob {
        /// The reference as resolved.
        reference: String,
        /// Which blob (`manifest`, `config`, `layer 2`, …).
        what: String,
        /// The expected digest.
        digest: String,
        /// The file (or `ARCHIVE!MEMBER`) read.
        location: String,
        /// The mismatch.
        #[source]
        source: Box<BlobError>,
    },
    /// A JSON document could not be parsed.
    #[error("{reference}: {location}: invalid JSON: {source}")]
    Json {
        /// The reference as resolved.
        reference: String,
        /// The file (or `ARCHIVE!MEMBER`).
        location: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The image is well-formed but not something berth can run, or malformed otherwise.
    #[error("{reference}: {message}")]
    Invalid {
        /// The reference as resolved.
        reference: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// Talking to a registry failed (unreachable, refused credentials, missing manifest, …).
    #[error("{reference}: {message}")]
    Registry {
        /// The registry reference.
        reference: String,
        /// What failed, with the URL and what to do.
        message: String,
    },
    /// Reading the image failed.
    #[error("{reference}: {location}: {source}")]
    Io {
        /// The reference as resolved.
        reference: String,
        /// The file (or `ARCHIVE!MEMBER`).
        location: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing to the blob cache failed.
    #[error("{reference}: blob cache: {source}")]
    Cache {
        /// The reference as resolved.
        reference: String,
        /// The error.
        #[source]
        source: Box<BlobError>,
    },
}

/// Formats a list for an error message.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

/// Resolves an image reference: reads it, verifies every blob and copies manifest,
/// configuration and layers into `cache`.
///
/// - `oci:DIR[:TAG]`: the manifest annotated `org.opencontainers.image.ref.name=TAG` in
///   `DIR/index.json` (no tag: the only one), following a nested index to its linux/amd64
///   image. Every blob is checked against its descriptor's digest and size.
/// - `docker-archive:FILE`: the single image of `manifest.json` (the archive may itself be
///   gzip- or zstd-compressed). Each layer is checked against the configuration's
///   `rootfs.diff_ids`, the configuration and `blobs/sha256/<hex>` members against their names.
///   `manifest_digest` is the digest of the canonical OCI manifest berth synthesizes (compact
///   JSON: OCI media types, the config and layers as stored in the cache), which is also stored
///   in the cache; the same archive always gives the same digest.
/// - a registry reference: pulled (see [`crate::registry`]) with the insecure registries of
///   `$BERTH_INSECURE_REGISTRIES`; [`resolve_with`] takes more options.
pub fn resolve(image: &ImageRef, cache: &BlobCache) -> Result<ResolvedImage, ImageError> {
    resolve_with(image, cache, &PullOptions::with_env(&[]), None)
}

/// [`resolve`] with the registry options, and for a registry reference by tag the manifest
/// digest `pinned` by the lock file (fetched instead of the tag).
pub fn resolve_with(
    image: &ImageRef,
    cache: &BlobCache,
    pull: &PullOptions,
    pinned: Option<&str>,
) -> Result<ResolvedImage, ImageError> {
    let reference = image.to_string();
    match image {
        ImageRef::OciLayout { dir, tag } => oci_layout::resolve(&reference, dir, tag.as_deref(), cache),
        ImageRef::DockerArchive { file } => docker_archive::resolve(&reference, file, cache),
        // A registry client will plug in here: fetch the manifest and blobs over HTTP into
        // `cache`, verifying digests with `BlobCache::insert_verified`, then build the same
        // `ResolvedImage`.
        ImageRef::Registry { parsed, .. } => crate::registry::pull(parsed, &reference, pinned, cache, pull),
    }
}

/// Checks the configuration's platform and diff id count; shared by the sources.
pub(crate) fn check_config(
    reference: &str,
    config: &ConfigFile,
    layer_count: usize,
) -> Result<(), ImageError> {
    let invalid = |message: String| ImageError::Invalid { reference: reference.to_string(), message };
    if let Some(os) = config.os.as_deref().filter(|s| !s.is_empty()) {
        if os != "linux" {
            return Err(invalid(format!("the image is for os {os:?}; berth runs linux/amd64 images")));
        }
    }
    if let Some(arch) = config.architecture.as_deref().filter(|s| !s.is_empty()) {
        if arch != "amd64" {
            return Err(invalid(format!(
                "the image is for architecture {arch:?}; berth runs linux/amd64 images (pick the amd64 variant when copying it)"
            )));
        }
    }
    if config.rootfs.diff_ids.len() != layer_count {
        return Err(invalid(format!(
            "the manifest lists {layer_count} layers but the configuration's rootfs.diff_ids has {}; the image is malformed",
            config.rootfs.diff_ids.len()
        )));
    }
    for (i, diff_id) in config.rootfs.diff_ids.iter().enumerate() {
        crate::blobs::validate_digest(diff_id).map_err(|e| invalid(format!("rootfs.diff_ids[{i}]: {e}")))?;
    }
    Ok(())
}

/// Picks the linux/amd64 entry of an image index (`digest` names it in the error).
pub(crate) fn select_platform(
    reference: &str,
    digest: &str,
    index: &Index,
) -> Result<Descriptor, ImageError> {
    let found = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"));
    match found {
        Some(d) => Ok(d.clone()),
        None => Err(ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            digest: digest.to_string(),
            available: index
                .manifests
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    },
                    None => format!("{} (no platform)", d.digest),
                })
                .collect(),
        }),
    }
}
