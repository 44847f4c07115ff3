//! The system partition: a read-only squashfs holding the boot plan, the kernel modules, the
//! data disk's tools and every image layer, each once, under `layers/<digest hex>/`, exactly as
//! overlayfs reads a lower layer — whiteouts as `0:0` character devices, opaque directories
//! with `trusted.overlay.opaque=y`, owners, modes, hard links and device nodes as the layer has
//! them. The layout (names, where PID 1 binds each directory) is
//! [`berth_schema::system_partition`]'s.
//!
//! Made without root and without a loop device: berth writes the partition's content as one tar
//! stream (PAX records carry the xattrs) into `tar2sqfs` (Debian's `squashfs-tools-ng`), which
//! lays out the filesystem from the stream alone. squashfs rather than erofs: Debian 12's
//! `mkfs.erofs` (1.5) reads only a directory tree, whose owners and device nodes need root to
//! exist; `tar2sqfs` keeps every time stamp from the stream and pads the image to whole 4 KiB
//! blocks, so the same input gives the same bytes and the dm-verity tree
//! (`crate::verity`), appended by [`write_verified`], covers it block for block.

use std::collections::BTreeSet;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use berth_schema::plan::layer_dir_name;
use berth_schema::system_partition::{LAYERS, PLAN};
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

/// Writes the partition's content as a tar stream: the plan, the files, then each distinct
/// layer (by digest) under `layers/<hex>/`; every entry stamped `mtime` unless the layer has its own.
pub fn write_tar<W: Write>(out: W, content: &Content<'_>, mtime: u64) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(mtime);
        h
    };
    let plan_json = content.plan_json;
    tar.append_data(&mut header(tar::EntryType::Regular, 0o644, plan_json.len() as u64), PLAN, plan_json)?;
    let mut dirs = BTreeSet::new();
    for file in content.files {
        let parents = file.dest.match_indices('/').map(|(at, _)| &file.dest[..at]);
        for dir in parents {
            if dirs.insert(dir.to_string()) {
                tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), dir, &[][..])?;
            }
        }
        let f = std::fs::File::open(&file.source)
            .with_context(|| format!("opening {}", file.source.display()))?;
        let len = f.metadata()?.len();
        tar.append_data(&mut header(tar::EntryType::Regular, file.mode, len), &file.dest, f)
            .with_context(|| format!("writing {} to the system partition", file.dest))?;
    }
    tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), LAYERS, &[][..])?;
    let mut written = BTreeSet::new();
    for (blob, summary) in content.layers {
        if !written.insert(blob.digest.as_str()) {
            continue;
        }
        crate::blobs::validate_digest(&blob.digest).with_context(|| format!("layer {}", blob.digest))?;
        let prefix = format!("{LAYERS}/{}", layer_dir_name(&blob.digest));
        if summary.opaque_dirs.iter().any(String::is_empty) {
            tar.append_pax_extensions([(OPAQUE_XATTR, &b"y"[..])])?;
        }
        tar.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), &prefix, &[][..])?;
        layer::for_each_entry(blob, |e, data| {
            let path = layer_entry_dest(&prefix, &e.path)?;
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
                EntryKind::Hardlink(target) => {
                    tar.append_link(&mut h, &path, layer_entry_dest(&prefix, target)?)?
                }
                _ => tar.append_data(&mut h, &path, &[][..])?,
            }
            Ok(())
        })
        .with_context(|| format!("writing layer {} to the system partition", blob.digest))?;
    }
    Ok(tar.into_inner()?)
}

/// Makes the squashfs `out` from the partition's content (see [`write_tar`]), zstd-compressed,
/// padded to whole 4 KiB blocks. `out` is written beside itself and renamed into place.
pub fn write_squashfs(out: &Path, content: &Content<'_>, mtime: u64) -> Result<()> {
    let staging = out.with_extension("partial");
    let mut child = Command::new("tar2sqfs")
        .args(["--quiet", "--force", "--no-skip", "--compressor", "zstd", "--dev-block-size", "4096"])
        .arg("--defaults")
        .arg(format!("mtime={mtime}"))
        .arg(&staging)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running tar2sqfs (apt-get install squashfs-tools-ng)")?;
    let stdin = child.stdin.take().context("tar2sqfs's input")?;
    let written = write_tar(stdin, content, mtime).map(drop);
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

/// Makes the partition image `out`: the squashfs of `content`, then its dm-verity hash tree;
/// returns what the kernel command line carries to check it. The salt is the squashfs's own
/// SHA-256: the same content gives the same image and the same root hash.
pub fn write_verified(out: &Path, content: &Content<'_>, mtime: u64) -> Result<VeritySpec> {
    write_squashfs(out, content, mtime)?;
    let appended = (|| -> Result<VeritySpec> {
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
        Ok(tree.spec())
    })()
    .with_context(|| format!("computing the hash tree of {}", out.display()));
    if appended.is_err() {
        let _ = std::fs::remove_file(out);
    }
    appended
}
