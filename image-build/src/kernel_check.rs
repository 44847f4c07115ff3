//! `berth kernel check`: does a kernel have what a berth image needs?
//!
//! The requirements are the annotations of the kernel config fragments
//! (`kernel-config/fragments/*.config`, embedded into `berth` when it is built): a comment
//! `# @berth NEED: CONSEQUENCE` directly above an option line `CONFIG_X=y` makes that option a
//! requirement of NEED ([`Need`]), and CONSEQUENCE says what breaks without it. Unannotated
//! options are plumbing and are not reported.
//!
//! A kernel's configuration is read from a `.config`, a gzip'd one (`/proc/config.gz`) or a
//! bzImage built with `CONFIG_IKCONFIG` ([`load`]). Each requirement is then built in, a module
//! (fine when `berth build` packs that module: only the Debian kernel comes with modules), or
//! missing ([`check`]). `berth build` runs the same check on the kernel it packs, with the needs
//! of its config ([`needs_for`]), and refuses a kernel that lacks something they need.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use berth_schema::config::{Config, HardwareSet, InitrdCompression, NetMode};
use serde::Serialize;

use crate::bzimage::{self, BzImageError};
use crate::formats::Format;

/// The fragments, embedded by the crate's build script.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernel_fragments.rs"));
}

/// Every `kernel-config/fragments/*.config` as (file name, text), sorted by name, as embedded
/// when `berth` was built.
pub fn fragments() -> &'static [(&'static str, &'static str)] {
    embedded::FRAGMENTS
}

/// What an option is needed for: which images refuse a kernel without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    /// Every image: the machine boots and PID 1 runs.
    Boot,
    /// Every image: containers start.
    Containers,
    /// `[kernel] compression = "zstd"` (the default): the kernel unpacks a zstd initramfs.
    InitrdZstd,
    /// `[kernel] compression = "gzip"`: the kernel unpacks a gzip initramfs.
    InitrdGzip,
    /// The image configures a network interface (the default: DHCP on the first one).
    Network,
    /// A container has `net = "bridge"`.
    Bridge,
    /// The config has `[storage]`.
    Storage,
    /// `[system] config_drive = true`.
    ConfigDrive,
    /// The `vhdx` format (Hyper-V) is built, or `[kernel] hardware` names `"hyperv"`.
    Hyperv,
    /// `[kernel] hardware` names `"vmware"`.
    Vmware,
    /// `[kernel] hardware` names `"metal"`: physical machines' NICs, disks, USB.
    Metal,
    /// A UEFI format is built (`uki`, `iso`, `raw-efi`, `qcow2`, `vhdx`).
    Efi,
    /// A disk format is built (`raw-efi`, `qcow2`, `vhdx`): the verified system partition.
    SystemPartition,
    /// `[system] watchdog`.
    Watchdog,
    /// `[system] zram`.
    Zram,
    /// Reported, never refused.
    Optional,
}

impl Need {
    /// Every need, in report order.
    pub const ALL: [Need; 16] = [
        Need::Boot,
        Need::Containers,
        Need::InitrdZstd,
        Need::InitrdGzip,
        Need::Network,
        Need::Bridge,
        Need::Storage,
        Need::ConfigDrive,
        Need::Hyperv,
        Need::Vmware,
        Need::Metal,
        Need::Efi,
        Need::SystemPartition,
        Need::Watchdog,
        Need::Zram,
        Need::Optional,
    ];

    /// The need as annotations spell it.
    pub fn name(self) -> &'static str {
        match self {
            Need::Boot => "boot",
            Need::Containers => "containers",
            Need::InitrdZstd => "initrd-zstd",
            Need::InitrdGzip => "initrd-gzip",
            Need::Network => "network",
            Need::Bridge => "bridge",
            Need::Storage => "storage",
            Need::ConfigDrive => "config-drive",
            Need::Hyperv => "hyperv",
            Need::Vmware => "vmware",
            Need::Metal => "metal",
            Need::Efi => "efi",
            Need::SystemPartition => "system-partition",
            Need::Watchdog => "watchdog",
            Need::Zram => "zram",
            Need::Optional => "optional",
        }
    }

    /// Parses an annotation's NEED.
    pub fn parse(text: &str) -> Option<Need> {
        Need::ALL.into_iter().find(|n| n.name() == text)
    }

    /// Which images have this need.
    pub fn when(self) -> &'static str {
        match self {
            Need::Boot => "every image",
            Need::Containers => "every image",
            Need::InitrdZstd => "images with [kernel] compression = \"zstd\" (the default)",
            Need::InitrdGzip => "images with [kernel] compression = \"gzip\"",
            Need::Network => "images that configure a network interface (the default: DHCP)",
            Need::Bridge => "images with a net = \"bridge\" container",
            Need::Storage => "images with [storage]",
            Need::ConfigDrive => "images with [system] config_drive = true",
            Need::Hyperv => "the vhdx format (Hyper-V), [kernel] hardware = [\"hyperv\"]",
            Need::Vmware => "[kernel] hardware = [\"vmware\"]",
            Need::Metal => "[kernel] hardware = [\"metal\"] (physical machines)",
            Need::Efi => "UEFI formats (uki, iso, raw-efi, qcow2, vhdx)",
            Need::SystemPartition => "disk formats (raw-efi, qcow2, vhdx): the verified system partition",
            Need::Watchdog => "images with [system] watchdog",
            Need::Zram => "images with [system] zram",
            Need::Optional => "features a config may use; never refused",
        }
    }

    /// Whether a kernel lacking an option of this need is refused (every need but `optional`).
    pub fn refuses(self) -> bool {
        self != Need::Optional
    }
}

/// The needs that refuse a kernel: all of them but `optional`.
pub fn every_need() -> BTreeSet<Need> {
    Need::ALL.into_iter().filter(|n| n.refuses()).collect()
}

/// The needs of a berth config built into `formats`: `boot` and `containers` always, the others
/// when the config or a format uses what they are for.
pub fn needs_for(config: &Config, formats: &[Format]) -> BTreeSet<Need> {
    let mut needs = BTreeSet::from([Need::Boot, Need::Containers]);
    needs.insert(match config.kernel.compression {
        InitrdCompression::Zstd => Need::InitrdZstd,
        InitrdCompression::Gzip => Need::InitrdGzip,
    });
    if !config.network.effective_interfaces().is_empty() {
        needs.insert(Need::Network);
    }
    if config.containers().any(|c| c.net == NetMode::Bridge) {
        needs.insert(Need::Bridge);
    }
    if config.storage.is_some() {
        needs.insert(Need::Storage);
    }
    if config.system.config_drive
        || config.system.metadata.allows(berth_schema::metadata::Provider::Openstack)
    {
        needs.insert(Need::ConfigDrive);
    }
    if formats.iter().any(|f| f.on_hyperv()) {
        needs.insert(Need::Hyperv);
    }
    for set in HardwareSet::expand(&config.kernel.hardware) {
        match set {
            HardwareSet::Hyperv => needs.insert(Need::Hyperv),
            HardwareSet::Vmware => needs.insert(Need::Vmware),
            HardwareSet::Metal => needs.insert(Need::Metal),
            HardwareSet::Virtio | HardwareSet::All => false,
        };
    }
    if formats.iter().any(|f| *f != Format::KernelInitrd) {
        needs.insert(Need::Efi);
    }
    if formats.iter().any(|f| f.has_system_partition()) {
        needs.insert(Need::SystemPartition);
    }
    if config.system.watchdog.is_some() {
        needs.insert(Need::Watchdog);
    }
    if config.system.zram.is_some() {
        needs.insert(Need::Zram);
    }
    needs
}

/// One annotated option: a requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// The option, `CONFIG_…`.
    pub option: String,
    /// What needs it.
    pub need: Need,
    /// What breaks without it.
    pub consequence: String,
    /// The fragment file declaring it.
    pub fragment: String,
    /// The line of the option in that fragment (1-based).
    pub line: usize,
}

/// A malformed annotation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{fragment}:{line}: {message}")]
pub struct AnnotationError {
    /// The fragment file.
    pub fragment: String,
    /// The annotation's line (1-based).
    pub line: usize,
    /// What is wrong and how to write it.
    pub message: String,
}

/// The requirements declared by the annotations of one fragment (`name` is its file name, for
/// errors). An annotation is a comment `# @berth NEED: CONSEQUENCE` standing directly above an
/// option line set to `y` or `m`; NEED is one of [`Need`]'s names.
pub fn parse_annotations(name: &str, text: &str) -> Result<Vec<Requirement>, AnnotationError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let err = |message: String| AnnotationError { fragment: name.to_string(), line: i + 1, message };
        let Some(rest) = annotation_body(raw) else {
            continue;
        };
        let Some((need, consequence)) = rest.split_once(':') else {
            return Err(err(format!(
                "`{}`: write `# @berth NEED: what breaks without the option`",
                raw.trim()
            )));
        };
        let need = need.trim();
        let need = Need::parse(need).ok_or_else(|| {
            let names: Vec<&str> = Need::ALL.iter().map(|n| n.name()).collect();
            err(format!("unknown need `{need}`; use one of {}", names.join(", ")))
        })?;
        let consequence = consequence.trim();
        if consequence.is_empty() {
            return Err(err("the annotation does not say what breaks without the option".to_string()));
        }
        // Several annotations may stand above one option (one per need); they all apply to it.
        let below =
            (i + 1..lines.len()).find(|&j| annotation_body(lines[j]).is_none()).unwrap_or(lines.len());
        let next = lines.get(below).map(|l| l.trim()).unwrap_or("");
        let option_line = next.split_once('=').filter(|(o, _)| {
            o.starts_with("CONFIG_")
                && o.len() > 7
                && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        let Some((option, value)) = option_line else {
            let found = if next.is_empty() { "nothing".to_string() } else { format!("`{next}`") };
            return Err(err(format!(
                "an annotation must stand directly above an option line (CONFIG_X=y), or above \
                 another annotation of that option; found {found}"
            )));
        };
        if value != "y" && value != "m" {
            return Err(err(format!(
                "{option}={value}: an annotated option must be set to y or m (a requirement is built in \
                 or a module)"
            )));
        }
        out.push(Requirement {
            option: option.to_string(),
            need,
            consequence: consequence.to_string(),
            fragment: name.to_string(),
            line: below + 1,
        });
    }
    Ok(out)
}

/// The text after `@berth` of an annotation line (`# @berth …`), or `None` for other lines.
fn annotation_body(line: &str) -> Option<&str> {
    let body = line.trim().strip_prefix('#')?.trim_start().strip_prefix("@berth")?;
    (body.is_empty() || body.starts_with(char::is_whitespace)).then(|| body.trim())
}

/// Every requirement of the embedded fragments, in fragment order. The same option may be
/// required by several needs (in different fragments), each once.
pub fn requirements() -> Result<&'static [Requirement], AnnotationError> {
    static PARSED: OnceLock<Result<Vec<Requirement>, AnnotationError>> = OnceLock::new();
    PARSED.get_or_init(|| parse_all(fragments())).as_deref().map_err(Clone::clone)
}

/// The requirements of several fragments; an option annotated twice with the same need is an
/// error.
fn parse_all(fragments: &[(&str, &str)]) -> Result<Vec<Requirement>, AnnotationError> {
    let mut all: Vec<Requirement> = Vec::new();
    for (name, text) in fragments {
        for r in parse_annotations(name, text)? {
            if let Some(first) = all.iter().find(|a| a.option == r.option && a.need == r.need) {
                return Err(AnnotationError {
                    fragment: r.fragment.clone(),
                    line: r.line,
                    message: format!(
                        "{} is annotated `{}` already ({}:{}); keep one",
                        r.option,
                        r.need.name(),
                        first.fragment,
                        first.line
                    ),
                });
            }
            all.push(r);
        }
    }
    Ok(all)
}

/// The module an option builds when it is `=m`, for the options the fragments annotate
/// (the kernel ships no such table: it lives in its Makefiles).
const OPTION_MODULES: &[(&str, &str)] = &[
    ("CONFIG_ACPI_BUTTON", "button"),
    ("CONFIG_INPUT_EVDEV", "evdev"),
    ("CONFIG_FW_CFG_SYSFS", "qemu_fw_cfg"),
    ("CONFIG_SERIAL_8250", "8250"),
    ("CONFIG_UNIX", "unix"),
    ("CONFIG_IPV6", "ipv6"),
    ("CONFIG_OVERLAY_FS", "overlay"),
    ("CONFIG_EXT4_FS", "ext4"),
    ("CONFIG_VFAT_FS", "vfat"),
    ("CONFIG_ISO9660_FS", "isofs"),
    ("CONFIG_SQUASHFS", "squashfs"),
    ("CONFIG_EROFS_FS", "erofs"),
    ("CONFIG_HYPERV", "hv_vmbus"),
    ("CONFIG_HYPERV_STORAGE", "hv_storvsc"),
    ("CONFIG_HYPERV_NET", "hv_netvsc"),
    ("CONFIG_HYPERV_UTILS", "hv_utils"),
    ("CONFIG_HYPERV_KEYBOARD", "hyperv_keyboard"),
    ("CONFIG_HYPERV_BALLOON", "hv_balloon"),
    ("CONFIG_HYPERV_VSOCKETS", "hv_sock"),
    ("CONFIG_BRIDGE", "bridge"),
    ("CONFIG_VETH", "veth"),
    ("CONFIG_NF_TABLES", "nf_tables"),
    ("CONFIG_NFT_NAT", "nft_nat"),
    ("CONFIG_NFT_MASQ", "nft_masq"),
    ("CONFIG_VSOCKETS", "vsock"),
    ("CONFIG_VIRTIO_PCI", "virtio_pci"),
    ("CONFIG_VIRTIO_NET", "virtio_net"),
    ("CONFIG_VIRTIO_BLK", "virtio_blk"),
    ("CONFIG_SCSI_VIRTIO", "virtio_scsi"),
    ("CONFIG_VIRTIO_CONSOLE", "virtio_console"),
    ("CONFIG_HW_RANDOM_VIRTIO", "virtio_rng"),
    ("CONFIG_VIRTIO_BALLOON", "virtio_balloon"),
    ("CONFIG_BLK_DEV_SR", "sr_mod"),
    ("CONFIG_BLK_DEV_DM", "dm_mod"),
    ("CONFIG_DM_VERITY", "dm_verity"),
    ("CONFIG_WATCHDOG_CORE", "watchdog"),
    ("CONFIG_SOFT_WATCHDOG", "softdog"),
    ("CONFIG_I6300ESB_WDT", "i6300esb"),
    ("CONFIG_ZRAM", "zram"),
    ("CONFIG_CRYPTO_LZO", "lzo_rle"),
    ("CONFIG_CRYPTO_CRC32C", "crc32c_generic"),
    ("CONFIG_VMXNET3", "vmxnet3"),
    ("CONFIG_VMWARE_PVSCSI", "vmw_pvscsi"),
    ("CONFIG_VMWARE_BALLOON", "vmw_balloon"),
    ("CONFIG_VMWARE_VMCI", "vmw_vmci"),
    ("CONFIG_E1000E", "e1000e"),
    ("CONFIG_E1000", "e1000"),
    ("CONFIG_IGB", "igb"),
    ("CONFIG_R8169", "r8169"),
    ("CONFIG_8139CP", "8139cp"),
    ("CONFIG_TIGON3", "tg3"),
    ("CONFIG_SATA_AHCI", "ahci"),
    ("CONFIG_BLK_DEV_SD", "sd_mod"),
    ("CONFIG_BLK_DEV_NVME", "nvme"),
    ("CONFIG_USB_XHCI_PCI", "xhci_pci"),
    ("CONFIG_USB_EHCI_PCI", "ehci_pci"),
    ("CONFIG_USB_STORAGE", "usb_storage"),
    ("CONFIG_USB_HID", "usbhid"),
    ("CONFIG_HID_GENERIC", "hid_generic"),
];

/// The module `option` builds when set to `m`, if berth knows it.
pub fn module_of(option: &str) -> Option<&'static str> {
    OPTION_MODULES.iter().find(|(o, _)| *o == option).map(|(_, m)| *m)
}

/// The options [`module_of`] knows.
pub fn options_with_known_modules() -> impl Iterator<Item = &'static str> {
    OPTION_MODULES.iter().map(|(o, _)| *o)
}

/// The modules a kernel builds for the requirements of `needs` (`=m` options berth knows the
/// module of), each once with the need that wants it: what a kernel with modules must have
/// packed (Debian's generic kernel has ext4 and crc32c as modules, the cloud kernel built in).
pub fn modules_for_needs(
    loaded: &LoadedConfig,
    needs: &BTreeSet<Need>,
) -> Result<Vec<(Need, &'static str)>, AnnotationError> {
    let mut out: Vec<(Need, &'static str)> = Vec::new();
    for r in requirements()? {
        if !needs.contains(&r.need) || loaded.config.value(&r.option) != Some("m") {
            continue;
        }
        if let Some(module) = module_of(&r.option) {
            if !out.iter().any(|(_, m)| *m == module) {
                out.push((r.need, module));
            }
        }
    }
    Ok(out)
}

/// Whether modules come with the kernel, and which of them `berth build` packs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modules {
    /// No modules (a `[kernel] path` kernel): everything must be built in.
    None,
    /// The kernel's modules are available; `berth build` packs these (names with `_`).
    Packed(BTreeSet<String>),
}

/// A kernel configuration (`.config`): option → value (`y`, `m`, a number, a quoted string).
/// Options written `# CONFIG_X is not set` are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DotConfig {
    values: BTreeMap<String, String>,
}

impl DotConfig {
    /// Parses `.config` text. Text with neither an option line nor a `# … is not set` line is
    /// not a kernel configuration.
    pub fn parse(text: &str) -> Result<DotConfig, String> {
        let mut values = BTreeMap::new();
        let mut unset = 0;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
                if name.starts_with("CONFIG_") {
                    values.remove(name);
                    unset += 1;
                }
                continue;
            }
            if let Some((name, value)) = line.split_once('=') {
                if name.starts_with("CONFIG_") && !name.contains(char::is_whitespace) {
                    values.insert(name.to_string(), value.to_string());
                }
            }
        }
        if values.is_empty() && unset == 0 {
            return Err("no CONFIG_ option in it: not a kernel configuration".to_string());
        }
        Ok(DotConfig { values })
    }

    /// The option's value, `None` when it is not set.
    pub fn value(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }

    /// Sets (or with `None` unsets) an option.
    pub fn set(&mut self, option: &str, value: Option<&str>) {
        match value {
            Some(v) => self.values.insert(option.to_string(), v.to_string()),
            None => self.values.remove(option),
        };
    }
}

/// How a configuration was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConfigForm {
    /// A `.config` file.
    #[serde(rename = ".config")]
    Text,
    /// A gzip'd `.config` (`/proc/config.gz`).
    #[serde(rename = "config.gz")]
    Gzip,
    /// Embedded in a bzImage (`CONFIG_IKCONFIG`).
    #[serde(rename = "bzImage")]
    BzImage,
}

impl ConfigForm {
    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            ConfigForm::Text => "kernel configuration",
            ConfigForm::Gzip => "gzip'd kernel configuration",
            ConfigForm::BzImage => "configuration embedded in the kernel image",
        }
    }
}

/// A configuration read by [`load`].
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The options.
    pub config: DotConfig,
    /// How it was given.
    pub form: ConfigForm,
    /// The kernel release, when read from a bzImage.
    pub release: Option<String>,
}

/// Why a configuration cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    /// The bzImage cannot be read.
    #[error("a kernel image{}: {error}", release_suffix(.release))]
    BzImage {
        /// The release, if the header has one.
        release: Option<String>,
        /// What went wrong.
        error: BzImageError,
    },
    /// A bzImage built without `CONFIG_IKCONFIG`.
    #[error("a kernel image{} without an embedded configuration (CONFIG_IKCONFIG)", release_suffix(.release))]
    NoEmbeddedConfig {
        /// The release, if the header has one.
        release: Option<String>,
    },
    /// gzip data that does not decompress.
    #[error("gzip data that does not decompress: {0}")]
    Gzip(std::io::Error),
    /// Not a kernel configuration.
    #[error("{0}")]
    NotAConfig(String),
}

fn release_suffix(release: &Option<String>) -> String {
    release.as_ref().map(|r| format!(" (release {r})")).unwrap_or_default()
}

/// Reads a kernel configuration from a `.config`, a gzip'd `.config` or a bzImage with an
/// embedded configuration, telling them apart by content.
pub fn load(path: &Path) -> Result<LoadedConfig, LoadError> {
    let data = std::fs::read(path).map_err(LoadError::Read)?;
    load_bytes(&data)
}

/// [`load`] on the file's bytes.
pub fn load_bytes(data: &[u8]) -> Result<LoadedConfig, LoadError> {
    let (text, form, release) = if bzimage::is_bzimage(data) {
        let release = bzimage::release(data);
        let text = bzimage::embedded_config(data)
            .map_err(|error| LoadError::BzImage { release: release.clone(), error })?
            .ok_or_else(|| LoadError::NoEmbeddedConfig { release: release.clone() })?;
        (text, ConfigForm::BzImage, release)
    } else if data.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(data)
            .take(64 << 20)
            .read_to_string(&mut text)
            .map_err(LoadError::Gzip)?;
        (text, ConfigForm::Gzip, None)
    } else {
        let text = std::str::from_utf8(data)
            .map_err(|_| LoadError::NotAConfig("neither text, gzip nor a bzImage".to_string()))?;
        (text.to_string(), ConfigForm::Text, None)
    };
    let config = DotConfig::parse(&text).map_err(LoadError::NotAConfig)?;
    Ok(LoadedConfig { config, form, release })
}

/// How a kernel meets one requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// `=y`.
    BuiltIn,
    /// `=m`, and `berth build` packs the module.
    Module {
        /// The module.
        module: String,
    },
    /// `=m`, but the kernel comes without modules (`[kernel] path`).
    ModuleWithoutModules,
    /// `=m`, but `berth build` does not pack the module for this config.
    ModuleNotPacked {
        /// The module, if berth knows which it is.
        module: Option<String>,
    },
    /// Not set.
    Missing,
}

impl Status {
    /// Whether the requirement is met.
    pub fn ok(&self) -> bool {
        matches!(self, Status::BuiltIn | Status::Module { .. })
    }

    /// For people.
    pub fn describe(&self) -> String {
        match self {
            Status::BuiltIn => "built in".to_string(),
            Status::Module { .. } => "module (berth build packs it)".to_string(),
            Status::ModuleWithoutModules => "module, but a [kernel] path kernel has no modules".to_string(),
            Status::ModuleNotPacked { module: Some(m) } => {
                format!("module `{m}`, not packed (add \"{m}\" to [kernel] modules)")
            }
            Status::ModuleNotPacked { module: None } => {
                "module, not packed (name its module in [kernel] modules)".to_string()
            }
            Status::Missing => "missing".to_string(),
        }
    }
}

/// One requirement, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// The option.
    pub option: String,
    /// Its value in the kernel's configuration (`None`: not set).
    pub value: Option<String>,
    /// How the kernel meets it.
    #[serde(flatten)]
    pub status: Status,
    /// Whether that is enough.
    pub ok: bool,
    /// What breaks without it.
    pub consequence: String,
}

/// The requirements of one need, checked.
#[derive(Clone, Debug, Serialize)]
pub struct NeedReport {
    /// The need.
    pub need: Need,
    /// Which images have it.
    pub when: &'static str,
    /// Whether a missing option refuses the kernel (the checked config has this need, and it
    /// is not `optional`).
    pub required: bool,
    /// Its options.
    pub options: Vec<Item>,
}

/// The result of [`check`].
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How the configuration was given.
    pub form: ConfigForm,
    /// The kernel release, when known.
    pub release: Option<String>,
    /// Whether the kernel comes with modules.
    pub modules: bool,
    /// The needs checked (those of the config, or every one), and `optional`.
    pub needs: Vec<NeedReport>,
    /// The needs the checked config does not have (their options are not reported).
    pub not_needed: Vec<Need>,
    /// No required option is missing.
    pub ok: bool,
}

/// Which needs a check reports, and which of them refuse the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every need is reported; a missing `boot` or `containers` option refuses the kernel
    /// (`berth kernel check` without `--for`).
    Everything,
    /// The needs of one config ([`needs_for`]): each refuses the kernel; the others are not
    /// reported. `optional` is always reported and never refuses.
    Needs(BTreeSet<Need>),
}

impl Scope {
    /// Whether the need's options are reported, and whether a missing one refuses the kernel.
    fn of(&self, need: Need) -> (bool, bool) {
        match self {
            Scope::Everything => (true, matches!(need, Need::Boot | Need::Containers)),
            Scope::Needs(needs) => (need == Need::Optional || needs.contains(&need), needs.contains(&need)),
        }
    }
}

/// Checks a configuration against the requirements of the needs in `scope` (and reports the
/// `optional` ones). With [`Modules::None`] an `=m` option counts as missing; with
/// [`Modules::Packed`] it is met when `berth build` packs its module.
pub fn check(loaded: &LoadedConfig, scope: &Scope, modules: &Modules) -> Result<Report, AnnotationError> {
    check_against(requirements()?, loaded, scope, modules)
}

fn check_against(
    requirements: &[Requirement],
    loaded: &LoadedConfig,
    scope: &Scope,
    modules: &Modules,
) -> Result<Report, AnnotationError> {
    let mut reports = Vec::new();
    let mut not_needed = Vec::new();
    for need in Need::ALL {
        let (reported, required) = scope.of(need);
        if !reported {
            not_needed.push(need);
            continue;
        }
        let options = requirements
            .iter()
            .filter(|r| r.need == need)
            .map(|r| {
                let value = loaded.config.value(&r.option).map(str::to_string);
                let status = match (value.as_deref(), modules) {
                    (Some("y"), _) => Status::BuiltIn,
                    (Some("m"), Modules::None) => Status::ModuleWithoutModules,
                    (Some("m"), Modules::Packed(packed)) => match module_of(&r.option) {
                        Some(m) if packed.contains(m) => Status::Module { module: m.to_string() },
                        m => Status::ModuleNotPacked { module: m.map(str::to_string) },
                    },
                    _ => Status::Missing,
                };
                Item {
                    option: r.option.clone(),
                    value,
                    ok: status.ok(),
                    status,
                    consequence: r.consequence.clone(),
                }
            })
            .collect();
        reports.push(NeedReport { need, when: need.when(), required, options });
    }
    let ok = reports.iter().filter(|n| n.required).all(|n| n.options.iter().all(|i| i.ok));
    Ok(Report {
        form: loaded.form,
        release: loaded.release.clone(),
        modules: matches!(modules, Modules::Packed(_)),
        needs: reports,
        not_needed,
        ok,
    })
}

/// ANSI colours for the text report.
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

impl Report {
    /// The required options that are not met: (need, item).
    pub fn failures(&self) -> Vec<(Need, &Item)> {
        self.unmet(|n| n.required)
    }

    /// The options not met of the needs `which` selects.
    fn unmet(&self, which: impl Fn(&NeedReport) -> bool) -> Vec<(Need, &Item)> {
        self.needs
            .iter()
            .filter(|n| which(n))
            .flat_map(|n| n.options.iter().filter(|i| !i.ok).map(move |i| (n.need, i)))
            .collect()
    }

    /// The report in the spirit of Docker's `check-config.sh`: per need, each option with its
    /// status and, when not met, what breaks. `source` names the checked file, `target` the
    /// config it is checked for (`None`: every need); `colour` adds ANSI colours.
    pub fn to_text(&self, source: &str, target: Option<&str>, colour: bool) -> String {
        let paint = |c: &str, text: &str| if colour { format!("{c}{text}{RESET}") } else { text.to_string() };
        let mut out = String::new();
        let release = self.release.as_ref().map(|r| format!(", release {r}")).unwrap_or_default();
        let _ = writeln!(out, "{source}: {}{release}", self.form.describe());
        let _ = writeln!(
            out,
            "modules: {}",
            if self.modules {
                "packed by berth build from the kernel's package"
            } else {
                "none, as for a [kernel] path kernel: every option must be built in (=y) \
                 (--modules: the kernel's modules are packed, as the Debian kernel's are)"
            }
        );
        let _ = writeln!(
            out,
            "checked for: {}",
            target.unwrap_or("every need (boot and containers refuse the kernel; the others when used)")
        );
        for n in &self.needs {
            let _ = writeln!(out, "\n{} — {}:", n.need.name(), n.when);
            for i in &n.options {
                let status = i.status.describe();
                let line = if i.ok {
                    paint(GREEN, &status)
                } else if n.required {
                    format!("{}: {}", paint(RED, &status), i.consequence)
                } else {
                    format!("{}: {}", paint(YELLOW, &status), i.consequence)
                };
                let _ = writeln!(out, "  - {}: {line}", i.option);
            }
        }
        if let (Some(target), false) = (target, self.not_needed.is_empty()) {
            let names: Vec<&str> = self.not_needed.iter().map(|n| n.name()).collect();
            let _ = writeln!(out, "\nnot needed by {target}: {}", names.join(", "));
        }
        let failures = self.failures();
        let what =
            target.map(|t| format!("what {t} needs")).unwrap_or_else(|| "what every image needs".into());
        let names =
            |items: &[(Need, &Item)]| items.iter().map(|(_, i)| i.option.clone()).collect::<Vec<String>>();
        if failures.is_empty() {
            let _ = writeln!(out, "\n{}", paint(GREEN, &format!("result: the kernel has {what}")));
        } else {
            let plural = if failures.len() == 1 { "" } else { "s" };
            let text = format!(
                "result: the kernel lacks {what}: {} option{plural} ({})",
                failures.len(),
                names(&failures).join(", ")
            );
            let _ = writeln!(out, "\n{}", paint(RED, &text));
        }
        let partial = self.unmet(|n| !n.required && n.need.refuses());
        let mut by_need: Vec<(Need, Vec<(Need, &Item)>)> = Vec::new();
        for (need, item) in partial {
            match by_need.last_mut() {
                Some((n, items)) if *n == need => items.push((need, item)),
                _ => by_need.push((need, vec![(need, item)])),
            }
        }
        if !by_need.is_empty() {
            let list: Vec<String> = by_need
                .iter()
                .map(|(n, items)| format!("{} ({})", n.name(), names(items).join(", ")))
                .collect();
            let text = format!("images that need these cannot use this kernel: {}", list.join("; "));
            let _ = writeln!(out, "{}", paint(YELLOW, &text));
        }
        out
    }

    /// Why `berth build` refuses the kernel: one line per unmet required option with its need
    /// and consequence.
    pub fn refusal(&self) -> String {
        let mut out = String::new();
        for (need, i) in self.failures() {
            let _ =
                write!(out, "\n  {} ({}): {}: {}", i.option, need.name(), i.status.describe(), i.consequence);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_make_requirements() {
        let text = "# header\nCONFIG_A=y\n# @berth boot: nothing boots\nCONFIG_B=y\n\
                    #   @berth   config-drive :  no drive  \nCONFIG_C=m\n# @berthday: not one\nCONFIG_D=y\n";
        let r = parse_annotations("x.config", text).unwrap();
        assert_eq!(
            r,
            vec![
                Requirement {
                    option: "CONFIG_B".into(),
                    need: Need::Boot,
                    consequence: "nothing boots".into(),
                    fragment: "x.config".into(),
                    line: 4,
                },
                Requirement {
                    option: "CONFIG_C".into(),
                    need: Need::ConfigDrive,
                    consequence: "no drive".into(),
                    fragment: "x.config".into(),
                    line: 6,
                },
            ]
        );
    }

    #[test]
    fn bad_annotations_are_rejected_with_their_line() {
        let cases = [
            ("CONFIG_A=y\n# @berth qemu: x\nCONFIG_B=y\n", 2, "unknown need `qemu`"),
            ("# @berth boot x\nCONFIG_B=y\n", 1, "write `# @berth NEED"),
            ("# @berth boot:\nCONFIG_B=y\n", 1, "does not say what breaks"),
            ("# @berth boot: x\n\nCONFIG_B=y\n", 1, "found nothing"),
            ("# @berth boot: x\n", 1, "found nothing"),
            ("# @berth boot: x\n# CONFIG_B is not set\n", 1, "found `# CONFIG_B is not set`"),
            ("# @berth boot: x\n# @berth network: y\n\nCONFIG_B=y\n", 1, "found nothing"),
            ("# @berth boot: x\nCONFIG_NR_CPUS=64\n", 1, "must be set to y or m"),
        ];
        for (text, line, message) in cases {
            let e = parse_annotations("f.config", text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().starts_with(&format!("f.config:{line}: ")), "{e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
        }
        let twice =
            [("a.config", "# @berth boot: x\nCONFIG_A=y\n"), ("b.config", "# @berth boot: y\nCONFIG_A=y\n")];
        let e = parse_all(&twice).unwrap_err();
        assert!(
            e.to_string().starts_with("b.config:2: CONFIG_A is annotated `boot` already (a.config:2)"),
            "{e}"
        );
        let stacked = "# @berth boot: x\n# @berth boot: y\nCONFIG_A=y\n";
        let e = parse_all(&[("c.config", stacked)]).unwrap_err();
        assert!(e.to_string().starts_with("c.config:3: CONFIG_A is annotated `boot` already"), "{e}");
        let two_needs = [
            ("a.config", "# @berth boot: x\nCONFIG_A=y\n"),
            ("b.config", "# @berth storage: y\nCONFIG_A=y\n"),
        ];
        assert_eq!(parse_all(&two_needs).unwrap().len(), 2);
        let stacked = "# @berth network: no NIC\n# @berth storage: no disk\nCONFIG_VIRTIO_PCI=y\n";
        let both = parse_all(&[("v.config", stacked)]).unwrap();
        let got: Vec<_> =
            both.iter().map(|r| (r.option.as_str(), r.need, r.consequence.as_str(), r.line)).collect();
        assert_eq!(
            got,
            [
                ("CONFIG_VIRTIO_PCI", Need::Network, "no NIC", 3),
                ("CONFIG_VIRTIO_PCI", Need::Storage, "no disk", 3)
            ]
        );
    }

    #[test]
    fn every_fragment_is_embedded_and_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/fragments");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "config"))
            .map(|p| {
                (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        on_disk.sort();
        let embedded: Vec<(String, String)> =
            fragments().iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(embedded, on_disk, "the embedded fragments differ from kernel-config/fragments");
        assert!(on_disk.len() >= 7, "{on_disk:?}");
        let reqs = requirements().unwrap();
        for need in Need::ALL {
            assert!(reqs.iter().any(|r| r.need == need), "no option is annotated `{}`", need.name());
        }
        assert!(reqs.iter().any(|r| r.option == "CONFIG_OVERLAY_FS" && r.need == Need::Containers));
    }

    #[test]
    fn the_known_modules_belong_to_annotated_options() {
        let reqs = requirements().unwrap();
        for option in options_with_known_modules() {
            assert!(reqs.iter().any(|r| r.option == option), "{option} has a module but no annotation");
        }
    }

    #[test]
    fn config_text_is_parsed() {
        let c = DotConfig::parse(
            "#\n# Automatically generated\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x y\"\n\
             CONFIG_E=64\nnot a line\n",
        )
        .unwrap();
        assert_eq!(c.value("CONFIG_A"), Some("y"));
        assert_eq!(c.value("CONFIG_B"), Some("m"));
        assert_eq!(c.value("CONFIG_C"), None);
        assert_eq!(c.value("CONFIG_D"), Some("\"x y\""));
        assert_eq!(c.value("CONFIG_E"), Some("64"));
        assert_eq!(c.value("CONFIG_F"), None);
        assert!(DotConfig::parse("hello\nworld\n").is_err());
        assert!(DotConfig::parse("# CONFIG_X is not set\n").is_ok());
    }

    #[test]
    fn configs_load_from_text_gzip_and_bzimage() {
        let text = "CONFIG_OVERLAY_FS=y\nCONFIG_MEMCG=m\n";
        let plain = load_bytes(text.as_bytes()).unwrap();
        assert_eq!((plain.form, plain.config.value("CONFIG_MEMCG")), (ConfigForm::Text, Some("m")));
        let gz = load_bytes(&crate::bzimage::tests::gzip(text.as_bytes())).unwrap();
        assert_eq!(gz.form, ConfigForm::Gzip);
        assert_eq!(gz.config, plain.config);
        let vmlinux = crate::bzimage::tests::vmlinux_with_config(text);
        let image = crate::bzimage::tests::synthetic_bzimage(&vmlinux, "zstd", 0);
        let from_image = load_bytes(&image).unwrap();
        assert_eq!(from_image.form, ConfigForm::BzImage);
        assert_eq!(from_image.release.as_deref(), Some("6.1.99-berth"));
        assert_eq!(from_image.config, plain.config);

        let bare = crate::bzimage::tests::synthetic_bzimage(b"no config", "gzip", 4);
        let e = load_bytes(&bare).unwrap_err();
        assert!(matches!(e, LoadError::NoEmbeddedConfig { .. }), "{e}");
        assert!(e.to_string().contains("release 6.1.99-berth") && e.to_string().contains("CONFIG_IKCONFIG"));
        assert!(matches!(load_bytes(b"\x1f\x8bnot gzip"), Err(LoadError::Gzip(_))));
        assert!(matches!(load_bytes(b"\xff\xfe\x00"), Err(LoadError::NotAConfig(_))));
    }

    fn req(option: &str, need: Need) -> Requirement {
        Requirement {
            option: option.into(),
            need,
            consequence: format!("{option} breaks"),
            fragment: "t.config".into(),
            line: 1,
        }
    }

    fn loaded(text: &str) -> LoadedConfig {
        load_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn statuses_follow_values_and_modules() {
        let reqs = [
            req("CONFIG_A", Need::Boot),
            req("CONFIG_OVERLAY_FS", Need::Containers),
            req("CONFIG_VIRTIO_NET", Need::Network),
            req("CONFIG_UNKNOWN_MOD", Need::Network),
            req("CONFIG_SQUASHFS", Need::Optional),
            req("CONFIG_BRIDGE", Need::Bridge),
        ];
        let config = loaded(
            "CONFIG_A=y\nCONFIG_OVERLAY_FS=m\n# CONFIG_VIRTIO_NET is not set\nCONFIG_UNKNOWN_MOD=m\n\
             CONFIG_SQUASHFS=m\n",
        );
        let needs = BTreeSet::from([Need::Boot, Need::Containers, Need::Network]);
        let packed = Modules::Packed(BTreeSet::from(["overlay".to_string()]));
        let r = check_against(&reqs, &config, &Scope::Needs(needs.clone()), &packed).unwrap();
        let status = |option: &str| {
            r.needs.iter().flat_map(|n| &n.options).find(|i| i.option == option).map(|i| i.status.clone())
        };
        assert_eq!(status("CONFIG_A"), Some(Status::BuiltIn));
        assert_eq!(status("CONFIG_OVERLAY_FS"), Some(Status::Module { module: "overlay".into() }));
        assert_eq!(status("CONFIG_VIRTIO_NET"), Some(Status::Missing));
        assert_eq!(status("CONFIG_UNKNOWN_MOD"), Some(Status::ModuleNotPacked { module: None }));
        assert_eq!(
            status("CONFIG_SQUASHFS"),
            Some(Status::ModuleNotPacked { module: Some("squashfs".into()) })
        );
        assert_eq!(status("CONFIG_BRIDGE"), None, "bridge is not needed: not reported");
        assert_eq!(
            r.not_needed,
            vec![
                Need::InitrdZstd,
                Need::InitrdGzip,
                Need::Bridge,
                Need::Storage,
                Need::ConfigDrive,
                Need::Hyperv,
                Need::Vmware,
                Need::Metal,
                Need::Efi,
                Need::SystemPartition,
                Need::Watchdog,
                Need::Zram
            ]
        );
        assert!(!r.ok);
        let failures: Vec<&str> = r.failures().iter().map(|(_, i)| i.option.as_str()).collect();
        assert_eq!(failures, ["CONFIG_VIRTIO_NET", "CONFIG_UNKNOWN_MOD"], "optional ones never fail");

        let r = check_against(&reqs, &config, &Scope::Needs(needs.clone()), &Modules::None).unwrap();
        assert_eq!(
            r.failures().iter().map(|(_, i)| (i.option.as_str(), i.status.clone())).collect::<Vec<_>>(),
            [
                ("CONFIG_OVERLAY_FS", Status::ModuleWithoutModules),
                ("CONFIG_VIRTIO_NET", Status::Missing),
                ("CONFIG_UNKNOWN_MOD", Status::ModuleWithoutModules)
            ]
        );
        let text = r.to_text("k.config", Some("app.toml"), false);
        assert!(
            text.contains("  - CONFIG_OVERLAY_FS: module, but a [kernel] path kernel has no modules: CONFIG_OVERLAY_FS breaks"),
            "{text}"
        );
        assert!(text.contains("  - CONFIG_A: built in\n"), "{text}");
        assert!(
            text.contains("not needed by app.toml: initrd-zstd, initrd-gzip, bridge, storage, config-drive, hyperv, vmware, metal, efi"),
            "{text}"
        );
        assert!(text.contains("result: the kernel lacks what app.toml needs: 3 options"), "{text}");
        assert!(!text.contains('\x1b'), "no colour unless asked");
        assert!(r.to_text("k.config", None, true).contains(RED));
        let refusal = r.refusal();
        assert!(
            refusal.contains("\n  CONFIG_VIRTIO_NET (network): missing: CONFIG_VIRTIO_NET breaks"),
            "{refusal}"
        );

        let good = loaded("CONFIG_A=y\nCONFIG_OVERLAY_FS=y\nCONFIG_VIRTIO_NET=y\nCONFIG_UNKNOWN_MOD=y\n");
        let r = check_against(&reqs, &good, &Scope::Needs(needs.clone()), &Modules::None).unwrap();
        assert!(r.ok && r.failures().is_empty());
        assert!(r.to_text("k", Some("a.toml"), false).contains("result: the kernel has what a.toml needs"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["needs"][0]["need"], "boot");
        assert_eq!(json["needs"][0]["options"][0]["status"], "built-in");
        assert_eq!(json["form"], ".config");
    }

    #[test]
    fn the_merged_fragments_pass_every_need_without_modules() {
        // The project kernel is built from the fragments with everything =y: as a .config
        // they must meet every requirement with no modules at all.
        let merged: String = fragments().iter().map(|(_, t)| *t).collect::<Vec<_>>().join("\n");
        let r = check(&loaded(&merged), &Scope::Needs(every_need()), &Modules::None).unwrap();
        assert!(r.ok, "{}", r.to_text("fragments", None, false));
        assert!(r.needs.iter().flat_map(|n| &n.options).all(|i| i.ok));
    }

    #[test]
    fn everything_reports_every_need_and_refuses_on_boot_and_containers_only() {
        let reqs = [
            req("CONFIG_A", Need::Boot),
            req("CONFIG_B", Need::Containers),
            req("CONFIG_VIRTIO_NET", Need::Network),
            req("CONFIG_BRIDGE", Need::Bridge),
            req("CONFIG_C", Need::Optional),
        ];
        let config = loaded("CONFIG_A=y\nCONFIG_B=y\n");
        let r = check_against(&reqs, &config, &Scope::Everything, &Modules::None).unwrap();
        assert!(r.ok, "only network, bridge and optional options are missing");
        assert!(r.not_needed.is_empty());
        assert_eq!(r.needs.len(), Need::ALL.len());
        let text = r.to_text("k.config", None, false);
        assert!(text.contains("result: the kernel has what every image needs"), "{text}");
        assert!(
            text.contains(
                "images that need these cannot use this kernel: network (CONFIG_VIRTIO_NET); bridge (CONFIG_BRIDGE)"
            ),
            "{text}"
        );
        assert!(text.contains("  - CONFIG_C: missing: CONFIG_C breaks"), "{text}");
        let r = check_against(&reqs, &loaded("CONFIG_A=y\n"), &Scope::Everything, &Modules::None).unwrap();
        assert!(!r.ok);
        assert_eq!(r.failures().len(), 1);
        assert_eq!(r.failures()[0].1.option, "CONFIG_B");
    }

    fn config(text: &str) -> Config {
        Config::parse(text, "t.toml").unwrap()
    }

    #[test]
    fn needs_follow_the_config_and_formats() {
        use Need::*;
        let none = "[network]\nauto = false\n";
        assert_eq!(needs_for(&config(none), &[]), BTreeSet::from([Boot, Containers, InitrdZstd]));
        assert_eq!(needs_for(&config(""), &[]), BTreeSet::from([Boot, Containers, InitrdZstd, Network]));
        assert_eq!(
            needs_for(&config(&format!("{none}[system]\nconfig_drive = true\n")), &[Format::KernelInitrd]),
            BTreeSet::from([Boot, Containers, InitrdZstd, ConfigDrive])
        );
        assert_eq!(
            needs_for(&config(&format!("{none}[storage]\ndisk = \"/dev/vdb\"\n")), &[Format::Iso]),
            BTreeSet::from([Boot, Containers, InitrdZstd, Storage, Efi])
        );
        let bridge = "[[service]]\nname = \"web\"\nimage = \"oci:x\"\nnet = \"bridge\"\n";
        assert_eq!(
            needs_for(&config(bridge), &[Format::Vhdx]),
            BTreeSet::from([Boot, Containers, InitrdZstd, Network, Bridge, Hyperv, Efi, SystemPartition])
        );
        for f in [Format::Uki, Format::RawEfi, Format::Qcow2] {
            assert!(needs_for(&config(none), &[f]).contains(&Efi));
        }
        for (f, partition) in
            [(Format::Uki, false), (Format::Iso, false), (Format::RawEfi, true), (Format::Qcow2, true)]
        {
            assert_eq!(needs_for(&config(none), &[f]).contains(&SystemPartition), partition, "{f:?}");
        }
        let gzip = format!("{none}[kernel]\ncompression = \"gzip\"\n");
        assert_eq!(needs_for(&config(&gzip), &[]), BTreeSet::from([Boot, Containers, InitrdGzip]));
        let appliance = format!("{none}[system]\nwatchdog = \"30s\"\nzram = \"25%\"\n");
        assert_eq!(
            needs_for(&config(&appliance), &[]),
            BTreeSet::from([Boot, Containers, InitrdZstd, Watchdog, Zram])
        );
        assert!(!every_need().contains(&Optional));
        assert_eq!(every_need().len(), 15);
        let hardware = format!("{none}[kernel]\nhardware = [\"all\"]\n");
        let needs = needs_for(&config(&hardware), &[]);
        assert!([Hyperv, Vmware, Metal].iter().all(|n| needs.contains(n)), "{needs:?}");
    }
}
