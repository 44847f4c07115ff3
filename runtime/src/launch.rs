//! Launching a container: the parent's side, and the order of system calls.
//!
//! # Order
//! Parent (the caller, e.g. PID 1):
//! 1. create the cgroup and write its limits, open it (`O_PATH`) — or open an existing one to
//!    join (`exec`);
//! 2. create the close-on-exec error pipe (and a sync pipe when the child must wait for the
//!    parent); open the files of namespaces to join; build every path and string the child needs;
//! 3. a pid namespace to join is entered by the parent itself (`setns` only changes the pid
//!    namespace of later children — that is the "extra fork", done by `clone3` itself) and left
//!    again right after; a new time namespace with clock offsets likewise (`unshare`, offsets,
//!    clone, back);
//! 4. `clone3` with the new namespaces (berth's set: `CLONE_NEWPID | NEWNS | NEWUTS | NEWIPC |
//!    NEWCGROUP [| NEWNET]`) and `CLONE_INTO_CGROUP`: the child starts inside its cgroup, so its
//!    cgroup namespace is rooted there and nothing it allocates is ever charged elsewhere;
//! 5. read the error pipe: EOF means `execve` succeeded; 8 bytes mean step N failed with errno E,
//!    or are a sync request (write the uid/gid maps, run the caller's before-pivot hook, then
//!    release the child), or "ready" (with a start fifo: `launch` returns, the container waits).
//!
//! Child (PID 1 of its pid namespace), see `child.rs`:
//! 1. reset signal mask and handlers, `setsid`, standard streams, controlling terminal;
//!    with a new user namespace: wait for the parent to write the maps, become its root;
//!    `setns` into joined namespaces (user first);
//! 2. make every mount private (`/` recursively; a slave with a `rootfsPropagation` of slave or
//!    shared), so nothing propagates back to the caller and the root can be pivoted into;
//! 3. `lo` up (own network namespace only);
//! 4. the root: tmpfs on the state dir; `upper/`, `work/`, `rootfs/` in it; overlay of the layers
//!    on `rootfs/` — the writable layer vanishes with the mount namespace (unless the spec puts
//!    `upper/` and `work/` in a persistent directory). Or a directory bind-mounted on itself;
//! 5. the mounts, in order, targets created (berth's set: `/proc` — after the pid namespace
//!    exists, so it shows the container's pids —, `/dev` tmpfs, `pts` (new devpts instance),
//!    `shm`, `mqueue`, `/sys` read-only and, with a cgroup, the cgroup2 hierarchy read-only at
//!    `/sys/fs/cgroup`, showing the container's own group as its root); then the default devices
//!    null, zero, full, random, urandom, tty, the `fd`/`std*`/`ptmx` symlinks and the spec's
//!    devices (`mknod`; in a user namespace the host's nodes are bind-mounted);
//! 6. binds (targets created in the writable layer); working dir made; read-only binds remounted;
//! 7. namespaced sysctls; masked paths; read-only paths (`/proc/sys` is written before it turns
//!    read-only); `oom_score_adj`; rlimits (raising a hard limit needs privileges still held);
//! 8. `sethostname`; the before-pivot sync (hooks); `pivot_root` into the root and detach the old
//!    root; the `rootfsPropagation` on the new `/`; read-only root remount if asked;
//! 9. with capability sets: `PR_SET_KEEPCAPS`, drop the bounding set (needs CAP_SETPCAP);
//!    `setgroups`, `setgid`, `setuid`; then `capset` and the ambient set;
//! 10. umask; `chdir` to the working dir; with a start fifo: report "ready" and block until
//!     `start` (from here on failures go to the container's stderr); `no_new_privs`; seccomp
//!     (last: the filter then only has to allow `execve`); `execve` over the `PATH` candidates.
//!
//! With [`Root::Joined`] (`exec`) steps 2–8 are skipped except rlimits and `oom_score_adj`.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};

use crate::cgroup::Cgroup;
use crate::child::{self, ChildPlan, Step, SyncKind};
use crate::error::StepError;
use crate::mounts::{self, Mount};
use crate::spec::{ContainerSpec, Device, DeviceKind, IdMap, Namespace, NamespaceKind, Root, Stdio};

/// `CLONE_INTO_CGROUP` (Linux 5.7), not in every libc version.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A running container.
#[derive(Debug)]
pub struct Container {
    /// Its init process, as seen by the caller.
    pub pid: Pid,
    /// Its cgroup, if it has one.
    pub cgroup: Option<Cgroup>,
}

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when it was killed.
    pub signal: Option<Signal>,
    /// The kernel's OOM killer killed something in the container's cgroup.
    pub oom_killed: bool,
}

impl ExitInfo {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl Container {
    /// Interprets a wait status of this container's process.
    pub fn exit_info(&self, status: WaitStatus) -> ExitInfo {
        let oom_killed = self.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        match status {
            WaitStatus::Exited(_, code) => ExitInfo { code: Some(code), signal: None, oom_killed },
            WaitStatus::Signaled(_, sig, _) => ExitInfo { code: None, signal: Some(sig), oom_killed },
            _ => ExitInfo { code: None, signal: None, oom_killed },
        }
    }

    /// Blocks until the process ends (for callers that do not run their own reaper).
    pub fn wait(&self) -> Result<ExitInfo, StepError> {
        loop {
            match waitpid(self.pid, None) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(self.exit_info(s)),
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(StepError::new("wait", e, self.pid.to_string())),
            }
        }
    }

    /// After the process ended: kill what is left in the cgroup and remove it. `EBUSY` from the
    /// removal means processes are still being torn down; the caller may retry later.
    pub fn cleanup(&self) -> std::io::Result<()> {
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all();
            cg.remove()?;
        }
        Ok(())
    }
}

fn cstr(s: impl AsRef<[u8]>, what: &str) -> Result<CString, StepError> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| StepError::new("prepare", Errno::EINVAL, format!("{what} contains a NUL byte")))
}

fn path_cstr(p: &Path) -> Result<CString, StepError> {
    use std::os::unix::ffi::OsStrExt;
    cstr(p.as_os_str().as_bytes(), &p.display().to_string())
}

/// `root` joined with an absolute container path, without `..` escapes.
fn in_root(root: &Path, path: &str) -> Result<PathBuf, StepError> {
    let mut out = root.to_path_buf();
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Err(StepError::new("prepare", Errno::EINVAL, format!("path `{path}` contains `..`")));
        }
        out.push(comp);
    }
    Ok(out)
}

struct PlanBuilder {
    steps: Vec<(Step, String, String)>,
    strings: Vec<CString>,
}

fn prepare_err(detail: impl Into<String>) -> StepError {
    StepError::new("prepare", Errno::EINVAL, detail)
}

impl PlanBuilder {
    fn push(&mut self, step: Step, name: &str, detail: impl Into<String>) {
        self.steps.push((step, name.to_string(), detail.into()));
    }

    fn mount(
        &mut self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
        name: &str,
    ) -> Result<(), StepError> {
        let detail = format!(
            "{} on {}{}",
            source.unwrap_or("none"),
            target.display(),
            data.map(|d| format!(" ({d})")).unwrap_or_default()
        );
        let step = Step::Mount {
            source: source.map(|s| cstr(s, "mount source")).transpose()?,
            target: path_cstr(target)?,
            fstype: fstype.map(|s| cstr(s, "fstype")).transpose()?,
            flags,
            data: data.map(|s| cstr(s, "mount options")).transpose()?,
        };
        self.push(step, name, detail);
        Ok(())
    }

    fn mkdir(&mut self, path: &Path, mode: libc::mode_t) -> Result<(), StepError> {
        self.push(Step::Mkdir { path: path_cstr(path)?, mode }, "mkdir", path.display().to_string());
        Ok(())
    }

    /// `mkdir -p` below `root` (which exists).
    fn mkdir_all(&mut self, root: &Path, rel: &str) -> Result<(), StepError> {
        let mut p = root.to_path_buf();
        for comp in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
            p.push(comp);
            self.mkdir(&p, 0o755)?;
        }
        Ok(())
    }
}

/// Descriptors and pipes the child uses, opened by the parent before `clone3`.
struct Prepared {
    /// Namespace files to `setns` into, in order (user first).
    ns_fds: Vec<(OwnedFd, NamespaceKind)>,
    /// The read end of the sync pipe, when the child waits for the parent.
    sync_read: Option<OwnedFd>,
    /// The start fifo, opened `O_PATH`.
    fifo: Option<OwnedFd>,
}

/// What the caller may do while the child waits.
#[derive(Default)]
pub struct LaunchHooks<'a> {
    /// Runs when the container's namespaces and mounts are ready, right before `pivot_root`
    /// (OCI `createRuntime`/`createContainer` hooks), with the container's pid. An error stops
    /// the launch: the child is killed and the error returned as the step `hook`.
    pub before_pivot: Option<&'a mut dyn FnMut(Pid) -> Result<(), String>>,
}

/// Whether `kind` is new (`Some(None)`), joined (`Some(Some(path))`) or shared (`None`).
fn ns_mode(list: &[Namespace], kind: NamespaceKind) -> Option<Option<&Path>> {
    list.iter().find(|n| n.kind == kind).map(|n| n.path.as_deref())
}

/// Adds one mount (targets created, bind remount, propagation) to the plan.
fn push_mount(b: &mut PlanBuilder, root: &Path, m: &Mount) -> Result<(), StepError> {
    if !m.destination.starts_with('/') {
        return Err(prepare_err(format!("mount destination `{}` is not absolute", m.destination)));
    }
    let target = in_root(root, &m.destination)?;
    let rel = m.destination.trim_start_matches('/');
    if m.is_bind() {
        let meta = fs::metadata(&m.source).map_err(|e| {
            StepError::io("bind mount", &e, format!("source {} of {}", m.source, m.destination))
        })?;
        if meta.is_dir() {
            b.mkdir_all(root, rel)?;
        } else {
            if let Some((parent, _)) = rel.rsplit_once('/') {
                b.mkdir_all(root, parent)?;
            }
            b.push(
                Step::Touch { path: path_cstr(&target)? },
                "create mount target",
                target.display().to_string(),
            );
        }
        b.mount(
            Some(&m.source),
            &target,
            None,
            libc::MS_BIND | (m.flags & libc::MS_REC),
            None,
            "bind mount",
        )?;
        let extra = m.flags & !(libc::MS_BIND | libc::MS_REC);
        if extra != 0 {
            b.push(
                Step::Remount { path: path_cstr(&target)?, flags: extra },
                "remount bind",
                format!("{} flags {extra:#x}", m.destination),
            );
        }
    } else {
        b.mkdir_all(root, rel)?;
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        let source = if m.source.is_empty() { m.fstype.as_str() } else { m.source.as_str() };
        b.mount(Some(source), &target, Some(&m.fstype), m.flags, data, &format!("mount {}", m.destination))?;
    }
    if m.propagation != 0 {
        b.mount(None, &target, None, m.propagation, None, "set mount propagation")?;
    }
    Ok(())
}

/// Adds the default devices, symlinks and the spec's devices below `root/dev`.
fn push_devices(
    b: &mut PlanBuilder,
    spec: &ContainerSpec,
    root: &Path,
    userns: bool,
) -> Result<(), StepError> {
    let dev = root.join("dev");
    b.mkdir(&dev, 0o755)?;
    let defaults = mounts::DEFAULT_DEVICES.iter().map(|(name, major, minor)| Device {
        path: format!("/dev/{name}"),
        kind: DeviceKind::Char,
        major: *major,
        minor: *minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    });
    let nodes: Vec<Device> = defaults.chain(spec.devices.iter().cloned()).collect();
    for Device { path, kind, major, minor, mode, uid, gid } in &nodes {
        let (mode, owner) = (mode & 0o7777, (*uid, *gid));
        let rel = path
            .strip_prefix("/dev/")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| prepare_err(format!("device {path} must be under /dev")))?;
        if let Some((parent, _)) = rel.rsplit_once('/') {
            b.mkdir_all(&dev, parent)?;
        }
        let p = in_root(&dev, rel)?;
        if userns && *kind != DeviceKind::Fifo {
            // mknod of a device is refused in a user namespace: bind the host's node, as runc
            // does rootless. A FIFO needs no privilege.
            b.push(Step::Touch { path: path_cstr(&p)? }, "create device target", p.display().to_string());
            b.mount(Some(path), &p, None, libc::MS_BIND, None, "bind device")?;
        } else {
            b.push(
                Step::Mknod {
                    path: path_cstr(&p)?,
                    mode: kind.file_type() | mode,
                    dev: libc::makedev(*major, *minor),
                    owner,
                },
                "mknod",
                p.display().to_string(),
            );
        }
    }
    for (target, link) in mounts::DEFAULT_SYMLINKS {
        let l = dev.join(link);
        b.push(
            Step::Symlink { target: cstr(target, "symlink")?, link: path_cstr(&l)? },
            "symlink",
            l.display().to_string(),
        );
    }
    if spec.controlling_tty {
        // The pty slave is on the caller's devpts, which the container cannot reach: bind it on
        // /dev/console (its stdin at this point) so that, reopened from there after pivot_root,
        // ttyname() and /proc/self/fd resolve inside the container — as runc does.
        // The bind source must be a path in the child's (copied) mount namespace, not the
        // descriptor, whose mount belongs to the caller's namespace.
        let Stdio::Fds([stdin, _, _]) = spec.stdio else {
            return Err(prepare_err("a terminal needs the pty slave as standard input"));
        };
        let slave = fs::read_link(format!("/proc/self/fd/{stdin}"))
            .map_err(|e| StepError::io("find the pty slave", &e, format!("fd {stdin}")))?;
        let console = dev.join("console");
        b.push(
            Step::Touch { path: path_cstr(&console)? },
            "create /dev/console",
            console.display().to_string(),
        );
        let source = slave.display().to_string();
        b.mount(Some(&source), &console, None, libc::MS_BIND, None, "bind the pty on /dev/console")?;
    }
    Ok(())
}

/// The root directory the child builds (before `pivot_root`), with its setup steps.
fn push_root(b: &mut PlanBuilder, spec: &ContainerSpec) -> Result<PathBuf, StepError> {
    match &spec.root {
        Root::Overlay => {
            // The writable layer and the merged root.
            let state = &spec.state_dir;
            b.mount(
                Some("tmpfs"),
                state,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some("mode=0700"),
                "mount state tmpfs",
            )?;
            let writable = spec.writable_layer.as_deref().unwrap_or(state);
            let (upper, work, root) = (writable.join("upper"), writable.join("work"), state.join("rootfs"));
            for d in [&upper, &work, &root] {
                b.mkdir(d, 0o755)?;
            }
            if spec.layers.is_empty() {
                return Err(prepare_err("the container has no image layers"));
            }
            for l in &spec.layers {
                if !l.is_dir() {
                    return Err(StepError::new(
                        "mount overlay",
                        Errno::ENOENT,
                        format!("layer {} is missing", l.display()),
                    ));
                }
            }
            let lower: Vec<String> = spec.layers.iter().rev().map(|l| l.display().to_string()).collect();
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                upper.display(),
                work.display()
            );
            b.mount(Some("overlay"), &root, Some("overlay"), 0, Some(&options), "mount overlay")?;
            Ok(root)
        }
        Root::Directory(dir) => {
            if !dir.is_dir() {
                return Err(StepError::new(
                    "root",
                    Errno::ENOENT,
                    format!("root directory {} does not exist", dir.display()),
                ));
            }
            let dir = dir
                .canonicalize()
                .map_err(|e| StepError::io("root", &e, format!("root directory {}", dir.display())))?;
            let s = dir.display().to_string();
            b.mount(Some(&s), &dir, None, libc::MS_BIND | libc::MS_REC, None, "bind root on itself")?;
            Ok(dir)
        }
        Root::Joined => Err(prepare_err("a joined root has no setup")),
    }
}

/// The mount point of the mount holding `path` (the longest mount point above it in
/// `/proc/self/mountinfo`; the child's mount namespace is a copy of ours).
fn mount_point_of(path: &Path) -> Result<PathBuf, StepError> {
    let path = path.canonicalize().map_err(|e| StepError::io("root", &e, path.display().to_string()))?;
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| StepError::io("read mountinfo", &e, "/proc/self/mountinfo"))?;
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| path.starts_with(p))
        .max_by_key(|p| p.as_os_str().len())
        .ok_or_else(|| prepare_err(format!("no mount holds {}", path.display())))
}

/// Builds the child's steps from the spec.
fn build_plan(spec: &ContainerSpec, prepared: &Prepared, before_pivot: bool) -> Result<ChildPlan, StepError> {
    let mut b = PlanBuilder { steps: Vec::new(), strings: Vec::new() };
    let namespaces = spec.effective_namespaces();
    let userns = ns_mode(&namespaces, NamespaceKind::User).is_some();

    b.push(Step::ResetSignals, "reset signals", "");
    b.push(Step::Setsid, "setsid", "");
    if let Stdio::Fds(fds) = spec.stdio {
        b.push(Step::Stdio(fds), "set up stdio", format!("{fds:?}"));
    }
    if let (Some(Option::None), Some(fd)) = (ns_mode(&namespaces, NamespaceKind::User), &prepared.sync_read) {
        b.push(
            Step::SyncParent { kind: SyncKind::IdMaps, read_fd: fd.as_raw_fd() },
            "wait for the uid/gid maps",
            "",
        );
        b.push(Step::BecomeRoot, "become root of the user namespace", "");
    }
    for (fd, kind) in &prepared.ns_fds {
        b.push(
            Step::SetNs { fd: fd.as_raw_fd(), nstype: kind.clone_flag() },
            "setns",
            format!("{} namespace", kind.proc_name()),
        );
        if *kind == NamespaceKind::User {
            b.push(Step::BecomeRoot, "become root of the user namespace", "");
        }
    }

    let joined = spec.root == Root::Joined;
    if !joined {
        // Propagation while the root is prepared, as runc does: by default every mount turns
        // private (nothing reaches the host); with a slave rootfsPropagation, a slave of the
        // host's; with a shared one, shared, so that binds of the host's shared mounts stay
        // peers of them (Kubernetes' Bidirectional volumes) — and then the mount holding the
        // rootfs turns private, as pivot_root refuses a shared parent (EINVAL). An unbindable
        // root is made so only after pivot_root (it could not be bound on itself), where the
        // requested propagation is set on the new "/".
        let requested = spec.root_propagation.unwrap_or(0);
        let (isolation, what) = if requested & libc::MS_SHARED != 0 {
            (libc::MS_SHARED, "share mounts with the host")
        } else if requested & libc::MS_SLAVE != 0 {
            (libc::MS_SLAVE, "receive mounts from the host")
        } else {
            (libc::MS_PRIVATE, "isolate mounts from the host")
        };
        b.mount(None, Path::new("/"), None, isolation | libc::MS_REC, None, what)?;
        if isolation == libc::MS_SHARED {
            if let Root::Directory(dir) = &spec.root {
                let holder = mount_point_of(dir)?;
                b.mount(None, &holder, None, libc::MS_PRIVATE, None, "make the rootfs's mount private")?;
            }
        }
        if ns_mode(&namespaces, NamespaceKind::Network) == Some(None) {
            b.push(Step::LoopbackUp, "bring lo up", "");
        }
        let root = push_root(&mut b, spec)?;
        let berth_set;
        let list = match &spec.mounts {
            Some(list) => list,
            None => {
                berth_set = mounts::berth_mounts(spec.cgroup.is_some());
                &berth_set
            }
        };
        for m in list {
            push_mount(&mut b, &root, m)?;
        }
        push_devices(&mut b, spec, &root, userns)?;

        // Binds and the working directory, while the writable layer is still writable. Binds
        // turn read-only only once all are mounted: a later bind's target may be created
        // inside an earlier read-only one (/etc/resolv.conf in a volume on /etc).
        for bind in &spec.binds {
            let m = Mount {
                destination: bind.target.clone(),
                fstype: String::new(),
                source: bind.source.display().to_string(),
                flags: libc::MS_BIND | libc::MS_REC,
                propagation: 0,
                data: String::new(),
            };
            push_mount(&mut b, &root, &m)?;
        }
        b.mkdir_all(&root, &spec.working_dir)?;
        for bind in spec.binds.iter().filter(|b| b.read_only) {
            let target = in_root(&root, &bind.target)?;
            b.push(
                Step::Remount { path: path_cstr(&target)?, flags: libc::MS_RDONLY },
                "remount bind",
                format!("{} read-only", bind.target),
            );
        }

        // Namespaced sysctls, before /proc/sys turns read-only.
        for (key, value) in &spec.sysctl {
            if key.contains('/') || key.contains("..") {
                return Err(prepare_err(format!("sysctl `{key}` is not a dotted name")));
            }
            let p = root.join("proc/sys").join(key.replace('.', "/"));
            b.push(
                Step::WriteFile { path: path_cstr(&p)?, data: value.as_bytes().to_vec() },
                "write sysctl",
                format!("{key} = {value}"),
            );
        }
        // Masked and read-only paths, on the container's own /proc and /sys.
        let devnull = path_cstr(&root.join("dev/null"))?;
        for m in &spec.masked_paths {
            let p = in_root(&root, m)?;
            b.push(Step::MaskPath { path: path_cstr(&p)?, devnull: devnull.clone() }, "mask path", m.clone());
        }
        for r in &spec.readonly_paths {
            let p = in_root(&root, r)?;
            b.push(Step::ReadonlyPath { path: path_cstr(&p)? }, "make path read-only", r.clone());
        }
        push_process_limits(&mut b, spec)?;

        if !spec.hostname.is_empty() {
            if ns_mode(&namespaces, NamespaceKind::Uts).is_none() {
                return Err(prepare_err("a hostname needs a UTS namespace of the container's own"));
            }
            b.push(Step::Hostname(cstr(&spec.hostname, "hostname")?), "sethostname", spec.hostname.clone());
        }
        if let (true, Some(fd)) = (before_pivot, &prepared.sync_read) {
            b.push(Step::SyncParent { kind: SyncKind::BeforePivot, read_fd: fd.as_raw_fd() }, "hook", "");
        }
        b.push(Step::PivotRoot(path_cstr(&root)?), "pivot_root", root.display().to_string());
        if let Some(propagation) = spec.root_propagation {
            b.mount(None, Path::new("/"), None, propagation, None, "set root propagation")?;
        }
        if spec.controlling_tty {
            b.push(
                Step::ReopenStdio(cstr("/dev/console", "path")?),
                "reopen the terminal as /dev/console",
                "",
            );
            b.push(Step::ControllingTty, "set controlling terminal", "");
        }
        if spec.read_only {
            b.push(
                Step::Remount { path: cstr("/", "path")?, flags: libc::MS_RDONLY },
                "remount root read-only",
                "",
            );
        }
    } else {
        push_process_limits(&mut b, spec)?;
        // Joining a running container (exec): its terminal is used as it is.
        if spec.controlling_tty {
            b.push(Step::ControllingTty, "set controlling terminal", "");
        }
    }

    // Privileges: keep the permitted set across the uid change, shrink the bounding set while
    // CAP_SETPCAP is still held, switch user, then set the final sets.
    let last = crate::capabilities::last_cap();
    // Seccomp without no_new_privs needs CAP_SYS_ADMIN: install it while that is still held.
    if let (Some(program), false) = (&spec.seccomp, spec.no_new_privileges) {
        b.push(Step::Seccomp(program.clone()), "install seccomp filter", format!("{program:?}"));
    }
    if let Some(c) = &spec.capabilities {
        b.push(Step::KeepCaps, "keep capabilities", "");
        b.push(
            Step::DropBounding { keep: c.bounding, last },
            "drop bounding capabilities",
            format!("{:#x}", c.bounding),
        );
    }
    b.push(
        Step::Identity { gid: spec.gid, uid: spec.uid, groups: spec.additional_gids.clone() },
        "set user",
        format!("uid {} gid {} groups {:?}", spec.uid, spec.gid, spec.additional_gids),
    );
    if let Some(c) = &spec.capabilities {
        b.push(
            Step::SetCaps { effective: c.effective, permitted: c.permitted, inheritable: c.inheritable },
            "set capabilities",
            crate::capabilities::names(c.effective).join(","),
        );
        b.push(
            Step::Ambient { mask: c.ambient, last },
            "set ambient capabilities",
            format!("{:#x}", c.ambient),
        );
    }
    if let Some(mask) = spec.umask {
        b.push(Step::Umask(mask as libc::mode_t), "umask", format!("{mask:o}"));
    }
    b.push(Step::Chdir(cstr(&spec.working_dir, "working_dir")?), "chdir", spec.working_dir.clone());
    if let Some(fd) = &prepared.fifo {
        let fifo = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()), "fifo")?;
        b.push(Step::WaitStart { fifo }, "open the start fifo", "needs /proc in the container");
    }
    if spec.no_new_privileges {
        b.push(Step::NoNewPrivs, "set no_new_privs", "");
        if let Some(program) = &spec.seccomp {
            b.push(Step::Seccomp(program.clone()), "install seccomp filter", format!("{program:?}"));
        }
    }

    // execve: argv, envp and the PATH candidates.
    let arg0 = spec.args.first().ok_or_else(|| prepare_err("the container has no command"))?;
    let path_var = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let candidates: Vec<CString> = if arg0.contains('/') {
        vec![cstr(arg0, "command")?]
    } else {
        path_var
            .split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstr(format!("{}/{}", d.trim_end_matches('/'), arg0), "command"))
            .collect::<Result<_, _>>()?
    };
    let args: Vec<CString> = spec.args.iter().map(|a| cstr(a, "argument")).collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec.env.iter().map(|e| cstr(e, "env")).collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let exec_detail =
        if arg0.contains('/') { arg0.clone() } else { format!("{arg0} (searched PATH={path_var})") };
    b.push(Step::Exec { candidates, argv, envp }, &format!("exec {arg0}"), exec_detail);
    b.strings.extend(args);
    b.strings.extend(env);
    Ok(ChildPlan { steps: b.steps, _strings: b.strings })
}

/// `oom_score_adj` and rlimits.
fn push_process_limits(b: &mut PlanBuilder, spec: &ContainerSpec) -> Result<(), StepError> {
    if let Some(adj) = spec.oom_score_adj {
        b.push(
            Step::WriteFile {
                path: cstr("/proc/self/oom_score_adj", "path")?,
                data: adj.to_string().into_bytes(),
            },
            "set oom_score_adj",
            adj.to_string(),
        );
    }
    for r in &spec.rlimits {
        b.push(
            Step::Rlimit { resource: r.resource, soft: r.soft, hard: r.hard },
            "setrlimit",
            format!("resource {} soft {} hard {}", r.resource, r.soft, r.hard),
        );
    }
    Ok(())
}

fn open_ns(path: &Path, kind: NamespaceKind) -> Result<OwnedFd, StepError> {
    fs::File::open(path).map(OwnedFd::from).map_err(|e| {
        StepError::io("open namespace", &e, format!("{} namespace path {}", kind.proc_name(), path.display()))
    })
}

/// Whether the running kernel has time namespaces.
pub fn kernel_has_time_namespaces() -> bool {
    Path::new("/proc/self/ns/time").exists()
}

fn map_lines(maps: &[IdMap]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size)).collect()
}

/// Writes the uid and gid maps of the child's new user namespace.
fn write_id_maps(pid: Pid, spec: &ContainerSpec) -> Result<(), StepError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |file: &str, text: &str| {
        fs::OpenOptions::new()
            .write(true)
            .open(proc.join(file))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| StepError::io(format!("write {file}"), &e, text.trim_end().replace('\n', "; ")))
    };
    // An unprivileged parent may only write gid_map after denying setgroups.
    if !nix::unistd::geteuid().is_root() && !spec.gid_mappings.is_empty() {
        write("setgroups", "deny")?;
    }
    if !spec.uid_mappings.is_empty() {
        write("uid_map", &map_lines(&spec.uid_mappings))?;
    }
    if !spec.gid_mappings.is_empty() {
        write("gid_map", &map_lines(&spec.gid_mappings))?;
    }
    Ok(())
}

/// Writes the clock offsets of the caller's `time_for_children` namespace.
fn write_time_offsets(spec: &ContainerSpec) -> Result<(), StepError> {
    let text: String = spec
        .time_offsets
        .iter()
        .map(|o| format!("{} {} {}\n", if o.boottime { "boottime" } else { "monotonic" }, o.secs, o.nanos))
        .collect();
    fs::write("/proc/self/timens_offsets", &text)
        .map_err(|e| StepError::io("write timens_offsets", &e, text.trim_end().replace('\n', "; ")))
}

/// Launches the container; returns once its process has `execve`d (or, with a start fifo, is
/// ready and waiting for `start`), or with the step that failed.
pub fn launch(spec: &ContainerSpec) -> Result<Container, StepError> {
    launch_with(spec, LaunchHooks::default())
}

/// [`launch`] with callbacks at the points where the child waits for the caller.
pub fn launch_with(spec: &ContainerSpec, mut hooks: LaunchHooks<'_>) -> Result<Container, StepError> {
    if !spec.working_dir.starts_with('/') {
        return Err(prepare_err(format!("working_dir `{}` is not absolute", spec.working_dir)));
    }
    let namespaces = spec.effective_namespaces();
    if spec.root != Root::Joined && ns_mode(&namespaces, NamespaceKind::Mount).is_none() {
        return Err(prepare_err(
            "the container needs a mount namespace to pivot_root in (a new one, or one joined by path)",
        ));
    }
    let time_mode = ns_mode(&namespaces, NamespaceKind::Time);
    if time_mode.is_some() && !kernel_has_time_namespaces() {
        return Err(prepare_err("the kernel has no time namespaces (CONFIG_TIME_NS)"));
    }
    let new_user = ns_mode(&namespaces, NamespaceKind::User) == Some(None);

    // Namespaces to join: user first, pid by the parent.
    let mut ns_fds = Vec::new();
    let mut join_pid: Option<OwnedFd> = None;
    for kind in NamespaceKind::ALL {
        if let Some(Some(path)) = ns_mode(&namespaces, kind) {
            let fd = open_ns(path, kind)?;
            if kind == NamespaceKind::Pid {
                join_pid = Some(fd);
            } else {
                ns_fds.push((fd, kind));
            }
        }
    }
    let fifo = spec
        .start_fifo
        .as_ref()
        .map(|p| {
            nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                .map(|fd| {
                    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
                })
                .map_err(|e| StepError::new("open start fifo", e, p.display().to_string()))
        })
        .transpose()?;
    let before_pivot = hooks.before_pivot.is_some() && spec.root != Root::Joined;
    let (sync_read, sync_write) = if new_user || before_pivot {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| StepError::new("pipe", e, ""))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let prepared = Prepared { ns_fds, sync_read, fifo };
    let plan = build_plan(spec, &prepared, before_pivot)?;

    if spec.root == Root::Overlay {
        fs::create_dir_all(&spec.state_dir)
            .map_err(|e| StepError::io("create state dir", &e, spec.state_dir.display().to_string()))?;
    }
    // A group that existed before (a runtime caller's `cgroupsPath`) is joined, never removed.
    let cgroup_existed = spec.cgroup.as_ref().is_some_and(|(path, _)| path.exists());
    let cgroup = match &spec.cgroup {
        Some((path, limits)) => Some(Cgroup::create(path, limits)?),
        None => None,
    };
    let cgroup_fd: Option<OwnedFd> = match (&cgroup, &spec.join_cgroup) {
        (Some(c), _) => Some(c.open_dir()?),
        (None, Some(path)) => Some(Cgroup::at(path).open_dir()?),
        (None, None) => None,
    };
    let fail = |e: StepError| {
        if let Some(cg) = cgroup.as_ref().filter(|_| !cgroup_existed) {
            let _ = cg.remove();
        }
        e
    };
    let (err_read, err_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(StepError::new("pipe", e, "")))?;

    let mut flags: u64 = 0;
    for n in namespaces.iter().filter(|n| n.path.is_none()) {
        flags |= n.kind.clone_flag() as u64;
    }
    // SAFETY: clone_args is plain data; all-zero is a valid "no options" value.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = &cgroup_fd {
        flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }

    // Parent-side namespace switches, undone right after the clone.
    let mut restore: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    let switch = (|| -> Result<(), StepError> {
        if let Some(fd) = &join_pid {
            restore.push((open_ns(Path::new("/proc/self/ns/pid"), NamespaceKind::Pid)?, libc::CLONE_NEWPID));
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(|e| StepError::new("setns", e, "pid namespace (for the container)"))?;
        }
        if time_mode == Some(None) && !spec.time_offsets.is_empty() {
            flags &= !(libc::CLONE_NEWTIME as u64);
            restore
                .push((open_ns(Path::new("/proc/self/ns/time"), NamespaceKind::Time)?, libc::CLONE_NEWTIME));
            // SAFETY: plain system call; affects only the namespace of later children.
            if unsafe { libc::unshare(libc::CLONE_NEWTIME) } < 0 {
                return Err(StepError::new("unshare", Errno::last(), "time namespace"));
            }
            write_time_offsets(spec)?;
        }
        Ok(())
    })();
    let undo = |restore: &[(OwnedFd, libc::c_int)]| -> Result<(), StepError> {
        for (fd, nstype) in restore.iter().rev() {
            // SAFETY: plain system call on a descriptor we own.
            if unsafe { libc::setns(fd.as_raw_fd(), *nstype) } < 0 {
                return Err(StepError::new("setns", Errno::last(), "back to the caller's namespace"));
            }
        }
        Ok(())
    };
    if let Err(e) = switch {
        let _ = undo(&restore);
        return Err(fail(e));
    }
    args.flags = flags;
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child gets a copy
    // of this address space and continues here with return value 0. The child only runs
    // `child::run`, which makes raw system calls on data prepared above and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret == 0 {
        // SAFETY: we are the freshly cloned child; see child::run.
        unsafe { child::run(&plan, err_write.as_raw_fd()) }
    }
    let clone_errno = Errno::last();
    let undone = undo(&restore);
    if ret < 0 {
        return Err(fail(StepError::new(
            "clone3",
            clone_errno,
            format!("namespaces for container {}", spec.name),
        )));
    }
    // clone3 returned a pid, which the kernel keeps below PID_MAX_LIMIT (2^22): it fits a pid_t.
    #[allow(clippy::cast_possible_truncation)]
    let pid = Pid::from_raw(ret as libc::pid_t);
    drop(err_write);
    drop(cgroup_fd);
    drop(prepared);
    let abort = |e: StepError| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        fail(e)
    };
    undone.map_err(abort)?;

    loop {
        let (got, index, value) = read_message(err_read.as_raw_fd()).map_err(abort)?;
        if got == 0 {
            if spec.start_fifo.is_some() {
                return Err(abort(StepError::new(
                    "container setup",
                    Errno::EIO,
                    "the child exited without a report",
                )));
            }
            return Ok(Container { pid, cgroup });
        }
        if got < 8 {
            return Err(abort(StepError::new("container setup", Errno::EIO, "short report from the child")));
        }
        match index {
            child::READY => return Ok(Container { pid, cgroup }),
            child::SYNC => {
                let result = if value == SyncKind::IdMaps as i32 {
                    write_id_maps(pid, spec)
                } else if let Some(hook) = hooks.before_pivot.as_mut() {
                    hook(pid).map_err(|msg| StepError::new("hook", Errno::ECANCELED, msg))
                } else {
                    Ok(())
                };
                result.map_err(abort)?;
                if let Some(w) = &sync_write {
                    nix::unistd::write(w, &[0u8])
                        .map_err(|e| abort(StepError::new("release child", e, "")))?;
                }
            }
            _ => {
                // The child failed and has exited: reap it and report its step.
                let _ = waitpid(pid, None);
                let (name, detail) = plan
                    .steps
                    .get(index as usize)
                    .map(|(_, n, d)| (n.clone(), d.clone()))
                    .unwrap_or_else(|| ("container setup".to_string(), String::new()));
                return Err(fail(StepError::new(name, Errno::from_raw(value), detail)));
            }
        }
    }
}

/// Reads one 8-byte message from the error pipe: (bytes read, index, value).
fn read_message(fd: RawFd) -> Result<(usize, u32, i32), StepError> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(StepError::new("read error pipe", e, "")),
        }
    }
    let index = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let value = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    Ok((got, index, value))
}
