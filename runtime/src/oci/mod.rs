//! OCI bundles: `config.json` translation, container state for the CLI, hooks, the console
//! socket, and runc's default config.
//!
//! The CLI (`src/bin/berth-runtime.rs`, feature `cli`) glues these to the launcher; nothing here
//! depends on clap, so PID 1 links none of it.

pub mod config;
pub mod console;
pub mod default_spec;
pub mod hooks;
pub mod state;
pub mod validate;

pub use config::{load, parse, translate, ConfigError, Loaded, Options, Translated};
pub use state::{ContainerState, StateRoot, Status};
