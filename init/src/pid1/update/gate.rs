//! The decisions of updates in place, pure: what a boot is (the slot's entry being tried or
//! committed), when a slot being tried is committed or rolled back, and whether an earlier
//! rollback has gone unreported.

use std::time::Duration;

use berth_schema::slots::{BootEntry, EntryState, Slot};

use crate::pid1::supervisor::machine::SlotHealth;

/// What to do with the slot being tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Look again later.
    Wait,
    /// It is healthy: keep it.
    Commit,
    /// Go back to the other slot, for this reason.
    RollBack(String),
}

/// The entry this boot came from: `slot`'s, among `entries`.
pub fn booted(entries: &[BootEntry], slot: Slot) -> Option<BootEntry> {
    entries.iter().copied().find(|e| e.slot == slot)
}

/// Whether `entry` is being tried (systemd-boot counts its boots).
pub fn is_trial(entry: &BootEntry) -> bool {
    matches!(entry.state, EntryState::Trial { .. })
}

/// The verdict on a slot being tried for `elapsed` of its `timeout`: committed once healthy,
/// rolled back at once when something failed for good, or when time is up.
pub fn decide(health: &SlotHealth, elapsed: Duration, timeout: Duration) -> Decision {
    match health {
        SlotHealth::Healthy => Decision::Commit,
        SlotHealth::Failed(why) => Decision::RollBack(why.clone()),
        SlotHealth::Pending(why) if elapsed >= timeout => {
            Decision::RollBack(format!("{why} after {} s (commit_timeout)", timeout.as_secs()))
        }
        SlotHealth::Pending(_) => Decision::Wait,
    }
}

/// The entry a boot that failed before reading its plan came from, when it is being tried:
/// systemd-boot boots [`default_entry`](berth_schema::slots::default_entry), and a slot being
/// tried is always the newest. `None`: the boot came from a committed entry (nothing to go
/// back to).
pub fn failed_trial(entries: &[BootEntry]) -> Option<BootEntry> {
    berth_schema::slots::default_entry(entries).filter(is_trial)
}

/// The root hash (hex) of the other slot's update when it went bad without its PID 1 saying
/// so (systemd-boot ran out of tries: it never got that far), so it is reported and refused
/// now; `None` when there is nothing new to report.
pub fn unreported_rollback(
    other: Option<&BootEntry>,
    other_root: Option<&str>,
    refused: &[String],
) -> Option<String> {
    let entry = other?;
    let root = other_root?;
    (!entry.bootable() && !refused.iter().any(|r| r == root)).then(|| root.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_trial_is_committed_when_healthy_and_rolled_back_on_failure_or_timeout() {
        let t = 5 * MINUTE;
        assert_eq!(decide(&SlotHealth::Healthy, Duration::ZERO, t), Decision::Commit);
        assert_eq!(decide(&SlotHealth::Pending("web (starting)".into()), MINUTE, t), Decision::Wait);
        let late = decide(&SlotHealth::Pending("web (unhealthy)".into()), t, t);
        assert_eq!(late, Decision::RollBack("web (unhealthy) after 300 s (commit_timeout)".into()));
        let failed = decide(&SlotHealth::Failed("service web exited(1)".into()), Duration::ZERO, t);
        assert_eq!(failed, Decision::RollBack("service web exited(1)".into()));
    }

    #[test]
    fn the_booted_entry_is_the_mounted_slots() {
        let entries =
            [BootEntry::parse("berth-1-a.efi").unwrap(), BootEntry::parse("berth-2-b+2-1.efi").unwrap()];
        let b = booted(&entries, Slot::B).unwrap();
        assert!(is_trial(&b));
        assert!(!is_trial(&booted(&entries, Slot::A).unwrap()));
        assert_eq!(booted(&entries[..1], Slot::B), None);
    }

    #[test]
    fn a_failed_boot_is_blamed_on_the_entry_being_tried_only() {
        let parse = |names: &[&str]| names.iter().map(|n| BootEntry::parse(n).unwrap()).collect::<Vec<_>>();
        let tried = failed_trial(&parse(&["berth-1-a.efi", "berth-2-b+2-1.efi"])).unwrap();
        assert_eq!(tried.file_name(), "berth-2-b+2-1.efi");
        assert_eq!(failed_trial(&parse(&["berth-1-a.efi", "berth-2-b.efi"])), None);
        assert_eq!(failed_trial(&parse(&["berth-1-a.efi", "berth-2-b+0-3.efi"])), None);
    }

    #[test]
    fn a_slot_that_ran_out_of_tries_is_reported_once() {
        let bad = BootEntry::parse("berth-2-b+0-3.efi").unwrap();
        let good = BootEntry::parse("berth-2-b.efi").unwrap();
        assert_eq!(unreported_rollback(Some(&bad), Some("ab"), &[]), Some("ab".into()));
        assert_eq!(unreported_rollback(Some(&bad), Some("ab"), &["ab".into()]), None);
        assert_eq!(unreported_rollback(Some(&good), Some("ab"), &[]), None);
        assert_eq!(unreported_rollback(None, None, &[]), None);
    }
}
