//! Seccomp: compile an OCI seccomp profile to a classic BPF program and install it — pure Rust,
//! no libseccomp.
//!
//! * [`compile`] turns an [`oci_spec::runtime::LinuxSeccomp`] into a [`SeccompProgram`].
//! * [`install`] loads it into the calling thread; it allocates nothing, so it may run in a
//!   child freshly cloned from a multi-threaded process.
//! * [`docker_default_profile`] evaluates Docker's default profile (stored as data in
//!   `runtime/profiles/docker-default.json`) for a set of capabilities, as Docker does.
//!
//! # Architectures
//!
//! The filter runs on an x86_64 kernel, where a process can make system calls through three
//! ABIs. [`compile`] covers them as libseccomp does for the profile's `architectures`:
//!
//! * **x86_64** (`seccomp_data.arch` = [`AUDIT_ARCH_X86_64`], number below
//!   [`X32_SYSCALL_BIT`]) is always covered, listed or not, as libseccomp always keeps the
//!   native architecture (`SCMP_ARCH_NATIVE` means x86_64 too).
//! * **x32** (`arch` = `AUDIT_ARCH_X86_64`, number with [`X32_SYSCALL_BIT`] set) when
//!   `SCMP_ARCH_X32` is listed: every rule is compiled again with the x32 numbers (the "common"
//!   entries of `syscall_64.tbl` and the x32-only entries 512–547, bit set).
//! * **i386** ([`AUDIT_ARCH_I386`], `int $0x80` / `sysenter`) when `SCMP_ARCH_X86` is listed:
//!   every rule is compiled again with the i386 numbers (`syscall_32.tbl`). Argument
//!   comparisons look at the **low 32 bits only**, with the profile's `value` / `valueTwo`
//!   truncated to 32 bits, as libseccomp does for a 32-bit ABI (the kernel zero-extends i386
//!   arguments, so the high word carries nothing).
//!
//! A call through an ABI that is not covered — i386 or x32 when not listed, anything else
//! always — gets the **"bad arch" action, `SECCOMP_RET_KILL_THREAD`**, not the profile's
//! default action. That is libseccomp's default (`SCMP_FLTATR_ACT_BADARCH` = `SCMP_ACT_KILL`)
//! and neither runc (libcontainer/seccomp) nor crun changes it, so a container under them is
//! killed with SIGSYS in that case too. It also keeps a deny-list profile (default `ALLOW`)
//! from being bypassed by switching ABIs. Other architectures in the list (`SCMP_ARCH_ARM`, …)
//! cannot occur on an x86_64 kernel and are ignored. An empty or absent list therefore covers
//! x86_64 alone, as libseccomp with only the native architecture.
//!
//! # Names
//!
//! Each covered ABI resolves the names in its own table. A name an ABI does not have is skipped
//! silently for that ABI (logged at debug level): whether it exists on another one
//! (`socketcall` and `mmap2` exist on i386 only, `arch_prctl` on x86_64 and i386) or nowhere at
//! all (a typo, a call newer than the tables). This is what libseccomp-based runtimes do for
//! names unknown on an architecture. [`syscall_number`] (x86_64) and [`syscall_number_for`]
//! tell whether a name is known.
//!
//! # Rule precedence (libseccomp's, as runc applies it)
//!
//! 1. A rule whose action (errno included) equals the default action is dropped: libseccomp
//!    refuses such rules and runc/crun skip them.
//! 2. A rule whose `args` name the same argument index twice is split, as runc does, into one
//!    rule per condition: those conditions are ORed. Otherwise a rule's conditions are ANDed.
//! 3. Per system call: if any remaining rule has no `args`, the **first** such rule decides, and
//!    every conditional rule for that call is ignored (libseccomp: a later unconditional rule
//!    replaces the argument chains, and an existing unconditional rule absorbs later rules).
//! 4. Otherwise the conditional rules are tried **in profile order; the first whose conditions
//!    all hold decides**; if none holds, the default action applies. (libseccomp merges
//!    overlapping conditional rules with different actions into a tree whose outcome does not
//!    follow insertion order; for non-overlapping rules — every rule in Docker's profile — the
//!    outcome is the same. The OCI runtime-spec discussion settled on "first entry wins".)
//!
//! Comparisons are unsigned and 64-bit (the high word is compared first, then the low word), as
//! in libseccomp; 32-bit on i386 (see above). `SCMP_CMP_MASKED_EQ` is
//! `(arg & value) == (valueTwo & value)`.
//!
//! # Program layout
//!
//! ```text
//!   ld arch; jeq AUDIT_ARCH_X86_64 ? +1 : +0; ja NOT_NATIVE
//!   ld nr;   jge X32_SYSCALL_BIT ? +0 : +1;  ja X32 (x32 listed) | ret BAD_ARCH (not listed)
//!   x86_64 table
//! X32:           x32 table                          (only when x32 is listed)
//! NOT_NATIVE:    jeq AUDIT_ARCH_I386 ? +1 : +0; ret BAD_ARCH
//!                ld nr; i386 table                  (only when x86 is listed;
//!                                                    otherwise just ret BAD_ARCH)
//!
//! table:  chunk of ≤16 calls (sorted):  jgt <largest nr in chunk> ? ja <next chunk> : +1
//!             jeq nr1 ? +0 : <skip block 1>     block 1: argument checks…, ret ACTION
//!             jeq nr2 ? …                        …
//!             ret DEFAULT
//!         next chunk …
//! ```
//! A block longer than 255 instructions is entered with `jeq nr ? +1 : +0; ja <end>` instead,
//! so nothing depends on the 8-bit reach of conditional jumps except the short hops inside one
//! rule. A syscall that reaches a block has its result decided inside it. Docker's default
//! profile (x86_64, x86, x32) takes about 2,200 instructions of the kernel's 4,096.

mod berth;
mod bpf;
mod docker;
mod i386;
mod program;
mod x32;
mod x86_64;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use std::collections::BTreeMap;

pub use berth::{berth_default_profile, berth_profile_capabilities, BERTH_DENIED_SYSCALLS};
use bpf::{Asm, Op, Target, JEQ, JGE, JGT};
pub use docker::{
    docker_default_profile, docker_profile, profile_capabilities, KernelVersion, DOCKER_DEFAULT_PROFILE_JSON,
};
pub use program::SeccompProgram;
pub use x86_64::syscall_number;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`): the value of
/// `seccomp_data.arch` for a native x86_64 system call.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_I386` (`EM_386 | __AUDIT_ARCH_LE`): the value of `seccomp_data.arch` for an
/// i386 system call (`int $0x80`, `sysenter`).
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `__X32_SYSCALL_BIT`: set in the system call number of an x32 call.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `BPF_MAXINSNS`: the kernel refuses longer programs.
pub const BPF_MAXINSNS: usize = 4096;
/// `SECCOMP_FILTER_FLAG_TSYNC`: synchronise all threads of the process to the new filter.
pub const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
/// `SECCOMP_FILTER_FLAG_LOG`: log every action except `ALLOW`.
pub const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: do not force the Speculative Store Bypass mitigation.
pub const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;

/// `SECCOMP_RET_KILL_PROCESS`.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_KILL_THREAD` (also the old `SECCOMP_RET_KILL`).
const RET_KILL_THREAD: u32 = 0;
/// `SECCOMP_RET_TRAP`.
const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_ERRNO`; the errno goes in the low 16 bits.
const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_TRACE`; the value for the tracer goes in the low 16 bits.
const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_LOG`.
const RET_LOG: u32 = 0x7ffc_0000;
/// `SECCOMP_RET_ALLOW`.
const RET_ALLOW: u32 = 0x7fff_0000;
/// The action for a call made through an ABI the filter does not cover: libseccomp's default
/// "bad arch" action `SCMP_ACT_KILL` (kill the thread), which runc and crun keep.
const BAD_ARCH: u32 = RET_KILL_THREAD;

/// `seccomp(2)` operation `SECCOMP_SET_MODE_FILTER`.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// `prctl(PR_SET_SECCOMP)` mode `SECCOMP_MODE_FILTER`.
const SECCOMP_MODE_FILTER: libc::c_ulong = 2;

/// Offset of `seccomp_data.nr`.
const OFF_NR: u32 = 0;
/// Offset of `seccomp_data.arch`.
const OFF_ARCH: u32 = 4;
/// Offset of `seccomp_data.args[0]`; each argument is 8 bytes, low word first (little endian).
const OFF_ARGS: u32 = 16;

/// How many system-call blocks share one range check (see the module docs).
const CHUNK: usize = 16;

/// Why a profile could not be compiled or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// `SCMP_ACT_NOTIFY` needs a listener file descriptor handed to a seccomp agent.
    #[error("SCMP_ACT_NOTIFY is not supported: berth has no seccomp listener (listenerPath)")]
    NotifyUnsupported,
    /// An argument condition names an index outside 0–5.
    #[error("seccomp rule for {names}: argument index {index} is out of range 0-5")]
    ArgIndex {
        /// The rule's system call names, comma-separated.
        names: String,
        /// The offending index.
        index: usize,
    },
    /// An `errnoRet` (or trace value) does not fit the 16 bits of `SECCOMP_RET_DATA`.
    #[error("errnoRet {0} does not fit in 16 bits")]
    ErrnoRange(u32),
    /// The program would exceed [`BPF_MAXINSNS`].
    #[error("the seccomp filter needs {0} instructions; the kernel accepts at most 4096")]
    TooLong(usize),
    /// A Docker-format profile is inconsistent.
    #[error("Docker seccomp profile: {0}")]
    DockerProfile(String),
    /// A Docker-format profile is not valid JSON for its schema.
    #[error("Docker seccomp profile: {0}")]
    DockerJson(#[from] serde_json::Error),
    /// A bug in the compiler (a jump that cannot be encoded); never expected.
    #[error("seccomp compiler bug: {0}")]
    Internal(&'static str),
}

/// One argument comparison, already validated.
#[derive(Clone, Copy, Debug)]
struct Cond {
    /// Argument index, 0–5.
    index: u32,
    /// The comparison.
    op: LinuxSeccompOperator,
    /// `value` from the profile (the mask for `MASKED_EQ`).
    value: u64,
    /// `valueTwo` from the profile (the datum for `MASKED_EQ`; unused otherwise).
    value_two: u64,
    /// Compare all 64 bits (x86_64, x32); `false`: only the low 32 bits (i386), with `value`
    /// and `value_two` already truncated.
    wide: bool,
}

/// One rule for one system call: all `conds` hold → `action`.
#[derive(Clone, Debug)]
struct Rule {
    action: u32,
    conds: Vec<Cond>,
}

/// The `SECCOMP_RET_*` value of an OCI action with its `errnoRet`.
fn action_value(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<u32, SeccompError> {
    let data = || {
        let v = errno_ret.unwrap_or(libc::EPERM as u32);
        if v > 0xffff {
            Err(SeccompError::ErrnoRange(v))
        } else {
            Ok(v)
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | data()?,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | data()?,
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::NotifyUnsupported),
    })
}

/// The `SECCOMP_FILTER_FLAG_*` bits of the profile's `flags`.
fn flag_bits(profile: &LinuxSeccomp) -> u32 {
    let mut bits = 0;
    for flag in profile.flags().iter().flatten() {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    bits
}

/// The system-call ABIs a filter covers on an x86_64 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abi {
    /// Native x86_64: `AUDIT_ARCH_X86_64`, number without [`X32_SYSCALL_BIT`].
    X86_64,
    /// i386 (`int $0x80`, `sysenter`): `AUDIT_ARCH_I386`.
    I386,
    /// x32: `AUDIT_ARCH_X86_64`, number with [`X32_SYSCALL_BIT`].
    X32,
}

impl Abi {
    /// The ABI's number for `name`.
    fn syscall_number(self, name: &str) -> Option<u32> {
        match self {
            Abi::X86_64 => x86_64::syscall_number(name),
            Abi::I386 => i386::syscall_number(name),
            Abi::X32 => x32::syscall_number(name),
        }
    }
}

/// The number of the system call `name` for the OCI architecture `arch`: x86_64 numbers for
/// `SCMP_ARCH_X86_64` (and `SCMP_ARCH_NATIVE`), i386 numbers for `SCMP_ARCH_X86`, x32 numbers
/// (with [`X32_SYSCALL_BIT`] set) for `SCMP_ARCH_X32`. `None` when that architecture has no
/// such call, or for an architecture other than these four.
pub fn syscall_number_for(arch: Arch, name: &str) -> Option<u32> {
    match arch {
        Arch::ScmpArchNative | Arch::ScmpArchX86_64 => Abi::X86_64.syscall_number(name),
        Arch::ScmpArchX86 => Abi::I386.syscall_number(name),
        Arch::ScmpArchX32 => Abi::X32.syscall_number(name),
        _ => None,
    }
}

/// One profile entry, validated: its names and the rules it stands for (see the module docs).
struct Entry<'a> {
    names: &'a [String],
    rules: Vec<Rule>,
}

/// Compiles `profile` into a classic BPF program for an x86_64 kernel, covering x86_64 and,
/// when the profile's `architectures` list them, i386 (`SCMP_ARCH_X86`) and x32
/// (`SCMP_ARCH_X32`).
///
/// See the module documentation for the architecture handling, skipped names and rule
/// precedence. Errors: `SCMP_ACT_NOTIFY` anywhere, an argument index above 5, an `errnoRet`
/// above 0xffff, or a program longer than [`BPF_MAXINSNS`].
pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    let default = action_value(profile.default_action(), profile.default_errno_ret())?;
    let flags = flag_bits(profile);

    let mut entries = Vec::new();
    for syscall in profile.syscalls().iter().flatten() {
        let action = action_value(syscall.action(), syscall.errno_ret())?;
        let mut conds = Vec::new();
        for arg in syscall.args().iter().flatten() {
            let index = match u32::try_from(arg.index()) {
                Ok(i) if i <= 5 => i,
                _ => {
                    return Err(SeccompError::ArgIndex {
                        names: syscall.names().join(","),
                        index: arg.index(),
                    })
                }
            };
            conds.push(Cond {
                index,
                op: arg.op(),
                value: arg.value(),
                value_two: arg.value_two().unwrap_or(0),
                wide: true,
            });
        }
        // runc: when an index repeats, every condition becomes a rule of its own (ORed).
        let repeated = conds.iter().enumerate().any(|(i, c)| conds[..i].iter().any(|d| d.index == c.index));
        let rules: Vec<Rule> = if repeated {
            conds.iter().map(|c| Rule { action, conds: vec![*c] }).collect()
        } else {
            vec![Rule { action, conds }]
        };
        if action == default {
            continue; // libseccomp refuses it, runc skips it: see the module docs.
        }
        entries.push(Entry { names: syscall.names(), rules });
    }

    let listed = |arch: Arch| profile.architectures().iter().flatten().any(|a| *a == arch);
    let native = blocks(&entries, Abi::X86_64);
    let x32 = listed(Arch::ScmpArchX32).then(|| blocks(&entries, Abi::X32));
    let i386 = listed(Arch::ScmpArchX86).then(|| blocks(&entries, Abi::I386));

    let mut asm = Asm::default();
    let (is_native, not_native) = (asm.label(), asm.label());
    asm.load(OFF_ARCH);
    asm.jump(JEQ, AUDIT_ARCH_X86_64, Target::Label(is_native), Target::Next);
    asm.ja(not_native);
    asm.bind(is_native);
    asm.load(OFF_NR);
    let below_x32 = asm.label();
    asm.jump(JGE, X32_SYSCALL_BIT, Target::Next, Target::Label(below_x32));
    match &x32 {
        Some(x32) => {
            let x32_table = asm.label();
            asm.ja(x32_table);
            asm.bind(below_x32);
            emit_table(&mut asm, &native, default);
            asm.bind(x32_table);
            emit_table(&mut asm, x32, default);
        }
        None => {
            asm.ret(BAD_ARCH);
            asm.bind(below_x32);
            emit_table(&mut asm, &native, default);
        }
    }
    asm.bind(not_native);
    match &i386 {
        Some(i386) => {
            let i386_table = asm.label();
            asm.jump(JEQ, AUDIT_ARCH_I386, Target::Label(i386_table), Target::Next);
            asm.ret(BAD_ARCH);
            asm.bind(i386_table);
            asm.load(OFF_NR);
            emit_table(&mut asm, i386, default);
        }
        None => asm.ret(BAD_ARCH),
    }

    let filter = asm.finish()?;
    if filter.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong(filter.len()));
    }
    Ok(SeccompProgram { filter, flags })
}

/// The rules of every system call `abi` knows, by number, precedence resolved: the first
/// unconditional rule wins outright, otherwise the conditional rules in profile order. On i386
/// the comparisons are narrowed to the low 32 bits, as libseccomp does for 32-bit ABIs.
fn blocks(entries: &[Entry<'_>], abi: Abi) -> Vec<(u32, Vec<Rule>)> {
    let mut per_nr: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    for entry in entries {
        for name in entry.names {
            let Some(nr) = abi.syscall_number(name) else {
                log::debug!("seccomp: no {abi:?} system call named {name:?}; rule skipped for {abi:?}");
                continue;
            };
            let rules = per_nr.entry(nr).or_default();
            for rule in &entry.rules {
                let mut rule = rule.clone();
                if abi == Abi::I386 {
                    for c in &mut rule.conds {
                        *c = Cond {
                            value: c.value & 0xffff_ffff,
                            value_two: c.value_two & 0xffff_ffff,
                            wide: false,
                            ..*c
                        };
                    }
                }
                rules.push(rule);
            }
        }
    }
    per_nr
        .into_iter()
        .map(|(nr, rules)| match rules.iter().find(|r| r.conds.is_empty()) {
            Some(r) => (nr, vec![r.clone()]),
            None => (nr, rules),
        })
        .collect()
}

/// The lookup of one ABI's system call numbers (the number is in A on entry): chunks of
/// [`CHUNK`] blocks behind a range check, every block deciding its call, the default action
/// for every number without a block.
fn emit_table(asm: &mut Asm, blocks: &[(u32, Vec<Rule>)], default: u32) {
    let chunks: Vec<&[(u32, Vec<Rule>)]> = blocks.chunks(CHUNK).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let next_chunk = asm.label();
        if !last {
            let in_chunk = asm.label();
            let max = chunk.last().map(|(nr, _)| *nr).unwrap_or(0);
            asm.jump(JGT, max, Target::Next, Target::Label(in_chunk));
            asm.ja(next_chunk);
            asm.bind(in_chunk);
        }
        for (nr, rules) in chunk.iter() {
            let block_end = asm.label();
            let start = asm.ops.len();
            emit_body(asm, rules, default);
            let body_len = Asm::len_of(&asm.ops[start..]);
            let header = if body_len <= usize::from(u8::MAX) {
                vec![Op::Jump { code: JEQ, k: *nr, jt: Target::Next, jf: Target::Label(block_end) }]
            } else {
                let body = asm.label();
                vec![
                    Op::Jump { code: JEQ, k: *nr, jt: Target::Label(body), jf: Target::Next },
                    Op::Ja(block_end),
                    Op::Bind(body),
                ]
            };
            asm.ops.splice(start..start, header);
            asm.bind(block_end);
        }
        asm.ret(default);
        if !last {
            asm.bind(next_chunk);
        }
    }
    if chunks.is_empty() {
        asm.ret(default);
    }
}

/// The code of one system call's block: each rule's checks then its `ret`, the default last.
fn emit_body(asm: &mut Asm, rules: &[Rule], default: u32) {
    for rule in rules {
        let next_rule = asm.label();
        for cond in &rule.conds {
            emit_cond(asm, cond, next_rule);
        }
        asm.ret(rule.action);
        asm.bind(next_rule);
    }
    if rules.iter().all(|r| !r.conds.is_empty()) {
        asm.ret(default);
    }
}

/// Checks one 64-bit comparison; falls through when it holds, jumps to `fail` otherwise.
fn emit_cond(asm: &mut Asm, c: &Cond, fail: usize) {
    let lo = OFF_ARGS + 8 * c.index;
    let hi = lo + 4;
    if !c.wide {
        return emit_cond_32(asm, c, lo, fail);
    }
    let fail = Target::Label(fail);
    // The high and the low half of a 64-bit argument.
    #[allow(clippy::cast_possible_truncation)]
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (vhi, vlo) = split(c.value);
    match c.op {
        LinuxSeccompOperator::ScmpCmpEq => {
            asm.load(hi);
            asm.jump(JEQ, vhi, Target::Next, fail);
            asm.load(lo);
            asm.jump(JEQ, vlo, Target::Next, fail);
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            let pass = asm.label();
            asm.load(hi);
            asm.jump(JEQ, vhi, Target::Next, Target::Label(pass));
            asm.load(lo);
            asm.jump(JEQ, vlo, fail, Target::Next);
            asm.bind(pass);
        }
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            // hi > vhi → pass; hi < vhi → fail; hi == vhi → compare the low words.
            let pass = asm.label();
            asm.load(hi);
            asm.jump(JGT, vhi, Target::Label(pass), Target::Next);
            asm.jump(JEQ, vhi, Target::Next, fail);
            asm.load(lo);
            let code = if c.op == LinuxSeccompOperator::ScmpCmpGt { JGT } else { JGE };
            asm.jump(code, vlo, Target::Next, fail);
            asm.bind(pass);
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // hi < vhi → pass; hi > vhi → fail; hi == vhi → compare the low words.
            let pass = asm.label();
            asm.load(hi);
            asm.jump(JGE, vhi, Target::Next, Target::Label(pass));
            asm.jump(JEQ, vhi, Target::Next, fail);
            asm.load(lo);
            // LT fails when lo >= vlo, LE when lo > vlo.
            let code = if c.op == LinuxSeccompOperator::ScmpCmpLt { JGE } else { JGT };
            asm.jump(code, vlo, fail, Target::Next);
            asm.bind(pass);
        }
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (mhi, mlo) = (vhi, vlo);
            let (dhi, dlo) = split(c.value_two & c.value);
            // A zero mask half always matches (its datum half is zero too): no code.
            if mhi != 0 {
                asm.load(hi);
                asm.and(mhi);
                asm.jump(JEQ, dhi, Target::Next, fail);
            }
            if mlo != 0 {
                asm.load(lo);
                asm.and(mlo);
                asm.jump(JEQ, dlo, Target::Next, fail);
            }
        }
    }
}

/// Checks one comparison of the low 32 bits of an argument (at offset `lo`), as libseccomp
/// does on a 32-bit ABI; falls through when it holds, jumps to `fail` otherwise.
fn emit_cond_32(asm: &mut Asm, c: &Cond, lo: u32, fail: usize) {
    let fail = Target::Label(fail);
    // The low 32 bits, as libseccomp compares them on a 32-bit ABI.
    #[allow(clippy::cast_possible_truncation)]
    let (v, mask, datum) = (c.value as u32, c.value as u32, (c.value_two & c.value) as u32);
    if c.op == LinuxSeccompOperator::ScmpCmpMaskedEq && mask == 0 {
        return; // Always holds.
    }
    asm.load(lo);
    match c.op {
        LinuxSeccompOperator::ScmpCmpEq => asm.jump(JEQ, v, Target::Next, fail),
        LinuxSeccompOperator::ScmpCmpNe => asm.jump(JEQ, v, fail, Target::Next),
        LinuxSeccompOperator::ScmpCmpGt => asm.jump(JGT, v, Target::Next, fail),
        LinuxSeccompOperator::ScmpCmpGe => asm.jump(JGE, v, Target::Next, fail),
        LinuxSeccompOperator::ScmpCmpLt => asm.jump(JGE, v, fail, Target::Next),
        LinuxSeccompOperator::ScmpCmpLe => asm.jump(JGT, v, fail, Target::Next),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            asm.and(mask);
            asm.jump(JEQ, datum, Target::Next, fail);
        }
    }
}

/// Loads `program` into the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER, flags, …)`,
/// falling back to `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, …)` when the kernel has no
/// `seccomp(2)` (ENOSYS) and `flags` is 0. Returns the errno on failure.
///
/// Allocation-free and async-signal-safe: it may run in a child cloned from a multi-threaded
/// process, before `execve`. The caller must have set `no_new_privs`
/// (`prctl(PR_SET_NO_NEW_PRIVS, 1)`) or hold `CAP_SYS_ADMIN` in its user namespace, otherwise
/// the kernel answers EACCES. With `SECCOMP_FILTER_FLAG_TSYNC`, a thread that cannot be
/// synchronised makes the call fail with EBUSY here (the kernel returns that thread's id).
/// The filter also applies to every child the thread creates afterwards, and cannot be removed.
pub fn install(program: &SeccompProgram) -> Result<(), i32> {
    let Ok(len) = u16::try_from(program.filter.len()) else {
        return Err(libc::EINVAL);
    };
    let prog = libc::sock_fprog { len, filter: program.filter.as_ptr().cast_mut() };
    let prog_ptr: *const libc::sock_fprog = &prog;
    // SAFETY: `prog` points at `len` initialised instructions owned by `program`, which outlives
    // the call; the kernel copies the program and does not write through the pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(program.flags),
            prog_ptr,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    if rc > 0 {
        return Err(libc::EBUSY);
    }
    let err = last_errno();
    if err != libc::ENOSYS || program.flags != 0 {
        return Err(err);
    }
    // SAFETY: as above; PR_SET_SECCOMP reads the `sock_fprog` and the instructions only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            SECCOMP_MODE_FILTER,
            prog_ptr,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// The calling thread's errno (no allocation).
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSyscall};

    fn syscall(
        names: &[&str],
        action: LinuxSeccompAction,
        errno: Option<u32>,
        args: Vec<LinuxSeccompArg>,
    ) -> LinuxSyscall {
        let mut s = LinuxSyscall::default();
        s.set_names(names.iter().map(|n| n.to_string()).collect());
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

    fn profile(default: LinuxSeccompAction, syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(default);
        p.set_syscalls(Some(syscalls));
        p
    }

    fn nr(name: &str) -> u32 {
        syscall_number(name).unwrap()
    }

    fn run(p: &SeccompProgram, name: &str, args: [u64; 6]) -> u32 {
        bpf::run(&p.filter, nr(name), AUDIT_ARCH_X86_64, args)
    }

    const DOCKER_CAPS: &[&str] = crate::defaults::DOCKER_CAPABILITIES;

    fn docker(caps: &[&str]) -> SeccompProgram {
        let p =
            docker_profile(DOCKER_DEFAULT_PROFILE_JSON, caps, KernelVersion { major: 6, minor: 1 }).unwrap();
        compile(&p).unwrap()
    }

    fn with_arches(mut p: LinuxSeccomp, arches: &[Arch]) -> LinuxSeccomp {
        p.set_architectures(Some(arches.to_vec()));
        p
    }

    fn run_i386(p: &SeccompProgram, name: &str, args: [u64; 6]) -> u32 {
        let nr = i386::syscall_number(name).unwrap();
        bpf::run(&p.filter, nr, AUDIT_ARCH_I386, args)
    }

    fn run_x32(p: &SeccompProgram, name: &str, args: [u64; 6]) -> u32 {
        let nr = x32::syscall_number(name).unwrap();
        bpf::run(&p.filter, nr, AUDIT_ARCH_X86_64, args)
    }

    const ALL_X86: &[Arch] = &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];

    #[test]
    fn starts_with_arch_check_then_x32_check() {
        let p = compile(&profile(LinuxSeccompAction::ScmpActErrno, vec![])).unwrap();
        let f = &p.filter;
        assert_eq!((f[0].code, f[0].k), (bpf::LD_W_ABS, OFF_ARCH));
        assert_eq!((f[1].code, f[1].k, f[1].jt, f[1].jf), (JEQ, AUDIT_ARCH_X86_64, 1, 0));
        assert_eq!((f[2].code, f[2].k), (bpf::JMP_JA, 4)); // to the final `ret BAD_ARCH`
        assert_eq!((f[3].code, f[3].k), (bpf::LD_W_ABS, OFF_NR));
        assert_eq!((f[4].code, f[4].k, f[4].jt, f[4].jf), (JGE, X32_SYSCALL_BIT, 0, 1));
        assert_eq!((f[5].code, f[5].k), (bpf::RET_K, BAD_ARCH));
        assert_eq!((f[6].code, f[6].k), (bpf::RET_K, RET_ERRNO | 1));
        assert_eq!((f[7].code, f[7].k), (bpf::RET_K, BAD_ARCH));
        assert_eq!(f.len(), 8);

        // x86 and x32 listed: x32 calls jump to their own table, i386 calls to theirs.
        let p = compile(&with_arches(profile(LinuxSeccompAction::ScmpActErrno, vec![]), ALL_X86)).unwrap();
        let f = &p.filter;
        assert_eq!((f[5].code, f[5].k), (bpf::JMP_JA, 1));
        assert_eq!((f[6].code, f[6].k), (bpf::RET_K, RET_ERRNO | 1)); // x86_64 table
        assert_eq!((f[7].code, f[7].k), (bpf::RET_K, RET_ERRNO | 1)); // x32 table
        assert_eq!((f[8].code, f[8].k, f[8].jt, f[8].jf), (JEQ, AUDIT_ARCH_I386, 1, 0));
        assert_eq!((f[9].code, f[9].k), (bpf::RET_K, BAD_ARCH));
        assert_eq!((f[10].code, f[10].k), (bpf::LD_W_ABS, OFF_NR));
        assert_eq!((f[11].code, f[11].k), (bpf::RET_K, RET_ERRNO | 1)); // i386 table
        assert_eq!(f.len(), 12);
    }

    #[test]
    fn uncovered_abis_get_the_bad_arch_action() {
        let rules = vec![syscall(&["read", "write"], LinuxSeccompAction::ScmpActAllow, None, vec![])];
        let p = compile(&profile(LinuxSeccompAction::ScmpActKillProcess, rules.clone())).unwrap();
        assert_eq!(run(&p, "read", [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, "getpid", [0; 6]), RET_KILL_PROCESS);
        assert_eq!(bpf::run(&p.filter, 3, AUDIT_ARCH_I386, [0; 6]), BAD_ARCH);
        assert_eq!(bpf::run(&p.filter, X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, [0; 6]), BAD_ARCH);
        assert_eq!(bpf::run(&p.filter, u32::MAX, AUDIT_ARCH_X86_64, [0; 6]), BAD_ARCH);
        // Another architecture's value never matches, even when listed.
        const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
        let p = compile(&with_arches(
            profile(LinuxSeccompAction::ScmpActKillProcess, rules),
            &[Arch::ScmpArchAarch64, Arch::ScmpArchX86],
        ))
        .unwrap();
        assert_eq!(bpf::run(&p.filter, 63, AUDIT_ARCH_AARCH64, [0; 6]), BAD_ARCH);
        assert_eq!(run_i386(&p, "read", [0; 6]), RET_ALLOW);
        assert_eq!(bpf::run(&p.filter, X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, [0; 6]), BAD_ARCH);
        // A deny-list profile cannot be bypassed through an ABI it does not cover.
        let p = compile(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(&["keyctl"], LinuxSeccompAction::ScmpActErrno, None, vec![])],
        ))
        .unwrap();
        assert_eq!(run(&p, "keyctl", [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&p, "getpid", [0; 6]), RET_ALLOW);
        assert_eq!(bpf::run(&p.filter, 288, AUDIT_ARCH_I386, [0; 6]), BAD_ARCH);
    }

    #[test]
    fn listed_abis_get_their_own_numbers() {
        use LinuxSeccompAction::*;
        let rules = vec![
            syscall(&["read", "getpid", "socketcall", "mmap2", "arch_prctl"], ScmpActAllow, None, vec![]),
            syscall(&["execve"], ScmpActErrno, Some(5), vec![]),
        ];
        for arches in [&[Arch::ScmpArchX86_64][..], &[Arch::ScmpArchX86], &[Arch::ScmpArchX32], ALL_X86] {
            let p = compile(&with_arches(profile(ScmpActErrno, rules.clone()), arches)).unwrap();
            let has = |a: Arch| arches.contains(&a);
            // x86_64 is always covered.
            assert_eq!(run(&p, "read", [0; 6]), RET_ALLOW, "{arches:?}");
            assert_eq!(run(&p, "execve", [0; 6]), RET_ERRNO | 5, "{arches:?}");
            assert_eq!(run(&p, "write", [0; 6]), RET_ERRNO | 1, "{arches:?}");
            let (i386_read, i386_execve, i386_other) = if has(Arch::ScmpArchX86) {
                (RET_ALLOW, RET_ERRNO | 5, RET_ERRNO | 1)
            } else {
                (BAD_ARCH, BAD_ARCH, BAD_ARCH)
            };
            assert_eq!(run_i386(&p, "read", [0; 6]), i386_read, "{arches:?}");
            assert_eq!(run_i386(&p, "getpid", [0; 6]), i386_read, "{arches:?}");
            assert_eq!(run_i386(&p, "socketcall", [0; 6]), i386_read, "{arches:?}");
            assert_eq!(run_i386(&p, "mmap2", [0; 6]), i386_read, "{arches:?}");
            assert_eq!(run_i386(&p, "arch_prctl", [0; 6]), i386_read, "{arches:?}");
            assert_eq!(run_i386(&p, "execve", [0; 6]), i386_execve, "{arches:?}");
            assert_eq!(run_i386(&p, "write", [0; 6]), i386_other, "{arches:?}");
            // i386 write is 4, x86_64's stat: the numbers are not shared.
            assert_eq!(run_i386(&p, "write", [0; 6]), bpf::run(&p.filter, 4, AUDIT_ARCH_I386, [0; 6]));
            let (x32_read, x32_execve, x32_other) = if has(Arch::ScmpArchX32) {
                (RET_ALLOW, RET_ERRNO | 5, RET_ERRNO | 1)
            } else {
                (BAD_ARCH, BAD_ARCH, BAD_ARCH)
            };
            assert_eq!(run_x32(&p, "read", [0; 6]), x32_read, "{arches:?}");
            assert_eq!(run_x32(&p, "getpid", [0; 6]), x32_read, "{arches:?}");
            assert_eq!(run_x32(&p, "arch_prctl", [0; 6]), x32_read, "{arches:?}");
            assert_eq!(run_x32(&p, "execve", [0; 6]), x32_execve, "{arches:?}");
            assert_eq!(run_x32(&p, "write", [0; 6]), x32_other, "{arches:?}");
            // x32 execve is 520 | bit; the x86_64 number 59 with the bit set is not x32's.
            assert_eq!(
                bpf::run(&p.filter, X32_SYSCALL_BIT | 59, AUDIT_ARCH_X86_64, [0; 6]),
                x32_other,
                "{arches:?}"
            );
            // Without the bit, 520 is no x86_64 call.
            assert_eq!(bpf::run(&p.filter, 520, AUDIT_ARCH_X86_64, [0; 6]), RET_ERRNO | 1);
        }
    }

    /// On i386 only the low 32 bits are compared, with the profile's values truncated.
    #[test]
    fn i386_comparisons_use_the_low_word() {
        use LinuxSeccompOperator::*;
        let values: [u64; 10] = [
            0,
            1,
            5,
            0x7fff_ffff,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0005,
            0x8000_0000_0000_0000,
            0xffff_ffff_0000_0000,
            u64::MAX,
        ];
        for op in [ScmpCmpNe, ScmpCmpLt, ScmpCmpLe, ScmpCmpEq, ScmpCmpGe, ScmpCmpGt, ScmpCmpMaskedEq] {
            for &v in &values {
                for &v2 in &values {
                    let p = compile(&with_arches(
                        profile(
                            LinuxSeccompAction::ScmpActAllow,
                            vec![syscall(
                                &["getppid"],
                                LinuxSeccompAction::ScmpActErrno,
                                Some(9),
                                vec![arg(2, op, v, Some(v2))],
                            )],
                        ),
                        ALL_X86,
                    ))
                    .unwrap();
                    for &x in &values {
                        // The kernel zero-extends i386 arguments: only the low word is real.
                        #[allow(clippy::cast_possible_truncation)]
                        let (x, v, v2) = (x as u32, v as u32, v2 as u32);
                        let want = match op {
                            ScmpCmpNe => x != v,
                            ScmpCmpLt => x < v,
                            ScmpCmpLe => x <= v,
                            ScmpCmpEq => x == v,
                            ScmpCmpGe => x >= v,
                            ScmpCmpGt => x > v,
                            ScmpCmpMaskedEq => x & v == v2 & v,
                        };
                        let got = run_i386(&p, "getppid", [0, 0, u64::from(x), 0, 0, 0]) == RET_ERRNO | 9;
                        assert_eq!(got, want, "{op:?} arg={x:#x} value={v:#x} value_two={v2:#x}");
                        // Garbage in the high word is ignored on i386, not on x86_64/x32.
                        let junk = u64::from(x) | 0xdead_0000_0000_0000;
                        let got = run_i386(&p, "getppid", [0, 0, junk, 0, 0, 0]) == RET_ERRNO | 9;
                        assert_eq!(got, want, "{op:?} arg={junk:#x} value={v:#x}");
                    }
                }
            }
        }
        // Docker's personality(0xffffffff) rule, given as a 64-bit value, still matches on i386.
        let p = compile(&with_arches(
            profile(
                LinuxSeccompAction::ScmpActErrno,
                vec![syscall(
                    &["personality"],
                    LinuxSeccompAction::ScmpActAllow,
                    None,
                    vec![arg(0, ScmpCmpEq, 0x1_ffff_ffff, None)],
                )],
            ),
            ALL_X86,
        ))
        .unwrap();
        assert_eq!(run_i386(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&p, "personality", [0x1_ffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run_x32(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
    }

    #[test]
    fn every_action() {
        use LinuxSeccompAction::*;
        let p = compile(&profile(
            ScmpActAllow,
            vec![
                syscall(&["getpid"], ScmpActKill, None, vec![]),
                syscall(&["getppid"], ScmpActKillThread, None, vec![]),
                syscall(&["gettid"], ScmpActKillProcess, None, vec![]),
                syscall(&["getuid"], ScmpActTrap, None, vec![]),
                syscall(&["getgid"], ScmpActErrno, None, vec![]),
                syscall(&["geteuid"], ScmpActErrno, Some(42), vec![]),
                syscall(&["getegid"], ScmpActTrace, Some(7), vec![]),
                syscall(&["uname"], ScmpActLog, None, vec![]),
            ],
        ))
        .unwrap();
        assert_eq!(run(&p, "getpid", [0; 6]), RET_KILL_THREAD);
        assert_eq!(run(&p, "getppid", [0; 6]), RET_KILL_THREAD);
        assert_eq!(run(&p, "gettid", [0; 6]), RET_KILL_PROCESS);
        assert_eq!(run(&p, "getuid", [0; 6]), RET_TRAP);
        assert_eq!(run(&p, "getgid", [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&p, "geteuid", [0; 6]), RET_ERRNO | 42);
        assert_eq!(run(&p, "getegid", [0; 6]), RET_TRACE | 7);
        assert_eq!(run(&p, "uname", [0; 6]), RET_LOG);
        assert_eq!(run(&p, "read", [0; 6]), RET_ALLOW);

        let mut with_default_errno = profile(ScmpActErrno, vec![]);
        with_default_errno.set_default_errno_ret(Some(38));
        let p = compile(&with_default_errno).unwrap();
        assert_eq!(run(&p, "read", [0; 6]), RET_ERRNO | 38);
    }

    #[test]
    fn notify_and_bad_values_are_refused() {
        use LinuxSeccompAction::*;
        let e = compile(&profile(ScmpActAllow, vec![syscall(&["read"], ScmpActNotify, None, vec![])]));
        assert!(matches!(e, Err(SeccompError::NotifyUnsupported)), "{e:?}");
        assert!(matches!(compile(&profile(ScmpActNotify, vec![])), Err(SeccompError::NotifyUnsupported)));
        let e = compile(&profile(
            ScmpActAllow,
            vec![syscall(
                &["read"],
                ScmpActErrno,
                None,
                vec![arg(6, LinuxSeccompOperator::ScmpCmpEq, 0, None)],
            )],
        ));
        assert!(matches!(e, Err(SeccompError::ArgIndex { index: 6, .. })), "{e:?}");
        let e =
            compile(&profile(ScmpActAllow, vec![syscall(&["read"], ScmpActErrno, Some(0x10000), vec![])]));
        assert!(matches!(e, Err(SeccompError::ErrnoRange(0x10000))), "{e:?}");
    }

    #[test]
    fn flags() {
        let mut p = profile(LinuxSeccompAction::ScmpActAllow, vec![]);
        p.set_flags(Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
        ]));
        assert_eq!(compile(&p).unwrap().flags, SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW);
    }

    #[test]
    fn unknown_names_are_skipped() {
        let p = compile(&profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(
                &["socketcall", "no_such_call", "read"],
                LinuxSeccompAction::ScmpActAllow,
                None,
                vec![],
            )],
        ))
        .unwrap();
        assert_eq!(run(&p, "read", [0; 6]), RET_ALLOW);
    }

    /// Every operator against a reference, on values around the word boundaries.
    #[test]
    fn comparisons_match_a_reference() {
        use LinuxSeccompOperator::*;
        let values: [u64; 12] = [
            0,
            1,
            5,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0005,
            0x1_ffff_ffff,
            0x2_0000_0000,
            0x8000_0000_0000_0000,
            0xffff_ffff_0000_0000,
            0xffff_ffff_ffff_fffe,
            u64::MAX,
        ];
        for op in [ScmpCmpNe, ScmpCmpLt, ScmpCmpLe, ScmpCmpEq, ScmpCmpGe, ScmpCmpGt, ScmpCmpMaskedEq] {
            for &v in &values {
                for &v2 in &values {
                    let p = compile(&profile(
                        LinuxSeccompAction::ScmpActAllow,
                        vec![syscall(
                            &["getppid"],
                            LinuxSeccompAction::ScmpActErrno,
                            Some(9),
                            vec![arg(2, op, v, Some(v2))],
                        )],
                    ))
                    .unwrap();
                    for &x in &values {
                        let want = match op {
                            ScmpCmpNe => x != v,
                            ScmpCmpLt => x < v,
                            ScmpCmpLe => x <= v,
                            ScmpCmpEq => x == v,
                            ScmpCmpGe => x >= v,
                            ScmpCmpGt => x > v,
                            ScmpCmpMaskedEq => x & v == v2 & v,
                        };
                        let got = run(&p, "getppid", [0, 0, x, 0, 0, 0]) == RET_ERRNO | 9;
                        assert_eq!(got, want, "{op:?} arg={x:#x} value={v:#x} value_two={v2:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn conditions_of_one_rule_are_anded_and_repeated_indexes_ored() {
        use LinuxSeccompOperator::*;
        let p = compile(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(
                    &["getppid"],
                    LinuxSeccompAction::ScmpActErrno,
                    Some(1),
                    vec![arg(0, ScmpCmpEq, 1, None), arg(5, ScmpCmpGt, 10, None)],
                ),
                syscall(
                    &["getpid"],
                    LinuxSeccompAction::ScmpActErrno,
                    Some(2),
                    vec![arg(0, ScmpCmpEq, 1, None), arg(0, ScmpCmpEq, 3, None)],
                ),
            ],
        ))
        .unwrap();
        assert_eq!(run(&p, "getppid", [1, 0, 0, 0, 0, 11]), RET_ERRNO | 1);
        assert_eq!(run(&p, "getppid", [1, 0, 0, 0, 0, 10]), RET_ALLOW);
        assert_eq!(run(&p, "getppid", [2, 0, 0, 0, 0, 11]), RET_ALLOW);
        assert_eq!(run(&p, "getpid", [1; 6]), RET_ERRNO | 2);
        assert_eq!(run(&p, "getpid", [3; 6]), RET_ERRNO | 2);
        assert_eq!(run(&p, "getpid", [2; 6]), RET_ALLOW);
    }

    #[test]
    fn precedence() {
        use LinuxSeccompAction::*;
        use LinuxSeccompOperator::*;
        let p = compile(&profile(
            ScmpActErrno,
            vec![
                // Conditional rules: first match wins.
                syscall(&["getppid"], ScmpActErrno, Some(5), vec![arg(0, ScmpCmpGe, 10, None)]),
                syscall(&["getppid"], ScmpActAllow, None, vec![arg(0, ScmpCmpGe, 5, None)]),
                // An unconditional rule beats conditional ones, before or after it.
                syscall(&["getpid"], ScmpActErrno, Some(6), vec![arg(0, ScmpCmpEq, 1, None)]),
                syscall(&["getpid"], ScmpActAllow, None, vec![]),
                syscall(&["getpid"], ScmpActErrno, Some(7), vec![]),
                // A rule with the default action is dropped.
                syscall(&["gettid"], ScmpActErrno, None, vec![]),
                syscall(&["gettid"], ScmpActAllow, None, vec![arg(0, ScmpCmpEq, 1, None)]),
            ],
        ))
        .unwrap();
        assert_eq!(run(&p, "getppid", [12, 0, 0, 0, 0, 0]), RET_ERRNO | 5);
        assert_eq!(run(&p, "getppid", [7, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "getppid", [1, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&p, "getpid", [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "getpid", [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, "gettid", [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "gettid", [0; 6]), RET_ERRNO | 1);
    }

    #[test]
    fn every_i386_and_x32_syscall_reaches_its_block() {
        for (abi, arch, calls) in [
            (Arch::ScmpArchX86, AUDIT_ARCH_I386, i386::syscalls().collect::<Vec<_>>()),
            (Arch::ScmpArchX32, AUDIT_ARCH_X86_64, x32::syscalls().collect()),
        ] {
            let rules = calls
                .iter()
                .map(|(n, nr)| {
                    syscall(&[n], LinuxSeccompAction::ScmpActErrno, Some((nr & 0xfff) + 1000), vec![])
                })
                .collect();
            let p = compile(&with_arches(profile(LinuxSeccompAction::ScmpActAllow, rules), &[abi])).unwrap();
            for (name, nr) in &calls {
                assert_eq!(
                    bpf::run(&p.filter, *nr, arch, [0; 6]),
                    RET_ERRNO | ((nr & 0xfff) + 1000),
                    "{name}"
                );
                assert_eq!(syscall_number_for(abi, name), Some(*nr), "{name}");
            }
            assert_eq!(
                bpf::run(&p.filter, 1000, AUDIT_ARCH_I386, [0; 6]),
                if abi == Arch::ScmpArchX86 { RET_ALLOW } else { BAD_ARCH }
            );
            assert_eq!(
                bpf::run(&p.filter, X32_SYSCALL_BIT | 1000, AUDIT_ARCH_X86_64, [0; 6]),
                if abi == Arch::ScmpArchX32 { RET_ALLOW } else { BAD_ARCH }
            );
        }
    }

    #[test]
    fn every_syscall_reaches_its_block() {
        // One rule per x86_64 call, each with its own errno: exercises chunks and long jumps.
        let calls: Vec<(&str, u32)> = x86_64::syscalls().collect();
        let rules = calls
            .iter()
            .map(|(n, nr)| syscall(&[n], LinuxSeccompAction::ScmpActErrno, Some(nr + 1000), vec![]))
            .collect();
        let p = compile(&profile(LinuxSeccompAction::ScmpActAllow, rules)).unwrap();
        for (name, nr) in &calls {
            assert_eq!(run(&p, name, [0; 6]), RET_ERRNO | (nr + 1000), "{name}");
        }
        assert_eq!(bpf::run(&p.filter, 400, AUDIT_ARCH_X86_64, [0; 6]), RET_ALLOW);
        assert_eq!(bpf::run(&p.filter, 1000, AUDIT_ARCH_X86_64, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn long_blocks_use_a_trampoline() {
        use LinuxSeccompOperator::*;
        // 60 conditional rules for one call: a block far longer than 255 instructions.
        let mut rules: Vec<LinuxSyscall> = (0..60u32)
            .map(|i| {
                syscall(
                    &["getppid"],
                    LinuxSeccompAction::ScmpActErrno,
                    Some(100 + i),
                    vec![arg(1, ScmpCmpEq, u64::from(i), None)],
                )
            })
            .collect();
        rules.push(syscall(&["getpid"], LinuxSeccompAction::ScmpActErrno, Some(3), vec![]));
        let p = compile(&profile(LinuxSeccompAction::ScmpActAllow, rules)).unwrap();
        for i in 0..60u32 {
            assert_eq!(run(&p, "getppid", [0, u64::from(i), 0, 0, 0, 0]), RET_ERRNO | (100 + i));
        }
        assert_eq!(run(&p, "getppid", [0, 60, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "getpid", [0; 6]), RET_ERRNO | 3);
        assert_eq!(run(&p, "read", [0; 6]), RET_ALLOW);
    }

    #[test]
    fn too_long_is_an_error() {
        use LinuxSeccompOperator::*;
        let args: Vec<LinuxSeccompArg> = (0..6).map(|i| arg(i, ScmpCmpGt, 1, None)).collect();
        let rules: Vec<LinuxSyscall> = (0..200)
            .map(|i| syscall(&["getppid"], LinuxSeccompAction::ScmpActErrno, Some(i), args.clone()))
            .collect();
        let e = compile(&profile(LinuxSeccompAction::ScmpActAllow, rules));
        assert!(matches!(e, Err(SeccompError::TooLong(n)) if n > BPF_MAXINSNS), "{e:?}");
    }

    #[test]
    fn docker_profile_compiles_and_fits() {
        let p = docker(DOCKER_CAPS);
        assert!(p.filter.len() <= BPF_MAXINSNS);
        assert!(p.filter.len() < 2600, "{} instructions", p.filter.len());
        eprintln!("Docker default profile (x86_64, x86, x32), default caps: {} instructions", p.filter.len());
        let only_native = {
            let mut profile = docker_profile(
                DOCKER_DEFAULT_PROFILE_JSON,
                DOCKER_CAPS,
                KernelVersion { major: 6, minor: 1 },
            )
            .unwrap();
            profile.set_architectures(None);
            compile(&profile).unwrap().filter.len()
        };
        eprintln!("Docker default profile, x86_64 only: {only_native} instructions");
        assert!(only_native < 1200, "{only_native} instructions");
        let eperm = RET_ERRNO | 1;
        for name in [
            "read",
            "write",
            "getpid",
            "uname",
            "keyctl",
            "execve",
            "chroot",
            "arch_prctl",
            "modify_ldt",
            "ptrace",
        ] {
            assert_eq!(run(&p, name, [0; 6]), RET_ALLOW, "{name}");
        }
        for name in
            ["kexec_load", "init_module", "reboot", "open_by_handle_at", "unshare", "mount", "setns", "bpf"]
        {
            assert_eq!(run(&p, name, [0; 6]), eperm, "{name}");
        }
        assert_eq!(run(&p, "clone3", [0; 6]), RET_ERRNO | 38);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(&p, "clone", [newuser | 17, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run(&p, "clone", [17, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "socket", [40, 1, 0, 0, 0, 0]), eperm);
        assert_eq!(run(&p, "socket", [1, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "personality", [0x1_ffff_ffff, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run(&p, "personality", [1, 0, 0, 0, 0, 0]), eperm);
        // The same rules for 32-bit programs.
        for name in ["read", "write", "getpid", "uname", "keyctl", "execve", "socketcall", "mmap2", "_llseek"]
        {
            assert_eq!(run_i386(&p, name, [0; 6]), RET_ALLOW, "i386 {name}");
        }
        for name in ["read", "write", "getpid", "execve", "arch_prctl", "rt_sigaction", "ioctl"] {
            assert_eq!(run_x32(&p, name, [0; 6]), RET_ALLOW, "x32 {name}");
        }
        for name in ["kexec_load", "init_module", "reboot", "open_by_handle_at", "unshare", "mount", "bpf"] {
            assert_eq!(run_i386(&p, name, [0; 6]), eperm, "i386 {name}");
            assert_eq!(run_x32(&p, name, [0; 6]), eperm, "x32 {name}");
        }
        assert_eq!(run_i386(&p, "clone", [newuser | 17, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run_i386(&p, "clone", [17, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run_i386(&p, "clone3", [0; 6]), RET_ERRNO | 38);
        assert_eq!(run_i386(&p, "socket", [40, 1, 0, 0, 0, 0]), eperm);
        assert_eq!(run_i386(&p, "socket", [1, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run_i386(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run_i386(&p, "personality", [1, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run_x32(&p, "clone", [newuser | 17, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(run_x32(&p, "clone", [17, 0, 0, 0, 0, 0]), RET_ALLOW);

        let mut admin = DOCKER_CAPS.to_vec();
        admin.push("CAP_SYS_ADMIN");
        let p = docker(&admin);
        eprintln!("Docker default profile, + CAP_SYS_ADMIN: {} instructions", p.filter.len());
        assert_eq!(run(&p, "clone", [newuser | 17, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, "clone3", [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, "unshare", [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, "reboot", [0; 6]), eperm);
        assert_eq!(run_i386(&p, "unshare", [0; 6]), RET_ALLOW);
        assert_eq!(run_x32(&p, "unshare", [0; 6]), RET_ALLOW);
    }

    #[test]
    fn berth_profile_refuses_the_keyring_on_every_abi() {
        let profile = berth_default_profile(DOCKER_CAPS, KernelVersion { major: 6, minor: 1 }).unwrap();
        let p = compile(&profile).unwrap();
        eprintln!("berth default profile (x86_64, x86, x32): {} instructions", p.filter.len());
        let eperm = RET_ERRNO | 1;
        for name in BERTH_DENIED_SYSCALLS {
            assert_eq!(run(&p, name, [0; 6]), eperm, "{name}");
            assert_eq!(run_i386(&p, name, [0; 6]), eperm, "i386 {name}");
            assert_eq!(run_x32(&p, name, [0; 6]), eperm, "x32 {name}");
        }
        assert_eq!(bpf::run(&p.filter, 288, AUDIT_ARCH_I386, [9999, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(bpf::run(&p.filter, 20, AUDIT_ARCH_I386, [0; 6]), RET_ALLOW); // getpid
        assert_eq!(run_i386(&p, "getpid", [0; 6]), RET_ALLOW);
        assert_eq!(run_x32(&p, "getpid", [0; 6]), RET_ALLOW);
        assert_eq!(bpf::run(&p.filter, X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, [0; 6]), RET_ALLOW);
        // x32 read
    }
}
