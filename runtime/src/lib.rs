//! berth-runtime: launches one container from a [`ContainerSpec`].
//!
//! The container gets new pid, mount, uts, ipc and cgroup namespaces (and a new network
//! namespace unless it shares the host's), a root that is an overlay of read-only image layers
//! under a tmpfs writable layer, `pivot_root`, a minimal `/dev`, and a cgroup v2 group with its
//! limits. Every failing step in the child comes back as a [`StepError`] naming the step and the
//! errno; see [`launch`] for the order of the system calls.
//!
//! The same library runs OCI bundles: [`oci`] turns a `config.json` into a [`ContainerSpec`]
//! (directory root, mounts as data, namespaces new or joined, user namespace mappings, a start
//! fifo for the create/start split) and keeps the state of containers for the `berth-runtime`
//! CLI (built with the `cli` feature).

pub mod capabilities;
pub mod cgroup;
mod child;
pub mod civil_time;
pub mod defaults;
pub mod device_filter;
pub mod error;
pub mod launch;
pub mod mounts;
pub mod net;
pub mod oci;
pub mod pidfd;
pub mod rlimits;
pub mod seccomp;
pub mod spec;

pub use capabilities::CapabilitySets;
pub use cgroup::{Cgroup, CgroupLimits};
pub use error::StepError;
pub use launch::{launch, launch_with, Container, ExitInfo, LaunchHooks};
pub use mounts::Mount;
pub use spec::{
    BindMount, ContainerSpec, Device, DeviceKind, IdMap, Namespace, NamespaceKind, Rlimit, Root, Stdio,
    TimeOffset,
};
