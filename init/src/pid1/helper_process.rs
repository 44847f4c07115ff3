//! A helper PID 1 runs as a child for work that may block (HTTP, DNS, NTP): its standard
//! output is a non-blocking pipe PID 1's loop polls, read as lines; its standard input, when
//! asked for, a non-blocking pipe PID 1 writes short lines into. PID 1 never waits on it; the
//! supervisor's reaping collects it when it ends.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Makes `cmd`'s child start with no signal blocked: PID 1 keeps the signals it handles
/// blocked (they reach it through its signalfd), and a child inherits the mask — a helper
/// would not end at the shutdown's SIGTERM.
pub fn unblock_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only sigprocmask runs, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let empty = nix::sys::signal::SigSet::empty();
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None)
                .map_err(std::io::Error::from)
        });
    }
}

/// Where PID 1 runs the helper `name` from (the plan's tools directory).
pub fn path(name: &str) -> String {
    format!("{}/{name}", berth_schema::plan::TOOLS_DIR)
}

/// The helper process and its pipes.
pub struct HelperProcess {
    child: Child,
    /// Its standard input, when it was given one (taken when written).
    pub stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    buf: Vec<u8>,
}

impl HelperProcess {
    /// Starts `path` with `args`; its output (and its input, with `with_stdin`) non-blocking,
    /// its errors on PID 1's console.
    pub fn spawn(path: &str, args: &[String], with_stdin: bool) -> Result<HelperProcess, String> {
        let mut cmd = Command::new(path);
        cmd.args(args)
            .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        unblock_signals(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {path}: {e}"))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(format!("{path}: no pipe"));
        };
        for fd in std::iter::once(stdout.as_raw_fd()).chain(stdin.as_ref().map(|s| s.as_raw_fd())) {
            if let Err(e) = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)) {
                let _ = child.kill();
                return Err(format!("{path}: {e}"));
            }
        }
        Ok(HelperProcess { child, stdin, stdout, buf: Vec::new() })
    }

    /// The output pipe, to poll.
    pub fn stdout(&self) -> BorrowedFd<'_> {
        self.stdout.as_fd()
    }

    /// Reads what is there; the complete lines, and whether the output ended.
    pub fn read_lines(&mut self) -> (Vec<String>, bool) {
        let mut chunk = [0u8; 4096];
        let mut ended = false;
        loop {
            match self.stdout.read(&mut chunk) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // Any other error: nothing more will come.
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let mut lines = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line).trim().to_string());
        }
        (lines, ended)
    }

    /// Ends it (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }
}
