//! Reading image layers as streams of entries, without unpacking them to disk (the initramfs is
//! written as cpio by an unprivileged build), with the OCI whiteouts converted to the overlayfs
//! form; and finding the image's `/etc/passwd` and `/etc/group` across its layers (the lookup
//! itself is `berth_init::accounts`, shared with PID 1).
//!
//! A layer is read twice: [`scan_layer`] (pass 1) collects what a writer must know before it
//! writes anything (opaque directories, hard link targets, `etc/passwd`, `etc/group`), then
//! [`for_each_entry`] (pass 2) streams the entries. Both passes verify the layer's diff id (the
//! sha256 of the uncompressed tar) once the whole stream was read.
//!
//! Duplicate paths in one layer (legal in tar) are all emitted, in archive order: the later one
//! wins when the consumer writes them in order (the kernel's initramfs unpacker replaces an
//! existing file).

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use anyhow::{anyhow, bail, Context, Result};
use berth_init::accounts::Accounts;
use sha2::{Digest as _, Sha256};

use crate::blobs::format_digest;
use crate::source::{Compression, LayerBlob};

/// The OCI whiteout prefix.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Largest `etc/passwd` / `etc/group` captured by [`scan_layer`].
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file; its data is the reader passed along.
    File,
    /// A symbolic link to the target, as written in the archive.
    Symlink(String),
    /// A hard link to an earlier entry of the same layer (normalized path).
    Hardlink(String),
    /// A character device `(major, minor)`; `(0, 0)` is an overlayfs whiteout.
    CharDev(u32, u32),
    /// A block device `(major, minor)`.
    BlockDev(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    /// Normalized path: relative, no leading `./` or `/`, no trailing `/`, never empty.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky, without file type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// Data size: the file size for [`EntryKind::File`], 0 otherwise.
    pub size: u64,
}

impl LayerEntry {
    /// Whether this is an overlayfs whiteout (a `0:0` character device).
    pub fn is_whiteout(&self) -> bool {
        self.kind == EntryKind::CharDev(0, 0)
    }
}

/// What pass 1 learns about a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerSummary {
    /// Directories marked opaque (`DIR/.wh..wh..opq`): their lower-layer contents are hidden.
    /// `""` is the root directory. On overlayfs an opaque directory carries the
    /// `trusted.overlay.opaque=y` xattr, which a cpio archive cannot hold: the consumer must
    /// apply it when the layer is mounted.
    pub opaque_dirs: Vec<String>,
    /// Paths deleted by whiteouts (`DIR/.wh.NAME` gives `DIR/NAME`).
    pub whiteouts: Vec<String>,
    /// Paths that hard links of this layer point to.
    pub hardlink_targets: BTreeSet<String>,
    /// Contents of `etc/passwd` if this layer has it as a regular file.
    pub passwd: Option<Vec<u8>>,
    /// Contents of `etc/group` if this layer has it as a regular file.
    pub group: Option<Vec<u8>>,
    /// Number of entries [`for_each_entry`] emits.
    pub entries: u64,
    /// Total size of the regular files' data.
    pub file_bytes: u64,
}

impl LayerSummary {
    /// Whether this layer hides `path` of the layers below: a whiteout of it or of a parent
    /// directory, or an opaque parent directory.
    pub fn hides(&self, path: &str) -> bool {
        let is_ancestor_or_self = |p: &str| p == path || p.is_empty() || path.starts_with(&format!("{p}/"));
        self.whiteouts.iter().any(|w| is_ancestor_or_self(w))
            || self.opaque_dirs.iter().any(|d| d != path && is_ancestor_or_self(d))
    }
}

/// Wraps a reader of a compressed stream in its decompressor (gzip with multiple members,
/// zstd with multiple frames).
pub fn decompress<'a, R: Read + Send + 'a>(
    compression: Compression,
    reader: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader))),
        // libzstd's stream decoder goes on across concatenated frames.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

/// Opens a layer blob as its decompressed tar stream. The compression is recognized from the
/// blob's magic bytes (a media type that lies about it does not matter). The stream is not
/// checked against the diff id; [`scan_layer`] and [`for_each_entry`] do that.
pub fn open_layer(blob: &LayerBlob) -> Result<Box<dyn Read + Send>> {
    let open = || -> io::Result<Box<dyn Read + Send>> {
        let mut file = File::open(&blob.path)?;
        let mut head = [0u8; 4];
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        file.seek(SeekFrom::Start(0))?;
        let compression = Compression::sniff(&head[..n]);
        if compression != blob.compression {
            log::warn!(
                "layer {}: announced as {:?} but the data is {:?}; reading it as {:?}",
                blob.digest,
                blob.compression,
                compression,
                compression
            );
        }
        decompress(compression, file)
    };
    open().with_context(|| format!("layer {} ({})", blob.digest, blob.path.display()))
}

/// Pass 1: collects opaque directories, whiteouts, hard link targets, `etc/passwd` and
/// `etc/group`, and counts entries. Checks that every hard link points to an earlier entry of
/// the same layer, and verifies the diff id.
pub fn scan_layer(blob: &LayerBlob) -> Result<LayerSummary> {
    let mut summary = LayerSummary::default();
    let mut seen: HashSet<String> = HashSet::new();
    walk(blob, |item, data| {
        match item {
            Item::Opaque(dir) => summary.opaque_dirs.push(dir),
            Item::Entry(entry) => {
                summary.entries += 1;
                match &entry.kind {
                    EntryKind::File => {
                        summary.file_bytes += entry.size;
                        let slot = match entry.path.as_str() {
                            "etc/passwd" => Some(&mut summary.passwd),
                            "etc/group" => Some(&mut summary.group),
                            _ => None,
                        };
                        if let Some(slot) = slot {
                            let mut bytes = Vec::new();
                            data.take(MAX_ACCOUNT_FILE).read_to_end(&mut bytes)?;
                            *slot = Some(bytes);
                        }
                    }
                    EntryKind::Hardlink(target) => {
                        if !seen.contains(target) {
                            bail!(
                                "hard link {} points to {target}, which is not an earlier entry of the same layer",
                                entry.path
                            );
                        }
                        summary.hardlink_targets.insert(target.clone());
                    }
                    EntryKind::CharDev(0, 0) => summary.whiteouts.push(entry.path.clone()),
                    _ => {}
                }
                // A later entry replacing the account files with something else removes them.
                if !matches!(entry.kind, EntryKind::File) {
                    match entry.path.as_str() {
                        "etc/passwd" => summary.passwd = None,
                        "etc/group" => summary.group = None,
                        _ => {}
                    }
                }
                seen.insert(entry.path);
            }
        }
        Ok(())
    })?;
    Ok(summary)
}

/// Pass 2: calls `f` with every entry in archive order, and a reader of its data (empty for
/// everything but regular files). Whiteouts `DIR/.wh.NAME` come as `DIR/NAME` character
/// devices `0:0` with mode 0; opaque markers are not emitted (see [`scan_layer`]). The diff id
/// is verified at the end: on a mismatch the consumer has seen corrupt entries and must discard
/// its output.
pub fn for_each_entry(
    blob: &LayerBlob,
    mut f: impl FnMut(&LayerEntry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    walk(blob, |item, data| match item {
        Item::Entry(entry) => f(&entry, data),
        Item::Opaque(_) => Ok(()),
    })
}

/// What the tar stream yields after conversion.
enum Item {
    Entry(LayerEntry),
    Opaque(String),
}

/// Reads the layer, converts every tar entry, calls `f`, then verifies the diff id.
fn walk(blob: &LayerBlob, mut f: impl FnMut(Item, &mut dyn Read) -> Result<()>) -> Result<()> {
    let context = || format!("layer {} ({})", blob.digest, blob.path.display());
    let reader = HashingReader { inner: open_layer(blob)?, hasher: Sha256::new() };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().with_context(context)?;
    for entry in entries {
        let mut entry = entry.with_context(context)?;
        let item = convert(&mut entry).with_context(context)?;
        if let Some(item) = item {
            let what = match &item {
                Item::Entry(e) => e.path.clone(),
                Item::Opaque(d) => format!("{d}/{OPAQUE_MARKER}"),
            };
            f(item, &mut entry).with_context(|| format!("{}: {what}", context()))?;
        }
    }
    let mut reader = archive.into_inner();
    // Trailing zero blocks and padding after the end-of-archive marker belong to the diff id.
    io::copy(&mut reader, &mut io::sink()).with_context(context)?;
    if let Some(diff_id) = &blob.diff_id {
        let actual = format_digest(reader.hasher);
        if actual != *diff_id {
            bail!(
                "{}: the uncompressed layer has digest {actual}, but the image configuration says {diff_id} (the layer is corrupt; re-create the image)",
                context()
            );
        }
    }
    Ok(())
}

/// A reader hashing everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Normalizes a path from a layer: relative, no `.` or empty components; `..` is an error.
/// Returns `""` for the root directory.
pub fn normalize_path(raw: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("path {raw:?} contains `..`; refusing a layer entry that could escape the root"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| anyhow!("{what} {:?} is not UTF-8", String::from_utf8_lossy(bytes)))
}

/// A numeric header field; an empty one (all NUL or spaces, as some writers leave uid, gid or
/// mtime) counts as 0.
fn numeric<T: Default>(value: io::Result<T>, raw: &[u8], what: &str) -> Result<T> {
    match value {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("bad {what} field")),
    }
}

/// Converts a tar entry; `None` for entries that are skipped (the root directory, aufs
/// metadata, tar-internal headers).
fn convert<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Item>> {
    let raw_path = utf8(&entry.path_bytes(), "path")?;
    let path = normalize_path(&raw_path)?;
    let header = entry.header();
    let entry_type = header.entry_type();
    let old = header.as_old();
    let mut mode = numeric(header.mode(), &old.mode, "mode")? & 0o7777;
    let mut uid = numeric(header.uid(), &old.uid, "uid")?;
    let mut gid = numeric(header.gid(), &old.gid, "gid")?;
    let mut mtime = numeric(header.mtime(), &old.mtime, "mtime")?;
    let device = || -> Result<(u32, u32)> {
        Ok((header.device_major()?.unwrap_or(0), header.device_minor()?.unwrap_or(0)))
    };
    let link = |what: &str| -> Result<String> {
        let bytes = entry.link_name_bytes().ok_or_else(|| anyhow!("{raw_path}: {what} without a target"))?;
        utf8(&bytes, "link target")
    };
    let mut kind = match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink(link("symlink")?),
        tar::EntryType::Link => {
            let target = normalize_path(&link("hard link")?)?;
            if target.is_empty() {
                bail!("{raw_path}: hard link to the root directory");
            }
            EntryKind::Hardlink(target)
        }
        tar::EntryType::Char => {
            let (major, minor) = device()?;
            EntryKind::CharDev(major, minor)
        }
        tar::EntryType::Block => {
            let (major, minor) = device()?;
            EntryKind::BlockDev(major, minor)
        }
        tar::EntryType::Fifo => EntryKind::Fifo,
        other => {
            log::debug!("skipping tar entry {raw_path:?} of type {other:?}");
            return Ok(None);
        }
    };
    if path.is_empty() {
        return Ok(None);
    }
    let size = if kind == EntryKind::File { entry.size() } else { 0 };

    // PAX records override the header's numeric fields (large ids, precise times).
    if let Some(extensions) = entry.pax_extensions().context("bad PAX header")? {
        for ext in extensions {
            let ext = ext.context("bad PAX record")?;
            let value = || -> Option<u64> {
                let v = ext.value().ok()?;
                v.split('.').next()?.parse().ok()
            };
            match ext.key() {
                Ok("uid") => uid = value().unwrap_or(uid),
                Ok("gid") => gid = value().unwrap_or(gid),
                Ok("mtime") => mtime = value().unwrap_or(mtime),
                _ => {}
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| anyhow!("{raw_path}: uid {uid} out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| anyhow!("{raw_path}: gid {gid} out of range"))?;

    let (parent, name) = match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path.as_str()),
    };
    if name == OPAQUE_MARKER {
        return Ok(Some(Item::Opaque(parent.to_string())));
    }
    let mut path = path.clone();
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
            // `.wh..wh.plnk` and friends: aufs metadata, meaningless here.
            log::debug!("skipping aufs metadata {raw_path:?}");
            return Ok(None);
        }
        path = if parent.is_empty() { hidden.to_string() } else { format!("{parent}/{hidden}") };
        kind = EntryKind::CharDev(0, 0);
        mode = 0;
    }
    Ok(Some(Item::Entry(LayerEntry { path, kind, mode, uid, gid, mtime, size })))
}

/// Resolves a container's `user[:group]` (names or numbers) to `(uid, gid, additional gids)`
/// against the image's merged `/etc/passwd` and `/etc/group` (the topmost layer having the
/// file wins; a whiteout or opaque directory above deletes it). Reads the layers (bottom
/// first) with [`scan_layer`]; see [`resolve_user_in`] to reuse summaries.
pub fn resolve_user(layers: &[LayerBlob], user: &str) -> Result<(u32, u32, Vec<u32>), String> {
    // Fully numeric `uid:gid` never depends on the account files.
    if let Some((u, g)) = user.split_once(':') {
        if let (Ok(_), Ok(_)) = (u.parse::<i64>(), g.parse::<i64>()) {
            if !g.contains(':') {
                return Accounts::default().resolve(user);
            }
        }
    }
    let mut summaries = Vec::with_capacity(layers.len());
    for layer in layers {
        summaries.push(scan_layer(layer).map_err(|e| format!("{e:#}"))?);
    }
    resolve_user_in(&summaries, user)
}

/// The content of `path` in the merged image, from layer summaries (bottom first).
fn merged_file<'a>(
    summaries: &'a [LayerSummary],
    path: &str,
    pick: impl Fn(&LayerSummary) -> Option<&Vec<u8>>,
) -> Option<&'a [u8]> {
    for summary in summaries.iter().rev() {
        if let Some(bytes) = pick(summary) {
            return Some(bytes.as_slice());
        }
        if summary.hides(path) {
            return None;
        }
    }
    None
}

/// The image's accounts from layer summaries (bottom first): the merged `/etc/passwd` and
/// `/etc/group` (the topmost layer having the file wins; a whiteout or opaque directory above
/// deletes it), parsed.
pub fn image_accounts(summaries: &[LayerSummary]) -> Accounts {
    Accounts::parse(
        merged_file(summaries, "etc/passwd", |s| s.passwd.as_ref()),
        merged_file(summaries, "etc/group", |s| s.group.as_ref()),
    )
}

/// [`resolve_user`] on layer summaries from [`scan_layer`] (bottom first); the rules are
/// [`Accounts::resolve`]'s.
pub fn resolve_user_in(summaries: &[LayerSummary], user: &str) -> Result<(u32, u32, Vec<u32>), String> {
    image_accounts(summaries).resolve(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(passwd: Option<&str>, group: Option<&str>) -> LayerSummary {
        LayerSummary {
            passwd: passwd.map(|p| p.as_bytes().to_vec()),
            group: group.map(|g| g.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:1001:50::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:\naudio:x:29:app\n";

    fn resolve(user: &str) -> Result<(u32, u32, Vec<u32>), String> {
        resolve_user_in(&[summary(Some(PASSWD), Some(GROUP))], user)
    }

    #[test]
    fn without_account_files() {
        assert_eq!(resolve("app").unwrap(), (1000, 1000, vec![10, 29]));
        let err = resolve_user_in(&[], "app").unwrap_err();
        assert!(err.contains("no /etc/passwd"), "{err}");
        // numeric uid:gid needs no layers at all.
        assert_eq!(resolve_user(&[], "7:8").unwrap(), (7, 8, vec![]));
        assert!(resolve_user(&[], "-7:8").unwrap_err().contains("out of range"));
    }

    #[test]
    fn top_layer_wins_and_whiteouts_delete() {
        let lower = summary(Some(PASSWD), Some(GROUP));
        let upper = summary(Some("root:x:0:0::/:/bin/sh\napp:x:2000:2000::/:/bin/sh\n"), None);
        assert_eq!(resolve_user_in(&[lower.clone(), upper], "app").unwrap(), (2000, 2000, vec![10, 29]));
        let deleting = LayerSummary { whiteouts: vec!["etc/passwd".into()], ..Default::default() };
        assert!(resolve_user_in(&[lower.clone(), deleting], "app").is_err());
        let opaque = LayerSummary { opaque_dirs: vec!["etc".into()], ..Default::default() };
        assert!(resolve_user_in(&[lower.clone(), opaque], "app").is_err());
        let unrelated = LayerSummary {
            whiteouts: vec!["etc/passwd-".into()],
            opaque_dirs: vec!["etc/passwd.d".into()],
            ..Default::default()
        };
        assert_eq!(resolve_user_in(&[lower, unrelated], "app").unwrap().0, 1000);
    }

    #[test]
    fn path_normalization() {
        assert_eq!(normalize_path("./a//b/").unwrap(), "a/b");
        assert_eq!(normalize_path("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(normalize_path("./").unwrap(), "");
        assert!(normalize_path("a/../../b").is_err());
        assert!(normalize_path("/../etc").is_err());
    }
}
