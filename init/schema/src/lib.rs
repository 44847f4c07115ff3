//! berth-schema: what `berth build` and PID 1 agree on — the TOML config (parsed once into
//! typed, located values), the boot plan it becomes (`/berth/plan.json`), and the planning of
//! one container on a packed image, used by the builder for the config file's containers and
//! by PID 1 for those delivered at boot.
//!
//! Pure data and conversions: nothing here makes a system call. The runtime-ready values the
//! plan carries (mounts, rlimits, the seccomp program, capability masks) are `berth-runtime`'s
//! types, so that a planned container becomes a launch spec by field copies.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod accounts;
pub mod appliance;
pub mod config;
pub mod hardening;
pub mod metadata;
pub mod modalias;
pub mod plan;
pub mod process;
pub mod resolve;
pub mod slots;
pub mod syslog;
pub mod system_partition;
mod text_form;
pub mod time_sync;
pub mod uki;
pub mod units;
pub mod update;
pub mod verity;
pub mod verity_tree;
