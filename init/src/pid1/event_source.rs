//! What PID 1's loop waits on, behind one small trait: each source says which descriptors it
//! waits on (lent, never raw), when it must run even if none is ready, and what it does after
//! each wait — its own work, plus the [`Pid1Event`]s that need the rest of PID 1.
//!
//! One round of [`wait`]: collect every source's descriptors → `poll` until one is ready or the
//! earliest deadline (at most [`MAX_SLEEP`]) → run every source's `service` in order. The
//! descriptors are borrowed from the sources for the poll only, so none can close under it.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

use crate::pid1::control::protocol::Request;
use crate::pid1::control::ControlSocket;
use crate::pid1::network::HostNetwork;
use crate::pid1::power_button::PowerButton;
use crate::pid1::shutdown::PowerAction;
use crate::pid1::syslog;

/// The longest PID 1 sleeps without a reason (a safety net: every timer has a deadline).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How often signals are looked for when no signalfd could be made.
const SIGNAL_FALLBACK_POLL: Duration = Duration::from_millis(100);

/// What a source needs the rest of PID 1 for.
#[derive(Debug)]
pub enum Pid1Event {
    /// End the machine (`reason`: the signal's name, `acpi`, `control`, `done`).
    Shutdown(PowerAction, String),
    /// A control request arrived on this connection (or a request that could not be read).
    Control(UnixStream, Result<Request, String>),
    /// Every configured interface has its addresses.
    NetworkReady,
    /// Kernel modules were loaded (the late ones, or drivers for devices added later): look
    /// for their interfaces.
    LateModulesLoaded,
    /// Look at the slot being tried: commit it, or roll it back.
    UpdateGate,
    /// An installed update may reboot the machine now.
    UpdateReboot,
    /// The clock was set from NTP for the first time.
    TimeSynced,
    /// The cloud metadata helper answered (or why there is no metadata).
    Metadata(Result<berth_schema::metadata::Metadata, String>),
}

/// Something PID 1's loop waits on.
pub trait EventSource {
    /// Adds the descriptors to wait on, with the events wanted.
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>);

    /// When [`service`](Self::service) must run even if nothing is ready.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// After the wait, before [`service`](Self::service): what the wait saw on each of the
    /// descriptors this source lent, in order. For descriptors whose readiness cannot be
    /// asked again (a PSI trigger's `POLLPRI` is consumed by the poll that reports it).
    fn woke(&mut self, _revents: &[PollFlags]) {}

    /// Runs after every wait (ready or not; cheap when there is nothing to do): reads what is
    /// ready, does what is due, and reports what needs the rest of PID 1.
    fn service(&mut self, now: Instant, out: &mut Vec<Pid1Event>);
}

/// Waits for the first ready descriptor or deadline of `sources`, then services them all.
pub fn wait(sources: &mut [&mut dyn EventSource]) -> Vec<Pid1Event> {
    let deadline = sources.iter().filter_map(|s| s.deadline()).min();
    let sleep = deadline.map_or(MAX_SLEEP, |d| d.saturating_duration_since(Instant::now()).min(MAX_SLEEP));
    // MAX_SLEEP fits a u16 of milliseconds.
    let timeout = PollTimeout::from(u16::try_from(sleep.as_millis()).unwrap_or(u16::MAX));
    let mut lent = Vec::with_capacity(sources.len());
    let revents: Vec<PollFlags> = {
        let mut fds = Vec::new();
        for source in sources.iter_mut() {
            let before = fds.len();
            source.interest(&mut fds);
            lent.push(before..fds.len());
        }
        let _ = poll(&mut fds, timeout);
        fds.iter().map(|fd| fd.revents().unwrap_or(PollFlags::empty())).collect()
    };
    let mut events = Vec::new();
    let now = Instant::now();
    for (source, range) in sources.iter_mut().zip(lent) {
        source.woke(&revents[range]);
        source.service(now, &mut events);
    }
    events
}

/// The signals PID 1 handles, through a signalfd; without one (should not happen), polled with
/// `sigtimedwait` every [`SIGNAL_FALLBACK_POLL`].
pub struct Signals {
    fd: Option<SignalFd>,
}

impl Signals {
    /// Reads the (blocked) `handled` signals from `fd`.
    pub fn new(fd: Option<SignalFd>) -> Signals {
        Signals { fd }
    }
}

/// What a signal asks of PID 1: SIGTERM, SIGUSR2 and SIGPWR power off; SIGINT (Ctrl-Alt-Del)
/// reboots; SIGUSR1 halts. SIGCHLD only wakes the loop (the supervisor reaps every round).
pub fn shutdown_action(sig: Signal) -> Option<PowerAction> {
    match sig {
        Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR => Some(PowerAction::Poweroff),
        Signal::SIGINT => Some(PowerAction::Reboot),
        Signal::SIGUSR1 => Some(PowerAction::Halt),
        _ => None,
    }
}

/// Signals PID 1 handles (docs/events.md): SIGCHLD reap; SIGTERM, SIGUSR2, SIGPWR power off;
/// SIGINT (Ctrl-Alt-Del) reboot; SIGUSR1 halt; SIGHUP ignored.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Waits up to `ms` for one of the handled (blocked) signals.
pub fn wait_signal(ms: i64) -> Option<Signal> {
    let mask = handled_signals();
    let timeout = libc::timespec { tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000 };
    // SAFETY: sigtimedwait reads the signal set and the timeout, both valid for the call; no
    // siginfo is requested.
    let sig = unsafe { libc::sigtimedwait(mask.as_ref(), std::ptr::null_mut(), &timeout) };
    Signal::try_from(sig).ok()
}

impl EventSource for Signals {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.fd.as_ref().map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)));
    }

    fn deadline(&self) -> Option<Instant> {
        self.fd.is_none().then(|| Instant::now() + SIGNAL_FALLBACK_POLL)
    }

    fn service(&mut self, _now: Instant, out: &mut Vec<Pid1Event>) {
        let mut signals = Vec::new();
        match &self.fd {
            Some(fd) => {
                while let Ok(Some(info)) = fd.read_signal() {
                    signals.extend(i32::try_from(info.ssi_signo).ok().and_then(|n| Signal::try_from(n).ok()));
                }
            }
            None => signals.extend(wait_signal(0)),
        }
        for sig in signals {
            if let Some(action) = shutdown_action(sig) {
                out.push(Pid1Event::Shutdown(action, sig.as_str().to_string()));
            }
        }
    }
}

impl EventSource for Option<PowerButton> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.as_ref().map(|b| PollFd::new(b.as_fd(), PollFlags::POLLIN)));
    }

    fn service(&mut self, _now: Instant, out: &mut Vec<Pid1Event>) {
        if self.as_ref().is_some_and(PowerButton::pressed) {
            out.push(Pid1Event::Shutdown(PowerAction::Poweroff, "acpi".into()));
        }
    }
}

impl EventSource for Option<ControlSocket> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.as_ref().map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)));
    }

    fn service(&mut self, _now: Instant, out: &mut Vec<Pid1Event>) {
        let Some(control) = self.as_ref() else { return };
        while let Some((stream, line)) = control.next_request() {
            out.push(Pid1Event::Control(stream, Request::parse(&line)));
        }
    }
}

impl EventSource for HostNetwork {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.fds().into_iter().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
    }

    fn deadline(&self) -> Option<Instant> {
        HostNetwork::deadline(self)
    }

    fn service(&mut self, now: Instant, out: &mut Vec<Pid1Event>) {
        self.poll(now);
        if self.check_ready() {
            out.push(Pid1Event::NetworkReady);
        }
    }
}

/// The remote syslog sender's socket (a TCP collector connecting, or with data queued).
#[derive(Default)]
pub struct SyslogSocket {
    /// The socket polled this round, kept open by this reference even if the sender drops it.
    socket: Option<(Arc<std::os::fd::OwnedFd>, bool)>,
}

impl EventSource for SyslogSocket {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        self.socket = syslog::poll_fd();
        if let Some((socket, write)) = &self.socket {
            let flags = if *write { PollFlags::POLLOUT } else { PollFlags::POLLIN };
            fds.push(PollFd::new(socket.as_fd(), flags));
        }
    }

    fn deadline(&self) -> Option<Instant> {
        syslog::deadline()
    }

    fn service(&mut self, _now: Instant, _out: &mut Vec<Pid1Event>) {
        self.socket = None;
        syslog::service();
    }
}
