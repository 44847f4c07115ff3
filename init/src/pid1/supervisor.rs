//! Runs the plan's containers: onboot ones in order, each to completion, then the services;
//! reaps every child (orphans too), forwards container output, and decides when the work is done.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_init::config::{NetMode, RestartPolicy, WhenDone};
use berth_init::plan::{Plan, PlannedContainer};
use berth_runtime::{launch, launch_with, Container, LaunchHooks, Stdio};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::pid1::bridge::Bridge;
use crate::pid1::log_files::LogFiles;
use crate::pid1::shutdown::Action;
use crate::pid1::{launch_spec, limits, log, storage, userns_root};

pub use crate::pid1::launch_spec::CGROUP_PARENT;
use crate::pid1::launch_spec::STATE_ROOT;

/// The first restart delay.
const RESTART_FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest restart delay: a crash-looping service costs PID 1 little.
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
/// A run at least this long resets the delay and the failure count.
const RESTART_STABLE_RUN: Duration = Duration::from_secs(10);

/// Lines of output kept per container for `berthctl logs`.
const LOG_RING_LINES: usize = 1000;

/// Keeps `line` in `name`'s ring, dropping the oldest beyond [`LOG_RING_LINES`].
fn remember(rings: &mut BTreeMap<String, VecDeque<String>>, name: &str, line: &[u8]) {
    let ring = rings.entry(name.to_string()).or_default();
    if ring.len() >= LOG_RING_LINES {
        ring.pop_front();
    }
    ring.push_back(String::from_utf8_lossy(line).into_owned());
}

/// Healthcheck bookkeeping of one running service.
#[derive(Debug)]
struct Health {
    /// When the container started (for `start_period`).
    started: Instant,
    /// When the next check is due (`None` while one runs).
    next_at: Option<Instant>,
    /// Failures in a row.
    failures: u32,
    /// The last verdict: `None` before the first one.
    healthy: Option<bool>,
}

/// Restart bookkeeping of one service.
#[derive(Debug, Default)]
struct RestartState {
    /// Restarts since the last stable run.
    count: u32,
    /// The last delay.
    delay: Duration,
}

/// Which list a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[[onboot]]`.
    Onboot,
    /// `[[service]]`.
    Service,
    /// `[[onshutdown]]`.
    OnShutdown,
    /// `[console]`: the debug shell on the serial console.
    Console,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Onboot => "onboot",
            Kind::Service => "service",
            Kind::OnShutdown => "onshutdown",
            Kind::Console => "console",
        }
    }
}

/// A container PID 1 started and has not reaped yet.
struct Running {
    name: String,
    kind: Kind,
    started: Instant,
    /// When SIGKILL is due: set when the container is asked to stop (and for onshutdown
    /// containers at start, bounding their run).
    kill_at: Option<Instant>,
    /// Whether shutdown has sent its stop signal.
    stop_signalled: bool,
    container: Container,
    /// The state dir whose root PID 1 mounted (user-namespaced containers), to unmount at exit.
    premounted: Option<PathBuf>,
}

/// The read end of a container's stdout/stderr pipe and the partial line read so far.
pub struct LogPipe {
    name: String,
    fd: OwnedFd,
    partial: Vec<u8>,
}

/// Where the boot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Running onboot container N (or about to).
    Onboot(usize),
    /// All services started.
    Running,
    /// Shutting down: every container got its stop signal; SIGKILL at each one's deadline.
    Stopping,
    /// Running onshutdown container N (or about to).
    OnShutdown(usize),
    /// Everything has run: the machine can go down.
    Stopped,
}

/// What the supervisor asks of the main loop after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Nothing.
    None,
    /// Begin shutting down with this action.
    Shutdown(Action),
}

/// What a control request does to its connection.
pub enum Outcome {
    /// Reply and close.
    Close,
    /// Reply, close, and begin this shutdown.
    Shutdown(Action),
    /// Reply, then keep sending what the follower asked for.
    Follow(log::Follow),
}

/// One line of a container's output, everywhere it goes: the console, the ring `berthctl logs`
/// reads, the log file, followers and the syslog collector.
fn deliver(
    console: bool,
    rings: &mut BTreeMap<String, VecDeque<String>>,
    files: &mut LogFiles,
    name: &str,
    text: &[u8],
) {
    if console {
        log::container_line(name, text);
    }
    remember(rings, name, text);
    files.write(name, text);
    log::feed_followers(Some(name), &[text, b"\n"].concat());
    crate::pid1::syslog::send(6, name, None, "-", text);
}

/// The container supervisor.
pub struct Supervisor {
    plan: Plan,
    /// Restart bookkeeping per service name.
    restarts: BTreeMap<String, RestartState>,
    /// Services waiting for their restart delay: (due, name).
    pending_restarts: Vec<(Instant, String)>,
    /// When the console shell is started again after it exited.
    console_respawn: Option<Instant>,
    /// Services not started yet because a dependency is not ready, in file order.
    waiting: Vec<String>,
    /// Onboot containers that exited 0.
    onboot_ok: BTreeSet<String>,
    /// Services that are ready for their dependents (started, or healthy with a healthcheck).
    ready: BTreeSet<String>,
    /// Healthcheck state of running services that have one.
    health: BTreeMap<String, Health>,
    /// Running healthcheck processes: pid → (service, kill deadline).
    checks: BTreeMap<Pid, (String, Instant)>,
    /// The last lines of each container's output, for `berthctl logs`.
    rings: BTreeMap<String, VecDeque<String>>,
    /// Containers' output in rotated files.
    files: LogFiles,
    /// How each container that is not running ended (or why it never started).
    last_state: BTreeMap<String, String>,
    /// Services stopped by hand (`berthctl stop`): not restarted until started again.
    stopped_by_hand: BTreeSet<String>,
    /// Services to start again as soon as their `berthctl restart` stop has ended them.
    restart_after_stop: BTreeSet<String>,
    phase: Phase,
    running: BTreeMap<Pid, Running>,
    logs: Vec<LogPipe>,
    /// Cgroups whose removal was busy; retried after each reap.
    stale_cgroups: Vec<Container>,
    cgroups: bool,
    devnull: Option<OwnedFd>,
    /// The bridge of `net = "bridge"` containers, when any exists and could be set up.
    bridge: Option<Bridge>,
}

impl Supervisor {
    /// A supervisor for `plan`; `cgroups` says whether the cgroup2 hierarchy is usable.
    pub fn new(plan: Plan, cgroups: bool) -> Supervisor {
        let files = LogFiles::new(&plan.log);
        let devnull =
            nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                .ok()
                .map(|fd| {
                    // SAFETY: `open` returned a fresh descriptor nothing else owns.
                    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
                });
        Supervisor {
            plan,
            restarts: BTreeMap::new(),
            pending_restarts: Vec::new(),
            console_respawn: None,
            waiting: Vec::new(),
            onboot_ok: BTreeSet::new(),
            ready: BTreeSet::new(),
            health: BTreeMap::new(),
            checks: BTreeMap::new(),
            files,
            rings: BTreeMap::new(),
            last_state: BTreeMap::new(),
            stopped_by_hand: BTreeSet::new(),
            restart_after_stop: BTreeSet::new(),
            phase: Phase::Onboot(0),
            running: BTreeMap::new(),
            logs: Vec::new(),
            stale_cgroups: Vec::new(),
            cgroups,
            devnull,
            bridge: None,
        }
    }

    /// Gives the supervisor the container bridge (set up at boot).
    pub fn set_bridge(&mut self, bridge: Option<Bridge>) {
        self.bridge = bridge;
    }

    /// A pseudo-unit (`"network"`) became ready: services waiting for it may start.
    pub fn unit_ready(&mut self, name: &str) {
        if self.ready.insert(name.to_string()) && self.phase == Phase::Running {
            self.start_ready();
        }
    }

    /// Starts the boot: onboot containers, then services.
    pub fn start(&mut self) -> Request {
        self.advance()
    }

    /// The log pipes to poll.
    pub fn log_fds(&self) -> Vec<i32> {
        self.logs.iter().map(|l| l.fd.as_raw_fd()).collect()
    }

    /// When the main loop must wake up next, if ever: a SIGKILL deadline or a restart delay.
    pub fn deadline(&self) -> Option<Instant> {
        let kills = self.running.values().filter_map(|r| r.kill_at);
        let checks =
            self.health.values().filter_map(|h| h.next_at).chain(self.checks.values().map(|(_, at)| *at));
        kills
            .chain(self.pending_restarts.iter().map(|(due, _)| *due))
            .chain(checks)
            .chain(self.console_respawn)
            .min()
    }

    /// A container's stop timeout: its own, else the machine's.
    fn stop_timeout(&self, c: &PlannedContainer) -> Duration {
        c.stop_timeout_ms.map(Duration::from_millis).unwrap_or(self.plan.system.stop_timeout)
    }

    /// The planned container of a running one.
    fn planned(&self, name: &str) -> Option<&PlannedContainer> {
        self.plan.containers().find(|c| c.name == name)
    }

    /// Starts every waiting service whose dependencies are ready; a service whose onboot
    /// dependency did not exit 0 can never start and is reported failed.
    fn start_ready(&mut self) {
        loop {
            let mut progressed = false;
            for name in self.waiting.clone() {
                let Some(c) = self.plan.service.iter().find(|c| c.name == name).cloned() else { continue };
                let onboot_failed = c
                    .depends_on
                    .iter()
                    .find(|d| self.plan.onboot.iter().any(|o| &o.name == *d) && !self.onboot_ok.contains(*d));
                if let Some(dep) = onboot_failed {
                    self.waiting.retain(|n| n != &name);
                    let msg = format!("its dependency {dep} did not complete successfully");
                    log::error(&format!("container {name} not started: {msg}"));
                    log::emit(
                        log::event("container.failed")
                            .with("name", &name)
                            .with("kind", "service")
                            .with("error", msg),
                    );
                    progressed = true;
                    continue;
                }
                if c.depends_on.iter().all(|d| self.onboot_ok.contains(d) || self.ready.contains(d)) {
                    self.waiting.retain(|n| n != &name);
                    self.start_service(&c);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Starts a service: with a healthcheck it is watched (and ready once healthy), without one
    /// it is ready at once. False if it could not start.
    fn start_service(&mut self, c: &PlannedContainer) -> bool {
        if !self.start_container(c, Kind::Service) {
            return false;
        }
        match &c.healthcheck {
            Some(hc) => {
                let now = Instant::now();
                let health =
                    Health { started: now, next_at: Some(now + hc.interval), failures: 0, healthy: None };
                self.health.insert(c.name.clone(), health);
            }
            None => {
                self.ready.insert(c.name.clone());
            }
        }
        true
    }

    /// Runs due healthchecks and kills those past their timeout.
    fn health_timers(&mut self) {
        let now = Instant::now();
        for (pid, (name, at)) in &self.checks {
            if *at <= now {
                log::warn(&format!("healthcheck of {name} timed out"));
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
        let due: Vec<String> = self
            .health
            .iter()
            .filter(|(_, h)| h.next_at.is_some_and(|at| at <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(c) = self.plan.service.iter().find(|c| c.name == name).cloned() else { continue };
            let Some(hc) = c.healthcheck.clone() else { continue };
            let Some((&pid, _)) = self.running.iter().find(|(_, r)| r.name == name) else { continue };
            if let Some(h) = self.health.get_mut(&name) {
                h.next_at = None;
            }
            match self.exec_check(&c, pid, &hc.cmd) {
                Ok(check) => {
                    self.checks.insert(check, (name.clone(), now + hc.timeout));
                }
                Err(e) => {
                    log::warn(&format!("healthcheck of {name} could not start: {e}"));
                    self.health_result(&name, false);
                }
            }
        }
    }

    /// Starts a healthcheck command inside the running container `pid`.
    fn exec_check(&self, c: &PlannedContainer, pid: Pid, cmd: &[String]) -> Result<Pid, String> {
        let devnull = self.devnull.as_ref().map(|f| f.as_raw_fd()).ok_or("no /dev/null")?;
        let spec = launch_spec::healthcheck_spec(c, self.cgroups, devnull, pid, cmd)?;
        launch(&spec).map(|container| container.pid).map_err(|e| e.to_string())
    }

    /// Records a healthcheck verdict; the first success makes the service ready.
    fn health_result(&mut self, name: &str, ok: bool) {
        let Some(hc) = self.plan.service.iter().find(|c| c.name == name).and_then(|c| c.healthcheck.clone())
        else {
            return;
        };
        let Some(h) = self.health.get_mut(name) else { return };
        h.next_at = Some(Instant::now() + hc.interval);
        if ok {
            h.failures = 0;
            if h.healthy != Some(true) {
                h.healthy = Some(true);
                log::emit(log::event("container.healthy").with("name", name));
                self.ready.insert(name.to_string());
                self.start_ready();
            }
            return;
        }
        if h.started.elapsed() < hc.start_period {
            return;
        }
        h.failures += 1;
        if h.failures >= hc.retries && h.healthy != Some(false) {
            h.healthy = Some(false);
            log::emit(log::event("container.unhealthy").with("name", name).with("failures", h.failures));
        }
    }

    /// Answers one control request: the reply, and what happens to the connection.
    pub fn control(&mut self, request: &str) -> (String, Outcome) {
        let words: Vec<&str> = request.split_whitespace().collect();
        match words.as_slice() {
            ["ps"] => (self.ps(), Outcome::Close),
            ["logs", "-f", name] => {
                if !self.plan.containers().any(|c| c.name == *name) {
                    return (format!("error: no container named {name}\n"), Outcome::Close);
                }
                let past: String =
                    self.rings.get(*name).map(|r| r.iter().map(|l| format!("{l}\n")).collect()).unwrap_or_default();
                (past, Outcome::Follow(log::Follow::Logs(name.to_string())))
            }
            ["events", "-f"] => (String::new(), Outcome::Follow(log::Follow::Events)),
            ["restart", name] => {
                let (text, _) = self.control(&format!("stop {name}"));
                if text.starts_with("error:") {
                    return (text, Outcome::Close);
                }
                self.restart_after_stop.insert(name.to_string());
                (format!("restarting {name}\n"), Outcome::Close)
            }
            ["logs", rest @ ..] => {
                let (n, name) = match rest {
                    ["-n", n, name] => (n.parse::<usize>().ok(), *name),
                    [name] => (None, *name),
                    _ => return ("error: usage: logs [-n N] NAME\n".into(), Outcome::Close),
                };
                match self.rings.get(name) {
                    Some(ring) => {
                        let skip = n.map(|n| ring.len().saturating_sub(n)).unwrap_or(0);
                        (ring.iter().skip(skip).map(|l| format!("{l}\n")).collect(), Outcome::Close)
                    }
                    None if self.plan.containers().any(|c| c.name == name) => (String::new(), Outcome::Close),
                    None => (format!("error: no container named {name}\n"), Outcome::Close),
                }
            }
            ["stop", name] => match self.running.iter_mut().find(|(_, r)| r.name == *name) {
                Some((pid, run)) => {
                    let c = self.plan.containers().find(|c| c.name == run.name);
                    let signal = c
                        .and_then(|c| c.stop_signal)
                        .and_then(|n| Signal::try_from(n).ok())
                        .unwrap_or(Signal::SIGTERM);
                    let timeout = c
                        .and_then(|c| c.stop_timeout_ms)
                        .map(Duration::from_millis)
                        .unwrap_or(self.plan.system.stop_timeout);
                    run.kill_at = Some(Instant::now() + timeout);
                    let _ = kill(*pid, signal);
                    log::emit(
                        log::event("container.stopping")
                            .with("name", name)
                            .with("signal", signal.as_str().trim_start_matches("SIG")),
                    );
                    self.stopped_by_hand.insert(name.to_string());
                    self.pending_restarts.retain(|(_, n)| n != name);
                    (format!("stopping {name}\n"), Outcome::Close)
                }
                None => (format!("error: {name} is not running\n"), Outcome::Close),
            },
            ["start", name] => {
                if self.running.values().any(|r| r.name == *name) {
                    return (format!("error: {name} is running already\n"), Outcome::Close);
                }
                if !matches!(self.phase, Phase::Running) {
                    return ("error: containers start by hand only while the machine runs\n".into(), Outcome::Close);
                }
                match self.plan.service.iter().find(|c| c.name == *name).cloned() {
                    Some(c) => {
                        self.stopped_by_hand.remove(*name);
                        self.pending_restarts.retain(|(_, n)| n != name);
                        if self.start_service(&c) {
                            (format!("started {name}\n"), Outcome::Close)
                        } else {
                            (format!("error: {name} failed to start (see the console)\n"), Outcome::Close)
                        }
                    }
                    None => (format!("error: no service named {name}\n"), Outcome::Close),
                }
            }
            ["poweroff"] => ("powering off\n".into(), Outcome::Shutdown(Action::Poweroff)),
            ["reboot"] => ("rebooting\n".into(), Outcome::Shutdown(Action::Reboot)),
            ["halt"] => ("halting\n".into(), Outcome::Shutdown(Action::Halt)),
            _ => (
                format!(
                    "error: unknown request `{request}` (ps, logs [-f], events -f, start, stop, restart, poweroff, reboot, halt)\n"
                ),
                Outcome::Close,
            ),
        }
    }

    /// `berthctl ps`: one line per container.
    fn ps(&self) -> String {
        let mut out = format!(
            "{:<16} {:<10} {:<14} {:>6} {:>8} {:>9} {:>10}\n",
            "NAME", "KIND", "STATE", "PID", "RESTARTS", "UPTIME", "MEMORY"
        );
        let kinds = self
            .plan
            .onboot
            .iter()
            .map(|c| (c, "onboot"))
            .chain(self.plan.service.iter().map(|c| (c, "service")))
            .chain(self.plan.onshutdown.iter().map(|c| (c, "onshutdown")));
        for (c, kind) in kinds {
            let running = self.running.iter().find(|(_, r)| r.name == c.name);
            let (state, pid, uptime, memory) = match running {
                Some((pid, r)) => {
                    let memory = std::fs::read_to_string(
                        PathBuf::from(CGROUP_PARENT).join(&c.name).join("memory.current"),
                    )
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .map(|b| format!("{:.1}M", b as f64 / (1u64 << 20) as f64))
                    .unwrap_or_else(|| "-".into());
                    (
                        "running".to_string(),
                        pid.to_string(),
                        format!("{}s", r.started.elapsed().as_secs()),
                        memory,
                    )
                }
                None => {
                    let state = if self.waiting.contains(&c.name) {
                        "waiting".to_string()
                    } else if self.pending_restarts.iter().any(|(_, n)| n == &c.name) {
                        "restarting".to_string()
                    } else if self.stopped_by_hand.contains(&c.name) {
                        format!("stopped/{}", self.last_state.get(&c.name).map(String::as_str).unwrap_or("-"))
                    } else {
                        self.last_state.get(&c.name).cloned().unwrap_or_else(|| "created".into())
                    };
                    (state, "-".into(), "-".into(), "-".into())
                }
            };
            let restarts = self.restarts.get(&c.name).map(|r| r.count).unwrap_or(0);
            out.push_str(&format!(
                "{:<16} {:<10} {:<14} {:>6} {:>8} {:>9} {:>10}\n",
                c.name, kind, state, pid, restarts, uptime, memory
            ));
        }
        out
    }

    /// Starts the services whose restart delay has passed.
    pub fn restart_due(&mut self) -> Request {
        self.health_timers();
        if self.console_respawn.is_some_and(|at| at <= Instant::now()) {
            self.console_respawn = None;
            if let (Phase::Running, Some(console)) = (self.phase, self.plan.console.clone()) {
                self.start_container(&console, Kind::Console);
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.pending_restarts.drain(..).partition(|(at, _)| *at <= now);
        self.pending_restarts = later;
        if due.is_empty() {
            return Request::None;
        }
        for (_, name) in due {
            if let Some(c) = self.plan.service.iter().find(|c| c.name == name).cloned() {
                self.start_service(&c);
            }
        }
        self.check_done()
    }

    /// Whether (and after how long) a service that just ended is started again: Docker's
    /// policies, with a delay doubling from [`RESTART_FIRST_DELAY`] up to [`RESTART_MAX_DELAY`],
    /// back to the start (and the failure count to 0) after a run of [`RESTART_STABLE_RUN`].
    fn restart_delay(
        &mut self,
        name: &str,
        ran: Duration,
        info: &berth_runtime::ExitInfo,
    ) -> Option<(Duration, u32)> {
        let policy = self.plan.service.iter().find(|c| c.name == name)?.restart;
        let state = self.restarts.entry(name.to_string()).or_default();
        if ran >= RESTART_STABLE_RUN {
            *state = RestartState::default();
        }
        let again = match policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => !info.success() && max.is_none_or(|m| state.count < m),
        };
        if !again {
            return None;
        }
        state.delay = if state.delay.is_zero() {
            RESTART_FIRST_DELAY
        } else {
            (state.delay * 2).min(RESTART_MAX_DELAY)
        };
        state.count += 1;
        Some((state.delay, state.count))
    }

    /// Whether a shutdown has stopped every container.
    pub fn stopped(&self) -> bool {
        self.phase == Phase::Stopped && self.running.is_empty()
    }

    fn advance(&mut self) -> Request {
        while let Phase::Onboot(i) = self.phase {
            let Some(c) = self.plan.onboot.get(i).cloned() else {
                self.phase = Phase::Running;
                log::emit(log::event("boot.stage").with("stage", "services"));
                self.waiting = self.plan.service.iter().map(|c| c.name.clone()).collect();
                self.start_ready();
                if let Some(console) = self.plan.console.clone() {
                    self.start_container(&console, Kind::Console);
                }
                return self.check_done();
            };
            if self.start_container(&c, Kind::Onboot) {
                return Request::None;
            }
            self.phase = Phase::Onboot(i + 1);
        }
        Request::None
    }

    fn check_done(&mut self) -> Request {
        if self.phase != Phase::Running
            || self.running.values().any(|r| r.kind != Kind::Console)
            || !self.pending_restarts.is_empty()
            || !self.waiting.is_empty()
        {
            return Request::None;
        }
        let action = self.plan.system.when_done;
        log::emit(log::event("system.done").with("when_done", format!("{action:?}").to_lowercase()));
        match action {
            WhenDone::Wait => {
                log::info(
                    "every container has exited; waiting for a shutdown request (when_done = \"wait\")",
                );
                Request::None
            }
            WhenDone::Poweroff => Request::Shutdown(Action::Poweroff),
            WhenDone::Reboot => Request::Shutdown(Action::Reboot),
        }
    }

    /// Launches one container; false (after reporting) if it could not start.
    fn start_container(&mut self, c: &PlannedContainer, kind: Kind) -> bool {
        if !self.cgroups && limits::wants_cgroup_limits(c) {
            let msg = "resource limits need the cgroup2 hierarchy, which is not mounted";
            log::error(&format!("container {}: {msg}", c.name));
            log::emit(
                log::event("container.failed")
                    .with("name", &c.name)
                    .with("kind", kind.as_str())
                    .with("error", msg),
            );
            return false;
        }
        let (read, write) = match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
            Ok(p) => p,
            Err(e) => {
                log::error(&format!("container {}: log pipe: {e}", c.name));
                return false;
            }
        };
        // The child's end must block: a container writing faster than the console is slowed
        // down, not handed EAGAIN.
        let _ = nix::fcntl::fcntl(write.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
        let state = PathBuf::from(STATE_ROOT).join(&c.name);
        let premounted = c.userns.map(|_| state.clone());
        let result = storage::prepare(c)
            .and_then(|on_disk| {
                let root = userns_root::premount(c, &state, on_disk.writable_layer.as_deref())?;
                let stdin = self.devnull.as_ref().map(|f| f.as_raw_fd()).unwrap_or(write.as_raw_fd());
                launch_spec::container_spec(c, self.cgroups, [stdin, write.as_raw_fd()], root, on_disk)
            })
            .map(|mut spec| {
                if kind == Kind::Console {
                    // The serial console itself, as the shell's terminal.
                    spec.stdio = Stdio::Fds([0, 1, 2]);
                    spec.controlling_tty = true;
                }
                spec
            })
            .map_err(|e| berth_runtime::StepError::new("prepare", Errno::EINVAL, e))
            .and_then(|spec| {
                if c.net != NetMode::Bridge {
                    return launch_with(&spec, LaunchHooks::default());
                }
                let Some(bridge) = self.bridge.as_mut() else {
                    return Err(berth_runtime::StepError::new(
                        "network",
                        Errno::ENETDOWN,
                        "the bridge could not be set up at boot (see the error there)",
                    ));
                };
                let mut attach = |pid: Pid| bridge.attach(&c.name, pid.as_raw(), &c.ports).map(|_| ());
                launch_with(&spec, LaunchHooks { before_pivot: Some(&mut attach) })
            });
        drop(write);
        if result.is_err() {
            if let Some(state) = &premounted {
                userns_root::unmount_root(state);
            }
            if let Some(b) = self.bridge.as_mut() {
                b.detach(&c.name);
            }
        }
        match result {
            Ok(container) => {
                log::emit(
                    log::event("container.started")
                        .with("name", &c.name)
                        .with("kind", kind.as_str())
                        .with("pid", container.pid)
                        .with("image", &c.image_digest),
                );
                self.logs.push(LogPipe { name: c.name.clone(), fd: read, partial: Vec::new() });
                self.running.insert(
                    container.pid,
                    Running {
                        name: c.name.clone(),
                        kind,
                        started: Instant::now(),
                        kill_at: (kind == Kind::OnShutdown).then(|| Instant::now() + self.stop_timeout(c)),
                        stop_signalled: false,
                        container,
                        premounted,
                    },
                );
                true
            }
            Err(e) => {
                self.last_state.insert(c.name.clone(), "failed".to_string());
                log::error(&format!("container {} failed to start: {e}", c.name));
                log::emit(
                    log::event("container.failed")
                        .with("name", &c.name)
                        .with("kind", kind.as_str())
                        .with("error", e.to_string()),
                );
                false
            }
        }
    }

    /// Reads what the container pipes hold; a closed pipe is flushed and dropped.
    pub fn drain_logs(&mut self, only: Option<&str>) {
        let mut closed = Vec::new();
        let rings = &mut self.rings;
        let files = &mut self.files;
        let console = self.plan.log.console;
        for (index, pipe) in self.logs.iter_mut().enumerate() {
            if only.is_some_and(|n| n != pipe.name) {
                continue;
            }
            let mut buf = [0u8; 4096];
            loop {
                match nix::unistd::read(pipe.fd.as_raw_fd(), &mut buf) {
                    Ok(0) => {
                        closed.push(index);
                        break;
                    }
                    Ok(n) => {
                        pipe.partial.extend_from_slice(&buf[..n]);
                        while let Some(pos) = pipe.partial.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pipe.partial.drain(..=pos).collect();
                            let text =
                                line[..line.len() - 1].strip_suffix(b"\r").unwrap_or(&line[..line.len() - 1]);
                            deliver(console, rings, files, &pipe.name, text);
                        }
                        if pipe.partial.len() >= 4096 {
                            deliver(console, rings, files, &pipe.name, &pipe.partial);
                            pipe.partial.clear();
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
        }
        for index in closed.into_iter().rev() {
            let pipe = self.logs.remove(index);
            if !pipe.partial.is_empty() {
                deliver(self.plan.log.console, &mut self.rings, &mut self.files, &pipe.name, &pipe.partial);
            }
        }
    }

    /// Reaps every child that has exited (containers and adopted orphans).
    pub fn reap(&mut self) -> Request {
        let mut request = Request::None;
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
            if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                continue;
            }
            if let Some((name, _)) = self.checks.remove(&pid) {
                self.health_result(&name, matches!(status, WaitStatus::Exited(_, 0)));
                continue;
            }
            let Some(run) = self.running.remove(&pid) else {
                continue;
            }; // an orphan: reaped
            let r = self.exited(run, status);
            if r != Request::None {
                request = r;
            }
        }
        self.stale_cgroups.retain(|c| c.cleanup().is_err());
        request
    }

    fn exited(&mut self, run: Running, status: WaitStatus) -> Request {
        let info = run.container.exit_info(status);
        if let Some(b) = self.bridge.as_mut() {
            b.detach(&run.name);
        }
        // Output written before the exit comes before the exit event.
        self.drain_logs(Some(&run.name));
        let mut ev = log::event("container.exited").with("name", &run.name);
        if let Some(code) = info.code {
            ev = ev.with("code", code);
        }
        if let Some(sig) = info.signal {
            ev = ev.with("signal", sig.as_str().trim_start_matches("SIG"));
        }
        if info.oom_killed {
            ev = ev.with("oom_killed", "true");
        }
        log::emit(ev);
        let how = match (info.code, info.signal) {
            (Some(code), _) => format!("exited({code})"),
            (_, Some(sig)) => format!("killed({})", sig.as_str().trim_start_matches("SIG")),
            _ => "exited".to_string(),
        };
        self.last_state.insert(run.name.clone(), if info.oom_killed { format!("{how},oom") } else { how });
        if info.oom_killed {
            log::warn(&format!(
                "container {} was killed by the kernel's OOM killer: it exceeded its memory limit",
                run.name
            ));
        }
        if let Some(state) = &run.premounted {
            userns_root::unmount_root(state);
        }
        if run.container.cleanup().is_err() {
            self.stale_cgroups.push(run.container);
        }
        if run.kind == Kind::Onboot && info.success() {
            self.onboot_ok.insert(run.name.clone());
        }
        self.health.remove(&run.name);
        if run.kind == Kind::Console && self.phase == Phase::Running {
            // Like a getty: a new shell after the last one ended.
            self.console_respawn = Some(Instant::now() + Duration::from_secs(1));
        }
        if self.restart_after_stop.remove(&run.name) && self.phase == Phase::Running {
            self.stopped_by_hand.remove(&run.name);
            if let Some(c) = self.plan.service.iter().find(|c| c.name == run.name).cloned() {
                self.start_service(&c);
            }
        } else if run.kind == Kind::Service
            && self.phase == Phase::Running
            && !self.stopped_by_hand.contains(&run.name)
        {
            if let Some((delay, count)) = self.restart_delay(&run.name, run.started.elapsed(), &info) {
                log::emit(
                    log::event("container.restarting")
                        .with("name", &run.name)
                        .with("in_ms", delay.as_millis())
                        .with("restarts", count),
                );
                self.pending_restarts.push((Instant::now() + delay, run.name.clone()));
            }
        }
        match self.phase {
            Phase::Onboot(i) if self.plan.onboot.get(i).is_some_and(|c| c.name == run.name) => {
                self.phase = Phase::Onboot(i + 1);
                self.advance()
            }
            Phase::Running => self.check_done(),
            Phase::Stopping if self.running.is_empty() => {
                self.phase = Phase::OnShutdown(0);
                self.run_onshutdown();
                Request::None
            }
            Phase::Stopping => {
                // Its dependencies may stop now.
                self.signal_stoppable();
                Request::None
            }
            Phase::OnShutdown(i) if self.plan.onshutdown.get(i).is_some_and(|c| c.name == run.name) => {
                self.phase = Phase::OnShutdown(i + 1);
                self.run_onshutdown();
                Request::None
            }
            _ => Request::None,
        }
    }

    /// Starts the next onshutdown container; after the last one, the machine is stopped.
    fn run_onshutdown(&mut self) {
        while let Phase::OnShutdown(i) = self.phase {
            let Some(c) = self.plan.onshutdown.get(i).cloned() else {
                self.phase = Phase::Stopped;
                return;
            };
            if self.start_container(&c, Kind::OnShutdown) {
                return;
            }
            self.phase = Phase::OnShutdown(i + 1);
        }
    }

    /// Begins stopping, in reverse dependency order: a container gets its stop signal (and its
    /// SIGKILL deadline) once nothing that depends on it is running any more; independent ones
    /// stop together. Once all have ended, the onshutdown containers run.
    pub fn begin_stop(&mut self) {
        self.pending_restarts.clear();
        self.console_respawn = None;
        self.waiting.clear();
        self.health.clear();
        self.phase = Phase::Stopping;
        self.signal_stoppable();
        if self.running.is_empty() {
            self.phase = Phase::OnShutdown(0);
            self.run_onshutdown();
        }
    }

    /// Sends the stop signal to every running container not signalled yet whose dependents have
    /// all ended.
    fn signal_stoppable(&mut self) {
        let now = Instant::now();
        let running_names: Vec<String> = self.running.values().map(|r| r.name.clone()).collect();
        let has_running_dependent = |name: &str| {
            self.plan.service.iter().any(|c| {
                c.name != name && c.depends_on.iter().any(|d| d == name) && running_names.contains(&c.name)
            })
        };
        let pids: Vec<Pid> = self
            .running
            .iter()
            .rev()
            .filter(|(_, r)| !r.stop_signalled && !has_running_dependent(&r.name))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            let (signal, timeout) = match self.running.get(&pid).and_then(|r| self.planned(&r.name)) {
                Some(c) => (
                    c.stop_signal.and_then(|n| Signal::try_from(n).ok()).unwrap_or(Signal::SIGTERM),
                    self.stop_timeout(c),
                ),
                None => (Signal::SIGTERM, self.plan.system.stop_timeout),
            };
            if let Some(run) = self.running.get_mut(&pid) {
                log::emit(
                    log::event("container.stopping")
                        .with("name", &run.name)
                        .with("signal", signal.as_str().trim_start_matches("SIG")),
                );
                run.kill_at = Some(now + timeout);
                run.stop_signalled = true;
                let _ = kill(pid, signal);
            }
        }
    }

    /// SIGKILL for every container whose deadline has passed.
    pub fn deadline_passed(&mut self) {
        let now = Instant::now();
        for (pid, run) in self.running.iter_mut() {
            if run.kill_at.is_some_and(|at| at <= now) {
                log::emit(log::event("container.stopping").with("name", &run.name).with("signal", "KILL"));
                let _ = kill(*pid, Signal::SIGKILL);
                run.kill_at = None;
            }
        }
    }

    /// A second shutdown request while stopping: do not wait for the timeouts.
    pub fn escalate(&mut self) {
        let now = Instant::now();
        for run in self.running.values_mut() {
            run.kill_at = Some(now);
        }
        self.deadline_passed();
    }
}
