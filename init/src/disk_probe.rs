//! What a disk holds, from its first and last bytes: blank, an ext2/3/4 filesystem (with the
//! superblock fields PID 1 needs), or something else that must not be formatted.
//!
//! "Blank" is deliberately strict: every byte of the first and last [`PROBE_BYTES`] is zero.
//! That catches partition tables (MBR and GPT at the start, GPT's backup header at the end),
//! every filesystem and volume-manager signature, and data written by anything else.

/// How many bytes at each end of a disk are read (1 MiB: past btrfs's superblock at 64 KiB
/// and ISO 9660's at 32 KiB).
pub const PROBE_BYTES: usize = 1 << 20;

/// Where an ext2/3/4 superblock starts.
const EXT_SUPERBLOCK: usize = 1024;
/// ext's magic number.
const EXT_MAGIC: u16 = 0xEF53;
/// `s_feature_incompat`: the journal needs replaying (the filesystem was not unmounted).
const INCOMPAT_RECOVER: u32 = 0x4;
/// `s_feature_incompat`: 64-bit block numbers.
const INCOMPAT_64BIT: u32 = 0x80;

/// An ext2/3/4 superblock's fields PID 1 uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSuperblock {
    /// The volume label.
    pub label: String,
    /// Filesystem blocks.
    pub blocks: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// The journal must be replayed: the filesystem was not cleanly unmounted.
    pub needs_recovery: bool,
    /// `s_state` has the "cleanly unmounted" bit and no error bit.
    pub clean: bool,
}

/// What a disk holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskContent {
    /// All zeros at both ends: safe to format.
    Blank,
    /// An ext2/3/4 filesystem.
    Ext(ExtSuperblock),
    /// Anything else, described for an error message ("a GPT partition table").
    Other(String),
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn has(b: &[u8], at: usize, sig: &[u8]) -> bool {
    b.get(at..at + sig.len()) == Some(sig)
}

/// Reads an ext2/3/4 superblock from a disk's first bytes (at least 2 KiB); `None` without
/// the magic number or with impossible fields.
pub fn ext_superblock(head: &[u8]) -> Option<ExtSuperblock> {
    let sb = head.get(EXT_SUPERBLOCK..EXT_SUPERBLOCK + 1024)?;
    if le16(sb, 56) != EXT_MAGIC {
        return None;
    }
    let log_block = le32(sb, 24);
    if log_block > 6 {
        return None; // blocks above 64 KiB do not exist
    }
    let incompat = le32(sb, 96);
    let mut blocks = le32(sb, 4) as u64;
    if incompat & INCOMPAT_64BIT != 0 {
        blocks |= (le32(sb, 0x150) as u64) << 32;
    }
    let state = le16(sb, 58);
    let label_bytes = &sb[120..136];
    let end = label_bytes.iter().position(|&b| b == 0).unwrap_or(label_bytes.len());
    Some(ExtSuperblock {
        label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
        blocks,
        block_size: 1024 << log_block,
        needs_recovery: incompat & INCOMPAT_RECOVER != 0,
        clean: state & 1 == 1 && state & 2 == 0,
    })
}

/// Classifies a disk from its first bytes (`head`) and last bytes (`tail`), each up to
/// [`PROBE_BYTES`] (a small disk gives the whole of itself as both).
pub fn classify(head: &[u8], tail: &[u8]) -> DiskContent {
    if let Some(sb) = ext_superblock(head) {
        return DiskContent::Ext(sb);
    }
    let signatures: &[(usize, &[u8], &str)] = &[
        (512, b"EFI PART", "a GPT partition table"),
        (4096, b"EFI PART", "a GPT partition table"),
        (0, b"XFSB", "an XFS filesystem"),
        (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
        (0, b"hsqs", "a squashfs filesystem"),
        (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
        (512, b"LABELONE", "an LVM physical volume"),
        (4086, b"SWAPSPACE2", "a swap area"),
        (32769, b"CD001", "an ISO 9660 filesystem"),
        (3, b"NTFS    ", "an NTFS filesystem"),
        (54, b"FAT1", "a FAT filesystem"),
        (82, b"FAT32   ", "a FAT filesystem"),
        (3, b"EXFAT   ", "an exFAT filesystem"),
    ];
    for (at, sig, what) in signatures {
        if has(head, *at, sig) {
            return DiskContent::Other(what.to_string());
        }
    }
    if has(head, 510, &[0x55, 0xAA]) {
        return DiskContent::Other("an MBR partition table or boot sector".to_string());
    }
    if let Some(at) = head.iter().position(|&b| b != 0) {
        return DiskContent::Other(format!("data (a non-zero byte at offset {at})"));
    }
    if tail.iter().any(|&b| b != 0) {
        return DiskContent::Other("data at its end (like a backup GPT header)".to_string());
    }
    DiskContent::Blank
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_head(label: &str, incompat: u32, state: u16) -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        let sb = &mut head[1024..2048];
        sb[4..8].copy_from_slice(&262_144u32.to_le_bytes());
        sb[24..28].copy_from_slice(&2u32.to_le_bytes());
        sb[56..58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        sb[58..60].copy_from_slice(&state.to_le_bytes());
        sb[96..100].copy_from_slice(&incompat.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        sb[120..120 + label.len()].copy_from_slice(label.as_bytes());
        head
    }

    #[test]
    fn blank_and_data() {
        let zeros = vec![0u8; 8192];
        assert_eq!(classify(&zeros, &zeros), DiskContent::Blank);
        let mut data = zeros.clone();
        data[5000] = 1;
        assert_eq!(
            classify(&data, &zeros),
            DiskContent::Other("data (a non-zero byte at offset 5000)".into())
        );
        assert!(matches!(classify(&zeros, &data), DiskContent::Other(m) if m.contains("end")));
    }

    #[test]
    fn ext_fields() {
        let head = ext_head("berth-data", INCOMPAT_RECOVER, 1);
        let DiskContent::Ext(sb) = classify(&head, &[]) else { panic!("not ext") };
        assert_eq!(sb.label, "berth-data");
        assert_eq!(sb.blocks, 262_144, "without 64bit the high word is ignored");
        assert_eq!(sb.block_size, 4096);
        assert!(sb.needs_recovery);
        assert!(sb.clean);
        let sb = ext_superblock(&ext_head("", INCOMPAT_64BIT, 3)).unwrap();
        assert_eq!(sb.blocks, (1 << 32) + 262_144);
        assert!(!sb.clean, "the error bit");
        assert!(!sb.needs_recovery);
    }

    #[test]
    fn signatures() {
        let mut gpt = vec![0u8; 8192];
        gpt[510] = 0x55;
        gpt[511] = 0xAA;
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(classify(&gpt, &[]), DiskContent::Other("a GPT partition table".into()));
        gpt[512..520].fill(0);
        assert!(matches!(classify(&gpt, &[]), DiskContent::Other(m) if m.contains("MBR")));
        let mut fat = vec![0u8; 8192];
        fat[82..90].copy_from_slice(b"FAT32   ");
        fat[510] = 0x55;
        fat[511] = 0xAA;
        assert_eq!(classify(&fat, &[]), DiskContent::Other("a FAT filesystem".into()));
        let mut short = vec![0u8; 100];
        short[0..4].copy_from_slice(b"XFSB");
        assert_eq!(classify(&short, &[]), DiskContent::Other("an XFS filesystem".into()));
    }
}
