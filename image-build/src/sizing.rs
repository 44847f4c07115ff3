//! How much guest RAM an image needs before its containers use any: what the kernel must hold
//! while it unpacks the initramfs, and what UEFI firmware needs to start a UKI.
//!
//! All-in-RAM (`kernel+initrd`, `uki`, `iso`): the kernel keeps the compressed archive while
//! it unpacks it into page cache that is never freed, file by file in whole pages. Measured on
//! Debian's cloud kernel 6.1 under QEMU, a machine needs 2.3 times the unpacked pages plus
//! 72 MiB, rounded up to 32 MiB: the hello example (8 MiB of pages) fails with 80 MiB and boots
//! with 96; a 222 MB Debian root with redis (225 MiB of pages) fails with 576 MiB
//! (`Initramfs unpacking failed: write error`) and boots with 608. Under UEFI the firmware also
//! holds the UKI while its stub starts the kernel.
//!
//! The disk formats unpack only PID 1 and a few modules; their layers are read from the
//! system partition as needed. OVMF then sets the floor: with 160 MiB its EFI stub stops
//! silently, with 192 MiB every image tried boots.

/// A MiB.
const MIB: u64 = 1 << 20;
/// What the kernel and PID 1 take besides the unpacked initramfs.
const BASE: u64 = 72 * MIB;
/// The least RAM with which OVMF starts a UKI.
pub const UEFI_FLOOR_MIB: u64 = 192;

/// Rounded up to 32 MiB, in MiB.
fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(32 * MIB) * 32
}

/// The guest RAM (MiB) to boot an initramfs that takes `unpacked` bytes once unpacked (whole
/// pages), started by the kernel directly (`-kernel`/`-initrd`, a network boot).
pub fn in_ram_mib(unpacked: u64) -> u64 {
    mib_up(unpacked * 23 / 10 + BASE)
}

/// The guest RAM (MiB) to boot the same through UEFI from a UKI of `uki_bytes`.
pub fn uefi_mib(unpacked: u64, uki_bytes: u64) -> u64 {
    mib_up(unpacked * 23 / 10 + BASE + uki_bytes).max(UEFI_FLOOR_MIB)
}

/// What `berth build` tells about an image's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeeds {
    /// kernel+initrd, booted directly (the initramfs unpacked into RAM).
    pub kernel_initrd_mib: u64,
    /// The disk formats (raw-efi, qcow2, vhdx), when built.
    pub disk_mib: Option<u64>,
}

impl MemoryNeeds {
    /// The line `berth build` prints.
    pub fn summary(&self) -> String {
        let disk = match self.disk_mib {
            Some(d) => format!(
                ", {d} MiB from the disk (raw-efi, qcow2, vhdx: layers stay on the verified partition)"
            ),
            None => String::new(),
        };
        format!(
            "needs {} MiB of guest RAM as kernel+initrd (uki and iso: more, for the firmware){disk}, \
             plus what its containers use",
            self.kernel_initrd_mib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_images_are_sized_between_what_failed_and_what_booted() {
        // hello: 80 MiB failed, 96 MiB booted.
        let hello = in_ram_mib(8 * MIB);
        assert!(hello > 80 && hello <= 96, "{hello}");
        // redis on a Debian root (225 MiB of pages): 576 MiB failed, 608 MiB booted.
        let redis = in_ram_mib(225 * MIB);
        assert!(redis > 576 && redis <= 608, "{redis}");
        // Disks: 160 MiB failed, 192 MiB booted.
        assert_eq!(uefi_mib(5 * MIB, 17 * MIB), UEFI_FLOOR_MIB);
        assert!(uefi_mib(228 * MIB, 100 * MIB) > in_ram_mib(228 * MIB));
    }
}
