//! The watchdog (`[system] watchdog`): PID 1 opens one watchdog device and pets it from its
//! event loop, so the machine resets when PID 1 stops making progress; a deliberate shutdown
//! closes it cleanly ("magic close") right before `reboot(2)`.
//!
//! Order ([`Watchdog::arm`], the boot's last step, right before the loop): load the packed drivers but softdog (the
//! core, hardware ones such as an ACPI WDAT table's; QEMU's i6300ESB is built into the project
//! kernel) → choose the first device whose sysfs identity is not the software watchdog's → none:
//! load softdog and take it → open `/dev/watchdogN` (opening starts it) → `WDIOC_SETTIMEOUT` →
//! a first `WDIOC_KEEPALIVE` → `watchdog.armed`. The loop pets every third of the timeout
//! (Talos' rule) — only from the loop, so a blocked PID 1 lets it fire. Then
//! [`Watchdog::disarm`] at the very end of a shutdown: `V`, then close (`watchdog.disarmed`).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use berth_schema::appliance::WatchdogTimeout;
use nix::poll::PollFd;

use super::event_source::{EventSource, Pid1Event};
use super::{log, system};

/// The software watchdog's identity, as its driver gives it.
const SOFTDOG_IDENTITY: &str = "Software Watchdog";
/// `WDIOF_MAGICCLOSE`: the driver stops the watchdog on a close that follows a `V`.
const WDIOF_MAGICCLOSE: u32 = 0x0100;

/// `struct watchdog_info` (`<linux/watchdog.h>`).
#[repr(C)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// An armed watchdog.
pub struct Watchdog {
    device: File,
    path: String,
    every: Duration,
    next_pet: Instant,
    magic_close: bool,
}

/// The watchdog devices sysfs lists, with their drivers' identities, in number order.
fn devices() -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = std::fs::read_dir("/sys/class/watchdog")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("watchdog")?.parse::<u32>().ok()?;
            let identity = std::fs::read_to_string(e.path().join("identity")).unwrap_or_default();
            Some((n, identity.trim().to_string()))
        })
        .collect();
    found.sort();
    found
}

/// The device to use among `found`: the first hardware one, else the first.
fn choose(found: &[(u32, String)]) -> Option<u32> {
    found.iter().find(|(_, id)| id != SOFTDOG_IDENTITY).or(found.first()).map(|(n, _)| *n)
}

impl Watchdog {
    /// Loads the drivers, opens the watchdog, sets its timeout; `None` (and `watchdog.failed`)
    /// when there is none.
    pub fn arm(timeout: WatchdogTimeout, modules: &[String], now: Instant) -> Option<Watchdog> {
        let is_softdog = |m: &&String| m.rsplit('/').next().is_some_and(|f| f.starts_with("softdog."));
        let (soft, hard): (Vec<&String>, Vec<&String>) = modules.iter().partition(is_softdog);
        // A hardware driver finding no device (no WDAT table here) is no failure.
        let _ = system::load_modules(&hard.into_iter().cloned().collect::<Vec<_>>());
        let mut found = devices();
        if !found.iter().any(|(_, id)| id != SOFTDOG_IDENTITY) && !soft.is_empty() {
            for f in system::load_modules(&soft.into_iter().cloned().collect::<Vec<_>>()) {
                log::warn(&format!("watchdog: {f}"));
            }
            found = devices();
        }
        // Without sysfs (a kernel without WATCHDOG_SYSFS), the first device.
        let n = choose(&found).unwrap_or(0);
        let path = format!("/dev/watchdog{n}");
        match Self::open(&path, timeout, now) {
            Ok(w) => Some(w),
            Err(e) => {
                log::emit(log::event("watchdog.failed").with("device", &path).with("error", &e));
                None
            }
        }
    }

    fn open(path: &str, timeout: WatchdogTimeout, now: Instant) -> Result<Watchdog, String> {
        let device = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| e.to_string())?;
        let fd = device.as_raw_fd();
        let mut info = WatchdogInfo { options: 0, firmware_version: 0, identity: [0; 32] };
        // SAFETY: the descriptor is open; the kernel fills one watchdog_info.
        let identity = match unsafe { wdioc_getsupport(fd, &mut info) } {
            Ok(_) => String::from_utf8_lossy(&info.identity).trim_end_matches('\0').to_string(),
            Err(_) => String::new(),
        };
        let mut secs = libc::c_int::try_from(timeout.secs()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor is open; the kernel reads and writes one int (the timeout it
        // applied comes back).
        let set = unsafe { wdioc_settimeout(fd, &mut secs) };
        let mut w = Watchdog {
            device,
            path: path.to_string(),
            every: timeout.duration() / 3,
            next_pet: now,
            magic_close: info.options & WDIOF_MAGICCLOSE != 0,
        };
        if let Err(e) = set {
            // The driver refused (a timeout beyond its range): pet by the timeout it runs with.
            let mut current: libc::c_int = 0;
            // SAFETY: the descriptor is open; the kernel writes one int.
            let read = unsafe { wdioc_gettimeout(fd, &mut current) };
            secs = if read.is_ok() && current > 0 { current } else { 1 };
            log::warn(&format!(
                "watchdog {path}: {identity} refused a timeout of {timeout} ({e}); it keeps {secs} s"
            ));
        }
        let applied = u64::try_from(secs).unwrap_or(0);
        if set.is_ok() && applied != u64::from(timeout.secs()) {
            log::warn(&format!("watchdog {path}: {identity} took a timeout of {applied} s for {timeout}"));
        }
        if applied > 0 {
            w.every = Duration::from_secs(applied) / 3;
        }
        // (A driver that says nothing usable: petted every third of a second.)
        if applied <= 1 {
            w.every = Duration::from_millis(333);
        }
        w.pet(now);
        log::emit(
            log::event("watchdog.armed")
                .with("device", path)
                .with("identity", &identity)
                .with("timeout_s", applied)
                .with("magic_close", w.magic_close),
        );
        Ok(w)
    }

    /// Tells the watchdog PID 1 is alive.
    pub fn pet(&mut self, now: Instant) {
        let mut ignored: libc::c_int = 0;
        // SAFETY: the descriptor is open; the kernel ignores the argument (it may write it).
        if let Err(e) = unsafe { wdioc_keepalive(self.device.as_raw_fd(), &mut ignored) } {
            log::warn(&format!("watchdog {}: keepalive: {e}", self.path));
        }
        self.next_pet = now + self.every;
    }

    /// A deliberate shutdown's last step before `reboot(2)`: `V` and close, which stops a
    /// watchdog that knows the magic close.
    pub fn disarm(mut self) {
        let _ = self.device.write_all(b"V");
        let magic = self.magic_close;
        drop(self.device);
        log::emit(log::event("watchdog.disarmed").with("device", &self.path).with("stopped", magic));
    }
}

impl EventSource for Option<Watchdog> {
    fn interest<'a>(&'a mut self, _fds: &mut Vec<PollFd<'a>>) {}

    fn deadline(&self) -> Option<Instant> {
        self.as_ref().map(|w| w.next_pet)
    }

    fn service(&mut self, now: Instant, _out: &mut Vec<Pid1Event>) {
        if let Some(w) = self.as_mut().filter(|w| now >= w.next_pet) {
            w.pet(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hardware_watchdog_is_preferred_to_softdog() {
        let soft = (0, SOFTDOG_IDENTITY.to_string());
        let esb = (1, "i6300ESB timer".to_string());
        assert_eq!(choose(&[soft.clone(), esb.clone()]), Some(1));
        assert_eq!(choose(&[esb, soft.clone()]), Some(1));
        assert_eq!(choose(&[soft]), Some(0), "softdog when it is all there is");
        assert_eq!(choose(&[]), None);
    }
}
