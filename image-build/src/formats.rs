//! Bootable output formats made from the kernel, the initramfs and the command line.
//!
//! - `uki`: a Unified Kernel Image — systemd's EFI stub with `.osrel`, `.cmdline`, `.linux` and
//!   `.initrd` sections added by `objcopy`; an EFI application any UEFI firmware starts.
//! - `raw-efi`: a GPT disk laid out for A/B updates: an EFI system partition holding
//!   systemd-boot at the removable-media path `\EFI\BOOT\BOOTX64.EFI` (no NVRAM entry needed)
//!   and slot A's UKI as its entry, then the system partitions of slots A and B.
//! - `qcow2`, `vhdx`: that disk converted by `qemu-img` (vhdx for Hyper-V Gen2: UEFI).
//! - `iso`: one hybrid image for BIOS (isolinux) and UEFI (an El Torito EFI image holding a
//!   240 kB GRUB that reads the same kernel and initramfs from the ISO 9660 tree), as a CD and
//!   as a USB disk (isohybrid MBR + GPT). The kernel and initramfs are stored once.
//!
//! No root, no loop devices: the FAT file system is made in a file (`mkfs.vfat`, `mtools`), the
//! partition table is written here (GPT), the ISO by `xorriso`. Reproducible: timestamps come from
//! `SOURCE_DATE_EPOCH` (default: a fixed date), GUIDs and serials from the content's hash, and
//! the UKI's PE timestamp is fixed (and its checksum recomputed).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// An output format of `berth build --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// `vmlinuz`, `initrd.img`, `cmdline` (always written).
    KernelInitrd,
    /// `berth.efi`.
    Uki,
    /// `berth.iso`.
    Iso,
    /// `disk.raw`.
    RawEfi,
    /// `disk.qcow2`.
    Qcow2,
    /// `disk.vhdx`.
    Vhdx,
    /// `update/`: the disk's slot as an update bundle (an OCI image layout).
    Update,
    /// `containerdisk/`: the qcow2 disk as KubeVirt's containerDisk, and a kernel-boot image
    /// (an OCI image layout).
    ContainerDisk,
    /// `disk.vhd`: Azure's fixed VHD (Hyper-V Gen2).
    Vhd,
    /// `gce.tar.gz`: Compute Engine's image import (`disk.raw` in a gzip'd tar).
    Gce,
    /// `disk.vmdk`: a streamOptimized VMDK (VMware, AWS `import-snapshot`).
    Vmdk,
}

impl Format {
    /// Every format, in the order they are made.
    pub const ALL: [Format; 11] = [
        Format::KernelInitrd,
        Format::Uki,
        Format::Iso,
        Format::RawEfi,
        Format::Qcow2,
        Format::Vhdx,
        Format::Update,
        Format::ContainerDisk,
        Format::Vhd,
        Format::Gce,
        Format::Vmdk,
    ];

    /// Parses a `--format` value.
    pub fn parse(text: &str) -> Result<Format, String> {
        Ok(match text {
            "kernel+initrd" => Format::KernelInitrd,
            "uki" => Format::Uki,
            "iso" => Format::Iso,
            "raw-efi" => Format::RawEfi,
            "qcow2" => Format::Qcow2,
            "vhdx" => Format::Vhdx,
            "update" => Format::Update,
            "containerdisk" => Format::ContainerDisk,
            "vhd" => Format::Vhd,
            "gce" => Format::Gce,
            "vmdk" => Format::Vmdk,
            other => {
                return Err(format!(
                    "`{other}` is not a format; use kernel+initrd, uki, iso, raw-efi, qcow2, vhdx, update, containerdisk, vhd, gce or vmdk"
                ))
            }
        })
    }

    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::KernelInitrd => "kernel+initrd",
            Format::Uki => "uki",
            Format::Iso => "iso",
            Format::RawEfi => "raw-efi",
            Format::Qcow2 => "qcow2",
            Format::Vhdx => "vhdx",
            Format::Update => "update",
            Format::ContainerDisk => "containerdisk",
            Format::Vhd => "vhd",
            Format::Gce => "gce",
            Format::Vmdk => "vmdk",
        }
    }

    /// The file it writes in the output directory (`None`: the three kernel+initrd files).
    pub fn file_name(self) -> Option<&'static str> {
        match self {
            Format::KernelInitrd => None,
            Format::Uki => Some(UKI),
            Format::Iso => Some(ISO),
            Format::RawEfi => Some(RAW),
            Format::Qcow2 => Some(QCOW2),
            Format::Vhdx => Some(VHDX),
            Format::Update => Some(crate::update_bundle::DIR),
            Format::ContainerDisk => Some(crate::container_disk::DIR),
            Format::Vhd => Some(crate::cloud_formats::VHD),
            Format::Gce => Some(crate::cloud_formats::GCE),
            Format::Vmdk => Some(crate::cloud_formats::VMDK),
        }
    }

    /// Whether the format carries the verified system partition (the disk formats): its UKI
    /// holds a slim initramfs, and the plan, modules and layers are on the partition.
    pub fn has_system_partition(self) -> bool {
        !matches!(self, Format::KernelInitrd | Format::Uki | Format::Iso)
    }

    /// Whether the format runs on Hyper-V (Azure): its drivers are packed.
    pub fn on_hyperv(self) -> bool {
        matches!(self, Format::Vhdx | Format::Vhd)
    }

    /// Whether the format boots only with UEFI firmware.
    pub fn needs_uefi(self) -> bool {
        !matches!(self, Format::KernelInitrd | Format::Iso)
    }
}

/// `berth.efi`.
pub const UKI: &str = "berth.efi";
/// `berth.iso`.
pub const ISO: &str = "berth.iso";
/// `disk.raw`.
pub const RAW: &str = "disk.raw";
/// `disk.qcow2`.
pub const QCOW2: &str = "disk.qcow2";
/// `disk.vhdx`.
pub const VHDX: &str = "disk.vhdx";

/// The default timestamp of every file in the images when `SOURCE_DATE_EPOCH` is not set
/// (2024-01-01T00:00:00Z; FAT cannot store dates before 1980).
pub const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// The timestamp for image contents: `SOURCE_DATE_EPOCH` (as for the initramfs), but never
/// before 1980 (FAT's first date): [`DEFAULT_EPOCH`] then.
pub fn image_epoch() -> u64 {
    let e = u64::from(crate::build::source_date_epoch());
    if e < 315_532_800 {
        DEFAULT_EPOCH
    } else {
        e
    }
}

/// A host tool, or an error naming the Debian package that has it.
fn tool(name: &str, package: &str) -> Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/sbin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "`{name}` is needed for this format and is not installed; install it with: apt-get install {package}"
    )
}

/// A host file shipped by a package, or an error naming the package.
pub fn packaged_file(path: &str, package: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    if p.is_file() {
        Ok(p)
    } else {
        bail!("{path} is needed for this format and is missing; install it with: apt-get install {package}")
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// A GUID (text form) derived from a hash and a label, stable for the same content.
fn guid(seed: &[u8], label: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let x = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// systemd's EFI stub, which every UKI is made from (Debian's `systemd-boot-efi`).
pub const UKI_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Makes the UKI at `out` from the kernel, initramfs, command line and os-release text.
pub fn write_uki(
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
    os_release: &str,
    epoch: u64,
    out: &Path,
) -> Result<()> {
    let stub = packaged_file(UKI_STUB, "systemd-boot-efi")?;
    let objcopy = tool("objcopy", "binutils")?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let osrel = dir.join(".uki-osrel");
    let cmd = dir.join(".uki-cmdline");
    fs::write(&osrel, os_release)?;
    fs::write(&cmd, cmdline.trim())?;
    let linux_size = fs::metadata(vmlinuz)?.len();
    // Sections at fixed addresses after the stub's own, the initramfs after the kernel.
    let linux_vma: u64 = 0x200_0000;
    let initrd_vma = align_up(linux_vma + linux_size, 0x10_0000);
    let section = |name: &str, file: &Path| format!("{name}={}", file.display());
    let result = run(
        Command::new(objcopy)
            .arg("--add-section")
            .arg(section(".osrel", &osrel))
            .args(["--change-section-vma", ".osrel=0x20000"])
            .arg("--add-section")
            .arg(section(".cmdline", &cmd))
            .args(["--change-section-vma", ".cmdline=0x30000"])
            .arg("--add-section")
            .arg(section(".linux", vmlinuz))
            .arg("--change-section-vma")
            .arg(format!(".linux={linux_vma:#x}"))
            .arg("--add-section")
            .arg(section(".initrd", initrd))
            .arg("--change-section-vma")
            .arg(format!(".initrd={initrd_vma:#x}"))
            .arg(&stub)
            .arg(out),
        "objcopy (making the UKI)",
    );
    let _ = fs::remove_file(&osrel);
    let _ = fs::remove_file(&cmd);
    result?;
    let mut pe = fs::read(out)?;
    fix_pe_timestamp(&mut pe, pe_timestamp(epoch)?)?;
    fs::write(out, pe)?;
    Ok(())
}

/// `epoch` as a COFF timestamp (32 bits: until 2106). [`image_epoch`] is always one.
fn pe_timestamp(epoch: u64) -> Result<u32> {
    u32::try_from(epoch).with_context(|| format!("the time {epoch} does not fit a PE timestamp (32 bits)"))
}

/// Sets a PE image's COFF timestamp (objcopy writes the current time) and recomputes the
/// optional header's checksum.
pub fn fix_pe_timestamp(pe: &mut [u8], stamp: u32) -> Result<()> {
    let at = |o: usize| -> Result<u32> {
        let b = pe.get(o..o + 4).context("the UKI is not a PE image")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let header = at(0x3c)? as usize;
    if pe.get(header..header + 4) != Some(b"PE\0\0") {
        bail!("the UKI is not a PE image");
    }
    let checksum_at = header + 24 + 64;
    at(checksum_at)?;
    pe[header + 8..header + 12].copy_from_slice(&stamp.to_le_bytes());
    pe[checksum_at..checksum_at + 4].copy_from_slice(&[0; 4]);
    let mut sum: u64 = 0;
    for chunk in pe.chunks(2) {
        let word = u64::from(chunk[0]) | (u64::from(*chunk.get(1).unwrap_or(&0)) << 8);
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop keeps the sum at most 0x10000: folded once more it fits 16 bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = ((sum & 0xffff) + (sum >> 16)) as u32;
    let len = u32::try_from(pe.len()).context("a PE image is at most 4 GiB")?;
    let sum = folded.wrapping_add(len);
    pe[checksum_at..checksum_at + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// A FAT image at `out` holding `files` (`(path in the image, source)`), sized for them and at
/// least `min_bytes`.
fn write_fat(
    files: &[(&str, &Path)],
    label: &str,
    seed: &[u8],
    epoch: u64,
    min_bytes: u64,
    out: &Path,
) -> Result<()> {
    let mkfs = tool("mkfs.vfat", "dosfstools")?;
    let mmd = tool("mmd", "mtools")?;
    let mcopy = tool("mcopy", "mtools")?;
    let payload: u64 = files.iter().map(|(_, f)| fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let slack = (payload / 20).max(64 << 10);
    let kib = align_up(payload + slack, 256 << 10).max(min_bytes) / 1024;
    let _ = fs::remove_file(out);
    let serial = &guid(seed, label).replace('-', "")[..8];
    run(
        Command::new(mkfs)
            .args(["--invariant", "-i", serial, "-n", label, "-C"])
            .arg(out)
            .arg(kib.to_string())
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
        "mkfs.vfat",
    )?;
    let mut dirs: Vec<String> = Vec::new();
    for (dest, _) in files {
        let parts: Vec<&str> = dest.trim_start_matches('/').split('/').collect();
        for i in 1..parts.len() {
            let d = parts[..i].join("/");
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in &dirs {
        run(
            Command::new(&mmd)
                .arg("-i")
                .arg(out)
                .arg(format!("::/{d}"))
                .env("SOURCE_DATE_EPOCH", epoch.to_string()),
            "mmd",
        )?;
    }
    for (dest, src) in files {
        // mcopy -m keeps the source's time: give the source the fixed one first.
        let stamp = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
        fs::File::options().write(true).open(src)?.set_modified(stamp)?;
        run(
            Command::new(&mcopy)
                .args(["-m", "-i"])
                .arg(out)
                .arg(src)
                .arg(format!("::/{}", dest.trim_start_matches('/')))
                .env("SOURCE_DATE_EPOCH", epoch.to_string()),
            "mcopy",
        )?;
    }
    Ok(())
}

/// The name of the optional data partition (a blank partition the machine may use for its
/// data, found by this GPT partition name).
pub const DATA_PARTITION: &str = "berth-data";
/// The GPT type of the data partition: Linux filesystem data.
pub const LINUX_DATA_TYPE_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// systemd-boot (Debian's `systemd-boot-efi`): the boot manager of the EFI disks, which picks
/// a slot by boot counting (see [`berth_schema::slots`]).
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// The smallest EFI system partition of an EFI disk: room for two UKIs (one per slot) that
/// may grow; FAT16, which firmware reads everywhere (the El Torito image of an ISO is only as
/// large as its files need). Its free space is sparse in the image file.
const ESP_DISK_MIN_BYTES: u64 = 64 << 20;

/// The smallest system slot when `[system] slot_size` is not set.
pub const SLOT_MIN_BYTES: u64 = 512 << 20;

/// The size of each system slot: `asked` (`[system] slot_size`), or twice `payload` (the
/// system partition image) rounded up to 64 MiB and at least [`SLOT_MIN_BYTES`]. An asked
/// size the payload does not fit in is refused with the size that fits.
pub fn slot_bytes(payload: u64, asked: Option<u64>) -> Result<u64, String> {
    const MIB: u64 = 1 << 20;
    match asked {
        Some(asked) if asked < payload => Err(format!(
            "[system] slot_size = {} MiB is smaller than this image's system partition ({} MiB): set it to at \
             least \"{}m\", with room for the updates to come (or remove it: the default is twice the image)",
            asked / MIB,
            payload.div_ceil(MIB),
            payload.div_ceil(MIB)
        )),
        Some(asked) => Ok(align_up(asked, MIB)),
        None => Ok(align_up(payload * 2, 64 * MIB).max(SLOT_MIN_BYTES)),
    }
}

/// What an EFI disk holds.
#[derive(Debug, Clone, Copy)]
pub struct DiskLayout<'a> {
    /// The boot manager, systemd-boot (signed when the UKI is).
    pub boot_manager: &'a Path,
    /// Slot A's UKI.
    pub uki: &'a Path,
    /// Slot A's system partition image (squashfs and hash tree).
    pub system: &'a Path,
    /// The size of each slot's system partition ([`slot_bytes`]).
    pub slot_bytes: u64,
    /// The size of the blank data partition, if there is one.
    pub data_bytes: Option<u64>,
    /// The disk's size is a multiple of this (1 MiB; 1 GiB for GCE); the space after the last
    /// partition stays free.
    pub align: u64,
}

/// The raw GPT disk at `out`, laid out for A/B updates:
/// 1. the EFI system partition: systemd-boot at the removable-media path
///    ([`berth_schema::slots::BOOT_MANAGER_PATH`], no NVRAM entry needed), its `loader.conf`,
///    and slot A's UKI as the committed entry `\EFI\Linux\berth-1-a.efi`;
/// 2. `berth-system-a`: the system partition image;
/// 3. `berth-system-b`: blank, as large, for the first update;
/// 4. with `data_bytes`, a blank data partition named [`DATA_PARTITION`].
///
/// The blank space is sparse in the file. Partitions start on whole MiB.
pub fn write_raw_efi(disk: &DiskLayout<'_>, epoch: u64, out: &Path) -> Result<()> {
    use berth_schema::slots::{
        BootEntry, Slot, BOOT_MANAGER_PATH, ENTRIES_DIR, LOADER_CONF, LOADER_CONF_PATH,
    };
    const MIB: u64 = 1 << 20;
    let seed = crate::blobs::sha256_file(disk.uki).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let esp = dir.join(".esp.img");
    let loader_conf = dir.join(".loader.conf");
    fs::write(&loader_conf, LOADER_CONF)?;
    let entry = format!("{ENTRIES_DIR}/{}", BootEntry::first().file_name());
    let uki_bytes = fs::metadata(disk.uki)?.len();
    let esp_min = align_up(3 * uki_bytes + MIB, 16 * MIB).max(ESP_DISK_MIN_BYTES);
    write_fat(
        &[(BOOT_MANAGER_PATH, disk.boot_manager), (LOADER_CONF_PATH, &loader_conf), (&entry, disk.uki)],
        "BERTH-ESP",
        seed.as_bytes(),
        epoch,
        esp_min,
        &esp,
    )?;
    fs::remove_file(&loader_conf)?;
    let system_bytes =
        fs::metadata(disk.system).with_context(|| format!("reading {}", disk.system.display()))?.len();
    if system_bytes > disk.slot_bytes {
        bail!("internal: the system partition ({system_bytes} bytes) is larger than its slot");
    }
    let (slot_a, slot_b) = (Slot::A.partition_name(), Slot::B.partition_name());
    // (source file or blank, bytes, type, name)
    let mut layout: Vec<(Option<&Path>, u64, &'static str, &str)> = vec![
        (
            Some(esp.as_path()),
            fs::metadata(&esp)?.len(),
            ESP_TYPE_GUID,
            berth_schema::slots::ESP_PARTITION_NAME,
        ),
        (Some(disk.system), disk.slot_bytes, LINUX_DATA_TYPE_GUID, &slot_a),
        (None, disk.slot_bytes, LINUX_DATA_TYPE_GUID, &slot_b),
    ];
    if let Some(bytes) = disk.data_bytes {
        layout.push((None, bytes, LINUX_DATA_TYPE_GUID, DATA_PARTITION));
    }
    let mut partitions = Vec::new();
    let mut next = MIB;
    for (_, bytes, type_guid, name) in &layout {
        let size = align_up(*bytes, MIB);
        partitions.push(GptPartition {
            type_guid,
            guid: guid(seed.as_bytes(), name),
            first_lba: next / 512,
            last_lba: (next + size) / 512 - 1,
            name: name.to_string(),
        });
        next += size;
    }
    let total = align_up(next + MIB, disk.align.max(MIB));
    let _ = fs::remove_file(out);
    let mut file = fs::File::create(out)?;
    file.set_len(total)?;
    for (offset, bytes) in gpt(total / 512, &guid(seed.as_bytes(), "disk"), &partitions) {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&bytes)?;
    }
    for ((source, ..), part) in layout.iter().zip(&partitions) {
        if let Some(source) = source {
            copy_sparse(source, &mut file, part.first_lba * 512)?;
        }
    }
    file.flush()?;
    let _ = fs::remove_file(&esp);
    Ok(())
}

/// Whether `bytes` are all zero (compared with a zero block: `memcmp`, fast even in debug
/// builds, which tests run on disks of gigabytes).
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; 4096] = [0; 4096];
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Copies `source` into `out` at `offset`, leaving its all-zero 64 KiB blocks as holes (`out`
/// is a new sparse file: the ESP's free space takes no room).
pub(crate) fn copy_sparse(source: &Path, out: &mut fs::File, offset: u64) -> Result<()> {
    let mut input = fs::File::open(source).with_context(|| format!("reading {}", source.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut at = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(());
        }
        if !all_zero(&buf[..filled]) {
            out.seek(SeekFrom::Start(at))?;
            out.write_all(&buf[..filled])?;
        }
        at += filled as u64;
    }
}

/// The EFI system partition's type GUID.
pub const ESP_TYPE_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// One GPT partition.
#[derive(Debug, Clone)]
pub struct GptPartition {
    /// Type GUID (text form).
    pub type_guid: &'static str,
    /// Unique GUID (text form).
    pub guid: String,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Name (at most 36 UTF-16 units).
    pub name: String,
}

/// A partition as [`read_gpt`] finds it on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPartition {
    /// Its name.
    pub name: String,
    /// Its type GUID, on-disk form.
    pub type_guid: [u8; 16],
    /// Where it starts, in bytes.
    pub offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

/// The partitions of the GPT disk `disk` (the primary table), in table order.
pub fn read_gpt(disk: &Path) -> Result<Vec<DiskPartition>> {
    let mut f = fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut head = vec![0u8; 512 * 34];
    f.read_exact(&mut head).with_context(|| format!("{}: too small for a GPT", disk.display()))?;
    if &head[512..520] != b"EFI PART" {
        bail!("{}: no GPT partition table", disk.display());
    }
    let field = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let entries_lba = u64::from_le_bytes(head[512 + 72..512 + 80].try_into()?);
    let (count, size) = (field(512 + 80) as usize, field(512 + 84) as usize);
    if size < 128 {
        bail!("{}: GPT entries of {size} bytes", disk.display());
    }
    let mut entries = vec![0u8; count.min(256) * size];
    f.seek(SeekFrom::Start(entries_lba * 512))?;
    f.read_exact(&mut entries).with_context(|| format!("{}: reading the GPT entries", disk.display()))?;
    let mut out = Vec::new();
    for e in entries.chunks_exact(size) {
        let type_guid: [u8; 16] = e[..16].try_into()?;
        if type_guid == [0; 16] {
            continue;
        }
        let first = u64::from_le_bytes(e[32..40].try_into()?);
        let last = u64::from_le_bytes(e[40..48].try_into()?);
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        out.push(DiskPartition {
            name: String::from_utf16_lossy(&units),
            type_guid,
            offset: first * 512,
            bytes: (last + 1).saturating_sub(first) * 512,
        });
    }
    Ok(out)
}

/// A GUID's on-disk form: the first three fields little-endian.
pub fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// The sectors of a GPT for a disk of `sectors` 512-byte sectors: protective MBR, primary
/// header and entries, backup entries and header — as (byte offset, bytes) to write.
pub fn gpt(sectors: u64, disk_guid: &str, parts: &[GptPartition]) -> Vec<(u64, Vec<u8>)> {
    let mut mbr = vec![0u8; 512];
    let entry = &mut mbr[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    entry[4] = 0xEE;
    entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    entry[12..16].copy_from_slice(&((sectors - 1).min(0xFFFF_FFFF) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut entries = vec![0u8; 128 * 128];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&guid_bytes(p.type_guid));
        e[16..32].copy_from_slice(&guid_bytes(&p.guid));
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + j * 2..58 + j * 2].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32(&entries);
    let header = |my: u64, alternate: u64, entries_lba: u64| {
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[56..72].copy_from_slice(&guid_bytes(disk_guid));
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let last = sectors - 1;
    vec![
        (0, mbr),
        (512, header(1, last, 2)),
        (1024, entries.clone()),
        ((last - 32) * 512, entries),
        (last * 512, header(last, 1, last - 32)),
    ]
}

/// Converts the raw disk to `qcow2` or `vhdx` with `qemu-img`; the VHDX's identifiers are
/// derived from `seed` (the disk's [`disk_seed`]).
pub fn convert(raw: &Path, format: Format, out: &Path, seed: &str) -> Result<()> {
    let qemu_img = tool("qemu-img", "qemu-utils")?;
    let (name, opts): (&str, &[&str]) = match format {
        Format::Qcow2 => ("qcow2", &[]),
        // Hyper-V wants dynamic VHDX; 1 MiB blocks keep it small.
        Format::Vhdx => ("vhdx", &["-o", "subformat=dynamic,block_size=1048576"]),
        _ => bail!("{} is not a disk conversion", format.name()),
    };
    let _ = fs::remove_file(out);
    run(
        Command::new(qemu_img).args(["convert", "-q", "-f", "raw", "-O", name]).args(opts).arg(raw).arg(out),
        "qemu-img convert",
    )?;
    if format == Format::Vhdx {
        normalize_vhdx(out, seed)?;
    }
    Ok(())
}

/// What a disk's derived identifiers are made from: its boot UKI's hash (which covers the
/// system partition through the root hash on its command line) and the disk's size — the
/// same for the same content, without reading gigabytes of disk.
pub fn disk_seed(uki: &Path, raw: &Path) -> Result<String> {
    let uki = crate::blobs::sha256_file(uki).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("{uki}:{}", fs::metadata(raw)?.len()))
}

/// qemu-img writes random GUIDs into a VHDX (file, data-write and log GUIDs in both headers,
/// and the virtual disk id): replace them with ones derived from the disk's content and fix the
/// headers' CRC-32C, so two builds are byte-identical.
fn normalize_vhdx(vhdx: &Path, seed: &str) -> Result<()> {
    let mut f = fs::File::options().read(true).write(true).open(vhdx)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let guid_bytes = |label: &str| -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest([seed.as_bytes(), label.as_bytes()].concat());
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b
    };
    // Two headers at 64 KiB and 128 KiB: signature "head", checksum (4), sequence (8), then
    // FileWriteGuid, DataWriteGuid, LogGuid (16 each), LogVersion, Version, LogLength (4),
    // LogOffset (8); the checksum covers 4 KiB. The sequence numbers become 1 and 2, in the
    // order qemu-img left them (the higher one is the current header).
    let seq = |h: usize| u64::from_le_bytes(data[h + 8..h + 16].try_into().unwrap_or([0; 8]));
    let first_is_current = seq(64 * 1024) > seq(128 * 1024);
    for header in [64 * 1024usize, 128 * 1024] {
        if data.get(header..header + 4) != Some(b"head") {
            bail!("{}: not a VHDX header at {header}", vhdx.display());
        }
        data[header + 16..header + 32].copy_from_slice(&guid_bytes("file-write"));
        data[header + 32..header + 48].copy_from_slice(&guid_bytes("data-write"));
        let current = (header == 64 * 1024) == first_is_current;
        data[header + 8..header + 16].copy_from_slice(&(if current { 2u64 } else { 1 }).to_le_bytes());
        if data[header + 48..header + 64].iter().any(|b| *b != 0) {
            bail!("{}: qemu-img left a log to replay; cannot make it reproducible", vhdx.display());
        }
        // LogGuid zero: the log holds nothing to replay; its leftover entries (with random
        // GUIDs) are cleared.
        let log_len = u32::from_le_bytes(data[header + 68..header + 72].try_into()?) as usize;
        let log_off = usize::try_from(u64::from_le_bytes(data[header + 72..header + 80].try_into()?))?;
        if let Some(log) = data.get_mut(log_off..log_off + log_len) {
            log.fill(0);
        }
        data[header + 4..header + 8].copy_from_slice(&[0; 4]);
        let crc = crc32c(&data[header..header + 4096]);
        data[header + 4..header + 8].copy_from_slice(&crc.to_le_bytes());
    }
    // The metadata region (found through the region table at 192 KiB) holds the Page 83 data
    // (the virtual disk's id).
    let page83: [u8; 16] =
        [0xAB, 0x12, 0xCA, 0xBE, 0xE6, 0xB2, 0x23, 0x45, 0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46];
    let metadata_region: [u8; 16] =
        [0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E];
    let rt = 192 * 1024;
    let count = u32::from_le_bytes(data[rt + 8..rt + 12].try_into()?) as usize;
    for i in 0..count {
        let e = rt + 16 + i * 32;
        if data[e..e + 16] == metadata_region {
            let off = usize::try_from(u64::from_le_bytes(data[e + 16..e + 24].try_into()?))?;
            let entries = u16::from_le_bytes(data[off + 10..off + 12].try_into()?) as usize;
            for j in 0..entries {
                let me = off + 32 + j * 32;
                if data[me..me + 16] == page83 {
                    let item = off + u32::from_le_bytes(data[me + 16..me + 20].try_into()?) as usize;
                    data[item..item + 16].copy_from_slice(&guid_bytes("disk-id"));
                }
            }
        }
    }
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&data)?;
    Ok(())
}

/// CRC-32C (Castagnoli), as VHDX checksums use.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// GRUB's modules for the ISO's EFI loader: find the ISO 9660 tree, load a kernel the EFI way.
const GRUB_EFI_MODULES: [&str; 5] = ["iso9660", "search", "linux", "boot", "efi_gop"];
/// Where Debian's `grub-efi-amd64-bin` keeps those modules.
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// `text` as one word of a GRUB script: single-quoted, `'` written as `'\''`.
fn grub_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The kernel command line as the words GRUB's `linux` command takes: split at blanks outside
/// double quotes, the quotes removed (`a="b c"` is the word `a=b c`; GRUB puts it back in
/// double quotes, which the kernel reads as the same parameter). GRUB escapes `\`, `'` and any
/// other `"` with a backslash the kernel does not undo, so those are refused.
fn grub_linux_words(cmdline: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut started) = (String::new(), false, false);
    for c in cmdline.chars() {
        match c {
            '"' => (quoted, started) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            '\\' | '\'' => bail!(
                "[kernel] cmdline: the ISO's UEFI loader (GRUB) cannot pass `{c}` to the kernel \
                 unchanged; remove it from the command line or build another format"
            ),
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if quoted {
        bail!("[kernel] cmdline: a double quote is not closed: {cmdline}");
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

/// The GRUB script built into the ISO's EFI loader: find this ISO's file system by its marker
/// file, then boot `/vmlinuz` with `/initrd.img` and the command line's words, each quoted.
fn grub_iso_script(marker: &str, cmdline: &str) -> Result<String> {
    let args: Vec<String> = grub_linux_words(cmdline)?.iter().map(|w| grub_quote(w)).collect();
    Ok(format!(
        "search --no-floppy --file --set=root {marker}\nlinux /vmlinuz {}\ninitrd /initrd.img\nboot\n",
        args.join(" ")
    ))
}

/// The ISO's EFI loader at `out`: a GRUB image (`grub-mkimage`, deterministic for the same input)
/// with [`grub_iso_script`] built in and no other files.
fn write_grub_efi(marker: &str, cmdline: &str, scratch: &Path, out: &Path) -> Result<()> {
    let mkimage = tool("grub-mkimage", "grub-common")?;
    packaged_file(&format!("{GRUB_EFI_DIR}/linux.mod"), "grub-efi-amd64-bin")?;
    let script = scratch.join("grub-early.cfg");
    fs::write(&script, grub_iso_script(marker, cmdline)?)?;
    let result = run(
        Command::new(mkimage)
            .args(["-O", "x86_64-efi", "-d", GRUB_EFI_DIR, "-p", "/EFI/BOOT", "-o"])
            .arg(out)
            .arg("-c")
            .arg(&script)
            .args(GRUB_EFI_MODULES),
        "grub-mkimage",
    );
    let _ = fs::remove_file(&script);
    result
}

/// The hybrid ISO at `out`: isolinux for BIOS and an El Torito EFI image holding a small GRUB
/// for UEFI, both loading the kernel and initramfs stored once as files (`/vmlinuz`,
/// `/initrd.img`); isohybrid MBR and GPT so it also boots as a USB disk. GRUB finds the tree by
/// a marker file named after the initramfs's hash, so it boots this ISO even with others
/// attached.
pub fn write_iso(vmlinuz: &Path, initrd: &Path, cmdline: &str, epoch: u64, out: &Path) -> Result<()> {
    let xorriso = tool("xorriso", "xorriso")?;
    let isolinux = packaged_file("/usr/lib/ISOLINUX/isolinux.bin", "isolinux")?;
    let mbr = packaged_file("/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux")?;
    let ldlinux = packaged_file("/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common")?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let tree = dir.join(".iso-tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("isolinux"))?;
    fs::create_dir_all(tree.join("berth"))?;
    fs::copy(vmlinuz, tree.join("vmlinuz"))?;
    fs::copy(initrd, tree.join("initrd.img"))?;
    fs::copy(&isolinux, tree.join("isolinux/isolinux.bin"))?;
    fs::copy(&ldlinux, tree.join("isolinux/ldlinux.c32"))?;
    fs::write(
        tree.join("isolinux/isolinux.cfg"),
        format!(
            "SERIAL 0 115200\nDEFAULT berth\nPROMPT 0\nTIMEOUT 0\nLABEL berth\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd.img {}\n",
            cmdline.trim()
        ),
    )?;
    let seed = crate::blobs::sha256_file(initrd).map_err(|e| anyhow::anyhow!("{e}"))?;
    let marker = format!("/berth/{}", &seed.trim_start_matches("sha256:")[..16]);
    fs::write(tree.join(marker.trim_start_matches('/')), "berth: GRUB finds this ISO by this file\n")?;
    let grub = dir.join(".iso-grub.efi");
    let efi_image = (|| {
        write_grub_efi(&marker, cmdline, dir, &grub)?;
        let mut pe = fs::read(&grub)?;
        fix_pe_timestamp(&mut pe, pe_timestamp(epoch)?)?;
        fs::write(&grub, pe)?;
        write_fat(
            &[("EFI/BOOT/BOOTX64.EFI", &grub)],
            "BERTH-EFI",
            seed.as_bytes(),
            epoch,
            0,
            &tree.join("efiboot.img"),
        )
    })();
    let _ = fs::remove_file(&grub);
    efi_image?;
    let stamp = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for entry in walk(&tree)?.into_iter().chain([tree.clone()]) {
        fs::File::open(&entry)?.set_modified(stamp)?;
    }
    let _ = fs::remove_file(out);
    let result = run(
        Command::new(xorriso)
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(out)
            .args(["-R", "-J", "-V", "BERTH", "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-isohybrid-mbr"])
            .arg(&mbr)
            .args(["-eltorito-alt-boot", "-e", "efiboot.img", "-no-emul-boot", "-isohybrid-gpt-basdat"])
            .arg(&tree)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
        "xorriso",
    );
    let _ = fs::remove_dir_all(&tree);
    result
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        }
        out.push(p);
    }
    Ok(out)
}

/// UEFI firmware for QEMU (Debian's `ovmf`), or an error naming the package.
pub fn ovmf() -> Result<PathBuf> {
    for p in ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("UEFI firmware (/usr/share/ovmf/OVMF.fd) is missing; install it with: apt-get install ovmf")
}

/// What `berth run` boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootable {
    /// A build directory: `-kernel`/`-initrd`/`-append`.
    KernelInitrd(PathBuf),
    /// A hybrid ISO, attached as a CD.
    Iso(PathBuf),
    /// A disk image (`raw`, `qcow2`, `vhdx`, `vpc` for a fixed VHD, `vmdk`), attached as a
    /// virtio disk; needs UEFI.
    Disk(PathBuf, &'static str),
    /// A GCE archive (`disk.raw` in a gzip'd tar): its disk is taken out and attached raw.
    GceArchive(PathBuf),
    /// A UKI, served to the firmware from a FAT directory; needs UEFI.
    Uki(PathBuf),
}

impl Bootable {
    /// Recognizes a build directory or an image file by its content.
    pub fn detect(path: &Path) -> Result<Bootable> {
        if path.is_dir() {
            return Ok(Bootable::KernelInitrd(path.to_path_buf()));
        }
        let mut head = vec![0u8; 0x8006];
        let n = fs::File::open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?
            .read(&mut head)?;
        head.truncate(n);
        let at = |o: usize, m: &[u8]| head.get(o..o + m.len()) == Some(m);
        // A fixed VHD is its raw disk with a footer: look at the end first; a damaged footer
        // is an error, not a raw disk.
        Ok(if crate::cloud_formats::has_vhd_cookie(path) {
            crate::cloud_formats::check_vhd(path)?;
            Bootable::Disk(path.to_path_buf(), "vpc")
        } else if at(0, b"KDMV") {
            Bootable::Disk(path.to_path_buf(), "vmdk")
        } else if at(0, &[0x1f, 0x8b]) {
            Bootable::GceArchive(path.to_path_buf())
        } else if at(0x8001, b"CD001") {
            Bootable::Iso(path.to_path_buf())
        } else if at(0, b"QFI\xfb") {
            Bootable::Disk(path.to_path_buf(), "qcow2")
        } else if at(0, b"vhdxfile") {
            Bootable::Disk(path.to_path_buf(), "vhdx")
        } else if at(0, b"MZ") {
            Bootable::Uki(path.to_path_buf())
        } else if at(0x200, b"EFI PART") {
            Bootable::Disk(path.to_path_buf(), "raw")
        } else {
            bail!(
                "{} is neither a build directory nor a berth image (ISO, raw-efi, qcow2, vhdx, vhd, vmdk, GCE archive or UKI)",
                path.display()
            )
        })
    }

    /// Whether it boots only under UEFI.
    pub fn needs_uefi(&self) -> bool {
        matches!(self, Bootable::Disk(..) | Bootable::GceArchive(_) | Bootable::Uki(_))
    }

    /// QEMU arguments attaching it (firmware excluded); `scratch` is a directory that lives as
    /// long as the VM (for a UKI's FAT directory).
    pub fn qemu_args(&self, scratch: &Path) -> Result<Vec<String>> {
        let drive = |spec: String| vec!["-drive".to_string(), spec];
        Ok(match self {
            Bootable::KernelInitrd(_) => Vec::new(),
            Bootable::Iso(p) => drive(format!("file={},media=cdrom,readonly=on", p.display())),
            // QEMU cannot rewrite a streamOptimized VMDK's grains: the guest writes to a
            // temporary overlay.
            Bootable::Disk(p, "vmdk") => {
                drive(format!("file={},format=vmdk,if=virtio,snapshot=on", p.display()))
            }
            Bootable::Disk(p, fmt) => drive(format!("file={},format={fmt},if=virtio", p.display())),
            Bootable::GceArchive(p) => {
                let raw = scratch.join(crate::cloud_formats::GCE_MEMBER);
                crate::cloud_formats::extract_gce(p, &raw)?;
                drive(format!("file={},format=raw,if=virtio", raw.display()))
            }
            Bootable::Uki(p) => {
                let dir = scratch.join("esp");
                fs::create_dir_all(dir.join("EFI/BOOT"))?;
                fs::copy(p, dir.join("EFI/BOOT/BOOTX64.EFI"))?;
                drive(format!("file=fat:ro:{},format=raw,if=virtio,readonly=on", dir.display()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_twice_the_payload_at_least_512_mib_unless_asked() {
        const MIB: u64 = 1 << 20;
        assert_eq!(slot_bytes(10 * MIB, None).unwrap(), SLOT_MIN_BYTES);
        assert_eq!(slot_bytes(300 * MIB, None).unwrap(), 640 * MIB);
        assert_eq!(slot_bytes(300 * MIB, Some(300 * MIB)).unwrap(), 300 * MIB);
        assert_eq!(slot_bytes(3 * MIB, Some(5 * MIB + 1)).unwrap(), 6 * MIB);
        let err = slot_bytes(300 * MIB + 1, Some(300 * MIB)).unwrap_err();
        assert!(err.contains("[system] slot_size") && err.contains("\"301m\""), "{err}");
    }

    #[test]
    fn formats_parse() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()).unwrap(), f);
        }
        assert!(Format::parse("vmdk2").unwrap_err().contains("raw-efi"));
        assert!(Format::RawEfi.needs_uefi() && !Format::Iso.needs_uefi());
    }

    #[test]
    fn guids_are_stable_and_well_formed() {
        let a = guid(b"seed", "disk");
        assert_eq!(a, guid(b"seed", "disk"));
        assert_ne!(a, guid(b"seed", "esp"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn gpt_layout() {
        let parts = [GptPartition {
            type_guid: ESP_TYPE_GUID,
            guid: guid(b"x", "esp"),
            first_lba: 2048,
            last_lba: 4095,
            name: "EFI system partition".into(),
        }];
        let sectors = 8192;
        let w = gpt(sectors, &guid(b"x", "disk"), &parts);
        assert_eq!(w[0].1[450], 0xEE);
        assert_eq!(&w[1].1[..8], b"EFI PART");
        // The header CRC covers 92 bytes with its own field zeroed.
        let mut h = w[1].1[..92].to_vec();
        let stored = u32::from_le_bytes(h[16..20].try_into().unwrap());
        h[16..20].copy_from_slice(&[0; 4]);
        assert_eq!(crc32(&h), stored);
        // The ESP type GUID in its on-disk (mixed-endian) form.
        assert_eq!(&w[2].1[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(w[4].0, (sectors - 1) * 512);
        assert_eq!(&w[4].1[..8], b"EFI PART");
    }

    #[test]
    fn grub_script_passes_the_kernel_its_command_line_words() {
        let script = grub_iso_script("/berth/0123", " console=ttyS0  a=\"b c\" $x;y \"\" \n").unwrap();
        assert_eq!(
            script,
            "search --no-floppy --file --set=root /berth/0123\n\
             linux /vmlinuz 'console=ttyS0' 'a=b c' '$x;y' ''\n\
             initrd /initrd.img\nboot\n"
        );
        for bad in ["a='b'", "a=\\x", "a=\"b"] {
            let err = grub_iso_script("/m", bad).unwrap_err().to_string();
            assert!(err.starts_with("[kernel] cmdline: "), "{bad}: {err}");
        }
    }

    #[test]
    fn crc32c_known_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn pe_checksum_changes_with_timestamp_only() {
        let mut pe = vec![0u8; 512];
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let mut a = pe.clone();
        fix_pe_timestamp(&mut a, 1).unwrap();
        let mut b = pe.clone();
        fix_pe_timestamp(&mut b, 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(u32::from_le_bytes(a[0x88..0x8c].try_into().unwrap()), 1);
        assert!(fix_pe_timestamp(&mut [0u8; 10], 1).is_err());
    }
}
