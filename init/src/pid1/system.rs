//! Machine-wide settings: kernel modules, hostname, sysctls, loopback, layer markers.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;

use berth_runtime::defaults::UNPRIVILEGED_PING;
use berth_schema::hardening;
use berth_schema::plan::Plan;

use super::log;

/// Loads each module (paths in load order); "already loaded" is fine. Returns failures.
pub fn load_modules(paths: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in paths {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("module {path}: {e}"));
                continue;
            }
        };
        // SAFETY: finit_module reads the module from a descriptor we own, with empty params.
        let ret = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
        if ret < 0 {
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::EEXIST {
                failures.push(format!("load module {path}: {e}"));
            }
        }
    }
    failures
}

/// Sets the hostname.
pub fn set_hostname(name: &str) -> Result<(), String> {
    nix::unistd::sethostname(name).map_err(|e| format!("sethostname {name}: {e}"))
}

/// Writes each sysctl under /proc/sys: berth's machine defaults first — the hardened ones
/// (`berth_schema::hardening::MACHINE`) and [`UNPRIVILEGED_PING`], so that containers with
/// `net = "host"`, which have no `CAP_NET_RAW` either, can `ping` — then the config's, which
/// win. Returns failures naming the key; a default this kernel was built without is skipped
/// and said once (`info`).
pub fn apply_sysctls(plan: &Plan) -> Vec<String> {
    let mut failures = Vec::new();
    let configured = &plan.system.sysctl;
    let (ping_key, ping_value) = UNPRIVILEGED_PING;
    let ping = berth_schema::hardening::Hardened { key: ping_key, value: ping_value, needs: None };
    let defaults = hardening::not_overridden(&hardening::MACHINE, configured)
        .chain((!configured.contains_key(ping_key)).then_some(ping));
    let mut missing = Vec::new();
    for d in defaults {
        match write_sysctl(d.key, d.value) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d.needs.is_some() => {
                missing.push(format!("{} ({})", d.key, d.needs.unwrap_or_default()));
            }
            Err(e) => failures.push(format!("sysctl {} = {} (berth's default): {e}", d.key, d.value)),
            Ok(()) => {}
        }
    }
    if !missing.is_empty() {
        log::info(&format!("hardened defaults this kernel does not have: {}", missing.join(", ")));
    }
    for (key, value) in configured {
        if let Err(e) = write_sysctl(key, value) {
            failures.push(format!("sysctl {key} = {value}: {e}"));
        }
    }
    failures
}

/// Writes one sysctl under /proc/sys.
fn write_sysctl(key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(format!("/proc/sys/{}", key.replace('.', "/")), value)
}

/// Marks the opaque directories of every layer (the cpio format cannot carry the xattr).
pub fn mark_opaque_dirs(plan: &Plan) -> Vec<String> {
    let mut failures = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for layer in plan.containers().flat_map(|c| c.layers.iter()) {
        if !done.insert(layer.digest.clone()) {
            continue;
        }
        for dir in &layer.opaque_dirs {
            let path = format!("{}/{}", layer.dir(), dir);
            let Ok(c_path) = CString::new(path.clone()) else {
                continue;
            };
            // SAFETY: setxattr on NUL-terminated strings that outlive the call.
            let ret = unsafe {
                libc::setxattr(
                    c_path.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    b"y".as_ptr().cast(),
                    1,
                    0,
                )
            };
            if ret < 0 {
                failures.push(format!("mark {path} opaque: {}", nix::errno::Errno::last()));
            }
        }
    }
    failures
}

/// Brings `lo` up.
pub fn loopback_up() -> Result<(), String> {
    berth_runtime::net::loopback_up().map_err(|e| format!("bring lo up: {}", nix::errno::Errno::from_raw(e)))
}
