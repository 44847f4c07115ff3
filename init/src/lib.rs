//! berth-init: PID 1, as a library so that its modules can be unit-tested; `main.rs` only
//! picks the role by the name the binary is called with (PID 1, `berthctl`, `poweroff` …).
//!
//! The config schema and the boot plan it shares with `berth build` are `berth-schema`'s; what
//! is here runs only in the booted machine: the boot, the supervisor, networking (DHCP,
//! rtnetlink, nftables), the data disk and the configuration delivered at boot.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config_drive;
pub mod disk_probe;
pub mod esp;
pub mod net;
pub mod pid1;
