//! The verified system partition: when the kernel command line carries
//! `berth.system=SELECTOR` (a disk selector as `[storage] disk` takes: `serial:ID`,
//! `partlabel:NAME`, a path) and `berth.verity=DATA_BLOCKS:ROOT:SALT`, PID 1 finds the disk,
//! puts a read-only dm-verity device over it (device-mapper ioctls, see `device_mapper`) and
//! mounts its squashfs read-only on [`MOUNT_POINT`]. Every block read from it is checked against
//! the root hash, which the signed UKI's command line carries: a changed block is an I/O error
//! for whoever reads it, never wrong data.
//!
//! Order: load the slim initramfs's modules ([`EARLY_BOOT_PATH`]: device-mapper, dm-verity,
//! squashfs, the disk drivers) → find the disk (waiting for its driver) → `verity` device
//! `berth-system` → its block node `/dev/mapper/berth-system` (made by PID 1, not waited for
//! from devtmpfs) → mount squashfs `ro` → bind its layers, modules and tools where the
//! all-in-RAM layout has them ([`BINDS`]). PID 1 then reads the plan from the partition.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use berth_schema::config::DiskSelector;
use berth_schema::plan::PLAN_PATH;
use berth_schema::system_partition::{EarlyBoot, BINDS, EARLY_BOOT_PATH, PARTITION_NAME, PLAN};
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
    /// The disk under the verity device (`vdb`).
    pub disk: String,
    /// The parameters it was checked with.
    pub spec: VeritySpec,
}

/// The partition's selector and verity parameters from `cmdline`: `None` when neither is
/// there (no system partition: everything is in the initramfs), an error when only one is or
/// one is malformed.
pub fn requested(cmdline: &str) -> Option<Result<(DiskSelector, VeritySpec), String>> {
    let prefix = format!("{SELECTOR_KEY}=");
    let selector = cmdline.split_whitespace().find_map(|w| w.strip_prefix(&prefix));
    let spec = VeritySpec::from_cmdline(cmdline);
    match (selector, spec) {
        (None, None) => None,
        (Some(sel), Some(spec)) => Some(DiskSelector::parse(sel).and_then(|sel| Ok((sel, spec?)))),
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
        Some(Ok((selector, spec))) => {
            match mount_verified(&selector, spec).and_then(|m| bind_into_place().map(|()| m)) {
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
        mount(Some(&source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind {} on {target}: {e}", source.display()))?;
    }
    Ok(())
}

fn mount_verified(selector: &DiskSelector, spec: VeritySpec) -> Result<Mounted, String> {
    let disk = storage::find_disk(selector, DISK_WAIT, SELECTOR_KEY)?;
    let device = format!("/dev/{disk}");
    let target =
        Target { start: 0, length: spec.sectors(), kind: "verity".into(), params: spec.table(&device) };
    let (major, minor) = device_mapper::create(DEVICE_NAME, &[target], true)?;
    let _ = std::fs::create_dir_all("/dev/mapper");
    let node = Path::new(DEVICE_NODE);
    let is_node = node.symlink_metadata().is_ok_and(|m| m.file_type().is_block_device());
    if !is_node {
        mknod(
            node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(u64::from(major), u64::from(minor)),
        )
        .map_err(|e| format!("mknod {DEVICE_NODE}: {e}"))?;
    }
    std::fs::create_dir_all(MOUNT_POINT).map_err(|e| format!("create {MOUNT_POINT}: {e}"))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    mount(Some(node), MOUNT_POINT, Some("squashfs"), flags, None::<&str>)
        .map_err(|e| format!("mount the system partition ({disk}, verity) on {MOUNT_POINT}: {e}"))?;
    Ok(Mounted { disk, spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_for_only_with_both_parameters() {
        let spec = format!("{CMDLINE_KEY}=8:{}:{}", "ab".repeat(32), "cd".repeat(32));
        assert_eq!(requested("console=ttyS0 quiet"), None);
        let both = requested(&format!("console=ttyS0 {SELECTOR_KEY}=serial:system {spec}")).unwrap().unwrap();
        assert_eq!(both.0, DiskSelector::Serial("system".into()));
        assert_eq!(both.1.data_blocks, 8);
        let alone = requested(&format!("{SELECTOR_KEY}=serial:system")).unwrap().unwrap_err();
        assert!(alone.contains("unverified"), "{alone}");
        assert!(requested(&spec).unwrap().is_err());
        assert!(requested(&format!("{SELECTOR_KEY}=serial:x {CMDLINE_KEY}=junk")).unwrap().is_err());
    }
}
