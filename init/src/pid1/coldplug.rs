//! Drivers by device (coldplug): the devices the kernel found are matched against the packed
//! modules' `modules.alias` (kmod's rules, `berth_schema::modalias`), and what they need is
//! loaded with its dependencies first (`modules.dep`).
//!
//! A pass walks `/sys/bus/*/devices/*`: each device with a `modalias` and no driver bound. A
//! loaded driver can bring new devices (a disk controller's disks, a USB controller's devices),
//! so passes repeat until one loads nothing (at most [`PASSES`]).
//!
//! Where it runs: in the late modules' child, off PID 1's path, after that child's fixed list
//! (and again in a child for each batch of devices the kernel announces later: `drivers`); in
//! PID 1 itself only while it waits for the data disk, for the disks' paths alone
//! ([`is_disk_path`]): the containers need that disk before they start.

use std::path::{Path, PathBuf};

use berth_schema::modalias::{AliasTable, ModuleDeps};

use super::{log, system};

/// The most passes over the devices.
const PASSES: usize = 4;

/// One module loaded for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The module's name (`e1000e`).
    pub name: String,
    /// The modalias of the device it was loaded for.
    pub device: String,
}

/// The packed modules' tables, read once.
pub struct Coldplug {
    /// `/lib/modules/RELEASE`.
    dir: PathBuf,
    table: AliasTable,
    deps: ModuleDeps,
    /// Module files that failed to load: not tried again.
    failed: Vec<String>,
}

impl Coldplug {
    /// The tables of the running kernel's packed modules; `Ok(None)` when there are none (a
    /// kernel without modules, or none packed by modalias).
    pub fn open() -> Result<Option<Coldplug>, String> {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = Path::new("/lib/modules").join(release);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let (Some(aliases), Some(deps)) = (read("modules.alias"), read("modules.dep")) else {
            return Ok(None);
        };
        let table = AliasTable::parse(&aliases).map_err(|e| format!("coldplug: {e}"))?;
        let deps = ModuleDeps::parse(&deps).map_err(|e| format!("coldplug: {e}"))?;
        Ok(Some(Coldplug { dir, table, deps, failed: Vec::new() }))
    }

    /// Passes over the devices without a driver whose modalias `wanted` accepts, loading what
    /// they match, until a pass loads nothing. Returns what was loaded, and the failures.
    pub fn load(&mut self, wanted: impl Fn(&str) -> bool) -> (Vec<Loaded>, Vec<String>) {
        let mut loaded_now = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..PASSES {
            let loaded = loaded_modules();
            let mut any = false;
            for modalias in unbound_devices().into_iter().filter(|m| wanted(m)) {
                let matched = self.table.modules_for(&modalias);
                for file in self.deps.load_order(&matched, &loaded) {
                    if self.failed.contains(&file) {
                        continue;
                    }
                    let path = self.dir.join(&file).to_string_lossy().into_owned();
                    match system::load_modules(std::slice::from_ref(&path)).pop() {
                        None => {
                            let name = berth_schema::modalias::name_of_file(&file);
                            loaded_now.push(Loaded { name, device: modalias.clone() });
                            any = true;
                        }
                        Some(e) => {
                            failures.push(e);
                            self.failed.push(file);
                        }
                    }
                }
            }
            if !any {
                break;
            }
        }
        (loaded_now, failures)
    }
}

/// The drivers on the way to a disk ([`is_disk_path`]), loaded by PID 1 itself while it waits
/// for one (the data disk, a config drive): the tables are read at the first look.
#[derive(Default)]
pub struct DiskDrivers {
    coldplug: Option<Option<Coldplug>>,
}

impl DiskDrivers {
    /// Loads what the disks' paths that appeared need (`module.loaded` for each); true when
    /// something was loaded, so more devices may be on their way.
    pub fn look(&mut self) -> bool {
        let coldplug = self.coldplug.get_or_insert_with(|| {
            Coldplug::open().unwrap_or_else(|e| {
                log::warn(&e);
                None
            })
        });
        let Some(c) = coldplug.as_mut() else { return false };
        let (loaded, failures) = c.load(is_disk_path);
        for l in &loaded {
            log::emit(log::event("module.loaded").with("name", &l.name).with("device", &l.device));
        }
        for f in failures {
            log::warn(&f);
        }
        !loaded.is_empty()
    }
}

/// Every device's drivers, as report lines for the late modules' child: `loaded NAME MODALIAS`
/// per module, or a failure.
pub fn load_for_devices() -> Vec<String> {
    let mut coldplug = match Coldplug::open() {
        Ok(Some(c)) => c,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e],
    };
    let (loaded, mut report) = coldplug.load(|_| true);
    report.extend(loaded.iter().map(|l| format!("loaded {} {}", l.name, l.device)));
    report
}

/// Whether a device is on the way to a disk: a storage controller (PCI class 01), a USB host
/// controller (class 0C03) and a USB mass-storage interface (class 08), a SCSI device, a
/// virtio disk (virtio-blk, virtio-scsi) or a Hyper-V/VMBus device. These load while PID 1
/// waits for the data disk; everything else waits for the late modules.
pub fn is_disk_path(modalias: &str) -> bool {
    let field = |key: &str, len: usize| {
        modalias.find(key).and_then(|at| modalias.get(at + key.len()..at + key.len() + len))
    };
    if modalias.starts_with("pci:") {
        return match field("bc", 2) {
            Some("01") => true,
            Some("0C") => field("sc", 2) == Some("03"),
            _ => false,
        };
    }
    if modalias.starts_with("usb:") {
        return field("ic", 2) == Some("08");
    }
    if let Some(rest) = modalias.strip_prefix("virtio:d") {
        // virtio-blk is device 2, virtio-scsi 8.
        return matches!(rest.get(..8), Some("00000002" | "00000008"));
    }
    modalias.starts_with("scsi:") || modalias.starts_with("vmbus:")
}

/// The modules loaded now (`/proc/modules`), names in `_` form.
fn loaded_modules() -> Vec<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The modaliases of the devices no driver is bound to.
fn unbound_devices() -> Vec<String> {
    let mut out = Vec::new();
    for bus in std::fs::read_dir("/sys/bus").into_iter().flatten().flatten() {
        for dev in std::fs::read_dir(bus.path().join("devices")).into_iter().flatten().flatten() {
            let path = dev.path();
            if path.join("driver").exists() {
                continue;
            }
            if let Ok(m) = std::fs::read_to_string(path.join("modalias")) {
                let m = m.trim();
                if !m.is_empty() && !out.iter().any(|o: &String| o == m) {
                    out.push(m.to_string());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_path_is_controllers_usb_and_disks() {
        for disk in [
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", // AHCI
            "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", // NVMe
            "pci:v000015ADd000007C0sv000015ADsd000007C0bc01sc07i00", // PVSCSI
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", // xHCI
            "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",     // a USB stick
            "scsi:t-0x00",
            "virtio:d00000002v00001AF4",
            "vmbus:d96ef99fc56e4ae96c1a9b3b4d8a25a",
        ] {
            assert!(is_disk_path(disk), "{disk}");
        }
        for other in [
            "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00", // e1000e
            "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00", // the ISA bridge
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc05i00", // SMBus, not USB
            "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00",     // a USB keyboard
            "virtio:d00000001v00001AF4",                             // virtio-net
            "acpi:PNP0C0C:",
            "pci:",
            "usb:",
        ] {
            assert!(!is_disk_path(other), "{other}");
        }
    }
}
