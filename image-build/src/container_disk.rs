//! `berth build --format containerdisk`: the disk as KubeVirt's containerDisk, an OCI image
//! layout (`containerdisk/`) holding two images built `FROM scratch`:
//!
//! - tag `latest`: one layer with `disk/` and `disk/disk.qcow2` (the qcow2 format's file, no
//!   backing file), both owned by uid/gid 107 (qemu in KubeVirt's launcher), the disk mode 0440
//!   — exactly one file under `/disk/`, as KubeVirt's `container-disk` requires;
//! - tag `kernel-boot`: `boot/vmlinuz` and `boot/initrd.img` (also 107:107, as KubeVirt's guide
//!   asks), for
//!   `spec.domain.firmware.kernelBoot.container` (`kernelPath: /boot/vmlinuz`,
//!   `initrdPath: /boot/initrd.img`).
//!
//! Layers are gzip'd tars with GNU headers, every timestamp the build's epoch (and none in the
//! gzip header): two builds of the same input give the same digests. `berth push` sends an
//! image to a registry.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use berth_schema::update::Descriptor;

use crate::blobs::sha256_file;
use crate::layout::{put_bytes, put_file, write_index};

/// The layout's directory in the build's output.
pub const DIR: &str = "containerdisk";
/// The containerDisk image's tag in the layout.
pub const DISK_TAG: &str = "latest";
/// The kernel-boot image's tag in the layout.
pub const KERNEL_BOOT_TAG: &str = "kernel-boot";
/// The disk's path in the image.
pub const DISK_PATH: &str = "disk/disk.qcow2";
/// The uid and gid KubeVirt's launcher reads the disk as.
pub const QEMU_ID: u64 = 107;
/// An OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// A gzip-compressed layer (what every container runtime takes).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// One file of a layer: its path in the image, where it comes from, its mode and owner.
struct Entry<'a> {
    path: &'a str,
    source: &'a Path,
    mode: u32,
    owner: u64,
}

/// Writes a layer tar of `dirs` (directories, mode 0555) and `files`, every entry's time `epoch`.
fn write_layer(out: &Path, dirs: &[(&str, u64)], files: &[Entry<'_>], epoch: u64) -> Result<()> {
    let mut tar = tar::Builder::new(std::io::BufWriter::new(fs::File::create(out)?));
    let header = |kind: tar::EntryType, mode: u32, owner: u64, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_mtime(epoch);
        h.set_size(size);
        h
    };
    for (path, owner) in dirs {
        let mut h = header(tar::EntryType::Directory, 0o555, *owner, 0);
        tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    }
    for e in files {
        let f = fs::File::open(e.source).with_context(|| format!("{}", e.source.display()))?;
        let mut h = header(tar::EntryType::Regular, e.mode, e.owner, f.metadata()?.len());
        tar.append_data(&mut h, e.path, f)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Writes one image of the layout: its layer, config and manifest; returns the manifest's
/// descriptor.
fn write_image(out: &Path, dirs: &[(&str, u64)], files: &[Entry<'_>], epoch: u64) -> Result<Descriptor> {
    let tar = out.join("blobs/.layer.tar");
    write_layer(&tar, dirs, files, epoch)?;
    let diff_id = sha256_file(&tar).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gz = out.join("blobs/.layer.tar.gz");
    {
        // No name and time 0 in the gzip header: the bytes depend on the tar alone.
        let mut encoder = flate2::GzBuilder::new()
            .mtime(0)
            .write(std::io::BufWriter::new(fs::File::create(&gz)?), flate2::Compression::default());
        std::io::copy(&mut fs::File::open(&tar)?, &mut encoder)?;
        encoder.finish()?.flush()?;
    }
    fs::remove_file(&tar)?;
    let layer = put_file(out, LAYER_MEDIA_TYPE, &gz)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": crate::import::rfc3339(epoch),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = put_bytes(out, CONFIG_MEDIA_TYPE, &serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config,
        "layers": [layer],
    });
    put_bytes(out, MANIFEST_MEDIA_TYPE, &serde_json::to_vec(&manifest)?)
}

/// Writes the layout into `out` (a new directory) from the build's qcow2 disk and kernel and
/// initramfs.
pub fn write(out: &Path, qcow2: &Path, vmlinuz: &Path, initrd: &Path, epoch: u64) -> Result<()> {
    fs::create_dir_all(out.join("blobs/sha256"))?;
    let disk = write_image(
        out,
        &[("disk", QEMU_ID)],
        &[Entry { path: DISK_PATH, source: qcow2, mode: 0o440, owner: QEMU_ID }],
        epoch,
    )?;
    let kernel = write_image(
        out,
        &[("boot", QEMU_ID)],
        &[
            Entry { path: "boot/vmlinuz", source: vmlinuz, mode: 0o440, owner: QEMU_ID },
            Entry { path: "boot/initrd.img", source: initrd, mode: 0o440, owner: QEMU_ID },
        ],
        epoch,
    )?;
    write_index(out, &[(&disk, DISK_TAG, None), (&kernel, KERNEL_BOOT_TAG, None)])
}
