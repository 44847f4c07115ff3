//! Configuration delivered at boot, merged over the image's own: TOML fragments from the
//! kernel command line (`berth.config=BASE64`, plus `berth.hostname=NAME`) and QEMU's fw_cfg
//! (`opt/berth/config`).
//!
//! Merge rules (docs/config.md): sources apply in order — fw_cfg, then the kernel command
//! line — each over the result of the previous; in a fragment, every key that is present
//! replaces the image's value, except the tables `[system] sysctl` and `[network] hosts`, which
//! merge by key. `[[onboot]]`, `[[service]]` and `[[onshutdown]]` containers are planned on the
//! packed images and merged by name (see `extra_containers`). `[storage]` keys replace the
//! image's one by one, only in an image built with `[storage]` (the formatter and the disk
//! drivers are packed only then). A fragment that does not parse or validate is reported
//! (naming its source, line and column) and ignored as a whole: the boot goes on with what was
//! in force.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{
    de_sysctl, duration_text, extra_containers, line_col, validate_hostname, ContainerConfig, ContainerLists,
    DiskSelector, InterfaceConfig, StorageConfig, WhenDone,
};
use crate::plan::Plan;
use crate::syslog::SyslogTarget;

/// A boot-time fragment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// `[system]` keys.
    #[serde(default)]
    pub system: SystemOverride,
    /// `[network]` keys.
    #[serde(default)]
    pub network: NetworkOverride,
    /// `[log]` keys.
    #[serde(default)]
    pub log: LogOverride,
    /// `[storage]` keys, over the image's `[storage]`.
    pub storage: Option<StorageOverride>,
    /// `[[onboot]]` containers: each replaces the image's of the same name, or is appended.
    #[serde(default)]
    pub onboot: Vec<ContainerConfig>,
    /// `[[service]]` containers: each replaces the image's of the same name, or is appended.
    #[serde(default)]
    pub service: Vec<ContainerConfig>,
    /// `[[onshutdown]]` containers: each replaces the image's of the same name, or is appended.
    #[serde(default)]
    pub onshutdown: Vec<ContainerConfig>,
    /// Where the fragment comes from, to locate errors found when it is applied.
    #[serde(skip)]
    origin: Origin,
}

/// A fragment's source name and text.
#[derive(Debug, Clone, Default)]
struct Origin {
    source: String,
    text: String,
}

impl Origin {
    /// `SOURCE:LINE:COLUMN: message`, or `SOURCE: message` without an offset.
    fn locate(&self, offset: Option<usize>, message: &str) -> String {
        match offset {
            Some(o) => {
                let (line, col) = line_col(&self.text, o);
                format!("{}:{line}:{col}: {message}", self.source)
            }
            None => format!("{}: {message}", self.source),
        }
    }
}

/// `[system]` in a fragment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SystemOverride {
    /// The machine's hostname.
    pub hostname: Option<String>,
    /// sysctls, merged by key over the image's.
    #[serde(default, deserialize_with = "de_sysctl")]
    pub sysctl: BTreeMap<String, String>,
    /// What to do when every container is done.
    pub when_done: Option<WhenDone>,
    /// The machine's stop timeout.
    #[serde(default, deserialize_with = "opt_duration")]
    pub stop_timeout: Option<Duration>,
}

fn opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_text::deserialize(d).map(Some)
}

/// `[network]` in a fragment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// DHCP on the first ethernet interface when none is declared.
    pub auto: Option<bool>,
    /// Replaces the image's interfaces.
    pub interface: Option<Vec<InterfaceConfig>>,
    /// Replaces the image's name servers.
    pub dns: Option<Vec<IpAddr>>,
    /// Replaces the image's search domains.
    pub search: Option<Vec<String>>,
    /// Extra `/etc/hosts` entries, merged by name.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
}

/// `[storage]` in a fragment: each key present replaces the image's.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageOverride {
    /// Which disk.
    pub disk: Option<DiskSelector>,
    /// Where it is mounted.
    pub mount: Option<String>,
    /// Format it when blank.
    pub format: Option<bool>,
    /// The label a formatted disk gets.
    pub label: Option<String>,
    /// Grow the filesystem when the disk grew.
    pub grow: Option<bool>,
    /// How long to wait for the disk.
    #[serde(default, deserialize_with = "opt_duration")]
    pub wait: Option<Duration>,
}

impl StorageOverride {
    /// The image's `[storage]` with these keys in place, checked like the image's own.
    fn over(&self, image: &StorageConfig) -> Result<StorageConfig, String> {
        let merged = StorageConfig {
            disk: self.disk.clone().unwrap_or_else(|| image.disk.clone()),
            mount: self.mount.clone().unwrap_or_else(|| image.mount.clone()),
            format: self.format.unwrap_or(image.format),
            label: self.label.clone().unwrap_or_else(|| image.label.clone()),
            grow: self.grow.unwrap_or(image.grow),
            wait: self.wait.unwrap_or(image.wait),
        };
        merged.validate()?;
        Ok(merged)
    }
}

/// `[log]` in a fragment.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogOverride {
    /// The remote syslog collector.
    pub syslog: Option<SyslogTarget>,
    /// Containers' output on the console.
    pub console: Option<bool>,
}

impl Override {
    /// Parses and checks a fragment; errors name `source`, the line and column. Its containers
    /// are checked against the plan when it is applied.
    pub fn parse(text: &str, source: &str) -> Result<Override, String> {
        let origin = Origin { source: source.to_string(), text: text.to_string() };
        let located = |offset: Option<usize>, message: &str| origin.locate(offset, message);
        let mut o: Override =
            toml::from_str(text).map_err(|e| located(e.span().map(|s| s.start), e.message().trim()))?;
        if let Some(h) = &o.system.hostname {
            validate_hostname(h).map_err(|m| located(None, &format!("[system] hostname: {m}")))?;
        }
        for key in o.system.sysctl.keys() {
            if key.is_empty() || key.contains('/') || key.contains("..") {
                return Err(located(None, &format!("[system] sysctl: `{key}` is not a sysctl name")));
            }
        }
        o.origin = origin;
        Ok(o)
    }

    /// An override of the hostname alone (`berth.hostname=`).
    pub fn hostname(name: &str, source: &str) -> Result<Override, String> {
        validate_hostname(name).map_err(|m| format!("{source}: {m}"))?;
        Ok(Override {
            system: SystemOverride { hostname: Some(name.to_string()), ..Default::default() },
            ..Default::default()
        })
    }

    /// Merges the fragment over `plan`; returns the keys it changed (for the event). An error
    /// (its containers do not fit the image) leaves `plan` unchanged.
    pub fn apply(&self, plan: &mut Plan) -> Result<Vec<String>, String> {
        let storage =
            match (&self.storage, &plan.storage) {
                (None, _) => None,
                (Some(_), None) => return Err(self.origin.locate(
                    self.section_offset("[storage]"),
                    "[storage]: the image was built without [storage], so it packs neither the formatter \
                     nor the disk drivers; build it with a [storage] section, then change its keys here",
                )),
                (Some(o), Some(image)) => Some(
                    o.over(image).map_err(|m| self.origin.locate(self.section_offset("[storage]"), &m))?,
                ),
            };
        let fragment = ContainerLists {
            onboot: &self.onboot,
            service: &self.service,
            onshutdown: &self.onshutdown,
            console: None,
        };
        let containers =
            extra_containers::merge(fragment, plan).map_err(|(at, m)| self.origin.locate(at, &m))?;
        let mut changed: Vec<String> = self.apply_settings(plan).into_iter().map(str::to_string).collect();
        if let Some(s) = storage {
            if plan.storage.as_ref() != Some(&s) {
                plan.storage = Some(s);
                changed.push("storage".to_string());
            }
        }
        changed.extend(containers);
        Ok(changed)
    }

    /// Refuses what a fragment read after the network is up cannot change (cloud metadata's
    /// user-data): `[network]` and `[storage]` are in force by then.
    pub fn check_after_network(&self) -> Result<(), String> {
        for (present, header) in
            [(self.network != NetworkOverride::default(), "[network]"), (self.storage.is_some(), "[storage]")]
        {
            if present {
                return Err(self.origin.locate(
                    self.section_offset(header),
                    &format!(
                        "{header}: cloud metadata is read once the network is up and the data disk mounted, so \
                         it cannot change {header}; put it in the image's config or on a config drive"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where a section header starts in the fragment's text, for errors.
    fn section_offset(&self, header: &str) -> Option<usize> {
        self.origin.text.find(header)
    }

    /// Merges `[system]`, `[network]` and `[log]`; returns the keys changed.
    fn apply_settings(&self, plan: &mut Plan) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let s = &self.system;
        if let Some(h) = &s.hostname {
            plan.system.hostname = h.clone();
            changed.push("system.hostname");
        }
        if !s.sysctl.is_empty() {
            plan.system.sysctl.extend(s.sysctl.clone());
            changed.push("system.sysctl");
        }
        if let Some(w) = s.when_done {
            plan.system.when_done = w;
            changed.push("system.when_done");
        }
        if let Some(t) = s.stop_timeout {
            plan.system.stop_timeout = t;
            changed.push("system.stop_timeout");
        }
        let n = &self.network;
        if let Some(a) = n.auto {
            plan.network.auto = a;
            changed.push("network.auto");
        }
        if let Some(i) = &n.interface {
            plan.network.interface = i.clone();
            changed.push("network.interface");
        }
        if let Some(d) = &n.dns {
            plan.network.dns = d.clone();
            changed.push("network.dns");
        }
        if let Some(d) = &n.search {
            plan.network.search = d.clone();
            changed.push("network.search");
        }
        if !n.hosts.is_empty() {
            plan.network.hosts.extend(n.hosts.clone());
            changed.push("network.hosts");
        }
        if let Some(t) = self.log.syslog {
            plan.log.syslog = Some(t);
            changed.push("log.syslog");
        }
        if let Some(c) = self.log.console {
            plan.log.console = c;
            changed.push("log.console");
        }
        changed
    }
}

/// The fragments on a kernel command line: `berth.config=BASE64` (a TOML fragment, standard
/// or URL-safe base64, padding optional) and `berth.hostname=NAME`, in that order.
pub fn from_cmdline(cmdline: &str) -> Vec<Result<Override, String>> {
    let mut out = Vec::new();
    for word in cmdline.split_whitespace() {
        if let Some(b64) = word.strip_prefix("berth.config=") {
            let source = "kernel command line berth.config";
            out.push(
                decode_base64(b64)
                    .ok_or_else(|| format!("{source}: not base64"))
                    .and_then(|bytes| {
                        String::from_utf8(bytes).map_err(|_| format!("{source}: not UTF-8 text"))
                    })
                    .and_then(|text| Override::parse(&text, source)),
            );
        }
    }
    for word in cmdline.split_whitespace() {
        if let Some(name) = word.strip_prefix("berth.hostname=") {
            out.push(Override::hostname(name, "kernel command line berth.hostname"));
        }
    }
    out
}

/// Standard or URL-safe base64, padding optional; `None` on anything else.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            // `bits` holds fewer than 8 + 6 bits and `count` < 8: after the shift one byte is left.
            #[allow(clippy::cast_possible_truncation)]
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::default()
    }

    #[test]
    fn merge_rules() {
        let mut p = plan();
        p.system.sysctl.insert("vm.swappiness".into(), "10".into());
        p.network.hosts.insert("a".into(), "10.0.0.1".parse().unwrap());
        let o = Override::parse(
            "[system]\nhostname = \"edge-7\"\nsysctl = { \"net.ipv4.ip_forward\" = 1 }\nstop_timeout = \"3s\"\n\n[network]\nhosts = { b = \"10.0.0.2\" }\ndns = [\"1.1.1.1\"]\n\n[log]\nsyslog = \"udp://10.0.2.2:514\"\n",
            "fw_cfg",
        )
        .unwrap();
        let changed = o.apply(&mut p).unwrap();
        assert_eq!(p.system.hostname, "edge-7");
        assert_eq!(p.system.sysctl.len(), 2, "sysctl merges by key");
        assert_eq!(p.system.stop_timeout, Duration::from_secs(3));
        assert_eq!(p.network.hosts.len(), 2, "hosts merge by key");
        assert_eq!(p.network.dns.len(), 1);
        assert!(p.log.syslog.is_some());
        assert!(changed.iter().any(|c| c == "system.hostname") && changed.iter().any(|c| c == "log.syslog"));
    }

    #[test]
    fn a_fragment_read_after_the_network_cannot_change_network_or_storage() {
        let ok = Override::parse(
            "[system]\nhostname = \"a\"\n[[service]]\nname = \"s\"\nimage = \"oci:x\"\n",
            "ud",
        )
        .unwrap();
        assert_eq!(ok.check_after_network(), Ok(()));
        let e = Override::parse(
            "[system]\nhostname = \"a\"\n\n[network]\ndns = [\"1.1.1.1\"]\n",
            "ec2 user-data",
        )
        .unwrap()
        .check_after_network()
        .unwrap_err();
        assert!(
            e.starts_with("ec2 user-data:4:1: [network]: cloud metadata is read once the network is up"),
            "{e}"
        );
        let e =
            Override::parse("[storage]\nwait = \"3s\"\n", "u").unwrap().check_after_network().unwrap_err();
        assert!(e.starts_with("u:1:1: [storage]"), "{e}");
    }

    #[test]
    fn errors_name_the_source_and_line() {
        let e = Override::parse("[system]\nhostname = 5\n", "fw_cfg opt/berth/config").unwrap_err();
        assert!(e.starts_with("fw_cfg opt/berth/config:2:"), "{e}");
        let e = Override::parse("[system]\nhostname = \"-bad\"\n", "x").unwrap_err();
        assert!(e.contains("hostname"), "{e}");
        let e =
            Override::parse("[[service]]\nname = \"a\"\nimage = \"oci:x\"\nmemroy = 1\n", "x").unwrap_err();
        assert!(e.starts_with("x:4:1: unknown field `memroy`"), "{e}");
        let e = Override::parse("[[console]]\nname = \"a\"\nimage = \"oci:x\"\n", "x").unwrap_err();
        assert!(e.contains("console"), "{e}");
        let e = Override::parse("[kernel]\ncmdline = \"x\"\n", "x").unwrap_err();
        assert!(e.contains("kernel"), "{e}");
    }

    #[test]
    fn storage_keys_replace_the_images() {
        let frag = "[storage]\ndisk = \"serial:site-7\"\nwait = \"30s\"\n";
        let o = Override::parse(frag, "fw_cfg").unwrap();
        let e = o.apply(&mut plan()).unwrap_err();
        assert!(e.starts_with("fw_cfg:1:1: [storage]: the image was built without [storage]"), "{e}");

        let mut p = plan();
        p.storage = Some(StorageConfig {
            disk: DiskSelector::Path("/dev/vdb".into()),
            mount: "/data".into(),
            format: true,
            label: "berth-data".into(),
            grow: true,
            wait: Duration::from_secs(10),
        });
        assert_eq!(o.apply(&mut p).unwrap(), ["storage"]);
        let s = p.storage.clone().unwrap();
        assert_eq!((s.disk, s.wait), (DiskSelector::Serial("site-7".into()), Duration::from_secs(30)));
        assert_eq!(s.mount, "/data", "keys the fragment does not name stay");
        assert!(o.apply(&mut p).unwrap().is_empty(), "nothing changed the second time");

        let bad =
            Override::parse("[system]\nhostname = \"a\"\n\n[storage]\nmount = \"/proc/x\"\n", "x").unwrap();
        let e = bad.apply(&mut p).unwrap_err();
        assert!(e.starts_with("x:4:1: [storage] mount: `/proc/x` is inside /proc"), "{e}");
        assert_eq!(p.system.hostname, Plan::default().system.hostname, "a rejected fragment changes nothing");
        let e = Override::parse("[storage]\ndisk = \"uuid:x\"\n", "x").unwrap_err();
        assert!(e.starts_with("x:2:"), "{e}");
    }

    #[test]
    fn command_line() {
        let frag = "[system]\nhostname = \"from-b64\"\n";
        let b64 = "W3N5c3RlbV0KaG9zdG5hbWUgPSAiZnJvbS1iNjQiCg==";
        assert_eq!(decode_base64(b64).unwrap(), frag.as_bytes());
        let found = from_cmdline(&format!("quiet berth.hostname=later berth.config={b64}"));
        assert_eq!(found.len(), 2);
        let mut p = plan();
        for o in &found {
            o.as_ref().unwrap().apply(&mut p).unwrap();
        }
        assert_eq!(p.system.hostname, "later", "berth.hostname applies after berth.config");
        assert!(from_cmdline("berth.config=%%%")[0].as_ref().unwrap_err().contains("not base64"));
        assert!(from_cmdline("berth.hostname=-x")[0].is_err());
    }
}
