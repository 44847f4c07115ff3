//! The boot plan: the config after `berth build` resolved every image.
//!
//! It is JSON: PID 1 parses it on every boot, and under emulation (TCG) the first run of a
//! parser's code is paid in translation time — serde_json's is a fraction of a TOML parser's.
//!
//! `berth build` writes it into the initramfs at [`PLAN_PATH`]; PID 1 reads it at boot. Every
//! container carries its final process (Docker's merge of image config and TOML overrides) and
//! the digests of its layers, which are unpacked under [`LAYERS_DIR`], one directory per digest.
//! The [`Catalog`] keeps what PID 1 needs to plan containers delivered at boot the same way.
//!
//! A planned container holds runtime-ready values, so that PID 1 turns it into a launch spec by
//! copying fields: tmpfs mounts as the runtime's mounts (sizes in bytes), capabilities as a
//! mask, resource limits as the runtime's, the seccomp filter as a compiled program. In the
//! JSON they are written for people to read (see [`wire`] and `text_form`): ports, binds,
//! volumes, tmpfs mounts and devices in their Docker spelling, capabilities and limits by name,
//! a seccomp program as one string of hexadecimal instructions
//! (`berth_runtime::seccomp::SeccompProgram`).

use std::collections::BTreeMap;

use berth_runtime::seccomp::SeccompProgram;
use berth_runtime::Rlimit;
use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::config::{
    Bind, DeviceMapping, HealthcheckConfig, IoConfig, LogConfig, NetMode, NetworkConfig, PortMapping,
    RestartPolicy, StorageConfig, SwapLimit, SystemConfig, TmpfsMount, VolumeMount,
};
use crate::process::ImageConfig;

mod userns;
pub mod wire;
pub use userns::{IdRange, UsernsRanges, USERNS_FIRST_ID, USERNS_RANGE};

/// Where the plan lives in the initramfs.
pub const PLAN_PATH: &str = "/berth/plan.json";
/// Where unpacked layers live in the initramfs: `LAYERS_DIR/<sha256 hex>/`.
pub const LAYERS_DIR: &str = "/berth/layers";
/// Where `berth build` packs the filesystem tools the data disk needs (`[storage]`):
/// `TOOLS_DIR/bin/{mke2fs,e2fsck}`, their libraries in `TOOLS_DIR/lib`, `TOOLS_DIR/etc/mke2fs.conf`.
pub const TOOLS_DIR: &str = "/berth/tools";
/// The plan format version this code reads and writes (PID 1 and `berth build` are built
/// together; 2: runtime-typed containers, see the module documentation).
pub const PLAN_VERSION: u32 = 2;

/// Everything PID 1 needs to boot the machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Always [`PLAN_VERSION`].
    pub version: u32,
    /// Hostname, sysctls, stop timeout, action when done.
    pub system: SystemConfig,
    /// Container output: files and console.
    #[serde(default)]
    pub log: LogConfig,
    /// Interfaces, DNS and the container bridge.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Kernel modules to load, as paths in the initramfs, dependencies first.
    #[serde(default)]
    pub modules: Vec<String>,
    /// The ACPI power button as an input device (evdev, button), dependencies first: loaded
    /// right after the first container starts, before PID 1 forwards any output, so a shutdown
    /// request is never lost once containers run.
    #[serde(default)]
    pub button_modules: Vec<String>,
    /// Modules loaded in the background once the first containers run (nothing at boot waits
    /// for them: the NIC drivers, Hyper-V's helpers), dependencies first.
    #[serde(default)]
    pub late_modules: Vec<String>,
    /// Modules loaded only on QEMU (its ACPI device `QEMU0002` present), before the boot-time
    /// configuration is read: the fw_cfg driver.
    #[serde(default)]
    pub qemu_modules: Vec<String>,
    /// Modules loaded before looking for a config drive (`[system] config_drive`).
    #[serde(default)]
    pub config_drive_modules: Vec<String>,
    /// Watchdog drivers (`[system] watchdog`): the hardware ones first, `softdog` only when
    /// none of them found a device.
    #[serde(default)]
    pub watchdog_modules: Vec<String>,
    /// The driver sets packed to be loaded by device (`[kernel] hardware`, `"all"` expanded):
    /// what the image was built to boot on (their modules are found by modalias, not listed).
    #[serde(default)]
    pub hardware: Vec<crate::config::HardwareSet>,
    /// The data disk.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// Updates in place.
    #[serde(default)]
    pub update: Option<crate::config::UpdateSettings>,
    /// The dynamic loader (a path in the initramfs) the packed tools under [`TOOLS_DIR`] run
    /// with; none when they are static.
    #[serde(default)]
    pub tool_loader: Option<String>,
    /// Run one after another, each to completion.
    #[serde(default)]
    pub onboot: Vec<PlannedContainer>,
    /// Started after the onboot containers.
    #[serde(default)]
    pub service: Vec<PlannedContainer>,
    /// Run one after another at shutdown, after the services stopped.
    #[serde(default)]
    pub onshutdown: Vec<PlannedContainer>,
    /// The debug shell on the serial console.
    #[serde(default)]
    pub console: Option<PlannedContainer>,
    /// What containers delivered at boot may use: the packed images, seccomp filters, the bridge.
    #[serde(default)]
    pub catalog: Catalog,
}

/// What PID 1 needs to plan a container delivered at boot (`[[service]]` in a boot-time
/// fragment) as `berth build` plans the image's own: PID 1 cannot pull images, read layers'
/// account files or compile seccomp profiles.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Every packed image, by its reference as written in the config.
    #[serde(default)]
    pub images: BTreeMap<String, PlannedImage>,
    /// Seccomp filters compiled for the packed kernel.
    #[serde(default)]
    pub seccomp: SeccompFilters,
    /// Whether the modules `net = "bridge"` needs (bridge, veth, NAT) are packed.
    #[serde(default)]
    pub bridge: bool,
}

/// One packed image, resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlannedImage {
    /// Digest of the image's manifest (`sha256:…`).
    pub digest: String,
    /// Its layers, bottom first.
    pub layers: Vec<PlannedLayer>,
    /// Its process defaults (entrypoint, command, environment, working directory, user).
    #[serde(default)]
    pub config: ImageConfig,
    /// Its `/etc/passwd` and `/etc/group` entries, for user names.
    #[serde(default)]
    pub accounts: Accounts,
}

/// Seccomp filters for berth's default profile, compiled by `berth build` for the packed kernel.
/// The profile depends on a container's capabilities only through the few it names
/// (`profile_caps`), so one filter serves every capability set with the same such subset.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SeccompFilters {
    /// The capabilities the profile's rules test, as a mask (`CAP_…` names in the JSON).
    #[serde(default, with = "wire::capability_names")]
    pub profile_caps: u64,
    /// One filter per subset of `profile_caps` in use — Docker's default capability set's, and
    /// that of each container of the image — except those a container of the plan carries
    /// already (see `resolve::collect_filters`): the plan holds each filter once.
    #[serde(default)]
    pub variants: Vec<SeccompVariant>,
}

/// The filter for the capability sets whose intersection with the profile's is `caps`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SeccompVariant {
    /// The subset of [`SeccompFilters::profile_caps`], as a mask (`CAP_…` names in the JSON).
    #[serde(with = "wire::capability_names")]
    pub caps: u64,
    /// The compiled filter.
    pub filter: SeccompProgram,
}

/// One container, fully resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlannedContainer {
    /// Unique name.
    pub name: String,
    /// The image reference as written in the config.
    pub image: String,
    /// Digest of the image's manifest (`sha256:…`).
    pub image_digest: String,
    /// The image's layers, bottom first.
    pub layers: Vec<PlannedLayer>,
    /// argv: the merged entrypoint and command.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs, image env overridden by the config.
    pub env: Vec<String>,
    /// Absolute working directory.
    pub working_dir: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Supplementary groups (from the image's `/etc/group`).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Hostname inside the container.
    pub hostname: String,
    /// Network mode.
    pub net: NetMode,
    /// Published ports (bridge only).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// CPUs for `cpu.max`.
    pub cpus: Option<f64>,
    /// `pids.max`.
    pub pids_limit: Option<u64>,
    /// Bind mounts from the machine.
    #[serde(default)]
    pub binds: Vec<Bind>,
    /// tmpfs mounts, each holding the runtime's mount (sizes in bytes).
    #[serde(default)]
    pub tmpfs: Vec<TmpfsMount>,
    /// Named volumes on the data disk.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// The writable layer lives on the data disk and survives restarts and reboots.
    #[serde(default)]
    pub persistent: bool,
    /// Read-only root.
    #[serde(default)]
    pub read_only: bool,
    /// The container's capabilities (bounding, effective, permitted, inheritable) as a mask
    /// (bit N = capability N; `CAP_…` names in the JSON).
    #[serde(default, with = "wire::capability_names")]
    pub capabilities: u64,
    /// Privileged: no masked or read-only paths and no `no_new_privs`.
    #[serde(default)]
    pub privileged: bool,
    /// The seccomp filter, compiled by `berth build` (none: unconfined).
    #[serde(default)]
    pub seccomp: Option<SeccompProgram>,
    /// Resource limits (`ulimits`), as the runtime sets them (by Docker's name in the JSON:
    /// `{"nofile": [soft, hard]}`).
    #[serde(default, with = "wire::rlimits_by_name")]
    pub ulimits: Vec<Rlimit>,
    /// Namespaced sysctls.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// `oom_score_adj`.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// The machine's ids the container's ids 0.. map to, when it has a user namespace.
    #[serde(default)]
    pub userns: Option<IdRange>,
    /// `memory.low` in bytes.
    #[serde(default)]
    pub memory_reservation: Option<u64>,
    /// Docker's memory + swap.
    #[serde(default)]
    pub memory_swap: Option<SwapLimit>,
    /// Docker's CPU shares.
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// `cpuset.cpus`.
    #[serde(default)]
    pub cpuset: Option<String>,
    /// Block I/O weight and per-device limits (device paths resolved at boot).
    #[serde(default)]
    pub io: IoConfig,
    /// Machine devices given to the container (resolved at boot).
    #[serde(default)]
    pub devices: Vec<DeviceMapping>,
    /// The restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Containers this one waits for.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Its healthcheck.
    #[serde(default)]
    pub healthcheck: Option<HealthcheckConfig>,
    /// The stop signal's number (default SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// Time between the stop signal and SIGKILL, in milliseconds (default: the system's).
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
}

/// One unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlannedLayer {
    /// Digest of the layer blob as stored (`sha256:…`).
    pub digest: String,
    /// Directories (relative to the layer root) that hide everything below them in lower layers
    /// (OCI opaque whiteouts). The cpio format has no xattrs, so PID 1 marks them
    /// `trusted.overlay.opaque=y` at boot.
    #[serde(default)]
    pub opaque_dirs: Vec<String>,
}

impl PlannedLayer {
    /// The directory the layer is unpacked into, inside the booted system.
    pub fn dir(&self) -> String {
        format!("{}/{}", LAYERS_DIR, layer_dir_name(&self.digest))
    }
}

/// The directory name of a layer under [`LAYERS_DIR`]: the hex of its digest.
pub fn layer_dir_name(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl Default for Plan {
    /// A plan with nothing in it: default settings, no modules, no containers (what PID 1 runs
    /// when the real plan cannot be read).
    fn default() -> Plan {
        Plan {
            version: PLAN_VERSION,
            system: SystemConfig::default(),
            log: LogConfig::default(),
            network: NetworkConfig::default(),
            modules: Vec::new(),
            button_modules: Vec::new(),
            late_modules: Vec::new(),
            qemu_modules: Vec::new(),
            config_drive_modules: Vec::new(),
            watchdog_modules: Vec::new(),
            hardware: Vec::new(),
            storage: None,
            update: None,
            tool_loader: None,
            onboot: Vec::new(),
            service: Vec::new(),
            onshutdown: Vec::new(),
            console: None,
            catalog: Catalog::default(),
        }
    }
}

impl Plan {
    /// Serializes the plan as JSON (pretty, for people reading an image).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// Parses a plan; the error says what is wrong.
    pub fn from_json(text: &str) -> Result<Plan, String> {
        let plan: Plan = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if plan.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} is not supported by this init (it reads version {PLAN_VERSION}); rebuild the image with the matching berth",
                plan.version
            ));
        }
        Ok(plan)
    }

    /// Whether any container keeps data on the data disk (named volumes, persistent layers).
    pub fn uses_storage(&self) -> bool {
        self.containers().any(|c| c.persistent || !c.volumes.is_empty())
    }

    /// All containers: onboot, services, onshutdown, the console.
    pub fn containers(&self) -> impl Iterator<Item = &PlannedContainer> {
        self.onboot.iter().chain(self.service.iter()).chain(self.onshutdown.iter()).chain(self.console.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan with every kind of value.
    fn sample() -> Plan {
        Plan {
            version: PLAN_VERSION,
            system: SystemConfig::default(),
            log: LogConfig::default(),
            network: NetworkConfig::default(),
            modules: vec!["/lib/modules/6.1/kernel/fs/overlayfs/overlay.ko".into()],
            button_modules: vec![],
            late_modules: vec![],
            qemu_modules: vec![],
            config_drive_modules: vec![],
            watchdog_modules: vec![],
            hardware: vec![],
            storage: None,
            update: None,
            tool_loader: None,
            onboot: vec![],
            onshutdown: vec![],
            console: None,
            catalog: Catalog {
                images: BTreeMap::from([(
                    "oci:x".to_string(),
                    PlannedImage {
                        digest: "sha256:00".into(),
                        layers: vec![PlannedLayer { digest: "sha256:ab".into(), opaque_dirs: vec![] }],
                        config: ImageConfig { cmd: vec!["sh".into()], ..Default::default() },
                        accounts: Accounts::parse(Some(b"root:x:0:0::/:/bin/sh\n"), None),
                    },
                )]),
                seccomp: SeccompFilters {
                    profile_caps: 1 << 21,
                    variants: vec![SeccompVariant { caps: 0, filter: program(1) }],
                },
                bridge: true,
            },
            service: vec![PlannedContainer {
                name: "hello".into(),
                image: "oci:x".into(),
                image_digest: "sha256:00".into(),
                layers: vec![PlannedLayer { digest: "sha256:ab".into(), opaque_dirs: vec!["etc/x".into()] }],
                args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/bin".into()],
                working_dir: "/".into(),
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                hostname: "hello".into(),
                net: NetMode::Bridge,
                ports: vec![PortMapping::parse("127.0.0.1:8080:80/udp").unwrap()],
                tmpfs: vec![TmpfsMount::parse("/cache:size=64m,exec").unwrap()],
                volumes: vec![VolumeMount { name: "db".into(), target: "/db".into(), read_only: false }],
                persistent: true,
                memory: Some(64 << 20),
                cpus: Some(0.5),
                pids_limit: None,
                binds: vec![Bind::parse("/srv:/srv:ro").unwrap()],
                read_only: false,
                capabilities: 1 | 1 << 5,
                privileged: false,
                seccomp: Some(program(0x7fff_0000)),
                ulimits: vec![Rlimit { resource: libc::RLIMIT_NOFILE, soft: 10, hard: 20 }],
                sysctls: BTreeMap::new(),
                oom_score_adj: Some(-5),
                userns: Some(IdRange { host_id: USERNS_FIRST_ID, size: USERNS_RANGE }),
                memory_reservation: Some(1 << 20),
                memory_swap: Some(SwapLimit::Unlimited),
                cpu_shares: Some(512),
                cpuset: Some("0".into()),
                io: IoConfig { weight: Some(100), ..Default::default() },
                devices: vec![DeviceMapping::parse("/dev/vdb").unwrap()],
                restart: RestartPolicy::OnFailure(Some(3)),
                depends_on: vec!["db".into()],
                healthcheck: Some(HealthcheckConfig {
                    cmd: vec!["true".into()],
                    interval: std::time::Duration::from_millis(500),
                    timeout: std::time::Duration::from_secs(1),
                    retries: 2,
                    start_period: std::time::Duration::ZERO,
                }),
                stop_signal: Some(3),
                stop_timeout_ms: Some(2500),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let plan = sample();
        let text = plan.to_json().unwrap();
        assert_eq!(Plan::from_json(&text).unwrap(), plan);
        assert_eq!(plan.service[0].layers[0].dir(), "/berth/layers/ab");

        // The runtime-typed fields, as people read them.
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let c = &json["service"][0];
        assert_eq!(c["ports"], serde_json::json!(["127.0.0.1:8080:80/udp"]));
        assert_eq!(c["binds"], serde_json::json!(["/srv:/srv:ro"]));
        assert_eq!(c["tmpfs"], serde_json::json!(["/cache:size=67108864,exec"]));
        assert_eq!(c["volumes"], serde_json::json!(["db:/db"]));
        assert_eq!(c["devices"], serde_json::json!(["/dev/vdb:/dev/vdb:rwm"]));
        assert_eq!(c["capabilities"], serde_json::json!(["CAP_CHOWN", "CAP_KILL"]));
        assert_eq!(c["ulimits"], serde_json::json!({ "nofile": [10, 20] }));
        assert_eq!(c["seccomp"], serde_json::json!({ "flags": 0, "instructions": "000600007fff0000" }));
        assert_eq!(json["catalog"]["seccomp"]["profile_caps"], serde_json::json!(["CAP_SYS_ADMIN"]));
    }

    /// A one-instruction program returning `k`.
    fn program(k: u32) -> SeccompProgram {
        SeccompProgram { filter: vec![libc::sock_filter { code: 0x06, jt: 0, jf: 0, k }], flags: 0 }
    }

    #[test]
    fn rejects_other_versions() {
        let text = r#"{"version": 9, "system": {}}"#;
        assert!(Plan::from_json(text).unwrap_err().contains("version 9"));
    }

    #[test]
    fn rejects_a_bad_typed_value() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        for (field, bad, why) in [
            ("ports", "[\"80\"]", "HOST:CONTAINER"),
            ("tmpfs", "[\"rel\"]", "must be absolute"),
            ("capabilities", "[\"CAP_FLY\"]", "not a capability"),
            ("ulimits", "{\"files\": [1, 1]}", "not a limit"),
            ("seccomp", "{\"instructions\": \"\"}", "seccomp instructions"),
        ] {
            let mut bent = json.clone();
            bent["service"][0][field] = serde_json::from_str(bad).unwrap();
            let e = Plan::from_json(&bent.to_string()).unwrap_err();
            assert!(e.contains(why), "{field}: {e}");
        }
    }
}
