//! `berth inspect`: what a built image holds — kernel release and command line, the modules
//! packed, each container with its image digest and layer sizes, and the sizes of it all — read
//! back from the image itself, whatever its format.
//!
//! The kernel, initramfs and command line are found per format: a build directory has them as
//! files; a UKI in its `.linux`, `.initrd` and `.cmdline` sections; an EFI disk (raw, or qcow2 /
//! vhdx converted to raw by `qemu-img`) in the UKI on its EFI system partition (read with
//! `mtools`); an ISO in its files (read with `xorriso`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use berth_schema::plan::{Plan, LAYERS_DIR, PLAN_PATH};
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
    /// The containers, in boot order.
    pub containers: Vec<ContainerReport>,
    /// Unpacked bytes of all layers (each shared layer once).
    pub layers_bytes: u64,
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

/// The first partition of a GPT disk whose type is the EFI system partition: its byte offset.
fn esp_offset(disk: &Path) -> Result<u64> {
    const ESP_TYPE: [u8; 16] =
        [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b];
    let mut f = fs::File::open(disk)?;
    let mut head = vec![0u8; 512 * 34];
    f.read_exact(&mut head).context("the disk is too small for a GPT")?;
    if &head[512..520] != b"EFI PART" {
        bail!("{}: no GPT partition table", disk.display());
    }
    let entries_lba = usize::try_from(u64::from_le_bytes(head[512 + 72..512 + 80].try_into()?))?;
    let count = u32::from_le_bytes(head[512 + 80..512 + 84].try_into()?) as usize;
    let size = u32::from_le_bytes(head[512 + 84..512 + 88].try_into()?) as usize;
    for i in 0..count.min(128) {
        let e = entries_lba * 512 + i * size;
        let Some(entry) = head.get(e..e + 48) else { break };
        if entry[..16] == ESP_TYPE {
            return Ok(u64::from_le_bytes(entry[32..40].try_into()?) * 512);
        }
    }
    bail!("{}: no EFI system partition", disk.display())
}

/// Reads the kernel, initramfs and command line out of an image.
fn parts(bootable: &Bootable, scratch: &Path) -> Result<(Vec<u8>, Vec<u8>, String)> {
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
            let offset = esp_offset(&raw)?;
            let uki = scratch.join("BOOTX64.EFI");
            run(
                Command::new("mcopy")
                    .arg("-i")
                    .arg(format!("{}@@{offset}", raw.display()))
                    .arg("::/EFI/BOOT/BOOTX64.EFI")
                    .arg(&uki),
                "mcopy (reading the EFI system partition; apt-get install mtools)",
            )?;
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

/// Inspects a build directory or image file.
pub fn inspect(path: &Path) -> Result<Report> {
    let bootable = Bootable::detect(path)?;
    let scratch = tempfile::tempdir()?;
    let (kernel, initrd, cmdline) = parts(&bootable, scratch.path())?;
    let entries =
        crate::cpio::read_archive(decompress(&initrd)?.as_slice()).context("reading the initramfs")?;
    let plan_entry = entries
        .iter()
        .find(|e| e.path == PLAN_PATH.trim_start_matches('/'))
        .ok_or_else(|| anyhow!("the initramfs has no {PLAN_PATH}: not an image made by `berth build`"))?;
    let plan = Plan::from_json(&String::from_utf8_lossy(&plan_entry.data)).map_err(|e| anyhow!(e))?;
    let mut modules = BTreeMap::new();
    let mut layer_sizes: BTreeMap<String, u64> = BTreeMap::new();
    let layers_prefix = format!("{}/", LAYERS_DIR.trim_start_matches('/'));
    let mut unpacked = 0u64;
    let mut init_bytes = 0;
    for e in &entries {
        let len = e.data.len() as u64;
        unpacked += len;
        if e.path == "init" {
            init_bytes = len;
        }
        if e.path.ends_with(".ko") {
            let name = e.path.rsplit('/').next().unwrap_or_default().trim_end_matches(".ko").to_string();
            modules.insert(name, len);
        }
        if let Some(rest) = e.path.strip_prefix(&layers_prefix) {
            let hex = rest.split('/').next().unwrap_or_default();
            *layer_sizes.entry(hex.to_string()).or_default() += len;
        }
    }
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
        Bootable::Disk(_, f) => f,
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
        containers,
        layers_bytes: layer_sizes.values().sum(),
    })
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
        out
    }
}
