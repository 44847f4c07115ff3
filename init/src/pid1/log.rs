//! PID 1's output: human log lines, machine-readable events, container output.
//!
//! * Events ([`emit`]) and container output ([`container_line`]) go straight to the console
//!   (PID 1's stdout): tests and `berth run` parse them, so they are never filtered or
//!   rate-limited.
//! * Human log lines ([`info`], [`warn`], [`error`]) go to `/dev/kmsg` with their level, so `dmesg`
//!   keeps them. The kernel echoes a kmsg record to the console when its level is below the
//!   console log level; for the others PID 1 writes the line to the console itself, so each
//!   line shows exactly once. Without `/dev/kmsg`, everything goes to the console.
//! * "The console" is every console the kernel writes to: `/dev/console` (PID 1's stdout, the
//!   last `console=` of the command line) and the others (`console=ttyS0 console=tty0`: the
//!   serial port too), each written in turn ([`open_console_mirrors`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use berth_events::Event;

static KMSG: Mutex<Option<File>> = Mutex::new(None);
/// The kernel's other consoles, written after `/dev/console`.
static MIRRORS: Mutex<Vec<Mirror>> = Mutex::new(Vec::new());
/// How long a line may wait for a mirror console to take it (a serial port drains about
/// 11 kB/s at 115200 baud) before the mirror counts as stalled.
const MIRROR_WAIT_MS: u16 = 1000;

/// Another console PID 1's lines go to: opened non-blocking, so a stopped one (Ctrl-S, Scroll
/// Lock, XOFF) never stops PID 1.
struct Mirror {
    file: File,
    /// It took nothing for [`MIRROR_WAIT_MS`]: lines are dropped until it takes one at once.
    stalled: bool,
}

impl Mirror {
    /// Writes what the console takes of `bytes`, waiting for it at most [`MIRROR_WAIT_MS`]
    /// in all (not at all while stalled).
    fn write(&mut self, mut bytes: &[u8]) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(MIRROR_WAIT_MS.into());
        while !bytes.is_empty() {
            match self.file.write(bytes) {
                Ok(n) => {
                    self.stalled = false;
                    bytes = &bytes[n..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !self.stalled => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let left = u16::try_from(left.as_millis()).unwrap_or(MIRROR_WAIT_MS);
                    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&self.file), PollFlags::POLLOUT)];
                    if left == 0 || !matches!(poll(&mut fds, PollTimeout::from(left)), Ok(n) if n > 0) {
                        self.stalled = true;
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }
}
/// The console log level (first field of /proc/sys/kernel/printk); -1 = unknown.
static CONSOLE_LEVEL: AtomicI32 = AtomicI32::new(-1);

/// Milliseconds since boot (CLOCK_BOOTTIME), the clock of every event.
pub fn now_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

/// Writes all of `bytes` to the console (fd 1), retrying on EINTR; errors are dropped (there is
/// nowhere else to report them).
pub fn console_write(bytes: &[u8]) {
    // SAFETY: fd 1 is PID 1's console, kept open for its whole life; ManuallyDrop prevents
    // closing it.
    let mut out = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
    let _ = out.write_all(bytes);
    if let Ok(mut mirrors) = MIRRORS.lock() {
        for m in mirrors.iter_mut() {
            m.write(bytes);
        }
    }
}

/// The consoles besides `/dev/console`, from the kernel's list of active ones (the last entry
/// is `/dev/console`'s): `"tty1 ttyS0"` → `["tty1"]`.
pub fn other_consoles(active: &str) -> Vec<String> {
    let mut names: Vec<String> = active.split_whitespace().map(str::to_string).collect();
    names.pop();
    names.retain(|n| n.bytes().all(|b| b.is_ascii_alphanumeric()));
    names
}

/// Opens the kernel's other consoles (after /dev is mounted), so PID 1's lines show on each:
/// the screen and the serial port of a physical machine. A console that cannot be opened is
/// left out.
pub fn open_console_mirrors() {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let opened: Vec<Mirror> = other_consoles(&active)
        .iter()
        .filter_map(|name| {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(format!("/dev/{name}"))
                .ok()
        })
        .map(|file| Mirror { file, stalled: false })
        .collect();
    if let Ok(mut mirrors) = MIRRORS.lock() {
        *mirrors = opened;
    }
}

/// Makes sure descriptors 0, 1 and 2 are open (on the console, else `/dev/null`), so that no
/// descriptor PID 1 opens later lands on them and receives console output by mistake.
pub fn ensure_stdio() {
    for fd in 0..3 {
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            // `open` returns the lowest free descriptor, which is `fd`.
            let _ = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/console")
                .or_else(|_| OpenOptions::new().read(true).write(true).open("/dev/null"))
                .map(std::mem::forget);
        }
    }
}

/// Opens `/dev/kmsg` (after /dev is mounted) and reads the console log level.
pub fn open_kmsg() {
    if let Ok(f) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ =
            nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        if let Ok(mut guard) = KMSG.lock() {
            *guard = Some(f);
        }
    }
    // Our own records are not to be rate-limited away.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/printk") {
        if let Some(level) = text.split_whitespace().next().and_then(|l| l.parse().ok()) {
            CONSOLE_LEVEL.store(level, Ordering::Relaxed);
        }
    }
}

fn log_at(level: u8, message: &str) {
    super::syslog::send(level, "berth", Some(1), "-", message.as_bytes());
    let mut on_console = true;
    if let Ok(mut guard) = KMSG.lock() {
        if let Some(kmsg) = guard.as_mut() {
            for line in message.lines() {
                let _ = kmsg.write_all(format!("<{level}>berth: {line}\n").as_bytes());
            }
            let console_level = CONSOLE_LEVEL.load(Ordering::Relaxed);
            on_console = console_level < 0 || i32::from(level) >= console_level;
        }
    }
    if on_console {
        let mut text = String::new();
        for line in message.lines() {
            text.push_str(&format!("berth: {line}\n"));
        }
        console_write(text.as_bytes());
    }
}

/// An informational line.
pub fn info(message: &str) {
    log_at(6, message);
}

/// A warning: something did not work, boot goes on.
pub fn warn(message: &str) {
    log_at(4, message);
}

/// An error.
pub fn error(message: &str) {
    log_at(3, message);
}

/// Prints an event line (see `berth_events`).
pub fn emit(event: Event) {
    let line = format!("{event}\n");
    super::syslog::send(6, "berth", Some(1), "event", line.trim_end().as_bytes());
    console_write(line.as_bytes());
    feed_followers(None, line.as_bytes());
}

/// What a follower (`berthctl events -f`, `logs -f NAME`) receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Every event line.
    Events,
    /// One container's output lines.
    Logs(String),
}

static FOLLOWERS: Mutex<Vec<(UnixStream, Follow)>> = Mutex::new(Vec::new());

/// Adds a follower; its socket is made non-blocking: a reader that does not keep up is dropped,
/// never waited for.
pub fn add_follower(stream: UnixStream, what: Follow) {
    if stream.set_nonblocking(true).is_ok() {
        if let Ok(mut f) = FOLLOWERS.lock() {
            f.push((stream, what));
        }
    }
}

/// Sends a line to the followers that want it (`container` is `None` for events); a follower
/// whose socket is full or closed is dropped.
pub fn feed_followers(container: Option<&str>, line: &[u8]) {
    let Ok(mut followers) = FOLLOWERS.lock() else { return };
    if followers.is_empty() {
        return;
    }
    followers.retain_mut(|(stream, what)| {
        let wanted = match (what, container) {
            (Follow::Events, None) => true,
            (Follow::Logs(name), Some(c)) => name == c,
            _ => false,
        };
        !wanted || stream.write_all(line).is_ok()
    });
}

/// A new event stamped now.
pub fn event(name: &str) -> Event {
    Event::new(now_ms(), name)
}

/// One line of a container's output, Compose-style: `name | text`.
pub fn container_line(name: &str, line: &[u8]) {
    let mut out = Vec::with_capacity(name.len() + 3 + line.len() + 1);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b" | ");
    out.extend_from_slice(line);
    out.push(b'\n');
    console_write(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_consoles_are_all_but_the_last() {
        assert_eq!(other_consoles("ttyS0 tty1\n"), ["ttyS0"]);
        assert_eq!(other_consoles("tty1 ttyS0 hvc0\n"), ["tty1", "ttyS0"]);
        assert!(other_consoles("ttyS0\n").is_empty());
        assert!(other_consoles("").is_empty());
        // Never a path out of /dev.
        assert!(other_consoles("../x ttyS0").is_empty());
    }
}
