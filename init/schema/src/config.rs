//! The berth TOML schema (v1), shared by PID 1 and `berth build`.
//!
//! Parsing is strict: unknown keys and wrong types are errors that name the file, line and
//! column. Values with a syntax of their own (ports, binds, tmpfs mounts, volumes, devices,
//! `ulimits` names, the stop signal) are parsed as they are read, into the types the plan
//! carries: a bad one is reported at its own line and column. Semantic checks (duplicate names,
//! ports without the bridge) point at the offending value too.
//! `docs/config.md` documents every key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use berth_runtime::{rlimits, Rlimit};
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

use crate::metadata::MetadataSetting;
use crate::units;

mod container_set;
mod extra_containers;
mod mounts;
mod network;
pub mod overrides;
mod storage;
mod update;
pub use mounts::*;
pub use network::*;
pub use storage::*;
pub use update::*;

/// A whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[kernel]`: what kernel boots the image and with which command line.
    #[serde(default)]
    pub kernel: KernelConfig,
    /// `[system]`: hostname, sysctls and what PID 1 does when the work is done.
    #[serde(default)]
    pub system: SystemConfig,
    /// `[log]`: where containers' output goes besides the console.
    #[serde(default)]
    pub log: LogConfig,
    /// `[network]`: interfaces, DNS, the container bridge.
    #[serde(default)]
    pub network: NetworkConfig,
    /// `[storage]`: the data disk for named volumes and persistent writable layers.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// `[update]`: updates in place from a registry (disk formats).
    #[serde(default)]
    pub update: Option<UpdateSettings>,
    /// `[[onboot]]`: containers run one after another, each to completion, before services.
    #[serde(default)]
    pub onboot: Vec<ContainerConfig>,
    /// `[[service]]`: long-running containers started after the onboot ones.
    #[serde(default)]
    pub service: Vec<ContainerConfig>,
    /// `[[onshutdown]]`: run one after another at shutdown, once the services have stopped.
    #[serde(default)]
    pub onshutdown: Vec<ContainerConfig>,
    /// `[console]`: an opt-in debug shell — a container whose standard streams are the serial
    /// console, started again whenever it exits.
    pub console: Option<ContainerConfig>,
}

/// `[kernel]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// The kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Extra kernel modules to pack and load at boot (by module name, e.g. `"vfat"`); only
    /// with the Debian kernel (a `path` kernel has no modules).
    #[serde(default)]
    pub modules: Vec<Spanned<String>>,
    /// How the initramfs is compressed.
    #[serde(default)]
    pub compression: InitrdCompression,
    /// `source = "debian"`: the Debian cloud kernel with its modules (the default when
    /// `path` is not given); `"debian-generic"`: Debian's kernel for every machine, which has
    /// the drivers of physical hardware (`hardware = ["metal"]`).
    #[serde(default)]
    pub source: Option<Spanned<KernelSource>>,
    /// A kernel image (bzImage) to boot instead of Debian's, relative to the config file's
    /// directory. It gets no modules: everything it needs must be built in.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// The `.config` of the `path` kernel (a `.config`, a gzip'd one or a bzImage), relative to
    /// the config file's directory; needed when the kernel has no embedded config
    /// (`CONFIG_IKCONFIG`).
    #[serde(default)]
    pub config: Option<Spanned<String>>,
    /// Driver sets packed besides the virtio drivers every image has, loaded only for the
    /// devices a machine has (by their modalias): `"virtio"`, `"vmware"`, `"hyperv"`,
    /// `"metal"`, or `"all"` of them.
    #[serde(default)]
    pub hardware: Vec<Spanned<HardwareSet>>,
}

/// A set of drivers for one kind of machine (`[kernel] hardware`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HardwareSet {
    /// QEMU/KVM's paravirtual devices (virtio NIC, disks, RNG): every image has them, so
    /// naming the set changes nothing.
    Virtio,
    /// VMware: vmxnet3, PVSCSI, the balloon, VMCI.
    Vmware,
    /// Hyper-V: VMBus, its NIC, disks, keyboard, balloon and integration services (also
    /// packed for the `vhdx` format).
    Hyperv,
    /// Physical machines: the common wired NICs, SATA/NVMe/SAS/RAID and USB storage, USB
    /// keyboards. Needs a kernel that has them (`source = "debian-generic"`).
    Metal,
    /// Every set above.
    All,
}

impl HardwareSet {
    /// The sets a list names, `"all"` expanded, each once, in a fixed order.
    pub fn expand(list: &[Spanned<HardwareSet>]) -> Vec<HardwareSet> {
        let concrete = [HardwareSet::Virtio, HardwareSet::Vmware, HardwareSet::Hyperv, HardwareSet::Metal];
        let all = list.iter().any(|s| *s.get_ref() == HardwareSet::All);
        concrete.into_iter().filter(|c| all || list.iter().any(|s| s.get_ref() == c)).collect()
    }

    /// The set's name in the config.
    pub fn name(self) -> &'static str {
        match self {
            HardwareSet::Virtio => "virtio",
            HardwareSet::Vmware => "vmware",
            HardwareSet::Hyperv => "hyperv",
            HardwareSet::Metal => "metal",
            HardwareSet::All => "all",
        }
    }
}

/// `[kernel] source`: where the kernel comes from when no `path` is given.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum KernelSource {
    /// The Debian cloud kernel package (`linux-image-cloud-amd64`), with its modules: virtio,
    /// Hyper-V, VMware and the clouds' devices, nothing for physical machines.
    #[default]
    #[serde(rename = "debian", alias = "debian-cloud")]
    Debian,
    /// Debian's kernel for every machine (`linux-image-amd64`), with its modules: also the
    /// drivers of physical hardware. A bigger download (about 70 MB), the same ABI.
    #[serde(rename = "debian-generic")]
    DebianGeneric,
}

impl KernelConfig {
    /// Checks the keys against each other: `path` excludes `source` and `modules`; `config`
    /// needs `path`. The error carries the offset of the offending key's value.
    fn validate(&self) -> Result<(), (Option<usize>, String)> {
        let Some(path) = &self.path else {
            if let Some(config) = &self.config {
                return Err((
                    Some(config.span().start),
                    "[kernel] config describes a [kernel] path kernel; the Debian kernel's own \
                     config is used without it (remove `config`, or add `path`)"
                        .to_string(),
                ));
            }
            return Ok(());
        };
        if path.get_ref().trim().is_empty() {
            return Err((Some(path.span().start), "[kernel] path is empty: name a bzImage file".to_string()));
        }
        if let Some(source) = &self.source {
            return Err((
                Some(source.span().start),
                "[kernel] path and source exclude each other: `path` boots that kernel image, \
                 `source = \"debian\"` the Debian cloud kernel; keep one"
                    .to_string(),
            ));
        }
        if let Some(module) = self.modules.first() {
            return Err((
                Some(module.span().start),
                format!(
                    "[kernel] modules: a [kernel] path kernel comes without modules, so `{}` cannot \
                     be packed; build it into the kernel (=y) and remove `modules`, or use the \
                     Debian kernel (remove `path`)",
                    module.get_ref()
                ),
            ));
        }
        if let Some(config) = &self.config {
            if config.get_ref().trim().is_empty() {
                return Err((
                    Some(config.span().start),
                    "[kernel] config is empty: name the kernel's .config file".to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// `[kernel] compression`: the initramfs compression.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitrdCompression {
    /// zstd: decompresses several times faster than gzip, which shortens every boot. Needs a
    /// kernel with `CONFIG_RD_ZSTD` (Linux 5.9+). The default.
    #[default]
    Zstd,
    /// gzip: for kernels without zstd support.
    Gzip,
}

fn default_cmdline() -> String {
    "console=ttyS0".to_string()
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            cmdline: default_cmdline(),
            modules: Vec::new(),
            compression: InitrdCompression::default(),
            source: None,
            path: None,
            config: None,
            hardware: Vec::new(),
        }
    }
}

/// `[system]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// The machine's hostname (default `berth`).
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// sysctls set at boot, by dotted name.
    #[serde(default, deserialize_with = "de_sysctl")]
    pub sysctl: BTreeMap<String, String>,
    /// What PID 1 does once every onboot container has run and no service is left running.
    #[serde(default)]
    pub when_done: WhenDone,
    /// How long a container gets between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_stop_timeout", with = "duration_text")]
    pub stop_timeout: Duration,
    /// Look for a NoCloud config drive (a volume labelled CIDATA) at boot and merge its
    /// configuration; packs and loads the CD-ROM, virtio disk, ISO 9660 and FAT drivers.
    #[serde(default)]
    pub config_drive: bool,
    /// The guest RAM the machine is given where it is deployed (`"256m"`, `"1g"`): `berth
    /// build` refuses to build a layout that needs more (it prints what each one needs).
    #[serde(default, deserialize_with = "de_opt_bytes", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// The size of each of a disk image's two system partitions (`"1g"`): room for this
    /// image and the updates after it. Default: twice this image's, at least 512 MiB.
    #[serde(default, deserialize_with = "de_opt_bytes", skip_serializing_if = "Option::is_none")]
    pub slot_size: Option<u64>,
    /// Cloud metadata as a configuration source: `"auto"` (the provider the DMI strings name)
    /// or a list of providers (`["ec2", "gce", "azure", "openstack", "digitalocean",
    /// "hetzner"]`); packs the metadata helper. Off by default.
    #[serde(default, skip_serializing_if = "is_off")]
    pub metadata: MetadataSetting,
    /// How long the containers wait for the metadata before the machine boots on the image's
    /// configuration (default 30 s).
    #[serde(default = "default_metadata_timeout", with = "duration_text")]
    pub metadata_timeout: Duration,
    /// Where the clock is set from, in order: `"dhcp"` (the servers DHCP offers, option 42),
    /// `"HOST"` or `"HOST:PORT"`. Packs the time helper (SNTP: the clock stepped when 0.4 s or
    /// more off — at boot, from a wrong hardware clock — slewed otherwise; the hardware clock
    /// written at shutdown). Off when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<crate::time_sync::NtpSource>,
    /// A watchdog PID 1 pets from its loop (`"30s"`): a hardware one when the machine has one
    /// (i6300ESB, an ACPI WDAT), else the kernel's softdog; it resets the machine when PID 1
    /// stops making progress, and is closed cleanly at a deliberate shutdown. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<crate::appliance::WatchdogTimeout>,
    /// Compressed swap in RAM (`"50%"` of the memory, or a size like `"512m"`). Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zram: Option<crate::appliance::ZramSize>,
    /// A container whose tasks stall on memory this share of a second is reported
    /// (`container.pressure`; PSI); `"off"`. Default `"10%"`.
    #[serde(default)]
    pub pressure_warning: crate::appliance::PressureWarning,
}

fn is_off(m: &MetadataSetting) -> bool {
    !m.is_on()
}

fn default_metadata_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_hostname() -> String {
    "berth".to_string()
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            hostname: default_hostname(),
            sysctl: BTreeMap::new(),
            when_done: WhenDone::default(),
            stop_timeout: default_stop_timeout(),
            config_drive: false,
            memory: None,
            slot_size: None,
            metadata: MetadataSetting::Off,
            metadata_timeout: default_metadata_timeout(),
            ntp: Vec::new(),
            watchdog: None,
            zram: None,
            pressure_warning: Default::default(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Size at which `/var/log/berth/NAME.log` is rotated (`"10m"`; `0` keeps no files).
    #[serde(default = "default_log_size", deserialize_with = "de_bytes")]
    pub max_size: u64,
    /// Rotated files kept besides the current one (`NAME.log.1` … `NAME.log.N`).
    #[serde(default = "default_log_files")]
    pub max_files: u32,
    /// Also print containers' output on the console (`NAME | line`).
    #[serde(default = "default_true")]
    pub console: bool,
    /// Remote syslog collector for PID 1's messages, events and containers' output:
    /// `"udp://10.0.2.2:514"` or `"tcp://10.0.2.2:514"` (RFC 5424).
    #[serde(default)]
    pub syslog: Option<crate::syslog::SyslogTarget>,
}

fn default_log_size() -> u64 {
    10 << 20
}

fn default_log_files() -> u32 {
    3
}

fn default_true() -> bool {
    true
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: default_log_size(),
            max_files: default_log_files(),
            console: true,
            syslog: None,
        }
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    de_opt_bytes(d).map(|b| b.unwrap_or(0))
}

/// `[system] when_done`: the action once all work is done.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WhenDone {
    /// Keep running (an appliance waiting to be shut down). The default.
    #[default]
    Wait,
    /// Power the machine off.
    Poweroff,
    /// Reboot the machine.
    Reboot,
}

/// The name a service lists in `depends_on` to wait until every configured interface of the
/// machine has its addresses (DHCP bound, static ones set).
pub const NETWORK_UNIT: &str = "network";

/// A container, as written in `[[onboot]]` or `[[service]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Unique name: letters, digits, `_`, `.`, `-`; used for logs, events and the cgroup.
    pub name: Spanned<String>,
    /// Image reference: `oci:DIR[:TAG]`, `docker-archive:FILE`, or a registry reference.
    pub image: Spanned<String>,
    /// Replaces the image's `Cmd` (like arguments after `docker run IMAGE`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's `Entrypoint` (and, as in Docker, drops its `Cmd`).
    pub entrypoint: Option<Vec<String>>,
    /// Environment, merged over the image's `Env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the image's `WorkingDir`, else `/`).
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid` (default: the image's `User`, else root).
    pub user: Option<String>,
    /// Hostname inside the container (default: the container's name).
    pub hostname: Option<String>,
    /// Network mode.
    #[serde(default)]
    pub net: NetMode,
    /// Published ports (`net = "bridge"`): `["8080:80", "5353:53/udp"]`.
    #[serde(default)]
    pub ports: Vec<Spanned<PortMapping>>,
    /// Memory limit, Docker's spelling (`"512m"`); written to `memory.max`.
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub memory: Option<u64>,
    /// CPU limit in CPUs (`1.5`); written to `cpu.max`.
    #[serde(default, deserialize_with = "de_opt_cpus")]
    pub cpus: Option<f64>,
    /// Maximum number of processes; written to `pids.max`.
    pub pids_limit: Option<u64>,
    /// Bind mounts from the machine: `"/src:/dst"` or `"/src:/dst:ro"`.
    #[serde(default)]
    pub binds: Vec<Spanned<Bind>>,
    /// tmpfs mounts, Docker's `--tmpfs`: `"/cache"` or `"/cache:size=64m,mode=1777"`
    /// (default options `nosuid,nodev,noexec`; `exec` allows running programs from it).
    #[serde(default)]
    pub tmpfs: Vec<Spanned<TmpfsMount>>,
    /// Named volumes on the data disk (`[storage]`): `"NAME:/path"` or `"NAME:/path:ro"`.
    /// A new volume starts with what the image holds at the path, as in Docker.
    #[serde(default)]
    pub volumes: Vec<Spanned<VolumeMount>>,
    /// Keep the writable layer on the data disk across restarts and reboots (`[storage]`).
    #[serde(default)]
    pub persistent: bool,
    /// Mount the container's root read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Capabilities added to or dropped from Docker's default set (`"ALL"` for every one).
    #[serde(default)]
    pub capabilities: CapabilityChanges,
    /// Every capability, no seccomp filter, no masked or read-only paths, no `no_new_privs`
    /// (like `docker run --privileged`, without host devices).
    #[serde(default)]
    pub privileged: bool,
    /// The seccomp filter.
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// Resource limits, Compose's `ulimits`: `{ nofile = 65536, nproc = { soft = 100, hard = 200 } }`.
    #[serde(default)]
    pub ulimits: BTreeMap<UlimitName, Spanned<Ulimit>>,
    /// Namespaced sysctls of the container, Compose's `sysctls` (e.g. `"net.ipv4.ip_forward"`).
    #[serde(default, deserialize_with = "de_sysctl")]
    pub sysctls: BTreeMap<String, String>,
    /// `/proc/self/oom_score_adj` of the container's process, -1000..=1000.
    pub oom_score_adj: Option<i32>,
    /// Memory the kernel tries to keep for the container under pressure (`memory.low`).
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub memory_reservation: Option<u64>,
    /// Memory plus swap, Docker's `--memory-swap` (`"-1"`: unlimited swap); needs `memory`.
    #[serde(default, deserialize_with = "de_opt_swap")]
    pub memory_swap: Option<SwapLimit>,
    /// Relative CPU weight, Docker's `--cpu-shares` (2–262144, default 1024) → `cpu.weight`.
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on, e.g. `"0-1,3"` (`cpuset.cpus`).
    pub cpuset: Option<String>,
    /// Block I/O: weight and per-device limits.
    #[serde(default)]
    pub io: IoConfig,
    /// Devices of the machine given to the container, Docker's `--device`:
    /// `"/dev/vda"`, `"/dev/vda:/dev/disk"` or `"/dev/vda:/dev/disk:r"` (permissions `rwm`).
    #[serde(default)]
    pub devices: Vec<Spanned<DeviceMapping>>,
    /// Containers this service waits for: an onboot container must have exited 0, a service
    /// must have started — or, when it has a healthcheck, be healthy.
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// A command run inside the container that says whether it is healthy (exit 0).
    pub healthcheck: Option<HealthcheckConfig>,
    /// The signal that asks the container to stop (Docker's `--stop-signal`), default `SIGTERM`.
    #[serde(default, deserialize_with = "de_some")]
    pub stop_signal: Option<SignalNumber>,
    /// Time between the stop signal and SIGKILL (default `[system] stop_timeout`); for an
    /// onshutdown container, the longest it may run.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub stop_timeout: Option<Duration>,
    /// Docker's restart policy: `"no"`, `"on-failure"`, `"on-failure:N"`, `"always"`,
    /// `"unless-stopped"` (services only).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// A user namespace of its own: `"auto"` maps the container's ids 0..65536 to a private
    /// range of the machine's; `"host"` (the default) shares the machine's ids.
    #[serde(default)]
    pub userns: UsernsMode,
}

/// Docker's `--memory-swap`: memory plus swap, or unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwapLimit {
    /// Memory plus swap, in bytes.
    Total(u64),
    /// `-1`: no limit on swap.
    Unlimited,
}

/// `io = { weight = 500, write_bps = { "/dev/vda" = "1m" }, ... }`, Compose's `blkio_config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoConfig {
    /// Relative weight, 10–1000 (Docker's `--blkio-weight`).
    pub weight: Option<u64>,
    /// Bytes per second read from a device: path → size (`"10m"`).
    #[serde(default, deserialize_with = "de_rate_map")]
    pub read_bps: BTreeMap<String, u64>,
    /// Bytes per second written to a device.
    #[serde(default, deserialize_with = "de_rate_map")]
    pub write_bps: BTreeMap<String, u64>,
    /// Read operations per second on a device.
    #[serde(default)]
    pub read_iops: BTreeMap<String, u64>,
    /// Write operations per second on a device.
    #[serde(default)]
    pub write_iops: BTreeMap<String, u64>,
}

/// `healthcheck = { cmd = [...], interval = "30s", timeout = "30s", retries = 3, start_period = "0s" }`,
/// Docker's semantics and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckConfig {
    /// The command: a list (run directly) or a string (run by `/bin/sh -c`).
    #[serde(deserialize_with = "de_command")]
    pub cmd: Vec<String>,
    /// Time between checks (the first one too).
    #[serde(default = "default_health_interval", with = "duration_text")]
    pub interval: Duration,
    /// A check running longer is killed and counts as failed.
    #[serde(default = "default_health_interval", with = "duration_text")]
    pub timeout: Duration,
    /// Failures in a row that make the container unhealthy.
    #[serde(default = "default_health_retries")]
    pub retries: u32,
    /// Failures during this time after the start do not count.
    #[serde(default, with = "duration_text")]
    pub start_period: Duration,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_health_retries() -> u32 {
    3
}

fn de_command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Shell(String),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a command: a list of strings or a shell string"))?
    {
        Raw::List(l) if !l.is_empty() => Ok(l),
        Raw::List(_) => Err(serde::de::Error::custom("the healthcheck command is empty")),
        Raw::Shell(s) => Ok(vec!["/bin/sh".into(), "-c".into(), s]),
    }
}

/// When a container is started again after it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// After a non-zero exit or a death by signal, at most this many times (`None`: always).
    OnFailure(Option<u32>),
    /// Whatever the exit.
    Always,
    /// Like `always` until the container is stopped by hand (`berthctl stop`).
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's spelling.
    pub fn parse(text: &str) -> Result<RestartPolicy, String> {
        match text.trim() {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure(None)),
            other => match other.strip_prefix("on-failure:").map(|n| n.parse::<u32>()) {
                Some(Ok(n)) => Ok(RestartPolicy::OnFailure(Some(n))),
                _ => Err(format!(
                    "restart `{other}` must be \"no\", \"on-failure\", \"on-failure:N\", \"always\" or \"unless-stopped\""
                )),
            },
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure(None) => f.write_str("on-failure"),
            RestartPolicy::OnFailure(Some(n)) => write!(f, "on-failure:{n}"),
        }
    }
}

crate::text_form::serde_as_text!(RestartPolicy, UlimitName, SignalNumber);

/// `userns`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UsernsMode {
    /// The machine's user ids.
    #[default]
    Host,
    /// A private range of 65536 ids, picked by `berth build`.
    Auto,
}

/// One `ulimits` entry: a number (soft = hard) or `{ soft, hard }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ulimit {
    /// Soft and hard limit alike.
    Both(u64),
    /// Separate limits.
    Pair {
        /// The soft limit.
        soft: u64,
        /// The hard limit (≥ soft).
        hard: u64,
    },
}

impl Ulimit {
    /// (soft, hard).
    pub fn limits(self) -> (u64, u64) {
        match self {
            Ulimit::Both(n) => (n, n),
            Ulimit::Pair { soft, hard } => (soft, hard),
        }
    }

    /// The runtime's limit of `resource` with these values.
    pub fn rlimit(self, resource: UlimitName) -> Rlimit {
        let (soft, hard) = self.limits();
        Rlimit { resource: resource.resource(), soft, hard }
    }
}

/// A key of `ulimits`: one of Compose's names (`nofile`, `nproc` …), checked when the config is
/// read; it holds the `RLIMIT_*` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UlimitName(u32);

impl UlimitName {
    /// Parses one of Compose's names (those of [`rlimits::RLIMITS`]).
    pub fn parse(name: &str) -> Result<UlimitName, String> {
        match rlimits::RLIMITS.iter().find(|(n, _)| *n == name) {
            Some((_, resource)) => Ok(UlimitName(*resource)),
            None => {
                let names: Vec<&str> = rlimits::RLIMITS.iter().map(|(n, _)| *n).collect();
                Err(format!("ulimits: `{name}` is not a limit; use one of {}", names.join(", ")))
            }
        }
    }

    /// The `RLIMIT_*` number.
    pub fn resource(self) -> u32 {
        self.0
    }
}

impl fmt::Display for UlimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(rlimits::name(self.0).unwrap_or("?"))
    }
}

/// `stop_signal`: a signal written `"SIGTERM"`, `"TERM"` or `"15"`, checked when the config is
/// read; it holds the signal's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalNumber(i32);

impl SignalNumber {
    /// Parses a signal's name or number (see [`signal_number`]).
    pub fn parse(name: &str) -> Result<SignalNumber, String> {
        signal_number(name).map(SignalNumber).ok_or_else(|| {
            format!("stop_signal `{name}` is not a signal (write it like \"SIGTERM\" or \"QUIT\")")
        })
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl fmt::Display for SignalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `capabilities = { add = [...], drop = [...] }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityChanges {
    /// Added to the default set (`NET_ADMIN` or `CAP_NET_ADMIN`; `ALL`).
    #[serde(default)]
    pub add: Vec<Spanned<String>>,
    /// Removed from the default set (applied after `add`; `ALL` removes every one).
    #[serde(default)]
    pub drop: Vec<Spanned<String>>,
}

/// `seccomp`: which system-call filter a container gets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Docker's default profile, adjusted to the container's capabilities.
    #[default]
    Default,
    /// No filter.
    Unconfined,
}

/// How a container is networked.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// A network namespace of its own with only `lo` (Docker's `--network none`). The default.
    #[default]
    None,
    /// The machine's network namespace (Docker's `--network host`).
    Host,
    /// A network namespace of its own on the bridge `berth0`: an address, a default route,
    /// outbound NAT, published ports (Docker's default `--network bridge`).
    Bridge,
}

/// A config error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file's path as given.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error at byte `offset` of `text` (the content of `file`).
    pub fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(text, offset);
        ConfigError {
            file: file.to_string(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }
}

/// 1-based (line, column) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col =
        before.rfind('\n').map(|i| before[i + 1..].chars().count()).unwrap_or(before.chars().count()) + 1;
    (line, col)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read the config: {e}"),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let at = |offset: Option<usize>, message: String| {
            let (line, column) = match offset {
                Some(o) => {
                    let (l, c) = line_col(text, o);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError { file: file.to_string(), line, column, message }
        };
        let config: Config = toml::from_str(text)
            .map_err(|e| at(e.span().map(|s| s.start), e.message().trim().to_string()))?;
        config.validate().map_err(|(offset, message)| at(offset, message))?;
        Ok(config)
    }

    /// All containers: onboot, services, onshutdown, each in declaration order, then the console.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerConfig> {
        self.lists().all()
    }

    fn validate(&self) -> Result<(), (Option<usize>, String)> {
        self.validate_parts()?;
        container_set::check(&self.members(), !self.system.ntp.is_empty())
    }

    /// The config's containers, for [`container_set::check`].
    fn members(&self) -> Vec<container_set::Member<'_>> {
        use container_set::{Kind, Member};
        let lists = [
            (Kind::Onboot, &self.onboot),
            (Kind::Service, &self.service),
            (Kind::OnShutdown, &self.onshutdown),
        ];
        let mut members: Vec<Member<'_>> = lists
            .into_iter()
            .flat_map(|(kind, list)| list.iter().map(move |c| Member::from_config(kind, c)))
            .collect();
        members.extend(self.console.iter().map(|c| Member::from_config(Kind::Console, c)));
        members
    }

    /// Every check but those over the whole set of containers (see `container_set`): each
    /// container on its own, the other sections.
    fn validate_parts(&self) -> Result<(), (Option<usize>, String)> {
        self.kernel.validate()?;
        network::validate(&self.network).map_err(|m| (None, m))?;
        if let Some(storage) = &self.storage {
            storage.validate().map_err(|m| (None, m))?;
        }
        validate_hostname(&self.system.hostname).map_err(|m| (None, format!("[system] hostname: {m}")))?;
        if let Some(update) = self.update.as_ref().filter(|_| self.system.metadata.is_on()) {
            // The slot being tried is judged from the boot on: waiting for the metadata counts.
            if update.commit_timeout <= self.system.metadata_timeout {
                return Err((
                    None,
                    format!(
                        "[update] commit_timeout ({} s) is not longer than [system] metadata_timeout ({} s): a \
                         new version whose containers wait for the cloud's metadata would be rolled back before \
                         they start; make commit_timeout longer",
                        update.commit_timeout.as_secs(),
                        self.system.metadata_timeout.as_secs()
                    ),
                ));
            }
        }
        for key in self.system.sysctl.keys() {
            if key.is_empty() || key.contains('/') || key.contains("..") {
                return Err((None, format!("[system] sysctl: `{key}` is not a sysctl name (write it dotted, like \"net.ipv4.ip_forward\")")));
            }
        }
        self.lists().validate(self.storage.is_some())
    }

    /// The containers by kind.
    fn lists(&self) -> ContainerLists<'_> {
        ContainerLists {
            onboot: &self.onboot,
            service: &self.service,
            onshutdown: &self.onshutdown,
            console: self.console.as_ref(),
        }
    }
}

/// A machine's containers by kind, borrowed: a config file's, or a boot-time fragment's.
#[derive(Clone, Copy)]
pub(crate) struct ContainerLists<'a> {
    /// `[[onboot]]`.
    pub(crate) onboot: &'a [ContainerConfig],
    /// `[[service]]`.
    pub(crate) service: &'a [ContainerConfig],
    /// `[[onshutdown]]`.
    pub(crate) onshutdown: &'a [ContainerConfig],
    /// `[console]`.
    pub(crate) console: Option<&'a ContainerConfig>,
}

impl<'a> ContainerLists<'a> {
    /// All of them: onboot, services, onshutdown, the console.
    fn all(self) -> impl Iterator<Item = &'a ContainerConfig> {
        self.onboot.iter().chain(self.service).chain(self.onshutdown).chain(self.console)
    }

    /// Each container on its own, and its kind's rules; `storage` says whether the machine has
    /// a data disk.
    pub(crate) fn validate(self, storage: bool) -> Result<(), (Option<usize>, String)> {
        let run_once = || self.onboot.iter().chain(self.onshutdown).chain(self.console);
        for c in self.all() {
            let name = c.name.get_ref();
            if name == NETWORK_UNIT {
                return Err((Some(c.name.span().start), format!("`{NETWORK_UNIT}` is reserved (depends_on = [\"{NETWORK_UNIT}\"] waits for the machine's addresses); choose another name")));
            }
            if name == crate::time_sync::TIME_UNIT {
                return Err((Some(c.name.span().start), "`time` is reserved (depends_on = [\"time\"] waits for the clock to be set from NTP); choose another name".to_string()));
            }
            if let Some(p) = c.ports.first() {
                if c.net != NetMode::Bridge {
                    return Err((Some(p.span().start), format!("container `{name}`: ports need net = \"bridge\" (with net = \"host\" the container's ports are the machine's already)")));
                }
            }
        }
        for c in run_once() {
            if c.restart != RestartPolicy::No {
                return Err((
                    Some(c.name.span().start),
                    format!(
                        "container `{}`: restart is for [[service]]; an onboot container runs once",
                        c.name.get_ref()
                    ),
                ));
            }
        }
        for c in run_once() {
            if let Some(d) = c.depends_on.first() {
                return Err((Some(d.span().start), format!("container `{}`: depends_on is for [[service]]; onboot and onshutdown containers run in file order", c.name.get_ref())));
            }
        }
        for c in self.all() {
            let name = c.name.get_ref();
            let name_at = Some(c.name.span().start);
            validate_name(name).map_err(|m| (name_at, m))?;
            if c.image.get_ref().trim().is_empty() {
                return Err((Some(c.image.span().start), "`image` is empty".to_string()));
            }
            if let Some(h) = &c.hostname {
                validate_hostname(h).map_err(|m| (name_at, format!("container `{name}`: hostname: {m}")))?;
            }
            for key in c.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    return Err((
                        name_at,
                        format!("container `{name}`: env key `{key}` may not be empty or contain `=`"),
                    ));
                }
            }
            if let Some(args) = &c.command {
                if args.iter().any(|a| a.contains('\0')) {
                    return Err((name_at, format!("container `{name}`: command contains a NUL byte")));
                }
            }
            if let Some(dir) = &c.working_dir {
                if !dir.starts_with('/') {
                    return Err((
                        name_at,
                        format!("container `{name}`: working_dir `{dir}` must be absolute"),
                    ));
                }
            }
            if matches!(c.memory, Some(m) if m < 6 << 20) {
                return Err((
                    name_at,
                    format!("container `{name}`: memory must be at least 6m, as in Docker"),
                ));
            }
            if c.pids_limit == Some(0) {
                return Err((name_at, format!("container `{name}`: pids_limit must be at least 1")));
            }
            let mut targets: BTreeSet<&str> = BTreeSet::new();
            for v in &c.volumes {
                let at = Some(v.span().start);
                if !storage {
                    return Err((at, format!("container `{name}`: volumes live on the data disk; add a [storage] section (like `[storage]\ndisk = \"serial:data\"`)")));
                }
                let target = v.get_ref().target.as_str();
                if !targets.insert(target) {
                    return Err((at, format!("container `{name}`: two volumes are mounted on `{target}`")));
                }
            }
            if c.persistent && !storage {
                return Err((name_at, format!("container `{name}`: persistent = true keeps the writable layer on the data disk; add a [storage] section")));
            }
            for (key, limit) in &c.ulimits {
                let at = Some(limit.span().start);
                let (soft, hard) = limit.get_ref().limits();
                if soft > hard {
                    return Err((at, format!("container `{name}`: ulimits: {key}: the soft limit {soft} is above the hard limit {hard}")));
                }
            }
            for key in c.sysctls.keys() {
                if !is_namespaced_sysctl(key) {
                    return Err((name_at, format!("container `{name}`: sysctls: `{key}` is not namespaced (allowed: kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.*); set machine-wide ones in [system] sysctl")));
                }
                if key.starts_with("net.") && c.net == NetMode::Host {
                    return Err((name_at, format!("container `{name}`: sysctls: `{key}` would change the machine's network with net = \"host\"; set it in [system] sysctl")));
                }
            }
            if c.memory_swap.is_some() && c.memory.is_none() {
                return Err((
                    name_at,
                    format!(
                        "container `{name}`: memory_swap needs memory (it is memory plus swap, as in Docker)"
                    ),
                ));
            }
            if let (Some(SwapLimit::Total(total)), Some(memory)) = (c.memory_swap, c.memory) {
                if total < memory {
                    return Err((
                        name_at,
                        format!("container `{name}`: memory_swap must be at least memory"),
                    ));
                }
            }
            if matches!(c.cpu_shares, Some(s) if !(2..=262_144).contains(&s)) {
                return Err((
                    name_at,
                    format!("container `{name}`: cpu_shares must be between 2 and 262144"),
                ));
            }
            if let Some(set) = &c.cpuset {
                let ok = !set.is_empty()
                    && set.split(',').all(|part| {
                        let mut ends = part.splitn(2, '-');
                        ends.all(|n| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()))
                    });
                if !ok {
                    return Err((
                        name_at,
                        format!("container `{name}`: cpuset `{set}` must look like \"0-1,3\""),
                    ));
                }
            }
            if matches!(c.io.weight, Some(w) if !(10..=1000).contains(&w)) {
                return Err((name_at, format!("container `{name}`: io.weight must be between 10 and 1000")));
            }
            let io = &c.io;
            for path in io
                .read_bps
                .keys()
                .chain(io.write_bps.keys())
                .chain(io.read_iops.keys())
                .chain(io.write_iops.keys())
            {
                if !path.starts_with("/dev/") {
                    return Err((
                        name_at,
                        format!("container `{name}`: io: `{path}` is not a device path (like \"/dev/vda\")"),
                    ));
                }
            }
            if c.userns == UsernsMode::Auto && c.privileged {
                return Err((
                    name_at,
                    format!(
                        "container `{name}`: privileged = true cannot have userns = \"auto\" (as in Docker)"
                    ),
                ));
            }
            if matches!(c.oom_score_adj, Some(v) if !(-1000..=1000).contains(&v)) {
                return Err((
                    name_at,
                    format!("container `{name}`: oom_score_adj must be between -1000 and 1000"),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a sysctl belongs to a namespace a container has of its own (Docker's list): IPC
/// (`kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`) or network (`net.*`).
pub fn is_namespaced_sysctl(key: &str) -> bool {
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let well_formed = !key.is_empty() && !key.contains('/') && !key.contains("..");
    well_formed && (ipc.contains(&key) || key.starts_with("fs.mqueue.") || key.starts_with("net."))
}

/// The number of a signal named `SIGTERM`, `TERM` or `15`.
pub fn signal_number(name: &str) -> Option<i32> {
    const SIGNALS: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("STKFLT", 16),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("PWR", 30),
        ("SYS", 31),
    ];
    let upper = name.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let short = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == short).map(|(_, v)| *v)
}

/// Checks a container name: it becomes a cgroup directory and a log prefix.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || name.len() > 63 {
        return Err(format!(
            "container name `{name}` must start with a letter or digit and use only letters, digits, `_`, `.` and `-` (at most 63)"
        ));
    }
    Ok(())
}

fn validate_hostname(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty() && !l.starts_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{h}` is not a valid hostname (letters, digits and `-`, dot-separated, at most 64)"))
    }
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a size like \"512m\" or a number of bytes"))?
    {
        Raw::Int(n) => Ok(Some(n)),
        Raw::Text(t) => units::parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A value that is there (TOML has no null; an absent key is `None` through `default`).
fn de_some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_text::deserialize(d).map(Some)
}

fn de_opt_swap<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SwapLimit>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Text(String),
    }
    match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a size like \"1g\" or -1"))? {
        Raw::Int(-1) => Ok(Some(SwapLimit::Unlimited)),
        Raw::Int(n) if n >= 0 => Ok(Some(SwapLimit::Total(n as u64))),
        Raw::Int(_) => Err(serde::de::Error::custom("memory_swap is a size or -1")),
        Raw::Text(t) if t.trim() == "-1" => Ok(Some(SwapLimit::Unlimited)),
        Raw::Text(t) => {
            units::parse_bytes(&t).map(|b| Some(SwapLimit::Total(b))).map_err(serde::de::Error::custom)
        }
    }
}

fn de_rate_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    let raw = BTreeMap::<String, Raw>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            Raw::Int(n) => Ok((k, n)),
            Raw::Text(t) => units::parse_bytes(&t).map(|n| (k, n)).map_err(serde::de::Error::custom),
        })
        .collect()
}

fn de_opt_cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
        Text(String),
    }
    let value = match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a number of CPUs like 1.5"))?
    {
        Raw::Int(n) => n as f64,
        Raw::Float(f) => f,
        Raw::Text(t) => t.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("`{t}` is not a number of CPUs; write it like 1.5"))
        })?,
    };
    if !(value.is_finite() && value >= 0.01) {
        return Err(serde::de::Error::custom("cpus must be at least 0.01"));
    }
    Ok(Some(value))
}

fn de_sysctl<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Int(i64),
        Bool(bool),
        Text(String),
    }
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Int(n) => n.to_string(),
                Value::Bool(b) => (b as u8).to_string(),
                Value::Text(t) => t,
            };
            (k, v)
        })
        .collect())
}

/// Serde adapter: a `Duration` written as Docker-style text (`"10s"`).
pub mod duration_text {
    use super::*;

    /// Writes the duration as milliseconds (`"1500ms"`), which reads back exactly.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Reads `"10s"`, `"500ms"`, `"2m"` or a bare number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected a duration like \"10s\""))? {
            // Seconds, checked as the text form is (at most `units::MAX_DURATION`).
            Raw::Int(n) => units::parse_duration(&n.to_string()).map_err(serde::de::Error::custom),
            Raw::Text(t) => units::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "edge-01"
sysctl = { "net.ipv4.ip_forward" = 1, "kernel.panic" = "10" }
when_done = "poweroff"

[[onboot]]
name = "migrate"
image = "oci:images/app:1.4"
command = ["/app/migrate"]

[[service]]
name = "db"
image = "docker-archive:images/postgres.tar"
memory = "512m"
cpus = 1.5
pids_limit = 100
binds = ["/var/data:/data:ro"]
env = { A = "b" }
user = "1000:1000"
net = "host"
read_only = true
"#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(GOOD, "a.toml").unwrap();
        assert_eq!(c.system.hostname, "edge-01");
        assert_eq!(c.system.sysctl["net.ipv4.ip_forward"], "1");
        assert_eq!(c.system.when_done, WhenDone::Poweroff);
        assert_eq!(c.onboot[0].name.get_ref(), "migrate");
        let db = &c.service[0];
        assert_eq!(db.memory, Some(512 << 20));
        assert_eq!(db.cpus, Some(1.5));
        assert_eq!(db.net, NetMode::Host);
        assert_eq!(
            db.binds.iter().map(|b| b.get_ref().clone()).collect::<Vec<_>>(),
            vec![Bind { source: "/var/data".into(), target: "/data".into(), read_only: true }]
        );
    }

    #[test]
    fn metadata_and_an_update_commit_timeout_it_would_outlast() {
        let text = |commit: &str| {
            format!(
                "[system]\nmetadata = \"auto\"\nmetadata_timeout = \"60s\"\n[update]\nsource = \"reg.example/app:stable\"\ncommit_timeout = \"{commit}\"\n"
            )
        };
        let e = Config::parse(&text("60s"), "m.toml").unwrap_err();
        assert!(
            e.message.contains(
                "[update] commit_timeout (60 s) is not longer than [system] metadata_timeout (60 s)"
            ),
            "{e}"
        );
        let c = Config::parse(&text("5m"), "m.toml").unwrap();
        assert_eq!(c.system.metadata, crate::metadata::MetadataSetting::Auto);
        assert_eq!(c.system.metadata_timeout, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\nmemroy = \"1g\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!((e.line, e.column), (Some(4), Some(1)), "{e}");
        assert!(e.to_string().starts_with("x.toml:4:1: "), "{e}");
        assert!(e.message.contains("memroy"), "{e}");
    }

    #[test]
    fn kernel_path_source_and_config() {
        let c = Config::parse("[kernel]\npath = \"bzImage\"\nconfig = \"k.config\"\n", "k.toml").unwrap();
        assert_eq!(c.kernel.path.as_ref().map(|p| p.get_ref().as_str()), Some("bzImage"));
        assert_eq!(c.kernel.config.as_ref().map(|p| p.get_ref().as_str()), Some("k.config"));
        let c = Config::parse("[kernel]\nsource = \"debian\"\nmodules = [\"vfat\"]\n", "k.toml").unwrap();
        assert_eq!(c.kernel.source.as_ref().map(|s| *s.get_ref()), Some(KernelSource::Debian));
        assert!(Config::parse("", "k.toml").unwrap().kernel.path.is_none());

        let e = Config::parse("[kernel]\npath = \"bzImage\"\nsource = \"debian\"\n", "k.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("path and source"), "{e}");
        let e = Config::parse("[kernel]\npath = \"bzImage\"\nmodules = [\"vfat\"]\n", "k.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("without modules") && e.message.contains("vfat"), "{e}");
        // A path kernel may name sets: the kernel check wants their drivers built in.
        let c = Config::parse("[kernel]\npath = \"bzImage\"\nhardware = [\"vmware\"]\n", "k.toml").unwrap();
        assert_eq!(HardwareSet::expand(&c.kernel.hardware), [HardwareSet::Vmware]);
        let c = Config::parse("[kernel]\nhardware = [\"metal\", \"virtio\", \"metal\"]\n", "k.toml").unwrap();
        assert_eq!(HardwareSet::expand(&c.kernel.hardware), [HardwareSet::Virtio, HardwareSet::Metal]);
        let c = Config::parse("[kernel]\nhardware = [\"all\"]\n", "k.toml").unwrap();
        assert_eq!(
            HardwareSet::expand(&c.kernel.hardware),
            [HardwareSet::Virtio, HardwareSet::Vmware, HardwareSet::Hyperv, HardwareSet::Metal]
        );
        let e = Config::parse("[kernel]\nhardware = [\"mainframe\"]\n", "k.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(["virtio", "vmware", "hyperv", "metal", "all"].iter().all(|n| e.message.contains(n)), "{e}");
        let c = Config::parse("[kernel]\nsource = \"debian-generic\"\n", "k.toml").unwrap();
        assert_eq!(c.kernel.source.map(|s| *s.get_ref()), Some(KernelSource::DebianGeneric));
        let c = Config::parse("[kernel]\nsource = \"debian-cloud\"\n", "k.toml").unwrap();
        assert_eq!(c.kernel.source.map(|s| *s.get_ref()), Some(KernelSource::Debian));
        let e = Config::parse("[kernel]\nconfig = \"k.config\"\n", "k.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("add `path`"), "{e}");
        let e = Config::parse("[kernel]\nsource = \"fedora\"\n", "k.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("debian"), "{e}");
        let e = Config::parse("[kernel]\npath = \"\"\n", "k.toml").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let text = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\ncpus = true\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        let text = "[system]\nhostname = 5\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(12)), "{e}");
    }

    #[test]
    fn bad_memory_and_net() {
        let text = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\nmemory = \"lots\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("512m"), "{e}");
        let text = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\nnet = \"overlay\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert!(e.message.contains("bridge"), "{e}");
    }

    #[test]
    fn tmpfs_mounts() {
        let c = Config::parse(
            "[[service]]\nname = \"a\"\nimage = \"oci:x\"\ntmpfs = [\"/cache:size=64m\"]\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.service[0].tmpfs[0].get_ref().mount().data, "size=67108864", "sizes in bytes");
        let e = Config::parse("[[service]]\nname = \"a\"\nimage = \"oci:x\"\ntmpfs = [\"rel\"]\n", "x.toml")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    /// Each typed list value that does not parse is reported at its own line and column, with
    /// its parser's message.
    #[test]
    fn typed_values_are_reported_where_they_are_written() {
        let base = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\nnet = \"bridge\"\n";
        for (key, good, bad, why) in [
            ("ports", "\"8080:80\"", "\"80\"", "ports: `80` is not HOST:CONTAINER"),
            ("binds", "\"/a:/b\"", "\"rel:/x\"", "bind `rel:/x`: both paths must be absolute"),
            ("tmpfs", "\"/t\"", "\"/x:size=lots\"", "tmpfs `/x:size=lots`: size:"),
            ("volumes", "\"v:/v\"", "\"/data:/x\"", "volume `/data:/x`: `/data` is a path of the machine"),
            ("devices", "\"/dev/vda\"", "\"/dev/vda:/dev/x:q\"", "device `/dev/vda:/dev/x:q`: permissions"),
        ] {
            let text = format!("[storage]\ndisk = \"/dev/vdb\"\n{base}{key} = [\n  {good},\n  {bad},\n]\n");
            let e = Config::parse(&text, "x.toml").unwrap_err();
            assert_eq!((e.line, e.column), (Some(9), Some(3)), "{key}: {e}");
            assert!(e.message.contains(why), "{key}: {e}");
            assert!(e.to_string().starts_with("x.toml:9:3: "), "{key}: {e}");
        }
        let e = Config::parse(&format!("{base}stop_signal = \"SIGNOPE\"\n"), "x.toml").unwrap_err();
        assert_eq!((e.line, e.column), (Some(5), Some(15)), "{e}");
        assert!(e.message.contains("stop_signal `SIGNOPE` is not a signal"), "{e}");
        let c = Config::parse(&format!("{base}stop_signal = \"quit\"\n"), "x.toml").unwrap();
        assert_eq!(c.service[0].stop_signal.map(SignalNumber::number), Some(3));
    }

    #[test]
    fn storage_and_volumes() {
        let svc = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\n";
        let c = Config::parse(
            &format!("[storage]\ndisk = \"serial:d1\"\n\n{svc}volumes = [\"db:/db\", \"conf:/etc:ro\"]\npersistent = true\n"),
            "x.toml",
        )
        .unwrap();
        let s = c.storage.as_ref().unwrap();
        assert_eq!(
            (s.disk.clone(), s.mount.as_str(), s.format),
            (DiskSelector::Serial("d1".into()), "/var/lib/berth", true)
        );
        assert_eq!(c.service[0].volumes.len(), 2);
        assert!(c.service[0].volumes[1].get_ref().read_only);
        assert!(c.service[0].persistent);
        // Volumes and persistent layers need the data disk; the error points at the value.
        let e = Config::parse(&format!("{svc}volumes = [\"db:/db\"]\n"), "x.toml").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("[storage]"), "{e}");
        let e = Config::parse(&format!("{svc}persistent = true\n"), "x.toml").unwrap_err();
        assert!(e.message.contains("persistent = true") && e.message.contains("[storage]"), "{e}");
        let e = Config::parse("[storage]\ndisk = \"vdb\"\n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("serial:ID"), "{e}");
        let e =
            Config::parse("[storage]\ndisk = \"/dev/vdb\"\nmount = \"/proc/data\"\n", "x.toml").unwrap_err();
        assert!(e.message.contains("[storage] mount"), "{e}");
        let e = Config::parse(
            &format!("[storage]\ndisk = \"/dev/vdb\"\n\n{svc}volumes = [\"a:/x\", \"b:/x\"]\n"),
            "x.toml",
        )
        .unwrap_err();
        assert!(e.message.contains("two volumes"), "{e}");
    }

    #[test]
    fn syslog_target() {
        let c = Config::parse("[log]\nsyslog = \"tcp://10.0.2.2:6514\"\n", "x.toml").unwrap();
        assert_eq!(c.log.syslog.unwrap().to_string(), "tcp://10.0.2.2:6514");
        let e = Config::parse("[log]\nsyslog = \"10.0.2.2:514\"\n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("udp://"), "{e}");
    }

    #[test]
    fn network_section_and_ports() {
        let text = r#"
[network]
dns = ["1.1.1.1"]
search = ["example.com"]
hosts = { "db.local" = "10.0.0.5" }
bridge = { subnet = "10.88.0.0/24" }

[[network.interface]]
match = "52:54:00:12:34:56"
addresses = ["10.0.2.15/24", "fd00::15/64"]
gateway = "10.0.2.2"
routes = [{ to = "192.168.0.0/16", via = "10.0.2.1" }]
mtu = 1400

[[service]]
name = "web"
image = "oci:x"
net = "bridge"
ports = ["8080:80", "5353:53/udp"]
depends_on = ["network"]
"#;
        let c = Config::parse(text, "x.toml").unwrap();
        assert_eq!(c.network.interface[0].matches, InterfaceMatch::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(c.network.interface[0].addresses.len(), 2);
        assert_eq!(c.network.bridge.gateway().to_string(), "10.88.0.1/24");
        assert_eq!(c.service[0].net, NetMode::Bridge);

        let base = "[[service]]\nname = \"web\"\nimage = \"oci:x\"\n";
        let e = Config::parse(&format!("{base}ports = [\"8080:80\"]\n"), "x.toml").unwrap_err();
        assert!(e.message.contains("net = \"bridge\""), "{e}");
        assert_eq!(e.line, Some(4));
        let two = format!("{base}net = \"bridge\"\nports = [\"8080:80\"]\n[[service]]\nname = \"b\"\nimage = \"oci:x\"\nnet = \"bridge\"\nports = [\"8080:81\"]\n");
        let e = Config::parse(&two, "x.toml").unwrap_err();
        assert!(e.message.contains("published by `web`"), "{e}");
        let e = Config::parse(&format!("{base}net = \"bridge\"\nports = [\"80\"]\n"), "x.toml").unwrap_err();
        assert!(e.message.contains("HOST:CONTAINER"), "{e}");
        let e = Config::parse("[[service]]\nname = \"network\"\nimage = \"oci:x\"\n", "x.toml").unwrap_err();
        assert!(e.message.contains("reserved"), "{e}");
        let e =
            Config::parse("[[network.interface]]\naddresses = [\"10.0.2.300/24\"]\n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Config::parse("[[network.interface]]\nmatch = \"not an interface\"\n", "x.toml").unwrap_err();
        assert!(e.message.contains("MAC"), "{e}");
    }

    #[test]
    fn duplicate_names_and_bad_binds() {
        let text =
            "[[onboot]]\nname = \"a\"\nimage = \"oci:x\"\n[[service]]\nname = \"a\"\nimage = \"oci:y\"\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let text = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\nbinds = [\"rel:/x\"]\n";
        let e = Config::parse(text, "x.toml").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn ulimits_sysctls_and_oom_score() {
        let base = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\n";
        let ok = format!("{base}ulimits = {{ nofile = 1024, nproc = {{ soft = 10, hard = 20 }} }}\nsysctls = {{ \"net.ipv4.ip_forward\" = 1, \"kernel.shmmni\" = \"100\" }}\noom_score_adj = 500\n");
        let c = Config::parse(&ok, "x.toml").unwrap();
        let nproc = UlimitName::parse("nproc").unwrap();
        assert_eq!(c.service[0].ulimits[&nproc].get_ref().limits(), (10, 20));
        assert_eq!(c.service[0].sysctls["net.ipv4.ip_forward"], "1");
        let e = Config::parse(&format!("{base}ulimits = {{ files = 1 }}\n"), "x.toml").unwrap_err();
        assert!(e.message.contains("`files` is not a limit") && e.line == Some(4), "{e}");
        let e =
            Config::parse(&format!("{base}ulimits = {{ nofile = {{ soft = 5, hard = 1 }} }}\n"), "x.toml")
                .unwrap_err();
        assert!(e.message.contains("above the hard limit"), "{e}");
        let e =
            Config::parse(&format!("{base}sysctls = {{ \"kernel.pid_max\" = 1 }}\n"), "x.toml").unwrap_err();
        assert!(e.message.contains("not namespaced"), "{e}");
        let e = Config::parse(
            &format!("{base}net = \"host\"\nsysctls = {{ \"net.ipv4.ip_forward\" = 1 }}\n"),
            "x.toml",
        )
        .unwrap_err();
        assert!(e.message.contains("machine's network"), "{e}");
        let e = Config::parse(&format!("{base}oom_score_adj = 2000\n"), "x.toml").unwrap_err();
        assert!(e.message.contains("-1000 and 1000"), "{e}");
    }

    #[test]
    fn docker_resource_options() {
        let base = "[[service]]\nname = \"a\"\nimage = \"oci:x\"\n";
        let ok = format!("{base}memory = \"64m\"\nmemory_swap = -1\nmemory_reservation = \"8m\"\ncpu_shares = 512\ncpuset = \"0-1,3\"\nio = {{ weight = 100, write_bps = {{ \"/dev/vda\" = \"1m\" }}, read_iops = {{ \"/dev/vda\" = 50 }} }}\n");
        let c = Config::parse(&ok, "x.toml").unwrap();
        let s = &c.service[0];
        assert_eq!(s.memory_swap, Some(SwapLimit::Unlimited));
        assert_eq!(s.io.write_bps["/dev/vda"], 1 << 20);
        assert_eq!(s.io.read_iops["/dev/vda"], 50);
        for (bad, why) in [
            ("memory_swap = \"1g\"\n", "needs memory"),
            ("memory = \"64m\"\nmemory_swap = \"32m\"\n", "at least memory"),
            ("cpu_shares = 1\n", "between 2 and 262144"),
            ("cpuset = \"0-a\"\n", "must look like"),
            ("io = { weight = 5 }\n", "between 10 and 1000"),
            ("io = { write_bps = { \"vda\" = 1 } }\n", "not a device path"),
            ("io = { speed = 1 }\n", "unknown field"),
        ] {
            let e = Config::parse(&format!("{base}{bad}"), "x.toml").unwrap_err();
            assert!(e.message.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn dependencies_and_healthchecks() {
        let svc = |name: &str, deps: &str| {
            format!("[[service]]\nname = \"{name}\"\nimage = \"oci:x\"\ndepends_on = [{deps}]\n")
        };
        let ok = format!("{}{}", svc("a", ""), svc("b", "\"a\""));
        let ok = format!("{ok}healthcheck = {{ cmd = \"test -f /x\", interval = \"1s\" }}\n");
        let c = Config::parse(&ok, "x.toml").unwrap();
        let hc = c.service[1].healthcheck.as_ref().unwrap();
        assert_eq!(hc.cmd, ["/bin/sh", "-c", "test -f /x"]);
        assert_eq!((hc.retries, hc.timeout), (3, Duration::from_secs(30)));
        let e = Config::parse(&format!("{}{}", svc("a", "\"b\""), svc("b", "\"a\"")), "x.toml").unwrap_err();
        assert!(e.message.contains("cycle: a → b → a"), "{e}");
        let e = Config::parse(&svc("a", "\"ghost\""), "x.toml").unwrap_err();
        assert!(e.message.contains("`ghost` is not another") && e.line == Some(4), "{e}");
        let e = Config::parse(&svc("a", "\"a\""), "x.toml").unwrap_err();
        assert!(e.message.contains("`a` is not another"), "{e}");
    }

    #[test]
    fn bad_names() {
        assert!(validate_name("ok-1.a_b").is_ok());
        assert!(validate_name("-no").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
    }
}
