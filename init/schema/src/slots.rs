//! The two system slots of a disk image and the boot entries that choose between them, as
//! `berth build` lays them out, systemd-boot picks one, PID 1 commits or rolls it back and the
//! updater fills the other.
//!
//! A slot is a UKI on the EFI system partition plus a verified system partition
//! ([`Slot::partition_name`]). The UKI does not name its slot: its command line lists both
//! partitions and carries the root hash, and PID 1 mounts the one whose blocks match it. So one
//! signed UKI fits either slot, and the bytes an update ships are the bytes that boot.
//!
//! Boot selection is systemd-boot's boot counting (`systemd-boot-efi`): each slot has one entry,
//! `\EFI\Linux\berth-GEN-SLOT[+LEFT[-DONE]].efi` ([`BootEntry`]). systemd-boot boots the entry
//! [`default_entry`] names — entries with tries left before those without, then the highest
//! generation — and, for an entry with a counter, renames it first (one try left fewer, one
//! more done). An entry without a counter is committed; `+0` is bad. The updater installs a new
//! slot as `+TRIES`; PID 1 commits it (renames it without the counter) once the machine is
//! healthy, or marks it `+0` and reboots, and systemd-boot itself falls back to the committed
//! slot when the new one never reaches PID 1. The state lives on the disk, not in firmware
//! NVRAM, which many hypervisors (and KubeVirt by default) do not keep.

use std::fmt;

/// A system slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Slot A: the one `berth build` fills.
    A,
    /// Slot B: empty on a new image; the first update goes there.
    B,
}

/// Both slots, in the order PID 1 tries their partitions.
pub const SLOTS: [Slot; 2] = [Slot::A, Slot::B];

/// Where the boot entries are on the EFI system partition (systemd-boot's Type #2 entries).
pub const ENTRIES_DIR: &str = "EFI/Linux";
/// The boot manager on the EFI system partition, at the removable-media path.
pub const BOOT_MANAGER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// The GPT name of the EFI system partition `berth build` writes.
pub const ESP_PARTITION_NAME: &str = "EFI system partition";
/// systemd-boot's configuration on the EFI system partition.
pub const LOADER_CONF_PATH: &str = "loader/loader.conf";
/// What it says: no menu (a key held at boot still shows it), no command line editing (it
/// would bypass the signed command line when Secure Boot is off), no other entries.
pub const LOADER_CONF: &str = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\n";
/// The tries a new slot gets before systemd-boot falls back to the committed one.
pub const TRIES: u32 = 3;

impl Slot {
    /// `a` or `b`.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    /// The slot's system partition's GPT name: `berth-system-a`, `berth-system-b`.
    pub fn partition_name(self) -> String {
        format!("{}-{}", crate::system_partition::PARTITION_NAME, self.letter())
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The slot whose partition is named `name`.
    pub fn of_partition(name: &str) -> Option<Slot> {
        SLOTS.into_iter().find(|s| s.partition_name() == name)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// Where an entry stands in boot counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// No counter: booted every time it is the default.
    Committed,
    /// Being tried: `left` more boots, `done` so far.
    Trial {
        /// Boots left before it is bad.
        left: u32,
        /// Boots tried so far.
        done: u32,
    },
    /// No tries left (`+0`): never the default while another entry has tries left.
    Bad {
        /// Boots tried.
        done: u32,
    },
}

/// One boot entry on the EFI system partition: `berth-GEN-SLOT[+LEFT[-DONE]].efi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// Installed by the GEN-th install on this disk (the build's is 1): the newest wins.
    pub generation: u64,
    /// The slot its system partition is in.
    pub slot: Slot,
    /// Its boot-counting state.
    pub state: EntryState,
}

impl BootEntry {
    /// The entry `berth build` writes: generation 1, slot A, committed.
    pub fn first() -> BootEntry {
        BootEntry { generation: 1, slot: Slot::A, state: EntryState::Committed }
    }

    /// A newly installed entry: [`TRIES`] tries.
    pub fn trial(generation: u64, slot: Slot) -> BootEntry {
        BootEntry { generation, slot, state: EntryState::Trial { left: TRIES, done: 0 } }
    }

    /// Parses a file name in [`ENTRIES_DIR`]; `None` for a file that is not a berth entry.
    pub fn parse(file_name: &str) -> Option<BootEntry> {
        let stem = file_name.strip_suffix(".efi")?.strip_prefix("berth-")?;
        let (base, counter) = match stem.split_once('+') {
            Some((base, counter)) => (base, Some(counter)),
            None => (stem, None),
        };
        let (generation, slot) = base.rsplit_once('-')?;
        let generation: u64 = generation.parse().ok().filter(|g| *g > 0 && !generation.starts_with('0'))?;
        let slot = match slot {
            "a" => Slot::A,
            "b" => Slot::B,
            _ => return None,
        };
        let number =
            |t: &str| -> Option<u32> { t.bytes().all(|b| b.is_ascii_digit()).then(|| t.parse().ok())? };
        let state = match counter {
            None => EntryState::Committed,
            Some(counter) => {
                let (left, done) = match counter.split_once('-') {
                    Some((l, d)) => (number(l)?, number(d)?),
                    None => (number(counter)?, 0),
                };
                if left == 0 {
                    EntryState::Bad { done }
                } else {
                    EntryState::Trial { left, done }
                }
            }
        };
        Some(BootEntry { generation, slot, state })
    }

    /// The file name, as systemd-boot spells the counter.
    pub fn file_name(&self) -> String {
        let base = format!("berth-{}-{}", self.generation, self.slot);
        match self.state {
            EntryState::Committed => format!("{base}.efi"),
            EntryState::Trial { left, done: 0 } => format!("{base}+{left}.efi"),
            EntryState::Trial { left, done } => format!("{base}+{left}-{done}.efi"),
            EntryState::Bad { done: 0 } => format!("{base}+0.efi"),
            EntryState::Bad { done } => format!("{base}+0-{done}.efi"),
        }
    }

    /// The same entry committed.
    pub fn committed(self) -> BootEntry {
        BootEntry { state: EntryState::Committed, ..self }
    }

    /// The same entry with no tries left.
    pub fn bad(self) -> BootEntry {
        let done = match self.state {
            EntryState::Trial { done, .. } | EntryState::Bad { done } => done,
            EntryState::Committed => 0,
        };
        BootEntry { state: EntryState::Bad { done }, ..self }
    }

    /// Whether systemd-boot may still pick it over another entry.
    pub fn bootable(&self) -> bool {
        !matches!(self.state, EntryState::Bad { .. })
    }
}

/// The entry systemd-boot boots among `entries` (the berth entries of [`ENTRIES_DIR`]): one
/// with tries left (or no counter) before one without, then the highest generation. Checked
/// against Debian's systemd-boot 252 in the VM tests.
pub fn default_entry(entries: &[BootEntry]) -> Option<BootEntry> {
    entries.iter().copied().max_by_key(|e| (e.bootable(), e.generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip_as_systemd_boot_spells_them() {
        for name in ["berth-1-a.efi", "berth-2-b+3.efi", "berth-2-b+2-1.efi", "berth-12-a+0-3.efi"] {
            assert_eq!(BootEntry::parse(name).unwrap().file_name(), name);
        }
        let e = BootEntry::parse("berth-2-b+2-1.efi").unwrap();
        assert_eq!(
            e,
            BootEntry { generation: 2, slot: Slot::B, state: EntryState::Trial { left: 2, done: 1 } }
        );
        assert_eq!(e.committed().file_name(), "berth-2-b.efi");
        assert_eq!(e.bad().file_name(), "berth-2-b+0-1.efi");
        assert_eq!(BootEntry::trial(7, Slot::A).file_name(), "berth-7-a+3.efi");
        assert_eq!(BootEntry::first().file_name(), "berth-1-a.efi");
    }

    #[test]
    fn other_files_are_not_entries() {
        for name in [
            "berth-1-c.efi",
            "berth-0-a.efi",
            "berth-01-a.efi",
            "berth-1-a.efi.tmp",
            "berth-x-a.efi",
            "berth-1-a+.efi",
            "berth-1-a+1-.efi",
            "berth-1-a+-1.efi",
            "linux.efi",
            "berth-1-a+1-2-3.efi",
        ] {
            assert_eq!(BootEntry::parse(name), None, "{name}");
        }
    }

    #[test]
    fn the_default_is_the_newest_entry_with_tries_left() {
        let parse = |names: &[&str]| names.iter().map(|n| BootEntry::parse(n).unwrap()).collect::<Vec<_>>();
        let pick = |names: &[&str]| default_entry(&parse(names)).map(|e| e.file_name());
        assert_eq!(pick(&["berth-1-a.efi", "berth-2-b+3.efi"]).unwrap(), "berth-2-b+3.efi");
        assert_eq!(pick(&["berth-1-a.efi", "berth-2-b+0-3.efi"]).unwrap(), "berth-1-a.efi");
        assert_eq!(pick(&["berth-3-a.efi", "berth-2-b.efi"]).unwrap(), "berth-3-a.efi");
        assert_eq!(pick(&["berth-9-a.efi", "berth-10-b+1-2.efi"]).unwrap(), "berth-10-b+1-2.efi");
        assert_eq!(pick(&["berth-9-a+0.efi"]).unwrap(), "berth-9-a+0.efi");
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn slots_name_their_partitions() {
        assert_eq!(Slot::A.partition_name(), "berth-system-a");
        assert_eq!(Slot::of_partition("berth-system-b"), Some(Slot::B));
        assert_eq!(Slot::of_partition("berth-system"), None);
        assert_eq!(Slot::A.other(), Slot::B);
    }
}
