//! The captured serial console: complete lines, parsed events, and waiting for them.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_events::Event;

use crate::error::{Error, Result};
use crate::vm::GuestShutdown;

/// At most this many console lines are kept (the oldest are dropped first).
const MAX_LINES: usize = 100_000;
/// A "line" longer than this is cut, so garbage without newlines cannot grow without bound.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// At most this many lines of QEMU's own error output are kept.
const MAX_STDERR_LINES: usize = 200;
/// How many console lines an error message shows.
pub(crate) const TAIL_LINES: usize = 40;

/// The console state shared between the reader threads and the [`crate::Vm`].
#[derive(Default)]
pub(crate) struct Console {
    state: Mutex<State>,
    cond: Condvar,
}

/// What has been seen so far.
#[derive(Default)]
pub(crate) struct State {
    /// Complete lines, `\r` stripped; `lines[0]` is line number `first`.
    pub(crate) lines: VecDeque<String>,
    /// The absolute number of the first kept line.
    pub(crate) first: usize,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// The start of a line that a kernel message cut in two: it is joined to the next line.
    interrupted: Vec<u8>,
    /// Every event line parsed so far.
    pub(crate) events: Vec<Event>,
    /// The console reached end of file: QEMU exited or closed it.
    pub(crate) eof: bool,
    /// QEMU's own error output (its stderr), line by line.
    stderr: VecDeque<String>,
    /// The last shutdown message the guest kernel printed.
    pub(crate) shutdown: Option<GuestShutdown>,
    /// A line has shown that a kernel runs (see [`shows_progress`]).
    pub(crate) progress: bool,
    /// When the last console bytes arrived.
    pub(crate) last_output: Option<Instant>,
}

impl State {
    /// The absolute number one past the last complete line.
    pub(crate) fn end(&self) -> usize {
        self.first + self.lines.len()
    }

    /// Takes one raw console line. The kernel writes its messages to the serial port while
    /// PID 1 is in the middle of a line, so `abc[    3.601031] Memory cgroup ...` followed by
    /// `def` is really the kernel's line and `abcdef`: the kernel's part is split off and the
    /// cut line is joined to the next one. Kernel messages are recognised by their timestamp
    /// (`printk.time`, on in Debian's and berth's kernels).
    fn take_line(&mut self, bytes: &[u8]) {
        let mut line = std::mem::take(&mut self.interrupted);
        line.extend_from_slice(bytes);
        match kernel_message_start(&line) {
            Some(at) if at > 0 => {
                self.push_line(&line[at..]);
                line.truncate(at);
                self.interrupted = line;
            }
            _ => self.push_line(&line),
        }
    }

    fn push_line(&mut self, mut bytes: &[u8]) {
        if let Some(stripped) = bytes.strip_suffix(b"\r") {
            bytes = stripped;
        }
        let line: String = String::from_utf8_lossy(bytes).chars().filter(|&c| c != '\r').collect();
        if let Some(event) = Event::parse(&line) {
            self.events.push(event);
        }
        if let Some(kind) = GuestShutdown::from_kernel_line(&line) {
            self.shutdown = Some(kind);
        }
        self.progress |= shows_progress(&line);
        self.lines.push_back(line);
        if self.lines.len() > MAX_LINES {
            self.lines.pop_front();
            self.first += 1;
        }
    }
}

impl Console {
    /// Locks the state. A poisoned lock only means a reader thread panicked mid-update; the
    /// state is still consistent enough to read.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds raw console bytes.
    pub(crate) fn feed(&self, mut bytes: &[u8]) {
        let mut st = self.lock();
        st.last_output = Some(Instant::now());
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut st.partial);
            line.extend_from_slice(&bytes[..nl]);
            st.take_line(&line);
            bytes = &bytes[nl + 1..];
        }
        st.partial.extend_from_slice(bytes);
        if st.partial.len() > MAX_LINE_BYTES {
            let line = std::mem::take(&mut st.partial);
            st.take_line(&line);
        }
        drop(st);
        self.cond.notify_all();
    }

    /// Marks the end of the console: the unterminated last line becomes a line.
    pub(crate) fn finish(&self) {
        let mut st = self.lock();
        if !st.partial.is_empty() || !st.interrupted.is_empty() {
            let line = std::mem::take(&mut st.partial);
            st.take_line(&line);
        }
        if !st.interrupted.is_empty() {
            let line = std::mem::take(&mut st.interrupted);
            st.push_line(&line);
        }
        st.eof = true;
        drop(st);
        self.cond.notify_all();
    }

    /// Records one line of QEMU's own error output.
    pub(crate) fn push_stderr(&self, line: String) {
        let mut st = self.lock();
        st.stderr.push_back(line);
        if st.stderr.len() > MAX_STDERR_LINES {
            st.stderr.pop_front();
        }
    }

    /// The whole console so far (kept lines, then the unterminated last line).
    pub(crate) fn text(&self) -> String {
        let st = self.lock();
        let mut out = String::new();
        for line in &st.lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&String::from_utf8_lossy(&st.partial));
        out
    }

    /// The last `n` console lines, followed by QEMU's error output if it wrote any.
    pub(crate) fn tail(&self, n: usize) -> String {
        tail_of(&self.lock(), n)
    }

    /// Waits until `check` returns `Some`, the console ends, or `timeout` passes. `check` is
    /// called with the lock held, first at once and then after every change.
    pub(crate) fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(found) = check(&st) {
                return Ok(found);
            }
            if st.eof {
                return Err(Error::Exited { what: what.to_string(), tail: tail_of(&st, TAIL_LINES) });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: what.to_string(),
                    secs: timeout.as_secs_f64(),
                    tail: tail_of(&st, TAIL_LINES),
                });
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Waits until the console has ended, at most `timeout`; whether it did.
    pub(crate) fn wait_eof(&self, timeout: Duration) -> bool {
        self.wait_until("the end of the console", timeout, |st| st.eof.then_some(())).is_ok()
    }
}

/// Whether a console line shows that a kernel (not only firmware, a boot loader or the
/// kernel's real-mode setup) runs: a printk line, a berth event, or the kernel's banner.
pub(crate) fn shows_progress(line: &str) -> bool {
    kernel_message_start(line.as_bytes()) == Some(0)
        || line.starts_with("Linux version ")
        || Event::parse(line).is_some()
}

/// Where a kernel message starts in `line`: the first `[SECONDS.MICROS] ` timestamp, as printk
/// writes it (`[%5lu.%06lu] `).
fn kernel_message_start(line: &[u8]) -> Option<usize> {
    let is_timestamp = |rest: &[u8]| {
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let stamp = &rest[1..close];
        let Some(dot) = stamp.iter().position(|&b| b == b'.') else { return false };
        let (secs, micros) = (stamp[..dot].trim_ascii_start(), &stamp[dot + 1..]);
        !secs.is_empty()
            && secs.iter().all(u8::is_ascii_digit)
            && micros.len() == 6
            && micros.iter().all(u8::is_ascii_digit)
            && rest.get(close + 1) == Some(&b' ')
    };
    line.iter().enumerate().position(|(i, &b)| b == b'[' && is_timestamp(&line[i..]))
}

fn tail_of(st: &State, n: usize) -> String {
    let mut out = String::new();
    let skip = st.lines.len().saturating_sub(n);
    for line in st.lines.iter().skip(skip) {
        out.push_str(line);
        out.push('\n');
    }
    if !st.partial.is_empty() {
        out.push_str(&String::from_utf8_lossy(&st.partial));
        out.push('\n');
    }
    if !st.stderr.is_empty() {
        out.push_str("--- QEMU error output ---\n");
        for line in &st.stderr {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Copies a console stream into `console` (and every writer in `tees`) until end of file; the
/// caller then calls [`Console::finish`].
pub(crate) fn pump(mut from: impl Read, console: &Console, mut tees: Vec<Box<dyn Write + Send>>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tees.retain_mut(|w| w.write_all(&buf[..n]).and_then(|()| w.flush()).is_ok());
                console.feed(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("reading the QEMU console: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks_and_strips_cr() {
        let c = Console::default();
        c.feed(b"[    1.0] hello\r\n@berth ms=5 ev");
        c.feed(b"ent=boot.done step=x\r\r\npartial");
        let st = c.lock();
        assert_eq!(st.lines, ["[    1.0] hello", "@berth ms=5 event=boot.done step=x"]);
        assert_eq!(st.events.len(), 1);
        assert_eq!(st.events[0].get("step"), Some("x"));
        drop(st);
        assert!(c.text().ends_with("step=x\npartial"));
        c.finish();
        let st = c.lock();
        assert!(st.eof);
        assert_eq!(st.lines.back().map(String::as_str), Some("partial"));
    }

    #[test]
    fn a_kernel_message_inside_a_line_is_split_off_and_the_line_joined() {
        let c = Console::default();
        c.feed(b"@berth ms=3579 event=container.exited name=crash signal=SEGV[    3.601031] Memory cgroup ");
        c.feed(b"out of memory: Killed process 82 (dd)\n\n@berth ms=3615 event=x na");
        c.feed(b"me=a[   12.000001] one\n[   12.000002] two\nb\nsurvivor | [ 1.5] not the kernel\n");
        let st = c.lock();
        assert_eq!(
            st.lines,
            [
                "[    3.601031] Memory cgroup out of memory: Killed process 82 (dd)",
                "@berth ms=3579 event=container.exited name=crash signal=SEGV",
                "[   12.000001] one",
                "[   12.000002] two",
                "@berth ms=3615 event=x name=ab",
                "survivor | [ 1.5] not the kernel",
            ]
        );
        assert_eq!(st.events.len(), 2);
        assert_eq!(st.events[0].get("signal"), Some("SEGV"));
        assert_eq!(st.events[1].get("name"), Some("ab"));
        drop(st);
        c.feed(b"cut[    1.000000] at the end\n");
        c.finish();
        assert_eq!(c.lock().lines.back().map(String::as_str), Some("cut"));
    }

    #[test]
    fn progress_is_a_kernel_or_berth_line_not_firmware_or_setup() {
        for line in [
            "[    0.000000] Linux version 6.1.0-40-cloud-amd64",
            "Linux version 6.1.0 (debian-kernel@lists.debian.org)",
            "@berth ms=812 event=boot.start",
        ] {
            assert!(shows_progress(line), "{line}");
        }
        for line in [
            "Probing EDD (edd=off to disable)... ok",
            "Welcome to GRUB!",
            "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "Booting from ROM...",
            "hello | [    1.000000] looks like a timestamp",
            "",
        ] {
            assert!(!shows_progress(line), "{line}");
        }
        let c = Console::default();
        c.feed(b"Probing EDD (edd=off to disable)... ok\r\n");
        assert!(!c.lock().progress && c.lock().last_output.is_some());
        c.feed(b"[    0.000000] Linux version 6.1.0\n");
        assert!(c.lock().progress);
    }

    #[test]
    fn recognises_kernel_shutdown_messages() {
        let c = Console::default();
        c.feed(b"[    1.538157] reboot: Restarting system\n");
        assert_eq!(c.lock().shutdown, Some(GuestShutdown::Reboot));
        c.feed(b"[    1.538157] reboot: Power down\n");
        assert_eq!(c.lock().shutdown, Some(GuestShutdown::PowerOff));
    }

    #[test]
    fn wait_times_out_with_tail_and_stops_at_eof() {
        let c = Console::default();
        c.feed(b"one\ntwo\n");
        c.push_stderr("qemu: oops".into());
        let err = c.wait_until("never", Duration::from_millis(50), |_| None::<()>).unwrap_err().to_string();
        assert!(err.contains("timed out") && err.contains("one\ntwo\n"), "{err}");
        assert!(err.contains("qemu: oops"), "{err}");
        c.finish();
        let start = Instant::now();
        let err = c.wait_until("never", Duration::from_secs(30), |_| None::<()>).unwrap_err();
        assert!(matches!(err, Error::Exited { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
