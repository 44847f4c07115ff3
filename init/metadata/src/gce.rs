//! Google Compute Engine's metadata server: every request carries `Metadata-Flavor: Google`,
//! and every answer must carry it back (anything else is not GCE's server). Absent attributes
//! are 404.
//!
//! SSH keys follow GCE's scoping: the instance's legacy `sshKeys` alone when it is set;
//! otherwise the instance's `ssh-keys`, then the project's (`ssh-keys`, `sshKeys`) unless the
//! instance sets `block-project-ssh-keys`; each line is `user:key`.

use std::collections::BTreeMap;

use base64::Engine;
use berth_schema::metadata::{short_hostname, Metadata, Provider};

use crate::http::{optional_text, transient, Http};

/// Reads the instance's metadata from `base` (`http://169.254.169.254`).
pub fn fetch(http: &Http, base: &str) -> Result<Metadata, String> {
    let get = |path: &str| -> Result<Option<String>, String> {
        let url = format!("{base}/computeMetadata/v1/{path}");
        let reply = http.get(&url, &[("Metadata-Flavor", "Google")], transient)?;
        if reply.header("Metadata-Flavor") != Some("Google") {
            return Err(format!(
                "{url} answered without `Metadata-Flavor: Google`: not GCE's metadata server"
            ));
        }
        optional_text(&url, reply)
    };
    let instance_id = get("instance/id")?
        .ok_or_else(|| format!("{base}/computeMetadata/v1/instance/id answered 404"))?
        .trim()
        .to_string();
    let hostname = get("instance/hostname")?.and_then(|h| short_hostname(&h));
    let mut user_data = get("instance/attributes/user-data")?;
    if get("instance/attributes/user-data-encoding")?.is_some_and(|e| e.trim() == "base64") {
        let encoded = user_data.unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.split_whitespace().collect::<String>())
            .map_err(|e| format!("instance/attributes/user-data: user-data-encoding is base64, but: {e}"))?;
        user_data = Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    let mut lines = Vec::new();
    // The instance's legacy `sshKeys` replaces every other list (as cloud-init and afterburn
    // read it); otherwise its `ssh-keys`, then the project's unless they are blocked.
    let legacy = get("instance/attributes/sshKeys")?.filter(|k| !k.trim().is_empty());
    let only_legacy = legacy.is_some();
    lines.extend(legacy);
    if !only_legacy {
        lines.extend(get("instance/attributes/ssh-keys")?);
    }
    let blocked =
        only_legacy || get("instance/attributes/block-project-ssh-keys")?.is_some_and(|v| v.trim() == "true");
    if !blocked {
        for attr in ["ssh-keys", "sshKeys"] {
            lines.extend(get(&format!("project/attributes/{attr}"))?);
        }
    }
    let public_keys = lines.iter().flat_map(|l| l.lines()).filter_map(key_of_line).collect();
    let mut network = BTreeMap::new();
    for (key, path) in [
        ("local-ipv4", "instance/network-interfaces/0/ip"),
        ("public-ipv4", "instance/network-interfaces/0/access-configs/0/external-ip"),
        ("mac", "instance/network-interfaces/0/mac"),
        ("zone", "instance/zone"),
    ] {
        if let Some(v) = get(path)? {
            // The zone is `projects/NUMBER/zones/ZONE`.
            let v = v.trim().rsplit('/').next().unwrap_or_default().to_string();
            if !v.is_empty() {
                network.insert(key.to_string(), v);
            }
        }
    }
    Ok(Metadata {
        provider: Some(Provider::Gce),
        instance_id: Some(instance_id),
        hostname,
        public_keys,
        user_data,
        network,
        ..Default::default()
    })
}

/// The key of one `user:ssh-ed25519 AAAA… comment` line.
fn key_of_line(line: &str) -> Option<String> {
    let line = line.trim();
    let (_, key) = line.split_once(':')?;
    let key = key.trim();
    (!key.is_empty()).then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_lines() {
        assert_eq!(
            super::key_of_line("alice:ssh-ed25519 AAAA alice@x"),
            Some("ssh-ed25519 AAAA alice@x".into())
        );
        assert_eq!(super::key_of_line("no-user-part"), None);
        assert_eq!(super::key_of_line(""), None);
    }
}
