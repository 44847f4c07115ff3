//! Runs the plan's containers. The decisions — what starts when, restarts, health, stop order —
//! are [`machine`]'s, a pure state machine over [`unit::Unit`]s; this module only carries its
//! [`Action`]s out (launch, signal, healthcheck processes, events, log lines) and turns what the
//! system reports (exits, launch results, output) into its [`Input`]s. It also reaps every
//! child, adopted orphans too, and forwards containers' output.

pub mod machine;
#[cfg(test)]
mod tests;
pub mod unit;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use berth_runtime::{launch, launch_with, Container, LaunchHooks, Stdio};
use berth_schema::config::NetMode;
use berth_schema::plan::{Plan, PlannedContainer};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::pid1::bridge::Bridge;
use crate::pid1::control::protocol::{Reply, Request};
use crate::pid1::event_source::{EventSource, Pid1Event};
pub use crate::pid1::launch_spec::CGROUP_PARENT;
use crate::pid1::launch_spec::STATE_ROOT;
use crate::pid1::log_files::LogFiles;
use crate::pid1::shutdown::PowerAction;
use crate::pid1::{launch_spec, limits, log, storage, userns_root};
use machine::{Action, Input, Machine};
use unit::{Kind, UnitId};

/// The longest partial line kept before it is delivered as a line of its own.
const MAX_LINE: usize = 4096;
/// Reads of [`MAX_READ`] given to the output of a container that just ended.
const EXIT_DRAIN_READS: usize = 16;

/// A running container's process and what its end must undo.
struct Handle {
    container: Container,
    /// The state dir whose root PID 1 mounted (user-namespaced containers), to unmount at exit.
    premounted: Option<PathBuf>,
}

/// What a child PID 1 reaps is.
#[derive(Debug, Clone, Copy)]
enum Child {
    /// A unit's container.
    Container(UnitId),
    /// A unit's healthcheck.
    Check(UnitId),
}

/// The read end of a container's stdout/stderr pipe and the partial line read so far.
struct LogPipe {
    unit: UnitId,
    fd: OwnedFd,
    partial: Vec<u8>,
}

/// The container supervisor: the machine, and the processes, pipes and files behind it.
pub struct Supervisor {
    machine: Machine,
    /// The planned containers, indexed like the machine's units.
    planned: Vec<PlannedContainer>,
    handles: BTreeMap<UnitId, Handle>,
    children: BTreeMap<Pid, Child>,
    checks: BTreeMap<UnitId, Pid>,
    logs: Vec<LogPipe>,
    /// Containers' output in rotated files.
    files: LogFiles,
    /// Whether containers' output also goes to the console.
    console_output: bool,
    /// Cgroups whose removal was busy; retried after each reap.
    stale_cgroups: Vec<Container>,
    cgroups: bool,
    devnull: Option<OwnedFd>,
    /// The bridge of `net = "bridge"` containers, when any exists and could be set up.
    bridge: Option<Bridge>,
    /// The shutdown `when_done` asked for, for the main loop.
    shutdown: Option<PowerAction>,
}

impl Supervisor {
    /// A supervisor for `plan`; `cgroups` says whether the cgroup2 hierarchy is usable.
    pub fn new(plan: &Plan, cgroups: bool, bridge: Option<Bridge>) -> Supervisor {
        let devnull =
            std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").ok().map(OwnedFd::from);
        Supervisor {
            machine: Machine::new(plan),
            // The machine's order: onboot, service, onshutdown, console.
            planned: plan.containers().cloned().collect(),
            handles: BTreeMap::new(),
            children: BTreeMap::new(),
            checks: BTreeMap::new(),
            logs: Vec::new(),
            files: LogFiles::new(&plan.log),
            console_output: plan.log.console,
            stale_cgroups: Vec::new(),
            cgroups,
            devnull,
            bridge,
            shutdown: None,
        }
    }

    /// Starts the boot: onboot containers, then services.
    pub fn start(&mut self) {
        self.feed(Input::Boot);
    }

    /// The network is ready: services waiting for it may start.
    pub fn network_ready(&mut self) {
        self.feed(Input::NetworkReady);
    }

    /// The clock was set from NTP: services waiting for `time` may start.
    pub fn time_synced(&mut self) {
        self.feed(Input::TimeSynced);
    }

    /// Begins stopping every container (reverse dependency order), then the onshutdown ones.
    pub fn begin_stop(&mut self) {
        self.feed(Input::Shutdown);
    }

    /// A second shutdown request while stopping: do not wait for the timeouts.
    pub fn escalate(&mut self) {
        self.feed(Input::Escalate);
    }

    /// Whether the containers are healthy enough to commit the slot this boot came from.
    pub fn slot_health(&self) -> machine::SlotHealth {
        self.machine.slot_health()
    }

    /// Whether a shutdown has stopped every container.
    pub fn stopped(&self) -> bool {
        self.machine.stopped() && self.handles.is_empty()
    }

    /// Answers a control request about containers.
    pub fn control(&mut self, request: Request) -> Reply {
        if request == Request::Ps {
            let rows = self.machine.ps(Instant::now());
            return Reply::Text(machine::render_ps(&rows, memory_current));
        }
        self.feed(Input::Control(request)).unwrap_or_else(|| Reply::Error("no reply (a PID 1 bug)".into()))
    }

    /// Hands `input` to the machine and carries out its actions, and those of the inputs they
    /// lead to, until none is left; returns the reply to a control request among them.
    fn feed(&mut self, input: Input) -> Option<Reply> {
        let mut reply = None;
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for action in self.machine.handle(input, Instant::now()) {
                match action {
                    Action::Reply(r) => reply = Some(r),
                    other => queue.extend(self.perform(other)),
                }
            }
        }
        reply
    }

    /// Carries out one action; some answer with an input.
    fn perform(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Launch(unit) => Some(match self.launch(unit) {
                Ok(pid) => Input::Started { unit, pid: pid.as_raw() },
                Err(error) => Input::LaunchFailed { unit, error },
            }),
            Action::Signal(unit, signal) => {
                if let Some(h) = self.handles.get(&unit) {
                    // SAFETY: kill(2) takes two integers and touches none of PID 1's memory;
                    // the number may be a realtime signal, which nix's `kill` cannot send.
                    let _ = unsafe { libc::kill(h.container.pid.as_raw(), signal.0) };
                }
                None
            }
            Action::RunCheck(unit) => Some(match self.exec_check(unit) {
                Ok(pid) => {
                    self.children.insert(pid, Child::Check(unit));
                    self.checks.insert(unit, pid);
                    Input::CheckStarted(unit)
                }
                Err(error) => Input::CheckFailed { unit, error },
            }),
            Action::KillCheck(unit) => {
                if let Some(pid) = self.checks.get(&unit) {
                    let _ = kill(*pid, Signal::SIGKILL);
                }
                None
            }
            Action::Emit(mut event) => {
                event.ms = log::now_ms();
                log::emit(event);
                None
            }
            Action::Log(level, message) => {
                match level {
                    0..=3 => log::error(&message),
                    4..=5 => log::warn(&message),
                    _ => log::info(&message),
                }
                None
            }
            Action::Shutdown(power) => {
                self.shutdown = Some(power);
                None
            }
            Action::Reply(_) => None,
        }
    }

    /// Starts a healthcheck command inside the unit's running container.
    fn exec_check(&self, unit: UnitId) -> Result<Pid, String> {
        let c = &self.planned[unit.0];
        let handle = self.handles.get(&unit).ok_or("the container is not running")?;
        let cmd = c.healthcheck.as_ref().map(|hc| hc.cmd.as_slice()).unwrap_or_default();
        let devnull = self.devnull.as_ref().map(|f| f.as_raw_fd()).ok_or("no /dev/null")?;
        let spec = launch_spec::healthcheck_spec(c, self.cgroups, devnull, handle.container.pid, cmd)?;
        launch(&spec).map(|container| container.pid).map_err(|e| e.to_string())
    }

    /// Launches the unit's container: its pipe for output, its data-disk paths, its root when
    /// user-namespaced, its place on the bridge.
    fn launch(&mut self, unit: UnitId) -> Result<Pid, String> {
        let c = &self.planned[unit.0];
        if !self.cgroups && limits::wants_cgroup_limits(c) {
            return Err("resource limits need the cgroup2 hierarchy, which is not mounted".into());
        }
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| format!("log pipe: {e}"))?;
        // The child's end must block: a container writing faster than the console is slowed
        // down, not handed EAGAIN.
        let _ = nix::fcntl::fcntl(write.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
        let state = PathBuf::from(STATE_ROOT).join(&c.name);
        let premounted = c.userns.map(|_| state.clone());
        let stdin = self.devnull.as_ref().map(|f| f.as_raw_fd()).unwrap_or(write.as_raw_fd());
        let spec = storage::prepare(c).and_then(|on_disk| {
            let root = userns_root::premount(c, &state, on_disk.writable_layer.as_deref())?;
            launch_spec::container_spec(c, self.cgroups, [stdin, write.as_raw_fd()], root, on_disk)
        });
        let result = spec
            .map(|mut spec| {
                if self.machine.unit(unit).kind == Kind::Console {
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
        match result {
            Ok(container) => {
                let pid = container.pid;
                self.logs.push(LogPipe { unit, fd: read, partial: Vec::new() });
                self.children.insert(pid, Child::Container(unit));
                self.handles.insert(unit, Handle { container, premounted });
                Ok(pid)
            }
            Err(e) => {
                if let Some(state) = &premounted {
                    userns_root::unmount_root(state);
                }
                if let Some(b) = self.bridge.as_mut() {
                    b.detach(&c.name);
                }
                Err(e.to_string())
            }
        }
    }

    /// One line of a container's output, everywhere it goes: the console, the ring `berthctl
    /// logs` reads, the log file, followers and the syslog collector.
    fn deliver(&mut self, unit: UnitId, text: &[u8]) {
        let name = &self.machine.unit(unit).name;
        if self.console_output {
            log::container_line(name, text);
        }
        self.files.write(name, text);
        log::feed_followers(Some(name), &[text, b"\n"].concat());
        crate::pid1::syslog::send(6, name, None, "-", text);
        self.machine.remember(unit, text);
    }

    /// Reads what the container pipes hold, [`MAX_READ`] of each at most; a closed pipe is
    /// flushed and dropped.
    pub fn drain_logs(&mut self) {
        let mut index = 0;
        while index < self.logs.len() {
            if self.drain_pipe(index) != PipeState::Closed {
                index += 1;
            }
        }
    }

    /// Reads pipe `index` once and delivers its lines; a closed pipe is flushed and dropped.
    fn drain_pipe(&mut self, index: usize) -> PipeState {
        let (lines, state) = read_lines(&mut self.logs[index]);
        let unit = self.logs[index].unit;
        for line in lines {
            self.deliver(unit, &line);
        }
        if state == PipeState::Closed {
            let pipe = self.logs.remove(index);
            if !pipe.partial.is_empty() {
                self.deliver(unit, &pipe.partial);
            }
        }
        state
    }

    /// Reads what a unit that just ended wrote, so that its output comes before its exit
    /// event: up to [`EXIT_DRAIN_READS`] reads, as an orphan may hold the pipe open and write on.
    fn drain_ended(&mut self, unit: UnitId) {
        let Some(index) = self.logs.iter().position(|l| l.unit == unit) else { return };
        for _ in 0..EXIT_DRAIN_READS {
            if self.drain_pipe(index) != PipeState::More {
                return;
            }
        }
    }

    /// Reaps every child that has exited: containers, healthchecks and adopted orphans.
    fn reap(&mut self) {
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
            match self.children.remove(&pid) {
                Some(Child::Check(unit)) => {
                    self.checks.remove(&unit);
                    self.feed(Input::CheckDone { unit, ok: matches!(status, WaitStatus::Exited(_, 0)) });
                }
                Some(Child::Container(unit)) => self.container_ended(unit, status),
                None => {} // an orphan: reaped
            }
        }
        self.stale_cgroups.retain(|c| c.cleanup().is_err());
    }

    /// Undoes what a container's launch set up, then tells the machine.
    fn container_ended(&mut self, unit: UnitId, status: WaitStatus) {
        let Some(handle) = self.handles.remove(&unit) else { return };
        let exit = handle.container.exit_info(status);
        if let Some(b) = self.bridge.as_mut() {
            b.detach(&self.planned[unit.0].name);
        }
        // Output written before the exit comes before the exit event.
        self.drain_ended(unit);
        if let Some(state) = &handle.premounted {
            userns_root::unmount_root(state);
        }
        if handle.container.cleanup().is_err() {
            self.stale_cgroups.push(handle.container);
        }
        self.feed(Input::Exited { unit, exit });
    }
}

impl EventSource for Supervisor {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        fds.extend(self.logs.iter().map(|l| PollFd::new(l.fd.as_fd(), PollFlags::POLLIN)));
    }

    fn deadline(&self) -> Option<Instant> {
        self.machine.deadline()
    }

    /// Forwards output, reaps, acts on what is due; reports a shutdown `when_done` asks for.
    fn service(&mut self, now: Instant, out: &mut Vec<Pid1Event>) {
        self.drain_logs();
        self.reap();
        if self.machine.deadline().is_some_and(|at| at <= now) {
            self.feed(Input::Tick);
        }
        if let Some(power) = self.shutdown.take() {
            out.push(Pid1Event::Shutdown(power, "done".into()));
        }
    }
}

/// What one read of a pipe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PipeState {
    /// Everything written so far was read.
    Empty,
    /// More is waiting: the read stopped at [`MAX_READ`] so that one chatty container cannot
    /// hold PID 1's loop.
    More,
    /// The writers have closed it.
    Closed,
}

/// The most read from one pipe at a time.
const MAX_READ: usize = 64 * 1024;

/// Reads what `pipe` holds, up to [`MAX_READ`]: the complete lines (without `\n`, `\r\n`), and a
/// partial line of [`MAX_LINE`] bytes as a line of its own.
fn read_lines(pipe: &mut LogPipe) -> (Vec<Vec<u8>>, PipeState) {
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    let state = loop {
        if total >= MAX_READ {
            break PipeState::More;
        }
        match nix::unistd::read(pipe.fd.as_raw_fd(), &mut buf) {
            Ok(0) => break PipeState::Closed,
            Ok(n) => {
                total += n;
                pipe.partial.extend_from_slice(&buf[..n]);
                while let Some(pos) = pipe.partial.iter().position(|b| *b == b'\n') {
                    let mut line: Vec<u8> = pipe.partial.drain(..=pos).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    lines.push(line);
                }
                if pipe.partial.len() >= MAX_LINE {
                    lines.push(std::mem::take(&mut pipe.partial));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break PipeState::Empty,
        }
    };
    (lines, state)
}

/// A container's `memory.current`, in bytes.
fn memory_current(name: &str) -> Option<u64> {
    let text =
        std::fs::read_to_string(PathBuf::from(CGROUP_PARENT).join(name).join("memory.current")).ok()?;
    text.trim().parse().ok()
}
