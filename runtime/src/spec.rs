//! What to launch: the runtime's input, independent of berth's TOML.

use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::cgroup::CgroupLimits;

/// One container to launch.
#[derive(Debug, Clone)]
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
