//! Writing and reading OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/…`): what
//! the update bundle and the containerDisk share. Blobs are named by their digest; reading an
//! image back checks every blob against its digest and size.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_schema::update::Descriptor;

use crate::blobs::{sha256_bytes, sha256_file};

/// The index's annotation naming an image (its tag in the layout).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where blob `digest` is in the layout at `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Moves `file` into the layout's blobs under its digest.
pub fn put_file(dir: &Path, media_type: &str, file: &Path) -> Result<Descriptor> {
    let digest = sha256_file(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let size = fs::metadata(file)?.len();
    fs::rename(file, blob_path(dir, &digest))?;
    Ok(Descriptor { media_type: media_type.into(), digest, size })
}

/// Writes `bytes` as a blob of the layout.
pub fn put_bytes(dir: &Path, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let digest = sha256_bytes(bytes);
    fs::write(blob_path(dir, &digest), bytes)?;
    Ok(Descriptor { media_type: media_type.into(), digest, size: bytes.len() as u64 })
}

/// Writes `index.json` (each manifest tagged, with an `artifactType` when given) and
/// `oci-layout`.
pub fn write_index(dir: &Path, manifests: &[(&Descriptor, &str, Option<&str>)]) -> Result<()> {
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(d, tag, artifact_type)| {
            let mut e = serde_json::json!({
                "mediaType": d.media_type, "digest": d.digest, "size": d.size,
                "annotations": {REF_NAME: tag},
            });
            if let Some(t) = artifact_type {
                e["artifactType"] = (*t).into();
            }
            e
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// The manifest entries of the layout's `index.json`.
pub fn index_entries(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let shown = dir.display();
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.join("index.json"))
            .with_context(|| format!("{shown}: not an OCI layout (index.json)"))?,
    )
    .with_context(|| format!("{shown}/index.json"))?;
    Ok(index["manifests"].as_array().cloned().unwrap_or_default())
}

/// One image of an OCI layout, read back for pushing: its manifest and every blob it names,
/// each checked against its digest and size.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The layout's directory.
    pub dir: PathBuf,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The config, then the layers.
    pub blobs: Vec<Descriptor>,
}

impl LayoutImage {
    /// Where blob `digest` is.
    pub fn blob(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }
}

/// Reads the image tagged `tag` in the layout at `dir`.
pub fn open(dir: &Path, tag: &str) -> Result<LayoutImage> {
    let shown = dir.display();
    let manifests = index_entries(dir)?;
    let Some(entry) = manifests.iter().find(|m| m["annotations"][REF_NAME] == tag) else {
        let tags: Vec<&str> = manifests.iter().filter_map(|m| m["annotations"][REF_NAME].as_str()).collect();
        bail!("{shown}: no image tagged `{tag}` (the layout has {})", tags.join(", "));
    };
    let digest = entry["digest"].as_str().unwrap_or_default().to_string();
    let manifest =
        fs::read(blob_path(dir, &digest)).with_context(|| format!("{shown}: manifest {digest}"))?;
    if sha256_bytes(&manifest) != digest {
        bail!("{shown}: the manifest does not match its digest: the layout was changed");
    }
    let m: serde_json::Value = serde_json::from_slice(&manifest)?;
    let mut blobs: Vec<Descriptor> = vec![serde_json::from_value(m["config"].clone())?];
    blobs.extend(serde_json::from_value::<Vec<Descriptor>>(m["layers"].clone())?);
    for d in &blobs {
        let path = blob_path(dir, &d.digest);
        let got = sha256_file(&path).map_err(|e| anyhow::anyhow!("{shown}: blob {}: {e}", d.digest))?;
        if got != d.digest || fs::metadata(&path)?.len() != d.size {
            bail!("{shown}: blob {} does not match its digest or size: the layout was changed", d.digest);
        }
    }
    let media_type =
        m["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json").to_string();
    Ok(LayoutImage { dir: dir.to_path_buf(), manifest, digest, media_type, blobs })
}
