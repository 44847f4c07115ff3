//! What to do with an update, decided without touching anything: whether it is new, and where
//! each part of the slot it fills comes from (the running slot, or the registry).

use berth_schema::system_partition::{Index, Piece};
use berth_schema::update::Bundle;
use berth_schema::verity::VeritySpec;

/// Where a piece of the new slot comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running slot has it at this offset of its partition (read through its verity
    /// device: every block checked).
    Running(u64),
    /// Downloaded.
    Fetch,
}

/// One piece to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The piece, where it goes in the new slot.
    pub piece: Piece,
    /// Where its bytes come from.
    pub source: Source,
}

/// The pieces of `new`, each from the running slot when it holds the same digest.
pub fn pieces(new: &Index, running: Option<&Index>) -> Vec<Step> {
    new.pieces
        .iter()
        .map(|piece| {
            let have = running
                .and_then(|r| r.pieces.iter().find(|p| p.digest == piece.digest && p.bytes == piece.bytes));
            Step { piece: piece.clone(), source: have.map_or(Source::Fetch, |p| Source::Running(p.offset)) }
        })
        .collect()
}

/// Whether an update is worth installing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It is what runs.
    Running,
    /// It was installed before and rolled back: not tried again.
    RolledBack,
    /// It is installed in the other slot already, waiting for its reboot.
    Installed,
    /// Install it.
    New,
}

/// Judges `bundle` against the running slot's parameters, the root hashes rolled back before
/// (hex), and the root hash installed in the other slot, if any.
pub fn judge(
    bundle: &Bundle,
    running: &VeritySpec,
    refused: &[String],
    other: Option<&VeritySpec>,
) -> Verdict {
    let root = bundle.spec.root_hex();
    if bundle.spec == *running {
        Verdict::Running
    } else if refused.contains(&root) {
        Verdict::RolledBack
    } else if other == Some(&bundle.spec) {
        Verdict::Installed
    } else {
        Verdict::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_schema::update::Descriptor;

    fn index(digests: &[u8]) -> Index {
        let pieces: Vec<(String, u64, String)> = digests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let path = if i == 0 { String::new() } else { format!("layers/{i}") };
                (path, 8192, format!("sha256:{}", format!("{d:02x}").repeat(32)))
            })
            .collect();
        Index::lay_out(&pieces)
    }

    #[test]
    fn pieces_the_running_slot_has_are_copied_from_where_they_are() {
        let running = index(&[1, 2, 3]);
        let new = index(&[9, 3, 2, 7]);
        let steps = pieces(&new, Some(&running));
        let sources: Vec<Source> = steps.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [
                Source::Fetch,
                Source::Running(running.pieces[2].offset),
                Source::Running(running.pieces[1].offset),
                Source::Fetch
            ]
        );
        assert!(pieces(&new, None).iter().all(|s| s.source == Source::Fetch));
    }

    fn spec(root: u8) -> VeritySpec {
        VeritySpec { data_blocks: 8, root: [root; 32], salt: [0; 32] }
    }

    fn bundle(root: u8) -> Bundle {
        let d = Descriptor { media_type: String::new(), digest: String::new(), size: 0 };
        Bundle {
            spec: spec(root),
            kernel: String::new(),
            uki: d.clone(),
            index: d,
            pieces: vec![],
            signature: None,
        }
    }

    #[test]
    fn an_update_is_new_unless_it_runs_was_rolled_back_or_waits() {
        assert_eq!(judge(&bundle(1), &spec(1), &[], None), Verdict::Running);
        assert_eq!(judge(&bundle(2), &spec(1), &[spec(2).root_hex()], None), Verdict::RolledBack);
        assert_eq!(judge(&bundle(2), &spec(1), &[], Some(&spec(2))), Verdict::Installed);
        assert_eq!(judge(&bundle(2), &spec(1), &[spec(3).root_hex()], Some(&spec(3))), Verdict::New);
    }
}
