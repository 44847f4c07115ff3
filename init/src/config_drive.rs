//! NoCloud config drives (cloud-init's format): a volume labelled `CIDATA` (ISO 9660 or FAT)
//! holding `meta-data` (`local-hostname`, `instance-id`) and `user-data` — for berth, a TOML
//! fragment (see `config::overrides`). This module recognizes the volume, finds it among the
//! block devices (also OpenStack's `config-2`, for the metadata helper) and reads the files'
//! text; PID 1 mounts it.

use std::io::Read;
use std::time::{Duration, Instant};

use berth_schema::config::overrides::Override;

/// How long block devices may take to appear (SCSI scans asynchronously), from the start or
/// from the last driver loaded for a disk's path.
const DRIVE_WAIT: Duration = Duration::from_secs(3);
/// How long a USB stick may take: usb-storage waits a second before it scans (`delay_use`),
/// then the SCSI disk needs its own driver.
const DRIVE_WAIT_LOADING: Duration = Duration::from_secs(10);
/// How long the list of block devices must stay the same before a drive is taken to be absent.
const DEVICES_SETTLED: Duration = Duration::from_millis(700);
/// How long after drivers last loaded before that: usb-storage waits a second before it scans.
const DRIVERS_SETTLED: Duration = Duration::from_millis(1500);

/// The block device whose ISO 9660 or FAT label `wanted` accepts, and its file system; looked
/// for until the list of block devices has stayed the same for a while and no driver loaded
/// lately (at most 3 s; up to 10 s while `look`, run before each look, keeps loading drivers
/// for disks' paths: it returns true while they load).
pub fn find_labelled(
    wanted: impl Fn(&str) -> bool,
    look: &mut dyn FnMut() -> bool,
) -> Option<(String, DriveFs)> {
    let start = Instant::now();
    let mut seen = 0usize;
    let mut stable_since = Instant::now();
    let mut last_load: Option<Instant> = None;
    loop {
        if look() {
            last_load = Some(Instant::now());
        }
        let names: Vec<String> = std::fs::read_dir("/sys/class/block")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        for name in names.iter().filter(|n| !n.starts_with("loop") && !n.starts_with("ram")) {
            let dev = format!("/dev/{name}");
            let mut head = vec![0u8; 64 * 1024];
            let Ok(mut f) = std::fs::File::open(&dev) else { continue };
            let n = f.read(&mut head).unwrap_or(0);
            head.truncate(n);
            if let Some((fs, label)) = volume_label(&head) {
                if wanted(&label) {
                    return Some((dev, fs));
                }
            }
        }
        if names.len() != seen {
            seen = names.len();
            stable_since = Instant::now();
        }
        // Done when nothing new appeared for a while, or at the limit.
        let limit_from = last_load.unwrap_or(start);
        if start.elapsed() > DRIVE_WAIT_LOADING || limit_from.elapsed() > DRIVE_WAIT {
            return None;
        }
        let drivers_quiet = last_load.is_none_or(|at| at.elapsed() > DRIVERS_SETTLED);
        if seen > 0 && stable_since.elapsed() > DEVICES_SETTLED && drivers_quiet {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file system berth can read a config drive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveFs {
    /// ISO 9660 (`mount -t iso9660`).
    Iso9660,
    /// FAT (`mount -t vfat`).
    Vfat,
}

impl DriveFs {
    /// The kernel's name for it.
    pub fn kernel_name(self) -> &'static str {
        match self {
            DriveFs::Iso9660 => "iso9660",
            DriveFs::Vfat => "vfat",
        }
    }
}

/// The file system and volume label of a device, from its first 64 KiB (`None`: neither ISO
/// 9660 nor FAT).
pub fn volume_label(head: &[u8]) -> Option<(DriveFs, String)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_string();
    if head.get(0x8001..0x8006) == Some(b"CD001") {
        return Some((DriveFs::Iso9660, text(head.get(0x8028..0x8048)?)));
    }
    if head.get(510..512) == Some(&[0x55, 0xAA]) {
        // FAT32 keeps its label at 0x47 ("FAT32   " at 0x52); FAT12/16 at 0x2B ("FAT1" at 0x36).
        if head.get(0x52..0x57) == Some(b"FAT32") {
            return Some((DriveFs::Vfat, text(head.get(0x47..0x52)?)));
        }
        if head.get(0x36..0x39) == Some(b"FAT") {
            return Some((DriveFs::Vfat, text(head.get(0x2B..0x36)?)));
        }
    }
    None
}

/// Whether a label names a NoCloud drive (`cidata`, any case, as cloud-init accepts).
pub fn is_cidata(label: &str) -> bool {
    label.eq_ignore_ascii_case("cidata")
}

/// What `meta-data` says (a YAML mapping, of which only `key: value` lines are read, or a JSON
/// object, as KubeVirt writes it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData {
    /// `local-hostname` (or `hostname`).
    pub hostname: Option<String>,
    /// `instance-id`.
    pub instance_id: Option<String>,
}

/// Reads the keys berth uses from `meta-data`.
pub fn parse_meta_data(text: &str) -> MetaData {
    let mut m = MetaData::default();
    if text.trim_start().starts_with('{') {
        // JSON (KubeVirt's cloudInitNoCloud: `{"instance-id": …, "local-hostname": …}`).
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) else { return m };
        let text_of =
            |key: &str| map.get(key).and_then(|v| v.as_str()).filter(|v| !v.is_empty()).map(str::to_string);
        m.hostname = text_of("local-hostname").or_else(|| text_of("hostname"));
        m.instance_id = text_of("instance-id");
        return m;
    }
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().trim_matches(['"', '\'']).to_string();
        if value.is_empty() || line.starts_with([' ', '\t', '#']) {
            continue;
        }
        match key.trim() {
            "local-hostname" | "hostname" => m.hostname = Some(value),
            "instance-id" => m.instance_id = Some(value),
            _ => {}
        }
    }
    m
}

/// The fragments of a drive, in the order they apply: `meta-data`'s hostname, then
/// `user-data` (berth TOML; cloud-config YAML is refused with a clear error).
pub fn fragments(meta_data: Option<&str>, user_data: Option<&str>) -> Vec<Result<Override, String>> {
    let mut out = Vec::new();
    if let Some(host) = meta_data.map(parse_meta_data).and_then(|m| m.hostname) {
        out.push(Override::hostname(&host, "config drive meta-data local-hostname"));
    }
    if let Some(text) = user_data.filter(|t| !t.trim().is_empty()) {
        if text.trim_start().starts_with("#cloud-config") {
            out.push(Err("config drive user-data: this is cloud-init YAML (#cloud-config); berth reads a TOML fragment there".to_string()));
        } else {
            out.push(Override::parse(text, "config drive user-data"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let mut iso = vec![0u8; 0x9000];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8028..0x8048].copy_from_slice(b"CIDATA                          ");
        assert_eq!(volume_label(&iso), Some((DriveFs::Iso9660, "CIDATA".to_string())));
        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xAA;
        fat[0x36..0x3E].copy_from_slice(b"FAT16   ");
        fat[0x2B..0x36].copy_from_slice(b"cidata     ");
        let (fs, label) = volume_label(&fat).unwrap();
        assert_eq!(fs, DriveFs::Vfat);
        assert!(is_cidata(&label));
        assert_eq!(volume_label(&[0u8; 100]), None);
    }

    #[test]
    fn meta_and_user_data() {
        let m = parse_meta_data("instance-id: iid-01\nlocal-hostname: edge-9\n");
        assert_eq!(m.hostname.as_deref(), Some("edge-9"));
        assert_eq!(m.instance_id.as_deref(), Some("iid-01"));
        // KubeVirt writes JSON.
        let m = parse_meta_data(r#"{"instance-id":"berth-vm.default","local-hostname":"berth-vm"}"#);
        assert_eq!(m.hostname.as_deref(), Some("berth-vm"));
        assert_eq!(m.instance_id.as_deref(), Some("berth-vm.default"));
        assert_eq!(parse_meta_data("{not json"), MetaData::default());
        let f = fragments(Some("local-hostname: a\n"), Some("[system]\nhostname = \"b\"\n"));
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|r| r.is_ok()));
        let f = fragments(None, Some("#cloud-config\nhostname: x\n"));
        assert!(f[0].as_ref().unwrap_err().contains("cloud-init YAML"));
        let f = fragments(None, Some("[system\n"));
        assert!(f[0].as_ref().unwrap_err().starts_with("config drive user-data:1:"));
    }
}
