//! An update bundle: one system slot as an OCI artifact (`berth build --format update` writes it
//! as an OCI image layout; `berth update push` puts it in any registry), read by the machine
//! that installs it.
//!
//! The manifest's `artifactType` is [`ARTIFACT_TYPE`]; its config ([`UpdateConfig`]) carries the
//! verity parameters the UKI's command line carries; its layers are the UKI
//! ([`UKI_MEDIA_TYPE`]), the system partition's index ([`INDEX_MEDIA_TYPE`]: the header bytes as
//! they are on the partition) and one blob per piece ([`PIECE_MEDIA_TYPE`]: a squashfs, by
//! digest). A machine copies the pieces its running slot already has (same digest) and
//! downloads the rest; what it writes must hash to the config's root hash, which the signed UKI
//! carries too. Parsing here checks the shape: every blob the index names is in the manifest,
//! every digest is well formed; checking the bytes is the reader's job, as it fetches them.

use serde::{Deserialize, Serialize};

use crate::system_partition::Index;
use crate::verity::VeritySpec;

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.berth.update.v1";
/// The config blob's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.berth.update.config.v1+json";
/// The UKI's media type.
pub const UKI_MEDIA_TYPE: &str = "application/vnd.berth.uki.v1+efi";
/// The index's media type: the partition's first bytes, [`Index::encode`]d.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.berth.system.index.v1";
/// A piece's media type: one squashfs of the partition.
pub const PIECE_MEDIA_TYPE: &str = "application/vnd.berth.system.piece.v1+squashfs";
/// The manifest annotation carrying the config's signature: base64 of an RSA PKCS#1 v1.5
/// SHA-256 signature of the config blob's bytes, made with the key `berth build --sign-key`
/// signs the UKIs with. The config names the UKI's and the index's digests, and the index every
/// piece's, so the signature covers the whole slot.
pub const SIGNATURE_ANNOTATION: &str = "dev.berth.update.signature";
/// Where an image built with `--sign-key` and `[update]` carries the public key it trusts
/// updates by (PEM), in the system partition's tools: a machine with it installs only updates
/// signed with that key.
pub const TRUSTED_KEY: &str = "update-key.pem";
/// The OCI image manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Where the update state is on the EFI system partition.
pub const STATE_PATH: &str = "berth/update.json";

/// What a machine remembers about its updates, on its EFI system partition ([`STATE_PATH`]):
/// written by PID 1 when it rolls an update back, read by the updater.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateState {
    /// The root hashes (hex) of updates rolled back: never installed again.
    #[serde(default)]
    pub refused: Vec<String>,
}

/// An OCI content descriptor (the fields berth writes and reads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// The OCI image manifest of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// [`ARTIFACT_TYPE`].
    #[serde(rename = "artifactType")]
    pub artifact_type: String,
    /// The [`UpdateConfig`] blob.
    pub config: Descriptor,
    /// The UKI, the index, then the pieces in partition order.
    pub layers: Vec<Descriptor>,
    /// [`SIGNATURE_ANNOTATION`] when the bundle is signed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The config blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// `DATA_BLOCKS:ROOT_HASH:SALT`, as on the UKI's command line.
    pub verity: String,
    /// The kernel release the UKI boots.
    pub kernel: String,
    /// When it was built (`SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// The UKI's digest.
    pub uki: String,
    /// The index's digest (the index names every piece's).
    pub index: String,
}

/// A bundle's manifest, checked and typed: what to fetch and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The verity parameters of the slot it fills.
    pub spec: VeritySpec,
    /// The kernel release.
    pub kernel: String,
    /// The UKI.
    pub uki: Descriptor,
    /// The index blob.
    pub index: Descriptor,
    /// The pieces, in the index's order (the index itself is read from its blob).
    pub pieces: Vec<Descriptor>,
    /// The config's signature, base64 ([`SIGNATURE_ANNOTATION`]), when signed.
    pub signature: Option<String>,
}

/// Whether `digest` is `sha256:` and 64 lowercase hexadecimal digits.
pub fn valid_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl Manifest {
    /// Parses and checks a manifest and its config: the artifact type, the media types in
    /// order, well-formed digests.
    pub fn check(manifest: &[u8], config: &[u8]) -> Result<Bundle, String> {
        let m: Manifest =
            serde_json::from_slice(manifest).map_err(|e| format!("the update's manifest: {e}"))?;
        if m.artifact_type != ARTIFACT_TYPE || m.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(format!(
                "not a berth update: artifactType `{}`, config `{}` (want {ARTIFACT_TYPE})",
                m.artifact_type, m.config.media_type
            ));
        }
        let c: UpdateConfig =
            serde_json::from_slice(config).map_err(|e| format!("the update's config: {e}"))?;
        let spec = VeritySpec::parse(&c.verity)?;
        if let Some(bad) = std::iter::once(&m.config).chain(&m.layers).find(|d| !valid_digest(&d.digest)) {
            return Err(format!("the update's manifest: `{}` is not a sha256 digest", bad.digest));
        }
        let [uki, index, pieces @ ..] = m.layers.as_slice() else {
            return Err("the update's manifest lists fewer than the UKI and the index".into());
        };
        if uki.media_type != UKI_MEDIA_TYPE || index.media_type != INDEX_MEDIA_TYPE {
            return Err(format!(
                "the update's manifest: the first layers must be the UKI ({UKI_MEDIA_TYPE}) and the index ({INDEX_MEDIA_TYPE})"
            ));
        }
        if let Some(p) = pieces.iter().find(|p| p.media_type != PIECE_MEDIA_TYPE) {
            return Err(format!(
                "the update's manifest: layer {} is not a piece ({})",
                p.digest, p.media_type
            ));
        }
        if c.uki != uki.digest || c.index != index.digest {
            return Err("the update's config names another UKI or index than its manifest: refused".into());
        }
        Ok(Bundle {
            spec,
            kernel: c.kernel,
            uki: uki.clone(),
            index: index.clone(),
            pieces: pieces.to_vec(),
            signature: m.annotations.get(SIGNATURE_ANNOTATION).cloned(),
        })
    }
}

impl Bundle {
    /// Checks the index read from its blob against the manifest: the same pieces, sizes and
    /// digests, in order, and the hash tree right after the last one.
    pub fn check_index(&self, index: &Index) -> Result<(), String> {
        if index.pieces.len() != self.pieces.len() {
            return Err(format!(
                "the update's index lists {} pieces, its manifest {}",
                index.pieces.len(),
                self.pieces.len()
            ));
        }
        for (p, d) in index.pieces.iter().zip(&self.pieces) {
            if p.digest != d.digest || p.bytes != d.size {
                return Err(format!("the update's index and manifest disagree on piece `{}`", p.path));
            }
        }
        let data = self.spec.data_blocks * crate::verity::BLOCK_SIZE;
        if index.data_bytes() != data {
            return Err(format!(
                "the update's index ends at byte {}, its verity parameters at {data}",
                index.data_bytes()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(media_type: &str, n: u8, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest: format!("sha256:{}", hex(n)), size }
    }

    fn hex(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn manifest(layers: Vec<Descriptor>) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.into(),
            artifact_type: ARTIFACT_TYPE.into(),
            config: d(CONFIG_MEDIA_TYPE, 1, 10),
            layers,
            annotations: Default::default(),
        })
        .unwrap()
    }

    fn config(blocks: u64) -> Vec<u8> {
        let c = UpdateConfig {
            verity: format!("{blocks}:{}:{}", hex(2), hex(3)),
            kernel: "6.1".into(),
            created: 0,
            uki: format!("sha256:{}", hex(4)),
            index: format!("sha256:{}", hex(6)),
        };
        serde_json::to_vec(&c).unwrap()
    }

    #[test]
    fn a_bundle_is_read_and_its_index_checked() {
        let index = Index::lay_out(&[(String::new(), 8192, format!("sha256:{}", hex(5)))]);
        let layers =
            vec![d(UKI_MEDIA_TYPE, 4, 100), d(INDEX_MEDIA_TYPE, 6, 4096), d(PIECE_MEDIA_TYPE, 5, 8192)];
        let blocks = index.data_bytes() / 4096;
        let b = Manifest::check(&manifest(layers.clone()), &config(blocks)).unwrap();
        assert_eq!(b.uki.size, 100);
        assert_eq!(b.pieces.len(), 1);
        b.check_index(&index).unwrap();
        let wrong = Manifest::check(&manifest(layers.clone()), &config(blocks + 1)).unwrap();
        assert!(wrong.check_index(&index).unwrap_err().contains("verity"));
        // The config commits to the UKI and the index: another UKI is refused.
        let mut other = layers;
        other[0] = d(UKI_MEDIA_TYPE, 7, 100);
        assert!(Manifest::check(&manifest(other), &config(blocks)).unwrap_err().contains("another UKI"));
    }

    #[test]
    fn other_artifacts_and_bad_digests_are_refused() {
        let mut m: Manifest = serde_json::from_slice(&manifest(vec![])).unwrap();
        m.artifact_type = "application/vnd.other".into();
        let err = Manifest::check(&serde_json::to_vec(&m).unwrap(), &config(1)).unwrap_err();
        assert!(err.contains("not a berth update"), "{err}");
        let mut bad = d(UKI_MEDIA_TYPE, 4, 1);
        bad.digest = "sha256:ABC".into();
        let err = Manifest::check(&manifest(vec![bad, d(INDEX_MEDIA_TYPE, 6, 1)]), &config(1)).unwrap_err();
        assert!(err.contains("not a sha256 digest"), "{err}");
        let err = Manifest::check(&manifest(vec![d(INDEX_MEDIA_TYPE, 6, 1)]), &config(1)).unwrap_err();
        assert!(err.contains("fewer"), "{err}");
        let swapped = vec![d(INDEX_MEDIA_TYPE, 6, 1), d(UKI_MEDIA_TYPE, 4, 1)];
        assert!(Manifest::check(&manifest(swapped), &config(1)).is_err());
    }
}
