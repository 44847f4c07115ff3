//! The dm-verity hash tree of a read-only partition, as `veritysetup format --no-superblock`
//! writes it (format version 1, SHA-256, 4096-byte data and hash blocks), computed here so that
//! building an image needs neither root nor a loop device, and is reproducible.
//!
//! The tree: level 0 holds `SHA-256(salt ‖ block)` of every data block, 128 digests per hash
//! block, the last block zero-padded; each higher level hashes the blocks of the one below, up
//! to a level of one block, whose hash is the root hash. The levels are stored highest first.
//! One data block has no tree: its own hash is the root hash. The data must be a whole number of
//! blocks (the kernel ignores a partial last one).
//!
//! Shared: `berth build` computes the tree of the partition it writes, the updater on the
//! machine that of the slot it fills (and checks it against the root hash the update's signed
//! UKI carries).

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// The size of a data block and of a hash block.
pub const BLOCK_SIZE: usize = 4096;
/// The size of a SHA-256 digest.
const DIGEST_SIZE: usize = 32;
/// Digests in one hash block.
const DIGESTS_PER_BLOCK: usize = BLOCK_SIZE / DIGEST_SIZE;

/// A partition's hash tree and what the kernel needs to check the partition with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTree {
    /// The root hash: what the kernel command line carries.
    pub root: [u8; DIGEST_SIZE],
    /// The salt hashed before every block.
    pub salt: [u8; DIGEST_SIZE],
    /// How many data blocks the tree covers.
    pub data_blocks: u64,
    /// The hash blocks, highest level first, to be written after the data (or on a device of
    /// their own).
    pub tree: Vec<u8>,
}

impl HashTree {
    /// The parameters the kernel command line carries for this tree.
    pub fn spec(&self) -> crate::verity::VeritySpec {
        crate::verity::VeritySpec { data_blocks: self.data_blocks, root: self.root, salt: self.salt }
    }
}

/// `SHA-256(salt ‖ block)`.
fn hash_block(salt: &[u8; DIGEST_SIZE], block: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Packs `digests` into zero-padded hash blocks.
fn pack(digests: &[[u8; DIGEST_SIZE]]) -> Vec<u8> {
    let blocks = digests.len().div_ceil(DIGESTS_PER_BLOCK);
    let mut out = vec![0u8; blocks * BLOCK_SIZE];
    for (slot, digest) in out.chunks_exact_mut(DIGEST_SIZE).zip(digests) {
        slot.copy_from_slice(digest);
    }
    out
}

/// Computes the hash tree of the data `data` yields, which must be a non-empty whole number of
/// [`BLOCK_SIZE`] blocks; `salt` should be derived from the content for a reproducible image.
pub fn hash_tree(data: &mut impl Read, salt: [u8; DIGEST_SIZE]) -> io::Result<HashTree> {
    let mut level: Vec<[u8; DIGEST_SIZE]> = Vec::new();
    let mut block = vec![0u8; BLOCK_SIZE];
    loop {
        let mut filled = 0;
        while filled < BLOCK_SIZE {
            match data.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        if filled < BLOCK_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("verity: the data ends inside a block ({filled} of {BLOCK_SIZE} bytes); pad it to whole blocks"),
            ));
        }
        level.push(hash_block(&salt, &block));
    }
    let data_blocks = level.len() as u64;
    let Some(&first) = level.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "verity: no data to protect"));
    };
    if level.len() == 1 {
        return Ok(HashTree { root: first, salt, data_blocks, tree: Vec::new() });
    }
    // Levels from 0 (over the data) up to the one of a single block.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    loop {
        let packed = pack(&level);
        let single = packed.len() == BLOCK_SIZE;
        level = packed.chunks_exact(BLOCK_SIZE).map(|b| hash_block(&salt, b)).collect();
        levels.push(packed);
        if single {
            break;
        }
    }
    let root = level[0];
    let tree = levels.into_iter().rev().flatten().collect();
    Ok(HashTree { root, salt, data_blocks, tree })
}

/// The bytes of the hash tree of `data_blocks` blocks (what [`hash_tree`] returns as `tree`),
/// known before the data is.
pub fn tree_bytes(data_blocks: u64) -> u64 {
    let per_block = DIGESTS_PER_BLOCK as u64;
    let mut total = 0;
    let mut level = data_blocks;
    while level > 1 {
        level = level.div_ceil(per_block);
        total += level;
    }
    total * BLOCK_SIZE as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE).map(|i| u8::try_from(i * 7 % 251).unwrap()).collect()
    }

    #[test]
    fn one_block_is_its_own_root() {
        let d = data(1);
        let t = hash_tree(&mut d.as_slice(), [3; 32]).unwrap();
        assert_eq!(t.root, hash_block(&[3; 32], &d));
        assert!(t.tree.is_empty());
        assert_eq!(tree_bytes(1), 0);
        assert_eq!(t.data_blocks, 1);
    }

    #[test]
    fn levels_grow_by_128_and_the_highest_comes_first() {
        let salt = [9; 32];
        for (blocks, hash_blocks) in
            [(2, 1), (128, 1), (129, 2 + 1), (128 * 128, 128 + 1), (128 * 128 + 1, 129 + 2 + 1)]
        {
            let d = data(blocks);
            let t = hash_tree(&mut d.as_slice(), salt).unwrap();
            assert_eq!(t.tree.len(), hash_blocks * BLOCK_SIZE, "{blocks} data blocks");
            assert_eq!(tree_bytes(blocks as u64), t.tree.len() as u64, "{blocks} data blocks");
            // The root is the hash of the first (highest, single) block.
            assert_eq!(t.root, hash_block(&salt, &t.tree[..BLOCK_SIZE]), "{blocks} data blocks");
            // The last level's first digest is that of the first data block.
            let level0 = t.tree.len() - blocks.div_ceil(DIGESTS_PER_BLOCK) * BLOCK_SIZE;
            assert_eq!(t.tree[level0..level0 + 32], hash_block(&salt, &d[..BLOCK_SIZE]));
        }
    }

    #[test]
    fn partial_blocks_and_empty_data_are_refused() {
        let e = hash_tree(&mut [0u8; 5000].as_slice(), [0; 32]).unwrap_err();
        assert!(e.to_string().contains("ends inside a block"), "{e}");
        assert!(hash_tree(&mut [0u8; 0].as_slice(), [0; 32]).is_err());
    }
}
