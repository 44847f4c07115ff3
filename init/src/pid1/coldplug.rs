//! Drivers by device (coldplug): the devices the kernel found are matched against the packed
//! modules' `modules.alias` (kmod's rules, `berth_schema::modalias`), and what they need is
//! loaded with its dependencies first (`modules.dep`). Runs in the late modules' child, off
//! PID 1's path, after that child's fixed list.
//!
//! A pass walks `/sys/bus/*/devices/*`: each device with a `modalias` and no driver bound. A
//! loaded driver can bring new devices (a disk controller's disks, a USB controller's devices),
//! so passes repeat until one loads nothing (at most [`PASSES`]).

use std::path::Path;

use berth_schema::modalias::{AliasTable, ModuleDeps};

use super::system;

/// The most passes over the devices.
const PASSES: usize = 4;

/// What a pass did: a report line per module loaded or failed.
pub fn load_for_devices() -> Vec<String> {
    let release =
        nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let dir = Path::new("/lib/modules").join(release);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (Some(aliases), Some(deps)) = (read("modules.alias"), read("modules.dep")) else { return Vec::new() };
    let (table, deps) = match (AliasTable::parse(&aliases), ModuleDeps::parse(&deps)) {
        (Ok(t), Ok(d)) => (t, d),
        (Err(e), _) | (_, Err(e)) => return vec![format!("coldplug: {e}")],
    };
    let mut report = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for _ in 0..PASSES {
        let loaded = loaded_modules();
        let mut any = false;
        for modalias in unbound_devices() {
            let wanted = table.modules_for(&modalias);
            for file in deps.load_order(&wanted, &loaded) {
                if failed.contains(&file) {
                    continue;
                }
                let path = dir.join(&file).to_string_lossy().into_owned();
                let name = berth_schema::modalias::name_of_file(&file);
                match system::load_modules(std::slice::from_ref(&path)).pop() {
                    None => {
                        report.push(format!("loaded {name} {modalias}"));
                        any = true;
                    }
                    Some(e) => {
                        report.push(e);
                        failed.push(file);
                    }
                }
            }
        }
        if !any {
            break;
        }
    }
    report
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
