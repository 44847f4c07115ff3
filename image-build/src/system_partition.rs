//! The system partition: an index, then squashfs pieces — the base (the boot plan, the data
//! disk's tools, the directories the other pieces are mounted on), the kernel modules, and every
//! image layer once — each laid out exactly as overlayfs reads a lower layer: whiteouts as
//! `0:0` character devices, opaque directories with `trusted.overlay.opaque=y`, owners, modes,
//! hard links and device nodes as the layer has them. The layout (the index, names, where PID 1
//! mounts and binds each piece) is [`berth_schema::system_partition`]'s. One squashfs per piece
//! makes a piece the same bytes (the same digest) in every image that holds it: an update ships
//! the pieces the machine lacks and copies the rest from its running slot.
//!
//! Made without root and without a loop device: berth writes each piece's content as a tar
//! stream (PAX records carry the xattrs; everything under one directory that `tar2sqfs
//! --root-becomes` turns into the root, so the root keeps its mode and xattrs) into `tar2sqfs`
//! (Debian's `squashfs-tools-ng`), which lays out the filesystem from the stream alone.
//! squashfs rather than erofs: Debian 12's `mkfs.erofs` (1.5) reads only a directory tree,
//! whose owners and device nodes need root to exist; `tar2sqfs` keeps every time stamp from the
//! stream and pads the image to whole 4 KiB blocks, so the same input gives the same bytes and
//! the dm-verity tree (`crate::verity`), appended by [`write_verified`], covers it block for
//! block.

use std::collections::BTreeSet;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use berth_schema::plan::layer_dir_name;
use berth_schema::system_partition::{Index, Piece, LAYERS, MODULES, PLAN};
use berth_schema::verity::VeritySpec;

use crate::initramfs::layer_entry_dest;
use crate::layer::{self, EntryKind, LayerSummary};
use crate::source::LayerBlob;

/// The xattr that makes an overlayfs directory opaque.
const OPAQUE_XATTR: &str = "SCHILY.xattr.trusted.overlay.opaque";

/// A file of the build machine put on the partition.
#[derive(Debug, Clone)]
pub struct PackedFile {
    /// Its path on the partition (relative, `/`-separated).
    pub dest: String,
    /// The file to copy.
    pub source: PathBuf,
    /// Its mode on the partition.
    pub mode: u32,
}

/// Everything the partition holds.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    /// The boot plan (JSON), stored as [`PLAN`].
    pub plan_json: &'a [u8],
    /// Modules and tools, in this order (their directories are made as needed).
    pub files: &'a [PackedFile],
    /// The layers; one listed twice is stored once.
    pub layers: &'a [(&'a LayerBlob, &'a LayerSummary)],
}

/// The directory of each piece's tar stream that becomes the squashfs root.
const ROOT: &str = "r";

/// One piece's content.
#[derive(Debug, Clone)]
pub enum PieceContent<'a> {
    /// The plan, the tools (paths under `tools/`), and the empty directories the other pieces
    /// are mounted on.
    Base {
        /// The boot plan, stored as [`PLAN`].
        plan_json: &'a [u8],
        /// Files at their `dest`.
        files: Vec<&'a PackedFile>,
        /// Mount points (`modules`, `layers/<hex>`).
        mount_points: Vec<String>,
    },
    /// Files whose `dest` starts with `strip/`, stored without it.
    Files {
        /// The files.
        files: Vec<&'a PackedFile>,
        /// The prefix they lose (`modules`).
        strip: &'a str,
    },
    /// One layer.
    Layer(&'a LayerBlob, &'a LayerSummary),
}

/// The pieces of `content`, with where each is mounted (relative to the mount point): the
/// base, the modules (when there are any), then each distinct layer in order of first use.
pub fn pieces<'a>(content: &Content<'a>) -> Vec<(String, PieceContent<'a>)> {
    let modules_prefix = format!("{MODULES}/");
    let (modules, others): (Vec<&PackedFile>, Vec<&PackedFile>) =
        content.files.iter().partition(|f| f.dest.starts_with(&modules_prefix));
    let mut seen = BTreeSet::new();
    let layers: Vec<(String, PieceContent<'a>)> = content
        .layers
        .iter()
        .filter(|(blob, _)| seen.insert(blob.digest.as_str()))
        .map(|(blob, summary)| {
            (format!("{LAYERS}/{}", layer_dir_name(&blob.digest)), PieceContent::Layer(blob, summary))
        })
        .collect();
    let mut mount_points: Vec<String> = Vec::new();
    if !modules.is_empty() {
        mount_points.push(MODULES.to_string());
    }
    mount_points.extend(layers.iter().map(|(path, _)| path.clone()));
    let mut out = vec![(
        String::new(),
        PieceContent::Base { plan_json: content.plan_json, files: others, mount_points },
    )];
    if !modules.is_empty() {
        out.push((MODULES.to_string(), PieceContent::Files { files: modules, strip: MODULES }));
    }
    out.extend(layers);
    out
}

/// Writes one piece's content as a tar stream, everything under [`ROOT`]; every entry stamped
/// `mtime` unless the layer has its own.
pub fn write_tar<W: Write>(out: W, piece: &PieceContent<'_>, mtime: u64) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(mtime);
        h
    };
    let files = |tar: &mut tar::Builder<W>, files: &[&PackedFile], strip: &str| -> Result<()> {
        let mut dirs = BTreeSet::new();
        for file in files {
            let dest = match strip {
                "" => file.dest.clone(),
                strip => file
                    .dest
                    .strip_prefix(strip)
                    .and_then(|d| d.strip_prefix('/'))
                    .with_context(|| format!("internal: {} is not under {strip}/", file.dest))?
                    .to_string(),
            };
            let dest = format!("{ROOT}/{dest}");
            let parents = dest.match_indices('/').map(|(at, _)| &dest[..at]).skip(1);
            for dir in parents {
                if dirs.insert(dir.to_string()) {
                    tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), dir, &[][..])?;
                }
            }
            let f = std::fs::File::open(&file.source)
                .with_context(|| format!("opening {}", file.source.display()))?;
            let len = f.metadata()?.len();
            tar.append_data(&mut header(tar::EntryType::Regular, file.mode, len), &dest, f)
                .with_context(|| format!("writing {} to the system partition", file.dest))?;
        }
        Ok(())
    };
    match piece {
        PieceContent::Base { plan_json, files: packed, mount_points } => {
            tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), ROOT, &[][..])?;
            let plan = format!("{ROOT}/{PLAN}");
            tar.append_data(
                &mut header(tar::EntryType::Regular, 0o644, plan_json.len() as u64),
                plan,
                *plan_json,
            )?;
            files(&mut tar, packed, "")?;
            let mut dirs = BTreeSet::new();
            for point in mount_points {
                for (at, _) in point.match_indices('/').chain([(point.len(), "")]) {
                    let dir = format!("{ROOT}/{}", &point[..at]);
                    if dirs.insert(dir.clone()) {
                        tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), dir, &[][..])?;
                    }
                }
            }
        }
        PieceContent::Files { files: packed, strip } => {
            tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), ROOT, &[][..])?;
            files(&mut tar, packed, strip)?;
        }
        PieceContent::Layer(blob, summary) => write_layer_tar(&mut tar, blob, summary, mtime)?,
    }
    Ok(tar.into_inner()?)
}

/// One layer's entries under [`ROOT`], as overlayfs reads a lower layer.
fn write_layer_tar<W: Write>(
    tar: &mut tar::Builder<W>,
    blob: &LayerBlob,
    summary: &LayerSummary,
    mtime: u64,
) -> Result<()> {
    crate::blobs::validate_digest(&blob.digest).with_context(|| format!("layer {}", blob.digest))?;
    if summary.opaque_dirs.iter().any(String::is_empty) {
        tar.append_pax_extensions([(OPAQUE_XATTR, &b"y"[..])])?;
    }
    let mut root = tar::Header::new_ustar();
    root.set_entry_type(tar::EntryType::Directory);
    root.set_mode(0o755);
    root.set_size(0);
    root.set_mtime(mtime);
    tar.append_data(&mut root, ROOT, &[][..])?;
    layer::for_each_entry(blob, |e, data| {
        let path = layer_entry_dest(ROOT, &e.path)?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        h.set_mtime(e.mtime);
        h.set_size(0);
        let kind = match &e.kind {
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::File => tar::EntryType::Regular,
            EntryKind::Symlink(_) => tar::EntryType::Symlink,
            EntryKind::Hardlink(_) => tar::EntryType::Link,
            EntryKind::CharDev(..) => tar::EntryType::Char,
            EntryKind::BlockDev(..) => tar::EntryType::Block,
            EntryKind::Fifo => tar::EntryType::Fifo,
        };
        h.set_entry_type(kind);
        if let EntryKind::CharDev(major, minor) | EntryKind::BlockDev(major, minor) = e.kind {
            h.set_device_major(major)?;
            h.set_device_minor(minor)?;
        }
        if e.kind == EntryKind::Dir && summary.opaque_dirs.contains(&e.path) {
            tar.append_pax_extensions([(OPAQUE_XATTR, &b"y"[..])])?;
        }
        match &e.kind {
            EntryKind::File => {
                h.set_size(e.size);
                tar.append_data(&mut h, &path, data)?;
            }
            EntryKind::Symlink(target) => tar.append_link(&mut h, &path, target)?,
            EntryKind::Hardlink(target) => tar.append_link(&mut h, &path, layer_entry_dest(ROOT, target)?)?,
            _ => tar.append_data(&mut h, &path, &[][..])?,
        }
        Ok(())
    })
    .with_context(|| format!("writing layer {} to the system partition", blob.digest))
}

/// Makes the squashfs `out` from one piece's content (see [`write_tar`]), zstd-compressed,
/// padded to whole 4 KiB blocks. `out` is written beside itself and renamed into place.
pub fn write_squashfs(out: &Path, piece: &PieceContent<'_>, mtime: u64) -> Result<()> {
    let staging = out.with_extension("partial");
    let mut child = Command::new("tar2sqfs")
        .args(["--quiet", "--force", "--no-skip", "--compressor", "zstd", "--dev-block-size", "4096"])
        // Symlinks stay as the layer wrote them (only hard links are relative to the root).
        .args(["--root-becomes", ROOT, "--no-symlink-retarget"])
        .arg("--defaults")
        .arg(format!("mtime={mtime}"))
        .arg(&staging)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running tar2sqfs (apt-get install squashfs-tools-ng)")?;
    let stdin = child.stdin.take().context("tar2sqfs's input")?;
    let written = write_tar(stdin, piece, mtime).map(drop);
    let result = child.wait_with_output().context("waiting for tar2sqfs")?;
    // tar2sqfs's own complaint first: a write error here may only be its early exit.
    let done = if result.status.success() {
        written.and_then(|()| {
            std::fs::rename(&staging, out).with_context(|| format!("renaming into {}", out.display()))
        })
    } else {
        Err(anyhow::anyhow!("tar2sqfs failed: {}", String::from_utf8_lossy(&result.stderr).trim()))
    };
    if done.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    done
}

/// What [`write_verified`] made.
#[derive(Debug, Clone)]
pub struct Verified {
    /// What the kernel command line carries to check it.
    pub spec: VeritySpec,
    /// Its pieces.
    pub index: Index,
}

/// Makes the partition image `out`: the index, each piece's squashfs, then the dm-verity hash
/// tree of them all. The salt is the SHA-256 of the data the tree covers: the same content
/// gives the same image and the same root hash.
pub fn write_verified(out: &Path, content: &Content<'_>, mtime: u64) -> Result<Verified> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let scratch = tempfile::tempdir_in(dir).context("a scratch directory beside the partition image")?;
    let made = (|| -> Result<Verified> {
        let mut laid = Vec::new();
        let mut files = Vec::new();
        for (i, (path, piece)) in pieces(content).iter().enumerate() {
            let file = scratch.path().join(format!("piece-{i}.squashfs"));
            write_squashfs(&file, piece, mtime)?;
            let digest = crate::blobs::sha256_file(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
            laid.push((path.clone(), std::fs::metadata(&file)?.len(), digest));
            files.push(file);
        }
        let index = Index::lay_out(&laid);
        let mut image = std::fs::File::create(out)?;
        image.write_all(&index.encode())?;
        for (piece, file) in index.pieces.iter().zip(&files) {
            image.seek(std::io::SeekFrom::Start(piece.offset))?;
            std::io::copy(&mut std::fs::File::open(file)?, &mut image)?;
        }
        image.set_len(index.data_bytes())?;
        drop(image);
        let salt = crate::blobs::sha256_file(out).map_err(|e| anyhow::anyhow!("{e}"))?;
        let salt: [u8; 32] = hex::decode(salt.trim_start_matches("sha256:"))
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("internal: a SHA-256 digest is 32 bytes")?;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).open(out)?;
        let tree = crate::verity::hash_tree(&mut std::io::BufReader::new(&mut file), salt)?;
        file.seek(std::io::SeekFrom::End(0))?;
        file.write_all(&tree.tree)?;
        file.sync_all()?;
        Ok(Verified { spec: tree.spec(), index })
    })()
    .with_context(|| format!("writing the system partition {}", out.display()));
    if made.is_err() {
        let _ = std::fs::remove_file(out);
    }
    made
}

/// A piece and its content as a tar stream.
pub type PieceTar = (Piece, Vec<u8>);

/// Reads a partition image (or a slot's partition: the one at `offset` of a disk) back: its
/// index, and each piece's content as a tar stream (`sqfs2tar`, paths under `./`, the root
/// itself as `./`).
pub fn read_pieces(file: &Path, offset: u64) -> Result<(Index, Vec<PieceTar>)> {
    use std::io::{Read, SeekFrom};
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let index = Index::read(&mut f).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let scratch = tempfile::tempdir()?;
    let mut out = Vec::new();
    for piece in &index.pieces {
        let mut bytes = vec![0u8; usize::try_from(piece.bytes)?];
        f.seek(SeekFrom::Start(offset + piece.offset))?;
        f.read_exact(&mut bytes).with_context(|| format!("reading piece `{}`", piece.path))?;
        let image = scratch.path().join("piece.squashfs");
        std::fs::write(&image, &bytes)?;
        // The root as `./`, with what its inode carries (a layer's root may be opaque).
        let listed =
            Command::new("sqfs2tar").args(["--root-becomes", "."]).arg(&image).output().context(
                "running sqfs2tar (reading the system partition; apt-get install squashfs-tools-ng)",
            )?;
        if !listed.status.success() {
            bail!(
                "sqfs2tar failed on piece `{}` of the system partition: {}",
                piece.path,
                String::from_utf8_lossy(&listed.stderr).trim()
            );
        }
        out.push((piece.clone(), listed.stdout));
    }
    Ok((index, out))
}
