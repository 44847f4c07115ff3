//! berth-init: the config schema shared with `berth build`, the boot plan, console events,
//! the planning of one container (shared with `berth build`), and (in the binary) PID 1 itself.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod accounts;
pub mod config;
pub mod config_drive;
pub mod disk_probe;
/// Console events (the `berth-events` crate, shared with the QEMU harness).
pub use berth_events as events;
pub mod net;
pub mod plan;
pub mod process;
pub mod resolve;
pub mod syslog;
mod text_form;
pub mod units;
