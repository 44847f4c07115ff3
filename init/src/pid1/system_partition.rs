//! The verified system partition: when the kernel command line carries
//! `berth.system=SELECTOR[,SELECTOR…]` (disk selectors as `[storage] disk` takes: `serial:ID`,
//! `partlabel:NAME`, a path) and `berth.verity=DATA_BLOCKS:ROOT:SALT`, PID 1 puts a read-only
//! dm-verity device over each candidate in turn (device-mapper ioctls, see `device_mapper`)
//! and keeps the first whose first block reads back: the one whose blocks match the root hash.
//! That is how a UKI finds its own slot (`berth-system-a` or `-b`, see `berth_schema::slots`)
//! without naming it. It mounts its squashfs read-only on [`MOUNT_POINT`]. Every block read
//! from it is checked against the root hash, which the signed UKI's command line carries: a
//! changed block is an I/O error for whoever reads it, never wrong data.
//!
//! Order: load the slim initramfs's modules ([`EARLY_BOOT_PATH`]: device-mapper, dm-verity,
//! squashfs, the disk drivers) → for each candidate: find the disk (waiting for its driver) →
//! `verity` device `berth-system` → its block node `/dev/mapper/berth-system` (made by PID 1,
//! not waited for from devtmpfs) → read its first block (an I/O error: another slot's
//! partition, or a blank one: remove the device, try the next) → read the partition's
//! [`Index`] through it → for each piece, a read-only `linear` device `berth-piece-N` over its
//! range of the verity device and its squashfs mounted `ro` (the base on [`MOUNT_POINT`], the
//! others on their directories in it) → bind its layers, modules and tools where the
//! all-in-RAM layout has them ([`BINDS`], recursively: the pieces are mounts below them). PID 1
//! then reads the plan from the partition.

use std::path::Path;
use std::time::Duration;

use berth_schema::config::DiskSelector;
use berth_schema::plan::PLAN_PATH;
use berth_schema::slots::Slot;
use berth_schema::system_partition::{EarlyBoot, Index, BINDS, EARLY_BOOT_PATH, PARTITION_NAME, PLAN};
use berth_schema::verity::{VeritySpec, CMDLINE_KEY};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::pid1::device_mapper::{self, Target};
use crate::pid1::storage;

/// The kernel command line parameter naming the disk.
pub const SELECTOR_KEY: &str = "berth.system";
pub use berth_schema::system_partition::MOUNT_POINT;
/// The device-mapper name of the verity device (the partition's own name).
pub const DEVICE_NAME: &str = PARTITION_NAME;
/// The block node PID 1 makes for it (in devtmpfs: `/run` is `nodev`).
const DEVICE_NODE: &str = "/dev/mapper/berth-system";
/// How long the disk's driver may take to show it.
const DISK_WAIT: Duration = Duration::from_secs(10);

/// What was mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// The disk under the verity device (`vda2`).
    pub disk: String,
    /// What it was found by (`partlabel:berth-system-a`).
    pub selector: DiskSelector,
    /// The parameters it was checked with.
    pub spec: VeritySpec,
}

impl Mounted {
    /// The system slot it is, when it was found by a slot's partition name.
    pub fn slot(&self) -> Option<Slot> {
        match &self.selector {
            DiskSelector::PartLabel(name) => Slot::of_partition(name),
            _ => None,
        }
    }

    /// What to call it in events: the partition name, else the disk.
    pub fn name(&self) -> String {
        match &self.selector {
            DiskSelector::PartLabel(name) => name.clone(),
            _ => self.disk.clone(),
        }
    }
}

/// The partition's candidate selectors and verity parameters from `cmdline`: `None` when
/// neither is there (no system partition: everything is in the initramfs), an error when only
/// one is or one is malformed.
pub fn requested(cmdline: &str) -> Option<Result<(Vec<DiskSelector>, VeritySpec), String>> {
    let prefix = format!("{SELECTOR_KEY}=");
    let selector = cmdline.split_whitespace().find_map(|w| w.strip_prefix(&prefix));
    let spec = VeritySpec::from_cmdline(cmdline);
    match (selector, spec) {
        (None, None) => None,
        (Some(sel), Some(spec)) => Some(
            sel.split(',')
                .map(DiskSelector::parse)
                .collect::<Result<Vec<_>, _>>()
                .and_then(|sel| Ok((sel, spec?))),
        ),
        (Some(_), None) => Some(Err(format!(
            "{SELECTOR_KEY} needs {CMDLINE_KEY}: an unverified system partition is not mounted"
        ))),
        (None, Some(_)) => Some(Err(format!("{CMDLINE_KEY} needs {SELECTOR_KEY} naming the disk"))),
    }
}

/// Where this boot's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemSource {
    /// The initramfs holds everything (no partition asked for).
    Initramfs,
    /// The verified partition, mounted and bound into place.
    Partition(Mounted),
    /// A partition was asked for and could not be used: why.
    Failed(String),
}

impl SystemSource {
    /// Where the boot plan is read from.
    pub fn plan_path(&self) -> String {
        match self {
            SystemSource::Initramfs => PLAN_PATH.to_string(),
            SystemSource::Partition(_) | SystemSource::Failed(_) => format!("{MOUNT_POINT}/{PLAN}"),
        }
    }

    /// Whether the layers are on the read-only partition (their opaque directories already
    /// carry the xattr there).
    pub fn layers_on_partition(&self) -> bool {
        matches!(self, SystemSource::Partition(_))
    }
}

/// Loads the slim initramfs's modules (when it has [`EARLY_BOOT_PATH`]), then sets up, mounts
/// and binds the partition `cmdline` asks for. Module failures are returned as warnings.
pub fn mount_from(cmdline: &str) -> (SystemSource, Vec<String>) {
    let mut warnings = Vec::new();
    match std::fs::read_to_string(EARLY_BOOT_PATH) {
        Ok(text) => match EarlyBoot::from_json(&text) {
            Ok(early) => warnings.extend(crate::pid1::system::load_modules(&early.modules)),
            Err(e) => warnings.push(e),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warnings.push(format!("{EARLY_BOOT_PATH}: {e}")),
    }
    let source = match requested(cmdline) {
        None => SystemSource::Initramfs,
        Some(Err(e)) => SystemSource::Failed(e),
        Some(Ok((selectors, spec))) => {
            match mount_verified(&selectors, spec).and_then(|m| bind_into_place().map(|()| m)) {
                Ok(m) => SystemSource::Partition(m),
                Err(e) => SystemSource::Failed(e),
            }
        }
    };
    (source, warnings)
}

/// Binds the partition's directories where the all-in-RAM layout has them.
fn bind_into_place() -> Result<(), String> {
    for (on_partition, target) in BINDS {
        let source = Path::new(MOUNT_POINT).join(on_partition);
        if !source.is_dir() {
            continue;
        }
        std::fs::create_dir_all(target).map_err(|e| format!("create {target}: {e}"))?;
        mount(Some(&source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| format!("bind {} on {target}: {e}", source.display()))?;
    }
    Ok(())
}

/// Sets up the verity device over the first candidate whose blocks match `spec`, and mounts
/// its pieces.
fn mount_verified(selectors: &[DiskSelector], spec: VeritySpec) -> Result<Mounted, String> {
    let mut refused = Vec::new();
    for selector in selectors {
        match verity_device(selector, spec) {
            Ok((disk, device)) => {
                mount_pieces(device)
                    .map_err(|e| format!("the system partition ({selector} on {disk}): {e}"))?;
                return Ok(Mounted { disk, selector: selector.clone(), spec });
            }
            Err(e) => refused.push(format!("{selector}: {e}")),
        }
    }
    Err(format!("no partition matches the root hash {}: {}", spec.root_hex(), refused.join("; ")))
}

/// A block node `/dev/mapper/NAME` for the device `(major, minor)`, made afresh.
fn block_node(name: &str, (major, minor): (u32, u32)) -> Result<String, String> {
    let _ = std::fs::create_dir_all("/dev/mapper");
    let node = format!("/dev/mapper/{name}");
    // A node left by an earlier attempt may carry another device number.
    let _ = std::fs::remove_file(&node);
    mknod(
        node.as_str(),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(u64::from(major), u64::from(minor)),
    )
    .map_err(|e| format!("mknod {node}: {e}"))?;
    Ok(node)
}

/// Reads the index through the verity device `verity` and mounts each piece read-only from a
/// `linear` device over its range: the base on [`MOUNT_POINT`], the others on their
/// directories in it.
fn mount_pieces(verity: (u32, u32)) -> Result<(), String> {
    let mut file = std::fs::File::open(DEVICE_NODE).map_err(|e| format!("{DEVICE_NODE}: {e}"))?;
    let index = Index::read(&mut file)?;
    drop(file);
    std::fs::create_dir_all(MOUNT_POINT).map_err(|e| format!("create {MOUNT_POINT}: {e}"))?;
    for (i, piece) in index.pieces.iter().enumerate() {
        let name = format!("berth-piece-{i}");
        let (major, minor) = verity;
        let target = Target {
            start: 0,
            length: piece.bytes / 512,
            kind: "linear".into(),
            params: format!("{major}:{minor} {}", piece.offset / 512),
        };
        let number = device_mapper::create(&name, &[target], true)?;
        let node = block_node(&name, number)?;
        let at = if piece.path.is_empty() {
            MOUNT_POINT.to_string()
        } else {
            format!("{MOUNT_POINT}/{}", piece.path)
        };
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
        mount(Some(node.as_str()), at.as_str(), Some("squashfs"), flags, None::<&str>)
            .map_err(|e| format!("mount piece `{}` ({name}) on {at}: {e}", piece.path))?;
    }
    Ok(())
}

/// The verity device over `selector`'s disk, when its first block checks out against `spec`
/// (read through the device: the kernel verifies it up to the root hash); removed otherwise.
/// Returns the disk's name and the device's number.
fn verity_device(selector: &DiskSelector, spec: VeritySpec) -> Result<(String, (u32, u32)), String> {
    use std::io::Read;
    // The hardware sets' disk drivers (PVSCSI, AHCI, NVMe…) load by the disk's path's modalias.
    let mut drivers = super::coldplug::DiskDrivers::default();
    let disk = storage::find_disk(selector, DISK_WAIT, SELECTOR_KEY, &mut || drivers.look())?;
    let device = format!("/dev/{disk}");
    let target =
        Target { start: 0, length: spec.sectors(), kind: "verity".into(), params: spec.table(&device) };
    let number = device_mapper::create(DEVICE_NAME, &[target], true)?;
    let checked = block_node(DEVICE_NAME, number).and_then(|node| {
        let mut first = vec![0u8; 4096];
        std::fs::File::open(node)
            .and_then(|mut f| f.read_exact(&mut first))
            .map_err(|e| format!("{disk}: its blocks do not match the root hash ({e})"))
    });
    match checked {
        Ok(()) => Ok((disk, number)),
        Err(e) => {
            let _ = std::fs::remove_file(DEVICE_NODE);
            if let Err(r) = device_mapper::remove(DEVICE_NAME) {
                return Err(format!("{e}; and then {r}"));
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_for_only_with_both_parameters() {
        let spec = format!("{CMDLINE_KEY}=8:{}:{}", "ab".repeat(32), "cd".repeat(32));
        assert_eq!(requested("console=ttyS0 quiet"), None);
        let both = requested(&format!("console=ttyS0 {SELECTOR_KEY}=serial:system {spec}")).unwrap().unwrap();
        assert_eq!(both.0, [DiskSelector::Serial("system".into())]);
        let slots = format!("{SELECTOR_KEY}=partlabel:berth-system-a,partlabel:berth-system-b {spec}");
        let (candidates, _) = requested(&slots).unwrap().unwrap();
        assert_eq!(
            candidates,
            [
                DiskSelector::PartLabel("berth-system-a".into()),
                DiskSelector::PartLabel("berth-system-b".into())
            ]
        );
        assert!(requested(&format!("{SELECTOR_KEY}=partlabel:a,junk {spec}")).unwrap().is_err());
        assert_eq!(both.1.data_blocks, 8);
        let alone = requested(&format!("{SELECTOR_KEY}=serial:system")).unwrap().unwrap_err();
        assert!(alone.contains("unverified"), "{alone}");
        assert!(requested(&spec).unwrap().is_err());
        assert!(requested(&format!("{SELECTOR_KEY}=serial:x {CMDLINE_KEY}=junk")).unwrap().is_err());
    }
}
