//! `berth.lock`: the manifest digest each registry reference of a config resolved to, so that
//! a rebuild pulls the same images even when a tag moved. It lives next to the config file;
//! `berth build --update` resolves the tags again and rewrites it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The lock file's name, next to the config file.
pub const LOCK_FILE: &str = "berth.lock";

/// The format version written.
const LOCK_VERSION: u32 = 1;

/// The first lines of the file.
const HEADER: &str = "# berth.lock: the image digests `berth build` resolved for this directory's configs.\n\
# Commit it for repeatable builds; `berth build --update` resolves the tags again.\n\n";

impl Default for LockFile {
    fn default() -> LockFile {
        LockFile::new()
    }
}

/// The lock file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    /// Always 1.
    pub version: u32,
    /// Fully qualified reference (`REGISTRY/REPOSITORY:TAG`) → manifest digest.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
}

impl LockFile {
    /// The lock file path for a config file's directory.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(LOCK_FILE)
    }

    /// Reads `path`; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<LockFile> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockFile::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let lock: LockFile = toml::from_str(&text).with_context(|| {
            format!("{}: not a valid lock file (delete it or run `berth build --update`)", path.display())
        })?;
        if lock.version != LOCK_VERSION {
            bail!(
                "{}: lock file version {} is not supported (this berth writes version {LOCK_VERSION}); run `berth build --update`",
                path.display(),
                lock.version
            );
        }
        for (reference, digest) in &lock.images {
            crate::blobs::validate_digest(digest)
                .with_context(|| format!("{}: {reference}", path.display()))?;
        }
        Ok(lock)
    }

    /// An empty lock.
    pub fn new() -> LockFile {
        LockFile { version: LOCK_VERSION, images: BTreeMap::new() }
    }

    /// The text of the file.
    pub fn to_text(&self) -> Result<String> {
        Ok(format!("{HEADER}{}", toml::to_string(self).context("serializing the lock file")?))
    }

    /// Writes the file atomically (a temporary file in the same directory, renamed over it).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut temp = tempfile::Builder::new()
            .prefix(".berth.lock-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        temp.write_all(self.to_text()?.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        temp.as_file().sync_all().with_context(|| format!("writing {}", path.display()))?;
        let mut perms = temp.as_file().metadata()?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        temp.as_file().set_permissions(perms)?;
        temp.persist(path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = LockFile::path_in(dir.path());
        assert_eq!(LockFile::read(&path).unwrap(), LockFile::new());
        let mut lock = LockFile::new();
        lock.images.insert("r.example/a:1".into(), format!("sha256:{}", "0".repeat(64)));
        lock.write(&path).unwrap();
        assert_eq!(LockFile::read(&path).unwrap(), lock);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(&path, "version = 1\n[images]\n\"a\" = \"sha256:zz\"\n").unwrap();
        assert!(LockFile::read(&path).is_err());
        fs::write(&path, "version = 9\n").unwrap();
        assert!(format!("{:#}", LockFile::read(&path).unwrap_err()).contains("--update"));
    }
}
