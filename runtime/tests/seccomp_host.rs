//! Seccomp filters on the host kernel: a forked child sets no_new_privs, installs a compiled
//! filter and makes one raw system call; its exit status tells the parent what happened.
//!
//! After `fork` the child runs only allocation-free, async-signal-safe code (the test harness is
//! multi-threaded): `setrlimit`, `prctl`, [`install`], `syscall`, `_exit`.

use berth_runtime::seccomp::{
    compile, docker_default_profile, install, SeccompProgram, DOCKER_DEFAULT_PROFILE_JSON,
    SECCOMP_FILTER_FLAG_TSYNC,
};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Exit code of a child whose call succeeded.
const SUCCESS: i32 = 200;
/// Exit code of a child that could not set no_new_privs.
const NO_NNP: i32 = 250;
/// Exit code of a child whose `install` failed.
const NO_INSTALL: i32 = 251;

/// Docker's default capability set.
const DOCKER_CAPS: &[&str] = berth_runtime::defaults::DEFAULT_CAPABILITIES;

/// Forks; the child installs `prog` and calls `syscall(nr, args…)`, exiting with [`SUCCESS`] or
/// the errno. Returns the child's wait status.
fn in_child(prog: &SeccompProgram, nr: libc::c_long, args: [u64; 6]) -> WaitStatus {
    // SAFETY: the child only runs the async-signal-safe, allocation-free code below.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: plain system calls on valid arguments; `_exit` never returns.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(NO_NNP);
                }
            }
            if install(prog).is_err() {
                // SAFETY: `_exit` is always safe to call.
                unsafe { libc::_exit(NO_INSTALL) }
            }
            // SAFETY: raw system call with integer arguments; pointers in them were set up
            // by the parent before the fork and stay valid in the child's copy of memory.
            let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
            let code = if rc == -1 {
                // SAFETY: errno of this thread.
                unsafe { *libc::__errno_location() }
            } else {
                SUCCESS
            };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// `Ok(())` if the call succeeded in the filtered child, `Err(errno)` if it failed.
fn call(prog: &SeccompProgram, nr: libc::c_long, args: [u64; 6]) -> Result<(), i32> {
    match in_child(prog, nr, args) {
        WaitStatus::Exited(_, SUCCESS) => Ok(()),
        WaitStatus::Exited(_, NO_NNP) => panic!("child could not set no_new_privs"),
        WaitStatus::Exited(_, NO_INSTALL) => panic!("child could not install the filter"),
        WaitStatus::Exited(_, errno) => Err(errno),
        other => panic!("syscall {nr}: child ended with {other:?}"),
    }
}

fn a(values: &[u64]) -> [u64; 6] {
    let mut out = [0; 6];
    out[..values.len()].copy_from_slice(values);
    out
}

fn docker_program() -> SeccompProgram {
    compile(&docker_default_profile(DOCKER_CAPS).expect("profile")).expect("compile")
}

#[test]
fn docker_default_refuses_dangerous_calls() {
    let p = docker_program();
    let eperm = Err(libc::EPERM);
    // Arguments chosen so that the call would fail harmlessly if the filter let it through.
    assert_eq!(call(&p, libc::SYS_kexec_load, a(&[0, 1000, 0, 0x8000])), eperm, "kexec_load");
    assert_eq!(call(&p, libc::SYS_init_module, a(&[0, 0, 0])), eperm, "init_module");
    assert_eq!(call(&p, libc::SYS_reboot, a(&[0, 0, 0, 0])), eperm, "reboot");
    assert_eq!(call(&p, libc::SYS_open_by_handle_at, a(&[u64::MAX, 0, 0])), eperm, "open_by_handle_at");
    assert_eq!(
        call(&p, libc::SYS_unshare, a(&[libc::CLONE_NEWUSER as u64])),
        eperm,
        "unshare(CLONE_NEWUSER)"
    );
    assert_eq!(call(&p, libc::SYS_mount, a(&[0, 0, 0, 0, 0])), eperm, "mount");
    assert_eq!(
        call(&p, libc::SYS_socket, a(&[libc::AF_VSOCK as u64, libc::SOCK_STREAM as u64])),
        eperm,
        "vsock"
    );
    assert_eq!(call(&p, libc::SYS_clone3, a(&[0, 0])), Err(libc::ENOSYS), "clone3");
}

#[test]
fn docker_default_refusals_come_from_the_filter() {
    // Same profile with another default errno: only the filter can produce 77.
    let mut profile = docker_default_profile(DOCKER_CAPS).expect("profile");
    profile.set_default_errno_ret(Some(77));
    let p = compile(&profile).expect("compile");
    for (name, nr, args) in [
        ("kexec_load", libc::SYS_kexec_load, a(&[0, 1000, 0, 0x8000])),
        ("init_module", libc::SYS_init_module, a(&[0, 0, 0])),
        ("reboot", libc::SYS_reboot, a(&[0, 0, 0, 0])),
        ("open_by_handle_at", libc::SYS_open_by_handle_at, a(&[u64::MAX, 0, 0])),
        ("unshare", libc::SYS_unshare, a(&[libc::CLONE_NEWUSER as u64])),
    ] {
        assert_eq!(call(&p, nr, args), Err(77), "{name}");
    }
}

#[test]
fn docker_default_allows_ordinary_calls() {
    let p = docker_program();
    assert_eq!(call(&p, libc::SYS_getpid, a(&[])), Ok(()), "getpid");
    // read/write on a bad descriptor reach the kernel: EBADF, not EPERM.
    let mut buf = [0u8; 8];
    assert_eq!(
        call(&p, libc::SYS_read, a(&[u64::MAX, buf.as_mut_ptr() as u64, 8])),
        Err(libc::EBADF),
        "read"
    );
    assert_eq!(call(&p, libc::SYS_write, a(&[u64::MAX, buf.as_ptr() as u64, 8])), Err(libc::EBADF), "write");
    let (mut fds, msg) = ([0i32; 2], b"x");
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    assert_eq!(
        call(&p, libc::SYS_write, a(&[fds[1] as u64, msg.as_ptr() as u64, 1])),
        Ok(()),
        "write to a pipe"
    );
    assert_eq!(
        call(&p, libc::SYS_read, a(&[fds[0] as u64, buf.as_mut_ptr() as u64, 1])),
        Ok(()),
        "read from a pipe"
    );
    // SAFETY: closing descriptors this test opened.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    // SAFETY: `utsname` is plain old data.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    assert_eq!(call(&p, libc::SYS_uname, a(&[&mut uts as *mut _ as u64])), Ok(()), "uname");
    assert_eq!(
        call(&p, libc::SYS_socket, a(&[libc::AF_UNIX as u64, libc::SOCK_STREAM as u64])),
        Ok(()),
        "socket"
    );
    assert_eq!(call(&p, libc::SYS_personality, a(&[0xffff_ffff])), Ok(()), "personality query");
    // Docker's current profile allows the keyring calls: an unknown keyctl op reaches the kernel.
    assert_eq!(call(&p, libc::SYS_keyctl, a(&[9999])), Err(libc::EOPNOTSUPP), "keyctl");
    // clone without namespace flags is allowed (SIGCHLD only: a plain fork whose child also
    // exits at once); with CLONE_NEWUSER it is refused.
    let sigchld = libc::SIGCHLD as u64;
    assert_eq!(call(&p, libc::SYS_clone, a(&[sigchld])), Ok(()), "clone");
    assert_eq!(
        call(&p, libc::SYS_clone, a(&[sigchld | libc::CLONE_NEWUSER as u64])),
        Err(libc::EPERM),
        "clone"
    );
}

#[test]
fn berths_default_profile_also_refuses_the_keyring() {
    let kernel = berth_runtime::seccomp::KernelVersion::running().expect("kernel");
    let p = compile(&berth_runtime::seccomp::berth_default_profile(DOCKER_CAPS, kernel).expect("profile"))
        .expect("compile");
    assert_eq!(call(&p, libc::SYS_keyctl, a(&[9999])), Err(libc::EPERM), "keyctl");
    assert_eq!(call(&p, libc::SYS_add_key, a(&[0])), Err(libc::EPERM), "add_key");
    assert_eq!(call(&p, libc::SYS_request_key, a(&[0])), Err(libc::EPERM), "request_key");
    for (nr, what) in [
        (libc::SYS_kexec_load, "kexec_load"),
        (libc::SYS_init_module, "init_module"),
        (libc::SYS_reboot, "reboot"),
        (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    ] {
        assert_eq!(call(&p, nr, a(&[0])), Err(libc::EPERM), "{what}");
    }
    assert_eq!(call(&p, libc::SYS_unshare, a(&[libc::CLONE_NEWUSER as u64])), Err(libc::EPERM), "unshare");
    assert_eq!(call(&p, libc::SYS_getpid, a(&[])), Ok(()), "getpid");
}

#[test]
fn the_default_profile_json_is_dockers() {
    let v: serde_json::Value = serde_json::from_str(DOCKER_DEFAULT_PROFILE_JSON).expect("json");
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["archMap"][0]["architecture"], "SCMP_ARCH_X86_64");
    assert!(v["syscalls"].as_array().map(|s| s.len()).unwrap_or(0) > 25);
}

fn rule(
    name: &str,
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(vec![name.to_string()]);
    s.set_action(action);
    s.set_errno_ret(errno);
    if !args.is_empty() {
        s.set_args(Some(args));
    }
    s
}

fn arg(index: usize, op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default().index(index).op(op).value(value);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    b.build().unwrap()
}

fn allow_all_but(rules: Vec<LinuxSyscall>) -> SeccompProgram {
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActAllow);
    p.set_syscalls(Some(rules));
    compile(&p).expect("compile")
}

#[test]
fn argument_conditions() {
    use LinuxSeccompAction::ScmpActErrno as Errno;
    use LinuxSeccompOperator::*;
    let p = allow_all_but(vec![
        rule("personality", Errno, Some(42), vec![arg(0, ScmpCmpEq, 0xffff_ffff, None)]),
        // getppid ignores its arguments, but the filter sees the registers.
        rule("getppid", Errno, Some(43), vec![arg(1, ScmpCmpMaskedEq, 0xff00, Some(0x0100))]),
        rule("getppid", Errno, Some(44), vec![arg(2, ScmpCmpEq, 0x1_0000_0000, None)]),
        rule("getppid", Errno, Some(45), vec![arg(3, ScmpCmpGt, 0x1_0000_0005, None)]),
    ]);
    assert_eq!(call(&p, libc::SYS_personality, a(&[0xffff_ffff])), Err(42));
    assert_eq!(call(&p, libc::SYS_personality, a(&[0])), Ok(()));
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0x1234_0155])), Err(43));
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0x0200])), Ok(()));
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0, 0x1_0000_0000])), Err(44));
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0, 0])), Ok(()), "low word alone must not match");
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0, 0, 0x1_0000_0006])), Err(45));
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0, 0, 0x1_0000_0005])), Ok(()));
    assert_eq!(call(&p, libc::SYS_getppid, a(&[0, 0, 0, 0xffff_ffff])), Ok(()), "high word decides");
}

#[test]
fn kill_actions_end_the_child_with_sigsys() {
    use LinuxSeccompAction::*;
    for action in [ScmpActKillProcess, ScmpActKillThread, ScmpActKill, ScmpActTrap] {
        let p = allow_all_but(vec![rule("getppid", action, None, vec![])]);
        match in_child(&p, libc::SYS_getppid, a(&[])) {
            WaitStatus::Signaled(_, Signal::SIGSYS, _) => {}
            other => panic!("{action:?}: child ended with {other:?}"),
        }
        assert!(matches!(in_child(&p, libc::SYS_getpid, a(&[])), WaitStatus::Exited(_, SUCCESS)));
    }
}

#[test]
fn tsync_flag_installs() {
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActAllow);
    p.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagTsync]));
    p.set_syscalls(Some(vec![rule("getppid", LinuxSeccompAction::ScmpActErrno, Some(12), vec![])]));
    let prog = compile(&p).expect("compile");
    assert_eq!(prog.flags, SECCOMP_FILTER_FLAG_TSYNC);
    assert_eq!(call(&prog, libc::SYS_getppid, a(&[])), Err(12));
}
