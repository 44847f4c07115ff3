//! The clouds' import formats, each made from the raw EFI disk and byte-identical on rebuild,
//! and each read back (checked) by `berth inspect` and `berth run`:
//!
//! - `vhd` (`disk.vhd`): Azure's fixed VHD — the raw disk, a whole number of MiB, followed by
//!   the 512-byte VHD footer (Microsoft's VHD specification; QEMU's `block/vpc.c`). Written
//!   here rather than by `qemu-img`, whose footer holds the time and a random id. The geometry
//!   is 65535/16/255 and the creator `qem2`, which tells readers (QEMU among them) to take the
//!   size from the footer's current size rather than from the geometry.
//! - `gce` (`gce.tar.gz`): Compute Engine's image import — one member named `disk.raw`, in an
//!   old-GNU tar (GCE refuses pax), gzip'd; the disk a whole number of GiB.
//! - `vmdk` (`disk.vmdk`): a streamOptimized VMDK (VMware, and AWS's `import-snapshot`), made
//!   by `qemu-img`, whose random content id (`CID`) is replaced by one derived from the disk.
//!
//! The raw disk's size is chosen by the builder (`DiskLayout::align`): a GiB multiple when
//! `gce` is asked for, a MiB multiple otherwise, so no format needs to move the backup GPT.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// `disk.vhd`.
pub const VHD: &str = "disk.vhd";
/// `gce.tar.gz`.
pub const GCE: &str = "gce.tar.gz";
/// `disk.vmdk`.
pub const VMDK: &str = "disk.vmdk";
/// The one member of a GCE archive.
pub const GCE_MEMBER: &str = "disk.raw";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01T00:00:00Z).
const VHD_EPOCH: u64 = 946_684_800;
/// The VHD footer's size.
const FOOTER: usize = 512;

/// A 16-byte id derived from the disk's content hash and a label.
fn content_id(seed: &str, label: &str) -> [u8; 16] {
    let d = Sha256::digest([seed.as_bytes(), label.as_bytes()].concat());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b
}

/// The fixed VHD footer of a disk of `bytes`, created at `epoch` (Unix seconds), with `id`.
pub fn vhd_footer(bytes: u64, epoch: u64, id: [u8; 16]) -> [u8; FOOTER] {
    let mut f = [0u8; FOOTER];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed)
    let stamp = u32::try_from(epoch.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    f[24..28].copy_from_slice(&stamp.to_be_bytes());
    f[28..32].copy_from_slice(b"qem2");
    f[32..36].copy_from_slice(&0x0005_0003u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&bytes.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&bytes.to_be_bytes()); // current size
    f[56..58].copy_from_slice(&65535u16.to_be_bytes()); // cylinders
    f[58] = 16; // heads
    f[59] = 255; // sectors per track
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // disk type: fixed
    f[68..84].copy_from_slice(&id);
    let sum = vhd_checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The one's complement of the byte sum, the checksum field counted as zero.
fn vhd_checksum(footer: &[u8; FOOTER]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, b)| u32::from(*b))
        .sum::<u32>();
    !sum
}

/// What a VHD footer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    /// The virtual disk's size.
    pub bytes: u64,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
}

/// Reads and checks a VHD footer: the cookie, the checksum, a fixed disk.
pub fn read_vhd_footer(f: &[u8; FOOTER]) -> Result<VhdFooter> {
    if &f[0..8] != b"conectix" {
        bail!("no VHD footer (cookie `conectix`) at the end");
    }
    let be32 = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    if be32(64) != vhd_checksum(f) {
        bail!("the VHD footer's checksum is wrong");
    }
    let bytes = u64::from_be_bytes(f[48..56].try_into()?);
    Ok(VhdFooter { bytes, disk_type: be32(60) })
}

/// Azure's fixed VHD at `out`: `raw` (a whole number of MiB) and its footer.
pub fn write_vhd(raw: &Path, seed: &str, epoch: u64, out: &Path) -> Result<()> {
    let bytes = fs::metadata(raw)?.len();
    if bytes % MIB != 0 {
        bail!("internal: the raw disk ({bytes} bytes) is not a whole number of MiB");
    }
    let _ = fs::remove_file(out);
    let mut file = fs::File::create(out)?;
    file.set_len(bytes)?;
    crate::formats::copy_sparse(raw, &mut file, 0)?;
    file.seek(SeekFrom::Start(bytes))?;
    file.write_all(&vhd_footer(bytes, epoch, content_id(seed, "vhd")))?;
    file.flush()?;
    Ok(())
}

/// Reads a VHD's footer and checks what Azure asks: fixed, a whole number of MiB, the file its
/// size plus the footer.
pub fn check_vhd(path: &Path) -> Result<VhdFooter> {
    let len = fs::metadata(path)?.len();
    let mut f = fs::File::open(path)?;
    let mut footer = [0u8; FOOTER];
    f.seek(SeekFrom::Start(len.checked_sub(FOOTER as u64).context("too small for a VHD")?))?;
    f.read_exact(&mut footer)?;
    let v = read_vhd_footer(&footer).with_context(|| path.display().to_string())?;
    if v.disk_type != 2 {
        bail!("{}: a VHD of type {} (Azure takes fixed VHDs only, type 2)", path.display(), v.disk_type);
    }
    if v.bytes % MIB != 0 || v.bytes + FOOTER as u64 != len {
        bail!(
            "{}: the VHD's size {} is not a whole number of MiB followed by its footer",
            path.display(),
            v.bytes
        );
    }
    Ok(v)
}

/// GCE's import archive at `out`: `raw` (a whole number of GiB) as `disk.raw` in an old-GNU
/// tar, gzip'd; dated `epoch`, owned by root, no names in the gzip header.
pub fn write_gce(raw: &Path, epoch: u64, out: &Path) -> Result<()> {
    write_gce_in(raw, epoch, out, GIB)
}

/// [`write_gce`] for a disk size that is a multiple of `unit`.
fn write_gce_in(raw: &Path, epoch: u64, out: &Path, unit: u64) -> Result<()> {
    let bytes = fs::metadata(raw)?.len();
    if bytes % unit != 0 {
        bail!("internal: the raw disk ({bytes} bytes) is not a whole number of {} MiB", unit >> 20);
    }
    // The fast level: the disk is mostly zeros, which it packs as well, in half the time.
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(std::io::BufWriter::new(fs::File::create(out)?), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(GCE_MEMBER)?;
    h.set_size(bytes);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch);
    h.set_cksum();
    tar.append(&h, fs::File::open(raw)?)?;
    let gz = tar.into_inner()?;
    gz.finish()?.flush()?;
    Ok(())
}

/// Checks a GCE archive as Compute Engine does — one regular member named `disk.raw`, old-GNU
/// headers, a whole number of GiB — and writes the disk to `to` (sparse). Returns its size.
pub fn extract_gce(archive: &Path, to: &Path) -> Result<u64> {
    extract_gce_in(archive, to, GIB)
}

/// [`extract_gce`] for a disk size that is a multiple of `unit`.
fn extract_gce_in(archive: &Path, to: &Path, unit: u64) -> Result<u64> {
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(fs::File::open(archive)?));
    let mut tar = tar::Archive::new(gz);
    let mut found = None;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().to_string();
        if found.is_some() {
            bail!(
                "{}: a second member, {path}: GCE takes an archive holding disk.raw alone",
                archive.display()
            );
        }
        if path != GCE_MEMBER || entry.header().entry_type() != tar::EntryType::Regular {
            bail!("{}: the member is {path}, not a file named disk.raw", archive.display());
        }
        if entry.header().as_gnu().is_none() {
            bail!("{}: disk.raw's header is not old-GNU (GCE refuses other tar formats)", archive.display());
        }
        let bytes = entry.size();
        if bytes % unit != 0 {
            bail!(
                "{}: disk.raw is {bytes} bytes, not a whole number of {} MiB",
                archive.display(),
                unit >> 20
            );
        }
        let mut out = fs::File::create(to)?;
        out.set_len(bytes)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if !crate::formats::all_zero(&buf[..n]) {
                out.seek(SeekFrom::Start(at))?;
                out.write_all(&buf[..n])?;
            }
            at += n as u64;
        }
        if at != bytes {
            bail!("{}: disk.raw ends after {at} of its {bytes} bytes", archive.display());
        }
        found = Some(bytes);
    }
    found.with_context(|| format!("{}: an empty archive (GCE wants disk.raw in it)", archive.display()))
}

/// Where a VMDK's embedded descriptor is, in bytes: its header's `descriptorOffset` and
/// `descriptorSize` (sectors, little-endian, at bytes 28 and 36 of the `KDMV` header).
fn vmdk_descriptor_range(head: &[u8]) -> Result<std::ops::Range<usize>> {
    if head.get(..4) != Some(b"KDMV") {
        bail!("not a VMDK (no KDMV header)");
    }
    let sectors = |at: usize| -> Result<usize> {
        let b: [u8; 8] = head.get(at..at + 8).context("a short VMDK header")?.try_into()?;
        Ok(usize::try_from(u64::from_le_bytes(b))?)
    };
    let (offset, size) = (sectors(28)?, sectors(36)?);
    if offset == 0 || size == 0 || size > 2048 {
        bail!("a VMDK without an embedded descriptor (offset {offset}, size {size} sectors)");
    }
    Ok(offset * 512..(offset + size) * 512)
}

/// A VMDK's header and embedded descriptor, and where the descriptor is.
fn read_vmdk_head(f: &mut fs::File) -> Result<(Vec<u8>, std::ops::Range<usize>)> {
    let mut head = vec![0u8; 512];
    f.read_exact(&mut head)?;
    let range = vmdk_descriptor_range(&head)?;
    head.resize(range.end, 0);
    f.read_exact(&mut head[512..])?;
    Ok((head, range))
}

/// The streamOptimized VMDK at `out`, converted from `raw` by `qemu-img`; its content id is
/// derived from `seed` and the extent is named `disk.vmdk` whatever `out` is called.
pub fn write_vmdk(raw: &Path, seed: &str, out: &Path) -> Result<()> {
    let dir = tempfile::tempdir_in(out.parent().unwrap_or(Path::new(".")))?;
    let made = dir.path().join(VMDK);
    let o = Command::new("qemu-img")
        // `-m 1`: one coroutine. streamOptimized grains are appended in the order writes
        // complete; with qemu-img's default 8 under load, that order (and the file) varied.
        .args(["convert", "-q", "-m", "1", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"])
        .arg(raw)
        .arg(&made)
        .output()
        .context("running qemu-img (apt-get install qemu-utils)")?;
    if !o.status.success() {
        bail!("qemu-img convert to vmdk failed: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    let mut f = fs::File::options().read(true).write(true).open(&made)?;
    let (head, range) = read_vmdk_head(&mut f).context("reading the VMDK qemu-img wrote")?;
    let text = String::from_utf8_lossy(&head[range.clone()]).trim_end_matches('\0').to_string();
    let cid = hex::encode(&content_id(seed, "vmdk")[..4]);
    let replaced: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("CID=") { format!("CID={cid}") } else { l.to_string() })
        .collect();
    let mut descriptor = (replaced.join("\n") + "\n").into_bytes();
    // Readers take the text up to its first NUL: one must be left.
    if descriptor.len() >= range.len() {
        bail!("the VMDK descriptor grew past its sectors");
    }
    descriptor.resize(range.len(), 0);
    f.seek(SeekFrom::Start(range.start as u64))?;
    f.write_all(&descriptor)?;
    f.flush()?;
    drop(f);
    fs::rename(&made, out)?;
    Ok(())
}

/// A VMDK's descriptor text (`createType`, `CID`, the extent).
pub fn vmdk_descriptor(path: &Path) -> Result<String> {
    let (head, range) =
        read_vmdk_head(&mut fs::File::open(path)?).with_context(|| path.display().to_string())?;
    Ok(String::from_utf8_lossy(&head[range]).trim_end_matches('\0').to_string())
}

/// Whether the file ends with a VHD footer's cookie (a fixed VHD starts like its raw disk).
pub fn has_vhd_cookie(path: &Path) -> bool {
    let Ok(mut f) = fs::File::open(path) else { return false };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return false };
    let mut cookie = [0u8; 8];
    len >= FOOTER as u64
        && f.seek(SeekFrom::Start(len - FOOTER as u64)).is_ok()
        && f.read_exact(&mut cookie).is_ok()
        && &cookie == b"conectix"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhd_footer_reads_back_and_refuses_damage() {
        let f = vhd_footer(64 * MIB, 1_704_067_200, [7; 16]);
        assert_eq!(read_vhd_footer(&f).unwrap(), VhdFooter { bytes: 64 * MIB, disk_type: 2 });
        // The timestamp counts from 2000-01-01.
        assert_eq!(u32::from_be_bytes(f[24..28].try_into().unwrap()), 1_704_067_200 - 946_684_800);
        assert_eq!(&f[56..60], &[0xff, 0xff, 16, 255]);
        let mut bad = f;
        bad[100] = 1;
        assert!(read_vhd_footer(&bad).unwrap_err().to_string().contains("checksum"));
        assert_eq!(vhd_footer(64 * MIB, 1_704_067_200, [7; 16]), f, "the same inputs, the same bytes");
    }

    #[test]
    fn a_vhd_is_recognised_by_its_footer_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("x.raw");
        let mut f = fs::File::create(&raw).unwrap();
        f.set_len(2 * MIB).unwrap();
        f.seek(SeekFrom::Start(0x200)).unwrap();
        f.write_all(b"EFI PART").unwrap();
        drop(f);
        let vhd = dir.path().join("disk.vhd");
        write_vhd(&raw, "seed", 1_704_067_200, &vhd).unwrap();
        assert_eq!(check_vhd(&vhd).unwrap(), VhdFooter { bytes: 2 * MIB, disk_type: 2 });
        let found = crate::formats::Bootable::detect(&vhd).unwrap();
        assert_eq!(found, crate::formats::Bootable::Disk(vhd.clone(), "vpc"));
        // A damaged footer: an error naming it, not a raw disk.
        let mut f = fs::File::options().write(true).open(&vhd).unwrap();
        f.seek(SeekFrom::Start(2 * MIB + 100)).unwrap();
        f.write_all(b"x").unwrap();
        drop(f);
        let e = crate::formats::Bootable::detect(&vhd).unwrap_err();
        assert!(format!("{e:#}").contains("checksum"), "{e:#}");
        // Not a whole MiB: refused when written.
        fs::File::options().write(true).open(&raw).unwrap().set_len(MIB + 512).unwrap();
        assert!(write_vhd(&raw, "seed", 0, &vhd).is_err());
    }

    #[test]
    fn the_vmdk_descriptor_is_where_the_header_says() {
        let mut head = vec![0u8; 512];
        head[..4].copy_from_slice(b"KDMV");
        head[28..36].copy_from_slice(&1u64.to_le_bytes());
        head[36..44].copy_from_slice(&20u64.to_le_bytes());
        assert_eq!(vmdk_descriptor_range(&head).unwrap(), 512..512 + 20 * 512);
        head[36..44].copy_from_slice(&0u64.to_le_bytes());
        assert!(vmdk_descriptor_range(&head).is_err());
        assert!(vmdk_descriptor_range(b"QFI\xfb").is_err());
    }

    #[test]
    fn a_gce_archive_holds_disk_raw_alone() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("x.raw");
        let mut f = fs::File::create(&raw).unwrap();
        f.set_len(4 * MIB).unwrap();
        f.seek(SeekFrom::Start(4 * MIB - 3)).unwrap();
        f.write_all(b"end").unwrap();
        drop(f);
        let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
        write_gce_in(&raw, 1_704_067_200, &a, MIB).unwrap();
        write_gce_in(&raw, 1_704_067_200, &b, MIB).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let back = dir.path().join("back.raw");
        assert_eq!(extract_gce_in(&a, &back, MIB).unwrap(), 4 * MIB);
        assert!(extract_gce(&a, &back).unwrap_err().to_string().contains("not a whole number of 1024 MiB"));
        let mut tail = [0u8; 3];
        let mut f = fs::File::open(&back).unwrap();
        f.seek(SeekFrom::Start(4 * MIB - 3)).unwrap();
        f.read_exact(&mut tail).unwrap();
        assert_eq!(&tail, b"end");
        // The header is old-GNU ("ustar  \0"); the gzip header carries no time or name.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(&a).unwrap()).take(512).read_to_end(&mut tar).unwrap();
        assert_eq!(&tar[257..265], b"ustar  \0");
        let gz = fs::read(&a).unwrap();
        assert_eq!(&gz[3..8], &[0, 0, 0, 0, 0], "no name flag, no mtime");
        // Not a whole GiB: refused.
        assert!(write_gce(&raw, 0, &a).is_err());
    }
}
