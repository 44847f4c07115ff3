//! OpenStack: the `config-2` config drive when the machine has one (no network needed), else
//! the metadata service. Both hold the same files: `openstack/latest/meta_data.json` (required:
//! `uuid`, `hostname`, `public_keys` as a name → key map), `user_data` (absent: 404) and
//! `network_data.json`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_init::config_drive::{volume_label, DriveFs};
use berth_schema::metadata::{short_hostname, Metadata, Provider};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::http::{optional_text, transient, Http};

/// The config drive's volume label (Nova writes it in lower case; cloud-init also takes upper).
const DRIVE_LABEL: &str = "config-2";
/// Where the drive is mounted while it is read.
const DRIVE_MOUNT: &str = "/run/berth/config-2";

/// The files the metadata is read from.
struct Files {
    meta_data: String,
    user_data: Option<String>,
    network_data: Option<String>,
}

/// Reads the metadata: from the config drive when there is one, else from the service at
/// `base` (`http://169.254.169.254`). Returns where it came from too.
pub fn fetch(http: &Http, base: &str) -> Result<(Metadata, String), String> {
    if let Some((dev, fs)) = find_drive() {
        let files = read_drive(&dev, fs)?;
        return Ok((from_files(&files).map_err(|e| format!("{dev}: {e}"))?, format!("config drive {dev}")));
    }
    let get = |name: &str| -> Result<Option<String>, String> {
        let url = format!("{base}/openstack/latest/{name}");
        optional_text(&url, http.get(&url, &[], transient)?)
    };
    let meta_data = get("meta_data.json")?
        .ok_or_else(|| format!("{base}/openstack/latest/meta_data.json answered 404"))?;
    let files = Files { meta_data, user_data: get("user_data")?, network_data: get("network_data.json")? };
    Ok((from_files(&files)?, format!("{base}/openstack")))
}

/// How long the block devices must stay the same before the drive is taken to be absent
/// (PID 1 loaded the drivers at boot; SCSI scans asynchronously).
const DEVICES_SETTLED: Duration = Duration::from_millis(500);
/// The longest the devices are watched.
const DRIVE_WAIT: Duration = Duration::from_secs(3);

/// A block device labelled `config-2`, and its file system; looked for until the set of block
/// devices has settled.
fn find_drive() -> Option<(String, DriveFs)> {
    let start = Instant::now();
    let mut names: Vec<String> = Vec::new();
    let mut changed = Instant::now();
    loop {
        let now: Vec<String> = std::fs::read_dir("/sys/class/block")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        if now != names {
            names = now;
            changed = Instant::now();
            if let Some(found) = labelled_drive(&names) {
                return Some(found);
            }
        }
        if changed.elapsed() >= DEVICES_SETTLED || start.elapsed() >= DRIVE_WAIT {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first of the block devices `names` labelled `config-2`.
fn labelled_drive(names: &[String]) -> Option<(String, DriveFs)> {
    for name in names {
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let dev = format!("/dev/{name}");
        let mut head = vec![0u8; 64 * 1024];
        let Ok(mut f) = std::fs::File::open(&dev) else { continue };
        let n = f.read(&mut head).unwrap_or(0);
        head.truncate(n);
        if let Some((fs, label)) = volume_label(&head) {
            if label.eq_ignore_ascii_case(DRIVE_LABEL) {
                return Some((dev, fs));
            }
        }
    }
    None
}

fn read_drive(dev: &str, fs: DriveFs) -> Result<Files, String> {
    std::fs::create_dir_all(DRIVE_MOUNT).map_err(|e| format!("{DRIVE_MOUNT}: {e}"))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some(dev), DRIVE_MOUNT, Some(fs.kernel_name()), flags, None::<&str>)
        .map_err(|e| format!("mount the config drive {dev} ({}): {e}", fs.kernel_name()))?;
    let read =
        |name: &str| std::fs::read_to_string(Path::new(DRIVE_MOUNT).join("openstack/latest").join(name));
    let meta_data = read("meta_data.json");
    let files = meta_data.map(|meta_data| Files {
        meta_data,
        user_data: read("user_data").ok(),
        network_data: read("network_data.json").ok(),
    });
    let _ = umount2(DRIVE_MOUNT, MntFlags::MNT_DETACH);
    files.map_err(|e| format!("{dev}: openstack/latest/meta_data.json: {e}"))
}

fn from_files(files: &Files) -> Result<Metadata, String> {
    let meta: serde_json::Value =
        serde_json::from_str(&files.meta_data).map_err(|e| format!("meta_data.json is not JSON: {e}"))?;
    let text =
        |v: &serde_json::Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let instance_id = text(&meta["uuid"]).ok_or("meta_data.json has no uuid")?;
    let mut public_keys: Vec<String> = meta["public_keys"]
        .as_object()
        .map(|keys| keys.values().filter_map(text).collect())
        .unwrap_or_default();
    if public_keys.is_empty() {
        public_keys = meta["keys"]
            .as_array()
            .map(|keys| keys.iter().filter_map(|k| text(&k["data"])).collect())
            .unwrap_or_default();
    }
    let mut network = BTreeMap::new();
    if let Some(zone) = text(&meta["availability_zone"]) {
        network.insert("zone".to_string(), zone);
    }
    if let Some(net) =
        files.network_data.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
    {
        if let Some(mac) = text(&net["links"][0]["ethernet_mac_address"]) {
            network.insert("mac".to_string(), mac);
        }
        let v4 = net["networks"].as_array().and_then(|n| n.iter().find(|n| n["type"] == "ipv4"));
        if let Some(ip) = v4.and_then(|n| text(&n["ip_address"])) {
            network.insert("local-ipv4".to_string(), ip);
        }
    }
    Ok(Metadata {
        provider: Some(Provider::Openstack),
        instance_id: Some(instance_id),
        hostname: text(&meta["hostname"]).and_then(|h| short_hostname(&h)),
        public_keys,
        user_data: files.user_data.clone(),
        network,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_and_network_data() {
        let files = Files {
            meta_data: r#"{"uuid":"b3c7f4de","hostname":"web.novalocal","availability_zone":"nova",
                "public_keys":{"mykey":"ssh-rsa AAAA Generated by Nova\n"}}"#
                .into(),
            user_data: Some("[system]\n".into()),
            network_data: Some(
                r#"{"links":[{"id":"l","ethernet_mac_address":"fa:16:3e:00:00:01"}],
                "networks":[{"type":"ipv4","ip_address":"10.1.0.5","link":"l"}]}"#
                    .into(),
            ),
        };
        let m = from_files(&files).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("web"));
        assert_eq!(m.instance_id.as_deref(), Some("b3c7f4de"));
        assert_eq!(m.public_keys, vec!["ssh-rsa AAAA Generated by Nova".to_string()]);
        assert_eq!(m.network.get("local-ipv4").map(String::as_str), Some("10.1.0.5"));
        let bad = Files { meta_data: "{}".into(), user_data: None, network_data: None };
        assert!(from_files(&bad).unwrap_err().contains("uuid"));
    }
}
