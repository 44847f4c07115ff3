//! The supervisor's decisions, as a pure state machine: [`Machine::handle`] takes one typed
//! [`Input`] and the time, changes the [`Unit`]s and returns the [`Action`]s PID 1 carries out
//! (launch, signal, run a healthcheck, emit an event, reply, power off). It performs no system
//! call and reads no clock, so every rule below is a unit test.
//!
//! Rules:
//! - Boot: the onboot containers run one at a time, in file order, each to its end (a failed
//!   launch moves on to the next); then every service waits for its `depends_on` and the
//!   console shell starts.
//! - A service starts once each dependency is ready: an onboot container that exited 0, a
//!   service that started (healthy, when it has a healthcheck), the network. A dependency that
//!   can never be ready (an onboot container that failed, a service that ended before it was
//!   ready and is not restarted) fails its dependents, and theirs in turn.
//! - Restart: Docker's policies with the [`Backoff`] delays; a service stopped by hand is not
//!   restarted; `restart` starts it again as soon as it has ended.
//! - Health: a check every `interval` (the first after one interval); a check past its
//!   `timeout` is killed and fails; failures within `start_period` do not count; `retries`
//!   failures in a row make it unhealthy; the first success makes it healthy (and ready).
//! - Shutdown: a container gets its stop signal (and its SIGKILL deadline) once no service that
//!   depends on it runs any more, so containers stop in reverse dependency order; a second
//!   request kills what is left at once. Then the onshutdown containers run one at a time,
//!   each bounded by its stop timeout; then the machine is stopped.
//! - Done: when nothing but the console runs, no restart is pending and nothing waits, the
//!   `when_done` action is taken.
//!
//! Invariant: every [`Action::Launch`] is answered by [`Input::Started`] or
//! [`Input::LaunchFailed`] before any other input (the executor launches synchronously), and
//! every [`Action::RunCheck`] by [`Input::CheckStarted`] or [`Input::CheckFailed`].

use std::time::{Duration, Instant};

use berth_events::Event;
use berth_runtime::ExitInfo;
use berth_schema::config::{WhenDone, NETWORK_UNIT};
use berth_schema::plan::Plan;
use berth_schema::time_sync::TIME_UNIT;

use super::unit::{signal_name, Dependency, Ending, Health, Kind, Run, SignalNumber, State, Unit, UnitId};
use crate::pid1::control::protocol::{Reply, Request};
use crate::pid1::log::Follow;
use crate::pid1::shutdown::PowerAction;

/// How long after the console shell ends a new one starts (like a getty).
const CONSOLE_RESPAWN: Duration = Duration::from_secs(1);

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin: the onboot containers, then the services.
    Boot,
    /// The pseudo-unit `network` is ready.
    NetworkReady,
    /// The pseudo-unit `time` is ready: the clock was set from NTP.
    TimeSynced,
    /// A launch asked for succeeded: the container's process is `pid`.
    Started {
        /// The unit launched.
        unit: UnitId,
        /// Its process.
        pid: i32,
    },
    /// A launch asked for failed.
    LaunchFailed {
        /// The unit.
        unit: UnitId,
        /// Why, for the event and the console.
        error: String,
    },
    /// A unit's process ended.
    Exited {
        /// The unit.
        unit: UnitId,
        /// How.
        exit: ExitInfo,
    },
    /// A healthcheck asked for runs.
    CheckStarted(UnitId),
    /// A healthcheck asked for could not start.
    CheckFailed {
        /// The unit checked.
        unit: UnitId,
        /// Why.
        error: String,
    },
    /// A healthcheck ended; `ok` when it exited 0.
    CheckDone {
        /// The unit checked.
        unit: UnitId,
        /// Its verdict.
        ok: bool,
    },
    /// Time passed: whatever is due now happens.
    Tick,
    /// A control request about containers (`ps`, `logs`, `start`, `stop`, `restart`).
    Control(Request),
    /// Stop everything: the machine is shutting down.
    Shutdown,
    /// A second shutdown request: SIGKILL what is left now.
    Escalate,
}

/// What PID 1 must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Launch the unit (answer with `Started` or `LaunchFailed`).
    Launch(UnitId),
    /// Send the unit's process a signal.
    Signal(UnitId, SignalNumber),
    /// Run the unit's healthcheck (answer with `CheckStarted` or `CheckFailed`).
    RunCheck(UnitId),
    /// Kill the unit's running healthcheck.
    KillCheck(UnitId),
    /// Print an event (stamped when printed).
    Emit(Event),
    /// A log line at a syslog level (3 error, 4 warning, 6 info).
    Log(u8, String),
    /// Answer the control request.
    Reply(Reply),
    /// Shut the machine down: every container has ended and `when_done` says so.
    Shutdown(PowerAction),
}

/// Where the machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running onboot container N (or about to).
    Onboot(usize),
    /// The services run.
    Running,
    /// Shutting down: containers get their stop signal as their dependents end.
    Stopping,
    /// Running onshutdown container N (or about to).
    OnShutdown(usize),
    /// Everything has run: the machine can go down.
    Stopped,
}

/// Whether the containers are what a new system slot must show before it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotHealth {
    /// Every onboot container ran to success, every service runs, and every healthcheck passed.
    Healthy,
    /// Not yet: what is still missing.
    Pending(String),
    /// Never will: what failed for good.
    Failed(String),
}

/// One row of `berthctl ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsRow {
    /// The container's name.
    pub name: String,
    /// Its kind's name.
    pub kind: &'static str,
    /// Its state (`running`, `exited(0)`, `stopped/exited(0)` …).
    pub state: String,
    /// Its process, while it runs.
    pub pid: Option<i32>,
    /// Restarts since its last stable run.
    pub restarts: u32,
    /// How long it has been running.
    pub uptime: Option<Duration>,
}

/// The supervisor's state: every unit, the phase, the network's and the clock's readiness.
#[derive(Debug)]
pub struct Machine {
    units: Vec<Unit>,
    onboot: Vec<UnitId>,
    onshutdown: Vec<UnitId>,
    console: Option<UnitId>,
    phase: Phase,
    network_ready: bool,
    time_synced: bool,
    console_respawn: Option<Instant>,
    when_done: WhenDone,
    /// A `start`/`restart` request whose reply waits for its launch's result.
    reply_on_launch: Option<UnitId>,
    out: Vec<Action>,
}

impl Machine {
    /// The machine for `plan`'s containers.
    pub fn new(plan: &Plan) -> Machine {
        let timeout = plan.system.stop_timeout;
        let lists = [
            (Kind::Onboot, plan.onboot.as_slice()),
            (Kind::Service, plan.service.as_slice()),
            (Kind::OnShutdown, plan.onshutdown.as_slice()),
            (Kind::Console, plan.console.as_slice()),
        ];
        let planned: Vec<_> =
            lists.iter().flat_map(|(kind, list)| list.iter().map(move |c| (*kind, c))).collect();
        let id_of = |name: &str| planned.iter().position(|(_, c)| c.name == name).map(UnitId);
        let units: Vec<Unit> = planned
            .iter()
            .map(|(kind, c)| {
                // Validation made every name a container or `network`.
                let deps = c
                    .depends_on
                    .iter()
                    .filter_map(|d| match d.as_str() {
                        NETWORK_UNIT => Some(Dependency::Network),
                        TIME_UNIT => Some(Dependency::Time),
                        other => id_of(other).map(Dependency::Unit),
                    })
                    .collect();
                Unit::new(c, *kind, deps, timeout)
            })
            .collect();
        let ids_of = |kind: Kind| -> Vec<UnitId> {
            units.iter().enumerate().filter(|(_, u)| u.kind == kind).map(|(i, _)| UnitId(i)).collect()
        };
        Machine {
            onboot: ids_of(Kind::Onboot),
            onshutdown: ids_of(Kind::OnShutdown),
            console: ids_of(Kind::Console).first().copied(),
            units,
            phase: Phase::Onboot(0),
            network_ready: false,
            time_synced: false,
            console_respawn: None,
            when_done: plan.system.when_done,
            reply_on_launch: None,
            out: Vec::new(),
        }
    }

    /// The unit `id`.
    pub fn unit(&self, id: UnitId) -> &Unit {
        &self.units[id.0]
    }

    /// Whether the machine is healthy enough to commit the slot it booted: onboot containers
    /// all ran to success, then every service (but those stopped by hand) runs — and passed
    /// its healthcheck when it has one.
    pub fn slot_health(&self) -> SlotHealth {
        for u in &self.units {
            let dead = u.is_dead_end();
            let ended = u.last.map(|l| l.to_string()).unwrap_or_else(|| "not started".into());
            match u.kind {
                Kind::Onboot if dead => {
                    return SlotHealth::Failed(format!("onboot container {} {ended}", u.name))
                }
                Kind::Service if dead => return SlotHealth::Failed(format!("service {} {ended}", u.name)),
                _ => {}
            }
        }
        if let Phase::Onboot(_) = self.phase {
            return SlotHealth::Pending("the onboot containers are running".into());
        }
        let mut missing = Vec::new();
        for u in self.units.iter().filter(|u| u.kind == Kind::Service && !u.stopped_by_hand) {
            let running = matches!(u.state, State::Running(_));
            let healthy = match (&u.healthcheck, &u.health) {
                (None, _) => running,
                (Some(_), Some(h)) => running && h.healthy == Some(true),
                (Some(_), None) => false,
            };
            if !healthy {
                let why = match (&u.healthcheck, u.health.and_then(|h| h.healthy)) {
                    _ if !running => u.state_text(),
                    (Some(_), Some(false)) => "unhealthy".into(),
                    _ => "not healthy yet".into(),
                };
                missing.push(format!("{} ({why})", u.name));
            }
        }
        if missing.is_empty() {
            SlotHealth::Healthy
        } else {
            SlotHealth::Pending(format!("services not ready: {}", missing.join(", ")))
        }
    }

    /// The unit named `name`.
    pub fn find(&self, name: &str) -> Option<UnitId> {
        self.units.iter().position(|u| u.name == name).map(UnitId)
    }

    /// Keeps a line of the unit's output for `berthctl logs`.
    pub fn remember(&mut self, id: UnitId, line: &[u8]) {
        self.units[id.0].ring.push(line);
    }

    /// Where the machine is.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a shutdown has run everything to its end.
    pub fn stopped(&self) -> bool {
        self.phase == Phase::Stopped && !self.units.iter().any(Unit::is_active)
    }

    /// When [`Input::Tick`] is next needed: a SIGKILL deadline, a healthcheck, a restart, the
    /// console shell.
    pub fn deadline(&self) -> Option<Instant> {
        let per_unit = self.units.iter().flat_map(|u| {
            let kill = u.run().and_then(|r| r.kill_at);
            let restart = match u.state {
                State::RestartPending(at) => Some(at),
                _ => None,
            };
            let health = u.health.iter().flat_map(|h| [h.next_at, h.check_deadline]).flatten();
            [kill, restart].into_iter().flatten().chain(health)
        });
        per_unit.chain(self.console_respawn).min()
    }

    /// `berthctl ps`'s rows: onboot, service and onshutdown containers in file order.
    pub fn ps(&self, now: Instant) -> Vec<PsRow> {
        self.units
            .iter()
            .filter(|u| u.kind != Kind::Console)
            .map(|u| PsRow {
                name: u.name.clone(),
                kind: u.kind.as_str(),
                state: u.state_text(),
                pid: u.run().map(|r| r.pid),
                restarts: u.backoff.count,
                uptime: u.run().map(|r| now.saturating_duration_since(r.since)),
            })
            .collect()
    }

    /// Takes one input at `now`; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::Boot => self.advance(),
            Input::NetworkReady => {
                if !self.network_ready {
                    self.network_ready = true;
                    self.start_ready();
                }
            }
            Input::TimeSynced => {
                if !self.time_synced {
                    self.time_synced = true;
                    self.start_ready();
                }
            }
            Input::Started { unit, pid } => self.started(unit, pid, now),
            Input::LaunchFailed { unit, error } => self.launch_failed(unit, &error, now),
            Input::Exited { unit, exit } => self.exited(unit, exit, now),
            Input::CheckStarted(unit) => {
                let timeout = self.unit(unit).healthcheck.as_ref().map(|hc| hc.timeout);
                if let (Some(h), Some(timeout)) = (self.units[unit.0].health.as_mut(), timeout) {
                    h.check_deadline = Some(now + timeout);
                }
            }
            Input::CheckFailed { unit, error } => {
                self.log(4, format!("healthcheck of {} could not start: {error}", self.unit(unit).name));
                self.health_result(unit, false, now);
            }
            Input::CheckDone { unit, ok } => self.health_result(unit, ok, now),
            Input::Tick => self.tick(now),
            Input::Control(request) => self.control(request, now),
            Input::Shutdown => self.begin_stop(now),
            Input::Escalate => {
                for u in &mut self.units {
                    if let Some(run) = u.run_mut() {
                        run.kill_at = Some(now);
                        run.stop_signalled = true;
                    }
                }
                self.kill_overdue(now);
            }
        }
        std::mem::take(&mut self.out)
    }

    fn emit(&mut self, event: Event) {
        self.out.push(Action::Emit(event));
    }

    fn log(&mut self, level: u8, message: String) {
        self.out.push(Action::Log(level, message));
    }

    fn event(&self, name: &str, unit: UnitId) -> Event {
        Event::new(0, name).with("name", &self.unit(unit).name)
    }

    /// Asks for the unit's launch.
    fn launch(&mut self, unit: UnitId) {
        self.units[unit.0].state = State::Starting;
        self.out.push(Action::Launch(unit));
    }

    /// Boot: the next onboot container, or — after the last — the services and the console.
    fn advance(&mut self) {
        let Phase::Onboot(i) = self.phase else { return };
        if let Some(&unit) = self.onboot.get(i) {
            self.launch(unit);
            return;
        }
        self.phase = Phase::Running;
        self.emit(Event::new(0, "boot.stage").with("stage", "services"));
        for u in self.units.iter_mut().filter(|u| u.kind == Kind::Service) {
            u.state = State::Waiting;
        }
        self.start_ready();
        if let Some(console) = self.console {
            self.launch(console);
        }
        self.check_done();
    }

    /// Starts every waiting service whose dependencies are ready; fails those with a
    /// dependency that never will be, and so on down the chain.
    fn start_ready(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        loop {
            let mut progressed = false;
            for i in 0..self.units.len() {
                if self.units[i].state != State::Waiting {
                    continue;
                }
                let dead = self.units[i].depends_on.iter().find_map(|d| match d {
                    Dependency::Unit(dep) if self.unit(*dep).is_dead_end() => Some(*dep),
                    _ => None,
                });
                if let Some(dep) = dead {
                    self.dependency_failed(UnitId(i), dep);
                    progressed = true;
                } else if self.units[i].depends_on.iter().all(|d| match d {
                    Dependency::Unit(dep) => self.unit(*dep).ready,
                    Dependency::Network => self.network_ready,
                    Dependency::Time => self.time_synced,
                }) {
                    self.launch(UnitId(i));
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn dependency_failed(&mut self, unit: UnitId, dep: UnitId) {
        let (name, dep_name) = (self.unit(unit).name.clone(), &self.unit(dep).name);
        let msg = match self.unit(dep).kind {
            Kind::Onboot => format!("its dependency {dep_name} did not complete successfully"),
            _ => format!("its dependency {dep_name} ended without becoming ready"),
        };
        let u = &mut self.units[unit.0];
        u.state = State::Idle;
        u.last = Some(Ending::Failed);
        self.log(3, format!("container {name} not started: {msg}"));
        let ev = self.event("container.failed", unit).with("kind", "service").with("error", msg);
        self.emit(ev);
    }

    fn started(&mut self, unit: UnitId, pid: i32, now: Instant) {
        let u = &mut self.units[unit.0];
        let kill_at = (u.kind == Kind::OnShutdown).then(|| now + u.stop.timeout);
        u.state = State::Running(Run { pid, since: now, kill_at, stop_signalled: false });
        let (kind, digest) = (u.kind, u.image_digest.clone());
        let ev = self
            .event("container.started", unit)
            .with("kind", kind.as_str())
            .with("pid", pid)
            .with("image", digest);
        self.emit(ev);
        if self.reply_on_launch == Some(unit) {
            self.reply_on_launch = None;
            let name = &self.unit(unit).name;
            self.out.push(Action::Reply(Reply::Text(format!("started {name}\n"))));
        }
        if kind != Kind::Service {
            return;
        }
        let u = &mut self.units[unit.0];
        match &u.healthcheck {
            Some(hc) => {
                u.health = Some(Health {
                    started: now,
                    next_at: Some(now + hc.interval),
                    check_deadline: None,
                    failures: 0,
                    healthy: None,
                });
            }
            None => {
                u.ready = true;
                self.start_ready();
            }
        }
    }

    fn launch_failed(&mut self, unit: UnitId, error: &str, now: Instant) {
        let u = &mut self.units[unit.0];
        u.state = State::Idle;
        u.last = Some(Ending::Failed);
        let (name, kind) = (u.name.clone(), u.kind);
        self.log(3, format!("container {name} failed to start: {error}"));
        let ev = self.event("container.failed", unit).with("kind", kind.as_str()).with("error", error);
        self.emit(ev);
        if self.reply_on_launch == Some(unit) {
            self.reply_on_launch = None;
            self.out.push(Action::Reply(Reply::Error(format!("{name} failed to start (see the console)"))));
        }
        self.after_end(unit, now);
    }

    fn exited(&mut self, unit: UnitId, exit: ExitInfo, now: Instant) {
        let Some(run) = self.unit(unit).run().copied() else { return };
        let mut ev = self.event("container.exited", unit);
        if let Some(code) = exit.code {
            ev = ev.with("code", code);
        }
        if let Some(sig) = exit.signal {
            ev = ev.with("signal", signal_name(sig));
        }
        if exit.oom_killed {
            ev = ev.with("oom_killed", "true");
        }
        self.emit(ev);
        let phase = self.phase;
        let u = &mut self.units[unit.0];
        u.state = State::Idle;
        u.last = Some(Ending::Exited(exit));
        u.health = None;
        if u.kind == Kind::Onboot && exit.success() {
            u.ready = true;
        }
        let name = u.name.clone();
        if exit.oom_killed {
            self.log(
                4,
                format!(
                    "container {name} was killed by the kernel's OOM killer: it exceeded its memory limit"
                ),
            );
        }
        if self.units[unit.0].kind == Kind::Console && phase == Phase::Running {
            self.console_respawn = Some(now + CONSOLE_RESPAWN);
        }
        let u = &mut self.units[unit.0];
        let restartable = phase == Phase::Running && u.kind == Kind::Service;
        if restartable && u.restart_after_stop {
            u.restart_after_stop = false;
            u.stopped_by_hand = false;
            self.launch(unit);
        } else if restartable && !u.stopped_by_hand {
            if let Some((delay, count)) =
                u.backoff.next(u.restart, now.saturating_duration_since(run.since), &exit)
            {
                u.state = State::RestartPending(now + delay);
                let ev = self
                    .event("container.restarting", unit)
                    .with("in_ms", delay.as_millis())
                    .with("restarts", count);
                self.emit(ev);
            }
        }
        self.after_end(unit, now);
    }

    /// What a unit's end (or failed launch) moves on: the boot, the services waiting for it,
    /// the shutdown.
    fn after_end(&mut self, unit: UnitId, now: Instant) {
        match self.phase {
            Phase::Onboot(i) if self.onboot.get(i) == Some(&unit) => {
                self.phase = Phase::Onboot(i + 1);
                self.advance();
            }
            Phase::Running => {
                self.start_ready();
                self.check_done();
            }
            Phase::Stopping if !self.units.iter().any(Unit::is_active) => {
                self.phase = Phase::OnShutdown(0);
                self.run_onshutdown();
            }
            Phase::Stopping => self.signal_stoppable(now),
            Phase::OnShutdown(i) if self.onshutdown.get(i) == Some(&unit) => {
                self.phase = Phase::OnShutdown(i + 1);
                self.run_onshutdown();
            }
            _ => {}
        }
    }

    /// Starts the next onshutdown container; after the last one, the machine is stopped.
    fn run_onshutdown(&mut self) {
        let Phase::OnShutdown(i) = self.phase else { return };
        match self.onshutdown.get(i) {
            Some(&unit) => self.launch(unit),
            None => self.phase = Phase::Stopped,
        }
    }

    /// The `when_done` action, once nothing but the console runs and nothing is pending.
    fn check_done(&mut self) {
        let busy = self.units.iter().any(|u| {
            u.kind != Kind::Console
                && (u.is_active() || matches!(u.state, State::Waiting | State::RestartPending(_)))
        });
        if self.phase != Phase::Running || busy {
            return;
        }
        let action = self.when_done;
        self.emit(Event::new(0, "system.done").with("when_done", format!("{action:?}").to_lowercase()));
        match action {
            WhenDone::Wait => self.log(
                6,
                "every container has exited; waiting for a shutdown request (when_done = \"wait\")".into(),
            ),
            WhenDone::Poweroff => self.out.push(Action::Shutdown(PowerAction::Poweroff)),
            WhenDone::Reboot => self.out.push(Action::Shutdown(PowerAction::Reboot)),
        }
    }

    fn tick(&mut self, now: Instant) {
        self.kill_overdue(now);
        for i in 0..self.units.len() {
            let unit = UnitId(i);
            let running = self.units[i].run().is_some();
            let Some(h) = self.units[i].health.as_mut() else { continue };
            if h.check_deadline.is_some_and(|at| at <= now) {
                h.check_deadline = None;
                self.log(4, format!("healthcheck of {} timed out", self.unit(unit).name));
                self.out.push(Action::KillCheck(unit));
            } else if h.next_at.is_some_and(|at| at <= now) && running {
                h.next_at = None;
                self.out.push(Action::RunCheck(unit));
            }
        }
        if self.console_respawn.is_some_and(|at| at <= now) {
            self.console_respawn = None;
            if let (Phase::Running, Some(console)) = (self.phase, self.console) {
                self.launch(console);
            }
        }
        let due: Vec<UnitId> = (0..self.units.len())
            .map(UnitId)
            .filter(|u| matches!(self.unit(*u).state, State::RestartPending(at) if at <= now))
            .collect();
        for &unit in &due {
            self.launch(unit);
        }
        if !due.is_empty() {
            self.check_done();
        }
    }

    /// SIGKILL for every container whose deadline has passed.
    fn kill_overdue(&mut self, now: Instant) {
        for i in 0..self.units.len() {
            let Some(run) = self.units[i].run_mut() else { continue };
            if run.kill_at.is_some_and(|at| at <= now) {
                run.kill_at = None;
                let ev = self.event("container.stopping", UnitId(i)).with("signal", "KILL");
                self.emit(ev);
                self.out.push(Action::Signal(UnitId(i), SignalNumber::KILL));
            }
        }
    }

    /// Records a healthcheck verdict; the first success makes the service healthy and ready.
    fn health_result(&mut self, unit: UnitId, ok: bool, now: Instant) {
        let u = &mut self.units[unit.0];
        let (Some(hc), Some(h)) = (u.healthcheck.as_ref(), u.health.as_mut()) else { return };
        h.next_at = Some(now + hc.interval);
        h.check_deadline = None;
        if ok {
            h.failures = 0;
            if h.healthy != Some(true) {
                h.healthy = Some(true);
                u.ready = true;
                let ev = self.event("container.healthy", unit);
                self.emit(ev);
                self.start_ready();
            }
            return;
        }
        if now.saturating_duration_since(h.started) < hc.start_period {
            return;
        }
        h.failures += 1;
        if h.failures >= hc.retries && h.healthy != Some(false) {
            h.healthy = Some(false);
            let failures = h.failures;
            let ev = self.event("container.unhealthy", unit).with("failures", failures);
            self.emit(ev);
        }
    }

    /// Begins stopping, in reverse dependency order; with nothing running, the onshutdown
    /// containers run at once.
    fn begin_stop(&mut self, now: Instant) {
        self.console_respawn = None;
        for u in &mut self.units {
            u.health = None;
            if matches!(u.state, State::Waiting | State::RestartPending(_)) {
                u.state = State::Idle;
            }
        }
        self.phase = Phase::Stopping;
        self.signal_stoppable(now);
        if !self.units.iter().any(Unit::is_active) {
            self.phase = Phase::OnShutdown(0);
            self.run_onshutdown();
        }
    }

    /// Sends the stop signal to every running container not signalled yet whose dependents
    /// have all ended; later containers in the file first.
    fn signal_stoppable(&mut self, now: Instant) {
        for i in (0..self.units.len()).rev() {
            let unit = UnitId(i);
            let pending = self.unit(unit).run().is_some_and(|r| !r.stop_signalled);
            let dependent_runs = self.units.iter().any(|u| {
                u.kind == Kind::Service && u.is_active() && u.depends_on.contains(&Dependency::Unit(unit))
            });
            if pending && !dependent_runs {
                self.stop_unit(unit, now);
                if let Some(run) = self.units[i].run_mut() {
                    run.stop_signalled = true;
                }
            }
        }
    }

    /// Sends the unit its stop signal and sets its SIGKILL deadline.
    fn stop_unit(&mut self, unit: UnitId, now: Instant) {
        let stop = self.unit(unit).stop;
        if let Some(run) = self.units[unit.0].run_mut() {
            run.kill_at = Some(now + stop.timeout);
        }
        let ev = self.event("container.stopping", unit).with("signal", stop.signal.name());
        self.emit(ev);
        self.out.push(Action::Signal(unit, stop.signal));
    }

    /// Answers a control request about containers.
    fn control(&mut self, request: Request, now: Instant) {
        let reply = match request {
            Request::Logs { name, tail } => match self.find(&name) {
                Some(unit) => Reply::Text(self.unit(unit).ring.tail(tail)),
                None => Reply::Error(format!("no container named {name}")),
            },
            Request::Follow(Follow::Logs(name)) => match self.find(&name) {
                Some(unit) => {
                    Reply::Follow { past: self.unit(unit).ring.tail(None), what: Follow::Logs(name) }
                }
                None => Reply::Error(format!("no container named {name}")),
            },
            Request::Stop(name) => match self.find(&name) {
                Some(unit) => self.stop_by_hand(unit, now),
                None => Reply::Error(format!("{name} is not running")),
            },
            Request::Restart(name) => match self.find(&name) {
                Some(unit) if matches!(self.unit(unit).state, State::RestartPending(_)) => {
                    self.launch(unit);
                    Reply::Text(format!("restarting {name}\n"))
                }
                Some(unit) => match self.stop_by_hand(unit, now) {
                    Reply::Text(_) => {
                        self.units[unit.0].restart_after_stop = true;
                        Reply::Text(format!("restarting {name}\n"))
                    }
                    error => error,
                },
                None => Reply::Error(format!("{name} is not running")),
            },
            Request::Start(name) => match self.find(&name) {
                Some(unit) if self.unit(unit).is_active() => {
                    Reply::Error(format!("{name} is running already"))
                }
                _ if self.phase != Phase::Running => {
                    Reply::Error("containers start by hand only while the machine runs".into())
                }
                Some(unit) if self.unit(unit).kind == Kind::Service => {
                    self.units[unit.0].stopped_by_hand = false;
                    self.reply_on_launch = Some(unit);
                    // The reply comes with the launch's result.
                    self.launch(unit);
                    return;
                }
                _ => Reply::Error(format!("no service named {name}")),
            },
            other => Reply::Error(format!("`{other}` is not a request about containers")),
        };
        self.out.push(Action::Reply(reply));
    }

    /// `berthctl stop`: the stop signal now, SIGKILL after the timeout, no restart after it; a
    /// pending restart is cancelled.
    fn stop_by_hand(&mut self, unit: UnitId, now: Instant) -> Reply {
        let name = self.unit(unit).name.clone();
        match self.unit(unit).state {
            State::Running(_) => self.stop_unit(unit, now),
            State::RestartPending(_) => self.units[unit.0].state = State::Idle,
            _ => return Reply::Error(format!("{name} is not running")),
        }
        self.units[unit.0].stopped_by_hand = true;
        self.check_done();
        Reply::Text(format!("stopping {name}\n"))
    }
}

/// `berthctl ps`'s table; `memory` gives a running container's `memory.current` in bytes.
pub fn render_ps(rows: &[PsRow], memory: impl Fn(&str) -> Option<u64>) -> String {
    let line = |cols: [&str; 7]| {
        let [name, kind, state, pid, restarts, uptime, mem] = cols;
        format!("{name:<16} {kind:<10} {state:<14} {pid:>6} {restarts:>8} {uptime:>9} {mem:>10}\n")
    };
    let mut out = line(["NAME", "KIND", "STATE", "PID", "RESTARTS", "UPTIME", "MEMORY"]);
    for r in rows {
        let pid = r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let uptime = r.uptime.map(|d| format!("{}s", d.as_secs())).unwrap_or_else(|| "-".into());
        let mem = r
            .pid
            .and_then(|_| memory(&r.name))
            .map(|b| format!("{:.1}M", b as f64 / (1u64 << 20) as f64))
            .unwrap_or_else(|| "-".into());
        out.push_str(&line([&r.name, r.kind, &r.state, &pid, &r.restarts.to_string(), &uptime, &mem]));
    }
    out
}
