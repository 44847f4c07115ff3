//! Device-mapper devices through `/dev/mapper/control` ioctls (no `dmsetup` or `veritysetup` in
//! the image): PID 1 makes the system partition's `verity` device with them.
//!
//! Order of the ioctls, as `dmsetup create` does it: `DM_DEV_CREATE` (a named device with no
//! table) → `DM_TABLE_LOAD` (the table goes to the inactive slot) → `DM_DEV_SUSPEND` without
//! the suspend flag (resume: the inactive table becomes live). A failure after the create
//! removes the device again (`DM_DEV_REMOVE`). The buffers are built by pure functions
//! ([`ioctl_buffer`]) so that their layout is unit-tested; the calls are thin.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

/// The version of the ioctl interface berth speaks (any 4.x kernel answers it).
const DM_VERSION: [u32; 3] = [4, 0, 0];
/// `sizeof(struct dm_ioctl)`.
const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const DM_TARGET_SPEC_SIZE: usize = 40;
/// Offsets in `struct dm_ioctl`.
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
/// `DM_NAME_LEN`.
const NAME_LEN: usize = 128;
/// `DM_READONLY_FLAG`.
pub const READONLY_FLAG: u32 = 1 << 0;

/// The ioctl numbers (`_IOWR(0xfd, NR, struct dm_ioctl)`).
const DM_DEV_CREATE: u8 = 3;
const DM_DEV_REMOVE: u8 = 4;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;

/// One line of a device's table: `length` sectors from `start` mapped by `target` with `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// First sector of the device this line maps.
    pub start: u64,
    /// Sectors it maps.
    pub length: u64,
    /// The target type (`verity`, `linear` …).
    pub kind: String,
    /// The target's parameters.
    pub params: String,
}

/// The buffer of one ioctl on the device `name`: the `dm_ioctl` header, then each target's
/// `dm_target_spec` and NUL-terminated parameters, 8-byte aligned.
pub fn ioctl_buffer(name: &str, flags: u32, targets: &[Target]) -> Result<Vec<u8>, String> {
    if name.is_empty() || name.len() >= NAME_LEN || name.contains('/') {
        return Err(format!("device-mapper name `{name}` must be 1 to {} bytes without `/`", NAME_LEN - 1));
    }
    let mut buf = vec![0u8; DM_IOCTL_SIZE];
    for (i, v) in DM_VERSION.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    buf[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
    for t in targets {
        if t.kind.is_empty() || t.kind.len() >= 16 {
            return Err(format!("device-mapper target type `{}` is not 1 to 15 bytes", t.kind));
        }
        let spec_at = buf.len();
        buf.resize(spec_at + DM_TARGET_SPEC_SIZE, 0);
        buf[spec_at..spec_at + 8].copy_from_slice(&t.start.to_ne_bytes());
        buf[spec_at + 8..spec_at + 16].copy_from_slice(&t.length.to_ne_bytes());
        buf[spec_at + 24..spec_at + 24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
        buf.extend_from_slice(t.params.as_bytes());
        buf.push(0);
        buf.resize(buf.len().next_multiple_of(8), 0);
        // `next`: from this spec to the next one (or the end).
        let next = u32::try_from(buf.len() - spec_at).map_err(|_| "device-mapper parameters too long")?;
        buf[spec_at + 20..spec_at + 24].copy_from_slice(&next.to_ne_bytes());
    }
    let size = u32::try_from(buf.len()).map_err(|_| "device-mapper table too long")?;
    let count = u32::try_from(targets.len()).map_err(|_| "too many device-mapper targets")?;
    let start = u32::try_from(DM_IOCTL_SIZE).unwrap_or_default();
    buf[OFF_DATA_SIZE..OFF_DATA_SIZE + 4].copy_from_slice(&size.to_ne_bytes());
    buf[OFF_DATA_START..OFF_DATA_START + 4].copy_from_slice(&start.to_ne_bytes());
    buf[OFF_TARGET_COUNT..OFF_TARGET_COUNT + 4].copy_from_slice(&count.to_ne_bytes());
    buf[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_ne_bytes());
    Ok(buf)
}

/// The `dev` field of an answered ioctl: the device's number (`huge_encode_dev`).
pub fn answered_dev(buf: &[u8]) -> Option<(u32, u32)> {
    let raw = u64::from_ne_bytes(buf.get(OFF_DEV..OFF_DEV + 8)?.try_into().ok()?);
    Some((libc::major(raw), libc::minor(raw)))
}

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
fn request(nr: u8) -> libc::c_ulong {
    nix::request_code_readwrite!(0xfd, nr, DM_IOCTL_SIZE)
}

/// Runs one ioctl on the control device with `buf`; the kernel writes its answer into it.
fn call(control: &std::fs::File, nr: u8, buf: &mut [u8]) -> Result<(), nix::errno::Errno> {
    // SAFETY: `buf` is a valid, writable dm_ioctl buffer of `data_size` bytes (its header says
    // so), alive for the call; the kernel reads and writes only within `data_size`.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), request(nr), buf.as_mut_ptr()) };
    nix::errno::Errno::result(r).map(drop)
}

/// Creates the device `name` with `targets`, read-only when `read_only`, and makes it live;
/// returns its device number. Nothing is left behind on failure.
pub fn create(name: &str, targets: &[Target], read_only: bool) -> Result<(u32, u32), String> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|e| format!("/dev/mapper/control: {e} (is dm-mod loaded?)"))?;
    let flags = if read_only { READONLY_FLAG } else { 0 };
    let mut created = ioctl_buffer(name, flags, &[])?;
    call(&control, DM_DEV_CREATE, &mut created).map_err(|e| format!("DM_DEV_CREATE {name}: {e}"))?;
    let live = (|| {
        let mut table = ioctl_buffer(name, flags, targets)?;
        call(&control, DM_TABLE_LOAD, &mut table).map_err(|e| format!("DM_TABLE_LOAD {name}: {e}"))?;
        let mut resume = ioctl_buffer(name, 0, &[])?;
        call(&control, DM_DEV_SUSPEND, &mut resume)
            .map_err(|e| format!("DM_DEV_SUSPEND (resume) {name}: {e}"))?;
        answered_dev(&resume).ok_or_else(|| format!("{name}: no device number in the answer"))
    })();
    if live.is_err() {
        if let Ok(mut remove) = ioctl_buffer(name, 0, &[]) {
            let _ = call(&control, DM_DEV_REMOVE, &mut remove);
        }
    }
    live
}

/// Removes the device `name` (nothing may hold it open).
pub fn remove(name: &str) -> Result<(), String> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|e| format!("/dev/mapper/control: {e}"))?;
    let mut buf = ioctl_buffer(name, 0, &[])?;
    call(&control, DM_DEV_REMOVE, &mut buf).map_err(|e| format!("DM_DEV_REMOVE {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(buf: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_header_and_a_target_are_laid_out_as_the_kernel_reads_them() {
        let verity = Target { start: 0, length: 2400, kind: "verity".into(), params: "1 /dev/vdb x".into() };
        let buf = ioctl_buffer("berth-system", READONLY_FLAG, std::slice::from_ref(&verity)).unwrap();
        assert_eq!([u32_at(&buf, 0), u32_at(&buf, 4), u32_at(&buf, 8)], [4, 0, 0]);
        assert_eq!(u32_at(&buf, OFF_DATA_SIZE) as usize, buf.len());
        assert_eq!(u32_at(&buf, OFF_DATA_START), 312);
        assert_eq!(u32_at(&buf, OFF_TARGET_COUNT), 1);
        assert_eq!(u32_at(&buf, OFF_FLAGS), READONLY_FLAG);
        assert_eq!(&buf[48..60], b"berth-system");
        assert_eq!(buf[60], 0);
        let spec = 312;
        assert_eq!(u64::from_ne_bytes(buf[spec + 8..spec + 16].try_into().unwrap()), 2400);
        assert_eq!(&buf[spec + 24..spec + 31], b"verity\0");
        assert_eq!(&buf[spec + 40..spec + 53], b"1 /dev/vdb x\0");
        assert_eq!(buf.len() % 8, 0);
        assert_eq!(u32_at(&buf, spec + 20) as usize, buf.len() - spec, "next points past the params");
    }

    #[test]
    fn names_and_types_are_checked() {
        assert!(ioctl_buffer("", 0, &[]).is_err());
        assert!(ioctl_buffer(&"n".repeat(128), 0, &[]).is_err());
        assert!(ioctl_buffer("a/b", 0, &[]).is_err());
        let long = Target { start: 0, length: 1, kind: "x".repeat(16), params: String::new() };
        assert!(ioctl_buffer("ok", 0, &[long]).is_err());
        assert_eq!(ioctl_buffer("ok", 0, &[]).unwrap().len(), 312);
    }

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        // From <linux/dm-ioctl.h> on x86_64: DM_DEV_CREATE 0xc138fd03, DM_TABLE_LOAD 0xc138fd09.
        assert_eq!(request(DM_DEV_CREATE), 0xc138_fd03);
        assert_eq!(request(DM_TABLE_LOAD), 0xc138_fd09);
        assert_eq!(request(DM_DEV_SUSPEND), 0xc138_fd06);
        assert_eq!(request(DM_DEV_REMOVE), 0xc138_fd04);
    }
}
