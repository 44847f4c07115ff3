//! Launching a container: the parent's side, and the order of system calls.
//!
//! # Order
//! Parent (the caller, e.g. PID 1):
//! 1. create the cgroup and write its limits, open it (`O_PATH`);
//! 2. create the close-on-exec error pipe; build every path and string the child needs;
//! 3. `clone3(CLONE_NEWPID | NEWNS | NEWUTS | NEWIPC | NEWCGROUP [| NEWNET] | CLONE_INTO_CGROUP)`:
//!    the child starts inside its cgroup, so its cgroup namespace is rooted there and nothing it
//!    allocates is ever charged elsewhere;
//! 4. read the pipe: EOF means `execve` succeeded; 8 bytes mean step N failed with errno E.
//!
//! Child (PID 1 of its pid namespace), see `child.rs`:
//! 1. reset signal mask and handlers, `setsid`, standard streams;
//! 2. make every mount private (`/` recursively), so nothing propagates back to the caller;
//! 3. `lo` up (own network namespace only);
//! 4. tmpfs on the state dir; `upper/`, `work/`, `rootfs/` in it; overlay of the layers on
//!    `rootfs/` — the writable layer vanishes with the mount namespace;
//! 5. `/proc` (after the pid namespace exists, so it shows the container's pids), `/dev` tmpfs with
//!    null, zero, full, random, urandom, tty, `pts` (new devpts instance), `ptmx`, `shm`, `mqueue`;
//!    `/sys` read-only and, with a cgroup, the cgroup2 hierarchy read-only at `/sys/fs/cgroup`
//!    (showing the container's own group as its root);
//! 6. binds (targets created in the writable layer, read-only ones remounted); working dir made;
//! 7. namespaced sysctls; masked paths; read-only paths (`/proc/sys` is written before it turns
//!    read-only); `oom_score_adj`; rlimits (raising a hard limit needs privileges still held);
//! 8. `sethostname`; `pivot_root` into `rootfs/` and detach the old root; read-only root remount
//!    if asked;
//! 9. with capability sets: `PR_SET_KEEPCAPS`, drop the bounding set (needs CAP_SETPCAP);
//!    `setgroups`, `setgid`, `setuid`; then `capset` and the ambient set;
//! 10. umask; `chdir` to the working dir; `no_new_privs`; seccomp (last: the filter then only
//!     has to allow `execve`); `execve` over the `PATH` candidates.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};

use crate::cgroup::Cgroup;
use crate::child::{self, ChildPlan, Step};
use crate::error::StepError;
use crate::spec::{ContainerSpec, Stdio};

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

/// Builds the child's steps from the spec.
fn build_plan(spec: &ContainerSpec) -> Result<ChildPlan, StepError> {
    let mut b = PlanBuilder { steps: Vec::new(), strings: Vec::new() };
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

    b.push(Step::ResetSignals, "reset signals", "");
    b.push(Step::Setsid, "setsid", "");
    if let Stdio::Fds(fds) = spec.stdio {
        b.push(Step::Stdio(fds), "set up stdio", format!("{fds:?}"));
    }
    b.mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None, "make mounts private")?;
    if spec.new_net {
        b.push(Step::LoopbackUp, "bring lo up", "");
    }

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
    let (upper, work, root) = (state.join("upper"), state.join("work"), state.join("rootfs"));
    for d in [&upper, &work, &root] {
        b.mkdir(d, 0o755)?;
    }
    if spec.layers.is_empty() {
        return Err(StepError::new("prepare", Errno::EINVAL, "the container has no image layers"));
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
    let options =
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    b.mount(Some("overlay"), &root, Some("overlay"), 0, Some(&options), "mount overlay")?;

    // Kernel filesystems and /dev.
    for d in ["proc", "dev", "sys"] {
        b.mkdir(&root.join(d), 0o755)?;
    }
    b.mount(Some("proc"), &root.join("proc"), Some("proc"), nosuid_nodev_noexec, None, "mount proc")?;
    let dev = root.join("dev");
    b.mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        "mount /dev",
    )?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let p = dev.join(name);
        b.push(
            Step::Mknod {
                path: path_cstr(&p)?,
                mode: libc::S_IFCHR | 0o666,
                dev: libc::makedev(major, minor),
                owner: (0, 0),
            },
            "mknod",
            p.display().to_string(),
        );
    }
    for (target, link) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        let l = dev.join(link);
        b.push(
            Step::Symlink { target: cstr(target, "symlink")?, link: path_cstr(&l)? },
            "symlink",
            l.display().to_string(),
        );
    }
    for d in ["pts", "shm", "mqueue"] {
        b.mkdir(&dev.join(d), 0o755)?;
    }
    for d in &spec.devices {
        let rel = d.path.strip_prefix("/dev/").filter(|r| !r.is_empty()).ok_or_else(|| {
            StepError::new("prepare", Errno::EINVAL, format!("device {} must be under /dev", d.path))
        })?;
        if let Some((parent, _)) = rel.rsplit_once('/') {
            b.mkdir_all(&dev, parent)?;
        }
        let p = in_root(&dev, rel)?;
        let kind = if d.char_device { libc::S_IFCHR } else { libc::S_IFBLK };
        b.push(
            Step::Mknod {
                path: path_cstr(&p)?,
                mode: kind | (d.mode & 0o7777),
                dev: libc::makedev(d.major, d.minor),
                owner: (d.uid, d.gid),
            },
            "mknod",
            p.display().to_string(),
        );
    }
    b.mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "mount devpts",
    )?;
    b.mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
        "mount /dev/shm",
    )?;
    b.mount(
        Some("mqueue"),
        &dev.join("mqueue"),
        Some("mqueue"),
        nosuid_nodev_noexec,
        None,
        "mount /dev/mqueue",
    )?;
    b.mount(
        Some("sysfs"),
        &root.join("sys"),
        Some("sysfs"),
        nosuid_nodev_noexec | libc::MS_RDONLY,
        None,
        "mount /sys",
    )?;
    if spec.cgroup.is_some() {
        b.mount(
            Some("cgroup2"),
            &root.join("sys/fs/cgroup"),
            Some("cgroup2"),
            nosuid_nodev_noexec | libc::MS_RDONLY,
            None,
            "mount /sys/fs/cgroup",
        )?;
    }

    // Binds and the working directory, while the writable layer is still writable.
    for bind in &spec.binds {
        let meta = fs::metadata(&bind.source)
            .map_err(|e| StepError::io("bind", &e, format!("source {}", bind.source.display())))?;
        let target = in_root(&root, &bind.target)?;
        let rel = bind.target.trim_start_matches('/');
        if meta.is_dir() {
            b.mkdir_all(&root, rel)?;
        } else {
            if let Some((parent, _)) = rel.rsplit_once('/') {
                b.mkdir_all(&root, parent)?;
            }
            b.push(
                Step::Touch { path: path_cstr(&target)? },
                "create bind target",
                target.display().to_string(),
            );
        }
        let src = bind.source.display().to_string();
        b.mount(Some(&src), &target, None, libc::MS_BIND | libc::MS_REC, None, "bind mount")?;
        if bind.read_only {
            b.mount(
                None,
                &target,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                None,
                "remount bind read-only",
            )?;
        }
    }
    b.mkdir_all(&root, &spec.working_dir)?;

    // Namespaced sysctls, before /proc/sys turns read-only.
    for (key, value) in &spec.sysctl {
        if key.contains('/') || key.contains("..") {
            return Err(StepError::new(
                "prepare",
                Errno::EINVAL,
                format!("sysctl `{key}` is not a dotted name"),
            ));
        }
        let p = root.join("proc/sys").join(key.replace('.', "/"));
        b.push(
            Step::WriteFile { path: path_cstr(&p)?, data: value.as_bytes().to_vec() },
            "write sysctl",
            format!("{key} = {value}"),
        );
    }
    // Masked and read-only paths, on the container's own /proc and /sys.
    let devnull = path_cstr(&dev.join("null"))?;
    for m in &spec.masked_paths {
        let p = in_root(&root, m)?;
        b.push(Step::MaskPath { path: path_cstr(&p)?, devnull: devnull.clone() }, "mask path", m.clone());
    }
    for r in &spec.readonly_paths {
        let p = in_root(&root, r)?;
        b.push(Step::ReadonlyPath { path: path_cstr(&p)? }, "make path read-only", r.clone());
    }
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

    b.push(Step::Hostname(cstr(&spec.hostname, "hostname")?), "sethostname", spec.hostname.clone());
    b.push(Step::PivotRoot(path_cstr(&root)?), "pivot_root", root.display().to_string());
    if spec.read_only {
        b.mount(
            None,
            Path::new("/"),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
            "remount root read-only",
        )?;
    }
    // Privileges: keep the permitted set across the uid change, shrink the bounding set while
    // CAP_SETPCAP is still held, switch user, then set the final sets.
    let last = crate::capabilities::last_cap();
    // Without no_new_privs the kernel only accepts a filter from a holder of CAP_SYS_ADMIN:
    // install it while the capabilities are still all there.
    if let (Some(program), false) = (&spec.seccomp, spec.no_new_privileges) {
        b.push(
            Step::Seccomp(program.clone()),
            "install seccomp filter",
            format!("{} instructions", program.filter.len()),
        );
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
    if spec.no_new_privileges {
        b.push(Step::NoNewPrivs, "set no_new_privs", "");
        // Last before execve: the filter then only has to allow execve itself.
        if let Some(program) = &spec.seccomp {
            b.push(
                Step::Seccomp(program.clone()),
                "install seccomp filter",
                format!("{} instructions", program.filter.len()),
            );
        }
    }

    // execve: argv, envp and the PATH candidates.
    let arg0 = spec
        .args
        .first()
        .ok_or_else(|| StepError::new("prepare", Errno::EINVAL, "the container has no command"))?;
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

/// Launches the container; returns once its process has `execve`d, or with the step that failed.
pub fn launch(spec: &ContainerSpec) -> Result<Container, StepError> {
    if !spec.working_dir.starts_with('/') {
        return Err(StepError::new(
            "prepare",
            Errno::EINVAL,
            format!("working_dir `{}` is not absolute", spec.working_dir),
        ));
    }
    let cgroup = match &spec.cgroup {
        Some((path, limits)) => Some(Cgroup::create(path, limits)?),
        None => None,
    };
    let cgroup_fd: Option<OwnedFd> = cgroup.as_ref().map(|c| c.open_dir()).transpose()?;
    fs::create_dir_all(&spec.state_dir)
        .map_err(|e| StepError::io("create state dir", &e, spec.state_dir.display().to_string()))?;
    let plan = build_plan(spec)?;
    let (err_read, err_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| StepError::new("pipe", e, ""))?;

    let mut flags = (libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP) as u64;
    if spec.new_net {
        flags |= libc::CLONE_NEWNET as u64;
    }
    // SAFETY: clone_args is plain data; all-zero is a valid "no options" value.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = &cgroup_fd {
        flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
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
    if ret < 0 {
        let e = Errno::last();
        return Err(StepError::new("clone3", e, format!("namespaces for container {}", spec.name)));
    }
    let pid = Pid::from_raw(ret as i32);
    drop(err_write);
    drop(cgroup_fd);

    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(err_read.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(StepError::new("read error pipe", e, "")),
        }
    }
    if got == 0 {
        return Ok(Container { pid, cgroup });
    }
    // The child failed before exec and has exited: reap it and report its step.
    let _ = waitpid(pid, None);
    if let Some(cg) = &cgroup {
        let _ = cg.remove();
    }
    if got < buf.len() {
        return Err(StepError::new("container setup", Errno::EIO, "short report from the child"));
    }
    let index = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = Errno::from_raw(i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]));
    let (name, detail) = plan
        .steps
        .get(index)
        .map(|(_, n, d)| (n.clone(), d.clone()))
        .unwrap_or_else(|| ("container setup".to_string(), String::new()));
    Err(StepError::new(name, errno, detail))
}
