//! The end of the machine: kill what is left, sync, unmount, `reboot(2)`.

use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::pid1::watchdog::Watchdog;
use crate::pid1::{log, mounts, storage};

/// What the machine does at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power off.
    Poweroff,
    /// Reboot.
    Reboot,
    /// Halt: stop the machine without powering it off.
    Halt,
}

impl PowerAction {
    /// Its name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Poweroff => "poweroff",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        }
    }
}

/// Reaps children until none is left or `timeout` passes.
fn reap_all(timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= end {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return, // ECHILD: nobody left
        }
    }
}

/// Called once every container has stopped: signals every other process, syncs, unmounts and
/// ends the machine. Never returns; if `reboot(2)` fails PID 1 stays alive, idle.
pub fn finish(action: PowerAction, mut watchdog: Option<Watchdog>) -> ! {
    // The watchdog is petted between the steps (each bounded), and closed cleanly just before
    // reboot(2): a shutdown that hangs still ends in a reset.
    let mut pet = || {
        if let Some(w) = watchdog.as_mut() {
            w.pet(Instant::now());
        }
    };
    pet();
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    reap_all(Duration::from_secs(2));
    pet();
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_all(Duration::from_secs(1));
    pet();
    nix::unistd::sync();
    storage::release();
    pet();
    mounts::unmount_all();
    nix::unistd::sync();
    pet();
    if let Some(w) = watchdog {
        w.disarm();
    }
    log::emit(log::event("shutdown.complete").with("action", action.as_str()));
    // Let the serial line carry the last event before the machine stops.
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
    let mode = match action {
        PowerAction::Poweroff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
        PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    let err = reboot(mode).err();
    log::error(&format!("reboot(2) failed: {err:?}; PID 1 stays up, idle"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        reap_all(Duration::ZERO);
    }
}
