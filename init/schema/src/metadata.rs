//! Cloud metadata as a configuration source (`[system] metadata`): which provider a machine is
//! on (from its DMI/SMBIOS strings, never by probing addresses), and what the metadata helper
//! (`berth-metadata`, a child of PID 1) hands back. Pure: PID 1 reads the DMI files and runs the
//! helper; the builder packs the helper when the setting is on.
//!
//! Detection follows what cloud-init's `ds-identify` and systemd's `virt.c` match (see
//! docs/metadata.md): EC2 by `product_uuid` starting with `ec2` (or byte-swapped, or
//! `sys_vendor` "Amazon EC2"), GCE by `product_name` "Google Compute Engine"/"Google" or a
//! `GoogleCloud-` serial, Azure by its chassis asset tag, OpenStack by `product_name` or
//! asset tag, DigitalOcean and Hetzner by `sys_vendor`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A metadata provider berth speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon EC2's instance metadata service, version 2 (session tokens).
    Ec2,
    /// Google Compute Engine's metadata server (`Metadata-Flavor: Google`).
    Gce,
    /// Azure's instance metadata service, and the wireserver's provisioning report.
    Azure,
    /// OpenStack: a `config-2` config drive, else the metadata service.
    Openstack,
    /// DigitalOcean's droplet metadata (`/metadata/v1.json`).
    Digitalocean,
    /// Hetzner Cloud's metadata (`/hetzner/v1/`).
    Hetzner,
}

impl Provider {
    /// Every provider, in the order `"auto"` tries to recognise them.
    pub const ALL: [Provider; 6] = [
        Provider::Ec2,
        Provider::Gce,
        Provider::Azure,
        Provider::Openstack,
        Provider::Digitalocean,
        Provider::Hetzner,
    ];

    /// The name used in the config and in events.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Ec2 => "ec2",
            Provider::Gce => "gce",
            Provider::Azure => "azure",
            Provider::Openstack => "openstack",
            Provider::Digitalocean => "digitalocean",
            Provider::Hetzner => "hetzner",
        }
    }

    /// The provider of that name.
    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the machine's DMI strings say it runs on this provider.
    pub fn matches(self, dmi: &Dmi) -> bool {
        match self {
            Provider::Ec2 => {
                let uuid = dmi.product_uuid.to_ascii_lowercase();
                // Same-endian `ec2…`, or the first group byte-swapped (`…2?ec`, e.g. 45E12AEC).
                let swapped = uuid.get(..8).is_some_and(|g| g.ends_with("ec") && g.as_bytes()[4] == b'2');
                uuid.starts_with("ec2")
                    || swapped
                    || dmi.hypervisor_uuid.to_ascii_lowercase().starts_with("ec2")
                    || dmi.sys_vendor == "Amazon EC2"
            }
            Provider::Gce => {
                matches!(dmi.product_name.as_str(), "Google Compute Engine" | "Google")
                    || dmi.product_serial.starts_with("GoogleCloud-")
            }
            Provider::Azure => dmi.chassis_asset_tag == AZURE_ASSET_TAG,
            Provider::Openstack => {
                OPENSTACK_PRODUCTS.contains(&dmi.product_name.as_str())
                    || OPENSTACK_ASSET_TAGS.contains(&dmi.chassis_asset_tag.as_str())
            }
            Provider::Digitalocean => dmi.sys_vendor == "DigitalOcean",
            Provider::Hetzner => dmi.sys_vendor == "Hetzner",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The chassis asset tag of every Azure VM (cloud-init's `identity.py`).
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";
/// `product_name`s of OpenStack Nova guests.
const OPENSTACK_PRODUCTS: [&str; 2] = ["OpenStack Nova", "OpenStack Compute"];
/// Chassis asset tags of OpenStack clouds (cloud-init's `ds-identify`).
const OPENSTACK_ASSET_TAGS: [&str; 6] = [
    "OpenStack Nova",
    "OpenStack Compute",
    "OpenTelekomCloud",
    "SAP CCloud VM",
    "HUAWEICLOUD",
    "Samsung Cloud Platform",
];

/// The DMI/SMBIOS strings detection reads (`/sys/class/dmi/id/*`, trimmed; empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    /// `sys_vendor` (SMBIOS type 1 manufacturer).
    pub sys_vendor: String,
    /// `product_name` (type 1 product).
    pub product_name: String,
    /// `product_serial` (type 1 serial; root-only).
    pub product_serial: String,
    /// `product_uuid` (type 1 UUID; root-only).
    pub product_uuid: String,
    /// `chassis_asset_tag` (type 3 asset tag).
    pub chassis_asset_tag: String,
    /// `/sys/hypervisor/uuid` (Xen guests).
    pub hypervisor_uuid: String,
}

/// Gives the field of [`Dmi`] one file fills.
pub type DmiField = fn(&mut Dmi) -> &mut String;

impl Dmi {
    /// The DMI files PID 1 reads, and the field each fills.
    pub const FILES: [(&'static str, DmiField); 6] = [
        ("/sys/class/dmi/id/sys_vendor", |d| &mut d.sys_vendor),
        ("/sys/class/dmi/id/product_name", |d| &mut d.product_name),
        ("/sys/class/dmi/id/product_serial", |d| &mut d.product_serial),
        ("/sys/class/dmi/id/product_uuid", |d| &mut d.product_uuid),
        ("/sys/class/dmi/id/chassis_asset_tag", |d| &mut d.chassis_asset_tag),
        ("/sys/hypervisor/uuid", |d| &mut d.hypervisor_uuid),
    ];
}

/// `[system] metadata`: off (the default), `"auto"`, or the providers to look for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MetadataSetting {
    /// No cloud metadata is read.
    #[default]
    Off,
    /// The provider the DMI strings name, if any.
    Auto,
    /// One of these: the one the DMI strings name; a single one is used without looking.
    Providers(Vec<Provider>),
}

impl MetadataSetting {
    /// Whether metadata is read at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, MetadataSetting::Off)
    }

    /// Whether this setting may pick `p`.
    pub fn allows(&self, p: Provider) -> bool {
        match self {
            MetadataSetting::Off => false,
            MetadataSetting::Auto => true,
            MetadataSetting::Providers(list) => list.contains(&p),
        }
    }

    /// The provider to ask on a machine with these DMI strings; `None`: boot without metadata.
    pub fn choose(&self, dmi: &Dmi) -> Option<Provider> {
        match self {
            MetadataSetting::Off => None,
            MetadataSetting::Providers(list) if list.len() == 1 => Some(list[0]),
            MetadataSetting::Auto => Provider::ALL.into_iter().find(|p| p.matches(dmi)),
            MetadataSetting::Providers(list) => list.iter().copied().find(|p| p.matches(dmi)),
        }
    }
}

impl Serialize for MetadataSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MetadataSetting::Auto => s.serialize_str("auto"),
            MetadataSetting::Off => Vec::<Provider>::new().serialize(s),
            MetadataSetting::Providers(list) => list.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for MetadataSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            List(Vec<String>),
        }
        let known = || Provider::ALL.map(Provider::name).join("\", \"");
        let parse = |name: &str| {
            Provider::from_name(name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{name}` is not a metadata provider; use \"auto\" or a list of \"{}\"",
                    known()
                ))
            })
        };
        match Raw::deserialize(d)? {
            Raw::One(s) if s == "auto" => Ok(MetadataSetting::Auto),
            Raw::One(s) => Err(serde::de::Error::custom(format!(
                "`{s}`: write \"auto\" or a list, e.g. [\"{s}\"] (providers: \"{}\")",
                known()
            ))),
            Raw::List(names) if names.is_empty() => Ok(MetadataSetting::Off),
            Raw::List(names) => {
                let mut list = Vec::new();
                for n in &names {
                    let p = parse(n)?;
                    if !list.contains(&p) {
                        list.push(p);
                    }
                }
                Ok(MetadataSetting::Providers(list))
            }
        }
    }
}

/// What the metadata helper found, written as one JSON document on its standard output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Which provider answered.
    pub provider: Option<Provider>,
    /// Where it was read (`http://169.254.169.254`, `config drive /dev/sr0`).
    #[serde(default)]
    pub source: String,
    /// The instance's id at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The hostname the provider gives, as a single label or a name berth can set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// SSH public keys, one per entry (`ssh-ed25519 AAAA… comment`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    /// The user-data (for berth, a TOML fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Network facts the provider states (`local-ipv4`, `public-ipv4`, `mac`, `region`, `zone`,
    /// …), exposed to containers as files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network: BTreeMap<String, String>,
}

/// The hostname berth can set from a provider's (`host.example.internal` → `host`): the first
/// label, as cloud-init does; `None` when that is empty.
pub fn short_hostname(name: &str) -> Option<String> {
    let first = name.trim().split('.').next().unwrap_or_default().to_ascii_lowercase();
    (!first.is_empty()).then_some(first)
}

/// The helper's file name under the plan's tools directory (`/berth/tools/berth-metadata`).
pub const HELPER: &str = "berth-metadata";

/// What PID 1 tells the helper once it has applied the metadata: the Azure helper reports it
/// to the wireserver (`Ready`, or `NotReady` with the reason).
pub const VERDICT_READY: &str = "ready";

#[cfg(test)]
mod tests {
    use super::*;

    fn dmi(f: impl FnOnce(&mut Dmi)) -> Dmi {
        let mut d = Dmi::default();
        f(&mut d);
        d
    }

    #[test]
    fn detection_by_dmi_strings() {
        let cases = [
            (dmi(|d| d.product_uuid = "EC2E1916-9099-7CAF-FD21-012345ABCDEF".into()), Some(Provider::Ec2)),
            (dmi(|d| d.product_uuid = "45E12AEC-DCD1-B213-94ED-012345ABCDEF".into()), Some(Provider::Ec2)),
            (dmi(|d| d.sys_vendor = "Amazon EC2".into()), Some(Provider::Ec2)),
            (dmi(|d| d.hypervisor_uuid = "ec2a1b2c-0000".into()), Some(Provider::Ec2)),
            (dmi(|d| d.product_name = "Google Compute Engine".into()), Some(Provider::Gce)),
            (dmi(|d| d.product_serial = "GoogleCloud-ABC".into()), Some(Provider::Gce)),
            (dmi(|d| d.chassis_asset_tag = AZURE_ASSET_TAG.into()), Some(Provider::Azure)),
            (dmi(|d| d.product_name = "OpenStack Nova".into()), Some(Provider::Openstack)),
            (dmi(|d| d.chassis_asset_tag = "HUAWEICLOUD".into()), Some(Provider::Openstack)),
            (dmi(|d| d.sys_vendor = "DigitalOcean".into()), Some(Provider::Digitalocean)),
            (dmi(|d| d.sys_vendor = "Hetzner".into()), Some(Provider::Hetzner)),
            // QEMU's own strings, and a UUID that merely contains "ec2".
            (dmi(|d| d.sys_vendor = "QEMU".into()), None),
            (dmi(|d| d.product_uuid = "12345678-ec20-0000-0000-000000000000".into()), None),
            (Dmi::default(), None),
        ];
        for (d, want) in cases {
            assert_eq!(MetadataSetting::Auto.choose(&d), want, "{d:?}");
        }
    }

    #[test]
    fn an_explicit_list_picks_what_the_dmi_names_a_single_provider_is_taken_as_is() {
        let gce = dmi(|d| d.product_name = "Google".into());
        let list = MetadataSetting::Providers(vec![Provider::Ec2, Provider::Gce]);
        assert_eq!(list.choose(&gce), Some(Provider::Gce));
        assert_eq!(list.choose(&Dmi::default()), None);
        // A GCE machine with only EC2 allowed: nothing.
        assert_eq!(MetadataSetting::Providers(vec![Provider::Ec2, Provider::Azure]).choose(&gce), None);
        assert_eq!(
            MetadataSetting::Providers(vec![Provider::Hetzner]).choose(&Dmi::default()),
            Some(Provider::Hetzner)
        );
        assert_eq!(MetadataSetting::Off.choose(&gce), None);
    }

    #[derive(Debug, Deserialize)]
    struct T {
        metadata: MetadataSetting,
    }

    #[test]
    fn the_setting_reads_auto_or_a_list_and_names_a_bad_value() {
        let read = |t: &str| toml::from_str::<T>(t).map(|t| t.metadata).map_err(|e| e.to_string());
        assert_eq!(read("metadata = \"auto\""), Ok(MetadataSetting::Auto));
        assert_eq!(read("metadata = []"), Ok(MetadataSetting::Off));
        assert_eq!(
            read("metadata = [\"ec2\", \"gce\", \"ec2\"]"),
            Ok(MetadataSetting::Providers(vec![Provider::Ec2, Provider::Gce]))
        );
        let e = read("metadata = [\"aws\"]").unwrap_err();
        assert!(e.contains("`aws` is not a metadata provider") && e.contains("\"ec2\""), "{e}");
        let e = read("metadata = \"ec2\"").unwrap_err();
        assert!(e.contains("[\"ec2\"]"), "{e}");
        let json = serde_json::to_string(&MetadataSetting::Providers(vec![Provider::Azure])).unwrap();
        assert_eq!(json, "[\"azure\"]");
        assert_eq!(serde_json::from_str::<MetadataSetting>("\"auto\"").unwrap(), MetadataSetting::Auto);
    }

    #[test]
    fn hostnames_keep_the_first_label() {
        assert_eq!(short_hostname("web-1.c.proj.internal"), Some("web-1".into()));
        assert_eq!(short_hostname("Host"), Some("host".into()));
        assert_eq!(short_hostname(".x"), None);
    }
}
