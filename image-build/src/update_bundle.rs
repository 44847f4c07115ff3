//! `berth build --format update`: the update bundle, one system slot as an OCI image layout
//! (`update/`: `oci-layout`, `index.json`, `blobs/sha256/…`) whose manifest is a berth update
//! artifact ([`berth_schema::update`]): the disk's UKI, the system partition's index and each
//! of its pieces as a blob; with `--sign-key`, the config (which names the UKI's and the
//! index's digests) signed in a manifest annotation. `berth update push` sends it to a registry; [`open`] reads it back,
//! checking every blob against its digest and the index against the manifest.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_schema::system_partition::Index;
use berth_schema::update::{
    Bundle, Descriptor, Manifest, UpdateConfig, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE, PIECE_MEDIA_TYPE, SIGNATURE_ANNOTATION, UKI_MEDIA_TYPE,
};
use berth_schema::verity::VeritySpec;

use crate::blobs::{sha256_bytes, sha256_file};
use crate::layout::{blob_path, index_entries, put_bytes as put, write_index};

/// The bundle's directory in the build's output.
pub const DIR: &str = "update";

/// What goes into a bundle.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// The disk's UKI (signed when the build signs).
    pub uki: &'a Path,
    /// The system partition image: index, pieces, hash tree.
    pub partition: &'a Path,
    /// Its index.
    pub index: &'a Index,
    /// Its verity parameters.
    pub spec: &'a VeritySpec,
    /// The kernel release.
    pub kernel: &'a str,
    /// `SOURCE_DATE_EPOCH`.
    pub created: u64,
    /// Signs the config ([`berth_schema::update::SIGNATURE_ANNOTATION`]) when given.
    pub signing: Option<&'a crate::signing::SigningKey>,
}

/// Writes the bundle of `slot` into `out` (a new directory).
pub fn write(out: &Path, slot: &Slot<'_>) -> Result<()> {
    fs::create_dir_all(out.join("blobs/sha256"))?;
    let digest = sha256_file(slot.uki).map_err(|e| anyhow!("{e}"))?;
    fs::copy(slot.uki, blob_path(out, &digest))?;
    let uki = Descriptor { media_type: UKI_MEDIA_TYPE.into(), digest, size: fs::metadata(slot.uki)?.len() };
    let mut partition = fs::File::open(slot.partition)?;
    let mut read = |offset: u64, bytes: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(bytes)?];
        partition.seek(SeekFrom::Start(offset))?;
        partition.read_exact(&mut buf)?;
        Ok(buf)
    };
    let first = slot.index.pieces.first().context("internal: an index lists the base")?;
    let mut layers = vec![uki, put(out, INDEX_MEDIA_TYPE, &read(0, first.offset)?)?];
    for piece in &slot.index.pieces {
        let d = put(out, PIECE_MEDIA_TYPE, &read(piece.offset, piece.bytes)?)?;
        if d.digest != piece.digest {
            bail!("internal: piece `{}` does not have the digest its index says", piece.path);
        }
        layers.push(d);
    }
    let config = UpdateConfig {
        verity: slot.spec.to_string(),
        kernel: slot.kernel.into(),
        created: slot.created,
        uki: layers[0].digest.clone(),
        index: layers[1].digest.clone(),
    };
    let config_bytes = serde_json::to_vec(&config)?;
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(key) = slot.signing {
        use base64::Engine as _;
        let signature = key.sign_bytes(&config_bytes)?;
        annotations.insert(
            SIGNATURE_ANNOTATION.to_string(),
            base64::engine::general_purpose::STANDARD.encode(signature),
        );
    }
    let config = put(out, CONFIG_MEDIA_TYPE, &config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        artifact_type: ARTIFACT_TYPE.into(),
        config,
        layers,
        annotations,
    };
    let manifest = put(out, MANIFEST_MEDIA_TYPE, &serde_json::to_vec(&manifest)?)?;
    write_index(out, &[(&manifest, "latest", Some(ARTIFACT_TYPE))])
}

/// A bundle read back from its layout, every blob checked.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The layout's directory.
    pub dir: PathBuf,
    /// The manifest's bytes and digest.
    pub manifest: (Vec<u8>, String),
    /// The typed manifest.
    pub bundle: Bundle,
    /// The system partition's index, from its blob.
    pub index: Index,
}

impl Opened {
    /// Where blob `digest` is.
    pub fn blob(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    /// Every blob of the bundle: the config, then the layers.
    pub fn descriptors(&self) -> Result<Vec<Descriptor>> {
        let m: Manifest = serde_json::from_slice(&self.manifest.0)?;
        Ok(std::iter::once(m.config).chain(m.layers).collect())
    }

    /// The bundle as an image of its layout, to push.
    pub fn layout_image(&self) -> Result<crate::layout::LayoutImage> {
        Ok(crate::layout::LayoutImage {
            dir: self.dir.clone(),
            manifest: self.manifest.0.clone(),
            digest: self.manifest.1.clone(),
            media_type: MANIFEST_MEDIA_TYPE.into(),
            blobs: self.descriptors()?,
        })
    }
}

/// Reads the bundle at `dir` (an OCI layout with one berth update manifest), checking each
/// blob's size and digest, the manifest's shape and the index against it.
pub fn open(dir: &Path) -> Result<Opened> {
    let shown = dir.display();
    let manifests = index_entries(dir)?;
    let [entry] = manifests.as_slice() else {
        bail!("{shown}/index.json lists {} manifests; an update bundle has one", manifests.len());
    };
    let digest = entry["digest"].as_str().unwrap_or_default().to_string();
    let read = |digest: &str, size: Option<u64>| -> Result<Vec<u8>> {
        if !berth_schema::update::valid_digest(digest) {
            bail!("{shown}: `{digest}` is not a sha256 digest");
        }
        let bytes = fs::read(blob_path(dir, digest)).with_context(|| format!("{shown}: blob {digest}"))?;
        if sha256_bytes(&bytes) != digest || size.is_some_and(|s| s != bytes.len() as u64) {
            bail!("{shown}: blob {digest} does not match its digest or size: the bundle was changed");
        }
        Ok(bytes)
    };
    let manifest = read(&digest, entry["size"].as_u64())?;
    let m: Manifest = serde_json::from_slice(&manifest).with_context(|| format!("{shown}: the manifest"))?;
    let config = read(&m.config.digest, Some(m.config.size))?;
    let bundle = Manifest::check(&manifest, &config).map_err(|e| anyhow!("{shown}: {e}"))?;
    let header = read(&bundle.index.digest, Some(bundle.index.size))?;
    let index = Index::decode(&header).map_err(|e| anyhow!("{shown}: {e}"))?;
    bundle.check_index(&index).map_err(|e| anyhow!("{shown}: {e}"))?;
    for d in std::iter::once(&bundle.uki).chain(&bundle.pieces) {
        let got = sha256_file(&blob_path(dir, &d.digest))
            .map_err(|e| anyhow!("{shown}: blob {}: {e}", d.digest))?;
        let size = fs::metadata(blob_path(dir, &d.digest))?.len();
        if got != d.digest || size != d.size {
            bail!("{shown}: blob {} does not match its digest or size: the bundle was changed", d.digest);
        }
    }
    Ok(Opened { dir: dir.to_path_buf(), manifest: (manifest, digest), bundle, index })
}
