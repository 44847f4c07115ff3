//! A planned container as the runtime's launch spec: the container itself, or a healthcheck
//! command run inside it.
//!
//! The plan holds runtime-ready values (mounts, capability mask, rlimits, the compiled seccomp
//! program), so what it holds is copied. What can still fail are facts of the booted machine
//! only, looked up in `limits`: the device nodes of `devices` and the device numbers of `io`
//! (a device may be missing, or not a device). The data disk's paths come ready in
//! `storage::OnDisk`.

use std::os::fd::RawFd;
use std::path::PathBuf;

use berth_runtime::defaults::{MASKED_PATHS, READONLY_PATHS};
use berth_runtime::spec::{IdMap, Namespace, NamespaceKind, Root};
use berth_runtime::{BindMount, CapabilitySets, ContainerSpec, Stdio};
use berth_schema::config::NetMode;
use berth_schema::plan::PlannedContainer;
use nix::unistd::Pid;

use crate::pid1::network::{HOSTS, RESOLV_CONF};
use crate::pid1::{limits, storage};

/// Where containers' private state directories are made: `STATE_ROOT/NAME`.
pub const STATE_ROOT: &str = "/run/berth/containers";
/// The cgroup under which each container gets `NAME/`.
pub const CGROUP_PARENT: &str = "/sys/fs/cgroup/berth";

/// The launch spec of `c`: its standard input `stdin`, its output and errors to `stdout`, its
/// root `premounted_root` when PID 1 mounted it (user namespaces), its data-disk paths
/// `on_disk`; `cgroups` says whether the cgroup2 hierarchy is usable.
pub fn container_spec(
    c: &PlannedContainer,
    cgroups: bool,
    [stdin, stdout]: [RawFd; 2],
    premounted_root: Option<PathBuf>,
    on_disk: storage::OnDisk,
) -> Result<ContainerSpec, String> {
    let limits = limits::cgroup_limits(c)?;
    let mut env = c.env.clone();
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", c.hostname));
    }
    // The container's ids 0.. are the range's, for users and groups alike.
    let id_maps: Vec<IdMap> =
        c.userns.map(|r| IdMap { container_id: 0, host_id: r.host_id, size: r.size }).into_iter().collect();
    let (masked, readonly): (&[&str], &[&str]) =
        if c.privileged { (&[], &[]) } else { (MASKED_PATHS, READONLY_PATHS) };
    Ok(ContainerSpec {
        name: c.name.clone(),
        hostname: c.hostname.clone(),
        layers: c.layers.iter().map(|l| PathBuf::from(l.dir())).collect(),
        state_dir: PathBuf::from(STATE_ROOT).join(&c.name),
        args: c.args.clone(),
        env,
        working_dir: c.working_dir.clone(),
        uid: c.uid,
        gid: c.gid,
        additional_gids: c.additional_gids.clone(),
        new_net: c.net != NetMode::Host,
        // Volumes first: the resolver files and the user's binds go over them (a volume on
        // /etc still shows the machine's resolv.conf and hosts, as in Docker).
        binds: on_disk
            .volumes
            .into_iter()
            .chain(resolver_binds(c))
            .chain(c.binds.iter().map(|b| BindMount {
                source: PathBuf::from(&b.source),
                target: b.target.clone(),
                read_only: b.read_only,
            }))
            .collect(),
        writable_layer: on_disk.writable_layer,
        read_only: c.read_only,
        // berth's mounts, then the container's tmpfs mounts over them.
        mounts: (!c.tmpfs.is_empty()).then(|| {
            let mut list = berth_runtime::mounts::berth_mounts(cgroups);
            list.extend(c.tmpfs.iter().map(|t| t.mount().clone()));
            list
        }),
        cgroup: cgroups.then(|| (PathBuf::from(CGROUP_PARENT).join(&c.name), limits)),
        stdio: Stdio::Fds([stdin, stdout, stdout]),
        capabilities: Some(CapabilitySets::uniform(c.capabilities)),
        no_new_privileges: !c.privileged,
        masked_paths: masked.iter().map(|p| p.to_string()).collect(),
        readonly_paths: readonly.iter().map(|p| p.to_string()).collect(),
        rlimits: c.ulimits.clone(),
        sysctl: c.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        devices: limits::device_nodes(c)?,
        oom_score_adj: c.oom_score_adj,
        root: premounted_root.map(Root::Directory).unwrap_or_default(),
        namespaces: c.userns.map(|_| {
            let mut kinds = vec![
                NamespaceKind::User,
                NamespaceKind::Pid,
                NamespaceKind::Mount,
                NamespaceKind::Uts,
                NamespaceKind::Ipc,
                NamespaceKind::Cgroup,
            ];
            if c.net != NetMode::Host {
                kinds.push(NamespaceKind::Network);
            }
            kinds.into_iter().map(|kind| Namespace { kind, path: None }).collect()
        }),
        uid_mappings: id_maps.clone(),
        gid_mappings: id_maps,
        seccomp: c.seccomp.clone(),
        ..Default::default()
    })
}

/// The spec of a healthcheck `cmd` run inside the running container `pid` of `c`: its
/// namespaces and cgroup joined, its user, capabilities and seccomp filter; standard streams on
/// `devnull`.
pub fn healthcheck_spec(
    c: &PlannedContainer,
    cgroups: bool,
    devnull: RawFd,
    pid: Pid,
    cmd: &[String],
) -> Result<ContainerSpec, String> {
    let mut spec = container_spec(c, cgroups, [devnull, devnull], None, storage::OnDisk::default())?;
    // The container's own namespaces (a user namespace among them with userns = "auto").
    let kinds: Vec<NamespaceKind> = spec.effective_namespaces().iter().map(|n| n.kind).collect();
    spec.namespaces = Some(
        kinds
            .into_iter()
            .map(|kind| Namespace {
                kind,
                path: Some(PathBuf::from(format!("/proc/{pid}/ns/{}", kind.proc_name()))),
            })
            .collect(),
    );
    spec.uid_mappings.clear();
    spec.gid_mappings.clear();
    spec.root = Root::Joined;
    spec.mounts = None;
    spec.join_cgroup = spec.cgroup.take().map(|(path, _)| path);
    spec.masked_paths.clear();
    spec.readonly_paths.clear();
    spec.sysctl.clear();
    spec.devices.clear();
    spec.hostname = String::new();
    spec.args = cmd.to_vec();
    Ok(spec)
}

/// Read-only binds of the machine's `resolv.conf` and `hosts`, unless the container binds
/// something there itself.
pub fn resolver_binds(c: &PlannedContainer) -> Vec<BindMount> {
    [(RESOLV_CONF, "/etc/resolv.conf"), (HOSTS, "/etc/hosts")]
        .into_iter()
        .filter(|(src, target)| {
            std::path::Path::new(src).exists() && !c.binds.iter().any(|b| b.target == *target)
        })
        .map(|(src, target)| BindMount {
            source: PathBuf::from(src),
            target: target.to_string(),
            read_only: true,
        })
        .collect()
}
