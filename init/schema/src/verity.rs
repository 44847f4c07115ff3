//! The dm-verity parameters of the system partition, as the kernel command line carries them
//! (inside the signed UKI): `berth.verity=DATA_BLOCKS:ROOT_HASH:SALT` (hex), written by
//! `berth build` and read by PID 1, which sets up the verity device from them. The hash tree
//! follows the data on the same partition (`veritysetup --no-superblock` layout, format 1,
//! SHA-256, 4096-byte blocks).

use std::fmt;

/// The kernel command line parameter.
pub const CMDLINE_KEY: &str = "berth.verity";
/// Data and hash block size.
pub const BLOCK_SIZE: u64 = 4096;

/// What the kernel needs to check the system partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VeritySpec {
    /// Data blocks; the hash tree starts right after them.
    pub data_blocks: u64,
    /// The root hash.
    pub root: [u8; 32],
    /// The salt.
    pub salt: [u8; 32],
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("{CMDLINE_KEY}: the {what} must be 64 hexadecimal digits"));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |d: u8| char::from(d).to_digit(16).unwrap_or_default();
        // Two hex digits make at most 0xff.
        *byte = u8::try_from(digit(pair[0]) << 4 | digit(pair[1])).unwrap_or_default();
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl VeritySpec {
    /// Parses `DATA_BLOCKS:ROOT_HASH:SALT`.
    pub fn parse(text: &str) -> Result<VeritySpec, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let [blocks, root, salt] = parts.as_slice() else {
            return Err(format!("{CMDLINE_KEY}=`{text}` must be DATA_BLOCKS:ROOT_HASH:SALT"));
        };
        let data_blocks = blocks
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{CMDLINE_KEY}: `{blocks}` is not a number of data blocks"))?;
        Ok(VeritySpec { data_blocks, root: hex32(root, "root hash")?, salt: hex32(salt, "salt")? })
    }

    /// The parameter on a kernel command line, if it is there.
    pub fn from_cmdline(cmdline: &str) -> Option<Result<VeritySpec, String>> {
        let prefix = format!("{CMDLINE_KEY}=");
        cmdline.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).map(VeritySpec::parse)
    }

    /// The root hash in hexadecimal.
    pub fn root_hex(&self) -> String {
        hex(&self.root)
    }

    /// The partition's length in 512-byte sectors that the verity device exposes.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * (BLOCK_SIZE / 512)
    }

    /// The `verity` target's table line for `device` holding the data and, after it, the tree.
    pub fn table(&self, device: &str) -> String {
        format!(
            "1 {device} {device} {BLOCK_SIZE} {BLOCK_SIZE} {n} {n} sha256 {} {}",
            hex(&self.root),
            hex(&self.salt),
            n = self.data_blocks
        )
    }
}

impl fmt::Display for VeritySpec {
    /// `DATA_BLOCKS:ROOT_HASH:SALT`, as [`VeritySpec::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.data_blocks, hex(&self.root), hex(&self.salt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_makes_the_table() {
        let spec = VeritySpec {
            data_blocks: 300,
            root: [0xab; 32],
            salt: std::array::from_fn(|i| u8::try_from(i).unwrap()),
        };
        let text = spec.to_string();
        assert_eq!(VeritySpec::parse(&text), Ok(spec));
        let cmdline = format!("console=ttyS0 {CMDLINE_KEY}={text} quiet");
        assert_eq!(VeritySpec::from_cmdline(&cmdline), Some(Ok(spec)));
        assert_eq!(VeritySpec::from_cmdline("console=ttyS0"), None);
        assert_eq!(spec.sectors(), 2400);
        let table = spec.table("/dev/vdb");
        assert!(table.starts_with("1 /dev/vdb /dev/vdb 4096 4096 300 300 sha256 abab"), "{table}");
        assert!(
            table.ends_with(" 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
            "{table}"
        );
    }

    #[test]
    fn bad_parameters_say_what_is_wrong() {
        let root = "ab".repeat(32);
        assert!(VeritySpec::parse("12").unwrap_err().contains("DATA_BLOCKS:ROOT_HASH:SALT"));
        assert!(VeritySpec::parse(&format!("0:{root}:{root}"))
            .unwrap_err()
            .contains("number of data blocks"));
        assert!(VeritySpec::parse(&format!("5:{root}:xyz")).unwrap_err().contains("salt must be 64"));
        assert!(VeritySpec::parse(&format!("5:{}:{root}", "g".repeat(64)))
            .unwrap_err()
            .contains("root hash"));
    }
}
