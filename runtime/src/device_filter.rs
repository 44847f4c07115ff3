//! The cgroup v2 device controller: an eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to
//! a container's cgroup decides which device nodes its processes may create, read and write.
//!
//! Without it a container holding CAP_MKNOD (one of Docker's defaults) could make a node for
//! any device of the machine — a disk, `/dev/mem`, `/dev/kmsg` — and open it. Docker relies on
//! exactly this filter; [`DOCKER_DEFAULT_RULES`] is its default list.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::error::StepError;

/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACCESS_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACCESS_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACCESS_WRITE: u32 = 4;
/// Read, write and mknod.
pub const ACCESS_ALL: u32 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

/// One rule. Rules are in the OCI order: a later rule overrides an earlier one it overlaps; an
/// access no rule matches is refused (`EPERM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (`true`) or deny what matches.
    pub allow: bool,
    /// `'c'`, `'b'`, or `'a'` for both.
    pub kind: char,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// `ACCESS_*` bits allowed.
    pub access: u32,
}

const fn rule(kind: char, major: Option<u32>, minor: Option<u32>, access: u32) -> DeviceRule {
    DeviceRule { allow: true, kind, major, minor, access }
}

/// Docker's default device rules: any node may be created, only the standard ones opened
/// (null, zero, full, random, urandom, tty, console, ptmx, the pts slaves, tun).
pub const DOCKER_DEFAULT_RULES: &[DeviceRule] = &[
    rule('c', None, None, ACCESS_MKNOD),
    rule('b', None, None, ACCESS_MKNOD),
    rule('c', Some(1), Some(3), ACCESS_ALL),
    rule('c', Some(1), Some(5), ACCESS_ALL),
    rule('c', Some(1), Some(7), ACCESS_ALL),
    rule('c', Some(1), Some(8), ACCESS_ALL),
    rule('c', Some(1), Some(9), ACCESS_ALL),
    rule('c', Some(5), Some(0), ACCESS_ALL),
    rule('c', Some(5), Some(1), ACCESS_ALL),
    rule('c', Some(5), Some(2), ACCESS_ALL),
    rule('c', Some(136), None, ACCESS_ALL),
    rule('c', Some(10), Some(200), ACCESS_ALL),
];

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// Builds the program: r2 = device type, r3 = requested access, r4 = major, r5 = minor; each
/// rule, last first (so the last matching rule decides, as in the OCI list), is a block that
/// jumps to the next block on a mismatch and returns 1 (allow) or 0 (deny) at its end; after
/// the last block, 0 (deny). An allow rule matches when every requested access is allowed; a
/// deny rule when any requested access is denied.
fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    // struct bpf_cgroup_dev_ctx { u32 access_type /* access << 16 | type */; u32 major; u32 minor; }
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_MOV_X, 3, 2, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each check is a JNE to the end of this block (its offset filled in below).
        match r.kind {
            'c' => block.push(insn(JMP_JNE_K, 2, 0, 0, 2)), // BPF_DEVCG_DEV_CHAR
            'b' => block.push(insn(JMP_JNE_K, 2, 0, 0, 1)), // BPF_DEVCG_DEV_BLOCK
            _ => {}
        }
        if let Some(major) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, 0, major as i32));
        }
        if let Some(minor) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, 0, minor as i32));
        }
        block.push(insn(ALU64_MOV_X, 6, 3, 0, 0));
        if r.allow {
            // Every requested access must be allowed: r6 = r3 & !access; r6 != 0 → next.
            block.push(insn(ALU64_AND_K, 6, 0, 0, !(r.access as i32) & 0x7));
            block.push(insn(JMP_JNE_K, 6, 0, 0, 0));
        } else {
            // Any requested access denied: r6 = r3 & access; r6 == 0 → next.
            block.push(insn(ALU64_AND_K, 6, 0, 0, (r.access & 0x7) as i32));
            block.push(insn(JMP_JEQ_K, 6, 0, 0, 0));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, r.allow as i32));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JMP_JNE_K || ins.code == JMP_JEQ_K {
                // To the first instruction after this block. A block is at most 8 instructions
                // (type, major, minor, three for access, verdict, exit): the offset fits an i16.
                #[allow(clippy::cast_possible_truncation)]
                let off = (len - i - 1) as i16;
                ins.off = off;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// `union bpf_attr` for BPF_PROG_LOAD (the fields up to `kern_version`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    /// Named explicitly: implicit padding is not guaranteed to be zero, and the kernel refuses
    /// unknown flags (EINVAL).
    prog_flags: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// `BPF_PROG_LOAD` of a device program, with a verifier log when `log` is given.
fn load(code: &[Insn], log: Option<&mut Vec<u8>>) -> Result<OwnedFd, Errno> {
    let license = c"Apache-2.0";
    let (log_level, log_size, log_buf) = match log {
        // A buffer longer than u32::MAX is only partly used: the kernel writes at most log_size.
        Some(buf) => (1, u32::try_from(buf.len()).unwrap_or(u32::MAX), buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    // A program that long would be refused by the kernel (BPF_MAXINSNS) with the same error.
    let insn_cnt = u32::try_from(code.len()).map_err(|_| Errno::E2BIG)?;
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
    };
    // SAFETY: bpf(2) reads `attr` and the instruction array and license it points to, and writes
    // at most `log_size` bytes to the log buffer; all outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // The kernel returns an int descriptor; syscall(2) only widened it to a long.
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: bpf(BPF_PROG_LOAD) returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Loads the program for `rules` and attaches it to the cgroup at `cgroup_dir`. The attachment
/// outlives the program's descriptor; it goes away with the cgroup.
pub fn attach(cgroup_dir: &Path, rules: &[DeviceRule]) -> Result<(), StepError> {
    let code = program(rules);
    // Without a log first (a verbose verifier log can overflow any buffer and fail the load with
    // ENOSPC); on failure, again with a log to say why.
    let prog = load(&code, None);
    let prog = match prog {
        Ok(fd) => fd,
        Err(e) => {
            let mut log = vec![0u8; 1 << 16];
            let _ = load(&code, Some(&mut log));
            let text =
                String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
            let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            return Err(StepError::new("load the device filter", e, tail));
        }
    };
    // BPF_PROG_ATTACH needs a real descriptor of the directory (not O_PATH).
    let dir = open(cgroup_dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| StepError::new("open cgroup", e, cgroup_dir.display().to_string()))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
    let attach = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    // SAFETY: bpf(2) reads `attach`, which outlives the call; both descriptors are open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if r < 0 {
        return Err(StepError::new(
            "attach the device filter",
            Errno::last(),
            cgroup_dir.display().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one access, like the kernel would (just the instructions used here).
    fn run(p: &[Insn], access: u32, kind: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[(i.off / 4) as usize] as u64,
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_JEQ_K => {
                    if r[dst] == i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn docker_rules() {
        let p = program(DOCKER_DEFAULT_RULES);
        let (c, b) = (2, 1);
        assert_eq!(run(&p, ACCESS_READ | ACCESS_WRITE, c, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, ACCESS_READ, c, 136, 7), 1, "a pts slave");
        assert_eq!(run(&p, ACCESS_MKNOD, b, 8, 0), 1, "mknod of a disk is allowed");
        assert_eq!(run(&p, ACCESS_READ, b, 8, 0), 0, "reading a disk is not");
        assert_eq!(run(&p, ACCESS_READ, c, 1, 11), 0, "/dev/kmsg");
        assert_eq!(run(&p, ACCESS_WRITE, c, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, ACCESS_READ | ACCESS_MKNOD, c, 1, 3), 1);
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let deny_all = DeviceRule { allow: false, kind: 'a', major: None, minor: None, access: ACCESS_ALL };
        let allow_chars = DeviceRule { allow: true, kind: 'c', major: None, minor: None, access: ACCESS_ALL };
        let deny_zero_write =
            DeviceRule { allow: false, kind: 'c', major: Some(1), minor: Some(5), access: ACCESS_WRITE };
        let p = program(&[deny_all, allow_chars, deny_zero_write]);
        assert_eq!(run(&p, ACCESS_READ, 2, 1, 5), 1, "reading /dev/zero");
        assert_eq!(run(&p, ACCESS_WRITE, 2, 1, 5), 0, "writing /dev/zero is denied by the last rule");
        assert_eq!(run(&p, ACCESS_READ | ACCESS_WRITE, 2, 1, 3), 1);
        assert_eq!(run(&p, ACCESS_READ, 1, 8, 0), 0, "block devices");
        let p = program(&[allow_chars, deny_all]);
        assert_eq!(run(&p, ACCESS_READ, 2, 1, 3), 0, "deny all last wins");
    }
}
