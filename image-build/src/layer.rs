//! Reading image layers as streams of entries, without unpacking them to disk (the initramfs is
//! written as cpio by an unprivileged build), with the OCI whiteouts converted to the overlayfs
//! form; and finding the image's `/etc/passwd` and `/etc/group` across its layers (the lookup
//! itself is `berth_schema::accounts`, shared with PID 1).
//!
//! A layer is read twice: [`scan_layer`] (pass 1) collects what a writer must know before it
//! writes anything (opaque directories, hard link targets, `etc/passwd`, `etc/group`), then
//! [`for_each_entry`] (pass 2) streams the entries. Both passes verify the layer's diff id (the
//! sha256 of the uncompressed tar) once the whole stream was read.
//!
//! Duplicate paths in one layer (legal in tar) are all emitted, in archive order: the later one
//! wins when the consumer writes them in order (the kernel's initramfs unpacker replaces an
//! existing file).
//!
//! Both passes enforce what a layer may contain (docs/images.md, "What a layer may contain"),
//! so whatever consumes the entries (the cpio writer today, a file system image later) only
//! ever sees a layer that stays inside its own directory: no `..`; nothing written through a
//! symlink of the same layer; hard links only to an earlier regular file of the same layer; no
//! symlink or file replacing a directory the layer filled, no directory replacing a symlink of
//! the layer; sizes, counts and names within [`MAX_FILE_SIZE`], [`MAX_ENTRIES`],
//! [`MAX_NAME_BYTES`], [`MAX_PATH_LEN`] and [`MAX_NAME_LEN`]. A refusal names the layer
//! (digest and blob file) and the entry as the archive spells it.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use anyhow::{anyhow, bail, Context, Result};
use berth_schema::accounts::Accounts;
use sha2::{Digest as _, Sha256};

use crate::blobs::format_digest;
use crate::source::{Compression, LayerBlob};

/// The OCI whiteout prefix.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Largest `etc/passwd` / `etc/group` captured by [`scan_layer`].
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// Largest entry a layer may hold: 64 GiB. Far beyond any real image file (and beyond what the
/// initramfs can carry: newc stores at most 4 GiB - 1 per file), small enough that sums over a
/// layer never overflow.
pub const MAX_FILE_SIZE: u64 = 64 << 30;
/// Most tar members in one layer: a million (the largest public images have a few hundred
/// thousand files in their biggest layer). Each costs memory while the layer is read.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Most bytes of names (entry paths and link targets) in one layer: 256 MiB, what the reader
/// keeps in memory to check the rules below.
pub const MAX_NAME_BYTES: u64 = 256 << 20;
/// Longest entry path or link target, in bytes: Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component, in bytes: Linux's `NAME_MAX`.
pub const MAX_NAME_LEN: usize = 255;
/// Where a refusal points to.
const RULES_HINT: &str = "see \"What a layer may contain\" in docs/images.md";

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
/// `etc/group`, and counts entries. Enforces the layer rules (see the module documentation;
/// among them: every hard link points to an earlier regular file of the same layer), and
/// verifies the diff id.
pub fn scan_layer(blob: &LayerBlob) -> Result<LayerSummary> {
    let mut summary = LayerSummary::default();
    walk(blob, |item, data| {
        match item {
            Item::Opaque(dir) => summary.opaque_dirs.push(dir),
            Item::Entry(entry) => {
                summary.entries += 1;
                match &entry.kind {
                    EntryKind::File => {
                        // (at most MAX_ENTRIES * MAX_FILE_SIZE = 2^56: no overflow)
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

/// Reads the layer, converts every tar entry, checks it against the layer rules, calls `f`,
/// then verifies the diff id. Errors name the layer and the entry as the archive spells it.
fn walk(blob: &LayerBlob, mut f: impl FnMut(Item, &mut dyn Read) -> Result<()>) -> Result<()> {
    let context = || format!("layer {} ({})", blob.digest, blob.path.display());
    let reader = HashingReader { inner: open_layer(blob)?, hasher: Sha256::new() };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().with_context(context)?;
    let mut rules = Rules::default();
    for entry in entries {
        let mut entry = entry.with_context(context)?;
        let raw = entry.path_bytes().into_owned();
        let at = || format!("{}: entry {}", context(), shown(&raw));
        rules.count(&entry).with_context(at)?;
        let item = convert(&mut entry).with_context(at)?;
        if let Some(item) = item {
            rules.check(&item).with_context(at)?;
            f(item, &mut entry).with_context(at)?;
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

/// A name from the archive for a message: quoted, escaped, at most 200 bytes of it.
fn shown(raw: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&raw[..raw.len().min(SHOWN)]);
    if raw.len() > SHOWN {
        format!("{text:?}… ({} bytes)", raw.len())
    } else {
        format!("{text:?}")
    }
}

/// What a path of the layer is, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A directory (explicit, or implied by an entry below it); `filled` once an entry of the
    /// layer is below it.
    Dir { filled: bool },
    /// A symlink, with its target.
    Symlink(String),
    /// A regular file (or a hard link to one): what a hard link may point to.
    File,
    /// A device node, a fifo or a whiteout.
    Other,
}

impl Node {
    fn of(kind: &EntryKind) -> Node {
        match kind {
            EntryKind::Dir => Node::Dir { filled: false },
            EntryKind::Symlink(target) => Node::Symlink(target.clone()),
            EntryKind::File | EntryKind::Hardlink(_) => Node::File,
            EntryKind::CharDev(..) | EntryKind::BlockDev(..) | EntryKind::Fifo => Node::Other,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::Symlink(_) => "symlink",
            Node::File => "regular file",
            Node::Other => "device node, fifo or whiteout",
        }
    }
}

/// What a kind of entry is called in messages.
fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "directory",
        EntryKind::File => "regular file",
        EntryKind::Symlink(_) => "symlink",
        EntryKind::Hardlink(_) => "hard link",
        EntryKind::CharDev(0, 0) => "whiteout",
        EntryKind::CharDev(..) => "character device",
        EntryKind::BlockDev(..) => "block device",
        EntryKind::Fifo => "fifo",
    }
}

/// The layer rules that depend on earlier entries of the same layer (the others are checked
/// per entry by [`convert`]).
#[derive(Default)]
struct Rules {
    /// Every path the layer made so far (directories implied by deeper entries included).
    nodes: HashMap<String, Node>,
    /// Tar members read so far.
    members: u64,
    /// Bytes of names read so far.
    name_bytes: u64,
}

impl Rules {
    /// Counts a tar member (skipped ones too) against [`MAX_ENTRIES`], [`MAX_NAME_BYTES`] and
    /// [`MAX_FILE_SIZE`], before anything of it is used.
    fn count<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<()> {
        self.members += 1;
        if self.members > MAX_ENTRIES {
            bail!(
                "the layer has more than {MAX_ENTRIES} entries, berth's limit for one layer; \
                 split it into several layers ({RULES_HINT})"
            );
        }
        let names = entry.path_bytes().len() + entry.link_name_bytes().map_or(0, |l| l.len());
        self.name_bytes += names as u64;
        if self.name_bytes > MAX_NAME_BYTES {
            bail!(
                "the layer's names add up to more than {MAX_NAME_BYTES} bytes, berth's limit for one \
                 layer; split it into several layers ({RULES_HINT})"
            );
        }
        if entry.size() > MAX_FILE_SIZE {
            bail!(
                "the entry is {} bytes; a layer entry may be at most {MAX_FILE_SIZE} bytes (64 GiB); \
                 keep such data on a volume instead of in the image ({RULES_HINT})",
                entry.size()
            );
        }
        Ok(())
    }

    /// Checks one converted item against the entries before it, then records it.
    fn check(&mut self, item: &Item) -> Result<()> {
        match item {
            Item::Opaque(dir) => {
                // The marker sits inside `dir`: `dir` and its parents must be real directories
                // of this layer (PID 1 marks `dir` at boot).
                let marker =
                    if dir.is_empty() { OPAQUE_MARKER.to_string() } else { format!("{dir}/{OPAQUE_MARKER}") };
                self.enter_parents(&marker, "opaque marker")
            }
            Item::Entry(e) => {
                let what = kind_name(&e.kind);
                self.enter_parents(&e.path, what)?;
                if let EntryKind::Hardlink(target) = &e.kind {
                    self.check_hardlink(&e.path, target)?;
                }
                let new = Node::of(&e.kind);
                let replaced = self.nodes.get(&e.path);
                match (replaced, &new) {
                    (Some(Node::Dir { filled: true }), n) if !matches!(n, Node::Dir { .. }) => bail!(
                        "a {what} replacing the directory {:?}, which this layer filled earlier; what the \
                         directory holds would be dropped (and a symlink would send later entries \
                         elsewhere). Fix the image: keep either the directory or the {what} in this \
                         layer, not both ({RULES_HINT})",
                        e.path
                    ),
                    (Some(Node::Symlink(target)), Node::Dir { .. }) => bail!(
                        "a directory replacing the symlink {:?} (-> {target:?}) made earlier in this \
                         layer; whether what follows belongs in the directory or at the symlink's \
                         target is ambiguous. Fix the image: keep only one of them ({RULES_HINT})",
                        e.path
                    ),
                    _ => {}
                }
                let node = match (replaced, new) {
                    // A directory written again keeps what is in it.
                    (Some(Node::Dir { filled }), Node::Dir { .. }) => Node::Dir { filled: *filled },
                    (_, new) => new,
                };
                self.nodes.insert(e.path.clone(), node);
                Ok(())
            }
        }
    }

    /// Checks that every parent of `path` is a directory of this layer (or not made by it
    /// yet: then it is implied), never a symlink or a file; marks them filled.
    fn enter_parents(&mut self, path: &str, what: &str) -> Result<()> {
        for (end, _) in path.match_indices('/') {
            let parent = &path[..end];
            match self.nodes.get_mut(parent) {
                Some(Node::Dir { filled }) => *filled = true,
                Some(Node::Symlink(target)) => bail!(
                    "the {what} {path:?} would be written through the symlink {parent:?} \
                     (-> {target:?}) made earlier in this layer; a layer may not place entries under \
                     its own symlinks (they could land outside the layer). Fix the image: make \
                     {parent:?} a directory, or put the entry at the symlink's target ({RULES_HINT})"
                ),
                Some(other) => bail!(
                    "the {what} {path:?} is inside {parent:?}, which this layer made a {}, not a \
                     directory. Fix the image: make {parent:?} a directory or drop the entry \
                     ({RULES_HINT})",
                    other.what()
                ),
                None => {
                    self.nodes.insert(parent.to_string(), Node::Dir { filled: true });
                }
            }
        }
        Ok(())
    }

    /// A hard link must point to a regular file made earlier in this layer, not through one
    /// of its symlinks.
    fn check_hardlink(&self, path: &str, target: &str) -> Result<()> {
        let fix = "Fix the image: store a copy of the file, or order the layer so the file comes first";
        for (end, _) in target.match_indices('/') {
            let parent = &target[..end];
            if let Some(Node::Symlink(to)) = self.nodes.get(parent) {
                bail!(
                    "hard link to {target:?}, which is reached through the symlink {parent:?} \
                     (-> {to:?}) of this layer; a hard link must point to a regular file of the same \
                     layer. {fix} ({RULES_HINT})"
                );
            }
        }
        match self.nodes.get(target) {
            Some(Node::File) if target == path => {
                bail!("hard link to itself; a hard link must point to another file. {fix} ({RULES_HINT})")
            }
            Some(Node::File) => Ok(()),
            Some(other) => bail!(
                "hard link to {target:?}, which is a {} of this layer; a hard link must point to a \
                 regular file of the same layer. {fix} ({RULES_HINT})",
                other.what()
            ),
            None => bail!(
                "hard link to {target:?}, which is not an earlier entry of the same layer (hard links \
                 may only point to a regular file that comes before them in their own layer). {fix} \
                 ({RULES_HINT})"
            ),
        }
    }
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
            ".." => bail!(
                "path {raw:?} contains `..`; refusing a layer entry that could escape the root. Fix \
                 the image: write the path without `..` ({RULES_HINT})"
            ),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Checks a name from the archive (`what`: "path", "link target"): UTF-8, at most
/// [`MAX_PATH_LEN`] bytes, no NUL or newline.
fn checked_name(bytes: &[u8], what: &str) -> Result<String> {
    if bytes.len() > MAX_PATH_LEN {
        bail!(
            "the {what} is {} bytes long; at most {MAX_PATH_LEN} (PATH_MAX) are allowed ({RULES_HINT})",
            bytes.len()
        );
    }
    let text = utf8(bytes, what)?;
    if let Some(c) = text.chars().find(|c| *c == '\0' || *c == '\n') {
        bail!(
            "the {what} {text:?} contains a {}; names in a layer may not (they break the tools and \
             logs that handle them). Fix the image: rename the file ({RULES_HINT})",
            if c == '\0' { "NUL" } else { "newline" }
        );
    }
    Ok(text)
}

/// [`normalize_path`] with every component at most [`MAX_NAME_LEN`] bytes.
fn normalize_checked(raw: &str) -> Result<String> {
    let path = normalize_path(raw)?;
    if let Some(long) = path.split('/').find(|c| c.len() > MAX_NAME_LEN) {
        bail!(
            "the path component {:?}… is {} bytes long; at most {MAX_NAME_LEN} (NAME_MAX) are allowed \
             ({RULES_HINT})",
            long.chars().take(40).collect::<String>(),
            long.len()
        );
    }
    Ok(path)
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        anyhow!(
            "{what} {:?} is not UTF-8; berth reads only UTF-8 names. Fix the image: rename the file \
             ({RULES_HINT})",
            String::from_utf8_lossy(bytes)
        )
    })
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

/// A PAX record's number: decimal, optionally with a fraction (times); too large for a `u64`
/// or not a number is an error. A negative time (before 1970) counts as 0.
fn pax_number(key: &str, value: std::result::Result<&str, std::str::Utf8Error>) -> Result<u64> {
    let bad = |value: &str, why: &str| {
        anyhow!("PAX record {key}={value:?}: {why}. Fix the image: re-create the layer ({RULES_HINT})")
    };
    let value = value.map_err(|_| bad("…", "not UTF-8"))?;
    let whole = value.split('.').next().unwrap_or_default();
    if key == "mtime"
        && whole.starts_with('-')
        && whole.len() > 1
        && whole[1..].bytes().all(|b| b.is_ascii_digit())
    {
        return Ok(0);
    }
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(value, "not a number"));
    }
    whole.parse().map_err(|_| bad(value, "the number is out of range"))
}

/// Converts a tar entry; `None` for entries that are skipped (the root directory, aufs
/// metadata, tar-internal headers). Checks the rules that concern one entry alone: names,
/// `..`, numbers.
fn convert<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Item>> {
    let raw_path = checked_name(&entry.path_bytes(), "path")?;
    let path = normalize_checked(&raw_path)?;
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
        checked_name(&bytes, "link target")
    };
    let mut kind = match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => {
            let target = link("symlink")?;
            if target.is_empty() {
                bail!("symlink with an empty target ({RULES_HINT})");
            }
            EntryKind::Symlink(target)
        }
        tar::EntryType::Link => {
            let raw_target = link("hard link")?;
            let target =
                normalize_checked(&raw_target).with_context(|| format!("hard link target {raw_target:?}"))?;
            if target.is_empty() {
                bail!("hard link to the root directory ({RULES_HINT})");
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

    // PAX records override the header's numeric fields (large ids, precise times). A number
    // that does not parse is an error, not ignored: other readers could read it otherwise.
    if let Some(extensions) = entry.pax_extensions().context("bad PAX header")? {
        for ext in extensions {
            let ext = ext.context("bad PAX record")?;
            match ext.key() {
                Ok(key @ "uid") => uid = pax_number(key, ext.value())?,
                Ok(key @ "gid") => gid = pax_number(key, ext.value())?,
                Ok(key @ "mtime") => mtime = pax_number(key, ext.value())?,
                // (the tar reader took the size from it when it parsed; one that does not
                // parse was ignored there)
                Ok(key @ "size") => {
                    pax_number(key, ext.value())?;
                }
                _ => {}
            }
        }
    }
    let uid = u32::try_from(uid).map_err(|_| anyhow!("uid {uid} out of range ({RULES_HINT})"))?;
    let gid = u32::try_from(gid).map_err(|_| anyhow!("gid {gid} out of range ({RULES_HINT})"))?;

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

    /// Runs `entries` through the layer rules; the index and message of the first refusal.
    fn rules(entries: &[(&str, EntryKind)]) -> Result<(), (usize, String)> {
        let mut rules = Rules::default();
        for (i, (path, kind)) in entries.iter().enumerate() {
            let item = match path.strip_suffix("/.wh..wh..opq") {
                Some(dir) => Item::Opaque(dir.to_string()),
                None => Item::Entry(LayerEntry {
                    path: path.to_string(),
                    kind: kind.clone(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                }),
            };
            rules.check(&item).map_err(|e| (i, format!("{e:#}")))?;
        }
        Ok(())
    }

    fn sym(target: &str) -> EntryKind {
        EntryKind::Symlink(target.to_string())
    }

    fn link(target: &str) -> EntryKind {
        EntryKind::Hardlink(target.to_string())
    }

    #[test]
    fn nothing_through_a_symlink_of_the_same_layer() {
        use EntryKind::*;
        for target in ["/", "/etc", "..", "../../x", "sub", "."] {
            for below in ["a/b", "a/b/c", "a/.wh.b/x"] {
                let (at, err) = rules(&[("a", sym(target)), (below, File)]).unwrap_err();
                assert_eq!(at, 1);
                assert!(err.contains("through the symlink \"a\""), "{err}");
                assert!(err.contains("What a layer may contain"), "{err}");
            }
            let (at, _) = rules(&[("d", Dir), ("d/a", sym(target)), ("d/a/x", Dir)]).unwrap_err();
            assert_eq!(at, 2);
            // An opaque marker inside a symlink would make PID 1 mark the symlink's target.
            assert!(rules(&[("a", sym(target)), ("a/.wh..wh..opq", File)]).is_err());
        }
        // Nor inside a file.
        let (_, err) = rules(&[("f", File), ("f/x", File)]).unwrap_err();
        assert!(err.contains("regular file, not a directory"), "{err}");
        // A symlink replaced by a file, then entries beside it: fine.
        rules(&[("a", sym("/")), ("a", File), ("b", sym("a")), ("c/d", File)]).unwrap();
    }

    #[test]
    fn hard_links_point_to_earlier_files_of_the_layer() {
        use EntryKind::*;
        rules(&[("bin/sh", File), ("bin/ash", link("bin/sh")), ("bin/dash", link("bin/ash"))]).unwrap();
        let refused: &[(&[(&str, EntryKind)], &str)] = &[
            (&[("l", link("missing"))], "not an earlier entry"),
            (&[("l", link("f")), ("f", File)], "not an earlier entry"),
            (&[("d", Dir), ("l", link("d"))], "which is a directory"),
            (&[("s", sym("f")), ("f", File), ("l", link("s"))], "which is a symlink"),
            (&[("p", Fifo), ("l", link("p"))], "device node, fifo or whiteout"),
            (&[("d/f", File), ("s", sym("d")), ("l", link("s/f"))], "through the symlink \"s\""),
            (&[("f", File), ("f", link("f"))], "to itself"),
            (&[("f", File), ("f", sym("/")), ("l", link("f"))], "which is a symlink"),
        ];
        for (entries, wanted) in refused {
            let (_, err) = rules(entries).unwrap_err();
            assert!(err.contains(wanted), "{entries:?}: {err}");
        }
    }

    #[test]
    fn a_filled_directory_is_not_replaced() {
        use EntryKind::*;
        for kind in [sym("/"), File, link("x"), CharDev(0, 0), Fifo, BlockDev(8, 0)] {
            let with_x = |path: &'static str| [("x", File), ("a", Dir), (path, File), ("a", kind.clone())];
            let (at, err) = rules(&with_x("a/f")).unwrap_err();
            assert_eq!(at, 3, "{kind:?}: {err}");
            assert!(err.contains("replacing the directory \"a\""), "{err}");
            // Implied directories and opaque markers fill a directory too.
            assert!(rules(&[("a/b/f", File), ("a", kind.clone())]).is_err());
            assert!(rules(&[("a/.wh..wh..opq", File), ("a", kind.clone())]).is_err());
        }
        // An empty directory may be replaced; a directory written twice keeps its contents.
        rules(&[("a", Dir), ("a", sym("/"))]).unwrap();
        assert!(rules(&[("a", Dir), ("a/f", File), ("a", Dir), ("a", sym("/"))]).is_err());
        // A directory over a symlink of the layer is ambiguous.
        let (_, err) = rules(&[("a", sym("/etc")), ("a", Dir)]).unwrap_err();
        assert!(err.contains("a directory replacing the symlink \"a\""), "{err}");
        // A directory over a file: later wins, as in tar.
        rules(&[("a", File), ("a", Dir), ("a/f", File)]).unwrap();
    }

    #[test]
    fn names_and_numbers() {
        assert!(checked_name(&vec![b'a'; MAX_PATH_LEN], "path").is_ok());
        let err = format!("{:#}", checked_name(&vec![b'a'; MAX_PATH_LEN + 1], "path").unwrap_err());
        assert!(err.contains("4097 bytes"), "{err}");
        assert!(format!("{:#}", checked_name(b"a\nb", "path").unwrap_err()).contains("newline"));
        assert!(format!("{:#}", checked_name(b"a\0b", "path").unwrap_err()).contains("NUL"));
        assert!(format!("{:#}", checked_name(b"a\xffb", "path").unwrap_err()).contains("not UTF-8"));
        let long = "n".repeat(MAX_NAME_LEN);
        assert!(normalize_checked(&format!("a/{long}")).is_ok());
        assert!(normalize_checked(&format!("a/{long}n/b")).unwrap_err().to_string().contains("256 bytes"));

        assert_eq!(pax_number("uid", Ok("4294967295")).unwrap(), u32::MAX as u64);
        assert_eq!(pax_number("mtime", Ok("1700000000.123456789")).unwrap(), 1_700_000_000);
        assert_eq!(pax_number("mtime", Ok("-86400.5")).unwrap(), 0);
        for bad in ["18446744073709551616", "99999999999999999999999999", "", "-1", "0x10", " 1", "1e3"] {
            assert!(pax_number("uid", Ok(bad)).is_err(), "{bad}");
            assert!(pax_number("size", Ok(bad)).is_err(), "{bad}");
        }
        assert!(pax_number("mtime", Ok("99999999999999999999999")).is_err());
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
