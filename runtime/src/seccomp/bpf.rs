//! A tiny classic-BPF assembler with forward labels.
//!
//! Classic BPF has no backward jumps, conditional jumps carry 8-bit offsets and only `JA` has a
//! 32-bit offset. The code generator places every possibly-far jump as a `JA` and keeps each
//! conditional jump's target within its own small block; [`Asm::finish`] checks both.

use super::SeccompError;

/// `BPF_LD | BPF_W | BPF_ABS`: `A = *(u32 *)(data + k)`.
pub(crate) const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
/// `BPF_ALU | BPF_AND | BPF_K`: `A &= k`.
pub(crate) const ALU_AND_K: u16 = 0x04 | 0x50;
/// `BPF_JMP | BPF_JA`: `pc += k`.
pub(crate) const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `pc += (A == k) ? jt : jf`.
pub(crate) const JEQ: u16 = 0x05 | 0x10;
/// `BPF_JMP | BPF_JGT | BPF_K`: `pc += (A > k) ? jt : jf` (unsigned).
pub(crate) const JGT: u16 = 0x05 | 0x20;
/// `BPF_JMP | BPF_JGE | BPF_K`: `pc += (A >= k) ? jt : jf` (unsigned).
pub(crate) const JGE: u16 = 0x05 | 0x30;
/// `BPF_RET | BPF_K`: return `k`.
pub(crate) const RET_K: u16 = 0x06;

/// A forward jump target.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The next instruction (offset 0).
    Next,
    /// A label bound later with [`Asm::bind`].
    Label(usize),
}

/// One instruction, or a label's position.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// An instruction without jump: load, ALU or return.
    Stmt { code: u16, k: u32 },
    /// A conditional jump (8-bit offsets).
    Jump { code: u16, k: u32, jt: Target, jf: Target },
    /// An unconditional jump (32-bit offset).
    Ja(usize),
    /// Binds a label to the position of the next instruction; emits nothing.
    Bind(usize),
}

/// A sequence of [`Op`]s plus a label allocator; several sequences may share one allocator.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    pub(crate) ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    /// A fresh label, to be bound exactly once with [`Asm::bind`].
    pub(crate) fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    /// Binds `label` here.
    pub(crate) fn bind(&mut self, label: usize) {
        self.ops.push(Op::Bind(label));
    }

    /// `A = seccomp_data[offset]` (32 bits).
    pub(crate) fn load(&mut self, offset: u32) {
        self.ops.push(Op::Stmt { code: LD_W_ABS, k: offset });
    }

    /// `A &= k`.
    pub(crate) fn and(&mut self, k: u32) {
        self.ops.push(Op::Stmt { code: ALU_AND_K, k });
    }

    /// Return `k` (a `SECCOMP_RET_*` value).
    pub(crate) fn ret(&mut self, k: u32) {
        self.ops.push(Op::Stmt { code: RET_K, k });
    }

    /// A conditional jump.
    pub(crate) fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Jump { code, k, jt, jf });
    }

    /// An unconditional jump to `label`.
    pub(crate) fn ja(&mut self, label: usize) {
        self.ops.push(Op::Ja(label));
    }

    /// Number of real instructions in `ops` (labels take no room).
    pub(crate) fn len_of(ops: &[Op]) -> usize {
        ops.iter().filter(|op| !matches!(op, Op::Bind(_))).count()
    }

    /// Resolves the labels and emits the program.
    pub(crate) fn finish(&self) -> Result<Vec<libc::sock_filter>, SeccompError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0usize;
        for op in &self.ops {
            match op {
                Op::Bind(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        let offset = |pc: usize, t: Target| -> Result<usize, SeccompError> {
            match t {
                Target::Next => Ok(0),
                Target::Label(l) => {
                    let to = at[l];
                    if to == usize::MAX || to <= pc {
                        return Err(SeccompError::Internal("jump to an unbound or earlier label"));
                    }
                    Ok(to - pc - 1)
                }
            }
        };
        for op in &self.ops {
            let pc = out.len();
            let insn = match *op {
                Op::Bind(_) => continue,
                Op::Stmt { code, k } => libc::sock_filter { code, jt: 0, jf: 0, k },
                Op::Jump { code, k, jt, jf } => {
                    let (t, f) = (offset(pc, jt)?, offset(pc, jf)?);
                    let t =
                        u8::try_from(t).map_err(|_| SeccompError::Internal("conditional jump beyond 255"))?;
                    let f =
                        u8::try_from(f).map_err(|_| SeccompError::Internal("conditional jump beyond 255"))?;
                    libc::sock_filter { code, jt: t, jf: f, k }
                }
                Op::Ja(l) => {
                    let k = u32::try_from(offset(pc, Target::Label(l))?)
                        .map_err(|_| SeccompError::Internal("jump beyond 2^32"))?;
                    libc::sock_filter { code: JMP_JA, jt: 0, jf: 0, k }
                }
            };
            out.push(insn);
        }
        Ok(out)
    }
}

/// Runs `prog` on a `seccomp_data` the way the kernel's classic-BPF interpreter does (only the
/// instructions this assembler emits), returning the `SECCOMP_RET_*` value. For tests.
#[cfg(test)]
pub(crate) fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u32; 16];
    data[0] = nr;
    data[1] = arch;
    for (i, a) in args.iter().enumerate() {
        // The low and the high word of the argument, as `struct seccomp_data` holds it.
        #[allow(clippy::cast_possible_truncation)]
        let low = *a as u32;
        data[4 + 2 * i] = low;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = prog[pc];
        pc += 1;
        match insn.code {
            LD_W_ABS => a = data[insn.k as usize / 4],
            ALU_AND_K => a &= insn.k,
            JMP_JA => pc += insn.k as usize,
            JEQ | JGT | JGE => {
                let hit = match insn.code {
                    JEQ => a == insn.k,
                    JGT => a > insn.k,
                    _ => a >= insn.k,
                };
                pc += usize::from(if hit { insn.jt } else { insn.jf });
            }
            RET_K => return insn.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}
