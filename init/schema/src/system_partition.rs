//! The verified system partition of a disk image, as `berth build` lays it out and PID 1 uses
//! it.
//!
//! On the partition: an [`Index`] (its header, whole 4 KiB blocks), then its pieces, each a
//! squashfs at a 4 KiB-aligned offset: the base (the plan, the tools, empty directories where
//! the other pieces are mounted), the kernel modules, and each layer. A piece is the same bytes
//! in every image that holds the same content, so an update ships only the pieces the machine
//! does not have (by digest), and copies the others from its running slot. dm-verity's hash
//! tree follows the last piece and covers the index and every piece.
//!
//! A disk image boots a slim initramfs: PID 1, the modules that reach the partition, and
//! [`EarlyBoot`] (at [`EARLY_BOOT_PATH`]) listing them. Everything else is on the partition, a
//! read-only squashfs checked block by block by dm-verity (root hash on the signed UKI's command
//! line): the boot plan ([`PLAN`]), every layer once ([`LAYERS`]), the kernel modules
//! ([`MODULES`]) and the data disk's tools ([`TOOLS`]). PID 1 mounts it on [`MOUNT_POINT`] and
//! binds each of its directories where the initramfs layout has them ([`BINDS`]), so everything
//! after reads the same paths whether the image booted from RAM or from the disk.

use serde::{Deserialize, Serialize};

use crate::plan::{LAYERS_DIR, TOOLS_DIR};

/// The GPT partition name of the system partition (found by PID 1 as `partlabel:` this).
pub const PARTITION_NAME: &str = "berth-system";
/// Where PID 1 mounts it (read-only).
pub const MOUNT_POINT: &str = "/berth/system";
/// The boot plan on the partition.
pub const PLAN: &str = "plan.json";
/// The layers on the partition: `layers/<sha256 hex>/`.
pub const LAYERS: &str = "layers";
/// The kernel modules on the partition: `modules/<release>/…`, as under `/lib/modules`.
pub const MODULES: &str = "modules";
/// The data disk's tools on the partition (as under [`TOOLS_DIR`]).
pub const TOOLS: &str = "tools";
/// The updater on the partition, under [`TOOLS`] (packed for `[update]`): PID 1 runs it from
/// [`TOOLS_DIR`]`/berth-updater`.
pub const UPDATER: &str = "berth-updater";
/// The directories of the partition PID 1 binds into the machine: (on the partition, where).
pub const BINDS: [(&str, &str); 3] = [(LAYERS, LAYERS_DIR), (MODULES, "/lib/modules"), (TOOLS, TOOLS_DIR)];
/// What a slot's partition starts with: these 8 bytes, the index's JSON length (8 bytes,
/// little-endian), the JSON; padded with zeros to whole 4 KiB blocks.
pub const INDEX_MAGIC: &[u8; 8] = b"BERTHSYS";
/// The alignment of the index and of every piece (dm-verity's block).
pub const PIECE_ALIGN: u64 = 4096;
/// The largest index PID 1 reads.
pub const INDEX_MAX_BYTES: u64 = 1 << 20;

/// The pieces of a slot's partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// In partition order; the base first.
    pub pieces: Vec<Piece>,
}

/// One squashfs on the partition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// Where it is mounted, relative to [`MOUNT_POINT`]: `""` for the base, `modules`,
    /// `layers/<hex>`.
    pub path: String,
    /// Its first byte on the partition (a multiple of [`PIECE_ALIGN`]).
    pub offset: u64,
    /// Its length (a multiple of [`PIECE_ALIGN`]).
    pub bytes: u64,
    /// The SHA-256 of its bytes, `sha256:<hex>`: the same piece in another image or an update
    /// has the same digest.
    pub digest: String,
}

fn align(v: u64) -> u64 {
    v.div_ceil(PIECE_ALIGN) * PIECE_ALIGN
}

impl Index {
    /// The header's bytes: magic, length, JSON, zeros to a whole number of blocks.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(json.len() + 16);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.resize(usize::try_from(align(out.len() as u64)).unwrap_or(out.len()), 0);
        out
    }

    /// The header's length in bytes from its first 16 bytes (blocks included): what to read
    /// before [`Index::decode`].
    pub fn header_bytes(start: &[u8]) -> Result<u64, String> {
        if start.len() < 16 || &start[..8] != INDEX_MAGIC {
            return Err("the partition does not start with berth's index (BERTHSYS)".into());
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&start[8..16]);
        let total = align(u64::from_le_bytes(len).saturating_add(16));
        if total > INDEX_MAX_BYTES {
            return Err(format!("the partition's index claims {total} bytes (at most {INDEX_MAX_BYTES})"));
        }
        Ok(total)
    }

    /// Reads and checks the header: pieces aligned, after the header, in order without overlap,
    /// the first the base, paths relative without `..`.
    pub fn decode(header: &[u8]) -> Result<Index, String> {
        let total = Index::header_bytes(header)?;
        let Ok(end) = usize::try_from(total) else { return Err("the index is too large".into()) };
        if header.len() < end {
            return Err(format!("the index needs {total} bytes, {} were read", header.len()));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&header[8..16]);
        let json_end = 16 + usize::try_from(u64::from_le_bytes(len)).map_err(|e| e.to_string())?;
        let index: Index = serde_json::from_slice(&header[16..json_end])
            .map_err(|e| format!("the partition's index: {e}"))?;
        let mut next = total;
        for (i, p) in index.pieces.iter().enumerate() {
            let bad = |why: &str| Err(format!("the partition's index: piece `{}`: {why}", p.path));
            if (i == 0) != p.path.is_empty() {
                return bad("the base (path \"\") comes first, and only once");
            }
            if p.path.starts_with('/') || p.path.split('/').any(|c| c == ".." || c == ".") {
                return bad("a path relative to the mount point, without . or ..");
            }
            if p.offset % PIECE_ALIGN != 0 || p.bytes % PIECE_ALIGN != 0 || p.bytes == 0 {
                return bad("offset and length are whole 4 KiB blocks");
            }
            if p.offset < next {
                return bad("overlaps the index or the piece before it");
            }
            next = p.offset.checked_add(p.bytes).ok_or("the partition's index: a piece ends past 2^64")?;
        }
        if index.pieces.is_empty() {
            return Err("the partition's index lists no piece".into());
        }
        Ok(index)
    }

    /// Reads the header from the start of a partition (`r` positioned there) and decodes it.
    pub fn read(r: &mut impl std::io::Read) -> Result<Index, String> {
        let mut start = [0u8; 16];
        r.read_exact(&mut start).map_err(|e| format!("reading the partition's index: {e}"))?;
        let total = usize::try_from(Index::header_bytes(&start)?).map_err(|e| e.to_string())?;
        let mut header = vec![0u8; total];
        header[..16].copy_from_slice(&start);
        r.read_exact(&mut header[16..]).map_err(|e| format!("reading the partition's index: {e}"))?;
        Index::decode(&header)
    }

    /// Where the last piece ends: the data the hash tree covers.
    pub fn data_bytes(&self) -> u64 {
        self.pieces.last().map_or(0, |p| p.offset + p.bytes)
    }

    /// Lays out pieces of these `(path, bytes, digest)` one after another behind the index,
    /// at offsets whose encoding fits the index they are in.
    pub fn lay_out(pieces: &[(String, u64, String)]) -> Index {
        let mut header = PIECE_ALIGN;
        loop {
            let mut at = header;
            let index = Index {
                pieces: pieces
                    .iter()
                    .map(|(path, bytes, digest)| {
                        let p = Piece {
                            path: path.clone(),
                            offset: at,
                            bytes: align(*bytes),
                            digest: digest.clone(),
                        };
                        at += p.bytes;
                        p
                    })
                    .collect(),
            };
            let needed = index.encode().len() as u64;
            if needed == header {
                return index;
            }
            header = needed;
        }
    }
}

/// Where a disk image's slim initramfs carries [`EarlyBoot`].
pub const EARLY_BOOT_PATH: &str = "/berth/early-boot.json";

/// What PID 1 does before the system partition is there: the modules that reach it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EarlyBoot {
    /// Paths in the initramfs, dependencies first: device-mapper and dm-verity, squashfs, the
    /// disk drivers.
    pub modules: Vec<String>,
}

impl EarlyBoot {
    /// Reads the JSON form.
    pub fn from_json(text: &str) -> Result<EarlyBoot, String> {
        serde_json::from_str(text).map_err(|e| format!("{EARLY_BOOT_PATH}: {e}"))
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(n: usize) -> Vec<(String, u64, String)> {
        (0..n)
            .map(|i| {
                let path = if i == 0 { String::new() } else { format!("layers/{i:064x}") };
                (path, 5000 + i as u64, format!("sha256:{i:064x}"))
            })
            .collect()
    }

    #[test]
    fn the_index_round_trips_and_grows_past_one_block() {
        for n in [1, 3, 40] {
            let index = Index::lay_out(&pieces(n));
            let header = index.encode();
            assert_eq!(Index::header_bytes(&header).unwrap(), header.len() as u64);
            assert_eq!(index.pieces[0].offset, header.len() as u64, "the base right after the index");
            assert_eq!(Index::decode(&header).unwrap(), index);
            assert_eq!(Index::read(&mut header.as_slice()).unwrap(), index);
            assert_eq!(index.pieces[1..].iter().map(|p| p.bytes).sum::<u64>() % PIECE_ALIGN, 0);
        }
        assert!(Index::lay_out(&pieces(40)).encode().len() > 4096);
    }

    #[test]
    fn a_bad_index_is_refused() {
        let good = Index::lay_out(&pieces(3));
        let refused = |edit: &dyn Fn(&mut Index)| {
            let mut i = good.clone();
            edit(&mut i);
            Index::decode(&i.encode()).unwrap_err()
        };
        assert!(refused(&|i| i.pieces[1].offset = i.pieces[0].offset).contains("overlaps"));
        assert!(refused(&|i| i.pieces[1].offset += 1).contains("4 KiB"));
        assert!(refused(&|i| i.pieces[2].path = "layers/../x".into()).contains("without"));
        assert!(refused(&|i| i.pieces.swap(0, 1)).contains("base"));
        assert!(refused(&|i| i.pieces.clear()).contains("no piece"));
        assert!(Index::header_bytes(b"NOTBERTH\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn early_boot_round_trips_and_refuses_unknown_fields() {
        let e = EarlyBoot { modules: vec!["/lib/modules/6.1/dm-mod.ko".into()] };
        assert_eq!(EarlyBoot::from_json(&e.to_json()).unwrap(), e);
        let err = EarlyBoot::from_json(r#"{"modules": [], "extra": 1}"#).unwrap_err();
        assert!(err.contains("extra") && err.starts_with(EARLY_BOOT_PATH), "{err}");
    }
}
