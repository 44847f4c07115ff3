//! A compiled seccomp program and its one text encoding.
//!
//! `berth build` compiles filters for the kernel it packs and writes them into the boot plan;
//! PID 1 reads them back and installs them. Both sides go through the serde implementation
//! here, so there is one encoding and one decoding:
//!
//! ```json
//! { "flags": 0, "instructions": "0020000000000004 0015000100c0003e …" }
//! ```
//!
//! without the spaces: each instruction is 16 hexadecimal digits, the fields of the kernel's
//! `struct sock_filter` in order — `code` (4 digits), `jt` (2), `jf` (2), `k` (8). One JSON string
//! is far quicker to read than thousands of numbers (PID 1 parses the plan at every boot, often
//! under emulation), and a program is checked as it is read: never empty, at most
//! [`BPF_MAXINSNS`] instructions.

use serde::{Deserialize, Serialize};

use super::BPF_MAXINSNS;

/// Hexadecimal digits of one encoded instruction.
const DIGITS: usize = 16;

/// A compiled filter, ready for [`super::install`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(into = "Encoded", try_from = "Encoded")]
pub struct SeccompProgram {
    /// The classic BPF instructions; never empty, at most [`BPF_MAXINSNS`].
    pub filter: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*` bits from the profile's `flags` (`SECCOMP_FILTER_FLAG_LOG`,
    /// `_SPEC_ALLOW`, `_TSYNC`; `_WAIT_KILLABLE_RECV` is dropped: it is only valid with a
    /// notification listener, which is refused).
    pub flags: u32,
}

impl std::fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompProgram")
            .field("instructions", &self.filter.len())
            .field("flags", &self.flags)
            .finish()
    }
}

impl PartialEq for SeccompProgram {
    fn eq(&self, other: &Self) -> bool {
        let fields = |i: &libc::sock_filter| (i.code, i.jt, i.jf, i.k);
        self.flags == other.flags
            && self.filter.len() == other.filter.len()
            && self.filter.iter().zip(&other.filter).all(|(a, b)| fields(a) == fields(b))
    }
}

impl Eq for SeccompProgram {}

/// A program as it is written: see the module documentation.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Encoded {
    /// `SECCOMP_FILTER_FLAG_*` bits.
    #[serde(default)]
    flags: u32,
    /// The instructions, 16 hexadecimal digits each.
    instructions: String,
}

impl From<SeccompProgram> for Encoded {
    fn from(program: SeccompProgram) -> Encoded {
        use std::fmt::Write;
        let mut instructions = String::with_capacity(program.filter.len() * DIGITS);
        for i in &program.filter {
            // Writing to a String cannot fail.
            let _ = write!(instructions, "{:04x}{:02x}{:02x}{:08x}", i.code, i.jt, i.jf, i.k);
        }
        Encoded { flags: program.flags, instructions }
    }
}

impl TryFrom<Encoded> for SeccompProgram {
    type Error = String;

    fn try_from(encoded: Encoded) -> Result<SeccompProgram, String> {
        let text = encoded.instructions.as_bytes();
        let count = text.len() / DIGITS;
        if !text.len().is_multiple_of(DIGITS) || count == 0 || count > BPF_MAXINSNS {
            return Err(format!(
                "seccomp instructions: {} hexadecimal digits are not 1 to {BPF_MAXINSNS} instructions of {DIGITS}",
                text.len()
            ));
        }
        if !text.iter().all(u8::is_ascii_hexdigit) {
            return Err("seccomp instructions: not hexadecimal digits".to_string());
        }
        let hex = |digits: &[u8]| {
            digits.iter().fold(0u32, |n, d| n << 4 | char::from(*d).to_digit(16).unwrap_or_default())
        };
        // The digit counts bound each value to its field's width, so the casts are exact.
        #[allow(clippy::cast_possible_truncation)]
        let filter = text
            .chunks_exact(DIGITS)
            .map(|i| libc::sock_filter {
                code: hex(&i[0..4]) as u16,
                jt: hex(&i[4..6]) as u8,
                jf: hex(&i[6..8]) as u8,
                k: hex(&i[8..16]),
            })
            .collect();
        Ok(SeccompProgram { filter, flags: encoded.flags })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    #[test]
    fn encodes_and_decodes_every_field() {
        let program = SeccompProgram {
            filter: vec![
                insn(0x20, 0, 0, 4),
                insn(0x15, 1, 0xff, 0xc000_003e),
                insn(0x06, 0, 0, 0x7fff_0000),
            ],
            flags: super::super::SECCOMP_FILTER_FLAG_LOG,
        };
        let json = serde_json::to_string(&program).unwrap();
        assert_eq!(json, r#"{"flags":2,"instructions":"0020000000000004001501ffc000003e000600007fff0000"}"#);
        let back: SeccompProgram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, program);
        assert_ne!(back, SeccompProgram { flags: 0, ..program.clone() });
    }

    #[test]
    fn a_compiled_profile_round_trips() {
        let kernel = crate::seccomp::KernelVersion { major: 6, minor: 1 };
        let profile = crate::seccomp::berth_default_profile(&["CAP_SYS_ADMIN"], kernel).unwrap();
        let program = crate::seccomp::compile(&profile).unwrap();
        let back: SeccompProgram = serde_json::from_str(&serde_json::to_string(&program).unwrap()).unwrap();
        assert_eq!(back, program);
    }

    #[test]
    fn refuses_what_is_not_a_program() {
        for bad in [
            r#"{"instructions":""}"#,
            r#"{"instructions":"00200000000000"}"#,
            r#"{"instructions":"002000000000000g"}"#,
            r#"{"instructions":"+020000000000004"}"#,
            r#"{"instructions":"0020000000000004","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<SeccompProgram>(bad).is_err(), "{bad}");
        }
        let too_long = "0006000000000000".repeat(BPF_MAXINSNS + 1);
        let json = format!(r#"{{"instructions":"{too_long}"}}"#);
        assert!(serde_json::from_str::<SeccompProgram>(&json).is_err());
    }
}
