//! Hetzner Cloud: `GET /hetzner/v1/metadata` (a YAML document: `hostname`, `instance-id`,
//! `public-keys`, addresses) and `GET /hetzner/v1/userdata` (204 or empty: none).

use std::collections::BTreeMap;

use berth_schema::metadata::{short_hostname, Metadata, Provider};
use yaml_rust2::{Yaml, YamlLoader};

use crate::http::{required_text, transient, Http};

/// Reads the server's metadata from `base` (`http://169.254.169.254`).
pub fn fetch(http: &Http, base: &str) -> Result<Metadata, String> {
    let url = format!("{base}/hetzner/v1/metadata");
    let yaml = required_text(&url, http.get(&url, &[], transient)?)?;
    let mut m = from_yaml(&yaml).map_err(|e| format!("{url}: {e}"))?;
    let url = format!("{base}/hetzner/v1/userdata");
    let reply = http.get(&url, &[], transient)?;
    m.user_data = match reply.status {
        204 | 404 => None,
        _ => Some(required_text(&url, reply)?).filter(|t| !t.is_empty()),
    };
    Ok(m)
}

fn from_yaml(text: &str) -> Result<Metadata, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let doc = docs.into_iter().next().ok_or("an empty document")?;
    let scalar = |key: &str| match &doc[key] {
        Yaml::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Yaml::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    let instance_id = scalar("instance-id").ok_or("no instance-id")?;
    let mut network = BTreeMap::new();
    for key in ["public-ipv4", "local-ipv4", "region", "availability-zone"] {
        if let Some(v) = scalar(key) {
            let name = if key == "availability-zone" { "zone" } else { key };
            network.insert(name.to_string(), v);
        }
    }
    let public_keys = match &doc["public-keys"] {
        Yaml::Array(keys) => keys.iter().filter_map(Yaml::as_str).map(|k| k.trim().to_string()).collect(),
        _ => Vec::new(),
    };
    Ok(Metadata {
        provider: Some(Provider::Hetzner),
        instance_id: Some(instance_id),
        hostname: scalar("hostname").and_then(|h| short_hostname(&h)),
        public_keys,
        user_data: None,
        network,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn metadata_yaml() {
        let m = super::from_yaml(
            "availability-zone: hel1-dc2\nhostname: my-server\ninstance-id: 42\nlocal-ipv4: ''\n\
             network-config:\n  version: 1\npublic-ipv4: 1.2.3.4\npublic-keys:\n- ssh-ed25519 AAAA k\nregion: eu-central\n",
        )
        .unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("42"));
        assert_eq!(m.hostname.as_deref(), Some("my-server"));
        assert_eq!(m.public_keys, vec!["ssh-ed25519 AAAA k".to_string()]);
        assert_eq!(m.network.get("zone").map(String::as_str), Some("hel1-dc2"));
        assert!(!m.network.contains_key("local-ipv4"));
        assert!(super::from_yaml("hostname: x\n").unwrap_err().contains("instance-id"));
    }
}
