//! The container child between `clone3` and `execve`.
//!
//! The parent may be multi-threaded (tests, the CLI), and `clone3` bypasses libc's fork
//! handlers, so the child must not allocate or take locks: everything it needs is prepared by the
//! parent as a [`ChildPlan`] of raw steps over `CString`s, and the child only makes system calls.
//! Credentials change through the bare system calls, never glibc's process-wide wrappers (see
//! [`raw_id_call`]). On failure it writes `(step index, errno)` to the error pipe and `_exit`s; the parent turns
//! the index back into the step's description.
//!
//! The same pipe carries two more messages, with reserved indexes: [`SYNC`] (the child waits for
//! the parent on the sync pipe: uid/gid maps to write, hooks to run) and [`READY`] (all set up,
//! now blocking on the start fifo). After READY, nobody reads the error pipe any more: a failing
//! step (opening the start fifo included) is then described on the child's stderr (`berth-runtime: STEP: DETAIL:
//! errno N`) and the child `_exit(127)`s.

/// Error-pipe index of a sync request; the errno field carries the [`SyncKind`] number.
pub(crate) const SYNC: u32 = u32::MAX - 1;
/// Error-pipe index of the "ready, waiting for start" report.
pub(crate) const READY: u32 = u32::MAX;

/// What the child waits for the parent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum SyncKind {
    /// Write `/proc/PID/uid_map` and `gid_map` of the new user namespace.
    IdMaps = 1,
    /// Namespaces and mounts are ready, `pivot_root` comes next: run hooks.
    BeforePivot = 2,
}

use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr;

/// One system call (or a short fixed sequence) the child performs.
pub(crate) enum Step {
    /// Reset the signal mask and every handler to the default (PID 1 blocks signals for its
    /// signalfd; a container must not inherit that).
    ResetSignals,
    /// Start a new session: the container is nobody's job-control child.
    Setsid,
    /// Put these caller descriptors on 0, 1, 2 and mark every other descriptor close-on-exec.
    Stdio([RawFd; 3]),
    /// `mount(2)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `setns(2)` into the namespace behind a descriptor the parent opened.
    SetNs { fd: RawFd, nstype: libc::c_int },
    /// Report [`SYNC`] with this kind on the error pipe and block until the parent writes one
    /// byte to the sync pipe (a zero byte: go on; anything else or EOF: exit).
    SyncParent { kind: SyncKind, read_fd: RawFd },
    /// `setresgid(0, 0, 0)`, `setresuid(0, 0, 0)`: become root of a new or joined user namespace.
    BecomeRoot,
    /// `ioctl(0, TIOCSCTTY)`: standard input becomes the controlling terminal.
    ControllingTty,
    /// Open this path read-write and put it on 0, 1 and 2.
    ReopenStdio(CString),
    /// Remount a mount point with `flags | MS_REMOUNT | MS_BIND`, keeping the flags the mount
    /// already has (`statvfs`): a user namespace may not clear locked `nosuid`/`nodev`/….
    Remount { path: CString, flags: libc::c_ulong },
    /// Report [`READY`], then open the start fifo (`/proc/self/fd/N`) for writing — blocking
    /// until `start` opens it for reading — and write one byte.
    WaitStart { fifo: CString },
    /// `mkdir(2)`, an existing path accepted.
    Mkdir { path: CString, mode: libc::mode_t },
    /// Create an empty file if missing (a bind-mount target for a file).
    Touch { path: CString },
    /// `mknod(2)` (an existing node of the same device is kept, any other file is `EEXIST`),
    /// then `chmod` (the umask would narrow the mode) and `chown`.
    Mknod { path: CString, mode: libc::mode_t, dev: libc::dev_t, owner: (libc::uid_t, libc::gid_t) },
    /// Write bytes to an existing file (sysctls, `oom_score_adj`).
    WriteFile { path: CString, data: Vec<u8> },
    /// Hide a path: a read-only tmpfs over a directory, `devnull` bound over anything else; a
    /// missing path is skipped.
    MaskPath { path: CString, devnull: CString },
    /// Bind a path on itself and remount it read-only; a missing path is skipped.
    ReadonlyPath { path: CString },
    /// `setrlimit(2)`.
    Rlimit { resource: u32, soft: u64, hard: u64 },
    /// `PR_SET_KEEPCAPS`: keep the permitted set across the uid change.
    KeepCaps,
    /// Drop from the bounding set every capability up to `last` not in `keep`.
    DropBounding { keep: u64, last: u8 },
    /// `capset(2)` of effective, permitted and inheritable.
    SetCaps { effective: u64, permitted: u64, inheritable: u64 },
    /// Clear the ambient set, then raise the capabilities in `mask`.
    Ambient { mask: u64, last: u8 },
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// `umask(2)`.
    Umask(libc::mode_t),
    /// Install the seccomp filter.
    Seccomp(crate::seccomp::SeccompProgram),
    /// `symlink(2)`, `EEXIST` ignored.
    Symlink { target: CString, link: CString },
    /// Bring `lo` up in the new network namespace.
    LoopbackUp,
    /// `sethostname(2)`.
    Hostname(CString),
    /// `chdir(new_root)`, `pivot_root(".", ".")`, `fchdir` into the old root (opened before),
    /// made a slave recursively, `umount2(".", MNT_DETACH)`, `chdir("/")`: the old root is
    /// stacked on the new one and detached, with no directory needed for it.
    PivotRoot(CString),
    /// `setgroups`, `setgid`, `setuid`, in that order (groups need the privilege uid 0 has).
    /// An empty group list refused with `EPERM` (a user namespace with `setgroups` denied) is
    /// accepted.
    Identity { gid: libc::gid_t, uid: libc::uid_t, groups: Vec<libc::gid_t> },
    /// `chdir(2)`.
    Chdir(CString),
    /// `execve` each candidate path in turn (the `PATH` search done in advance).
    Exec { candidates: Vec<CString>, argv: Vec<*const libc::c_char>, envp: Vec<*const libc::c_char> },
}

/// Steps in order, with a description of each for error messages.
pub(crate) struct ChildPlan {
    pub steps: Vec<(Step, String, String)>,
    /// Keeps the strings `argv`/`envp` point into alive.
    pub _strings: Vec<CString>,
}

fn errno() -> i32 {
    // SAFETY: `__errno_location` returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Runs the plan; never returns. `err_fd` is the write end of the close-on-exec error pipe.
///
/// # Safety
/// Must only be called in the child right after `clone3`, in a process whose only thread is the
/// caller. It performs raw system calls on pointers the parent prepared in `plan`.
pub(crate) unsafe fn run(plan: &ChildPlan, err_fd: RawFd) -> ! {
    // Once READY is sent the parent stops reading the error pipe (`create` may have exited):
    // from then on a failure, the start fifo's included, is told on stderr.
    let mut ready = false;
    for ((step, name, detail), index) in plan.steps.iter().zip(0u32..) {
        let result = match step {
            Step::SyncParent { kind, read_fd } => sync_parent(err_fd, *kind, *read_fd),
            Step::WaitStart { fifo } => {
                send(err_fd, READY, 0);
                ready = true;
                // SAFETY: our caller's contract (see above); `fifo` is a live `CString` of the plan.
                unsafe { wait_start(fifo) }
            }
            // SAFETY: our caller's contract (see above): the freshly cloned, single-threaded
            // child, with the pointers of a plan the parent keeps alive.
            _ => unsafe { perform(step) },
        };
        if let Err(e) = result {
            if ready {
                report_stderr(name, detail, e);
            }
            report(err_fd, index, e);
        }
    }
    // The last step is Exec, which only returns on failure: not reached. Report an index past
    // the last step, which the parent describes as "container setup". A plan has tens of steps
    // (one per mount, device, limit…), so its length fits a u32 with room for SYNC and READY.
    #[allow(clippy::cast_possible_truncation)]
    let past_end = plan.steps.len() as u32;
    report(err_fd, past_end, libc::ENOEXEC)
}

/// Writes one 8-byte message to the error pipe.
fn send(err_fd: RawFd, index: u32, value: i32) {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&index.to_le_bytes());
    buf[4..].copy_from_slice(&value.to_le_bytes());
    // SAFETY: writing a stack buffer to a pipe descriptor; 8 bytes are written atomically.
    unsafe {
        libc::write(err_fd, buf.as_ptr().cast(), buf.len());
    }
}

fn report(err_fd: RawFd, index: u32, errno: i32) -> ! {
    send(err_fd, index, errno);
    // SAFETY: exiting without running any destructor or atexit handler of the parent's copy.
    unsafe { libc::_exit(127) }
}

/// After `start`: describe the failed step on stderr, allocation-free, and exit 127.
fn report_stderr(name: &str, detail: &str, errno: i32) -> ! {
    let mut digits = [0u8; 12];
    let mut n = errno.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    let parts: [&[u8]; 7] =
        [b"berth-runtime: ", name.as_bytes(), b": ", detail.as_bytes(), b": errno ", &digits[i..], b"\n"];
    for p in parts {
        // SAFETY: writing borrowed bytes (prepared by the parent) to stderr.
        unsafe {
            libc::write(2, p.as_ptr().cast(), p.len());
        }
    }
    // SAFETY: exiting without running the parent's destructors.
    unsafe { libc::_exit(127) }
}

/// Asks the parent to act and waits for its answer.
fn sync_parent(err_fd: RawFd, kind: SyncKind, read_fd: RawFd) -> Result<(), i32> {
    send(err_fd, SYNC, kind as i32);
    let mut byte = [1u8; 1];
    loop {
        // SAFETY: reading one byte into a stack buffer.
        let n = unsafe { libc::read(read_fd, byte.as_mut_ptr().cast(), 1) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n == 1 && byte[0] == 0 {
            return Ok(());
        }
        return Err(if n < 0 { errno() } else { libc::ECANCELED });
    }
}

/// Opens the start fifo for writing (blocks until a reader comes) and writes one byte. The
/// descriptor stays open, close-on-exec: `start` sees the fifo hang up when `execve` succeeds
/// (or the child exits), and runs the `poststart` hooks only then.
///
/// # Safety
/// As [`run`]; `fifo` is a live `CString`.
unsafe fn wait_start(fifo: &CString) -> Result<(), i32> {
    // SAFETY: `fifo` is a live NUL-terminated string for open(2); write(2) reads one byte of a
    // static literal; the descriptor is ours, closed on failure, else by execve.
    unsafe {
        let fd = loop {
            let fd = libc::open(fifo.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 && errno() == libc::EINTR {
                continue;
            }
            break fd;
        };
        check(fd)?;
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let e = errno();
        if n < 0 {
            libc::close(fd);
            Err(e)
        } else {
            Ok(())
        }
    }
}

/// `setuid`, `setgid`, `setresuid` or `setresgid` (`call`) as the bare system call, with up to
/// three ids (the unused ones ignored by the kernel).
///
/// Never glibc's wrappers here: they apply the change to every thread of the process through
/// `__nptl_setxid`, which walks the thread list copied from a multi-threaded parent and waits
/// for threads that do not exist in this child — a deadlock seen in the runtime's host tests.
/// The child has one thread, so the bare call is what POSIX asks for.
///
/// # Safety
/// Only for those four calls: each takes at most three id arguments.
unsafe fn raw_id_call(call: libc::c_long, ids: [libc::c_uint; 3]) -> libc::c_long {
    // SAFETY: the calls take ids by value; extra arguments are ignored.
    unsafe { libc::syscall(call, ids[0], ids[1], ids[2]) }
}

/// A system call's result (`int`, or the `long` of syscall(2)): `Err(errno)` when negative.
fn check(ret: impl Into<i64>) -> Result<(), i32> {
    if ret.into() < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map(|c| c.as_ptr()).unwrap_or(ptr::null())
}

/// Performs one step.
///
/// # Safety
/// See [`run`]: only in the freshly cloned child; all pointers come from live `CString`s.
unsafe fn perform(step: &Step) -> Result<(), i32> {
    // SAFETY: the caller's contract (see `run`): we are the freshly cloned child with one thread,
    // so the raw calls cannot disturb other threads or locks; every pointer passed comes from a
    // live `CString`, array or stack value of the plan, and the out-parameters are locals.
    unsafe {
        match step {
            Step::ResetSignals => {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                check(libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut()))?;
                for sig in 1..libc::SIGRTMAX() {
                    if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                        libc::signal(sig, libc::SIG_DFL);
                    }
                }
                Ok(())
            }
            Step::Setsid => check(libc::setsid()),
            Step::Stdio(fds) => {
                // Move the sources out of the way first so that a source that is itself 0..2
                // is not overwritten before it is used.
                let mut high = [0; 3];
                for (i, fd) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                    check(high[i])?;
                }
                for (fd, target) in high.iter().zip(0..) {
                    check(libc::dup2(*fd, target))?;
                }
                // Everything else closes at exec. Older kernels lack close_range's flag; PID 1
                // opens all its descriptors close-on-exec anyway.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                Ok(())
            }
            Step::Mount { source, target, fstype, flags, data } => check(libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                *flags,
                data.as_ref().map(|d| d.as_ptr().cast()).unwrap_or(ptr::null()),
            )),
            Step::SetNs { fd, nstype } => check(libc::setns(*fd, *nstype)),
            // Handled by `run`, which owns the error pipe.
            Step::SyncParent { .. } | Step::WaitStart { .. } => Ok(()),
            Step::BecomeRoot => {
                check(raw_id_call(libc::SYS_setresgid, [0, 0, 0]))?;
                check(raw_id_call(libc::SYS_setresuid, [0, 0, 0]))
            }
            Step::ControllingTty => check(libc::ioctl(0, libc::TIOCSCTTY, 0)),
            Step::ReopenStdio(path) => {
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
                check(fd)?;
                for target in 0..3 {
                    check(libc::dup2(fd, target))?;
                }
                libc::close(fd);
                Ok(())
            }
            Step::Remount { path, flags } => {
                let mut st: libc::statvfs = std::mem::zeroed();
                check(libc::statvfs(path.as_ptr(), &mut st))?;
                let keep = st.f_flag
                    & (libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC
                        | libc::MS_NOATIME
                        | libc::MS_NODIRATIME
                        | libc::MS_RELATIME
                        | libc::MS_RDONLY);
                check(libc::mount(
                    ptr::null(),
                    path.as_ptr(),
                    ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | keep | *flags,
                    ptr::null(),
                ))
            }
            Step::Mkdir { path, mode } => {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(path.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Ok(());
                }
                match check(libc::mkdir(path.as_ptr(), *mode)) {
                    Err(libc::EEXIST) => Ok(()),
                    other => other,
                }
            }
            Step::Touch { path } => match check(libc::mknod(path.as_ptr(), libc::S_IFREG | 0o644, 0)) {
                Err(libc::EEXIST) => Ok(()),
                other => other,
            },
            Step::Mknod { path, mode, dev, owner } => {
                if let Err(libc::EEXIST) = check(libc::mknod(path.as_ptr(), *mode, *dev)) {
                    // The spec: a file already there is kept if it is the same device (its mode
                    // and owner are then set), and is an error otherwise.
                    let mut st: libc::stat = std::mem::zeroed();
                    check(libc::lstat(path.as_ptr(), &mut st))?;
                    let same_type = st.st_mode & libc::S_IFMT == *mode & libc::S_IFMT;
                    let same_node = *mode & libc::S_IFMT == libc::S_IFIFO || st.st_rdev == *dev;
                    if !(same_type && same_node) {
                        return Err(libc::EEXIST);
                    }
                }
                check(libc::chmod(path.as_ptr(), *mode & 0o7777))?;
                if *owner != (0, 0) {
                    check(libc::chown(path.as_ptr(), owner.0, owner.1))?;
                }
                Ok(())
            }
            Step::WriteFile { path, data } => {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let n = libc::write(fd, data.as_ptr().cast(), data.len());
                let e = errno();
                libc::close(fd);
                if n < 0 {
                    Err(e)
                } else {
                    Ok(())
                }
            }
            Step::MaskPath { path, devnull } => {
                let mut st: libc::stat = std::mem::zeroed();
                match check(libc::stat(path.as_ptr(), &mut st)) {
                    Err(libc::ENOENT) => return Ok(()),
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    check(libc::mount(
                        c"tmpfs".as_ptr(),
                        path.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=0".as_ptr().cast(),
                    ))
                } else {
                    check(libc::mount(
                        devnull.as_ptr(),
                        path.as_ptr(),
                        ptr::null(),
                        libc::MS_BIND,
                        ptr::null(),
                    ))
                }
            }
            Step::ReadonlyPath { path } => {
                match check(libc::mount(
                    path.as_ptr(),
                    path.as_ptr(),
                    ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    ptr::null(),
                )) {
                    Err(libc::ENOENT) => return Ok(()),
                    other => other?,
                }
                check(libc::mount(
                    ptr::null(),
                    path.as_ptr(),
                    ptr::null(),
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    ptr::null(),
                ))
            }
            Step::Rlimit { resource, soft, hard } => {
                let lim = libc::rlimit { rlim_cur: *soft, rlim_max: *hard };
                check(libc::setrlimit(*resource, &lim))
            }
            Step::KeepCaps => check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)),
            Step::DropBounding { keep, last } => {
                for cap in 0..=*last {
                    if keep & (1u64 << cap) == 0 {
                        match check(libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0)) {
                            Err(libc::EINVAL) | Ok(()) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(())
            }
            Step::SetCaps { effective, permitted, inheritable } => {
                #[repr(C)]
                struct Header {
                    version: u32,
                    pid: i32,
                }
                #[repr(C)]
                #[derive(Clone, Copy)]
                struct Data {
                    effective: u32,
                    permitted: u32,
                    inheritable: u32,
                }
                let header = Header { version: 0x2008_0522, pid: 0 }; // _LINUX_CAPABILITY_VERSION_3

                // The two 32-bit halves of a 64-bit mask: the cast keeps the low 32 bits on purpose.
                #[allow(clippy::cast_possible_truncation)]
                let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
                let data = [false, true].map(|hi| Data {
                    effective: half(*effective, hi),
                    permitted: half(*permitted, hi),
                    inheritable: half(*inheritable, hi),
                });
                check(libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()))
            }
            Step::Ambient { mask, last } => {
                check(libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))?;
                for cap in 0..=*last {
                    if mask & (1u64 << cap) != 0 {
                        check(libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE,
                            cap as libc::c_ulong,
                            0,
                            0,
                        ))?;
                    }
                }
                Ok(())
            }
            Step::NoNewPrivs => check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
            Step::Seccomp(program) => crate::seccomp::install(program),
            Step::Umask(mode) => {
                libc::umask(*mode);
                Ok(())
            }
            Step::Symlink { target, link } => match check(libc::symlink(target.as_ptr(), link.as_ptr())) {
                Err(libc::EEXIST) => Ok(()),
                other => other,
            },
            Step::LoopbackUp => crate::net::loopback_up(),
            Step::Hostname(name) => check(libc::sethostname(name.as_ptr(), name.as_bytes().len())),
            Step::PivotRoot(new_root) => {
                let dot = c".".as_ptr();
                let old_root =
                    libc::open(c"/".as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC);
                check(old_root)?;
                check(libc::chdir(new_root.as_ptr()))?;
                let pivoted = check(libc::syscall(libc::SYS_pivot_root, dot, dot));
                // The old root now sits on the new one, and "." is still the new root: step
                // into the old one by its descriptor. It may hold mounts shared with the host
                // (a shared rootfsPropagation): made a slave first, detaching it unmounts
                // nothing there.
                let entered = pivoted.and_then(|()| check(libc::fchdir(old_root)));
                libc::close(old_root);
                entered?;
                check(libc::mount(
                    ptr::null(),
                    dot,
                    ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    ptr::null(),
                ))?;
                check(libc::umount2(dot, libc::MNT_DETACH))?;
                check(libc::chdir(c"/".as_ptr()))
            }
            Step::Identity { gid, uid, groups } => {
                let set_groups = libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
                match check(set_groups) {
                    Err(libc::EPERM) if groups.is_empty() => {}
                    other => other?,
                }
                check(raw_id_call(libc::SYS_setgid, [*gid, 0, 0]))?;
                check(raw_id_call(libc::SYS_setuid, [*uid, 0, 0]))
            }
            Step::Chdir(dir) => check(libc::chdir(dir.as_ptr())),
            Step::Exec { candidates, argv, envp } => {
                // Like execvp: remember an error more telling than ENOENT (EACCES, ENOEXEC…).
                let mut err = libc::ENOENT;
                for path in candidates {
                    libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    let e = errno();
                    if e != libc::ENOENT && e != libc::ENOTDIR {
                        err = e;
                    }
                }
                Err(err)
            }
        }
    }
}
