//! Boots berth images in QEMU.
//!
//! - [`accel`] decides KVM or TCG: KVM only once a real guest has shown it works on this host
//!   (the verdict is cached per host); [`kvm_usable`] says what it would pick now.
//! - [`Vm`] starts `qemu-system-x86_64` from a [`VmConfig`], captures the serial console line by
//!   line, parses PID 1's console [`Event`]s and waits for lines, events or the exit of QEMU.
//! - [`Qmp`] talks to QEMU's machine protocol (`system_powerdown`, `quit`, …).
//!
//! Everything that waits takes a timeout; [`default_timeout`] is the one tests use.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod accel;
mod console;
mod error;
mod kvm;
mod qmp;
mod silence;
mod spawn;
mod vm;

pub use accel::{Accel, HostKey, Verdict, VerdictCache};
pub use berth_events::Event;
pub use error::{Error, Result};
pub use kvm::{kvm_usable, probe_kvm};
pub use qmp::Qmp;
pub use silence::SilenceNotices;
pub use vm::{default_timeout, user_net_args, GuestShutdown, Machine, Vm, VmConfig};
