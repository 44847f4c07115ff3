//! `config.json` → [`ContainerSpec`]: parsing with the `oci-spec` types, validation, and
//! conversion. Every error names the JSON field and says what to fix.

use std::fmt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hooks, LinuxDeviceType, LinuxNamespaceType, LinuxResources, Spec};
use serde_json::Value;

use crate::capabilities::{self, CapabilitySets};
use crate::cgroup::{CgroupLimits, CPU_PERIOD_US};
use crate::device_filter;
use crate::mounts::{self, Mount};
use crate::spec::{
    ContainerSpec, Device, DeviceKind, IdMap, Namespace, NamespaceKind, Rlimit, Root, TimeOffset,
};

/// An invalid bundle: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The namespace type names of the OCI runtime spec.
const NAMESPACE_TYPES: &[(&str, NamespaceKind)] = &[
    ("pid", NamespaceKind::Pid),
    ("network", NamespaceKind::Network),
    ("mount", NamespaceKind::Mount),
    ("ipc", NamespaceKind::Ipc),
    ("uts", NamespaceKind::Uts),
    ("user", NamespaceKind::User),
    ("cgroup", NamespaceKind::Cgroup),
    ("time", NamespaceKind::Time),
];

/// A parsed `config.json`, with the warnings reading it gave.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The document.
    pub spec: Spec,
    /// What was left out (capability names this runtime does not know).
    pub warnings: Vec<String>,
}

/// Reads and parses `BUNDLE/config.json`.
pub fn load(bundle: &Path) -> Result<Loaded, ConfigError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("{}: {e} (is --bundle the bundle directory?)", path.display())))?;
    parse(&text)
}

/// Parses `config.json` text: checks the fields whose serde errors would not name them
/// (namespace types, id mappings, rlimit types) and what the types would accept silently
/// ([`super::validate`]), then reads the whole document.
pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| ConfigError(format!("config.json: invalid JSON: {e}")))?;
    precheck(&value)?;
    let warnings = drop_unknown_capabilities(&mut value);
    let spec = if warnings.is_empty() {
        // From the text: serde's errors then give the line and column.
        serde_json::from_str(text)
    } else {
        serde_json::from_value(value)
    }
    .map_err(|e| ConfigError(format!("config.json: {e}")))?;
    Ok(Loaded { spec, warnings })
}

/// Removes the capability names this runtime does not know from `process.capabilities` (the
/// types refuse them); returns a warning for each. The spec: a capability that cannot be mapped
/// is a warning, not an error.
fn drop_unknown_capabilities(v: &mut Value) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(sets) = v["process"]["capabilities"].as_object_mut() {
        for (set, list) in sets.iter_mut() {
            if let Some(names) = list.as_array_mut() {
                names.retain(|name| {
                    let text = name.as_str().unwrap_or("");
                    match capabilities::parse(text) {
                        Ok(_) => true,
                        Err(e) => {
                            warnings.push(format!("process.capabilities.{set}: {e}; ignored"));
                            false
                        }
                    }
                });
            }
        }
    }
    warnings
}

fn precheck(v: &Value) -> Result<(), ConfigError> {
    if !v.is_object() {
        return err("config.json: the document must be a JSON object");
    }
    let linux = &v["linux"];
    if let Some(list) = linux["namespaces"].as_array() {
        for (i, ns) in list.iter().enumerate() {
            match ns["type"].as_str() {
                Some(t) if NAMESPACE_TYPES.iter().any(|(n, _)| *n == t) => {}
                Some(t) => {
                    let known: Vec<&str> = NAMESPACE_TYPES.iter().map(|(n, _)| *n).collect();
                    return err(format!(
                        "linux.namespaces[{i}].type: unknown namespace type \"{t}\" (use one of {})",
                        known.join(", ")
                    ));
                }
                None => return err(format!("linux.namespaces[{i}].type: missing (a string like \"pid\")")),
            }
        }
    }
    for field in ["uidMappings", "gidMappings"] {
        if let Some(list) = linux[field].as_array() {
            for (i, m) in list.iter().enumerate() {
                for key in ["containerID", "hostID", "size"] {
                    let ok = m[key].as_u64().is_some_and(|n| n <= u64::from(u32::MAX));
                    if !ok {
                        return err(format!(
                            "linux.{field}[{i}].{key}: must be a number from 0 to 4294967295, got {}",
                            m[key]
                        ));
                    }
                }
            }
        } else if !linux[field].is_null() {
            return err(format!("linux.{field}: must be a list of {{containerID, hostID, size}}"));
        }
    }
    if let Some(list) = v["process"]["rlimits"].as_array() {
        for (i, r) in list.iter().enumerate() {
            let t = r["type"].as_str().unwrap_or("");
            if crate::rlimits::resource(t).is_none() {
                return err(format!(
                    "process.rlimits[{i}].type: unknown resource \"{t}\" (e.g. \"RLIMIT_NOFILE\")"
                ));
            }
        }
    }
    super::validate::check(v)
}

/// Where the runtime is and what the host offers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Container id.
    pub id: String,
    /// The bundle directory (absolute).
    pub bundle: PathBuf,
    /// Whether the host has a usable cgroup v2 hierarchy (see [`crate::cgroup::unified_hierarchy`]).
    pub cgroups: bool,
}

/// The result of translating a config.
#[derive(Debug, Clone)]
pub struct Translated {
    /// What to launch (its `cgroup` is set only when the host has cgroup v2).
    pub spec: ContainerSpec,
    /// `process.terminal`.
    pub terminal: bool,
    /// The OCI hooks.
    pub hooks: Hooks,
    /// The cgroup the config asks for (also when the host has none).
    pub cgroup_path: PathBuf,
    /// The resource limits the config sets, by field name, e.g. `memory.limit`.
    pub requested_limits: Vec<String>,
    /// Parts of the config that are accepted but not enforced.
    pub warnings: Vec<String>,
}

/// Whether two paths name the same file (device and inode; nsfs files included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// `..`-free absolute container path check.
fn check_container_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return err(format!("{field}: \"{path}\" must be an absolute path in the container"));
    }
    if path.split('/').any(|c| c == "..") {
        return err(format!("{field}: \"{path}\" must not contain \"..\""));
    }
    Ok(())
}

/// A capability set from names. The spec: a capability that cannot be mapped or granted is a
/// warning, not an error — an unknown name (a newer kernel's) and one this kernel does not know
/// are left out and named in `warnings`.
fn cap_mask(field: &str, set: Option<&oci_spec::runtime::Capabilities>, warnings: &mut Vec<String>) -> u64 {
    let last = capabilities::last_cap();
    let mut mask = 0;
    for c in set.into_iter().flatten() {
        // oci-spec reads names it does not know as well: they serialize back as written.
        let name = match serde_json::to_value(c) {
            Ok(Value::String(s)) => s,
            _ => continue,
        };
        match capabilities::parse(&name) {
            Ok(n) if n <= last => mask |= 1u64 << n,
            Ok(_) => warnings.push(format!("{field}: this kernel has no {name}; not granted")),
            Err(e) => warnings.push(format!("{field}: {e}; ignored")),
        }
    }
    mask
}

/// Converts a parsed config into what [`crate::launch`] needs.
pub fn translate(config: &Spec, opts: &Options) -> Result<Translated, ConfigError> {
    let mut warnings = Vec::new();
    if !config.version().starts_with("1.") {
        return err(format!(
            "ociVersion: \"{}\" is not supported (berth-runtime reads 1.x)",
            config.version()
        ));
    }
    let process = match config.process() {
        Some(p) => p,
        None => return err("process: missing (the container needs a process to run)"),
    };
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return err("process.args: empty (give the command to run, e.g. [\"sh\"])");
    }
    let cwd = process.cwd().display().to_string();
    check_container_path("process.cwd", &cwd)?;

    // Root.
    let root = match config.root() {
        Some(r) => r,
        None => return err("root: missing (give root.path, the rootfs directory)"),
    };
    let root_path =
        if root.path().is_absolute() { root.path().clone() } else { opts.bundle.join(root.path()) };
    if !root_path.is_dir() {
        return err(format!(
            "root.path: directory {} does not exist (the bundle's rootfs is missing)",
            root_path.display()
        ));
    }

    // Mounts.
    let mut mount_list = Vec::new();
    for (i, m) in config.mounts().iter().flatten().enumerate() {
        // The spec (Linux): a relative destination is relative to "/" (deprecated, still valid).
        let written = m.destination().display().to_string();
        let dest = if written.starts_with('/') { written } else { format!("/{written}") };
        check_container_path(&format!("mounts[{i}].destination"), &dest)?;
        let options = m.options().clone().unwrap_or_default();
        let bind = options.iter().any(|o| o == "bind" || o == "rbind");
        let fstype = match (m.typ().as_deref(), bind) {
            (Some(t), _) if !t.is_empty() => t.to_string(),
            (_, true) => "bind".to_string(),
            _ => return err(format!("mounts[{i}].type: missing (e.g. \"tmpfs\", or a \"bind\" option)")),
        };
        let mut source = m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default();
        let mut mount = Mount::parse(&dest, &fstype, &source, &options)
            .map_err(|e| ConfigError(format!("mounts[{i}].options: {e}")))?;
        if mount.is_bind() {
            if source.is_empty() {
                return err(format!("mounts[{i}].source: a bind mount needs a source"));
            }
            if !source.starts_with('/') {
                source = opts.bundle.join(&source).display().to_string();
            }
            if !Path::new(&source).exists() {
                return err(format!("mounts[{i}].source: {source} does not exist"));
            }
            mount.source = source;
        }
        mount_list.push(mount);
    }

    let linux = config.linux().clone().unwrap_or_default();

    // Namespaces.
    let mut namespaces: Vec<Namespace> = Vec::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let kind = namespace_kind(ns.typ());
        if namespaces.iter().any(|n| n.kind == kind) {
            return err(format!("linux.namespaces[{i}]: duplicate namespace type \"{}\"", ns.typ()));
        }
        let path = ns.path().clone().filter(|p| !p.as_os_str().is_empty());
        if let Some(p) = &path {
            if !p.exists() {
                return err(format!("linux.namespaces[{i}].path: {} does not exist", p.display()));
            }
            // The root is pivoted in the mount namespace: in the runtime's own or the host's,
            // that would take the root away from every process there.
            if kind == NamespaceKind::Mount
                && ["/proc/self/ns/mnt", "/proc/1/ns/mnt"].iter().any(|own| same_file(p, Path::new(own)))
            {
                return err(format!(
                    "linux.namespaces[{i}].path: {} is the runtime's or the host's own mount namespace (the container's root would replace theirs); give a mount namespace made for the container",
                    p.display()
                ));
            }
        }
        if kind == NamespaceKind::Time && !crate::launch::kernel_has_time_namespaces() {
            return err(format!(
                "linux.namespaces[{i}]: this kernel has no time namespaces (CONFIG_TIME_NS)"
            ));
        }
        namespaces.push(Namespace { kind, path });
    }
    let mode = |kind| namespaces.iter().find(|n| n.kind == kind).map(|n| n.path.is_none());
    // The root is prepared and pivoted into inside the container's mount namespace: without
    // one it would be the runtime's own.
    if mode(NamespaceKind::Mount).is_none() {
        return err(
            "linux.namespaces: add {\"type\": \"mount\"} (the container needs a mount namespace: a new \
             one, or one joined with \"path\")",
        );
    }
    let uid_mappings = id_maps("uidMappings", linux.uid_mappings())?;
    let gid_mappings = id_maps("gidMappings", linux.gid_mappings())?;
    match mode(NamespaceKind::User) {
        Some(true) => {
            if uid_mappings.is_empty() || gid_mappings.is_empty() {
                return err(
                    "linux.uidMappings/gidMappings: a new user namespace needs both uid and gid mappings",
                );
            }
        }
        _ => {
            if !uid_mappings.is_empty() || !gid_mappings.is_empty() {
                return err("linux.uidMappings: mappings need a new \"user\" namespace in linux.namespaces");
            }
        }
    }
    let mut time_offsets = Vec::new();
    if let Some(offsets) = linux.time_offsets() {
        if mode(NamespaceKind::Time) != Some(true) {
            return err("linux.timeOffsets: offsets need a new \"time\" namespace in linux.namespaces");
        }
        let mut keys: Vec<&String> = offsets.keys().collect();
        keys.sort();
        for clock in keys {
            let boottime = match clock.as_str() {
                "boottime" => true,
                "monotonic" => false,
                other => {
                    return err(format!(
                        "linux.timeOffsets.{other}: unknown clock (\"monotonic\" or \"boottime\")"
                    ))
                }
            };
            let o = &offsets[clock];
            time_offsets.push(TimeOffset {
                boottime,
                secs: o.secs().unwrap_or(0),
                nanos: o.nanosecs().unwrap_or(0),
            });
        }
    }
    let hostname = config.hostname().clone().unwrap_or_default();
    if !hostname.is_empty() && mode(NamespaceKind::Uts).is_none() {
        return err("hostname: setting a hostname needs a \"uts\" namespace in linux.namespaces");
    }

    // Devices.
    let mut devices = Vec::new();
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let path = d.path().display().to_string();
        check_container_path(&format!("linux.devices[{i}].path"), &path)?;
        if !path.starts_with("/dev/") {
            return err(format!("linux.devices[{i}].path: \"{path}\" must be under /dev"));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => DeviceKind::Fifo,
            other => {
                return err(format!(
                "linux.devices[{i}].type: {other:?} is not a device type (use \"c\", \"u\", \"b\" or \"p\")"
            ))
            }
        };
        let num = |v: i64, what: &str| {
            u32::try_from(v)
                .map_err(|_| ConfigError(format!("linux.devices[{i}].{what}: {v} is out of range")))
        };
        devices.push(Device {
            path,
            kind,
            major: num(d.major(), "major")?,
            minor: num(d.minor(), "minor")?,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }

    let root_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => None,
        Some(p) => Some(mounts::parse_propagation(p).ok_or_else(|| {
            ConfigError(format!("linux.rootfsPropagation: unknown \"{p}\" (e.g. \"rprivate\", \"rslave\")"))
        })?),
    };
    let mut sysctl: Vec<(String, String)> = linux.sysctl().clone().unwrap_or_default().into_iter().collect();
    sysctl.sort();
    // The NIS domain name is the UTS namespace's `kernel.domainname`, written with the sysctls.
    if let Some(domain) = config.domainname().as_deref().filter(|d| !d.is_empty()) {
        if mode(NamespaceKind::Uts).is_none() {
            return err("domainname: setting a domain name needs a \"uts\" namespace in linux.namespaces");
        }
        sysctl.retain(|(k, _)| k != "kernel.domainname");
        sysctl.push(("kernel.domainname".to_string(), domain.to_string()));
    }
    for (k, _) in &sysctl {
        if k.contains('/') || k.split('.').any(|c| c.is_empty() || c == "..") {
            return err(format!("linux.sysctl: \"{k}\" is not a dotted sysctl name"));
        }
    }
    let masked_paths = linux.masked_paths().clone().unwrap_or_default();
    let readonly_paths = linux.readonly_paths().clone().unwrap_or_default();
    for (field, list) in [("linux.maskedPaths", &masked_paths), ("linux.readonlyPaths", &readonly_paths)] {
        for (i, p) in list.iter().enumerate() {
            check_container_path(&format!("{field}[{i}]"), p)?;
        }
    }
    let seccomp = match linux.seccomp() {
        Some(profile) => {
            Some(crate::seccomp::compile(profile).map_err(|e| ConfigError(format!("linux.seccomp: {e}")))?)
        }
        None => None,
    };

    // Process.
    let user = process.user();
    let capabilities = process.capabilities().as_ref().map(|c| CapabilitySets {
        bounding: cap_mask("process.capabilities.bounding", c.bounding().as_ref(), &mut warnings),
        effective: cap_mask("process.capabilities.effective", c.effective().as_ref(), &mut warnings),
        permitted: cap_mask("process.capabilities.permitted", c.permitted().as_ref(), &mut warnings),
        inheritable: cap_mask("process.capabilities.inheritable", c.inheritable().as_ref(), &mut warnings),
        ambient: cap_mask("process.capabilities.ambient", c.ambient().as_ref(), &mut warnings),
    });
    // The kernel raises an ambient capability only if it is also permitted and inheritable:
    // the others cannot be granted, which the spec makes a warning (runc's default config
    // lists ambient capabilities without an inheritable set).
    let capabilities = capabilities.map(|mut c| {
        let refused = c.ambient & !(c.inheritable & c.permitted);
        if refused != 0 {
            warnings.push(format!(
                "process.capabilities.ambient: {} not raised (an ambient capability must also be permitted and inheritable)",
                capabilities::names(refused).join(", ")
            ));
        }
        c.ambient &= c.inheritable & c.permitted;
        c
    });
    let mut rlimits = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        let name = serde_json::to_value(r.typ()).ok().and_then(|v| v.as_str().map(str::to_string));
        let resource = name
            .as_deref()
            .and_then(crate::rlimits::resource)
            .ok_or_else(|| ConfigError(format!("process.rlimits[{i}].type: unknown resource")))?;
        if r.soft() > r.hard() {
            return err(format!(
                "process.rlimits[{i}]: soft limit {} is above the hard limit {}",
                r.soft(),
                r.hard()
            ));
        }
        rlimits.push(Rlimit { resource, soft: r.soft(), hard: r.hard() });
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return err(format!("process.oomScoreAdj: {adj} is outside -1000..1000"));
        }
    }

    // Resources and the cgroup.
    let (mut limits, requested_limits) = match linux.resources() {
        Some(r) => resources(r)?,
        None => (CgroupLimits::default(), Vec::new()),
    };
    // The spec: the devices of linux.devices MUST be available in the container, whatever the
    // device rules say (as runc, they are allowed after the config's rules).
    if let Some(rules) = &mut limits.devices {
        for d in &devices {
            let kind = match d.kind {
                DeviceKind::Char => 'c',
                DeviceKind::Block => 'b',
                DeviceKind::Fifo => continue,
            };
            let access =
                device_filter::ACCESS_READ | device_filter::ACCESS_WRITE | device_filter::ACCESS_MKNOD;
            rules.push(device_filter::DeviceRule {
                allow: true,
                kind,
                major: Some(d.major),
                minor: Some(d.minor),
                access,
            });
        }
    }
    let cgroup_path = cgroup_path(linux.cgroups_path().as_deref(), &opts.id)?;

    let spec = ContainerSpec {
        name: opts.id.clone(),
        hostname,
        root: Root::Directory(root_path),
        mounts: Some(mount_list),
        root_propagation,
        namespaces: Some(namespaces),
        uid_mappings,
        gid_mappings,
        time_offsets,
        args,
        env: process.env().clone().unwrap_or_default(),
        working_dir: cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        read_only: root.readonly().unwrap_or(false),
        cgroup: opts.cgroups.then(|| (cgroup_path.clone(), limits)),
        capabilities,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        masked_paths,
        readonly_paths,
        rlimits,
        sysctl,
        oom_score_adj: process.oom_score_adj(),
        umask: user.umask(),
        devices,
        seccomp,
        ..Default::default()
    };
    Ok(Translated {
        spec,
        terminal: process.terminal().unwrap_or(false),
        hooks: config.hooks().clone().unwrap_or_default(),
        cgroup_path,
        requested_limits,
        warnings,
    })
}

fn namespace_kind(t: LinuxNamespaceType) -> NamespaceKind {
    match t {
        LinuxNamespaceType::Pid => NamespaceKind::Pid,
        LinuxNamespaceType::Network => NamespaceKind::Network,
        LinuxNamespaceType::Mount => NamespaceKind::Mount,
        LinuxNamespaceType::Ipc => NamespaceKind::Ipc,
        LinuxNamespaceType::Uts => NamespaceKind::Uts,
        LinuxNamespaceType::User => NamespaceKind::User,
        LinuxNamespaceType::Cgroup => NamespaceKind::Cgroup,
        LinuxNamespaceType::Time => NamespaceKind::Time,
    }
}

fn id_maps(
    field: &str,
    list: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>,
) -> Result<Vec<IdMap>, ConfigError> {
    let mut out: Vec<IdMap> = Vec::new();
    for (i, m) in list.iter().flatten().enumerate() {
        let map = IdMap { container_id: m.container_id(), host_id: m.host_id(), size: m.size() };
        if map.size == 0 {
            return err(format!("linux.{field}[{i}].size: must be at least 1"));
        }
        for (what, start) in [("containerID", map.container_id), ("hostID", map.host_id)] {
            if u64::from(start) + u64::from(map.size) > u64::from(u32::MAX) {
                return err(format!(
                    "linux.{field}[{i}]: {what} {start} + size {} overflows 32 bits",
                    map.size
                ));
            }
        }
        if let Some(j) = out.iter().position(|o| {
            o.container_id < map.container_id + map.size && map.container_id < o.container_id + o.size
        }) {
            return err(format!("linux.{field}[{i}]: container ids overlap with linux.{field}[{j}]"));
        }
        out.push(map);
    }
    if out.len() > 340 {
        return err(format!("linux.{field}: at most 340 lines"));
    }
    Ok(out)
}

/// The cgroup directory: `cgroupsPath` below `/sys/fs/cgroup`, or `berth-runtime/<id>`.
fn cgroup_path(path: Option<&Path>, id: &str) -> Result<PathBuf, ConfigError> {
    let base = Path::new("/sys/fs/cgroup");
    let Some(p) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(base.join("berth-runtime").join(id));
    };
    let text = p.display().to_string();
    if text.contains(':') {
        return err(format!(
            "linux.cgroupsPath: \"{text}\" looks like a systemd slice; berth-runtime only takes a path like \"/mygroup/{id}\""
        ));
    }
    if text.split('/').any(|c| c == "..") {
        return err(format!("linux.cgroupsPath: \"{text}\" must not contain \"..\""));
    }
    Ok(base.join(text.trim_start_matches('/')))
}

/// runc's conversion of cgroup v1 `cpu.shares` (2–262144) to v2 `cpu.weight` (1–10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// runc's conversion of a v1 blkio weight (10–1000) to v2 `io.weight` (1–10000).
pub fn blkio_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (weight.saturating_sub(10) * 9999) / 990
}

/// `linux.resources` → limits, and the names of the fields that set something.
fn resources(r: &LinuxResources) -> Result<(CgroupLimits, Vec<String>), ConfigError> {
    let mut l = CgroupLimits::default();
    let mut names = Vec::new();
    if let Some(list) = r.devices() {
        let mut rules = Vec::new();
        for (i, d) in list.iter().enumerate() {
            let kind = match d.typ().map(|t| t.as_str().to_string()).as_deref() {
                None | Some("a") => 'a',
                Some("c") => 'c',
                Some("b") => 'b',
                Some(other) => {
                    return err(format!("linux.resources.devices[{i}].type: {other:?} is not one of a, c, b"))
                }
            };
            let num = |v: Option<i64>, what: &str| -> Result<Option<u32>, ConfigError> {
                match v {
                    None | Some(-1) => Ok(None),
                    Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                        ConfigError(format!("linux.resources.devices[{i}].{what}: {n} is out of range"))
                    }),
                }
            };
            let access_text = d.access().clone().unwrap_or_else(|| "rwm".to_string());
            let mut access = 0;
            for ch in access_text.chars() {
                access |= match ch {
                    'r' => device_filter::ACCESS_READ,
                    'w' => device_filter::ACCESS_WRITE,
                    'm' => device_filter::ACCESS_MKNOD,
                    _ => {
                        return err(format!(
                            "linux.resources.devices[{i}].access: {access_text:?} is not some of \"rwm\""
                        ))
                    }
                };
            }
            rules.push(device_filter::DeviceRule {
                allow: d.allow(),
                kind,
                major: num(d.major(), "major")?,
                minor: num(d.minor(), "minor")?,
                access,
            });
        }
        // As runc does: the devices the runtime itself provides (null, zero, …, the pts slaves,
        // and mknod of any node) stay usable whatever the config's list says; appended last,
        // they win.
        rules.extend_from_slice(device_filter::DOCKER_DEFAULT_RULES);
        l.devices = Some(rules);
        names.push("devices".to_string());
    }
    let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
    if let Some(m) = r.memory() {
        l.memory = positive(m.limit());
        if l.memory.is_some() {
            names.push("memory.limit".to_string());
        }
        l.memory_low = positive(m.reservation());
        if l.memory_low.is_some() {
            names.push("memory.reservation".to_string());
        }
        match (m.swap(), l.memory) {
            (None | Some(0), Some(_)) => l.memory_swap = Some(u64::MAX),
            (Some(-1), _) => {
                l.memory_swap = Some(u64::MAX);
                names.push("memory.swap".to_string());
            }
            (Some(s), Some(mem)) if s > 0 => {
                let s = s as u64;
                if s < mem {
                    return err(format!("linux.resources.memory.swap: {s} is below memory.limit {mem} (it counts memory + swap)"));
                }
                l.memory_swap = Some(s - mem);
                names.push("memory.swap".to_string());
            }
            (Some(s), None) if s > 0 => {
                return err("linux.resources.memory.swap: a swap limit needs memory.limit");
            }
            _ => {}
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares().filter(|s| *s > 0) {
            l.cpu_weight = Some(shares_to_weight(shares));
            names.push("cpu.shares".to_string());
        }
        if c.quota().is_some() || c.period().is_some() {
            let period = c.period().filter(|p| *p > 0).unwrap_or(CPU_PERIOD_US);
            let quota = c.quota().filter(|q| *q > 0).map(|q| q as u64);
            l.cpu_max = Some((quota, period));
            names.push("cpu.quota/period".to_string());
        }
        if let Some(cpus) = c.cpus().clone().filter(|s| !s.is_empty()) {
            l.cpuset_cpus = Some(cpus);
            names.push("cpu.cpus".to_string());
        }
        if let Some(mems) = c.mems().clone().filter(|s| !s.is_empty()) {
            l.cpuset_mems = Some(mems);
            names.push("cpu.mems".to_string());
        }
    }
    if let Some(p) = r.pids() {
        if p.limit() > 0 {
            l.pids = Some(p.limit() as u64);
            names.push("pids.limit".to_string());
        }
    }
    if let Some(io) = r.block_io() {
        if let Some(w) = io.weight().filter(|w| *w > 0) {
            l.io_weight = Some(blkio_to_io_weight(u64::from(w)));
            names.push("blockIO.weight".to_string());
        }
        let throttles = [
            ("rbps", "throttleReadBpsDevice", io.throttle_read_bps_device()),
            ("wbps", "throttleWriteBpsDevice", io.throttle_write_bps_device()),
            ("riops", "throttleReadIOPSDevice", io.throttle_read_iops_device()),
            ("wiops", "throttleWriteIOPSDevice", io.throttle_write_iops_device()),
        ];
        for (key, field, list) in throttles {
            for d in list.iter().flatten() {
                l.io_max.push(format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()));
                names.push(format!("blockIO.{field}"));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let bytes = if h.limit() < 0 { u64::MAX } else { h.limit() as u64 };
        l.hugetlb.push((h.page_size().clone(), bytes));
        names.push(format!("hugepageLimits[{}]", h.page_size()));
    }
    names.dedup();
    Ok((l, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"foo"}]}}"#)
            .unwrap_err();
        assert!(e.0.starts_with("linux.namespaces[2].type: unknown namespace type \"foo\""), "{e}");
        let e = parse(
            r#"{"ociVersion":"1.0.2","linux":{"uidMappings":[{"containerID":0,"hostID":-1,"size":1}]}}"#,
        )
        .unwrap_err();
        assert!(e.0.starts_with("linux.uidMappings[0].hostID"), "{e}");
        assert!(parse("{not json").unwrap_err().0.contains("invalid JSON"));
        assert_eq!(cgroup_path(None, "x").unwrap(), PathBuf::from("/sys/fs/cgroup/berth-runtime/x"));
        assert!(cgroup_path(Some(Path::new("system.slice:a:b")), "x").is_err());
    }
}
