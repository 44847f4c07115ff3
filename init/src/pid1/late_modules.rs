//! Kernel modules loaded by a short-lived child process, so PID 1 keeps forwarding output,
//! reaping and answering (or keeps its own deadlines) while the kernel links and probes the
//! drivers (hundreds of milliseconds under TCG; a RAID controller's firmware may take seconds):
//! the late modules nothing at boot waits for (the NIC drivers, Hyper-V's helpers) with every
//! device's drivers after them, a pass for devices the kernel announced later, and the disks'
//! drivers while PID 1 waits for a disk (`coldplug`).
//!
//! A child process rather than a thread: PID 1 stays single-threaded (no thread runtime in the
//! binary), and loading a module has the same effect from any process with `CAP_SYS_MODULE`.
//! The child writes its report to a pipe and exits; PID 1 reads the pipe to its end, and the
//! supervisor reaps the child like any orphan.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::unistd::ForkResult;

use super::{coldplug, log, system};

/// Which devices' drivers a child loads after its fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// Every device without a driver.
    All,
    /// The devices on the way to a disk (`coldplug::is_disk_path`).
    DiskPath,
}

/// Modules loading in a child process; its pipe ends when they are done.
pub struct LateModules {
    /// The read end of the child's report (non-blocking).
    report: std::fs::File,
    /// What the child reported so far: a line per module loaded or failure.
    lines: Vec<u8>,
    /// Modules it loaded for devices (known once it finished).
    loaded: usize,
}

impl LateModules {
    /// Starts loading `paths`, then the packed drivers `devices` match (`coldplug`). Returns
    /// `None` when no child can be made (after logging why): the caller then loads `paths`
    /// itself.
    pub fn start(paths: &[String], devices: Devices) -> Option<LateModules> {
        let (read, write): (OwnedFd, OwnedFd) = match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        {
            Ok(p) => p,
            Err(e) => {
                log::warn(&format!("cannot load modules in the background (pipe: {e})"));
                return None;
            }
        };
        // SAFETY: PID 1 is single-threaded, so the child's copy of the heap and its locks is
        // consistent and it may allocate. The child only loads the modules, writes its report
        // and leaves with `_exit`, never returning into PID 1's code.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(read);
                let report = std::panic::catch_unwind(|| {
                    let mut lines = system::load_modules(paths);
                    // Then the drivers the devices present need, from the packed ones.
                    match devices {
                        Devices::All => lines.extend(coldplug::load_for_devices(|_| true)),
                        Devices::DiskPath => lines.extend(coldplug::load_for_devices(coldplug::is_disk_path)),
                    }
                    lines.join("\n")
                })
                .unwrap_or_else(|_| "loading modules panicked".to_string());
                let mut out = std::fs::File::from(write);
                let _ = nix::fcntl::fcntl(out.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
                let _ = out.write_all(report.as_bytes());
                // SAFETY: ends the child at once, without running PID 1's exit handlers.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { .. }) => {
                drop(write);
                Some(LateModules { report: std::fs::File::from(read), lines: Vec::new(), loaded: 0 })
            }
            Err(e) => {
                log::warn(&format!("cannot load modules in the background (fork: {e})"));
                None
            }
        }
    }

    /// Reads what the child reported; once its report ended (the modules are in), reports each
    /// module loaded for a device (`module.loaded`), logs the failures and returns true.
    pub fn finished(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match (&self.report).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.lines.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        for line in String::from_utf8_lossy(&self.lines).lines().filter(|l| !l.is_empty()) {
            match line.strip_prefix("loaded ").and_then(|rest| rest.split_once(' ')) {
                Some((name, device)) => {
                    self.loaded += 1;
                    log::emit(log::event("module.loaded").with("name", name).with("device", device))
                }
                None => log::warn(line),
            }
        }
        self.lines.clear();
        true
    }

    /// How many modules the child loaded for devices (once [`finished`](Self::finished)).
    pub fn loaded(&self) -> usize {
        self.loaded
    }
}

impl AsFd for LateModules {
    /// The descriptor to poll for reading.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.report.as_fd()
    }
}
