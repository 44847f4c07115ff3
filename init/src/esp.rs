//! The EFI system partition of a disk image, mounted by PID 1 when `[update]` is set: the
//! slots' boot entries (`berth_schema::slots`: file names systemd-boot counts tries in) and the
//! update state ([`STATE`]). PID 1 commits or rolls back the slot it booted; the updater
//! (`berth-updater`, a child) installs the other.
//!
//! Every change is a rename or a new file flushed before its rename, then the renamed file and
//! the directory flushed (see [`rename_durably`]: FAT's rename needs both): installing an entry
//! is the last step of an update and the only one that changes what boots. A power cut before
//! the rename leaves the old entries; after it, the new slot is complete. In the instant of a
//! rename itself FAT may show the new name with no content yet: systemd-boot does not list a
//! file that is not a PE image, so that boots the other slot.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_schema::slots::{BootEntry, Slot, ENTRIES_DIR};
use berth_schema::update::UpdateState;
use berth_schema::verity::VeritySpec;

/// The update state on the ESP.
pub use berth_schema::update::STATE_PATH as STATE;

/// Where PID 1 mounts the ESP.
pub const MOUNT_POINT: &str = "/berth/esp";

/// A mounted EFI system partition.
pub struct Esp {
    root: PathBuf,
}

/// The name a new UKI is written under before it becomes an entry (not `.efi`: systemd-boot
/// does not list it).
const PARTIAL: &str = "berth-new.partial";

fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("flushing {}: {e}", dir.display()))
}

/// Renames `from` to `to` on FAT so that a power cut after it returns finds `to` whole.
///
/// FAT has no rename of its own: Linux writes a new directory entry, whose size and first
/// cluster are filled in only when the file's inode is written back. Flushing the directory
/// is not enough — an entry flushed that way says 0 bytes (seen: a UKI left empty by a power
/// cut right after its rename). So the renamed file itself is flushed, which writes its entry
/// whole, then the directory. (The ESP is also mounted `dirsync`.)
fn rename_durably(from: &Path, to: &Path) -> Result<(), String> {
    fs::rename(from, to).map_err(|e| format!("renaming {} to {}: {e}", from.display(), to.display()))?;
    fs::File::open(to).and_then(|f| f.sync_all()).map_err(|e| format!("flushing {}: {e}", to.display()))?;
    sync_dir(to.parent().unwrap_or(Path::new("/")))
}

/// Writes `bytes` to `path` through a flushed temporary file renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let partial = path.with_extension("partial");
    let written = fs::File::create(&partial).and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&partial);
        return Err(format!("writing {}: {e}", path.display()));
    }
    rename_durably(&partial, path)
}

/// Where the partition named `name` is, on the same disk as partition `disk` (`vda2`):
/// `/dev/vda3` (found in sysfs by its GPT name).
pub fn sibling_partition(disk: &str, name: &str) -> Result<PathBuf, String> {
    let own = fs::canonicalize(format!("/sys/class/block/{disk}"))
        .map_err(|e| format!("/sys/class/block/{disk}: {e}"))?;
    let parent = own.parent().ok_or_else(|| format!("{disk} has no parent disk"))?;
    let list = fs::read_dir(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    for entry in list.filter_map(|e| e.ok()) {
        let dir = entry.path();
        if !dir.join("partition").is_file() {
            continue;
        }
        let uevent = fs::read_to_string(dir.join("uevent")).unwrap_or_default();
        if uevent.lines().any(|l| l.strip_prefix("PARTNAME=") == Some(name)) {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    Err(format!("no partition named {name} on the disk of {disk}"))
}

impl Esp {
    /// The ESP mounted at `root`.
    pub fn at(root: &Path) -> Esp {
        Esp { root: root.to_path_buf() }
    }

    /// Mounts the ESP of the disk holding partition `disk` (`vda2`) read-write on
    /// [`MOUNT_POINT`] (FAT: the modules are loaded by then).
    pub fn mount(disk: &str) -> Result<Esp, String> {
        Esp::mount_device(&sibling_partition(disk, berth_schema::slots::ESP_PARTITION_NAME)?)
    }

    /// Mounts the ESP at `dev` read-write on [`MOUNT_POINT`] (`dirsync`).
    pub fn mount_device(dev: &Path) -> Result<Esp, String> {
        fs::create_dir_all(MOUNT_POINT).map_err(|e| format!("create {MOUNT_POINT}: {e}"))?;
        let flags =
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC;
        nix::mount::mount(Some(dev), MOUNT_POINT, Some("vfat"), flags, Some("umask=0077"))
            .map_err(|e| format!("mount {} (vfat) on {MOUNT_POINT}: {e}", dev.display()))?;
        Ok(Esp::at(Path::new(MOUNT_POINT)))
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join(ENTRIES_DIR)
    }

    /// The berth boot entries.
    pub fn entries(&self) -> Result<Vec<BootEntry>, String> {
        let dir = self.entries_dir();
        let list = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(list
            .filter_map(|e| e.ok())
            .filter_map(|e| BootEntry::parse(&e.file_name().to_string_lossy()))
            .collect())
    }

    /// The entry of `slot`, if it has one.
    pub fn entry_of(&self, slot: Slot) -> Result<Option<BootEntry>, String> {
        Ok(self.entries()?.into_iter().find(|e| e.slot == slot))
    }

    /// The size of `entry`'s UKI.
    pub fn entry_bytes(&self, entry: &BootEntry) -> u64 {
        fs::metadata(self.entries_dir().join(entry.file_name())).map(|m| m.len()).unwrap_or(0)
    }

    /// The verity parameters the UKI of `entry` carries.
    pub fn spec_of(&self, entry: &BootEntry) -> Result<VeritySpec, String> {
        let path = self.entries_dir().join(entry.file_name());
        let pe = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        berth_schema::uki::verity(&pe).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Renames `from` to `to` (the same entry in another state): commit, or mark bad.
    pub fn rename(&self, from: &BootEntry, to: &BootEntry) -> Result<(), String> {
        let dir = self.entries_dir();
        rename_durably(&dir.join(from.file_name()), &dir.join(to.file_name()))
    }

    /// Removes `slot`'s entries (before its partition is written: nothing may boot it
    /// half-written).
    pub fn remove_slot(&self, slot: Slot) -> Result<(), String> {
        let dir = self.entries_dir();
        for e in self.entries()?.into_iter().filter(|e| e.slot == slot) {
            let path = dir.join(e.file_name());
            fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
        let _ = fs::remove_file(dir.join(PARTIAL));
        sync_dir(&dir)
    }

    /// Installs `uki` as `slot`'s entry, being tried: the next generation after every entry
    /// there, with systemd-boot's tries.
    pub fn install(&self, slot: Slot, uki: &[u8]) -> Result<BootEntry, String> {
        let dir = self.entries_dir();
        let generation = self.entries()?.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
        let entry = BootEntry::trial(generation, slot);
        let partial = dir.join(PARTIAL);
        let written = fs::File::create(&partial)
            .and_then(|mut f| f.write_all(uki).and_then(|()| f.sync_all()))
            .map_err(|e| format!("writing {}: {e} (is the EFI system partition full?)", partial.display()));
        if let Err(e) = written {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        rename_durably(&partial, &dir.join(entry.file_name()))?;
        Ok(entry)
    }

    /// Free bytes on the ESP.
    pub fn free_bytes(&self) -> Result<u64, String> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| format!("statvfs {}: {e}", self.root.display()))?;
        Ok(st.blocks_available() * st.fragment_size())
    }

    /// The update state (an absent file: nothing refused yet).
    pub fn state(&self) -> Result<UpdateState, String> {
        let path = self.root.join(STATE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateState::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Adds `root` (hex) to the updates never installed again.
    pub fn refuse(&self, root: &str) -> Result<(), String> {
        let mut state = self.state()?;
        if state.refused.iter().any(|r| r == root) {
            return Ok(());
        }
        state.refused.push(root.to_string());
        let path = self.root.join(STATE);
        fs::create_dir_all(path.parent().unwrap_or(&self.root))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| e.to_string())?;
        replace_file(&path, &bytes)
    }
}
