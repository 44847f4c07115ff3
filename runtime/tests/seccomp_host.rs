//! Seccomp filters on the host kernel: a forked child sets no_new_privs, installs a compiled
//! filter and makes one raw system call; its exit status tells the parent what happened.
//!
//! After `fork` the child runs only allocation-free, async-signal-safe code (the test harness is
//! multi-threaded): `setrlimit`, `prctl`, [`install`], `syscall`, `_exit`.

use berth_runtime::seccomp::{
    compile, docker_default_profile, install, SeccompProgram, DOCKER_DEFAULT_PROFILE_JSON,
    SECCOMP_FILTER_FLAG_TSYNC, X32_SYSCALL_BIT,
};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Exit code of a child whose call succeeded.
const SUCCESS: i32 = 200;
/// Exit code of a child that could not set no_new_privs.
const NO_NNP: i32 = 250;
/// Exit code of a child whose `install` failed.
const NO_INSTALL: i32 = 251;

/// Docker's default capability set.
const DOCKER_CAPS: &[&str] = berth_runtime::defaults::DOCKER_CAPABILITIES;

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

// ---- 32-bit ABIs -------------------------------------------------------------------------

/// i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl).
const I386_GETPID: u32 = 20;
const I386_GETPPID: u32 = 64;
const I386_KEXEC_LOAD: u32 = 283;
const I386_KEYCTL: u32 = 288;

/// An i386 system call through `int $0x80` (the kernel's IA32 emulation) with up to three
/// arguments; returns the raw result, a negative errno on failure.
fn int80(nr: u32, a0: u32, a1: u32, a2: u32) -> i64 {
    let ret: u32;
    // SAFETY: an i386 system call with integer arguments only. LLVM reserves rbx, so the first
    // argument is swapped into ebx around the trap; r8–r11 may be clobbered by the entry code.
    unsafe {
        core::arch::asm!(
            "xchg {b:r}, rbx",
            "int 0x80",
            "xchg {b:r}, rbx",
            b = inout(reg) u64::from(a0) => _,
            inlateout("eax") nr => ret,
            in("ecx") a1,
            in("edx") a2,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    i64::from(ret as i32)
}

/// Forks; the child installs `prog` (unless `None`) and runs `f`, a raw system call returning
/// a negative errno on failure; it exits with [`SUCCESS`] or the errno.
fn raw_in_child(prog: Option<&SeccompProgram>, f: impl Fn() -> i64) -> WaitStatus {
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
            if let Some(prog) = prog {
                if install(prog).is_err() {
                    // SAFETY: `_exit` is always safe to call.
                    unsafe { libc::_exit(NO_INSTALL) }
                }
            }
            let rc = f();
            // -rc is an errno (1..=4095) when it is converted: it fits an i32.
            #[allow(clippy::cast_possible_truncation)]
            let code = if (-4095..0).contains(&rc) { -rc as i32 } else { SUCCESS };
            // SAFETY: as above.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// `Ok(())` if the raw call succeeded in the filtered child, `Err(errno)` if it failed.
fn raw_call(prog: &SeccompProgram, what: &str, f: impl Fn() -> i64) -> Result<(), i32> {
    match raw_in_child(Some(prog), f) {
        WaitStatus::Exited(_, SUCCESS) => Ok(()),
        WaitStatus::Exited(_, NO_NNP) => panic!("child could not set no_new_privs"),
        WaitStatus::Exited(_, NO_INSTALL) => panic!("child could not install the filter"),
        WaitStatus::Exited(_, errno) => Err(errno),
        other => panic!("{what}: child ended with {other:?}"),
    }
}

/// Whether this kernel runs i386 system calls (IA32 emulation built in and enabled). Without
/// it `int $0x80` faults; the i386 tests then have nothing to check and say so.
/// Fails the test where the kernel does not run i386 system calls: the tests that need them
/// cannot pass there (they are not skipped silently).
fn require_ia32_emulation() {
    let works = matches!(raw_in_child(None, || int80(I386_GETPID, 0, 0, 0)), WaitStatus::Exited(_, SUCCESS));
    assert!(works, "this kernel does not run i386 system calls (CONFIG_IA32_EMULATION, ia32_emulation=1): the i386 filter paths cannot be tested here");
}

/// Whether the child was killed by SIGSYS (seccomp's kill actions).
fn killed_by_sigsys(status: WaitStatus) -> bool {
    matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _))
}

#[test]
fn i386_calls_follow_the_profile() {
    require_ia32_emulation();
    let kernel = berth_runtime::seccomp::KernelVersion::running().expect("kernel");
    let berth =
        compile(&berth_runtime::seccomp::berth_default_profile(DOCKER_CAPS, kernel).expect("profile"))
            .expect("compile");
    let docker = docker_program();
    let getpid = || int80(I386_GETPID, 0, 0, 0);
    let keyctl = || int80(I386_KEYCTL, 9999, 0, 0);
    assert_eq!(raw_call(&berth, "i386 getpid", getpid), Ok(()), "i386 getpid under berth's profile");
    assert_eq!(raw_call(&docker, "i386 getpid", getpid), Ok(()), "i386 getpid under Docker's profile");
    assert_eq!(
        raw_call(&berth, "i386 keyctl", keyctl),
        Err(libc::EPERM),
        "i386 keyctl under berth's profile"
    );
    // Docker allows the keyring: the unknown op reaches the kernel.
    assert_eq!(raw_call(&docker, "i386 keyctl", keyctl), Err(libc::EOPNOTSUPP), "i386 keyctl under Docker's");
    let kexec = || int80(I386_KEXEC_LOAD, 0, 1000, 0);
    assert_eq!(raw_call(&berth, "i386 kexec_load", kexec), Err(libc::EPERM));

    // Only the filter can answer 77.
    let mut profile = docker_default_profile(DOCKER_CAPS).expect("profile");
    profile.set_default_errno_ret(Some(77));
    let p = compile(&profile).expect("compile");
    assert_eq!(raw_call(&p, "i386 kexec_load", kexec), Err(77));
    assert_eq!(raw_call(&p, "i386 getpid", getpid), Ok(()));
}

#[test]
fn i386_calls_are_killed_when_x86_is_not_listed() {
    require_ia32_emulation();
    // A deny-list profile: everything allowed but getppid, x86_64 only.
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActAllow);
    p.set_architectures(Some(vec![Arch::ScmpArchX86_64]));
    p.set_syscalls(Some(vec![rule("getppid", LinuxSeccompAction::ScmpActErrno, Some(12), vec![])]));
    let prog = compile(&p).expect("compile");
    assert_eq!(call(&prog, libc::SYS_getpid, a(&[])), Ok(()));
    assert_eq!(call(&prog, libc::SYS_getppid, a(&[])), Err(12));
    let status = raw_in_child(Some(&prog), || int80(I386_GETPID, 0, 0, 0));
    assert!(killed_by_sigsys(status), "i386 getpid without SCMP_ARCH_X86: {status:?}");

    // Listed: the same rules apply to i386 calls.
    p.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
    let prog = compile(&p).expect("compile");
    assert_eq!(raw_call(&prog, "i386 getpid", || int80(I386_GETPID, 0, 0, 0)), Ok(()));
    assert_eq!(raw_call(&prog, "i386 getppid", || int80(I386_GETPPID, 0, 0, 0)), Err(12));
}

#[test]
fn i386_arguments_compare_the_low_word() {
    require_ia32_emulation();
    use LinuxSeccompAction::ScmpActErrno as Errno;
    use LinuxSeccompOperator::*;
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActAllow);
    p.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86]));
    p.set_syscalls(Some(vec![
        // A 64-bit value: only its low word (5) counts on i386.
        rule("getppid", Errno, Some(42), vec![arg(0, ScmpCmpEq, 0x1_0000_0005, None)]),
        rule("getppid", Errno, Some(43), vec![arg(1, ScmpCmpMaskedEq, 0xff00, Some(0x0100))]),
        rule("getppid", Errno, Some(44), vec![arg(2, ScmpCmpGt, 0x7fff_ffff, None)]),
    ]));
    let prog = compile(&p).expect("compile");
    let getppid = |a0, a1, a2| move || int80(I386_GETPPID, a0, a1, a2);
    assert_eq!(raw_call(&prog, "i386 getppid", getppid(5, 0, 0)), Err(42));
    assert_eq!(raw_call(&prog, "i386 getppid", getppid(6, 0, 0)), Ok(()));
    assert_eq!(raw_call(&prog, "i386 getppid", getppid(0, 0x1234_0155, 0)), Err(43));
    assert_eq!(raw_call(&prog, "i386 getppid", getppid(0, 0x0200, 0)), Ok(()));
    assert_eq!(raw_call(&prog, "i386 getppid", getppid(0, 0, 0x8000_0000)), Err(44));
    assert_eq!(raw_call(&prog, "i386 getppid", getppid(0, 0, 0x7fff_ffff)), Ok(()));
    // x86_64 compares all 64 bits.
    assert_eq!(call(&prog, libc::SYS_getppid, a(&[5])), Ok(()));
    assert_eq!(call(&prog, libc::SYS_getppid, a(&[0x1_0000_0005])), Err(42));
}

#[test]
fn x32_calls_follow_the_profile_when_listed() {
    // The filter sees an x32 call before the kernel checks whether x32 is enabled, so this
    // works on every x86_64 kernel: a call the filter lets through gets ENOSYS (x32 disabled)
    // or succeeds; one it refuses gets the filter's errno.
    let x32 = |nr: libc::c_long| libc::c_long::from(X32_SYSCALL_BIT as i32) | nr;
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActErrno);
    p.set_default_errno_ret(Some(77));
    p.set_syscalls(Some(vec![
        rule("getpid", LinuxSeccompAction::ScmpActAllow, None, vec![]),
        // The child must still be able to leave (x86_64 `_exit`).
        rule("exit_group", LinuxSeccompAction::ScmpActAllow, None, vec![]),
        rule("getppid", LinuxSeccompAction::ScmpActErrno, Some(44), vec![]),
    ]));
    p.set_architectures(Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX32]));
    let prog = compile(&p).expect("compile");
    let through = call(&prog, x32(libc::SYS_getpid), a(&[]));
    assert!(matches!(through, Ok(()) | Err(libc::ENOSYS)), "x32 getpid: {through:?}");
    assert_eq!(call(&prog, x32(libc::SYS_getppid), a(&[])), Err(44), "x32 getppid");
    assert_eq!(call(&prog, x32(libc::SYS_gettid), a(&[])), Err(77), "x32 gettid");
    assert_eq!(call(&prog, libc::SYS_getpid, a(&[])), Ok(()), "x86_64 getpid");

    // Not listed: x32 calls are killed.
    p.set_architectures(Some(vec![Arch::ScmpArchX86_64]));
    let prog = compile(&p).expect("compile");
    assert!(killed_by_sigsys(in_child(&prog, x32(libc::SYS_getpid), a(&[]))), "x32 getpid, x32 not listed");
    assert_eq!(call(&prog, libc::SYS_getpid, a(&[])), Ok(()), "x86_64 getpid");
}
