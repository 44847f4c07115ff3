//! The dm-verity hash tree, shared with the updater on the machine: see
//! [`berth_schema::verity_tree`].

pub use berth_schema::verity_tree::*;
