//! A content-addressed blob store: `ROOT/blobs/sha256/<hex>`.
//!
//! The layout is the one of an OCI image layout's `blobs/` directory, so the same type serves as
//! the build cache and as the blob writer of `berth image import`.
//!
//! Invariant: a file only ever appears under its final name by `rename(2)` from a temporary file
//! in the same directory, after its sha256 was computed while writing it and compared with the
//! expected digest. Nothing half-written or unverified is ever visible under a final name, and two
//! builds racing to insert the same blob both succeed (the second rename replaces identical
//! bytes).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

/// The only digest algorithm berth accepts.
pub const SHA256_PREFIX: &str = "sha256:";

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A digest string is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The content's sha256 differs from the expected digest.
    #[error("content has digest {actual}, expected {expected} (the file is corrupt or was modified; re-create or re-download the image)")]
    DigestMismatch {
        /// The digest the content should have.
        expected: String,
        /// The digest the content has.
        actual: String,
    },
    /// The content's size differs from the expected size.
    #[error("content is {actual} bytes, expected {expected} (the file is truncated or was modified; re-create or re-download the image)")]
    SizeMismatch {
        /// The size the descriptor announces.
        expected: u64,
        /// The size read (when larger than expected, reading stopped at `expected + 1`).
        actual: u64,
    },
    /// An I/O error on a file of the store.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Checks that `digest` is `sha256:<64 lowercase hex>` and returns the hex part.
pub fn validate_digest(digest: &str) -> Result<&str, BlobError> {
    let invalid =
        |reason: &str| BlobError::InvalidDigest { digest: digest.to_string(), reason: reason.to_string() };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(invalid("expected `sha256:<64 hex digits>`"));
    };
    if algorithm != "sha256" {
        return Err(invalid(&format!(
            "unsupported digest algorithm {algorithm:?}: berth only supports sha256"
        )));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid("a sha256 digest is 64 lowercase hex digits"));
    }
    Ok(hex)
}

/// Formats a finished hasher as `sha256:<hex>`.
pub fn format_digest(hasher: Sha256) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// The `sha256:<hex>` digest of a byte slice.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format_digest(Sha256::new_with_prefix(bytes))
}

/// The `sha256:<hex>` digest and the length of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hashing = HashingWriter::new(io::sink());
    let size = io::copy(&mut reader, &mut hashing)?;
    let (_, digest, _) = hashing.finish();
    Ok((digest, size))
}

/// The `sha256:<hex>` digest of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, BlobError> {
    let io_err = |source| BlobError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    sha256_reader(file).map(|(d, _)| d).map_err(io_err)
}

/// A writer that forwards to `inner` and hashes (and counts) everything written.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), size: 0 }
    }

    /// Returns the inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, format_digest(self.hasher), self.size)
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A content-addressed blob store rooted at a directory (`ROOT/blobs/sha256/<hex>`).
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    /// A store rooted at `root`; directories are created on the first insert.
    pub fn new(root: PathBuf) -> Self {
        BlobCache { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the sha256 blobs (`ROOT/blobs/sha256`).
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// The final path of a blob, whether or not it exists.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        let hex = validate_digest(digest)?;
        Ok(self.blob_dir().join(hex))
    }

    /// The path of a stored blob, or `None` if it is absent or the digest is invalid.
    pub fn get(&self, digest: &str) -> Option<PathBuf> {
        let path = self.blob_path(digest).ok()?;
        path.is_file().then_some(path)
    }

    /// Stores everything `reader` yields under `expected_digest`, verifying the digest.
    ///
    /// On a mismatch nothing is stored. If the blob is already stored, the reader is still
    /// hashed (so a corrupt source is reported) but nothing is written.
    pub fn insert_from_reader(&self, expected_digest: &str, reader: impl Read) -> Result<PathBuf, BlobError> {
        self.insert_verified(expected_digest, None, reader).map(|(path, _)| path)
    }

    /// Like [`BlobCache::insert_from_reader`], also checking the size when `expected_size` is
    /// given (reading stops one byte past it). Returns the stored path and the size.
    pub fn insert_verified(
        &self,
        expected_digest: &str,
        expected_size: Option<u64>,
        reader: impl Read,
    ) -> Result<(PathBuf, u64), BlobError> {
        let final_path = self.blob_path(expected_digest)?;
        let mut limited: Box<dyn Read> = match expected_size {
            Some(size) => Box::new(reader.take(size.saturating_add(1))),
            None => Box::new(reader),
        };
        let check = |digest: &str, size: u64| -> Result<(), BlobError> {
            if let Some(expected) = expected_size {
                if expected != size {
                    return Err(BlobError::SizeMismatch { expected, actual: size });
                }
            }
            if digest != expected_digest {
                return Err(BlobError::DigestMismatch {
                    expected: expected_digest.to_string(),
                    actual: digest.to_string(),
                });
            }
            Ok(())
        };
        if final_path.is_file() {
            let (digest, size) = sha256_reader(&mut limited)
                .map_err(|source| BlobError::Io { path: final_path.clone(), source })?;
            check(&digest, size)?;
            return Ok((final_path, size));
        }
        let mut writer = self.writer()?;
        let temp = writer.temp_path().to_path_buf();
        io::copy(&mut limited, &mut writer).map_err(|source| BlobError::Io { path: temp, source })?;
        check(&writer.digest(), writer.size())?;
        let (_, path, size) = writer.commit(Some(expected_digest))?;
        Ok((path, size))
    }

    /// Stores everything `reader` yields under its computed digest; returns
    /// `(digest, path, size)`.
    pub fn insert_computing(&self, mut reader: impl Read) -> Result<(String, PathBuf, u64), BlobError> {
        let mut writer = self.writer()?;
        let temp = writer.temp_path().to_path_buf();
        io::copy(&mut reader, &mut writer).map_err(|source| BlobError::Io { path: temp, source })?;
        writer.commit(None)
    }

    /// A writer for a new blob: a temporary file in the blob directory, hashed while written.
    /// Nothing is stored until [`BlobWriter::commit`]; dropping the writer deletes the file.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let dir = self.blob_dir();
        fs::create_dir_all(&dir).map_err(|source| BlobError::Io { path: dir.clone(), source })?;
        remove_stale_temp_files(&dir);
        let temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|source| BlobError::Io { path: dir.clone(), source })?;
        Ok(BlobWriter { inner: HashingWriter::new(temp), dir })
    }
}

/// How old a temporary file must be before it counts as left behind by a killed build (a live
/// download touches its file continuously).
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes `.tmp-*` files not written to for [`STALE_TEMP_AGE`]: what a build killed in the
/// middle of a download (SIGKILL, power loss) left. Failures are ignored.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(".tmp-")
            && e.metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A blob being written: see [`BlobCache::writer`].
pub struct BlobWriter {
    inner: HashingWriter<NamedTempFile>,
    dir: PathBuf,
}

impl BlobWriter {
    /// The temporary file (complete once everything was written and flushed), e.g. to check
    /// the content before committing.
    pub fn temp_path(&self) -> &Path {
        self.inner.inner.path()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> String {
        format_digest(self.inner.hasher.clone())
    }

    /// The number of bytes written so far.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// Flushes and renames the file to its final name. With `expected`, a different digest is
    /// an error and nothing is stored. Returns `(digest, path, size)`.
    pub fn commit(self, expected: Option<&str>) -> Result<(String, PathBuf, u64), BlobError> {
        let (mut temp, digest, size) = self.inner.finish();
        if let Some(expected) = expected {
            if digest != expected {
                return Err(BlobError::DigestMismatch { expected: expected.to_string(), actual: digest });
            }
        }
        let temp_path = temp.path().to_path_buf();
        let io_err = |source| BlobError::Io { path: temp_path.clone(), source };
        temp.flush().map_err(io_err)?;
        temp.as_file().sync_all().map_err(io_err)?;
        let hex = validate_digest(&digest)?;
        let final_path = self.dir.join(hex);
        // Temporary files are created 0600; blobs are readable by everyone, like skopeo's.
        let mut perms = temp.as_file().metadata().map_err(io_err)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        temp.as_file().set_permissions(perms).map_err(io_err)?;
        temp.persist(&final_path).map_err(|e| BlobError::Io { path: final_path.clone(), source: e.error })?;
        Ok((digest, final_path, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn stale_temp_files_are_removed_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path().to_path_buf());
        let blobs = cache.blob_dir();
        fs::create_dir_all(&blobs).unwrap();
        let old = blobs.join(".tmp-old");
        let fresh = blobs.join(".tmp-fresh");
        fs::write(&old, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
        fs::File::options().write(true).open(&old).unwrap().set_modified(two_days_ago).unwrap();
        drop(cache.writer().unwrap());
        assert!(!old.exists() && fresh.exists());
    }

    #[test]
    fn digest_validation() {
        assert!(validate_digest(HELLO).is_ok());
        let err = validate_digest("sha512:abcd").unwrap_err().to_string();
        assert!(err.contains("only supports sha256"), "{err}");
        assert!(validate_digest("sha256:ABCD").is_err());
        assert!(validate_digest(&HELLO.to_uppercase()).is_err());
        assert!(validate_digest("2cf24dba").is_err());
        assert!(validate_digest(&format!("{HELLO}0")).is_err());
    }

    #[test]
    fn insert_verifies_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path().to_path_buf());
        assert!(cache.get(HELLO).is_none());
        let path = cache.insert_from_reader(HELLO, &b"hello"[..]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(cache.get(HELLO), Some(path.clone()));
        assert_eq!(sha256_file(&path).unwrap(), HELLO);
        // Second insert of the same content is fine; corrupt content is rejected.
        cache.insert_from_reader(HELLO, &b"hello"[..]).unwrap();
        let err = cache.insert_from_reader(HELLO, &b"hellO"[..]).unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }), "{err}");
        let err = cache.insert_verified(HELLO, Some(4), &b"hello"[..]).unwrap_err();
        assert!(matches!(err, BlobError::SizeMismatch { .. }), "{err}");
        // Only the final blob is left in the directory.
        let names: Vec<_> = fs::read_dir(cache.blob_dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path().to_path_buf());
        assert!(cache.insert_from_reader(HELLO, &b"bye"[..]).is_err());
        assert!(cache.get(HELLO).is_none());
        assert_eq!(fs::read_dir(cache.blob_dir()).unwrap().count(), 0);
        let (digest, path, size) = cache.insert_computing(&b"hello"[..]).unwrap();
        assert_eq!((digest.as_str(), size), (HELLO, 5));
        assert_eq!(cache.get(HELLO), Some(path));
    }
}
