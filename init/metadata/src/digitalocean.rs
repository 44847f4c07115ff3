//! DigitalOcean: one JSON document, `GET /metadata/v1.json`, no headers.

use std::collections::BTreeMap;

use berth_schema::metadata::{short_hostname, Metadata, Provider};

use crate::http::{required_text, transient, Http};

/// Reads the droplet's metadata from `base` (`http://169.254.169.254`).
pub fn fetch(http: &Http, base: &str) -> Result<Metadata, String> {
    let url = format!("{base}/metadata/v1.json");
    let text = required_text(&url, http.get(&url, &[], transient)?)?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    from_document(&doc).map_err(|e| format!("{url}: {e}"))
}

fn from_document(doc: &serde_json::Value) -> Result<Metadata, String> {
    let text =
        |v: &serde_json::Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let id = doc["droplet_id"].as_u64().ok_or("no droplet_id")?;
    let mut network = BTreeMap::new();
    let public = &doc["interfaces"]["public"][0];
    for (key, value) in [
        ("public-ipv4", &public["ipv4"]["ip_address"]),
        ("mac", &public["mac"]),
        ("local-ipv4", &doc["interfaces"]["private"][0]["ipv4"]["ip_address"]),
        ("region", &doc["region"]),
    ] {
        if let Some(v) = text(value) {
            network.insert(key.to_string(), v);
        }
    }
    Ok(Metadata {
        provider: Some(Provider::Digitalocean),
        instance_id: Some(id.to_string()),
        hostname: text(&doc["hostname"]).and_then(|h| short_hostname(&h)),
        public_keys: doc["public_keys"]
            .as_array()
            .map(|k| k.iter().filter_map(text).collect())
            .unwrap_or_default(),
        user_data: doc["user_data"].as_str().map(str::to_string),
        network,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn droplet_document() {
        let doc = serde_json::json!({"droplet_id": 2756294, "hostname": "drop", "region": "nyc3",
            "public_keys": ["ssh-ed25519 AAAA k"], "user_data": "[system]\n",
            "interfaces": {"public": [{"mac": "d2:00:00:00:00:01", "ipv4": {"ip_address": "1.2.3.4"}}]}});
        let m = super::from_document(&doc).unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("2756294"));
        assert_eq!(m.network.get("public-ipv4").map(String::as_str), Some("1.2.3.4"));
        assert!(super::from_document(&serde_json::json!({})).is_err());
    }
}
