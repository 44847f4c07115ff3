//! `[storage]` (the data disk) and the containers' named volumes.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the data disk is mounted unless `[storage] mount` says otherwise.
pub const DEFAULT_MOUNT: &str = "/var/lib/berth";
/// The filesystem label a formatted data disk gets unless `[storage] label` says otherwise.
pub const DEFAULT_LABEL: &str = "berth-data";
/// Named volumes live in this directory of the data disk: `<mount>/volumes/<name>`.
pub const VOLUMES_DIR: &str = "volumes";
/// Persistent writable layers live in this directory of the data disk:
/// `<mount>/containers/<name>/{upper,work}`.
pub const CONTAINERS_DIR: &str = "containers";
/// `[storage]`: the data disk, formatted on first boot, checked and mounted on every boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Which disk: `"/dev/vdb"`, `"serial:ID"`, `"partlabel:NAME"` (GPT) or `"label:NAME"`
    /// (an ext4 filesystem's label).
    pub disk: DiskSelector,
    /// Where it is mounted.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Format the disk (ext4) when it is blank — all zeros at its start and end. A disk holding
    /// anything else is never formatted.
    #[serde(default = "yes")]
    pub format: bool,
    /// The label a formatted disk gets (at most 16 bytes).
    #[serde(default = "default_label")]
    pub label: String,
    /// Grow the filesystem when the disk is larger than it.
    #[serde(default = "yes")]
    pub grow: bool,
    /// How long to wait for the disk to appear at boot.
    #[serde(default = "default_wait", with = "crate::config::duration_text")]
    pub wait: Duration,
}

fn default_mount() -> String {
    DEFAULT_MOUNT.to_string()
}
fn default_label() -> String {
    DEFAULT_LABEL.to_string()
}
fn default_wait() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}

impl StorageConfig {
    /// Checks what the types cannot: the mount point and the label.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.mount;
        if !m.starts_with('/') || m == "/" || m.split('/').any(|c| c == "..") {
            return Err(format!(
                "[storage] mount: `{m}` must be an absolute path below / (like \"{DEFAULT_MOUNT}\")"
            ));
        }
        for reserved in ["/proc", "/sys", "/dev", "/berth", "/run/berth"] {
            if m == reserved || m.starts_with(&format!("{reserved}/")) {
                return Err(format!("[storage] mount: `{m}` is inside {reserved}, which berth owns; use a path like \"{DEFAULT_MOUNT}\""));
            }
        }
        if self.label.is_empty() || self.label.len() > 16 {
            return Err(format!("[storage] label: `{}` must be 1 to 16 bytes (ext4's limit)", self.label));
        }
        Ok(())
    }
}

/// How the data disk is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSelector {
    /// A device path, like `/dev/vdb`.
    Path(String),
    /// The disk's serial number (virtio `serial=`, NVMe, SCSI).
    Serial(String),
    /// A GPT partition's name.
    PartLabel(String),
    /// An ext4 filesystem's label (finds a disk formatted already).
    Label(String),
}

impl DiskSelector {
    /// Parses `"/dev/vdb"`, `"serial:ID"`, `"partlabel:NAME"` or `"label:NAME"`.
    pub fn parse(text: &str) -> Result<DiskSelector, String> {
        let hint = "write \"/dev/vdb\", \"serial:ID\", \"partlabel:NAME\" or \"label:NAME\"";
        let nonempty = |v: &str, what: &str| {
            if v.is_empty() {
                Err(format!("[storage] disk: `{text}` has an empty {what}; {hint}"))
            } else {
                Ok(v.to_string())
            }
        };
        if let Some(v) = text.strip_prefix("serial:") {
            return nonempty(v, "serial").map(DiskSelector::Serial);
        }
        if let Some(v) = text.strip_prefix("partlabel:") {
            return nonempty(v, "partition label").map(DiskSelector::PartLabel);
        }
        if let Some(v) = text.strip_prefix("label:") {
            return nonempty(v, "label").map(DiskSelector::Label);
        }
        if let Some(name) = text.strip_prefix("/dev/") {
            if !name.is_empty() && !name.contains("..") {
                return Ok(DiskSelector::Path(text.to_string()));
            }
        }
        Err(format!("[storage] disk: `{text}` is not a disk; {hint}"))
    }
}

impl fmt::Display for DiskSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSelector::Path(p) => write!(f, "{p}"),
            DiskSelector::Serial(s) => write!(f, "serial:{s}"),
            DiskSelector::PartLabel(s) => write!(f, "partlabel:{s}"),
            DiskSelector::Label(s) => write!(f, "label:{s}"),
        }
    }
}

crate::text_form::serde_as_text!(DiskSelector, VolumeMount);

/// A named volume mounted into a container: `"NAME:/target"` or `"NAME:/target:ro"`, written
/// so in the config and the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The volume's name: its directory on the data disk.
    pub name: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.name, self.target, if self.read_only { ":ro" } else { "" })
    }
}

impl VolumeMount {
    /// Parses `"NAME:/target[:ro|:rw]"`. A source starting with `/` is a bind, not a volume:
    /// the error says to use `binds`.
    pub fn parse(text: &str) -> Result<VolumeMount, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (name, target, read_only) = match parts.as_slice() {
            [n, t] => (*n, *t, false),
            [n, t, "ro"] => (*n, *t, true),
            [n, t, "rw"] => (*n, *t, false),
            [_, _, opt] => {
                return Err(format!("volume `{text}`: `{opt}` is not an option; use \"ro\" or \"rw\""))
            }
            _ => return Err(format!("volume `{text}` must look like \"NAME:/path\" or \"NAME:/path:ro\"")),
        };
        if name.starts_with('/') {
            return Err(format!(
                "volume `{text}`: `{name}` is a path of the machine; bind it with binds = [\"{name}:{target}\"]"
            ));
        }
        validate_volume_name(name).map_err(|m| format!("volume `{text}`: {m}"))?;
        if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
            return Err(format!("volume `{text}`: the target `{target}` must be an absolute path"));
        }
        if target == "/" {
            return Err(format!("volume `{text}`: a volume cannot be the container's root"));
        }
        Ok(VolumeMount { name: name.to_string(), target: target.to_string(), read_only })
    }
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn validate_volume_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        || name.len() > 128
    {
        return Err(format!(
            "`{name}` is not a volume name (letters, digits, `_`, `.`, `-`, starting with a letter or digit)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(DiskSelector::parse("/dev/vdb").unwrap(), DiskSelector::Path("/dev/vdb".into()));
        assert_eq!(DiskSelector::parse("serial:data1").unwrap(), DiskSelector::Serial("data1".into()));
        assert_eq!(
            DiskSelector::parse("partlabel:berth-data").unwrap(),
            DiskSelector::PartLabel("berth-data".into())
        );
        assert_eq!(DiskSelector::parse("label:x").unwrap(), DiskSelector::Label("x".into()));
        assert!(DiskSelector::parse("vdb").unwrap_err().contains("serial:ID"));
        assert!(DiskSelector::parse("serial:").unwrap_err().contains("empty serial"));
        assert!(DiskSelector::parse("/dev/").is_err());
        for s in ["/dev/vdb", "serial:a", "partlabel:b", "label:c"] {
            assert_eq!(DiskSelector::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn volumes() {
        assert_eq!(
            VolumeMount::parse("db:/var/lib/db").unwrap(),
            VolumeMount { name: "db".into(), target: "/var/lib/db".into(), read_only: false }
        );
        assert!(VolumeMount::parse("db:/x:ro").unwrap().read_only);
        assert!(VolumeMount::parse("/data:/x").unwrap_err().contains("binds"));
        assert!(VolumeMount::parse("db:x").unwrap_err().contains("absolute"));
        assert!(VolumeMount::parse("db:/").unwrap_err().contains("root"));
        assert!(VolumeMount::parse("db:/x:rx").unwrap_err().contains("\"ro\""));
        assert!(VolumeMount::parse("-db:/x").unwrap_err().contains("volume name"));
        assert!(VolumeMount::parse("db").is_err());
    }

    #[test]
    fn validates_mount_and_label() {
        let mut s = StorageConfig {
            disk: DiskSelector::Path("/dev/vdb".into()),
            mount: DEFAULT_MOUNT.into(),
            format: true,
            label: DEFAULT_LABEL.into(),
            grow: true,
            wait: default_wait(),
        };
        assert!(s.validate().is_ok());
        s.mount = "/proc/x".into();
        assert!(s.validate().unwrap_err().contains("/proc"));
        s.mount = "relative".into();
        assert!(s.validate().is_err());
        s.mount = DEFAULT_MOUNT.into();
        s.label = "x".repeat(17);
        assert!(s.validate().unwrap_err().contains("16 bytes"));
    }
}
