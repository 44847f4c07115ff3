//! A cgroup v2 group per container: creation, limits, OOM detection, removal.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::error::StepError;

/// The `cpu.max` period, as Docker uses (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Resource limits, Docker's meaning for the first three; the rest are cgroup v2 files written
/// as given (OCI `linux.resources`, converted by [`crate::oci`]). Unset fields other than the
/// first three leave the group's file alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupLimits {
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// CPUs, written as `cpu.max` = cpus × period.
    pub cpus: Option<f64>,
    /// `pids.max`.
    pub pids: Option<u64>,
    /// `memory.swap.max` in bytes (`u64::MAX`: `max`). `None` with a memory limit: 0, no swap,
    /// as Docker does.
    pub memory_swap: Option<u64>,
    /// `memory.low` in bytes (OCI `memory.reservation`).
    pub memory_low: Option<u64>,
    /// `cpu.weight`, 1–10000.
    pub cpu_weight: Option<u64>,
    /// `cpu.max` as (quota in µs or `None` for `max`, period in µs); wins over `cpus`.
    pub cpu_max: Option<(Option<u64>, u64)>,
    /// `cpuset.cpus`, e.g. `0-1,3`.
    pub cpuset_cpus: Option<String>,
    /// `cpuset.mems`.
    pub cpuset_mems: Option<String>,
    /// `io.weight`, 1–10000.
    pub io_weight: Option<u64>,
    /// `io.max` lines, e.g. `8:0 rbps=1048576`.
    pub io_max: Vec<String>,
    /// `hugetlb.<size>.max`: (page size as in the file name, e.g. `2MB`; bytes).
    pub hugetlb: Vec<(String, u64)>,
    /// Device access rules, enforced by an eBPF program on the group (`None`: no filter).
    pub devices: Option<Vec<crate::device_filter::DeviceRule>>,
}

impl CgroupLimits {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        *self == CgroupLimits::default()
    }

    /// Controllers beyond [`CONTROLLERS`] these limits need.
    fn extra_controllers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            out.push("cpuset");
        }
        if self.io_weight.is_some() || !self.io_max.is_empty() {
            out.push("io");
        }
        if !self.hugetlb.is_empty() {
            out.push("hugetlb");
        }
        out
    }
}

/// One cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
}

fn write_file(path: &Path, value: &str) -> Result<(), StepError> {
    fs::write(path, value)
        .map_err(|e| StepError::io(format!("write {}", path.display()), &e, value.to_string()))
}

/// `u64::MAX` as `max`, anything else as a number.
fn max_or(value: u64) -> String {
    if value == u64::MAX {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// Whether `/sys/fs/cgroup` is a pure cgroup v2 hierarchy (not v1 or hybrid) with controllers
/// to delegate: the only setup where berth-runtime writes limits.
pub fn unified_hierarchy() -> bool {
    let is_cgroup2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    is_cgroup2
        && fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .map(|c| !c.trim().is_empty())
            .unwrap_or(false)
}

/// The controllers berth's limits use. Only these are enabled for containers: every enabled
/// controller costs work on each cgroup created.
pub const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// Enables the [`CONTROLLERS`] that `dir`'s `cgroup.controllers` offers in its
/// `cgroup.subtree_control`: all in one write, and if the kernel refuses that, one at a time so
/// that one refusal does not stop the others. Returns the enabled set.
pub fn enable_controllers(dir: &Path) -> io::Result<Vec<String>> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
    let wanted: Vec<&str> = available.split_whitespace().filter(|c| CONTROLLERS.contains(c)).collect();
    let line = wanted.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
    if wanted.is_empty() || fs::write(dir.join("cgroup.subtree_control"), &line).is_ok() {
        return Ok(wanted.iter().map(|c| c.to_string()).collect());
    }
    let mut enabled = Vec::new();
    for c in wanted {
        if fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")).is_ok() {
            enabled.push(c.to_string());
        }
    }
    Ok(enabled)
}

/// Whether `dir` already passes every controller `dir` has of [`CONTROLLERS`] to its children.
fn passes_controllers(dir: &Path) -> bool {
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    let (available, enabled) = (read("cgroup.controllers"), read("cgroup.subtree_control"));
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    available.split_whitespace().filter(|c| CONTROLLERS.contains(c)).all(|c| enabled.contains(&c))
}

impl Cgroup {
    /// Creates (or reuses) the group at `path` — whose parent must be an existing group of a
    /// mounted cgroup2 hierarchy — enabling controllers in the ancestors if needed, and writes the
    /// limits. `memory.oom.group` is set so an OOM kill takes the whole container down, as it
    /// would take a Docker container.
    pub fn create(path: &Path, limits: &CgroupLimits) -> Result<Cgroup, StepError> {
        let parent = path
            .parent()
            .ok_or_else(|| StepError::new("create cgroup", Errno::EINVAL, path.display().to_string()))?;
        if !parent.join("cgroup.controllers").exists() {
            return Err(StepError::new(
                "create cgroup",
                Errno::ENOENT,
                format!("{} is not inside a mounted cgroup2 hierarchy", path.display()),
            ));
        }
        // Each ancestor below the hierarchy root must pass the controllers down; usually the
        // parent already does (PID 1 set it up), and then nothing is written.
        if !passes_controllers(parent) {
            let mut chain: Vec<&Path> = Vec::new();
            let mut p = Some(parent);
            while let Some(dir) = p.filter(|d| d.join("cgroup.controllers").exists()) {
                chain.push(dir);
                p = dir.parent();
            }
            for dir in chain.iter().rev() {
                // Best effort: a controller that cannot be enabled shows up below as a missing
                // limit file, with its name.
                let _ = enable_controllers(dir);
            }
        }
        // Controllers only some limits need are enabled on demand, best effort as above.
        let extra = limits.extra_controllers();
        if !extra.is_empty() {
            let mut chain: Vec<&Path> = Vec::new();
            let mut p = Some(parent);
            while let Some(dir) = p.filter(|d| d.join("cgroup.controllers").exists()) {
                chain.push(dir);
                p = dir.parent();
            }
            for dir in chain.iter().rev() {
                for c in &extra {
                    let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        }
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StepError::io("create cgroup", &e, path.display().to_string())),
        }
        let cg = Cgroup { path: path.to_path_buf() };
        cg.apply(limits)?;
        if let Some(rules) = &limits.devices {
            crate::device_filter::attach(&cg.path, rules)?;
        }
        Ok(cg)
    }

    /// An existing group, without touching it.
    pub fn at(path: &Path) -> Cgroup {
        Cgroup { path: path.to_path_buf() }
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn limit_file(&self, name: &str, controller: &str) -> Result<PathBuf, StepError> {
        let file = self.path.join(name);
        if file.exists() {
            Ok(file)
        } else {
            Err(StepError::new(
                format!("set {name}"),
                Errno::ENOENT,
                format!("the `{controller}` cgroup controller is not enabled for {}", self.path.display()),
            ))
        }
    }

    /// Writes the limits (and resets the unset ones to `max`, so a reused group carries no
    /// stale limit).
    pub fn apply(&self, limits: &CgroupLimits) -> Result<(), StepError> {
        if let Some(bytes) = limits.memory {
            write_file(&self.limit_file("memory.max", "memory")?, &bytes.to_string())?;
            match limits.memory_swap {
                None => {
                    let _ = fs::write(self.path.join("memory.swap.max"), "0");
                }
                Some(swap) => write_file(&self.limit_file("memory.swap.max", "memory")?, &max_or(swap))?,
            }
        } else if self.path.join("memory.max").exists() {
            write_file(&self.path.join("memory.max"), "max")?;
        }
        if self.path.join("memory.oom.group").exists() {
            write_file(&self.path.join("memory.oom.group"), "1")?;
        }
        if let Some(low) = limits.memory_low {
            write_file(&self.limit_file("memory.low", "memory")?, &low.to_string())?;
        }
        if let Some(w) = limits.cpu_weight {
            write_file(&self.limit_file("cpu.weight", "cpu")?, &w.to_string())?;
        }
        if let Some((quota, period)) = limits.cpu_max {
            let quota = quota.map(|q| q.to_string()).unwrap_or_else(|| "max".to_string());
            write_file(&self.limit_file("cpu.max", "cpu")?, &format!("{quota} {period}"))?;
        } else if let Some(cpus) = limits.cpus {
            // A float-to-integer `as` saturates (NaN gives 0), and the floor of 1 ms holds: a huge
            // or odd `cpus` gives the largest or the smallest quota, never a wrapped one.
            #[allow(clippy::cast_possible_truncation)]
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            write_file(&self.limit_file("cpu.max", "cpu")?, &format!("{quota} {CPU_PERIOD_US}"))?;
        } else if self.path.join("cpu.max").exists() {
            write_file(&self.path.join("cpu.max"), &format!("max {CPU_PERIOD_US}"))?;
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            write_file(&self.limit_file("cpuset.cpus", "cpuset")?, cpus)?;
        }
        if let Some(mems) = &limits.cpuset_mems {
            write_file(&self.limit_file("cpuset.mems", "cpuset")?, mems)?;
        }
        if let Some(w) = limits.io_weight {
            write_file(&self.limit_file("io.weight", "io")?, &format!("default {w}"))?;
        }
        for line in &limits.io_max {
            write_file(&self.limit_file("io.max", "io")?, line)?;
        }
        for (size, bytes) in &limits.hugetlb {
            write_file(&self.limit_file(&format!("hugetlb.{size}.max"), "hugetlb")?, &max_or(*bytes))?;
        }
        if let Some(pids) = limits.pids {
            write_file(&self.limit_file("pids.max", "pids")?, &pids.to_string())?;
        } else if self.path.join("pids.max").exists() {
            write_file(&self.path.join("pids.max"), "max")?;
        }
        Ok(())
    }

    /// An `O_PATH` descriptor of the directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open_dir(&self) -> Result<OwnedFd, StepError> {
        open(&self.path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map(|fd| {
                // SAFETY: `open` returned a fresh descriptor that nothing else owns.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            })
            .map_err(|e| StepError::new("open cgroup", e, self.path.display().to_string()))
    }

    /// Whether the kernel's OOM killer killed anything in this group.
    pub fn oom_killed(&self) -> bool {
        fs::read_to_string(self.path.join("memory.events"))
            .map(|text| {
                text.lines().any(|l| {
                    let mut it = l.split_whitespace();
                    matches!((it.next(), it.next()), (Some("oom_kill" | "oom_group_kill"), Some(n)) if n != "0")
                })
            })
            .unwrap_or(false)
    }

    /// Kills every process left in the group (`cgroup.kill`).
    pub fn kill_all(&self) -> io::Result<()> {
        fs::write(self.path.join("cgroup.kill"), "1")
    }

    /// Waits up to `limit` until no process is left in the group (`populated 0` in
    /// `cgroup.events`, which the kernel signals with `POLLPRI`); `true` if none is.
    pub fn wait_empty(&self, limit: Duration) -> bool {
        let path = self.path.join("cgroup.events");
        let deadline = Instant::now() + limit;
        let Ok(file) = fs::File::open(&path) else { return true };
        loop {
            let mut text = String::new();
            // The file is re-read from the start each time: `pread` at offset 0.
            let mut buf = [0u8; 256];
            match nix::sys::uio::pread(&file, &mut buf, 0) {
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => return true,
            }
            if text.lines().any(|l| l == "populated 0") {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let fds = [std::os::fd::AsFd::as_fd(&file)];
            if crate::pidfd::wait_for(&fds, nix::poll::PollFlags::POLLPRI, Some(left)).is_err() {
                return false;
            }
        }
    }

    /// Removes the group and the groups below it, deepest first; `EBUSY` while processes
    /// remain in any.
    pub fn remove_tree(&self) -> io::Result<()> {
        fn remove(dir: &Path) -> io::Result<()> {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    remove(&entry.path())?;
                }
            }
            match fs::remove_dir(dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        match remove(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Removes the group; `EBUSY` while processes (or unreaped zombies) remain in it.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}
