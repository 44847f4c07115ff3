//! The OCI image configuration (the JSON a manifest's `config` descriptor points to). Its
//! process defaults and their merge with a berth config's overrides live in the init library
//! (`berth_schema::process`), shared with PID 1.

use serde::{Deserialize, Serialize};

pub use berth_schema::process::{merge_process, null_default, ImageConfig, MergedProcess, DEFAULT_PATH};

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// sha256 of each layer's uncompressed tar, bottom first.
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

/// The parts of an OCI (or Docker) image configuration file berth reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ConfigFile {
    /// CPU architecture (`amd64`), if given.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Operating system (`linux`), if given.
    #[serde(default)]
    pub os: Option<String>,
    /// Process defaults.
    #[serde(default, deserialize_with = "null_default")]
    pub config: ImageConfig,
    /// The layers' diff ids.
    #[serde(default)]
    pub rootfs: RootFs,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn config_json_is_null_tolerant() {
        let c: ConfigFile = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":null,"Cmd":["sh"],"Env":null,"WorkingDir":"","User":null,"Labels":{"a":"b"}},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.config.cmd, v(&["sh"]));
        assert!(c.config.entrypoint.is_empty());
        let c: ConfigFile = serde_json::from_str(r#"{"config":null}"#).unwrap();
        assert_eq!(c.config, ImageConfig::default());
        let c: ConfigFile = serde_json::from_str(r#"{}"#).unwrap();
        assert!(c.rootfs.diff_ids.is_empty());
    }
}
