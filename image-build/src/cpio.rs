//! A reproducible writer for the "newc" (`070701`) cpio format, the format the Linux kernel
//! unpacks as an initramfs (`init/initramfs.c`).
//!
//! Reproducibility: every entry gets the same mtime (chosen by the caller, e.g. from
//! `SOURCE_DATE_EPOCH`), inode numbers are assigned sequentially in call order, the device of
//! every entry is 0:0 and the check field is 0. The same sequence of calls therefore gives the
//! same bytes; sorting entries is the caller's job.
//!
//! Facts about the kernel's unpacker this writer relies on (checked against `init/initramfs.c`,
//! Linux 5.x–6.x, functions `do_name`, `clean_path`, `maybe_link`, `do_symlink`):
//!
//! - Paths are relative: the unpacker runs with `/` as its working directory.
//! - Missing parent directories are **not** created (`mkdir`/`open` just fail and the entry is
//!   silently lost), so [`CpioWriter`] emits every missing parent (mode 0755, owner 0:0) first.
//! - The same path may appear twice; the later entry wins, with these rules from `clean_path`
//!   (an existing entry of a *different* file type is removed first: `rmdir` for a directory,
//!   `unlink` otherwise):
//!   - regular file over regular file: reopened with `O_TRUNC` and rewritten (contents, mode,
//!     owner replaced). If the old file is hard-linked, the shared inode is rewritten.
//!   - directory over directory: `mkdir` fails with `EEXIST`, then owner and mode are applied to
//!     the existing directory; its contents stay.
//!   - symlink over anything: the old entry is removed first (`clean_path(name, 0)`).
//!   - a file type replacing a **non-empty** directory fails (`rmdir` fails), and the new entry
//!     is silently dropped.
//!   - device node/fifo over one of the same type: `mknod` fails with `EEXIST`; owner and mode
//!     are applied to the old node but its device number stays the old one.
//! - Hard links: an entry with `nlink >= 2` is remembered by (dev major, dev minor, ino, file
//!   type) in `find_link`; a later entry with the same key is created with `link(first, later)`
//!   and then opened *without* `O_TRUNC`, so it must carry size 0 (and the same mode/owner, which
//!   are applied to the shared inode). The data must travel with the **first** entry, and that
//!   first entry must already say `nlink >= 2`: a file written with `nlink == 1` is never
//!   remembered, and re-announcing it later would truncate it. The table is freed at each
//!   `TRAILER!!!`, so links never span concatenated archives. See [`CpioWriter::hardlink`] for
//!   how this writer meets these rules.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};

/// Linux `PATH_MAX`: the unpacker silently skips names (with NUL) and symlink targets longer
/// than this.
const PATH_MAX: usize = 4096;
/// The archive is padded with NULs to a multiple of this after the trailer, as GNU cpio does.
const BLOCK_SIZE: u64 = 512;

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const PERMISSION_BITS: u32 = 0o7777;
const S_IFMT: u32 = 0o170000;

/// Errors from [`CpioWriter`].
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Writing the archive or reading a file's contents failed.
    #[error("cpio: I/O error while writing `{path}`: {source}")]
    Io {
        /// The archive path of the entry being written (`TRAILER!!!` for the trailer).
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The path cannot be stored in an initramfs.
    #[error("cpio: invalid archive path `{path}`: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file's reader ended before the announced size.
    #[error("cpio: `{path}` announced {expected} bytes but its reader gave only {actual}")]
    ShortRead {
        /// The archive path.
        path: String,
        /// The size given to [`CpioWriter::file`].
        expected: u64,
        /// The bytes actually read.
        actual: u64,
    },
    /// The file is too large for the newc format (4 GiB - 1 bytes at most).
    #[error("cpio: `{path}` is {size} bytes; newc stores at most 4294967295 bytes per file")]
    TooLarge {
        /// The archive path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// [`CpioWriter::hardlink`] was called for a target that cannot take a hard link.
    #[error(
        "cpio: cannot hard-link `{path}` to `{target}`: {reason} \
         (call `expect_hardlink_target(\"{target}\")` before writing the target file)"
    )]
    BadLinkTarget {
        /// The new name.
        path: String,
        /// The existing name.
        target: String,
        /// Why the link cannot be written.
        reason: &'static str,
    },
}

/// The inode data a later hard link must repeat.
#[derive(Clone, Copy, Debug)]
struct LinkableInode {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// One newc header's variable fields (the rest are fixed by the writer).
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// A streaming, reproducible newc cpio writer for Linux initramfs images.
///
/// Paths are relative (`"usr/bin/app"`, no leading `/`, no `.`/`..`/empty components). Missing
/// parent directories are emitted automatically as mode 0755 owned by 0:0, once. The permission
/// bits of `mode` arguments (`0o7777`, including setuid/setgid/sticky) are used; file-type bits
/// are set by the method.
pub struct CpioWriter<W: Write> {
    out: W,
    mtime: u32,
    /// Bytes written so far (for 4-byte alignment and the final block padding).
    offset: u64,
    /// The last inode number handed out; 0 is left for the trailer.
    next_ino: u32,
    /// Directories known to exist in the unpacked tree (written explicitly or implicitly).
    dirs: BTreeSet<String>,
    /// Paths announced with [`CpioWriter::expect_hardlink_target`] and not yet written.
    expected_targets: BTreeSet<String>,
    /// Regular files written with `nlink >= 2`, so later entries can link to them.
    linkable: HashMap<String, LinkableInode>,
    /// Memory the files take once the kernel unpacked them: each rounded up to whole pages.
    unpacked_pages_bytes: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Start an archive on `w`; every entry will carry modification time `mtime` (seconds since
    /// the epoch; the caller decides, e.g. `SOURCE_DATE_EPOCH` or 0).
    pub fn new(w: W, mtime: u32) -> Self {
        CpioWriter {
            out: w,
            mtime,
            offset: 0,
            next_ino: 0,
            dirs: BTreeSet::new(),
            expected_targets: BTreeSet::new(),
            linkable: HashMap::new(),
            unpacked_pages_bytes: 0,
        }
    }

    /// Write a directory. Writing an existing directory again updates its mode and owner.
    pub fn dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> Result<(), CpioError> {
        let path = self.prepare(path)?;
        self.entry_header(&path, S_IFDIR | (mode & PERMISSION_BITS), uid, gid, 0, (0, 0))?;
        self.dirs.insert(path);
        Ok(())
    }

    /// Write a regular file of exactly `size` bytes read from `reader`.
    ///
    /// If `path` was announced with [`CpioWriter::expect_hardlink_target`], the entry is written
    /// with `nlink = 2` so that [`CpioWriter::hardlink`] can later add names for it.
    pub fn file<R: Read>(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        reader: R,
    ) -> Result<(), CpioError> {
        let path = self.prepare(path)?;
        self.unpacked_pages_bytes += size.div_ceil(4096) * 4096;
        // The newc format stores sizes in 8 hex digits: a file over u32::MAX bytes cannot be stored.
        let Ok(size32) = u32::try_from(size) else {
            return Err(CpioError::TooLarge { path, size });
        };
        let mode = S_IFREG | (mode & PERMISSION_BITS);
        let linkable = self.expected_targets.remove(&path);
        let ino = self.alloc_ino();
        let header = Header {
            ino,
            mode,
            uid,
            gid,
            nlink: if linkable { 2 } else { 1 },
            size: size32,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_header(&path, &header)?;
        let copied =
            io::copy(&mut reader.take(size), &mut self.counted()).map_err(|source| io_err(&path, source))?;
        if copied != size {
            return Err(CpioError::ShortRead { path, expected: size, actual: copied });
        }
        self.pad4(&path)?;
        if linkable {
            self.linkable.insert(path, LinkableInode { ino, mode, uid, gid });
        } else {
            // A plain file replacing an earlier linkable one is no longer a link target.
            self.linkable.remove(&path);
        }
        Ok(())
    }

    /// Write a symbolic link at `path` pointing to `target` (stored verbatim; may be relative or
    /// absolute). Symlinks always have mode 0777.
    pub fn symlink(&mut self, path: &str, target: &str, uid: u32, gid: u32) -> Result<(), CpioError> {
        let path = self.prepare(path)?;
        if target.is_empty() || target.len() > PATH_MAX || target.contains('\0') {
            return Err(CpioError::InvalidPath {
                path,
                reason: "symlink target must be 1 to 4096 bytes without NUL",
            });
        }
        // At most PATH_MAX (4096) bytes, checked above: the length fits a u32.
        #[allow(clippy::cast_possible_truncation)]
        let size = target.len() as u32;
        let header = Header {
            ino: self.alloc_ino(),
            mode: S_IFLNK | 0o777,
            uid,
            gid,
            nlink: 1,
            size,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_header(&path, &header)?;
        self.write_all(&path, target.as_bytes())?;
        self.pad4(&path)
    }

    /// A device node of file type `kind` (`S_IFCHR` or `S_IFBLK`).
    fn device_node(
        &mut self,
        path: &str,
        kind: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        dev: (u32, u32),
    ) -> Result<(), CpioError> {
        let path = self.prepare(path)?;
        self.entry_header(&path, kind | (mode & PERMISSION_BITS), uid, gid, 0, dev)
    }

    /// Write a character device node with device number `major:minor`.
    pub fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.device_node(path, S_IFCHR, mode, uid, gid, (major, minor))
    }

    /// Write a block device node with device number `major:minor`.
    pub fn block_dev(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.device_node(path, S_IFBLK, mode, uid, gid, (major, minor))
    }

    /// Write a named pipe (fifo).
    pub fn fifo(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> Result<(), CpioError> {
        let path = self.prepare(path)?;
        let mode = S_IFIFO | (mode & PERMISSION_BITS);
        self.entry_header(&path, mode, uid, gid, 0, (0, 0))
    }

    /// Announce that the regular file `path`, not written yet, will get hard links through
    /// [`CpioWriter::hardlink`].
    ///
    /// The kernel only links an entry to an earlier one if that earlier entry, the one carrying
    /// the data, already said `nlink >= 2`; a streaming writer cannot change a header it has
    /// written, so link targets must be known before they are written (a tar importer can
    /// collect them in a first pass over the headers; a directory walk sees `st_nlink > 1`).
    /// Announcing a path that never gets a link is harmless.
    pub fn expect_hardlink_target(&mut self, path: &str) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.expected_targets.insert(path);
        Ok(())
    }

    /// Write `path` as another name (hard link) of the regular file `existing_path`.
    ///
    /// `existing_path` must have been announced with [`CpioWriter::expect_hardlink_target`]
    /// before it was written; otherwise this returns [`CpioError::BadLinkTarget`] rather than
    /// write an entry the kernel would unpack wrongly. The entry repeats the target's inode
    /// number, mode and owner with size 0, which is what the kernel's `maybe_link()` and GNU
    /// `cpio -i` turn into a `link(2)`.
    pub fn hardlink(&mut self, path: &str, existing_path: &str) -> Result<(), CpioError> {
        let path = self.prepare(path)?;
        let target = normalize(existing_path)?;
        let Some(inode) = self.linkable.get(&target).copied() else {
            let reason = if self.expected_targets.contains(&target) {
                "the target has not been written yet"
            } else {
                "the target was not written as a hard-link target"
            };
            return Err(CpioError::BadLinkTarget { path, target, reason });
        };
        if path == target {
            return Err(CpioError::BadLinkTarget {
                path,
                target,
                reason: "a path cannot be a hard link to itself",
            });
        }
        let header = Header {
            ino: inode.ino,
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            nlink: 2,
            size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_header(&path, &header)?;
        self.linkable.insert(path, inode);
        Ok(())
    }

    /// The memory the files written so far take once unpacked (each in whole 4 KiB pages;
    /// hard links share their target's).
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked_pages_bytes
    }

    /// Write the `TRAILER!!!` entry, pad the archive with NULs to a multiple of 512 bytes and
    /// return the underlying writer (not flushed beyond what `write_all` does).
    pub fn finish(mut self) -> Result<W, CpioError> {
        const TRAILER: &str = "TRAILER!!!";
        let header =
            Header { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, size: 0, rdev_major: 0, rdev_minor: 0 };
        // The trailer carries mtime 0, as GNU cpio writes it.
        self.mtime = 0;
        self.write_header(TRAILER, &header)?;
        let rem = self.offset % BLOCK_SIZE;
        if rem != 0 {
            // rem < BLOCK_SIZE (512): the padding length fits any usize.
            #[allow(clippy::cast_possible_truncation)]
            let pad = (BLOCK_SIZE - rem) as usize;
            self.write_all(TRAILER, &vec![0u8; pad])?;
        }
        self.out.flush().map_err(|e| io_err(TRAILER, e))?;
        Ok(self.out)
    }

    /// Validate `path`, emit its missing parent directories and forget what it replaces.
    fn prepare(&mut self, path: &str) -> Result<String, CpioError> {
        let path = normalize(path)?;
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            if !self.dirs.contains(parent) {
                let parent = parent.to_string();
                self.entry_header(&parent, S_IFDIR | 0o755, 0, 0, 0, (0, 0))?;
                self.dirs.insert(parent);
            }
            end += pos + 1;
        }
        // Whatever this entry is, an earlier directory of that name (and its subtree) may be
        // gone after it; forget them so later children re-create their parents.
        if self.dirs.contains(&path) {
            let prefix = format!("{path}/");
            let stale: Vec<String> =
                self.dirs.range(prefix.clone()..).take_while(|d| d.starts_with(&prefix)).cloned().collect();
            for d in stale {
                self.dirs.remove(&d);
            }
            self.dirs.remove(&path);
        }
        self.linkable.remove(&path);
        Ok(path)
    }

    /// Write a header for a data-less entry with a fresh inode number.
    fn entry_header(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        size: u32,
        rdev: (u32, u32),
    ) -> Result<(), CpioError> {
        let header = Header {
            ino: self.alloc_ino(),
            mode,
            uid,
            gid,
            nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
            size,
            rdev_major: rdev.0,
            rdev_minor: rdev.1,
        };
        self.write_header(path, &header)
    }

    fn alloc_ino(&mut self) -> u32 {
        self.next_ino = self.next_ino.wrapping_add(1).max(1);
        self.next_ino
    }

    /// Write the 110-byte header, the NUL-terminated name and the padding after it.
    fn write_header(&mut self, path: &str, h: &Header) -> Result<(), CpioError> {
        let namesize = path.len() + 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            self.mtime,
            h.size,
            0, // dev major
            0, // dev minor
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0, // check
        );
        debug_assert_eq!(header.len(), 110);
        self.write_all(path, header.as_bytes())?;
        self.write_all(path, path.as_bytes())?;
        self.write_all(path, &[0])?;
        self.pad4(path)
    }

    fn pad4(&mut self, path: &str) -> Result<(), CpioError> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.write_all(path, &[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }

    fn write_all(&mut self, path: &str, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes).map_err(|e| io_err(path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn counted(&mut self) -> Counted<'_, W> {
        Counted { out: &mut self.out, offset: &mut self.offset }
    }
}

/// Counts the bytes `io::copy` writes through it.
struct Counted<'a, W: Write> {
    out: &'a mut W,
    offset: &'a mut u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        *self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn io_err(path: &str, source: io::Error) -> CpioError {
    CpioError::Io { path: path.to_string(), source }
}

/// Check an archive path: relative, no empty, `.` or `..` components, no NUL, fits `PATH_MAX`.
/// A single trailing `/` is dropped.
fn normalize(path: &str) -> Result<String, CpioError> {
    let invalid = |reason| CpioError::InvalidPath { path: path.to_string(), reason };
    let p = path.strip_suffix('/').unwrap_or(path);
    if p.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if p.starts_with('/') {
        return Err(invalid("paths must be relative (no leading `/`)"));
    }
    if p.contains('\0') {
        return Err(invalid("paths cannot contain NUL"));
    }
    if p.len() + 1 > PATH_MAX {
        return Err(invalid("the kernel skips names longer than PATH_MAX (4096)"));
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(invalid("paths cannot have empty, `.` or `..` components"));
    }
    if p == "TRAILER!!!" {
        return Err(invalid("`TRAILER!!!` marks the end of an archive"));
    }
    Ok(p.to_string())
}

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The path as stored (relative, no leading `/`).
    pub path: String,
    /// `st_mode` (file type and permissions).
    pub mode: u32,
    /// The file's bytes (empty for non-files).
    pub data: Vec<u8>,
}

/// Reads every entry of an (uncompressed) newc archive up to the trailer; concatenated
/// archives and zero padding between them are read through. Malformed input is an error.
pub fn read_archive(mut r: impl Read) -> io::Result<Vec<ReadEntry>> {
    let mut all = Vec::new();
    r.read_to_end(&mut all)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut at = 0usize;
    let mut out = Vec::new();
    loop {
        while at < all.len() && all[at] == 0 {
            at += 1;
        }
        if at >= all.len() {
            return Ok(out);
        }
        let header = all.get(at..at + 110).ok_or_else(|| bad("truncated cpio header"))?;
        if &header[..6] != b"070701" {
            return Err(bad("not a newc cpio archive"));
        }
        let field = |i: usize| -> io::Result<usize> {
            let text =
                std::str::from_utf8(&header[6 + i * 8..14 + i * 8]).map_err(|_| bad("bad cpio header"))?;
            usize::from_str_radix(text, 16).map_err(|_| bad("bad cpio header"))
        };
        let mode = u32::try_from(field(1)?).map_err(|_| bad("bad cpio header"))?;
        let size = field(6)?;
        let name_len = field(11)?;
        let name_start = at + 110;
        let name = all
            .get(name_start..name_start + name_len.saturating_sub(1))
            .ok_or_else(|| bad("truncated cpio name"))?;
        let name = String::from_utf8_lossy(name).to_string();
        let data_start = (name_start + name_len).div_ceil(4) * 4;
        let data = all.get(data_start..data_start + size).ok_or_else(|| bad("truncated cpio data"))?;
        at = (data_start + size).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            continue;
        }
        out.push(ReadEntry { path: name, mode, data: data.to_vec() });
    }
}
