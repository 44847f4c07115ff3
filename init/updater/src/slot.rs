//! Writing the inactive slot's system partition: the index, each piece (copied from the running
//! slot's verity device, or streamed from the registry), then the hash tree, computed from what
//! was written and read back, which must give the update's root hash.
//!
//! Order (each step flushed before the next): the slot's boot entry is already gone (see
//! `esp`), so a power cut anywhere here leaves a slot nothing boots; the entry comes back only
//! once the tree matches.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use berth_schema::system_partition::Index;
use berth_schema::verity::VeritySpec;
use sha2::{Digest as _, Sha256};

use crate::plan::{Source, Step};

/// The running slot's verity device (PID 1 made it): reads from it are checked blocks.
pub const RUNNING_DEVICE: &str = "/dev/mapper/berth-system";

/// The size in bytes of block device `dev` (`/dev/vda3`).
pub fn device_bytes(dev: &Path) -> Result<u64, String> {
    let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sectors =
        fs::read_to_string(format!("/sys/class/block/{name}/size")).map_err(|e| format!("{name}: {e}"))?;
    sectors.trim().parse::<u64>().map(|s| s * 512).map_err(|e| format!("{name}: size: {e}"))
}

/// The index at the start of a slot's partition (read through `dev`).
pub fn read_index(dev: &Path) -> Result<Index, String> {
    let mut f = File::open(dev).map_err(|e| format!("{}: {e}", dev.display()))?;
    Index::read(&mut f).map_err(|e| format!("{}: {e}", dev.display()))
}

/// Streams blob `digest` of `size` bytes into the writer, checked (the registry).
pub type Fetch<'a> = dyn FnMut(&str, u64, &mut dyn Write) -> Result<(), String> + 'a;

/// What filling a slot took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filled {
    /// Pieces copied from the running slot, and their bytes.
    pub copied: (usize, u64),
}

/// Fills `target` with `header` at 0 and every step's piece at its offset, fetching with
/// `fetch(digest, size, out)` what the running slot does not have. Each copied piece is
/// checked against its digest too.
pub fn fill(target: &Path, header: &[u8], steps: &[Step], fetch: &mut Fetch<'_>) -> Result<Filled, String> {
    let shown = target.display().to_string();
    let mut out = OpenOptions::new().write(true).open(target).map_err(|e| format!("{shown}: {e}"))?;
    out.write_all(header).map_err(|e| format!("{shown}: {e}"))?;
    let mut filled = Filled::default();
    for step in steps {
        let p = &step.piece;
        out.seek(SeekFrom::Start(p.offset)).map_err(|e| format!("{shown}: {e}"))?;
        match step.source {
            Source::Fetch => {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut out);
                fetch(&p.digest, p.bytes, &mut w)?;
                w.flush().map_err(|e| format!("{shown}: {e}"))?;
            }
            Source::Running(from) => {
                let mut input = File::open(RUNNING_DEVICE).map_err(|e| format!("{RUNNING_DEVICE}: {e}"))?;
                input.seek(SeekFrom::Start(from)).map_err(|e| format!("{RUNNING_DEVICE}: {e}"))?;
                let mut hash = Sha256::new();
                let mut left = p.bytes;
                let mut buf = vec![0u8; 1 << 20];
                while left > 0 {
                    let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    input
                        .read_exact(&mut buf[..n])
                        .map_err(|e| format!("{RUNNING_DEVICE}: piece `{}`: {e}", p.path))?;
                    hash.update(&buf[..n]);
                    out.write_all(&buf[..n]).map_err(|e| format!("{shown}: {e}"))?;
                    left -= n as u64;
                }
                if format!("sha256:{}", hex::encode(hash.finalize())) != p.digest {
                    return Err(format!("the running slot's piece `{}` does not have its digest", p.path));
                }
                filled.copied.0 += 1;
                filled.copied.1 += p.bytes;
            }
        }
    }
    out.sync_all().map_err(|e| format!("{shown}: flushing: {e}"))?;
    Ok(filled)
}

/// Computes the hash tree of what `target` holds (its first `spec.data_blocks` blocks, read
/// back), checks its root against `spec` and writes it after the data.
pub fn write_tree(target: &Path, spec: &VeritySpec) -> Result<(), String> {
    let shown = target.display().to_string();
    let mut f =
        OpenOptions::new().read(true).write(true).open(target).map_err(|e| format!("{shown}: {e}"))?;
    let data = spec.data_blocks * berth_schema::verity::BLOCK_SIZE;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, (&mut f).take(data));
    let tree = berth_schema::verity_tree::hash_tree(&mut reader, spec.salt)
        .map_err(|e| format!("{shown}: hashing: {e}"))?;
    drop(reader);
    if tree.root != spec.root {
        return Err(format!(
            "the slot written does not hash to the update's root hash {} (it gives {}): not installed",
            spec.root_hex(),
            tree.spec().root_hex()
        ));
    }
    f.seek(SeekFrom::Start(data)).map_err(|e| format!("{shown}: {e}"))?;
    f.write_all(&tree.tree).map_err(|e| format!("{shown}: {e}"))?;
    f.sync_all().map_err(|e| format!("{shown}: flushing: {e}"))
}
