//! What to launch: the runtime's input, independent of berth's TOML.

use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::capabilities::CapabilitySets;
use crate::cgroup::CgroupLimits;

/// One container to launch. `Default` gives an empty spec to fill in with struct update syntax.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Name (used in error details only; the caller names cgroups and directories).
    pub name: String,
    /// Hostname in the container's UTS namespace.
    pub hostname: String,
    /// Read-only image layers, bottom first. They become overlayfs `lowerdir`s.
    pub layers: Vec<PathBuf>,
    /// A directory private to this container launch. The child mounts a tmpfs on it (inside its
    /// own mount namespace, so it vanishes with the container) holding the overlay's upper and
    /// work directories and the merged root.
    pub state_dir: PathBuf,
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
    /// Give the container a network namespace of its own (only `lo`, brought up).
    pub new_net: bool,
    /// Bind mounts from the caller's filesystem.
    pub binds: Vec<BindMount>,
    /// Remount the root read-only before running the process.
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
    /// Device nodes created in the container's `/dev` besides the default ones.
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

/// A device node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Absolute path in the container, under `/dev`.
    pub path: String,
    /// Character (`true`) or block device.
    pub char_device: bool,
    /// Major number.
    pub major: u32,
    /// Minor number.
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
