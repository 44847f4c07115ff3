//! `berth inspect`: what a built image holds — kernel release and command line, the modules
//! packed, each container with its image digest and layer sizes, and the sizes of it all — read
//! back from the image itself, whatever its format.
//!
//! The kernel, initramfs and command line are found per format: a build directory has them as
//! files; a UKI in its `.linux`, `.initrd` and `.cmdline` sections; an EFI disk (raw, or qcow2 /
//! vhdx converted to raw by `qemu-img`) in the UKI on its EFI system partition (read with
//! `mtools`); an ISO in its files (read with `xorriso`). A disk format's boot plan, modules and
//! layers are on its verified system partition: read with `sqfs2tar` after the partition's
//! hash tree is checked against the root hash on the UKI's command line.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use berth_schema::plan::{Plan, LAYERS_DIR, PLAN_PATH};
use berth_schema::slots::{default_entry, BootEntry, Slot, BOOT_MANAGER_PATH, ENTRIES_DIR, SLOTS};
use berth_schema::system_partition as layout;
use berth_schema::verity::VeritySpec;
use serde::Serialize;

use crate::formats::Bootable;

/// What `berth inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The inspected path.
    pub image: String,
    /// `kernel+initrd`, `uki`, `iso`, `raw`, `qcow2` or `vhdx`.
    pub format: String,
    /// Size of the image (the directory's three files, or the file).
    pub image_bytes: u64,
    /// The kernel's release (from the bzImage header).
    pub kernel_version: String,
    /// Size of the kernel.
    pub kernel_bytes: u64,
    /// The kernel command line.
    pub cmdline: String,
    /// Size of the compressed initramfs.
    pub initrd_bytes: u64,
    /// Its unpacked size (file contents).
    pub initrd_unpacked_bytes: u64,
    /// The init binary's size.
    pub init_bytes: u64,
    /// Kernel modules packed: name → size.
    pub modules: BTreeMap<String, u64>,
    /// The driver sets packed to be loaded by device (`[kernel] hardware`).
    pub hardware: Vec<String>,
    /// The containers, in boot order.
    pub containers: Vec<ContainerReport>,
    /// Unpacked bytes of all layers (each shared layer once).
    pub layers_bytes: u64,
    /// A disk's partitions, in table order (empty for the other formats).
    pub partitions: Vec<PartitionReport>,
    /// The verified system partition of a disk format.
    pub system_partition: Option<SystemPartitionReport>,
    /// The subjects of the certificates the UKI is signed with for Secure Boot (empty: not
    /// signed, or a format whose firmware path is not a UKI).
    pub signature: Vec<String>,
    /// A disk's boot entries on its EFI system partition (`berth-1-a.efi`), and systemd-boot's
    /// signers (empty for the other formats).
    pub boot: Option<BootReport>,
    /// A cloud import format's own checks (`vhd`, `gce`, `vmdk`).
    pub cloud: Option<CloudReport>,
}

/// What a cloud import format was checked for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CloudReport {
    /// The disk's size inside the format.
    pub disk_bytes: u64,
    /// What was checked, as the cloud asks it.
    pub checks: String,
}

/// The raw-disk view of a cloud format (a GCE archive's disk is taken out into `scratch`),
/// with what its own structure was checked for.
fn cloud_view(bootable: &Bootable, scratch: &Path) -> Result<(Bootable, Option<CloudReport>)> {
    use crate::cloud_formats as cf;
    Ok(match bootable {
        Bootable::GceArchive(p) => {
            let raw = scratch.join(cf::GCE_MEMBER);
            let disk_bytes = cf::extract_gce(p, &raw)?;
            let checks = "one member, disk.raw, old-GNU tar, gzip; a whole number of GiB".to_string();
            (Bootable::Disk(raw, "raw"), Some(CloudReport { disk_bytes, checks }))
        }
        Bootable::Disk(p, "vpc") => {
            let v = cf::check_vhd(p)?;
            let checks = "fixed VHD; a whole number of MiB; footer checksum right".to_string();
            (bootable.clone(), Some(CloudReport { disk_bytes: v.bytes, checks }))
        }
        Bootable::Disk(p, "vmdk") => {
            let descriptor = cf::vmdk_descriptor(p)?;
            let kind = descriptor
                .lines()
                .find_map(|l| l.strip_prefix("createType="))
                .unwrap_or("unknown")
                .trim_matches('"')
                .to_string();
            let sectors: u64 = descriptor
                .lines()
                .find_map(|l| l.strip_prefix("RW ")?.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            (
                bootable.clone(),
                Some(CloudReport { disk_bytes: sectors * 512, checks: format!("VMDK, {kind}") }),
            )
        }
        other => (other.clone(), None),
    })
}

/// An EFI disk's boot manager and entries.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BootReport {
    /// The entries of `\EFI\Linux`, as systemd-boot names them.
    pub entries: Vec<String>,
    /// The one systemd-boot boots (the one inspected).
    pub default: String,
    /// The subjects of the certificates systemd-boot is signed with.
    pub boot_manager_signature: Vec<String>,
}

/// One partition of a disk image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionReport {
    /// Its GPT name.
    pub name: String,
    /// Where it starts, in bytes.
    pub offset: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The verified system partition as read back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SystemPartitionReport {
    /// The partition whose blocks the UKI's root hash was checked against
    /// (`berth-system-a`): the first slot that matches, else the default entry's.
    pub partition: String,
    /// The root hash the UKI's command line carries.
    pub root_hash: String,
    /// Bytes of squashfs the hash tree covers.
    pub data_bytes: u64,
    /// Bytes of the hash tree after it.
    pub hash_tree_bytes: u64,
    /// Whether the tree on the partition is the one its data gives, with that root hash.
    pub verified: bool,
    /// Its squashfs pieces (the base, the modules, one per layer).
    pub pieces: usize,
}

/// One container of the image.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    /// Its name.
    pub name: String,
    /// `onboot`, `service`, `onshutdown` or `console`.
    pub kind: String,
    /// The image reference as written in the config.
    pub image: String,
    /// The image's manifest digest.
    pub digest: String,
    /// Its layers, bottom first: (digest, unpacked bytes).
    pub layers: Vec<(String, u64)>,
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A UKI's sections: (kernel, initramfs, command line).
fn uki_parts(pe: &[u8]) -> Result<(Vec<u8>, Vec<u8>, String)> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(pe).context("the UKI is not a PE file")?;
    let section = |name: &str| -> Result<Vec<u8>> {
        let s = file.section_by_name(name).ok_or_else(|| anyhow!("the UKI has no {name} section"))?;
        // The stub's sections are padded to the file alignment; the virtual size is exact.
        let data = s.data().context("reading a UKI section")?;
        // A size beyond usize is beyond the data too.
        let size = usize::try_from(s.size()).map_or(data.len(), |n| n.min(data.len()));
        Ok(data[..size].to_vec())
    };
    let cmdline = String::from_utf8_lossy(&section(".cmdline")?).trim_end_matches('\0').trim().to_string();
    Ok((section(".linux")?, section(".initrd")?, cmdline))
}

/// What an image boots, read out of it.
struct Parts {
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    cmdline: String,
    /// A disk's raw form (converted into the scratch directory when it was not raw).
    disk: Option<std::path::PathBuf>,
    /// The UKI (alone, or the default entry of a disk's ESP).
    efi: Option<std::path::PathBuf>,
    /// A disk's boot entries, the default one, and its boot manager (copied out of the ESP).
    esp: Option<(Vec<BootEntry>, BootEntry, std::path::PathBuf)>,
}

/// Reads the kernel, initramfs and command line out of an image.
fn parts(bootable: &Bootable, scratch: &Path) -> Result<Parts> {
    let (kernel, initrd, cmdline) = boot_files(bootable, scratch)?;
    let disk = match bootable {
        Bootable::Disk(p, "raw") => Some(p.clone()),
        Bootable::Disk(..) => Some(scratch.join("disk.raw")),
        _ => None,
    };
    let (efi, esp) = match bootable {
        Bootable::Uki(p) => (Some(p.clone()), None),
        Bootable::Disk(p, _) => {
            let raw = disk.as_deref().context("internal: a disk has its raw form")?;
            let esp = Esp::of(p, raw)?;
            let (entries, default) = esp.entries(p)?;
            let manager = scratch.join("BOOTX64.EFI");
            esp.copy_out(BOOT_MANAGER_PATH, &manager)?;
            (Some(scratch.join(UKI_COPY)), Some((entries, default, manager)))
        }
        _ => (None, None),
    };
    Ok(Parts { kernel, initrd, cmdline, disk, efi, esp })
}

/// Where a disk's default UKI is copied in the scratch directory.
const UKI_COPY: &str = "entry.efi";

/// The EFI system partition of a raw disk, read with `mtools`.
struct Esp {
    /// `mtools`' name for it: `DISK@@OFFSET`.
    image: String,
}

impl Esp {
    fn of(shown: &Path, raw: &Path) -> Result<Esp> {
        let offset = crate::formats::read_gpt(raw)?
            .iter()
            .find(|p| p.type_guid == crate::formats::guid_bytes(crate::formats::ESP_TYPE_GUID))
            .map(|p| p.offset)
            .ok_or_else(|| anyhow!("{}: no EFI system partition", shown.display()))?;
        Ok(Esp { image: format!("{}@@{offset}", raw.display()) })
    }

    fn copy_out(&self, path: &str, to: &Path) -> Result<()> {
        run(
            Command::new("mcopy").args(["-n", "-i", &self.image]).arg(format!("::/{path}")).arg(to),
            "mcopy (reading the EFI system partition; apt-get install mtools)",
        )
    }

    /// The berth boot entries and the one systemd-boot boots.
    fn entries(&self, shown: &Path) -> Result<(Vec<BootEntry>, BootEntry)> {
        let out = Command::new("mdir")
            .args(["-b", "-i", &self.image, &format!("::/{ENTRIES_DIR}")])
            .output()
            .context("running mdir (reading the EFI system partition; apt-get install mtools)")?;
        let listing = String::from_utf8_lossy(&out.stdout);
        let entries: Vec<BootEntry> = listing
            .lines()
            .filter_map(|l| l.trim().rsplit('/').next())
            .filter_map(BootEntry::parse)
            .collect();
        let default = default_entry(&entries).ok_or_else(|| {
            anyhow!("{}: no boot entry in \\{ENTRIES_DIR} of its EFI system partition", shown.display())
        })?;
        Ok((entries, default))
    }
}

/// The kernel, initramfs and command line of an image.
fn boot_files(bootable: &Bootable, scratch: &Path) -> Result<(Vec<u8>, Vec<u8>, String)> {
    match bootable {
        Bootable::KernelInitrd(dir) => Ok((
            fs::read(dir.join(crate::build::VMLINUZ))?,
            fs::read(dir.join(crate::build::INITRD))?,
            fs::read_to_string(dir.join(crate::build::CMDLINE))?.trim().to_string(),
        )),
        Bootable::Uki(p) => uki_parts(&fs::read(p)?),
        Bootable::Iso(p) => {
            for name in ["vmlinuz", "initrd.img", "isolinux/isolinux.cfg"] {
                let dest = scratch.join(name.replace('/', "_"));
                run(
                    Command::new("xorriso")
                        .args(["-osirrox", "on", "-indev"])
                        .arg(p)
                        .args(["-extract", &format!("/{name}")])
                        .arg(&dest),
                    "xorriso (reading the ISO; apt-get install xorriso)",
                )?;
            }
            let cfg = fs::read_to_string(scratch.join("isolinux_isolinux.cfg"))?;
            let cmdline = cfg
                .lines()
                .find_map(|l| l.trim().strip_prefix("APPEND "))
                .map(|a| {
                    a.split_whitespace().filter(|w| !w.starts_with("initrd=")).collect::<Vec<_>>().join(" ")
                })
                .unwrap_or_default();
            Ok((fs::read(scratch.join("vmlinuz"))?, fs::read(scratch.join("initrd.img"))?, cmdline))
        }
        Bootable::GceArchive(_) => {
            let (disk, _) = cloud_view(bootable, scratch)?;
            boot_files(&disk, scratch)
        }
        Bootable::Disk(p, fmt) => {
            let raw = if *fmt == "raw" {
                p.clone()
            } else {
                let raw = scratch.join("disk.raw");
                run(
                    // -U: read it even while a VM has it open (inspecting is read-only).
                    Command::new("qemu-img").args(["convert", "-U", "-f", fmt, "-O", "raw"]).arg(p).arg(&raw),
                    "qemu-img convert (apt-get install qemu-utils)",
                )?;
                raw
            };
            let esp = Esp::of(p, &raw)?;
            let (_, default) = esp.entries(p)?;
            let uki = scratch.join(UKI_COPY);
            esp.copy_out(&format!("{ENTRIES_DIR}/{}", default.file_name()), &uki)?;
            uki_parts(&fs::read(&uki)?)
        }
    }
}

fn decompress(initrd: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if initrd.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(initrd)?.read_to_end(&mut out)?;
    } else if initrd.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(initrd).read_to_end(&mut out)?;
    } else if initrd.starts_with(b"070701") {
        out = initrd.to_vec();
    } else {
        bail!("the initramfs is neither zstd, gzip nor a plain cpio archive");
    }
    Ok(out)
}

/// The kernel, initramfs and command line an image boots (for a disk: its UKI's, with the
/// slim initramfs), read out of it as [`inspect`] does.
pub fn boot_files_of(path: &Path) -> Result<(Vec<u8>, Vec<u8>, String)> {
    let scratch = tempfile::tempdir()?;
    let (disk, _) = cloud_view(&Bootable::detect(path)?, scratch.path())?;
    boot_files(&disk, scratch.path())
}

/// The guest RAM (MiB) `image` needs to boot (see `crate::sizing`): from its initramfs's
/// unpacked pages for a build directory or a UKI; OVMF's floor for a disk, whose slim
/// initramfs never needs more; `None` for an ISO (its need depends on the firmware path).
pub fn memory_need_mib(bootable: &Bootable) -> Result<Option<u64>> {
    let pages = |initrd: &[u8]| -> Result<u64> {
        let entries =
            crate::cpio::read_archive(decompress(initrd)?.as_slice()).context("reading the initramfs")?;
        Ok(entries.iter().map(|e| (e.data.len() as u64).div_ceil(4096) * 4096).sum())
    };
    Ok(match bootable {
        Bootable::KernelInitrd(dir) => {
            Some(crate::sizing::in_ram_mib(pages(&fs::read(dir.join(crate::build::INITRD))?)?))
        }
        Bootable::Uki(p) => {
            let pe = fs::read(p)?;
            let (_, initrd, _) = uki_parts(&pe)?;
            Some(crate::sizing::uefi_mib(pages(&initrd)?, pe.len() as u64))
        }
        Bootable::Disk(..) | Bootable::GceArchive(_) => Some(crate::sizing::UEFI_FLOOR_MIB),
        Bootable::Iso(_) => None,
    })
}

/// Inspects a build directory or image file.
pub fn inspect(path: &Path) -> Result<Report> {
    let bootable = Bootable::detect(path)?;
    let scratch = tempfile::tempdir()?;
    let (view, cloud) = cloud_view(&bootable, scratch.path())?;
    let Parts { kernel, initrd, cmdline, disk, efi, esp } = parts(&view, scratch.path())?;
    let signature = match &efi {
        Some(efi) => crate::signing::signers(efi)?,
        None => Vec::new(),
    };
    let boot = match &esp {
        Some((entries, default, manager)) => Some(BootReport {
            entries: entries.iter().map(BootEntry::file_name).collect(),
            default: default.file_name(),
            boot_manager_signature: crate::signing::signers(manager)?,
        }),
        None => None,
    };
    let entries =
        crate::cpio::read_archive(decompress(&initrd)?.as_slice()).context("reading the initramfs")?;
    let mut modules = BTreeMap::new();
    let mut layer_sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut unpacked = 0u64;
    let mut init_bytes = 0;
    let mut plan_text = None;
    let mut count = |path: &str, len: u64, layers_dir: &str| {
        if path.ends_with(".ko") {
            let name = path.rsplit('/').next().unwrap_or_default().trim_end_matches(".ko").to_string();
            modules.insert(name, len);
        }
        if let Some(rest) = path.strip_prefix(layers_dir).and_then(|r| r.strip_prefix('/')) {
            let hex = rest.split('/').next().unwrap_or_default();
            *layer_sizes.entry(hex.to_string()).or_default() += len;
        }
    };
    for e in &entries {
        let len = e.data.len() as u64;
        unpacked += len;
        if e.path == "init" {
            init_bytes = len;
        }
        if e.path == PLAN_PATH.trim_start_matches('/') {
            plan_text = Some(String::from_utf8_lossy(&e.data).into_owned());
        }
        count(&e.path, len, LAYERS_DIR.trim_start_matches('/'));
    }
    let mut partitions = Vec::new();
    let mut system_partition = None;
    if let Some(raw) = &disk {
        let table = crate::formats::read_gpt(raw)?;
        partitions = table
            .iter()
            .map(|p| PartitionReport { name: p.name.clone(), offset: p.offset, bytes: p.bytes })
            .collect();
        // The slots' partitions, the default entry's first.
        let mut slots: Vec<Slot> = SLOTS.to_vec();
        if let Some((_, default, _)) = &esp {
            slots.sort_by_key(|s| *s != default.slot);
        }
        let candidates: Vec<&crate::formats::DiskPartition> =
            slots.iter().filter_map(|s| table.iter().find(|p| p.name == s.partition_name())).collect();
        if !candidates.is_empty() {
            let spec = VeritySpec::from_cmdline(&cmdline)
                .ok_or_else(|| anyhow!("{}: the UKI's command line has no berth.verity=", path.display()))?
                .map_err(|e| anyhow!(e))?;
            let (report, files) = read_system_partition(raw, &candidates, &spec)?;
            for (file, len, data) in files {
                count(&file, len, layout::LAYERS);
                if file == layout::PLAN {
                    plan_text = data.map(|d| String::from_utf8_lossy(&d).into_owned());
                }
            }
            system_partition = Some(report);
        }
    }
    let plan_text = plan_text.ok_or_else(|| {
        anyhow!(
            "{}: no boot plan ({PLAN_PATH}, or a system partition): not an image made by `berth build`",
            path.display()
        )
    })?;
    let plan = Plan::from_json(&plan_text).map_err(|e| anyhow!(e))?;
    let mut containers = Vec::new();
    let kinds = [("onboot", &plan.onboot), ("service", &plan.service), ("onshutdown", &plan.onshutdown)];
    let console: Vec<_> = plan.console.iter().cloned().collect();
    for (kind, list) in kinds.into_iter().chain([("console", &console)]) {
        for c in list.iter() {
            containers.push(ContainerReport {
                name: c.name.clone(),
                kind: kind.to_string(),
                image: c.image.clone(),
                digest: c.image_digest.clone(),
                layers: c
                    .layers
                    .iter()
                    .map(|l| {
                        let hex = berth_schema::plan::layer_dir_name(&l.digest).to_string();
                        (l.digest.clone(), layer_sizes.get(&hex).copied().unwrap_or(0))
                    })
                    .collect(),
            });
        }
    }
    let image_bytes = match &bootable {
        Bootable::KernelInitrd(_) => (kernel.len() + initrd.len() + cmdline.len() + 1) as u64,
        _ => fs::metadata(path)?.len(),
    };
    let format = match &bootable {
        Bootable::KernelInitrd(_) => "kernel+initrd",
        Bootable::Uki(_) => "uki",
        Bootable::Iso(_) => "iso",
        Bootable::Disk(_, "vpc") => "vhd",
        Bootable::Disk(_, f) => f,
        Bootable::GceArchive(_) => "gce",
    };
    Ok(Report {
        image: path.display().to_string(),
        format: format.to_string(),
        image_bytes,
        kernel_version: crate::bzimage::release(&kernel).unwrap_or_else(|| "unknown".into()),
        kernel_bytes: kernel.len() as u64,
        cmdline,
        initrd_bytes: initrd.len() as u64,
        initrd_unpacked_bytes: unpacked,
        init_bytes,
        modules,
        hardware: plan.hardware.iter().map(|s| s.name().to_string()).collect(),
        containers,
        layers_bytes: layer_sizes.values().sum(),
        partitions,
        system_partition,
        signature,
        boot,
        cloud,
    })
}

/// Reads the system partition of `disk` that matches `spec`: the first of `candidates` whose
/// hash tree is the one its data gives with that root hash, else the first (reported as not
/// verified). Lists its squashfs (`sqfs2tar`): (path, size, the content of the plan).
#[allow(clippy::type_complexity)]
fn read_system_partition(
    disk: &Path,
    candidates: &[&crate::formats::DiskPartition],
    spec: &VeritySpec,
) -> Result<(SystemPartitionReport, Vec<(String, u64, Option<Vec<u8>>)>)> {
    use std::io::{Seek, SeekFrom};
    let block = berth_schema::verity::BLOCK_SIZE;
    let data_bytes = spec.data_blocks * block;
    let read = |part: &crate::formats::DiskPartition| -> Result<(Vec<u8>, bool, u64)> {
        let mut f = fs::File::open(disk)?;
        f.seek(SeekFrom::Start(part.offset))?;
        let mut data = vec![0u8; usize::try_from(data_bytes)?];
        f.read_exact(&mut data).context("reading the system partition")?;
        let tree = crate::verity::hash_tree(&mut data.as_slice(), spec.salt)?;
        let mut stored = vec![0u8; tree.tree.len()];
        f.read_exact(&mut stored).context("reading the system partition's hash tree")?;
        Ok((data, tree.root == spec.root && stored == tree.tree, tree.tree.len() as u64))
    };
    let mut chosen = None;
    for part in candidates {
        let (data, verified, tree_bytes) = read(part)?;
        if verified || chosen.is_none() {
            chosen = Some((part, data, verified, tree_bytes));
        }
        if verified {
            break;
        }
    }
    let (part, data, verified, tree_bytes) = chosen.context("internal: no system partition to read")?;
    drop(data);
    let (index, pieces) = crate::system_partition::read_pieces(disk, part.offset)
        .with_context(|| format!("reading {}", part.name))?;
    let mut files = Vec::new();
    for (piece, tar_bytes) in &pieces {
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        for entry in archive.entries()? {
            let mut entry = entry?;
            let inner =
                entry.path()?.to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
            let path = match (piece.path.as_str(), inner.as_str()) {
                ("", inner) => inner.to_string(),
                (at, "") => at.to_string(),
                (at, inner) => format!("{at}/{inner}"),
            };
            // Counted as in the initramfs, where a symlink's target is its content.
            let len = match entry.header().entry_type() {
                tar::EntryType::Symlink => entry.link_name_bytes().map_or(0, |l| l.len() as u64),
                _ => entry.header().size()?,
            };
            let data = if path == layout::PLAN {
                let mut d = Vec::new();
                entry.read_to_end(&mut d)?;
                Some(d)
            } else {
                None
            };
            files.push((path, len, data));
        }
    }
    let report = SystemPartitionReport {
        partition: part.name.clone(),
        root_hash: spec.root_hex(),
        data_bytes,
        hash_tree_bytes: tree_bytes,
        verified,
        pieces: index.pieces.len(),
    };
    Ok((report, files))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Report {
    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("image       {} ({}, {})\n", self.image, self.format, mib(self.image_bytes)));
        out.push_str(&format!("kernel      {} ({})\n", self.kernel_version, mib(self.kernel_bytes)));
        out.push_str(&format!("cmdline     {}\n", self.cmdline));
        out.push_str(&format!(
            "initramfs   {} compressed, {} unpacked (init {})\n",
            mib(self.initrd_bytes),
            mib(self.initrd_unpacked_bytes),
            mib(self.init_bytes)
        ));
        let mods: Vec<String> = self.modules.iter().map(|(n, s)| format!("{n} ({} kB)", s / 1024)).collect();
        out.push_str(&format!("modules     {}: {}\n", self.modules.len(), mods.join(", ")));
        if !self.hardware.is_empty() {
            out.push_str(&format!("hardware    {} (drivers loaded by device)\n", self.hardware.join(", ")));
        }
        out.push_str(&format!(
            "containers  {} (layers {} unpacked)\n",
            self.containers.len(),
            mib(self.layers_bytes)
        ));
        for c in &self.containers {
            out.push_str(&format!("  {} ({})  {}  {}\n", c.name, c.kind, c.image, c.digest));
            for (d, s) in &c.layers {
                out.push_str(&format!("    layer {d}  {}\n", mib(*s)));
            }
        }
        if !self.partitions.is_empty() {
            out.push_str("partitions\n");
            for p in &self.partitions {
                out.push_str(&format!("  {:<22} at {:>6} MiB  {}\n", p.name, p.offset >> 20, mib(p.bytes)));
            }
        }
        if self.format == "uki" || !self.partitions.is_empty() {
            let signed =
                if self.signature.is_empty() { "none".to_string() } else { self.signature.join(", ") };
            out.push_str(&format!("signature   {signed}\n"));
        }
        if let Some(b) = &self.boot {
            let signed = if b.boot_manager_signature.is_empty() {
                "not signed".to_string()
            } else {
                format!("signed by {}", b.boot_manager_signature.join(", "))
            };
            out.push_str(&format!(
                "boot        systemd-boot ({signed}); entries {}; boots {}\n",
                b.entries.join(", "),
                b.default
            ));
        }
        if let Some(c) = &self.cloud {
            out.push_str(&format!("cloud       disk {}: {}\n", mib(c.disk_bytes), c.checks));
        }
        if let Some(s) = &self.system_partition {
            out.push_str(&format!(
                "system      {}: {} squashfs pieces {} + hash tree {}, root hash {} ({})\n",
                s.partition,
                s.pieces,
                mib(s.data_bytes),
                mib(s.hash_tree_bytes),
                s.root_hash,
                if s.verified { "verified" } else { "DOES NOT MATCH: the partition was changed" }
            ));
        }
        out
    }
}
