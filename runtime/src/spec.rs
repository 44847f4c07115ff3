//! What to launch: the runtime's input, independent of berth's TOML.

use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::capabilities::CapabilitySets;
use crate::cgroup::CgroupLimits;
use crate::mounts::Mount;

/// One container to launch. `Default` gives an empty spec to fill in with struct update syntax.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Name (used in error details only; the caller names cgroups and directories).
    pub name: String,
    /// What the container's root is: an overlay of `layers` (default), a directory, or the root
    /// of a joined mount namespace (`exec` into a running container).
    pub root: Root,
    /// Mounts done in order once the root is ready (`None`: berth's fixed set,
    /// [`crate::mounts::berth_mounts`]). `binds` follow them.
    pub mounts: Option<Vec<Mount>>,
    /// Propagation applied recursively to `/` of the new mount namespace first (OCI
    /// `rootfsPropagation`; `None`: `MS_REC | MS_PRIVATE`).
    pub root_propagation: Option<libc::c_ulong>,
    /// Namespaces, new or joined by path; a kind that is absent is shared with the caller.
    /// `None`: berth's set (pid, mount, uts, ipc, cgroup, and network when `new_net`).
    pub namespaces: Option<Vec<Namespace>>,
    /// uid mappings of a new user namespace (written by the parent to `/proc/PID/uid_map`).
    pub uid_mappings: Vec<IdMap>,
    /// gid mappings of a new user namespace.
    pub gid_mappings: Vec<IdMap>,
    /// Clock offsets of a new time namespace.
    pub time_offsets: Vec<TimeOffset>,
    /// create/start split: after all setup the child reports "ready" and blocks opening this
    /// fifo for writing until someone opens it for reading; only then `no_new_privs`, seccomp and
    /// `execve` follow. Needs `/proc` mounted in the container.
    pub start_fifo: Option<PathBuf>,
    /// Make standard input (a terminal) the controlling terminal of the new session.
    pub controlling_tty: bool,
    /// Join this existing cgroup v2 directory (when `cgroup` is `None`), as `exec` does.
    pub join_cgroup: Option<PathBuf>,
    /// Hostname in the container's UTS namespace.
    pub hostname: String,
    /// Read-only image layers, bottom first (for [`Root::Overlay`]). They become overlayfs `lowerdir`s.
    pub layers: Vec<PathBuf>,
    /// A directory private to this container launch. The child mounts a tmpfs on it (inside its
    /// own mount namespace, so it vanishes with the container) holding the overlay's upper and
    /// work directories and the merged root.
    pub state_dir: PathBuf,
    /// A directory holding the overlay's `upper/` and `work/` instead of the state tmpfs: the
    /// writable layer outlives the container (a persistent layer on a data disk). Same
    /// filesystem for both, as overlayfs requires.
    pub writable_layer: Option<PathBuf>,
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Absolute working directory in the container (created if missing, as Docker does).
    pub working_dir: String,
    /// User id the process runs as.
    pub uid: u32,
    /// Group id the process runs as.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Give the container a network namespace of its own (only `lo`, brought up); used when
    /// `namespaces` is `None`.
    pub new_net: bool,
    /// Bind mounts from the caller's filesystem.
    pub binds: Vec<BindMount>,
    /// Remount the root read-only before running the process (OCI `root.readonly`).
    pub read_only: bool,
    /// cgroup v2 directory to create and run in (`None`: stay in the caller's cgroup, e.g. on a
    /// host without a cgroup v2 hierarchy).
    pub cgroup: Option<(PathBuf, CgroupLimits)>,
    /// Standard streams.
    pub stdio: Stdio,
    /// Capability sets of the process (`None`: keep the launcher's).
    pub capabilities: Option<CapabilitySets>,
    /// Set `no_new_privs`: setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
    /// Paths to hide: `/dev/null` over files, an empty read-only tmpfs over directories.
    pub masked_paths: Vec<String>,
    /// Paths to make read-only (bind-mounted on themselves, remounted read-only).
    pub readonly_paths: Vec<String>,
    /// Resource limits (`setrlimit`).
    pub rlimits: Vec<Rlimit>,
    /// Namespaced sysctls written in the container (dotted names, e.g. `net.ipv4.ip_forward`).
    pub sysctl: Vec<(String, String)>,
    /// `/proc/self/oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// The process's umask.
    pub umask: Option<u32>,
    /// Device nodes created in the container's `/dev` besides the default ones
    /// ([`crate::mounts::DEFAULT_DEVICES`]). In a user namespace the host's nodes are bind-mounted
    /// instead (`mknod` is not allowed there).
    pub devices: Vec<Device>,
    /// The seccomp filter, compiled in advance (see [`crate::seccomp::compile`]).
    pub seccomp: Option<crate::seccomp::SeccompProgram>,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// What kind of node a [`Device`] is (OCI `type` `c`/`u`, `b`, `p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device (`c`, and `u`: unbuffered character).
    Char,
    /// A block device.
    Block,
    /// A named pipe: no device numbers, and creatable in a user namespace too.
    Fifo,
}

impl DeviceKind {
    /// The file type bits for `mknod(2)`.
    pub fn file_type(self) -> libc::mode_t {
        match self {
            DeviceKind::Char => libc::S_IFCHR,
            DeviceKind::Block => libc::S_IFBLK,
            DeviceKind::Fifo => libc::S_IFIFO,
        }
    }
}

/// A device node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Absolute path in the container, under `/dev`.
    pub path: String,
    /// Character, block or FIFO.
    pub kind: DeviceKind,
    /// Major number (0 for a FIFO).
    pub major: u32,
    /// Minor number (0 for a FIFO).
    pub minor: u32,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// One bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Source path in the caller's mount namespace.
    pub source: PathBuf,
    /// Absolute target path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// The container's standard streams: inherited, or given file descriptors of the caller that
/// the child `dup2`s onto 0, 1 and 2.
#[derive(Debug, Clone, Copy, Default)]
pub enum Stdio {
    /// Inherit the caller's 0, 1, 2.
    #[default]
    Inherit,
    /// Use these descriptors for stdin, stdout, stderr.
    Fds([RawFd; 3]),
}

/// The container's root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Root {
    /// An overlay of [`ContainerSpec::layers`] under a tmpfs writable layer in
    /// [`ContainerSpec::state_dir`].
    #[default]
    Overlay,
    /// A directory (OCI `root.path`), bind-mounted on itself recursively so that it is a mount
    /// point, then `pivot_root`ed into.
    Directory(PathBuf),
    /// No root setup at all: the mount namespace is joined (`exec`), its root is the container's.
    Joined,
}

/// A kind of namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    /// Process ids.
    Pid,
    /// Mounts (OCI `mount`).
    Mount,
    /// Hostname and domain name.
    Uts,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Network devices, addresses, ports.
    Network,
    /// cgroup root.
    Cgroup,
    /// User and group ids, capabilities.
    User,
    /// `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` offsets.
    Time,
}

impl NamespaceKind {
    /// Every kind, in the order joined namespaces are entered (user first).
    pub const ALL: [NamespaceKind; 8] = [
        NamespaceKind::User,
        NamespaceKind::Pid,
        NamespaceKind::Uts,
        NamespaceKind::Ipc,
        NamespaceKind::Network,
        NamespaceKind::Cgroup,
        NamespaceKind::Time,
        NamespaceKind::Mount,
    ];

    /// The `CLONE_NEW*` flag.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NamespaceKind::Pid => libc::CLONE_NEWPID,
            NamespaceKind::Mount => libc::CLONE_NEWNS,
            NamespaceKind::Uts => libc::CLONE_NEWUTS,
            NamespaceKind::Ipc => libc::CLONE_NEWIPC,
            NamespaceKind::Network => libc::CLONE_NEWNET,
            NamespaceKind::Cgroup => libc::CLONE_NEWCGROUP,
            NamespaceKind::User => libc::CLONE_NEWUSER,
            NamespaceKind::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The file name under `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Network => "net",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::User => "user",
            NamespaceKind::Time => "time",
        }
    }
}

/// One namespace of the container: new (`path: None`) or joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Which namespace.
    pub kind: NamespaceKind,
    /// Join the namespace this file (e.g. `/proc/PID/ns/net`, `/run/netns/x`) refers to.
    pub path: Option<PathBuf>,
}

/// One line of a `uid_map`/`gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub container_id: u32,
    /// First id outside.
    pub host_id: u32,
    /// How many ids.
    pub size: u32,
}

/// A clock offset of a new time namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOffset {
    /// `true`: `CLOCK_BOOTTIME`; `false`: `CLOCK_MONOTONIC`.
    pub boottime: bool,
    /// Seconds.
    pub secs: i64,
    /// Nanoseconds.
    pub nanos: u32,
}

impl ContainerSpec {
    /// The namespaces to create or join, resolving `None` to berth's set.
    pub fn effective_namespaces(&self) -> Vec<Namespace> {
        if let Some(list) = &self.namespaces {
            return list.clone();
        }
        let mut kinds = vec![
            NamespaceKind::Pid,
            NamespaceKind::Mount,
            NamespaceKind::Uts,
            NamespaceKind::Ipc,
            NamespaceKind::Cgroup,
        ];
        if self.new_net {
            kinds.push(NamespaceKind::Network);
        }
        kinds.into_iter().map(|kind| Namespace { kind, path: None }).collect()
    }
}
