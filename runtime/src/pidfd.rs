//! Waiting for a process to end without polling in sleeps: a pidfd (`pidfd_open(2)`, Linux
//! 5.3) turns readable when its process exits, whether or not it is our child, so a wait is one
//! `poll(2)` that can also watch other descriptors (a start fifo) and honour a deadline.
//!
//! A pid names a process only until it is reaped: callers that got the pid from a file check
//! after [`PidFd::open`] that it is still the process they mean (its start time), after which
//! the descriptor pins it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A descriptor for one process.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`; `ESRCH` when there is no such process (reaped already).
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends signal `sig` to the process (`pidfd_send_signal(2)`); `ESRCH` once it has exited.
    pub fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal on a descriptor we own, with no siginfo (NULL) and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the process has exited (a zombie counts), up to `limit` (`None`: no limit);
    /// `true` if it did.
    pub fn wait_exit(&self, limit: Option<Duration>) -> io::Result<bool> {
        Ok(wait_readable(&[self.as_fd()], limit)?.is_some())
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable (or hung up), up to `limit`; returns its index, or
/// `None` at the limit. Interrupted waits resume with the time left.
pub fn wait_readable(fds: &[BorrowedFd<'_>], limit: Option<Duration>) -> io::Result<Option<usize>> {
    wait_for(fds, PollFlags::POLLIN, limit)
}

/// [`wait_readable`] for any set of poll events (`POLLPRI` for a cgroup's `cgroup.events`).
pub fn wait_for(
    fds: &[BorrowedFd<'_>],
    events: PollFlags,
    limit: Option<Duration>,
) -> io::Result<Option<usize>> {
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Whole milliseconds, rounded up so that a wait never ends early.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, events)).collect();
        match poll(&mut pfds, timeout) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
            Ok(_) => {
                let ready = PollFlags::POLLIN | PollFlags::POLLPRI | PollFlags::POLLHUP | PollFlags::POLLERR;
                if let Some(i) = pfds.iter().position(|p| p.revents().is_some_and(|r| r.intersects(ready))) {
                    return Ok(Some(i));
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_pidfd_turns_readable_when_its_process_exits() {
        let mut child = Command::new("sleep").arg("0.2").spawn().unwrap();
        let fd = PidFd::open(child.id() as i32).unwrap();
        assert!(!fd.wait_exit(Some(Duration::from_millis(20))).unwrap(), "still running");
        let start = Instant::now();
        assert!(fd.wait_exit(Some(Duration::from_secs(5))).unwrap());
        assert!(start.elapsed() < Duration::from_secs(2));
        child.wait().unwrap();
        // Reaped: the pid names nothing.
        assert_eq!(PidFd::open(child.id() as i32).unwrap_err().raw_os_error(), Some(libc::ESRCH));
    }
}
