//! An update handed to the machine instead of fetched (`berthctl update apply -`, for machines
//! without a registry): the bundle's OCI layout (`berth build --format update`'s `update/`) as a
//! tar stream on standard input, unpacked into a staging directory, then read like a registry —
//! every blob checked against its digest as it is read.
//!
//! Only `index.json`, `oci-layout` and `blobs/sha256/<64 hex>` are taken, wherever the layout's
//! directory is in the stream (`tar -C out/update -c .` or `tar -C out -c update`); nothing is
//! written outside the staging directory.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::registry::{copy_checked, Source};

/// A bundle unpacked in a directory.
pub struct Bundle {
    dir: PathBuf,
    fetched: (usize, u64),
}

/// Where an entry of the stream goes in the layout, if it is part of one.
fn layout_path(entry: &str) -> Option<String> {
    let path = entry.trim_start_matches("./");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [.., "blobs", "sha256", hex] if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(format!("blobs/sha256/{}", hex.to_ascii_lowercase()))
        }
        [name @ ("index.json" | "oci-layout")] | [_, name @ ("index.json" | "oci-layout")] => {
            Some(name.to_string())
        }
        _ => None,
    }
}

impl Bundle {
    /// Unpacks the tar stream `input` into `staging` (emptied first).
    pub fn unpack(input: &mut dyn Read, staging: &Path) -> Result<Bundle, String> {
        let _ = fs::remove_dir_all(staging);
        fs::create_dir_all(staging.join("blobs/sha256"))
            .map_err(|e| format!("{}: {e}", staging.display()))?;
        let mut archive = tar::Archive::new(input);
        let entries = archive.entries().map_err(|e| format!("the bundle on standard input: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("the bundle on standard input: {e}"))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
            let Some(dest) = layout_path(&name) else { continue };
            let path = staging.join(dest);
            let mut out = fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| format!("unpacking {name}: {e}"))?;
            out.flush().map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if !staging.join("index.json").is_file() {
            return Err("the bundle on standard input has no index.json: send an OCI layout (`tar -C OUT/update -c .`)".into());
        }
        Ok(Bundle { dir: staging.to_path_buf(), fetched: (0, 0) })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }
}

impl Source for Bundle {
    fn name(&self) -> String {
        "the bundle on standard input".into()
    }

    fn manifest(&mut self) -> Result<Option<(Vec<u8>, String)>, String> {
        let index: serde_json::Value = serde_json::from_slice(
            &fs::read(self.dir.join("index.json")).map_err(|e| format!("index.json: {e}"))?,
        )
        .map_err(|e| format!("the bundle's index.json: {e}"))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let [entry] = manifests.as_slice() else {
            return Err(format!(
                "the bundle's index.json lists {} manifests; an update has one",
                manifests.len()
            ));
        };
        let digest = entry["digest"].as_str().unwrap_or_default().to_string();
        if !berth_schema::update::valid_digest(&digest) {
            return Err(format!("the bundle's index.json: `{digest}` is not a sha256 digest"));
        }
        let size = entry["size"].as_u64().ok_or("the bundle's index.json gives no manifest size")?;
        let bytes = self.small_blob(&digest, size)?;
        Ok(Some((bytes, digest)))
    }

    fn blob(&mut self, digest: &str, size: u64, out: &mut dyn Write) -> Result<(), String> {
        if !berth_schema::update::valid_digest(digest) {
            return Err(format!("`{digest}` is not a sha256 digest"));
        }
        let path = self.blob_path(digest);
        let mut f = fs::File::open(&path).map_err(|e| format!("the bundle has no blob {digest}: {e}"))?;
        self.fetched.1 += copy_checked(&mut f, digest, size, out, &path.display().to_string())?;
        self.fetched.0 += 1;
        Ok(())
    }

    fn fetched(&self) -> (usize, u64) {
        self.fetched
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_layouts_files_are_taken_wherever_it_is() {
        let hex = "ab".repeat(32);
        assert_eq!(layout_path("./index.json").as_deref(), Some("index.json"));
        assert_eq!(layout_path("update/oci-layout").as_deref(), Some("oci-layout"));
        assert_eq!(layout_path(&format!("./blobs/sha256/{hex}")), Some(format!("blobs/sha256/{hex}")));
        assert_eq!(layout_path(&format!("update/blobs/sha256/{hex}")), Some(format!("blobs/sha256/{hex}")));
        for other in ["../../etc/passwd", "blobs/sha256/../../x", "a/b/index.json", "blobs/sha256/short", "x"]
        {
            assert_eq!(layout_path(other), None, "{other}");
        }
    }

    #[test]
    fn a_bundle_streamed_as_tar_is_read_back_and_checked() {
        let staging = std::env::temp_dir().join(format!("berth-bundle-test-{}", std::process::id()));
        let blob = b"piece";
        let digest = crate::registry::digest_of(blob);
        let manifest = b"{}";
        let manifest_digest = crate::registry::digest_of(manifest);
        let index = format!(r#"{{"manifests":[{{"digest":"{manifest_digest}","size":2}}]}}"#);
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("./index.json", index.as_bytes());
        add(&format!("./blobs/sha256/{}", digest.trim_start_matches("sha256:")), blob);
        add(&format!("./blobs/sha256/{}", manifest_digest.trim_start_matches("sha256:")), manifest);
        let tar = b.into_inner().unwrap();
        let mut source = Bundle::unpack(&mut tar.as_slice(), &staging).unwrap();
        assert_eq!(source.manifest().unwrap().unwrap(), (manifest.to_vec(), manifest_digest));
        assert_eq!(source.small_blob(&digest, 5).unwrap(), blob);
        assert!(source.small_blob(&digest, 4).unwrap_err().contains("larger"));
        let absent = crate::registry::digest_of(b"absent");
        assert!(source.small_blob(&absent, 6).unwrap_err().contains("no blob"));
        drop(source);
        assert!(!staging.exists(), "the staging directory goes with it");
    }
}
