//! berth-init: the config schema shared with `berth build`, the boot plan, console events,
//! and (in the binary) PID 1 itself.

pub mod config;
pub mod config_drive;
pub mod disk_probe;
pub mod events;
pub mod net;
pub mod plan;
pub mod syslog;
pub mod units;
