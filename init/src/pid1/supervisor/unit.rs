//! One supervised container, everything PID 1 knows about it in one value (gokrazy's
//! `supervise.go` shape): what the plan says of it, where it is in its life, its restart
//! back-off, its health and the last lines of its output.
//!
//! Nothing here performs a system call: the values change only through [`super::machine`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use berth_runtime::ExitInfo;
use berth_schema::config::{HealthcheckConfig, RestartPolicy};
use berth_schema::plan::PlannedContainer;
use nix::sys::signal::Signal;

/// A unit's index in the machine's list: onboot, service, onshutdown, then the console, in file
/// order. Stable for the machine's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(pub usize);

/// Which list a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[[onboot]]`: run once, in order, before the services.
    Onboot,
    /// `[[service]]`: long-running, restarted by its policy.
    Service,
    /// `[[onshutdown]]`: run once, in order, after the services stopped.
    OnShutdown,
    /// `[console]`: the debug shell on the serial console, started again when it exits.
    Console,
}

impl Kind {
    /// The name events and `berthctl ps` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Onboot => "onboot",
            Kind::Service => "service",
            Kind::OnShutdown => "onshutdown",
            Kind::Console => "console",
        }
    }
}

/// What a service waits for before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// Another container: an onboot one must have exited 0, a service must be ready.
    Unit(UnitId),
    /// The pseudo-unit `network`: every configured interface has its addresses.
    Network,
    /// The pseudo-unit `time`: the clock was set from NTP.
    Time,
}

/// A signal by its number: a standard one or a realtime one (`stop_signal = "40"`), all of
/// which the config accepts; `nix`'s `Signal` has no realtime signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalNumber(pub i32);

impl SignalNumber {
    /// SIGTERM, the default stop signal.
    pub const TERM: SignalNumber = SignalNumber(libc::SIGTERM);
    /// SIGKILL, at the end of a stop timeout.
    pub const KILL: SignalNumber = SignalNumber(libc::SIGKILL);

    /// Its name in events and `ps`: `TERM` for SIGTERM; a realtime signal by its number.
    pub fn name(self) -> String {
        Signal::try_from(self.0).map_or_else(|_| self.0.to_string(), |s| signal_name(s).to_string())
    }
}

impl From<Signal> for SignalNumber {
    fn from(signal: Signal) -> SignalNumber {
        SignalNumber(signal as i32)
    }
}

/// How a container is asked to stop, and how long it gets before SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSettings {
    /// The stop signal (Docker's `--stop-signal`; SIGTERM by default).
    pub signal: SignalNumber,
    /// Time between the stop signal and SIGKILL; for an onshutdown container, its longest run.
    pub timeout: Duration,
}

impl StopSettings {
    /// `c`'s settings: its own, else SIGTERM and the machine's `machine_timeout`. The one place
    /// these defaults are worked out.
    pub fn of(c: &PlannedContainer, machine_timeout: Duration) -> StopSettings {
        StopSettings {
            // The number was checked when the config was read.
            signal: c.stop_signal.map_or(SignalNumber::TERM, SignalNumber),
            timeout: c.stop_timeout_ms.map(Duration::from_millis).unwrap_or(machine_timeout),
        }
    }
}

/// Docker's restart back-off: a delay doubling from [`Backoff::FIRST`] up to [`Backoff::MAX`],
/// back to the start (and the restart count to 0) after a run of [`Backoff::STABLE_RUN`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Restarts since the last stable run.
    pub count: u32,
    /// The last delay (zero before the first restart).
    delay: Duration,
}

impl Backoff {
    /// The first restart delay.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The longest restart delay: a crash-looping service costs PID 1 little.
    pub const MAX: Duration = Duration::from_secs(30);
    /// A run at least this long resets the delay and the count.
    pub const STABLE_RUN: Duration = Duration::from_secs(10);

    /// Whether a service that ran for `ran` and ended as `exit` is started again under
    /// `policy`, and if so after which delay and as which restart (1, 2, …).
    pub fn next(&mut self, policy: RestartPolicy, ran: Duration, exit: &ExitInfo) -> Option<(Duration, u32)> {
        if ran >= Self::STABLE_RUN {
            *self = Backoff::default();
        }
        let again = match policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => !exit.success() && max.is_none_or(|m| self.count < m),
        };
        if !again {
            return None;
        }
        self.delay = if self.delay.is_zero() { Self::FIRST } else { (self.delay * 2).min(Self::MAX) };
        self.count += 1;
        Some((self.delay, self.count))
    }
}

/// Healthcheck bookkeeping of a running service that has a healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// When the container started (for `start_period`).
    pub started: Instant,
    /// When the next check is due (`None` while one runs).
    pub next_at: Option<Instant>,
    /// When the running check is killed as timed out (`None` when none runs).
    pub check_deadline: Option<Instant>,
    /// Failures in a row.
    pub failures: u32,
    /// The last verdict: `None` before the first one.
    pub healthy: Option<bool>,
}

/// Where a unit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet (or never will be: see [`Unit::last`]).
    Idle,
    /// A service waiting for its dependencies.
    Waiting,
    /// Asked to launch; the result is not in yet.
    Starting,
    /// Its process runs.
    Running(Run),
    /// A service that ended, started again at this time.
    RestartPending(Instant),
}

/// A running container's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Its PID in PID 1's namespace.
    pub pid: i32,
    /// When it started.
    pub since: Instant,
    /// When SIGKILL is due: set when it is asked to stop (and for onshutdown containers at
    /// start, bounding their run).
    pub kill_at: Option<Instant>,
    /// Whether a shutdown has sent its stop signal.
    pub stop_signalled: bool,
}

/// How a unit that is not running last ended, or why it never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its process ended.
    Exited(ExitInfo),
    /// It could not be launched, or a dependency of it failed.
    Failed,
}

impl fmt::Display for Ending {
    /// `berthctl ps`'s spelling: `exited(0)`, `killed(TERM)`, `exited(137),oom`, `failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Failed => f.write_str("failed"),
            Ending::Exited(info) => {
                match (info.code, info.signal) {
                    (Some(code), _) => write!(f, "exited({code})")?,
                    (_, Some(sig)) => write!(f, "killed({})", signal_name(sig))?,
                    _ => f.write_str("exited")?,
                }
                if info.oom_killed {
                    f.write_str(",oom")?;
                }
                Ok(())
            }
        }
    }
}

/// `TERM` for SIGTERM: the spelling of events and `ps`.
pub fn signal_name(sig: Signal) -> &'static str {
    sig.as_str().trim_start_matches("SIG")
}

/// The last lines of a container's output, for `berthctl logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRing {
    lines: VecDeque<String>,
}

impl LogRing {
    /// Lines kept; older ones are dropped.
    pub const LINES: usize = 1000;

    /// Keeps `line`, dropping the oldest beyond [`LogRing::LINES`].
    pub fn push(&mut self, line: &[u8]) {
        if self.lines.len() >= Self::LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(String::from_utf8_lossy(line).into_owned());
    }

    /// The last `n` lines (all with `None`), each ending in a newline.
    pub fn tail(&self, n: Option<usize>) -> String {
        let skip = n.map(|n| self.lines.len().saturating_sub(n)).unwrap_or(0);
        self.lines.iter().skip(skip).map(|l| format!("{l}\n")).collect()
    }
}

/// One supervised container.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Its unique name.
    pub name: String,
    /// Which list it comes from.
    pub kind: Kind,
    /// Its image's manifest digest (for `container.started`).
    pub image_digest: String,
    /// Its restart policy (services).
    pub restart: RestartPolicy,
    /// What it waits for (services).
    pub depends_on: Vec<Dependency>,
    /// Its healthcheck (services).
    pub healthcheck: Option<HealthcheckConfig>,
    /// How it is stopped.
    pub stop: StopSettings,
    /// Where it is in its life.
    pub state: State,
    /// How it last ended, if it ever ran or failed.
    pub last: Option<Ending>,
    /// Ready for its dependents: an onboot container that exited 0, a service that started
    /// (without a healthcheck) or was once healthy.
    pub ready: bool,
    /// Its restart back-off.
    pub backoff: Backoff,
    /// Its healthcheck state while it runs with one.
    pub health: Option<Health>,
    /// Stopped by `berthctl stop`: not restarted until started again by hand.
    pub stopped_by_hand: bool,
    /// Asked by `berthctl restart`: started again as soon as its stop has ended it.
    pub restart_after_stop: bool,
    /// The last lines of its output.
    pub ring: LogRing,
}

impl Unit {
    /// A unit for `c` of `kind`; `depends_on` resolved by the caller.
    pub fn new(
        c: &PlannedContainer,
        kind: Kind,
        depends_on: Vec<Dependency>,
        machine_timeout: Duration,
    ) -> Unit {
        Unit {
            name: c.name.clone(),
            kind,
            image_digest: c.image_digest.clone(),
            restart: c.restart,
            depends_on,
            healthcheck: c.healthcheck.clone(),
            stop: StopSettings::of(c, machine_timeout),
            state: State::Idle,
            last: None,
            ready: false,
            backoff: Backoff::default(),
            health: None,
            stopped_by_hand: false,
            restart_after_stop: false,
            ring: LogRing::default(),
        }
    }

    /// Its process, while it runs.
    pub fn run(&self) -> Option<&Run> {
        match &self.state {
            State::Running(run) => Some(run),
            _ => None,
        }
    }

    /// Its process, while it runs, to change.
    pub fn run_mut(&mut self) -> Option<&mut Run> {
        match &mut self.state {
            State::Running(run) => Some(run),
            _ => None,
        }
    }

    /// Whether it is launching or running (what a shutdown waits for).
    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Starting | State::Running(_))
    }

    /// Whether it can never become ready for its dependents: an onboot container that ended
    /// without success, or a service that ended (or failed) without having been ready and will
    /// not be started again.
    pub fn is_dead_end(&self) -> bool {
        if self.ready || self.last.is_none() {
            return false;
        }
        match self.kind {
            Kind::Onboot => !self.is_active(),
            Kind::Service => matches!(self.state, State::Idle),
            Kind::OnShutdown | Kind::Console => false,
        }
    }

    /// `berthctl ps`'s STATE column.
    pub fn state_text(&self) -> String {
        let last = self.last.map(|l| l.to_string());
        match self.state {
            State::Running(_) => "running".into(),
            State::Starting => "starting".into(),
            State::Waiting => "waiting".into(),
            State::RestartPending(_) => "restarting".into(),
            State::Idle if self.stopped_by_hand => format!("stopped/{}", last.as_deref().unwrap_or("-")),
            State::Idle => last.unwrap_or_else(|| "created".into()),
        }
    }
}
