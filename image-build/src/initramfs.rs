//! The initramfs: a newc cpio archive, zstd- or gzip-compressed, that the kernel unpacks into
//! its root file system before it starts PID 1 (`/init`).
//!
//! Two layouts. The all-in-RAM one (`kernel+initrd`, `uki`, `iso`): PID 1, every module, the
//! data disk's tools, every layer once under `berth/layers/<hex>/` (whiteouts as `0:0`
//! character devices; cpio has no xattrs, so opaque directories are listed in the plan and
//! marked by PID 1) and `berth/plan.json`. The slim one of the disk formats: PID 1, the modules
//! that reach the system partition, and `berth/early-boot.json` listing them — the rest is on
//! the partition (`crate::system_partition`).
//!
//! Reproducible: entries in a fixed order, every mtime `SOURCE_DATE_EPOCH` (or 0), a
//! compressor that carries no time or name.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use berth_schema::config::InitrdCompression;
use berth_schema::plan::{layer_dir_name, LAYERS_DIR, TOOLS_DIR};

use crate::cpio::CpioWriter;
use crate::fs_tools::ToolSet;
use crate::layer::{self, EntryKind, LayerSummary};
use crate::source::LayerBlob;

/// What one initramfs holds besides PID 1.
pub(crate) struct Content<'a> {
    /// The PID 1 binary, written as `/init` (and `/sbin/{poweroff,reboot,halt}` linking to it).
    pub init: &'a Path,
    /// Module files: (path in the initramfs, file on the build machine), each written once.
    pub modules: Vec<(String, &'a Path)>,
    /// The data disk's tools, under [`TOOLS_DIR`].
    pub tools: Option<&'a ToolSet>,
    /// The layers; one listed twice is written once.
    pub layers: Vec<(&'a LayerBlob, &'a LayerSummary)>,
    /// The JSON document PID 1 reads first: (path, text) — the plan or the early-boot list.
    pub document: (&'a str, &'a [u8]),
}

/// Writes the initramfs `path` holding `content`; `on_layer` is told each layer as it is packed.
/// Returns the memory its files take once unpacked (whole pages).
pub(crate) fn write(
    path: &Path,
    compression: InitrdCompression,
    epoch: u32,
    content: &Content<'_>,
    on_layer: &dyn Fn(&str),
) -> Result<u64> {
    let out = BufWriter::new(fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let compressed = Compressor::new(out, compression)?;
    let mut cpio = CpioWriter::new(compressed, epoch);
    for dir in
        ["dev", "proc", "sys", "run", "tmp", "etc", "root", "berth", LAYERS_DIR.trim_start_matches('/')]
    {
        cpio.dir(dir, 0o755, 0, 0)?;
    }
    cpio.char_dev("dev/console", 0o600, 0, 0, 5, 1)?;
    let init = content.init;
    let init_file = fs::File::open(init).with_context(|| format!("opening {}", init.display()))?;
    let init_len = init_file.metadata()?.len();
    cpio.file("init", 0o755, 0, 0, init_len, init_file)?;
    // The same binary answers to these names (the kernel runs /sbin/poweroff for some host
    // shutdown requests).
    cpio.dir("sbin", 0o755, 0, 0)?;
    for name in ["poweroff", "reboot", "halt"] {
        cpio.symlink(&format!("sbin/{name}"), "/init", 0, 0)?;
    }
    let mut packed = std::collections::BTreeSet::new();
    for (dest, source) in &content.modules {
        if !packed.insert(dest.clone()) {
            continue;
        }
        let f = fs::File::open(source).with_context(|| format!("opening {}", source.display()))?;
        let len = f.metadata()?.len();
        cpio.file(dest, 0o644, 0, 0, len, f)?;
    }
    if let Some(tools) = content.tools {
        let root = TOOLS_DIR.trim_start_matches('/');
        for dir in ["", "/bin", "/lib", "/etc"] {
            cpio.dir(&format!("{root}{dir}"), 0o755, 0, 0)?;
        }
        for (dest, source) in &tools.files {
            let f = fs::File::open(source).with_context(|| format!("opening {}", source.display()))?;
            let len = f.metadata()?.len();
            cpio.file(&format!("{root}/{dest}"), tool_mode(dest), 0, 0, len, f)?;
        }
    }
    let mut written = std::collections::BTreeSet::new();
    for (blob, summary) in &content.layers {
        if !written.insert(blob.digest.clone()) {
            continue;
        }
        on_layer(&blob.digest);
        write_layer(&mut cpio, blob, summary)?;
    }
    let (doc_path, doc) = content.document;
    cpio.file(doc_path.trim_start_matches('/'), 0o644, 0, 0, doc.len() as u64, doc)?;
    let unpacked = cpio.unpacked_bytes();
    let mut out = cpio.finish()?.finish().context("compressing the initramfs")?;
    out.flush()?;
    out.into_inner().map_err(|e| anyhow!("writing the initramfs: {}", e.error()))?.sync_all()?;
    Ok(unpacked)
}

/// The mode of a packed tool's file: its configuration is read, the rest executed.
pub(crate) fn tool_mode(dest: &str) -> u32 {
    if dest.starts_with("etc/") {
        0o644
    } else {
        0o755
    }
}

/// The initramfs compressor: the cpio stream goes through it into the file.
enum Compressor<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// zstd level: near the best ratio this format gets for a boot image, while a large image
/// still compresses in seconds; decompression speed hardly depends on it.
const ZSTD_LEVEL: i32 = 12;

impl<W: Write> Compressor<W> {
    fn new(out: W, kind: InitrdCompression) -> Result<Compressor<W>> {
        Ok(match kind {
            // No name and mtime 0 in the gzip header: reproducible.
            InitrdCompression::Gzip => {
                Compressor::Gzip(flate2::GzBuilder::new().mtime(0).write(out, flate2::Compression::default()))
            }
            InitrdCompression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                enc.include_checksum(true)?;
                Compressor::Zstd(enc)
            }
        })
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// Writes one layer under `berth/layers/<hex>/`, whiteouts as 0:0 character devices.
///
/// Every record this writes is `berth/layers/<64 hex>` or below it (see [`layer_entry_dest`]):
/// the digest is checked, every entry path is relative without `.`, `..` or empty components
/// (the layer reader normalizes it, the cpio writer checks it again), and the directories the
/// cpio writer adds are parents of such paths, so inside the prefix too. The layer reader also
/// refuses an entry below a symlink of its own layer, the only way the kernel's unpacker (which
/// follows symlinks in the parents of a name) could land outside it: other layers and the rest
/// of the initramfs are never under this layer's directory.
fn write_layer<W: Write>(cpio: &mut CpioWriter<W>, blob: &LayerBlob, summary: &LayerSummary) -> Result<()> {
    let prefix = layer_prefix(&blob.digest)?;
    cpio.dir(&prefix, 0o755, 0, 0)?;
    for target in &summary.hardlink_targets {
        cpio.expect_hardlink_target(&layer_entry_dest(&prefix, target)?)?;
    }
    layer::for_each_entry(blob, |e, data| {
        let path = layer_entry_dest(&prefix, &e.path)?;
        match &e.kind {
            EntryKind::Dir => cpio.dir(&path, e.mode, e.uid, e.gid)?,
            EntryKind::File => cpio.file(&path, e.mode, e.uid, e.gid, e.size, data)?,
            EntryKind::Symlink(target) => cpio.symlink(&path, target, e.uid, e.gid)?,
            EntryKind::Hardlink(target) => cpio.hardlink(&path, &layer_entry_dest(&prefix, target)?)?,
            EntryKind::CharDev(major, minor) => cpio.char_dev(&path, e.mode, e.uid, e.gid, *major, *minor)?,
            EntryKind::BlockDev(major, minor) => {
                cpio.block_dev(&path, e.mode, e.uid, e.gid, *major, *minor)?
            }
            EntryKind::Fifo => cpio.fifo(&path, e.mode, e.uid, e.gid)?,
        }
        Ok(())
    })
    .with_context(|| format!("packing layer {}", blob.digest))
}

/// A layer's directory in the initramfs: `berth/layers/<64 hex>` (the digest is checked).
fn layer_prefix(digest: &str) -> Result<String> {
    crate::blobs::validate_digest(digest).with_context(|| format!("layer {digest}"))?;
    Ok(format!("{}/{}", LAYERS_DIR.trim_start_matches('/'), layer_dir_name(digest)))
}

/// Where a layer entry goes: `PREFIX/PATH`, refused unless `path` is relative with no empty,
/// `.` or `..` component (what [`layer::LayerEntry::path`] promises; checked again so that no
/// change of the reader can make a layer write outside its directory).
pub(crate) fn layer_entry_dest(prefix: &str, path: &str) -> Result<String> {
    if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("internal: layer entry path {path:?} is not normalized");
    }
    Ok(format!("{prefix}/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::sha256_bytes;
    use crate::cpio::read_archive;
    use crate::source::Compression;

    /// A tar member with the name written straight into the header (`set_path` refuses some of
    /// the names these tests need).
    fn member(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, link: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn blob(dir: &Path, tar: Vec<u8>) -> LayerBlob {
        let digest = sha256_bytes(&tar);
        let path = dir.join(layer_dir_name(&digest));
        fs::write(&path, &tar).unwrap();
        LayerBlob {
            digest: digest.clone(),
            diff_id: Some(digest),
            compression: Compression::None,
            size: 0,
            path,
        }
    }

    /// Packs `blob` the way `build` does and returns the path of every record written for it.
    fn packed(blob: &LayerBlob, summary: &LayerSummary) -> (Result<()>, Vec<String>) {
        let mut cpio = CpioWriter::new(Vec::new(), 0);
        for dir in ["berth", "berth/layers"] {
            cpio.dir(dir, 0o755, 0, 0).unwrap();
        }
        let result = write_layer(&mut cpio, blob, summary);
        let bytes = cpio.finish().unwrap();
        let paths = read_archive(bytes.as_slice()).unwrap().into_iter().map(|e| e.path).skip(2).collect();
        (result, paths)
    }

    fn assert_inside(blob: &LayerBlob, paths: &[String]) {
        let prefix = format!("berth/layers/{}", layer_dir_name(&blob.digest));
        assert_eq!(layer_dir_name(&blob.digest).len(), 64);
        for p in paths {
            assert!(p == &prefix || p.starts_with(&format!("{prefix}/")), "{p} is outside {prefix}");
            assert!(!p.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "{p}");
        }
    }

    #[test]
    fn every_record_of_a_layer_is_inside_its_directory() {
        use tar::EntryType::*;
        let tmp = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        member(&mut b, Directory, "/", "", b"");
        member(&mut b, Regular, "/etc/passwd", "", b"root:x:0:0::/:/bin/sh\n");
        member(&mut b, Symlink, "etc/alt", "/etc", b"");
        member(&mut b, Symlink, "root-link", "/", b"");
        member(&mut b, Symlink, "up", "../../../../init", b"");
        member(&mut b, Regular, "./bin/sh", "", b"#!");
        member(&mut b, Link, "bin/ash", "/bin/sh", b"");
        member(&mut b, Link, "bin/dash", "./bin//sh", b"");
        member(&mut b, Regular, "deep/a/b/c/TRAILER!!!", "", b"x");
        member(&mut b, Directory, "empty/", "", b"");
        member(&mut b, Symlink, "empty", "/berth/plan.json", b"");
        member(&mut b, Regular, "gone/.wh.file", "", b"");
        member(&mut b, Regular, "opaque/.wh..wh..opq", "", b"");
        member(&mut b, Char, "dev-null", "", b"");
        member(&mut b, Fifo, "fifo", "", b"");
        let layer = blob(tmp.path(), b.into_inner().unwrap());
        let summary = layer::scan_layer(&layer).unwrap();
        let (result, paths) = packed(&layer, &summary);
        result.unwrap();
        assert_inside(&layer, &paths);
        let prefix = format!("berth/layers/{}", layer_dir_name(&layer.digest));
        for p in ["etc/alt", "bin/ash", "deep/a/b/c/TRAILER!!!", "empty", "gone/file", "fifo"] {
            assert!(paths.contains(&format!("{prefix}/{p}")), "{p} missing from {paths:?}");
        }
    }

    #[test]
    fn a_hostile_layer_stops_inside_its_directory() {
        use tar::EntryType::*;
        let tmp = tempfile::tempdir().unwrap();
        let hostile: [&[(tar::EntryType, &str, &str)]; 5] = [
            &[(Symlink, "x", "/"), (Regular, "x/berth/plan.json", "")],
            &[(Symlink, "x", "../.."), (Directory, "x/init/", "")],
            &[(Regular, "../../init", "")],
            &[(Symlink, "s", "/"), (Link, "h", "s/init")],
            &[(Directory, "d/", ""), (Regular, "d/f", ""), (Symlink, "d", "/"), (Regular, "d/g", "")],
        ];
        for entries in hostile {
            let mut b = tar::Builder::new(Vec::new());
            for (kind, path, link) in entries {
                member(&mut b, *kind, path, link, b"");
            }
            let layer = blob(tmp.path(), b.into_inner().unwrap());
            assert!(layer::scan_layer(&layer).is_err(), "{entries:?}");
            // Even without pass 1, pass 2 refuses, and what was written is inside the layer.
            let (result, paths) = packed(&layer, &LayerSummary::default());
            let err = format!("{:#}", result.unwrap_err());
            assert!(err.contains(&layer.digest), "{err}");
            assert_inside(&layer, &paths);
        }
        assert!(layer_entry_dest("p", "a/../b").is_err() && layer_entry_dest("p", "").is_err());
        assert!(layer_prefix("sha256:../../init").is_err());
    }
}
