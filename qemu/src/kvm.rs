//! Does KVM really work here?
//!
//! `/dev/kvm` existing proves little: on some hosts (nested virtualisation, broken firmware)
//! guests hang or crash under KVM. The probe therefore runs a real guest: a child process opens
//! `/dev/kvm`, checks the API version, creates a VM with one page of memory and one vCPU, and
//! runs three real-mode instructions (`mov al, 0x2a; out 0x10, al; hlt`), expecting an I/O exit
//! with the right port and byte, then a halt exit. The child is killed if it takes longer than
//! two seconds.
//!
//! That is not enough: on the machines this project grew up on, those ioctls all work and yet
//! QEMU aborts at once with `-accel kvm -cpu host` ("failed to set MSR 0x10a"). So the probe
//! then starts QEMU itself the way [`crate::Vm`] would (`-machine pc -accel kvm`, QEMU's default
//! CPU model)
//! with a 64 KiB firmware whose reset vector writes a byte to the `isa-debug-exit` port, and
//! expects QEMU to exit with the matching status within five seconds (~50 ms normally).
//!
//! Even that is not enough (a Linux guest can still hang after its real-mode setup): these
//! probes only decide whether a VM may go on probation under KVM; see [`crate::accel`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
const KVM_CREATE_VM: libc::c_ulong = 0xae01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xae04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xae41;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_ae46;
const KVM_RUN: libc::c_ulong = 0xae80;
const KVM_SET_REGS: libc::c_ulong = 0x4090_ae82;
const KVM_GET_SREGS: libc::c_ulong = 0x8138_ae83;
const KVM_SET_SREGS: libc::c_ulong = 0x4138_ae84;
const KVM_API_VERSION: libc::c_int = 12;
const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;
const KVM_EXIT_IO_OUT: u8 = 1;

/// Guest physical address of the probe's code page.
const GUEST_ADDR: u64 = 0x1000;
/// `mov al, 0x2a; out 0x10, al; hlt`.
const CODE: [u8; 5] = [0xb0, 0x2a, 0xe6, 0x10, 0xf4];
/// How long the probe child may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the QEMU probe may take.
const QEMU_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The reset vector of the QEMU probe firmware: `mov al, 0x2a; out 0xf4, al; hlt`.
const RESET_CODE: [u8; 5] = [0xb0, 0x2a, 0xe6, 0xf4, 0xf4];
/// QEMU's exit status after the guest writes 0x2a to `isa-debug-exit`: `(0x2a << 1) | 1`.
const QEMU_PROBE_STATUS: i32 = 0x55;

/// `struct kvm_userspace_memory_region` from `<linux/kvm.h>`.
#[repr(C)]
struct MemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

/// Whether [`crate::Accel::Auto`] would start a VM under KVM now: `BERTH_ACCEL` if set, else
/// the verdict recorded for this host, else the cheap probes of [`probe_kvm`] (computed once per
/// process). A host that passes the probes may still be judged TCG by the first real guest
/// (see [`crate::Vm::start`]).
pub fn kvm_usable() -> bool {
    use crate::accel::{choose, env_override, Choice, HostKey, VerdictCache};
    let cached = VerdictCache::default().load(&HostKey::current());
    match choose(env_override(), crate::accel::kvm_device_exists(), cached, probe_kvm_once) {
        Choice::Settled { accel, .. } => accel == crate::Accel::Kvm,
        Choice::Probation => true,
    }
}

/// [`probe_kvm`], run once per process; later calls return the first result.
pub(crate) fn probe_kvm_once() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED.get_or_init(probe_kvm).clone()
}

/// Runs the KVM probe now (uncached, ignoring `BERTH_ACCEL`): `Ok` if a tiny guest ran
/// correctly under KVM within two seconds, and then QEMU ran one with `-accel kvm`
/// within five; otherwise the reason it did not.
pub fn probe_kvm() -> Result<(), String> {
    probe_ioctls()?;
    probe_qemu()
}

/// Starts QEMU with KVM and the probe firmware; `Ok` if it exits with the expected status.
fn probe_qemu() -> Result<(), String> {
    use std::process::{Command, Stdio};
    let dir = tempfile::Builder::new()
        .prefix("berth-kvm-probe-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))?;
    let bios = dir.path().join("probe.bin");
    let mut image = vec![0xf4u8; 0x10000];
    image[0xfff0..0xfff0 + RESET_CODE.len()].copy_from_slice(&RESET_CODE);
    std::fs::write(&bios, &image).map_err(|e| format!("writing {}: {e}", bios.display()))?;
    let program = std::env::var_os("BERTH_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    let mut cmd = Command::new(&program);
    cmd.args(["-machine", "pc", "-accel", "kvm", "-m", "16"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "none", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-bios"])
        .arg(&bios)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = crate::spawn::spawn_guarded(cmd)
        .map_err(|e| format!("starting {}: {e}", program.to_string_lossy()))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() < QEMU_PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => break None,
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("QEMU with KVM did not run the probe guest within 5 s".into());
    };
    if status.code() == Some(QEMU_PROBE_STATUS) {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let first = stderr.lines().next().unwrap_or("no error output");
    Err(format!("QEMU with KVM failed ({status}): {first}"))
}

/// The ioctl part of the probe, in a forked child.
fn probe_ioctls() -> Result<(), String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist".into());
    }
    // SAFETY: fork has no memory-safety preconditions. In the child, which may have been forked
    // from a multi-threaded process, only `run_probe` (raw system calls, no allocation, no locks)
    // and `_exit` run, which is what is allowed after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see above. `_exit` never returns.
        unsafe { libc::_exit(run_probe()) }
    }
    let start = Instant::now();
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our own child and `status` a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if killed {
                return Err("the probe guest did not finish within 2 s".into());
            }
            if libc::WIFEXITED(status) {
                let code = libc::WEXITSTATUS(status);
                return if code == 0 { Ok(()) } else { Err(describe_failure(code).into()) };
            }
            return Err(format!("the probe child died with wait status {status:#x}"));
        }
        if r < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if !killed && start.elapsed() > PROBE_TIMEOUT {
            // SAFETY: `pid` is our own child, not yet reaped, so the pid cannot be reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        } else if killed && start.elapsed() > PROBE_TIMEOUT * 2 {
            // A child stuck in the kernel: leave it (a zombie at worst) rather than hang.
            return Err("the probe guest hung and could not be reaped".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The meaning of the probe child's exit codes.
fn describe_failure(code: i32) -> &'static str {
    match code {
        10 => "cannot open /dev/kvm read-write",
        11 => "KVM_GET_API_VERSION is not 12",
        12 => "KVM_CREATE_VM failed",
        13 => "cannot map guest memory",
        14 => "KVM_SET_USER_MEMORY_REGION failed",
        15 => "KVM_CREATE_VCPU failed",
        16 => "KVM_GET_VCPU_MMAP_SIZE failed",
        17 => "cannot map the vCPU run structure",
        18 => "KVM_GET_SREGS failed",
        19 => "KVM_SET_SREGS failed",
        20 => "KVM_SET_REGS failed",
        21 => "KVM_RUN failed",
        22 => "the probe guest did not exit with its port write",
        23 => "the probe guest wrote the wrong port or value",
        24 => "the probe guest did not halt",
        _ => "the probe failed",
    }
}

/// The probe itself, run in the forked child: returns 0 on success or the failing step's code.
fn run_probe() -> libc::c_int {
    // SAFETY: (whole body) raw system calls on descriptors and mappings this function created;
    // every pointer passed to the kernel points to a live, correctly sized buffer (the struct
    // layouts match <linux/kvm.h>: kvm_sregs is 312 bytes, kvm_regs 144, cs.base at byte 0 and
    // cs.selector at byte 12 of kvm_sregs, exit_reason at byte 8 and the io exit at byte 32 of
    // kvm_run). The process exits right after, so nothing is closed or unmapped.
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if kvm < 0 {
            return 10;
        }
        if libc::ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION {
            return 11;
        }
        let vm = libc::ioctl(kvm, KVM_CREATE_VM, 0);
        if vm < 0 {
            return 12;
        }
        let mem = libc::mmap(
            std::ptr::null_mut(),
            0x1000,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if mem == libc::MAP_FAILED {
            return 13;
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), mem.cast::<u8>(), CODE.len());
        let region = MemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: GUEST_ADDR,
            memory_size: 0x1000,
            userspace_addr: mem as u64,
        };
        if libc::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0 {
            return 14;
        }
        let vcpu = libc::ioctl(vm, KVM_CREATE_VCPU, 0);
        if vcpu < 0 {
            return 15;
        }
        let run_size = libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if run_size <= 0 {
            return 16;
        }
        let run = libc::mmap(
            std::ptr::null_mut(),
            run_size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        );
        if run == libc::MAP_FAILED {
            return 17;
        }
        let mut sregs = [0u64; 39];
        if libc::ioctl(vcpu, KVM_GET_SREGS, sregs.as_mut_ptr()) < 0 {
            return 18;
        }
        sregs[0] = 0; // cs.base
        sregs.as_mut_ptr().cast::<u8>().add(12).cast::<u16>().write(0); // cs.selector
        if libc::ioctl(vcpu, KVM_SET_SREGS, sregs.as_ptr()) < 0 {
            return 19;
        }
        let mut regs = [0u64; 18];
        regs[16] = GUEST_ADDR; // rip
        regs[17] = 2; // rflags: the reserved bit 1
        if libc::ioctl(vcpu, KVM_SET_REGS, regs.as_ptr()) < 0 {
            return 20;
        }
        let run = run.cast::<u8>();
        let exit_reason = || run.add(8).cast::<u32>().read_volatile();
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return 21;
        }
        if exit_reason() != KVM_EXIT_IO {
            return 22;
        }
        let direction = run.add(32).read_volatile();
        let size = run.add(33).read_volatile();
        let port = run.add(34).cast::<u16>().read_volatile();
        // An offset beyond usize is beyond the mapping too: usize::MAX fails the check below.
        let data_offset = usize::try_from(run.add(40).cast::<u64>().read_volatile()).unwrap_or(usize::MAX);
        if direction != KVM_EXIT_IO_OUT
            || size != 1
            || port != 0x10
            || data_offset >= run_size as usize
            || run.add(data_offset).read_volatile() != 0x2a
        {
            return 23;
        }
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return 21;
        }
        if exit_reason() != KVM_EXIT_HLT {
            return 24;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_finishes_quickly() {
        let start = Instant::now();
        let result = probe_kvm();
        eprintln!("KVM probe: {result:?} in {:?}", start.elapsed());
        // Bounded by the two timeouts (2 s + 5 s) plus reaping.
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
