//! `berth build`: a config file in, `vmlinuz` + `initrd.img` + `cmdline` out.
//!
//! Steps: parse the config (errors carry file:line:column) → resolve every image (verified
//! blobs; registry tags pinned by `berth.lock`) → plan each container on its image
//! (`berth_schema::resolve`, the code PID 1 uses for containers delivered at boot: the process
//! merged with the image config, Docker's way, its user resolved) → pick the init binary (must
//! be static) → the kernel and the modules the system needs → compile the seccomp filters for
//! that kernel → write the initramfs (newc cpio, zstd or gzip) → publish the outputs.
//!
//! Nothing is written to the output directory until everything succeeded: the outputs are made
//! in a staging directory beside it and renamed into place. The same inputs give byte-identical
//! outputs: entries are written in a fixed order, every mtime is `SOURCE_DATE_EPOCH` (or 0), the
//! compressor carries no time or name (zstd by default; `[kernel] compression = "gzip"` for old kernels).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_runtime::seccomp::KernelVersion;
use berth_schema::config::{Config, ConfigError, ContainerConfig, HardwareSet, KernelSource, NetMode};
use berth_schema::metadata::Provider;
use berth_schema::plan::{
    layer_dir_name, Catalog, Plan, PlannedContainer, PlannedImage, PlannedLayer, UsernsRanges, PLAN_PATH,
    PLAN_VERSION, TOOLS_DIR,
};
use berth_schema::resolve;
use berth_schema::slots::SLOTS;
use berth_schema::system_partition::{EarlyBoot, EARLY_BOOT_PATH, MODULES, TOOLS};
use berth_schema::verity::{VeritySpec, CMDLINE_KEY};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::blobs::BlobCache;
use crate::formats::{self, Format};
use crate::fs_tools;
use crate::init_binary;
use crate::initramfs;
use crate::kernel;
use crate::kernel_check;
use crate::layer::{self, LayerSummary};
use crate::lockfile::LockFile;
use crate::modules;
use crate::reference::ImageRef;
use crate::registry::PullOptions;
use crate::seccomp_filters;
use crate::signing::SigningKey;
use crate::sizing::{self, MemoryNeeds};
use crate::source::{self, LayerBlob, ResolvedImage};
use crate::system_partition::{self, PackedFile};

/// Modules every berth system needs (container roots are overlays).
pub const BASE_MODULES: &[&str] = &["overlay"];
/// Network drivers packed when the machine configures an interface. They load with the late
/// modules, after the first containers start: nothing waits for them but the services that
/// `depends_on = ["network"]`, and loading (signature checks, device probes) costs boot time.
pub const NIC_MODULES: &[&str] = &["virtio_pci", "virtio_net"];
/// Modules for `net = "bridge"` containers: the bridge, veth pairs, and nftables NAT
/// (masquerade, published ports); their dependencies (nf_nat, nf_conntrack …) come along.
pub const BRIDGE_MODULES: &[&str] = &["bridge", "veth", "nf_tables", "nft_chain_nat", "nft_masq", "nft_nat"];
/// Hyper-V's drivers, packed for `vhdx` images (Gen2 VMs): the bus, the NIC, the host's
/// shutdown and time integration, the keyboard (Ctrl-Alt-Del), memory ballooning, and the
/// SCSI disks (storvsc).
pub const HYPERV_MODULES: &[&str] =
    &["hv_vmbus", "hv_storvsc", "hv_netvsc", "hv_utils", "hyperv_keyboard", "hv_balloon"];
/// Drivers for finding a NoCloud config drive (`[system] config_drive`): the IDE CD-ROM, virtio
/// disks, ISO 9660 and FAT (with the code pages FAT mounts need).
pub const CONFIG_DRIVE_MODULES: &[&str] =
    &["ata_piix", "sr_mod", "virtio_pci", "virtio_blk", "isofs", "vfat", "nls_cp437", "nls_ascii"];
/// Disk drivers packed and loaded at boot for the data disk (`[storage]`): virtio block and
/// SCSI (NVMe, ext4 and its checksums are built into Debian's kernel).
pub const STORAGE_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod"];
/// Hyper-V's disk drivers, packed with [`STORAGE_MODULES`] for `vhdx` images: the data disk on
/// Hyper-V is a SCSI disk behind VMBus.
pub const HYPERV_STORAGE_MODULES: &[&str] = &["hv_vmbus", "hv_storvsc"];
/// The virtio RNG driver (entropy from the host, where the hypervisor offers a device). Packed
/// always and loaded with the late modules, in the background as the first containers start:
/// loading it before them would put the PCI transport's probing on the boot path. Nothing in
/// PID 1 waits for entropy; containers get a seeded pool sooner where the device exists.
pub const RNG_MODULES: &[&str] = &["virtio_pci", "virtio_rng"];
/// Modules loaded right after the first container starts, before PID 1 forwards output: the
/// ACPI power button as an input device.
pub const BUTTON_MODULES: &[&str] = &["evdev", "button"];
/// What reaches the verified system partition of the disk formats, in their slim initramfs:
/// device-mapper's verity target, squashfs, the virtio disk drivers (SCSI too). Hyper-V's disk
/// drivers ([`HYPERV_STORAGE_MODULES`]) join them for `vhdx`.
pub const SYSTEM_PARTITION_MODULES: &[&str] =
    &["dm-mod", "dm-verity", "squashfs", "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod"];
/// The disk and NIC drivers of the clouds a format is imported into, when the kernel has
/// modules (Debian's cloud kernel has them all): GCE's gVNIC (`gce`), AWS Nitro's ENA (`vmdk`,
/// imported with `import-snapshot`), and the NVMe disks both give newer machines.
pub fn cloud_modules(format: Format) -> (&'static [&'static str], &'static [&'static str]) {
    match format {
        Format::Gce => (CLOUD_DISK_MODULES, GCE_NIC_MODULES),
        Format::Vmdk => (CLOUD_DISK_MODULES, AWS_NIC_MODULES),
        _ => (&[], &[]),
    }
}
/// The clouds' NVMe disks (GCE, AWS Nitro).
pub const CLOUD_DISK_MODULES: &[&str] = &["nvme"];
/// GCE's gVNIC.
pub const GCE_NIC_MODULES: &[&str] = &["gve"];
/// AWS's Elastic Network Adapter.
pub const AWS_NIC_MODULES: &[&str] = &["ena"];
/// What updates in place need (`[update]`): FAT, to mount the EFI system partition where the
/// slots' boot entries are (with the code pages FAT mounts need). In the slim initramfs.
pub const UPDATE_MODULES: &[&str] = &["vfat", "nls_cp437", "nls_ascii"];
/// The fw_cfg driver (boot-time configuration from QEMU), loaded only on QEMU.
pub const QEMU_MODULES: &[&str] = &["qemu_fw_cfg"];
/// Watchdog drivers for `[system] watchdog`, tried in this order by PID 1: the core, the hardware ones
/// Debian's cloud kernel has (an ACPI WDAT table's: VMware, some servers), then — only when no
/// hardware watchdog appeared — the kernel's software watchdog. (QEMU's i6300ESB driver is
/// not in Debian's cloud kernel; the project kernel builds it in.)
pub const WATCHDOG_MODULES: &[&str] = &["watchdog", "wdat_wdt", "softdog"];
/// VMware's drivers (`[kernel] hardware = ["vmware"]`): the vmxnet3 NIC, the PVSCSI disk
/// controller, the balloon and VMCI (the host's channel), loaded for the devices present.
pub const VMWARE_MODULES: &[&str] = &["vmxnet3", "vmw_pvscsi", "vmw_balloon", "vmw_vmci"];
/// Physical machines' drivers besides their disks' (`[kernel] hardware = ["metal"]`, with
/// [`METAL_DISK_MODULES`]), loaded by modalias for the devices a machine has: the common wired
/// NICs (Intel, Realtek, Broadcom, Mellanox) and USB keyboards. Most chips need no firmware
/// file (some r8169 and tg3 chips load one from Debian's non-free firmware, which is not
/// packed; bnx2, which always needs one, is left out).
pub const METAL_MODULES: &[&str] = &[
    "e1000e",
    "e1000",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "r8169",
    "8139cp",
    "8139too",
    "tg3",
    "bnxt_en",
    "mlx4_en",
    "mlx5_core",
    "usbhid",
    "hid_generic",
];
/// The disk drivers of the `metal` set: SATA, NVMe, SAS and RAID controllers, the SCSI disk,
/// USB host controllers and USB storage. A disk format's slim initramfs carries them too,
/// loaded by modalias while it looks for the system partition's disk.
pub const METAL_DISK_MODULES: &[&str] = &[
    "ahci",
    "ata_piix",
    "nvme",
    "mpt3sas",
    "megaraid_sas",
    "sd_mod",
    "usb-storage",
    "uas",
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
];
/// The disk drivers of the `vmware` set (PVSCSI and its disks), for the slim initramfs.
pub const VMWARE_DISK_MODULES: &[&str] = &["vmw_pvscsi", "sd_mod"];
/// zram (its allocator comes along) and its default compressor, lzo-rle, for `[system] zram`:
/// PID 1 has no modprobe helper for the crypto API to load it on demand.
pub const ZRAM_MODULES: &[&str] = &["lzo-rle", "zram"];

/// The modules `berth build` packs for a config, by name (dependencies are added when they
/// are resolved against the kernel's modules tree). A kernel without modules gets none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulePlan {
    /// Loaded at boot before the containers: overlay, the bridge and NAT, the data disk's
    /// drivers, `[kernel] modules`.
    pub early: Vec<String>,
    /// Loaded right after the first container starts: the power button.
    pub button: Vec<String>,
    /// Loaded in the background after the first containers start: the RNG, the NIC, Hyper-V's
    /// drivers.
    pub late: Vec<String>,
    /// Loaded on QEMU only.
    pub qemu: Vec<String>,
    /// Loaded to look for a NoCloud config drive.
    pub config_drive: Vec<String>,
    /// Watchdog drivers, loaded by PID 1's watchdog step.
    pub watchdog: Vec<String>,
    /// Drivers loaded only for the devices present (`[kernel] hardware`), by modalias.
    pub hardware: Vec<String>,
    /// The disk formats' slim initramfs: loaded first, to reach the system partition.
    pub system: Vec<String>,
    /// Also in the slim initramfs: the disk drivers of `[kernel] hardware`, loaded by
    /// modalias while it looks for the system partition's disk.
    pub system_hardware: Vec<String>,
}

impl ModulePlan {
    /// Every module of the plan, names normalized (`_`).
    pub fn names(&self) -> BTreeSet<String> {
        self.early
            .iter()
            .chain(&self.button)
            .chain(&self.late)
            .chain(&self.qemu)
            .chain(&self.config_drive)
            .chain(&self.watchdog)
            .chain(&self.hardware)
            .chain(&self.system)
            .chain(&self.system_hardware)
            .map(|m| modules::module_name(m))
            .collect()
    }
}

/// The modules `berth build` packs for `config` built into `formats`.
pub fn module_plan(config: &Config, formats: &[Format]) -> ModulePlan {
    let names = |list: &[&str]| list.iter().map(|m| m.to_string()).collect::<Vec<_>>();
    let mut early = names(BASE_MODULES);
    if config.containers().any(|c| c.net == NetMode::Bridge) {
        early.extend(names(BRIDGE_MODULES));
    }
    if config.storage.is_some() {
        early.extend(names(STORAGE_MODULES));
        if formats.iter().any(|f| f.on_hyperv()) {
            early.extend(names(HYPERV_STORAGE_MODULES));
        }
        for f in formats {
            early.extend(names(cloud_modules(*f).0));
        }
    }
    if config.system.zram.is_some() {
        early.extend(names(ZRAM_MODULES));
    }
    early.extend(config.kernel.modules.iter().map(|m| m.get_ref().clone()));
    let mut late = names(RNG_MODULES);
    if formats.iter().any(|f| f.on_hyperv()) {
        late.extend(names(HYPERV_MODULES));
    }
    if !config.network.effective_interfaces().is_empty() {
        late.extend(names(NIC_MODULES));
        for f in formats {
            late.extend(names(cloud_modules(*f).1));
        }
    }
    // The NoCloud drive, and OpenStack's config-2 drive when its metadata may be read.
    let drive = config.system.config_drive || config.system.metadata.allows(Provider::Openstack);
    let config_drive = if drive { names(CONFIG_DRIVE_MODULES) } else { Vec::new() };
    let mut system = Vec::new();
    if formats.iter().any(|f| f.has_system_partition()) {
        system = names(SYSTEM_PARTITION_MODULES);
        if formats.iter().any(|f| f.on_hyperv()) {
            system.extend(names(HYPERV_STORAGE_MODULES));
        }
        for f in formats {
            system.extend(names(cloud_modules(*f).0));
        }
        // In the slim initramfs: a slot that cannot mount its partition still reaches the ESP
        // to roll itself back.
        if config.update.is_some() {
            system.extend(names(UPDATE_MODULES));
        }
    }
    let watchdog = if config.system.watchdog.is_some() { names(WATCHDOG_MODULES) } else { Vec::new() };
    let mut hardware = Vec::new();
    let mut system_hardware = Vec::new();
    for set in HardwareSet::expand(&config.kernel.hardware) {
        hardware.extend(names(hardware_modules(set)));
        hardware.extend(names(hardware_disk_modules(set)));
        if !system.is_empty() {
            system_hardware.extend(names(hardware_disk_modules(set)));
        }
    }
    ModulePlan {
        early,
        button: names(BUTTON_MODULES),
        late,
        qemu: names(QEMU_MODULES),
        config_drive,
        watchdog,
        hardware,
        system,
        system_hardware,
    }
}

/// The drivers a `[kernel] hardware` set packs besides its disks' ([`hardware_disk_modules`];
/// virtio's are in every image already).
pub fn hardware_modules(set: HardwareSet) -> &'static [&'static str] {
    match set {
        HardwareSet::Virtio | HardwareSet::All => &[],
        HardwareSet::Vmware => VMWARE_MODULES,
        HardwareSet::Hyperv => HYPERV_MODULES,
        HardwareSet::Metal => METAL_MODULES,
    }
}

/// The disk drivers of a `[kernel] hardware` set, which a disk format's slim initramfs also
/// carries (Hyper-V's are there for `vhdx` already).
pub fn hardware_disk_modules(set: HardwareSet) -> &'static [&'static str] {
    match set {
        HardwareSet::Virtio | HardwareSet::All => &[],
        HardwareSet::Vmware => VMWARE_DISK_MODULES,
        HardwareSet::Hyperv => HYPERV_STORAGE_MODULES,
        HardwareSet::Metal => METAL_DISK_MODULES,
    }
}

/// Every module `berth build` packs for some config (besides those `[kernel] modules` names).
pub fn packable_modules() -> BTreeSet<String> {
    [
        BASE_MODULES,
        BRIDGE_MODULES,
        STORAGE_MODULES,
        HYPERV_STORAGE_MODULES,
        BUTTON_MODULES,
        HYPERV_MODULES,
        NIC_MODULES,
        RNG_MODULES,
        CONFIG_DRIVE_MODULES,
        QEMU_MODULES,
        SYSTEM_PARTITION_MODULES,
        UPDATE_MODULES,
        CLOUD_DISK_MODULES,
        GCE_NIC_MODULES,
        AWS_NIC_MODULES,
        WATCHDOG_MODULES,
        ZRAM_MODULES,
        VMWARE_MODULES,
        METAL_MODULES,
        METAL_DISK_MODULES,
        VMWARE_DISK_MODULES,
    ]
    .concat()
    .into_iter()
    .map(modules::module_name)
    .collect()
}

/// The module files of a [`ModulePlan`], resolved against a kernel's modules tree with their
/// dependencies; each file in one list only.
#[derive(Debug, Default)]
struct ModuleFiles {
    early: Vec<modules::ModuleFile>,
    button: Vec<modules::ModuleFile>,
    late: Vec<modules::ModuleFile>,
    qemu: Vec<modules::ModuleFile>,
    config_drive: Vec<modules::ModuleFile>,
    watchdog: Vec<modules::ModuleFile>,
    hardware: Vec<modules::ModuleFile>,
    /// Complete with its dependencies: it is the slim initramfs's only list.
    system: Vec<modules::ModuleFile>,
    /// Beside `system` in the slim initramfs, loaded by modalias.
    system_hardware: Vec<modules::ModuleFile>,
}

fn resolve_module_files(modules_dir: &Path, plan: &ModulePlan) -> Result<ModuleFiles> {
    // (resolving reads the whole modules tree: not for an empty list)
    let resolve = |names: &[String]| -> Result<Vec<modules::ModuleFile>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        Ok(modules::resolve_modules(modules_dir, names)?)
    };
    let mut wanted = plan.early.clone();
    let mut early = resolve(&wanted)?;
    // A virtio driver asked for at boot (virtio_blk, virtio_scsi …) sees no device without the
    // PCI transport, which otherwise loads late with the NIC drivers.
    if early.iter().any(|m| m.name == "virtio") && !early.iter().any(|m| m.name == "virtio_pci") {
        wanted.push("virtio_pci".to_string());
        early = resolve(&wanted)?;
    }
    // Each later list leaves out the files already in the lists named.
    let resolve_besides = |names: &[String], taken: &[&[modules::ModuleFile]]| -> Result<Vec<_>> {
        let is_taken =
            |m: &modules::ModuleFile| taken.iter().any(|l| l.iter().any(|t| t.rel_path == m.rel_path));
        Ok(resolve(names)?.into_iter().filter(|m| !is_taken(m)).collect())
    };
    let button = resolve_besides(&plan.button, &[&early])?;
    let late = resolve_besides(&plan.late, &[&early, &button])?;
    let qemu = resolve_besides(&plan.qemu, &[&early, &button, &late])?;
    let config_drive = resolve_besides(&plan.config_drive, &[&early, &qemu])?;
    let watchdog = resolve_besides(&plan.watchdog, &[&early])?;
    let hardware =
        resolve_besides(&plan.hardware, &[&early, &button, &late, &qemu, &config_drive, &watchdog])?;
    let system = resolve(&plan.system)?;
    let system_hardware = resolve_besides(&plan.system_hardware, &[&system])?;
    Ok(ModuleFiles { early, button, late, qemu, config_drive, watchdog, hardware, system, system_hardware })
}

/// The alias table beside the packed modules (depmod's name and format).
pub const MODULES_ALIAS: &str = "modules.alias";
/// The dependency table beside the packed modules (depmod's name and format).
pub const MODULES_DEP: &str = "modules.dep";
/// Names of the files `berth build` writes.
pub const VMLINUZ: &str = "vmlinuz";
/// The initramfs.
pub const INITRD: &str = "initrd.img";
/// The kernel command line, one line.
pub const CMDLINE: &str = "cmdline";
/// The system partition's image while the disk formats are made (not published).
const SYSTEM_IMAGE: &str = ".system.img";
/// The disk formats' slim initramfs while their UKI is made (not published).
const DISK_INITRD: &str = ".initrd-disk.img";

/// What the disk formats carry besides the all-in-RAM outputs.
struct DiskSystem {
    /// The system partition: squashfs, then its hash tree.
    partition: PathBuf,
    /// The slim initramfs of their UKI.
    initrd: PathBuf,
    /// What the UKI's command line carries to verify the partition.
    spec: VeritySpec,
    /// The partition's pieces.
    index: berth_schema::system_partition::Index,
    /// The kernel release.
    kernel: String,
    /// The size of each slot's partition.
    slot_bytes: u64,
    /// The guest RAM (MiB) a machine booting from the disk needs.
    memory_mib: u64,
}

/// Refuses to build when `[system] memory` is below what a requested layout needs: the disk
/// formats' need when one is asked for, the all-in-RAM need when kernel+initrd, uki or iso is
/// (or no format: kernel+initrd is what is built then).
fn check_memory(config: &Config, formats: &[Format], needs: &MemoryNeeds, src: &Source<'_>) -> Result<()> {
    let Some(given) = config.system.memory else { return Ok(()) };
    let given_mib = given >> 20;
    let in_ram = formats.is_empty() || formats.iter().any(|f| !f.has_system_partition());
    let mut short = Vec::new();
    if in_ram && given_mib < needs.kernel_initrd_mib {
        short.push(format!(
            "{} MiB as kernel+initrd (the initramfs is unpacked into RAM)",
            needs.kernel_initrd_mib
        ));
    }
    if let Some(disk) = needs.disk_mib.filter(|d| given_mib < *d) {
        short.push(format!("{disk} MiB from the disk"));
    }
    if short.is_empty() {
        return Ok(());
    }
    bail!(
        "{}: [system] memory = {given_mib} MiB is less than this image needs: {}; raise [system] memory, \
         or build a disk format (raw-efi, qcow2, vhdx), which keeps the layers on the disk",
        src.file,
        short.join(", ")
    )
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The config file.
    pub config: PathBuf,
    /// The output directory.
    pub output: PathBuf,
    /// The PID 1 binary (`None`: found next to `berth`, see [`init_binary::find`]).
    pub init: Option<PathBuf>,
    /// Blob and kernel cache.
    pub cache_dir: PathBuf,
    /// Bootable formats to write besides `vmlinuz`, `initrd.img` and `cmdline`.
    pub formats: Vec<Format>,
    /// Size of a blank data partition on the EFI disks (raw-efi, qcow2, vhdx).
    pub data_size: Option<u64>,
    /// Registries (`HOST[:PORT]`) reached over plain HTTP, besides `$BERTH_INSECURE_REGISTRIES`.
    pub insecure_registries: Vec<String>,
    /// Resolve registry tags again instead of using the digests of `berth.lock`, and rewrite it.
    pub update: bool,
    /// Sign the UKIs (alone and on the disks) for Secure Boot with this key.
    pub signing: Option<SigningKey>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The kernel's release.
    pub kernel_version: String,
    /// Size of `initrd.img` in bytes.
    pub initrd_bytes: u64,
    /// The boot plan written into the initramfs.
    pub plan: Plan,
    /// The guest RAM the layouts built need.
    pub memory: MemoryNeeds,
    /// What `[kernel] hardware` adds: its sets, and the driver files packed for them (beside
    /// what the config needs anyway) and their bytes, uncompressed.
    pub hardware: HardwareReport,
}

/// The drivers `[kernel] hardware` packed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HardwareReport {
    /// The sets, `"all"` expanded.
    pub sets: Vec<HardwareSet>,
    /// The module files packed for them only.
    pub modules: usize,
    /// Their bytes, uncompressed.
    pub bytes: u64,
}

impl HardwareReport {
    /// One line for people: `vmware, metal: 61 driver modules, 9.3 MiB uncompressed`.
    pub fn summary(&self) -> Option<String> {
        if self.modules == 0 {
            return None;
        }
        let sets: Vec<&str> = self.sets.iter().map(|s| s.name()).collect();
        Some(format!(
            "{}: {} driver module{}, {:.1} MiB uncompressed",
            sets.join(", "),
            self.modules,
            if self.modules == 1 { "" } else { "s" },
            self.bytes as f64 / f64::from(1 << 20)
        ))
    }
}

/// Progress on a terminal, silence elsewhere.
struct Progress(ProgressBar);

impl Progress {
    fn new() -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress(bar)
    }

    fn step(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if !self.0.is_hidden() {
            self.0.println(format!("  {msg}"));
        }
        self.0.set_message(msg);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The config file's text and name, for locating errors.
struct Source<'a> {
    file: String,
    text: &'a str,
}

impl Source<'_> {
    fn error_at(&self, offset: usize, message: String) -> anyhow::Error {
        anyhow!(ConfigError::at(&self.file, self.text, offset, message))
    }
}

/// Plans each container of `list` on its image (in `packed`), with the config it comes from;
/// `userns = "auto"` ranges come from `ids`.
fn plan_list<'c>(
    list: &'c [ContainerConfig],
    packed: &BTreeMap<String, PlannedImage>,
    ids: &mut UsernsRanges,
    src: &Source<'_>,
) -> Result<Vec<(&'c ContainerConfig, PlannedContainer)>> {
    list.iter()
        .map(|c| {
            let image = packed
                .get(c.image.get_ref())
                .ok_or_else(|| anyhow!("internal: image {} was not resolved", c.image.get_ref()))?;
            let planned = resolve::plan_container(c, image, ids).map_err(|(at, e)| src.error_at(at, e))?;
            Ok((c, planned))
        })
        .collect()
}

/// The `SOURCE_DATE_EPOCH` convention: every timestamp in the outputs.
pub fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Builds the image. On error nothing is left in the output directory.
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let progress = Progress::new();
    let file = opts.config.display().to_string();
    let text = fs::read_to_string(&opts.config).with_context(|| format!("{file}: cannot read the config"))?;
    let config = Config::parse(&text, &file)?;
    let src = Source { file, text: &text };
    if let Some(key) = &opts.signing {
        if !opts.formats.iter().any(|f| *f == Format::Uki || f.has_system_partition()) {
            bail!("--sign-key signs the UKI that UEFI firmware starts: add --format uki, raw-efi, qcow2 or vhdx");
        }
        key.check()?;
    }
    let base_dir = opts.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };

    // Images, each resolved once; registry tags through the lock file.
    let cache = BlobCache::new(opts.cache_dir.clone());
    let pull = PullOptions::with_env(&opts.insecure_registries);
    let lock_path = LockFile::path_in(&base_dir);
    let old_lock = LockFile::read(&lock_path)?;
    let mut new_lock = old_lock.clone();
    let mut images: BTreeMap<String, ResolvedImage> = BTreeMap::new();
    for c in config.containers() {
        let reference = c.image.get_ref().clone();
        if images.contains_key(&reference) {
            continue;
        }
        progress.step(format!("resolving image {reference}"));
        let at = c.image.span().start;
        let image_ref = ImageRef::parse(&reference, &base_dir)
            .map_err(|e| src.error_at(at, format!("container `{}`: image: {e}", c.name.get_ref())))?;
        let registry_ref = match &image_ref {
            ImageRef::Registry { parsed, .. } => Some(parsed),
            _ => None,
        };
        let lock_key = registry_ref.map(|r| r.to_string());
        let pinned = match (&registry_ref, &lock_key) {
            (Some(r), Some(key)) if r.digest.is_none() && !opts.update => old_lock.images.get(key),
            _ => None,
        };
        let resolved = source::resolve_with(&image_ref, &cache, &pull, pinned.map(String::as_str))
            .map_err(|e| src.error_at(at, format!("container `{}`: image: {e}", c.name.get_ref())))?;
        if let Some(key) = lock_key {
            new_lock.images.insert(key, resolved.manifest_digest.clone());
        }
        images.insert(reference, resolved);
    }

    // Layer summaries (opaque dirs, hard links, account files), once per layer.
    let mut summaries: BTreeMap<String, LayerSummary> = BTreeMap::new();
    // (the layer rules are enforced here, before anything is written: a refused layer names
    // its image, its digest and the entry)
    for (reference, image) in &images {
        for l in &image.layers {
            if !summaries.contains_key(&l.digest) {
                progress.step(format!("reading layer {}", short(&l.digest)));
                let s = layer::scan_layer(l).with_context(|| format!("image {reference}"))?;
                summaries.insert(l.digest.clone(), s);
            }
        }
    }

    // Every image as PID 1 sees it: what planning a container on it takes (shared code).
    let packed: BTreeMap<String, PlannedImage> = images
        .iter()
        .map(|(reference, image)| (reference.clone(), planned_image(image, &summaries)))
        .collect();
    // Each container planned beside the config it comes from, in declaration order; `userns =
    // "auto"` ranges are given by container. (Seccomp filters are filled in once the kernel is
    // known.)
    let mut ids = UsernsRanges::default();
    let mut onboot = plan_list(&config.onboot, &packed, &mut ids, &src)?;
    let mut service = plan_list(&config.service, &packed, &mut ids, &src)?;
    let mut onshutdown = plan_list(&config.onshutdown, &packed, &mut ids, &src)?;
    let mut console = plan_list(config.console.as_slice(), &packed, &mut ids, &src)?;

    let init = init_binary::find(opts.init.as_deref())?;
    let updater = match &config.update {
        Some(_) if opts.formats.iter().any(|f| f.has_system_partition()) => {
            Some(init_binary::find_updater(&init)?)
        }
        _ => None,
    };

    progress.step("kernel");
    let kernel = boot_kernel(&config, &src, &base_dir, &opts.cache_dir, &progress)?;
    let mut module_plan = module_plan(&config, &opts.formats);
    if kernel.modules_dir.is_some() {
        // (a configuration that cannot be read adds nothing: the check that follows says why)
        if let Ok(loaded) = kernel_check::load(&kernel.config) {
            add_needed_modules(&loaded, &config, &opts.formats, &mut module_plan);
        }
    }
    check_kernel(&kernel, &config, &src, &opts.formats, &module_plan)?;
    let module_files = match &kernel.modules_dir {
        Some(dir) => resolve_module_files(dir, &module_plan)?,
        None => ModuleFiles::default(),
    };
    let ModuleFiles {
        early: module_files,
        button: button_files,
        late: late_files,
        qemu: qemu_files,
        config_drive: drive_files,
        watchdog: watchdog_files,
        hardware: hardware_files,
        system: system_module_files,
        system_hardware: system_hardware_files,
    } = module_files;
    let mut hardware_bytes = 0;
    for m in &hardware_files {
        hardware_bytes +=
            fs::metadata(&m.path).with_context(|| format!("reading {}", m.path.display()))?.len();
    }
    let hardware = HardwareReport {
        sets: HardwareSet::expand(&config.kernel.hardware),
        modules: hardware_files.len(),
        bytes: hardware_bytes,
    };
    let bridge = config.containers().any(|c| c.net == NetMode::Bridge);
    let module_dest = |rel: &str| format!("lib/modules/{}/{}", kernel.release, rel);

    // Seccomp filters are compiled here, for the kernel that will boot (Docker's profile has
    // rules that depend on the kernel version), so PID 1 only installs them.
    let target_kernel = KernelVersion::parse(&kernel.release)
        .ok_or_else(|| anyhow!("cannot read a version from kernel release {}", kernel.release))?;
    let wanted = onboot.iter().chain(&service).chain(&onshutdown).chain(&console);
    let mut seccomp_filters = seccomp_filters::compile(
        wanted.filter(|(c, _)| resolve::wants_seccomp(c)).map(|(_, planned)| planned.capabilities),
        target_kernel,
    )?;
    for (c, planned) in
        onboot.iter_mut().chain(service.iter_mut()).chain(onshutdown.iter_mut()).chain(console.iter_mut())
    {
        planned.seccomp =
            resolve::seccomp_filter(c, planned.capabilities, &seccomp_filters).map_err(|e| {
                src.error_at(c.name.span().start, format!("container `{}`: seccomp: {e}", planned.name))
            })?;
    }
    let [onboot, service, onshutdown, mut console] = [onboot, service, onshutdown, console]
        .map(|list| list.into_iter().map(|(_, p)| p).collect::<Vec<_>>());
    seccomp_filters::drop_carried(
        &mut seccomp_filters,
        onboot.iter().chain(&service).chain(&onshutdown).chain(&console),
    );

    // mke2fs and e2fsck for the data disk, with their libraries.
    let mut tools = match &config.storage {
        Some(_) => Some(fs_tools::collect()?),
        None => None,
    };
    // The cloud metadata helper, run by PID 1 from the same directory.
    if config.system.metadata.is_on() {
        let helper = init_binary::find_metadata_helper(&init)?;
        tools
            .get_or_insert_with(Default::default)
            .files
            .insert(berth_schema::metadata::HELPER.to_string(), helper);
    }
    // The time helper, likewise.
    if !config.system.ntp.is_empty() {
        let helper = init_binary::find_time_helper(&init)?;
        tools
            .get_or_insert_with(Default::default)
            .files
            .insert(berth_schema::time_sync::HELPER.to_string(), helper);
    }
    let plan = Plan {
        version: PLAN_VERSION,
        system: config.system.clone(),
        log: config.log.clone(),
        network: config.network.clone(),
        modules: module_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        button_modules: button_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        late_modules: late_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        qemu_modules: qemu_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        config_drive_modules: drive_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        watchdog_modules: watchdog_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        hardware: hardware.sets.clone(),
        storage: config.storage.clone(),
        update: config.update.clone(),
        tool_loader: tools.as_ref().and_then(|t| t.loader.as_ref()).map(|l| format!("{TOOLS_DIR}/lib/{l}")),
        onboot,
        service,
        onshutdown,
        console: console.pop(),
        catalog: Catalog { images: packed, seccomp: seccomp_filters, bridge },
    };

    // Stage the outputs beside the output directory, then publish.
    let parent = opts.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".berth-build-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;

    progress.step("writing the initramfs");
    let plan_text = plan.to_json().context("serializing the boot plan")?;
    fn in_initramfs<'m>(
        files: &[&'m modules::ModuleFile],
        dest: impl Fn(&str) -> String,
    ) -> Vec<(String, &'m Path)> {
        files.iter().map(|m| (dest(&m.rel_path), m.path.as_path())).collect()
    }
    // Every packed module file once (the config drive's list may repeat a late module's).
    let mut seen = BTreeSet::new();
    let all_modules: Vec<&modules::ModuleFile> = module_files
        .iter()
        .chain(&button_files)
        .chain(&late_files)
        .chain(&qemu_files)
        .chain(&drive_files)
        .chain(&watchdog_files)
        .chain(&hardware_files)
        .filter(|m| seen.insert(m.rel_path.as_str()))
        .collect();
    // depmod's modules.alias for the packed modules (Debian's packages ship none): which
    // module a device's modalias needs.
    // With modules.dep, the files each one needs.
    let (aliases, deps) = (staging.path().join(".modules.alias"), staging.path().join(".modules.dep"));
    let mut initramfs_modules = in_initramfs(&all_modules, module_dest);
    if !all_modules.is_empty() {
        let table = modules::alias_table(all_modules.iter().copied())?;
        fs::write(&aliases, table.to_string()).with_context(|| format!("writing {}", aliases.display()))?;
        let table = modules::dep_table(all_modules.iter().copied())?;
        fs::write(&deps, table.to_string()).with_context(|| format!("writing {}", deps.display()))?;
        initramfs_modules.push((module_dest(MODULES_ALIAS), aliases.as_path()));
        initramfs_modules.push((module_dest(MODULES_DEP), deps.as_path()));
    }
    let mut layers = Vec::new();
    for c in plan.containers() {
        for l in &c.layers {
            layers.push((find_blob(&images, &l.digest)?, &summaries[&l.digest]));
        }
    }
    let packing = |digest: &str| progress.step(format!("packing layer {}", short(digest)));
    let unpacked = initramfs::write(
        &staging.path().join(INITRD),
        config.kernel.compression,
        source_date_epoch(),
        &initramfs::Content {
            init: &init,
            modules: initramfs_modules,
            tools: tools.as_ref(),
            layers: layers.clone(),
            document: (PLAN_PATH, plan_text.as_bytes()),
        },
        &packing,
    )?;
    fs::copy(&kernel.vmlinuz, staging.path().join(VMLINUZ))
        .with_context(|| format!("copying {}", kernel.vmlinuz.display()))?;
    fs::write(staging.path().join(CMDLINE), format!("{}\n", config.kernel.cmdline.trim()))?;

    // The disk formats: the verified system partition and the slim initramfs that reaches it.
    let disk = if opts.formats.iter().any(|f| f.has_system_partition()) {
        progress.step("writing the system partition");
        let mut files: Vec<PackedFile> = all_modules
            .iter()
            .map(|m| PackedFile {
                dest: format!("{MODULES}/{}/{}", kernel.release, m.rel_path),
                source: m.path.clone(),
                mode: 0o644,
            })
            .collect();
        if !all_modules.is_empty() {
            for (name, source) in [(MODULES_ALIAS, &aliases), (MODULES_DEP, &deps)] {
                files.push(PackedFile {
                    dest: format!("{MODULES}/{}/{name}", kernel.release),
                    source: source.clone(),
                    mode: 0o644,
                });
            }
        }
        for (dest, source) in tools.iter().flat_map(|t| &t.files) {
            files.push(PackedFile {
                dest: format!("{TOOLS}/{dest}"),
                source: source.clone(),
                mode: initramfs::tool_mode(dest),
            });
        }
        if let Some(updater) = &updater {
            files.push(PackedFile {
                dest: format!("{TOOLS}/{}", berth_schema::system_partition::UPDATER),
                source: updater.clone(),
                mode: 0o755,
            });
            // Signed with a key: the machine installs only updates signed with it.
            if let Some(key) = &opts.signing {
                let pem = staging.path().join(".update-key.pem");
                fs::write(&pem, key.public_key_pem()?)?;
                files.push(PackedFile {
                    dest: format!("{TOOLS}/{}", berth_schema::update::TRUSTED_KEY),
                    source: pem,
                    mode: 0o644,
                });
            }
        }
        let partition = staging.path().join(SYSTEM_IMAGE);
        let content =
            system_partition::Content { plan_json: plan_text.as_bytes(), files: &files, layers: &layers };
        let system_partition::Verified { spec, index } =
            system_partition::write_verified(&partition, &content, u64::from(source_date_epoch()))?;
        let early = EarlyBoot {
            modules: system_module_files.iter().map(|m| format!("/{}", module_dest(&m.rel_path))).collect(),
        };
        let early_text = early.to_json();
        let slim = staging.path().join(DISK_INITRD);
        let system_refs: Vec<&modules::ModuleFile> =
            system_module_files.iter().chain(&system_hardware_files).collect();
        let mut slim_modules = in_initramfs(&system_refs, module_dest);
        // The hardware sets' disk drivers load by modalias: their own tables.
        let (slim_aliases, slim_deps) =
            (staging.path().join(".slim-modules.alias"), staging.path().join(".slim-modules.dep"));
        if !system_hardware_files.is_empty() {
            let table = modules::alias_table(system_refs.iter().copied())?;
            fs::write(&slim_aliases, table.to_string())?;
            let table = modules::dep_table(system_refs.iter().copied())?;
            fs::write(&slim_deps, table.to_string())?;
            slim_modules.push((module_dest(MODULES_ALIAS), slim_aliases.as_path()));
            slim_modules.push((module_dest(MODULES_DEP), slim_deps.as_path()));
        }
        let slim_unpacked = initramfs::write(
            &slim,
            config.kernel.compression,
            source_date_epoch(),
            &initramfs::Content {
                init: &init,
                modules: slim_modules,
                tools: None,
                layers: Vec::new(),
                document: (EARLY_BOOT_PATH, early_text.as_bytes()),
            },
            &packing,
        )?;
        let uki_bytes = fs::metadata(&kernel.vmlinuz)?.len() + fs::metadata(&slim)?.len();
        let memory_mib = sizing::uefi_mib(slim_unpacked, uki_bytes);
        let slot_bytes = formats::slot_bytes(fs::metadata(&partition)?.len(), config.system.slot_size)
            .map_err(|e| anyhow!("{}: {e}", src.file))?;
        Some(DiskSystem {
            partition,
            initrd: slim,
            spec,
            index,
            kernel: kernel.release.clone(),
            memory_mib,
            slot_bytes,
        })
    } else {
        None
    };
    let memory = MemoryNeeds {
        kernel_initrd_mib: sizing::in_ram_mib(unpacked),
        disk_mib: disk.as_ref().map(|d| d.memory_mib),
    };
    check_memory(&config, &opts.formats, &memory, &src)?;
    write_formats(staging.path(), opts, &config, disk.as_ref(), &progress)?;
    if let Some(disk) = &disk {
        fs::remove_file(&disk.initrd)?;
        fs::remove_file(&disk.partition)?;
        let _ = fs::remove_file(staging.path().join(".update-key.pem"));
    }

    publish(staging, &opts.output)?;
    // The lock file (shared by the configs of this directory) records what this build used.
    if new_lock != old_lock {
        new_lock.write(&lock_path)?;
    }
    let initrd_bytes = fs::metadata(opts.output.join(INITRD))?.len();
    Ok(BuildReport { kernel_version: kernel.release, initrd_bytes, plan, memory, hardware })
}

/// The kernel `config` boots: `[kernel] path` (relative to the config file's directory), else
/// the Debian cloud kernel from the cache (fetched on first use).
fn boot_kernel(
    config: &Config,
    src: &Source<'_>,
    base_dir: &Path,
    cache_dir: &Path,
    progress: &Progress,
) -> Result<kernel::BootKernel> {
    let Some(path) = &config.kernel.path else {
        let flavor = config.kernel.source.as_ref().map(|s| *s.get_ref()).unwrap_or_default().into();
        let debian = kernel::debian_kernel(flavor, cache_dir, &|m| progress.step(m.to_string()))?;
        return Ok(debian.boot_kernel());
    };
    let kernel_config = match &config.kernel.config {
        Some(c) => {
            let file = base_dir.join(c.get_ref());
            if !file.is_file() {
                return Err(src.error_at(
                    c.span().start,
                    format!("[kernel] config: {} is not a file (the kernel's .config)", file.display()),
                ));
            }
            Some(file)
        }
        None => None,
    };
    kernel::path_kernel(&base_dir.join(path.get_ref()), kernel_config.as_deref())
        .map_err(|e| src.error_at(path.span().start, format!("[kernel] path: {e:#}")))
}

/// Adds to `plan` the modules a kernel (with modules) builds for what `config` needs and the
/// plan does not name yet (Debian's generic kernel has ext4 and crc32c as modules), each to the
/// list that loads it when its need arises.
pub fn add_needed_modules(
    loaded: &kernel_check::LoadedConfig,
    config: &Config,
    formats: &[Format],
    plan: &mut ModulePlan,
) {
    let needs = kernel_check::needs_for(config, formats);
    // (malformed annotations are reported by the check itself)
    let Ok(wanted) = kernel_check::modules_for_needs(loaded, &needs) else { return };
    let on_disk = formats.iter().any(|f| f.has_system_partition());
    for (need, module) in wanted {
        if plan.names().contains(module) {
            continue;
        }
        let list = match need {
            kernel_check::Need::Network => &mut plan.late,
            kernel_check::Need::ConfigDrive => &mut plan.config_drive,
            kernel_check::Need::Watchdog => &mut plan.watchdog,
            kernel_check::Need::Hyperv | kernel_check::Need::Vmware | kernel_check::Need::Metal => {
                &mut plan.hardware
            }
            kernel_check::Need::SystemPartition | kernel_check::Need::Efi if on_disk => &mut plan.system,
            _ => &mut plan.early,
        };
        list.push(module.to_string());
    }
}

/// Checks the kernel against what `config` needs (`berth kernel check --for`): an error lists
/// every option it lacks, with its need and what breaks.
fn check_kernel(
    kernel: &kernel::BootKernel,
    config: &Config,
    src: &Source<'_>,
    formats: &[Format],
    plan: &ModulePlan,
) -> Result<()> {
    let loaded = kernel_check::load(&kernel.config).map_err(|e| {
        let fix =
            "give [kernel] config = \"PATH\" (the kernel's .config) or build the kernel with CONFIG_IKCONFIG";
        match (&config.kernel.config, &config.kernel.path) {
            (Some(c), _) => src.error_at(
                c.span().start,
                format!("[kernel] config: cannot check the kernel: {}: {e}", kernel.config.display()),
            ),
            (None, Some(p)) => src.error_at(
                p.span().start,
                format!("[kernel] path: cannot check {}: {e}; {fix}", kernel.vmlinuz.display()),
            ),
            (None, None) => anyhow!("cannot check {}: {}: {e}", kernel.description, kernel.config.display()),
        }
    })?;
    let needs = kernel_check::needs_for(config, formats);
    let modules = match &kernel.modules_dir {
        Some(_) => kernel_check::Modules::Packed(plan.names()),
        None => kernel_check::Modules::None,
    };
    let report = kernel_check::check(&loaded, &kernel_check::Scope::Needs(needs), &modules)?;
    if report.ok {
        return Ok(());
    }
    let format_args: String = formats.iter().map(|f| format!(" --format {}", f.name())).collect();
    let cloud = config.kernel.path.is_none()
        && config.kernel.source.as_ref().is_none_or(|s| *s.get_ref() == KernelSource::Debian);
    let metal_missing = report.failures().iter().any(|(need, _)| *need == kernel_check::Need::Metal);
    let hint = if cloud && metal_missing {
        "\n[kernel] hardware = [\"metal\"] needs physical machines' drivers, which Debian's cloud kernel \
         does not have: set [kernel] source = \"debian-generic\"."
    } else {
        ""
    };
    bail!(
        "{}: {} (release {}, configuration {}) lacks what this config needs:{}\n\
         Use a kernel with these options{}; `berth kernel check {} --for {}{format_args}` shows the whole report.{hint}",
        src.file,
        kernel.description,
        kernel.release,
        if kernel.config == kernel.vmlinuz { "embedded".to_string() } else { kernel.config.display().to_string() },
        report.refusal(),
        if kernel.modules_dir.is_some() { "" } else { " built in (kernel-config/build makes one)" },
        kernel.config.display(),
        src.file,
    )
}

/// An image as the plan's catalog keeps it: digest, layers, process defaults and accounts.
fn planned_image(image: &ResolvedImage, summaries: &BTreeMap<String, LayerSummary>) -> PlannedImage {
    let layer_summaries: Vec<LayerSummary> =
        image.layers.iter().map(|l| summaries[&l.digest].clone()).collect();
    PlannedImage {
        digest: image.manifest_digest.clone(),
        layers: image
            .layers
            .iter()
            .map(|l| PlannedLayer {
                digest: l.digest.clone(),
                opaque_dirs: summaries[&l.digest].opaque_dirs.clone(),
            })
            .collect(),
        config: image.config.clone(),
        accounts: layer::image_accounts(&layer_summaries),
    }
}

fn short(digest: &str) -> &str {
    let hex = layer_dir_name(digest);
    &hex[..hex.len().min(12)]
}

fn find_blob<'a>(images: &'a BTreeMap<String, ResolvedImage>, digest: &str) -> Result<&'a LayerBlob> {
    images
        .values()
        .flat_map(|i| i.layers.iter())
        .find(|l| l.digest == digest)
        .ok_or_else(|| anyhow!("internal: layer {digest} vanished"))
}

/// The kernel command line of the disk formats' UKI: the config's, where the verified system
/// partition may be (either slot's: PID 1 mounts the one whose blocks match) and its root hash
/// (`berth.system=`, `berth.verity=`), so that signing the UKI covers every block of the
/// partition, and one UKI boots from either slot; and `panic=10` unless the config sets it.
pub fn disk_cmdline(cmdline: &str, spec: &VeritySpec) -> String {
    let slots: Vec<String> = SLOTS.iter().map(|s| format!("partlabel:{}", s.partition_name())).collect();
    let mut line = format!("{} berth.system={} {CMDLINE_KEY}={spec}", cmdline.trim(), slots.join(","));
    // A kernel panic reboots, so that systemd-boot counts the try and falls back to the
    // committed slot (Debian's kernel would wait forever).
    if !cmdline.split_whitespace().any(|w| w.starts_with("panic=")) {
        line.push_str(" panic=10");
    }
    line
}

/// Writes the requested bootable formats next to the kernel and initramfs in `dir`; the disk
/// formats from `disk` (present when one is wanted).
fn write_formats(
    dir: &Path,
    opts: &BuildOptions,
    config: &Config,
    disk: Option<&DiskSystem>,
    progress: &Progress,
) -> Result<()> {
    let wanted = &opts.formats;
    let epoch = formats::image_epoch();
    let (vmlinuz, initrd) = (dir.join(VMLINUZ), dir.join(INITRD));
    let cmdline = config.kernel.cmdline.trim();
    if wanted.contains(&Format::Iso) {
        progress.step("making the ISO");
        formats::write_iso(&vmlinuz, &initrd, cmdline, epoch, &dir.join(formats::ISO))?;
    }
    let os_release = format!(
        "ID=berth\nNAME=berth\nVERSION_ID={}\nPRETTY_NAME=\"berth {} ({})\"\n",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION"),
        config.system.hostname
    );
    let sign = |efi: &Path| -> Result<()> {
        match &opts.signing {
            Some(key) => {
                progress.step(format!("signing {}", efi.display()));
                key.sign(efi, epoch)
            }
            None => Ok(()),
        }
    };
    if wanted.contains(&Format::Uki) {
        progress.step("making the UKI");
        let uki = dir.join(formats::UKI);
        formats::write_uki(&vmlinuz, &initrd, cmdline, &os_release, epoch, &uki)?;
        sign(&uki)?;
    }
    let Some(disk) = disk else {
        return Ok(());
    };
    progress.step("making the EFI disk");
    let disk_uki = dir.join(".disk.efi");
    formats::write_uki(
        &vmlinuz,
        &disk.initrd,
        &disk_cmdline(cmdline, &disk.spec),
        &os_release,
        epoch,
        &disk_uki,
    )?;
    let raw = dir.join(formats::RAW);
    sign(&disk_uki)?;
    let boot_manager = dir.join(".systemd-boot.efi");
    fs::copy(formats::packaged_file(formats::SYSTEMD_BOOT, "systemd-boot-efi")?, &boot_manager)?;
    sign(&boot_manager)?;
    let layout = formats::DiskLayout {
        boot_manager: &boot_manager,
        uki: &disk_uki,
        system: &disk.partition,
        slot_bytes: disk.slot_bytes,
        data_bytes: opts.data_size,
        // GCE imports whole GiB; Azure whole MiB (every layout is).
        align: if wanted.contains(&Format::Gce) { 1 << 30 } else { 1 << 20 },
    };
    formats::write_raw_efi(&layout, epoch, &raw)?;
    let seed = formats::disk_seed(&disk_uki, &raw)?;
    if wanted.contains(&Format::Update) {
        progress.step("writing the update bundle");
        let slot = crate::update_bundle::Slot {
            uki: &disk_uki,
            partition: &disk.partition,
            index: &disk.index,
            spec: &disk.spec,
            kernel: &disk.kernel,
            created: epoch,
            signing: opts.signing.as_ref(),
        };
        crate::update_bundle::write(&dir.join(crate::update_bundle::DIR), &slot)?;
    }
    fs::remove_file(&disk_uki)?;
    fs::remove_file(&boot_manager)?;
    for f in [Format::Qcow2, Format::Vhdx] {
        if wanted.contains(&f) {
            progress.step(format!("converting the disk to {}", f.name()));
            let name = f.file_name().context("internal: disk formats have a file")?;
            formats::convert(&raw, f, &dir.join(name), &seed)?;
        }
    }
    if wanted.contains(&Format::ContainerDisk) {
        progress.step("writing the containerDisk");
        let qcow2 = dir.join(formats::QCOW2);
        let staged = dir.join(".containerdisk.qcow2");
        if wanted.contains(&Format::Qcow2) {
            fs::copy(&qcow2, &staged)?;
        } else {
            formats::convert(&raw, Format::Qcow2, &staged, &seed)?;
        }
        let layout = dir.join(crate::container_disk::DIR);
        crate::container_disk::write(&layout, &staged, &vmlinuz, &initrd, epoch)?;
        fs::remove_file(&staged)?;
    }
    write_cloud_formats(dir, wanted, &raw, &seed, epoch, progress)?;
    if !wanted.contains(&Format::RawEfi) {
        fs::remove_file(&raw)?;
    }
    Ok(())
}

/// The clouds' import formats, from the raw disk (see `cloud_formats`).
fn write_cloud_formats(
    dir: &Path,
    wanted: &[Format],
    raw: &Path,
    seed: &str,
    epoch: u64,
    progress: &Progress,
) -> Result<()> {
    use crate::cloud_formats as cf;
    if wanted.contains(&Format::Vhd) {
        progress.step("writing the fixed VHD");
        cf::write_vhd(raw, seed, epoch, &dir.join(cf::VHD))?;
    }
    if wanted.contains(&Format::Gce) {
        progress.step("writing the GCE archive");
        cf::write_gce(raw, epoch, &dir.join(cf::GCE))?;
    }
    if wanted.contains(&Format::Vmdk) {
        progress.step("converting the disk to a streamOptimized VMDK");
        cf::write_vmdk(raw, seed, &dir.join(cf::VMDK))?;
    }
    Ok(())
}

/// Moves the staged files into `output`: the whole directory when it does not exist yet,
/// otherwise file by file (each rename atomic).
fn publish(staging: tempfile::TempDir, output: &Path) -> Result<()> {
    if !output.exists() {
        let path = staging.keep();
        fs::rename(&path, output).with_context(|| format!("moving the build into {}", output.display()))?;
        return Ok(());
    }
    if !output.is_dir() {
        bail!("{} exists and is not a directory", output.display());
    }
    for entry in fs::read_dir(staging.path())? {
        let name = entry?.file_name();
        fs::rename(staging.path().join(&name), output.join(&name))
            .with_context(|| format!("writing {}", output.join(&name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, formats: &[Format]) -> ModulePlan {
        module_plan(&Config::parse(text, "t.toml").unwrap(), formats)
    }

    #[test]
    fn updates_put_fat_in_the_slim_initramfs_of_the_disks() {
        let update = "[update]\nsource = \"r.example/app:v\"\n";
        let disk = plan(update, &[Format::Qcow2]);
        assert!(disk.system.contains(&"vfat".to_string()) && !disk.early.contains(&"vfat".to_string()));
        assert!(!plan(update, &[Format::Uki]).names().contains("vfat"), "no slots, no ESP to reach");
        assert!(!plan("", &[Format::Qcow2]).system.contains(&"vfat".to_string()));
    }

    #[test]
    fn the_disk_command_line_reboots_on_a_panic_unless_told_otherwise() {
        let spec = VeritySpec { data_blocks: 8, root: [1; 32], salt: [2; 32] };
        let line = disk_cmdline("console=ttyS0", &spec);
        assert!(
            line.starts_with("console=ttyS0 berth.system=partlabel:berth-system-a,partlabel:berth-system-b ")
        );
        assert!(line.ends_with(" panic=10"), "{line}");
        assert!(!disk_cmdline("console=ttyS0 panic=0", &spec).contains("panic=10"));
    }

    #[test]
    fn the_module_plan_follows_the_config() {
        let minimal = plan("[network]\nauto = false\n", &[]);
        assert_eq!(
            minimal.names(),
            BTreeSet::from(
                ["overlay", "evdev", "button", "qemu_fw_cfg", "virtio_pci", "virtio_rng"].map(String::from)
            )
        );
        let everything = plan(
            "[kernel]\nmodules = [\"nls-utf8\"]\nhardware = [\"all\"]\n[system]\nconfig_drive = true\nwatchdog = \"10s\"\nzram = \"50%\"\n[storage]\ndisk = \"/dev/vdb\"\n\
             [[service]]\nname = \"web\"\nimage = \"oci:x\"\nnet = \"bridge\"\n",
            &Format::ALL,
        );
        assert!(everything.early.contains(&"nls-utf8".to_string()));
        assert!(everything.names().contains("nls_utf8"), "names are normalized");
        for m in [
            "bridge",
            "nft_masq",
            "virtio_blk",
            "hv_storvsc",
            "virtio_net",
            "hv_utils",
            "sr_mod",
            "isofs",
            "softdog",
            "zram",
            "vmxnet3",
            "e1000e",
            "usb_storage",
        ] {
            assert!(everything.names().contains(m), "{m} missing from {everything:?}");
        }
        let mut without_extra = everything.names();
        without_extra.remove("nls_utf8");
        assert_eq!(without_extra, packable_modules(), "packable_modules() is every module some config packs");
    }
}
