//! Drivers by device (coldplug): the devices the kernel found are matched against the packed
//! modules' `modules.alias` (kmod's rules, `berth_schema::modalias`), and what they need is
//! loaded with its dependencies first (`modules.dep`).
//!
//! A pass walks `/sys/bus/*/devices/*`: each device with a `modalias` and no driver bound. A
//! loaded driver can bring new devices (a disk controller's disks, a USB controller's devices),
//! so passes repeat until one loads nothing (at most [`PASSES`]).
//!
//! Where it runs: always in a child (`late_modules`), never in PID 1 (a driver's probe may take
//! seconds): after the late modules' fixed list, again for each batch of devices the kernel
//! announces later (`drivers`), and while PID 1 waits for a disk (the data disk, a config
//! drive, the system partition), for the disks' paths alone ([`is_disk_path`], [`DiskDrivers`]).

use std::path::{Path, PathBuf};

use berth_schema::modalias::{AliasTable, ModuleDeps};

use super::late_modules::{Devices, LateModules};
use super::system;

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

/// The running kernel's modules directory, `/lib/modules/RELEASE`, where the packed modules
/// and their `modules.alias` / `modules.dep` are.
pub fn modules_dir() -> PathBuf {
    let release =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

impl Coldplug {
    /// The tables of the running kernel's packed modules; `Ok(None)` when there are none (a
    /// kernel without modules, or none packed by modalias).
    pub fn open() -> Result<Option<Coldplug>, String> {
        let dir = modules_dir();
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
            let mut loaded = loaded_modules();
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
                            // (a second device needing it, or a module needing it, finds it in)
                            loaded.push(name.clone());
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

/// The drivers on the way to a disk ([`is_disk_path`]) while PID 1 waits for one (the data
/// disk, a config drive, the system partition): each look starts a child for the disks' paths
/// without a driver when they changed since the last child, or collects the running child's
/// report (`module.loaded`). PID 1 only reads sysfs and a pipe: its wait keeps its deadline.
#[derive(Default)]
pub struct DiskDrivers {
    /// The child loading drivers, while it runs.
    child: Option<LateModules>,
    /// The unbound disk-path devices the last child was started for.
    seen: Option<Vec<String>>,
    /// The packed modules' aliases, read at the first look (`None` inside: none packed).
    table: Option<Option<AliasTable>>,
}

impl DiskDrivers {
    /// One look; true while drivers are loading or when some were loaded since the last
    /// look (more devices may be on their way).
    pub fn look(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            if !child.finished() {
                return true;
            }
            let loaded = child.loaded();
            self.child = None;
            return loaded > 0;
        }
        // Only a device some packed driver matches is worth a child (an IDE controller whose
        // driver is not packed stays unbound on every look).
        let table = self.table.get_or_insert_with(|| {
            let text = std::fs::read_to_string(modules_dir().join("modules.alias")).ok()?;
            AliasTable::parse(&text).ok()
        });
        let Some(table) = table.as_ref() else { return false };
        let now: Vec<String> = unbound_devices()
            .into_iter()
            .filter(|m| is_disk_path(m) && !table.modules_for(m).is_empty())
            .collect();
        if now.is_empty() || self.seen.as_ref() == Some(&now) {
            return false;
        }
        self.seen = Some(now);
        self.child = LateModules::start(&[], Devices::DiskPath);
        self.child.is_some()
    }
}

/// How long PID 1 waits, once it found its disk, for a drivers' child still running to report.
const REPORT_WAIT_MS: u16 = 2000;

impl Drop for DiskDrivers {
    /// The disk was found (or the wait ended) while a child still runs: its report (the
    /// `module.loaded` of the driver that brought the disk) is read for at most
    /// [`REPORT_WAIT_MS`]; the child itself goes on and is reaped like any orphan.
    fn drop(&mut self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let Some(child) = self.child.as_mut() else { return };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(REPORT_WAIT_MS.into());
        while !child.finished() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let left = u16::try_from(left.as_millis()).unwrap_or(0);
            let mut fds = [PollFd::new(child.as_fd(), PollFlags::POLLIN)];
            if left == 0 || !matches!(poll(&mut fds, PollTimeout::from(left)), Ok(n) if n > 0) {
                return;
            }
        }
    }
}

/// The drivers of the devices `wanted` accepts, as report lines for a modules child:
/// `loaded NAME MODALIAS` per module, or a failure.
pub fn load_for_devices(wanted: fn(&str) -> bool) -> Vec<String> {
    let mut coldplug = match Coldplug::open() {
        Ok(Some(c)) => c,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e],
    };
    let (loaded, mut report) = coldplug.load(wanted);
    report.extend(loaded.iter().map(|l| format!("loaded {} {}", l.name, l.device)));
    report
}

/// Whether a device is on the way to a disk: a storage controller (PCI class 01), a USB host
/// controller (class 0C03) and a USB mass-storage interface (class 08), a SCSI device, a
/// virtio disk (virtio-blk, virtio-scsi), Hyper-V's VMBus and its disk controllers (IDE, SCSI,
/// Fibre Channel). These load while PID 1 waits for a disk; everything else waits for the late
/// modules.
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
    if let Some(class) = modalias.strip_prefix("vmbus:") {
        return STORVSC_CLASSES.contains(&class);
    }
    modalias.starts_with("scsi:")
        || modalias.starts_with("acpi:VMBUS:")
        || modalias.starts_with("acpi:VMBus:")
}

/// The VMBus device classes of Hyper-V's disks (hv_storvsc's aliases): SCSI, IDE, Fibre
/// Channel, as the kernel prints a class's bytes.
const STORVSC_CLASSES: [&str; 3] = [
    "d96361baa104294db60572e2ffb1dc7f",
    "32264132cb86a2449b5c50d1417354f5",
    "4acc9b2f6900f34ab76b6fd0be528cda",
];

/// The modules loaded now (`/proc/modules`), names in `_` form.
fn loaded_modules() -> Vec<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The modaliases of the devices no driver is bound to.
pub fn unbound_devices() -> Vec<String> {
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
            "vmbus:d96361baa104294db60572e2ffb1dc7f", // Hyper-V SCSI
            "acpi:VMBUS:",
        ] {
            assert!(is_disk_path(disk), "{disk}");
        }
        for other in [
            "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00", // e1000e
            "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00", // the ISA bridge
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc05i00", // SMBus, not USB
            "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00",     // a USB keyboard
            "virtio:d00000001v00001AF4",                             // virtio-net
            "vmbus:635161f83edfc546913ff2d2f965ed0e",                // Hyper-V's NIC
            "acpi:PNP0C0C:",
            "pci:",
            "usb:",
        ] {
            assert!(!is_disk_path(other), "{other}");
        }
    }
}
