//! Compressed swap in RAM (`[system] zram`): a boot step, after the modules (zram and its
//! allocator load with the early ones) and before any container.
//!
//! Order: the size from `/proc/meminfo` → `/sys/block/zram0/disksize` (the compressor stays
//! the kernel's default, lzo-rle; changing it after the size is refused) → a swap header
//! written by hand (what `mkswap` writes: version 1, the last page, `SWAPSPACE2` at the end of
//! the first page) → `swapon(2)` with priority 100, above any disk swap → `zram.ready`.

use std::io::Write;

use berth_schema::appliance::ZramSize;

use super::log;

const DEVICE: &str = "/dev/zram0";
const DISKSIZE: &str = "/sys/block/zram0/disksize";
const PAGE: usize = 4096;
/// `SWAP_FLAG_PREFER | 100`: used before any swap on a disk.
const SWAP_FLAGS: libc::c_int = 0x8000 | 100;

/// The first page of a swap area of `bytes` (`union swap_header`, `<linux/swap.h>`): version
/// 1, the last usable page, no bad pages, the `SWAPSPACE2` magic in its last ten bytes.
pub fn swap_header(bytes: u64) -> Result<[u8; PAGE], String> {
    let pages = bytes / PAGE as u64;
    let last_page = u32::try_from(pages.saturating_sub(1))
        .map_err(|_| format!("{bytes} bytes is too large a swap area"))?;
    if last_page == 0 {
        return Err(format!("{bytes} bytes is too small a swap area"));
    }
    let mut page = [0u8; PAGE];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    page[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    page[PAGE - 10..].copy_from_slice(b"SWAPSPACE2");
    Ok(page)
}

/// The machine's memory (`MemTotal`), in bytes.
fn mem_total() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "/proc/meminfo has no MemTotal".to_string())
}

/// Sets up the zram swap device of `size`; `zram.ready`, or `zram.failed` and why.
pub fn set_up(size: ZramSize) {
    match try_set_up(size) {
        Ok(bytes) => log::emit(log::event("zram.ready").with("device", DEVICE).with("size_mb", bytes >> 20)),
        Err(e) => log::emit(log::event("zram.failed").with("error", e)),
    }
}

fn try_set_up(size: ZramSize) -> Result<u64, String> {
    let bytes = size.bytes(mem_total()?);
    let header = swap_header(bytes)?;
    std::fs::write(DISKSIZE, bytes.to_string()).map_err(|e| {
        format!("{DISKSIZE}: {e} (is the zram module loaded, or zram built into the kernel?)")
    })?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(DEVICE)
        .and_then(|mut f| {
            f.write_all(&header)?;
            f.sync_all()
        })
        .map_err(|e| format!("{DEVICE}: writing the swap header: {e}"))?;
    let path = c"/dev/zram0";
    // SAFETY: swapon reads the NUL-terminated path; the flags are valid SWAP_FLAG_* bits.
    if unsafe { libc::swapon(path.as_ptr(), SWAP_FLAGS) } != 0 {
        return Err(format!("swapon {DEVICE}: {}", std::io::Error::last_os_error()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swap_header_is_mkswaps() {
        let h = swap_header(64 << 20).unwrap();
        assert_eq!(&h[1024..1028], &1u32.to_le_bytes(), "version 1");
        assert_eq!(&h[1028..1032], &16383u32.to_le_bytes(), "last page: pages − 1");
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert!(h[..1024].iter().all(|&b| b == 0), "boot bits are zero");
        assert!(h[1032..4086].iter().all(|&b| b == 0), "no bad pages, no uuid, no label");
        assert!(swap_header(4096).unwrap_err().contains("too small"));
        assert!(swap_header(1 << 50).unwrap_err().contains("too large"));
    }

    #[test]
    fn mkswap_writes_the_same_header_but_its_uuid() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path().join("swap");
        std::fs::write(&area, vec![0u8; 8 << 20]).unwrap();
        let out = std::process::Command::new("mkswap").arg(&area).output().expect("mkswap (util-linux)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut theirs = std::fs::read(&area).unwrap()[..PAGE].to_vec();
        theirs[1036..1052].fill(0);
        assert_eq!(theirs, swap_header(8 << 20).unwrap().to_vec());
    }
}
