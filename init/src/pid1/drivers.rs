//! Drivers for the devices a machine has, at boot and after: one source for PID 1's loop.
//!
//! At boot, once the first containers run, a child loads the late modules' fixed list and then
//! every packed driver the devices present match (`coldplug`). The kernel's uevents are
//! followed from before that child starts, so a device that appears at any time is never
//! missed: a device added with a modalias (a NIC or a disk added to a running VM, a USB
//! keyboard plugged in) marks another pass as due, run in a new child once the current one
//! ended. A burst of devices is one pass; a pass over nothing new loads nothing.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags};

use super::event_source::{EventSource, Pid1Event};
use super::late_modules::{Devices, LateModules};
use super::log;
use super::uevent::UeventSocket;

/// The drivers' child, the uevents, and whether another pass is due.
pub struct Drivers {
    /// The kernel's uevents (none when nothing is packed to match them against).
    uevents: Option<UeventSocket>,
    /// The child loading modules, while it runs, and why it runs (`boot`, `uevent`).
    child: Option<(LateModules, &'static str)>,
    /// Devices were announced since the running child's pass began.
    pending: bool,
    /// The boot's late modules were started: announced devices get passes of their own.
    started: bool,
}

impl Drivers {
    /// Follows the kernel's uevents when packed modules can be matched to devices
    /// (`modules.alias` of the running kernel).
    pub fn listen() -> Drivers {
        let by_alias = super::coldplug::modules_dir().join("modules.alias").is_file();
        let uevents = by_alias
            .then(|| {
                UeventSocket::open()
                    .map_err(|e| log::warn(&format!("{e}: devices added later get no driver")))
            })
            .and_then(Result::ok);
        Drivers { uevents, child: None, pending: false, started: false }
    }

    /// Starts the boot's late modules (`paths`, then the devices' drivers) in a child. Without
    /// a child, loads `paths` here and returns false: the caller then looks for interfaces.
    pub fn start_late(&mut self, paths: &[String]) -> bool {
        self.started = true;
        self.pending = false;
        self.child = LateModules::start(paths, Devices::All).map(|c| (c, "boot"));
        if self.child.is_none() {
            super::load_modules(paths);
        }
        self.child.is_some()
    }
}

impl EventSource for Drivers {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.uevents.as_ref().map(|u| PollFd::new(u.as_fd(), PollFlags::POLLIN)));
        fds.extend(self.child.as_ref().map(|(c, _)| PollFd::new(c.as_fd(), PollFlags::POLLIN)));
    }

    fn service(&mut self, _now: Instant, out: &mut Vec<Pid1Event>) {
        if let Some(uevents) = self.uevents.as_mut() {
            let mut lost = false;
            let wanted = uevents.read(&mut lost).iter().any(|e| e.wants_driver());
            self.pending |= wanted || lost;
        }
        if let Some((child, trigger)) = self.child.as_mut() {
            if child.finished() {
                log::emit(
                    log::event("drivers.pass").with("trigger", *trigger).with("loaded", child.loaded()),
                );
                self.child = None;
                out.push(Pid1Event::LateModulesLoaded);
            }
        }
        if self.child.is_none() && self.pending && self.started {
            // (a child that cannot be made now is tried again after the next wait)
            self.child = LateModules::start(&[], Devices::All).map(|c| (c, "uevent"));
            self.pending = self.child.is_none();
        }
    }
}
