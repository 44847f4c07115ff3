//! berth-init: the config schema shared with `berth build`, the boot plan, console events,
//! and (in the binary) PID 1 itself.

pub mod accounts;
pub mod config;
pub mod config_drive;
pub mod events;
pub mod net;
pub mod plan;
pub mod process;
pub mod syslog;
pub mod units;
