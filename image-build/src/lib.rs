//! berth-image-build: turns a berth config into bootable images.
//!
//! Image sources ([`reference`], [`source`], [`registry`], [`blobs`]) → layers as entry streams ([`layer`]) →
//! process merge ([`image_config`]) → kernel and modules ([`kernel`], [`modules`]), checked against what the
//! config needs ([`kernel_check`], [`bzimage`]) → initramfs
//! ([`cpio`]) → outputs ([`build`]). [`import`] makes OCI images from root filesystems.

pub mod blobs;
pub mod build;
pub mod bzimage;
pub mod cloud_formats;
pub mod container_disk;
pub mod cpio;
pub mod formats;
pub mod fs_tools;
pub mod image_config;
pub mod import;
pub mod init_binary;
pub mod initramfs;
pub mod inspect;
pub mod kernel;
pub mod kernel_check;
pub mod layer;
pub mod layout;
pub mod lockfile;
pub mod modules;
pub mod reference;
pub mod registry;
pub mod seccomp_filters;
pub mod signing;
pub mod sizing;
pub mod source;
pub mod system_partition;
pub mod update_bundle;
pub mod verity;
