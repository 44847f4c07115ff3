//! The verified system partition of a disk image, as `berth build` lays it out and PID 1 uses
//! it.
//!
//! A disk image boots a slim initramfs: PID 1, the modules that reach the partition, and
//! [`EarlyBoot`] (at [`EARLY_BOOT_PATH`]) listing them. Everything else is on the partition, a
//! read-only squashfs checked block by block by dm-verity (root hash on the signed UKI's command
//! line): the boot plan ([`PLAN`]), every layer once ([`LAYERS`]), the kernel modules
//! ([`MODULES`]) and the data disk's tools ([`TOOLS`]). PID 1 mounts it on [`MOUNT_POINT`] and
//! binds each of its directories where the initramfs layout has them ([`BINDS`]), so everything
//! after reads the same paths whether the image booted from RAM or from the disk.

use serde::{Deserialize, Serialize};

use crate::plan::{LAYERS_DIR, TOOLS_DIR};

/// The GPT partition name of the system partition (found by PID 1 as `partlabel:` this).
pub const PARTITION_NAME: &str = "berth-system";
/// Where PID 1 mounts it (read-only).
pub const MOUNT_POINT: &str = "/berth/system";
/// The boot plan on the partition.
pub const PLAN: &str = "plan.json";
/// The layers on the partition: `layers/<sha256 hex>/`.
pub const LAYERS: &str = "layers";
/// The kernel modules on the partition: `modules/<release>/…`, as under `/lib/modules`.
pub const MODULES: &str = "modules";
/// The data disk's tools on the partition (as under [`TOOLS_DIR`]).
pub const TOOLS: &str = "tools";
/// The directories of the partition PID 1 binds into the machine: (on the partition, where).
pub const BINDS: [(&str, &str); 3] = [(LAYERS, LAYERS_DIR), (MODULES, "/lib/modules"), (TOOLS, TOOLS_DIR)];
/// Where a disk image's slim initramfs carries [`EarlyBoot`].
pub const EARLY_BOOT_PATH: &str = "/berth/early-boot.json";

/// What PID 1 does before the system partition is there: the modules that reach it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EarlyBoot {
    /// Paths in the initramfs, dependencies first: device-mapper and dm-verity, squashfs, the
    /// disk drivers.
    pub modules: Vec<String>,
}

impl EarlyBoot {
    /// Reads the JSON form.
    pub fn from_json(text: &str) -> Result<EarlyBoot, String> {
        serde_json::from_str(text).map_err(|e| format!("{EARLY_BOOT_PATH}: {e}"))
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_boot_round_trips_and_refuses_unknown_fields() {
        let e = EarlyBoot { modules: vec!["/lib/modules/6.1/dm-mod.ko".into()] };
        assert_eq!(EarlyBoot::from_json(&e.to_json()).unwrap(), e);
        let err = EarlyBoot::from_json(r#"{"modules": [], "extra": 1}"#).unwrap_err();
        assert!(err.contains("extra") && err.starts_with(EARLY_BOOT_PATH), "{err}");
    }
}
