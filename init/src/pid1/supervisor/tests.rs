//! The supervisor's rules, run on the pure machine with a simulated clock and launcher: no
//! process, no VM, microseconds each.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_runtime::ExitInfo;
use berth_schema::plan::{Plan, PlannedContainer};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::machine::{render_ps, Action, Input, Machine, Phase};
use super::unit::{Backoff, SignalNumber, UnitId};
use crate::pid1::control::protocol::{Reply, Request};
use crate::pid1::shutdown::PowerAction;

/// A planned container: `name` running `sh`, with `extra` plan fields.
fn container(name: &str, extra: Value) -> PlannedContainer {
    let mut c = json!({
        "name": name, "image": "oci:x", "image_digest": "sha256:00", "layers": [], "args": ["sh"],
        "env": [], "working_dir": "/", "uid": 0, "gid": 0, "hostname": name, "net": "none",
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    serde_json::from_value(c).unwrap()
}

/// The machine, a clock and a launcher that answers every launch and healthcheck at once.
struct Sim {
    machine: Machine,
    start: Instant,
    now: Instant,
    next_pid: i32,
    /// Units whose launches fail.
    broken: BTreeSet<String>,
    /// Every action so far.
    done: Vec<Action>,
}

impl Sim {
    fn new(plan: Plan) -> Sim {
        let start = Instant::now();
        Sim {
            machine: Machine::new(&plan),
            start,
            now: start,
            next_pid: 100,
            broken: BTreeSet::new(),
            done: Vec::new(),
        }
    }

    fn with(services: Vec<PlannedContainer>) -> Sim {
        Sim::new(Plan { service: services, ..Plan::default() })
    }

    fn id(&self, name: &str) -> UnitId {
        self.machine.find(name).unwrap()
    }

    /// Moves the clock to `ms` after the start and ticks.
    fn at(&mut self, ms: u64) -> Vec<Action> {
        self.now = self.start + Duration::from_millis(ms);
        self.feed(Input::Tick)
    }

    /// Feeds `input` and the answers to the launches and checks it leads to.
    fn feed(&mut self, input: Input) -> Vec<Action> {
        let mut all = Vec::new();
        let mut queue = vec![input];
        while !queue.is_empty() {
            let input = queue.remove(0);
            for action in self.machine.handle(input, self.now) {
                match &action {
                    Action::Launch(unit) if self.broken.contains(&self.machine.unit(*unit).name) => {
                        queue.push(Input::LaunchFailed { unit: *unit, error: "exec: ENOENT".into() })
                    }
                    Action::Launch(unit) => {
                        self.next_pid += 1;
                        queue.push(Input::Started { unit: *unit, pid: self.next_pid });
                    }
                    Action::RunCheck(unit) => queue.push(Input::CheckStarted(*unit)),
                    _ => {}
                }
                all.push(action);
            }
        }
        self.done.extend(all.iter().cloned());
        all
    }

    fn exit(&mut self, name: &str, code: i32) -> Vec<Action> {
        let unit = self.id(name);
        self.feed(Input::Exited {
            unit,
            exit: ExitInfo { code: Some(code), signal: None, oom_killed: false },
        })
    }

    fn killed(&mut self, name: &str, signal: Signal) -> Vec<Action> {
        let unit = self.id(name);
        self.feed(Input::Exited {
            unit,
            exit: ExitInfo { code: None, signal: Some(signal), oom_killed: false },
        })
    }

    fn running(&self, name: &str) -> bool {
        self.machine.unit(self.id(name)).run().is_some()
    }

    fn control(&mut self, request: Request) -> Reply {
        let replies: Vec<Reply> = self
            .feed(Input::Control(request))
            .into_iter()
            .filter_map(|a| match a {
                Action::Reply(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 1, "one reply per request: {replies:?}");
        replies[0].clone()
    }
}

/// `event name` (and its `name=` field) of each emitted event, in order.
fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(match e.get("name") {
                Some(n) => format!("{} {n}", e.name),
                None => e.name.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn event<'a>(actions: &'a [Action], name: &str) -> Option<&'a berth_events::Event> {
    actions.iter().find_map(|a| match a {
        Action::Emit(e) if e.name == name => Some(e),
        _ => None,
    })
}

/// A signal as the machine sends it.
fn n(signal: Signal) -> SignalNumber {
    signal.into()
}

fn signals(actions: &[Action]) -> Vec<(UnitId, SignalNumber)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal(u, s) => Some((*u, *s)),
            _ => None,
        })
        .collect()
}

fn launches(actions: &[Action]) -> Vec<UnitId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch(u) => Some(*u),
            _ => None,
        })
        .collect()
}

#[test]
fn onboot_containers_run_one_at_a_time_then_the_services() {
    let mut sim = Sim::new(Plan {
        onboot: vec![container("first", json!({})), container("second", json!({}))],
        service: vec![container("web", json!({}))],
        ..Plan::default()
    });
    let boot = sim.feed(Input::Boot);
    assert_eq!(events(&boot), ["container.started first"]);
    let next = sim.exit("first", 1);
    assert_eq!(
        events(&next),
        ["container.exited first", "container.started second"],
        "a failed onboot container does not stop the boot"
    );
    let services = sim.exit("second", 0);
    assert_eq!(events(&services), ["container.exited second", "boot.stage", "container.started web"]);
    assert_eq!(sim.machine.phase(), Phase::Running);
}

#[test]
fn a_failed_launch_moves_the_boot_on() {
    let mut sim = Sim::new(Plan {
        onboot: vec![container("missing", json!({})), container("next", json!({}))],
        ..Plan::default()
    });
    sim.broken.insert("missing".into());
    let boot = sim.feed(Input::Boot);
    assert_eq!(events(&boot), ["container.failed missing", "container.started next"]);
    let failed = event(&boot, "container.failed").unwrap();
    assert_eq!((failed.get("kind"), failed.get("error")), (Some("onboot"), Some("exec: ENOENT")));
    assert!(boot.contains(&Action::Log(3, "container missing failed to start: exec: ENOENT".into())));
}

#[test]
fn backoff_doubles_up_to_the_maximum_and_resets_after_a_stable_run() {
    let crash = ExitInfo { code: Some(1), signal: None, oom_killed: false };
    let mut b = Backoff::default();
    let short = Duration::from_millis(50);
    let delays: Vec<u64> = (0..12)
        .map(|_| {
            u64::try_from(
                b.next(berth_schema::config::RestartPolicy::Always, short, &crash).unwrap().0.as_millis(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(
        delays,
        [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000],
        "doubling from 100 ms, capped at 30 s"
    );
    assert_eq!(b.count, 12);
    let after_stable =
        b.next(berth_schema::config::RestartPolicy::Always, Backoff::STABLE_RUN, &crash).unwrap();
    assert_eq!(after_stable, (Backoff::FIRST, 1), "a run of 10 s starts the sequence again");
}

#[test]
fn restart_policies_decide_by_the_exit() {
    use berth_schema::config::RestartPolicy::*;
    let ok = ExitInfo { code: Some(0), signal: None, oom_killed: false };
    let crash = ExitInfo { code: Some(2), signal: None, oom_killed: false };
    let killed = ExitInfo { code: None, signal: Some(Signal::SIGKILL), oom_killed: false };
    let ran = Duration::from_millis(10);
    let again = |policy, exit: &ExitInfo| Backoff::default().next(policy, ran, exit).is_some();
    assert!(!again(No, &crash));
    assert!(again(Always, &ok) && again(UnlessStopped, &ok));
    assert!(!again(OnFailure(None), &ok));
    assert!(again(OnFailure(None), &crash) && again(OnFailure(None), &killed));
    let mut b = Backoff::default();
    let tries: Vec<bool> = (0..4).map(|_| b.next(OnFailure(Some(2)), ran, &crash).is_some()).collect();
    assert_eq!(tries, [true, true, false, false], "on-failure:2 restarts twice");
}

#[test]
fn a_crashing_service_restarts_after_its_delay_with_events() {
    let mut sim = Sim::with(vec![container("web", json!({"restart": "on-failure:2"}))]);
    sim.feed(Input::Boot);
    sim.at(50);
    let first = sim.exit("web", 3);
    let restarting = event(&first, "container.restarting").unwrap();
    assert_eq!((restarting.get("in_ms"), restarting.get("restarts")), (Some("100"), Some("1")));
    assert!(launches(&sim.at(149)).is_empty(), "not before its delay");
    assert_eq!(sim.machine.deadline(), Some(sim.start + Duration::from_millis(150)));
    assert_eq!(events(&sim.at(150)), ["container.started web"]);
    let second = sim.exit("web", 3);
    assert_eq!(event(&second, "container.restarting").unwrap().get("in_ms"), Some("200"));
    sim.at(350);
    let third = sim.exit("web", 3);
    assert!(event(&third, "container.restarting").is_none(), "on-failure:2 is used up");
    assert_eq!(events(&third), ["container.exited web", "system.done"]);
}

#[test]
fn a_service_starts_once_its_dependencies_are_ready() {
    let mut sim = Sim::new(Plan {
        onboot: vec![container("setup", json!({}))],
        service: vec![
            container("app", json!({"depends_on": ["db", "setup", "network"]})),
            container(
                "db",
                json!({"healthcheck": {"cmd": ["true"], "interval": "1000ms", "timeout": "500ms", "retries": 3, "start_period": "0ms"}}),
            ),
        ],
        ..Plan::default()
    });
    sim.feed(Input::Boot);
    let services = sim.exit("setup", 0);
    assert_eq!(events(&services), ["container.exited setup", "boot.stage", "container.started db"]);
    let app = sim.id("app");
    assert!(sim.machine.ps(sim.now).iter().any(|r| r.name == "app" && r.state == "waiting"));
    // db healthy, the network not yet: app still waits.
    let check = sim.at(1000);
    assert_eq!(check, [Action::RunCheck(sim.id("db"))], "the first check after one interval");
    let healthy = sim.feed(Input::CheckDone { unit: sim.id("db"), ok: true });
    assert_eq!(events(&healthy), ["container.healthy db"]);
    assert!(launches(&healthy).is_empty());
    let network = sim.feed(Input::NetworkReady);
    assert_eq!(launches(&network), [app]);
}

#[test]
fn a_service_waiting_for_time_starts_once_the_clock_is_set() {
    let mut sim = Sim::new(Plan {
        service: vec![
            container("tls", json!({"depends_on": ["time", "network"]})),
            container("plain", json!({})),
        ],
        ..Plan::default()
    });
    let boot = sim.feed(Input::Boot);
    assert_eq!(launches(&boot), [sim.id("plain")], "only the service that waits for nothing");
    assert!(launches(&sim.feed(Input::TimeSynced)).is_empty(), "the network is not ready yet");
    assert_eq!(launches(&sim.feed(Input::NetworkReady)), [sim.id("tls")]);
    assert!(launches(&sim.feed(Input::TimeSynced)).is_empty(), "a second sync starts nothing");
}

#[test]
fn a_dependency_that_can_never_be_ready_fails_its_dependents_down_the_chain() {
    let mut sim = Sim::new(Plan {
        onboot: vec![container("broken", json!({}))],
        service: vec![
            container("orphaned", json!({"depends_on": ["broken"]})),
            container("grandchild", json!({"depends_on": ["orphaned"]})),
            container(
                "flaky",
                json!({"healthcheck": {"cmd": ["true"], "interval": "1000ms", "timeout": "500ms", "retries": 3, "start_period": "0ms"}}),
            ),
            container("needs_flaky", json!({"depends_on": ["flaky"]})),
        ],
        ..Plan::default()
    });
    sim.feed(Input::Boot);
    let services = sim.exit("broken", 1);
    assert_eq!(
        events(&services),
        [
            "container.exited broken",
            "boot.stage",
            "container.failed orphaned",
            "container.failed grandchild",
            "container.started flaky"
        ]
    );
    let orphaned = event(&services, "container.failed").unwrap();
    assert_eq!(orphaned.get("error"), Some("its dependency broken did not complete successfully"));
    // flaky ends before it was ever healthy, with no restart: needs_flaky can never start.
    let ended = sim.exit("flaky", 1);
    assert_eq!(events(&ended), ["container.exited flaky", "container.failed needs_flaky", "system.done"]);
    assert_eq!(
        event(&ended, "container.failed").unwrap().get("error"),
        Some("its dependency flaky ended without becoming ready")
    );
}

#[test]
fn a_restarting_dependency_keeps_its_dependents_waiting() {
    let mut sim = Sim::with(vec![
        container(
            "db",
            json!({"restart": "always", "healthcheck": {"cmd": ["true"], "interval": "1000ms", "timeout": "500ms", "retries": 3, "start_period": "0ms"}}),
        ),
        container("app", json!({"depends_on": ["db"]})),
    ]);
    sim.feed(Input::Boot);
    let ended = sim.exit("db", 1);
    assert_eq!(events(&ended), ["container.exited db", "container.restarting db"]);
    assert!(sim.machine.ps(sim.now).iter().any(|r| r.name == "app" && r.state == "waiting"));
}

#[test]
fn healthchecks_go_healthy_unhealthy_and_back() {
    let mut sim = Sim::with(vec![container(
        "db",
        json!({"healthcheck": {"cmd": ["check"], "interval": "1000ms", "timeout": "300ms", "retries": 2, "start_period": "1500ms"}}),
    )]);
    sim.feed(Input::Boot);
    let db = sim.id("db");
    let verdict = |sim: &mut Sim, at: u64, ok: bool| {
        assert_eq!(sim.at(at), [Action::RunCheck(db)], "a check at {at} ms");
        events(&sim.feed(Input::CheckDone { unit: db, ok }))
    };
    assert!(verdict(&mut sim, 1000, false).is_empty(), "failures within start_period do not count");
    assert!(verdict(&mut sim, 2000, false).is_empty(), "one failure of two");
    assert_eq!(verdict(&mut sim, 3000, false), ["container.unhealthy db"]);
    assert_eq!(event(&sim.done, "container.unhealthy").unwrap().get("failures"), Some("2"));
    assert!(verdict(&mut sim, 4000, false).is_empty(), "reported once");
    assert_eq!(verdict(&mut sim, 5000, true), ["container.healthy db"]);
    assert!(verdict(&mut sim, 6000, true).is_empty(), "reported once");
    // A check that runs past its timeout is killed and counts as failed.
    assert_eq!(sim.at(7000), [Action::RunCheck(db)]);
    let late = sim.at(7300);
    assert_eq!(late, [Action::Log(4, "healthcheck of db timed out".into()), Action::KillCheck(db)]);
    assert!(sim.feed(Input::CheckDone { unit: db, ok: false }).is_empty());
    // A check that cannot start counts as failed too.
    sim.at(8300);
    let failed = sim.feed(Input::CheckFailed { unit: db, error: "fork: EAGAIN".into() });
    assert_eq!(events(&failed), ["container.unhealthy db"]);
}

#[test]
fn shutdown_stops_in_reverse_dependency_order_with_each_signal_and_timeout() {
    let mut sim = Sim::new(Plan {
        service: vec![
            container("db", json!({"stop_signal": 3, "stop_timeout_ms": 5000})),
            container("app", json!({"depends_on": ["db"]})),
            container("proxy", json!({"depends_on": ["app"]})),
            container("other", json!({})),
        ],
        onshutdown: vec![container("backup", json!({"stop_timeout_ms": 4000}))],
        ..Plan::default()
    });
    sim.feed(Input::Boot);
    sim.feed(Input::Tick);
    assert!(["db", "app", "proxy", "other"].iter().all(|n| sim.running(n)));
    let begin = sim.feed(Input::Shutdown);
    let (proxy, other, app, db) = (sim.id("proxy"), sim.id("other"), sim.id("app"), sim.id("db"));
    assert_eq!(
        signals(&begin),
        [(other, n(Signal::SIGTERM)), (proxy, n(Signal::SIGTERM))],
        "only what nothing depends on"
    );
    assert_eq!(sim.machine.deadline(), Some(sim.now + Duration::from_secs(10)), "the machine's stop timeout");
    sim.at(1000);
    assert_eq!(signals(&sim.exit("proxy", 0)), [(app, n(Signal::SIGTERM))]);
    sim.at(2000);
    let app_ended = sim.exit("app", 0);
    assert_eq!(signals(&app_ended), [(db, n(Signal::SIGQUIT))], "db's own stop signal");
    assert_eq!(event(&app_ended, "container.stopping").unwrap().get("signal"), Some("QUIT"));
    sim.exit("other", 0);
    // db ignores it: SIGKILL at its own timeout, 5 s after its stop signal.
    assert!(signals(&sim.at(6999)).is_empty());
    let kill = sim.at(7000);
    assert_eq!(signals(&kill), [(db, n(Signal::SIGKILL))]);
    assert_eq!(event(&kill, "container.stopping").unwrap().get("signal"), Some("KILL"));
    let onshutdown = sim.killed("db", Signal::SIGKILL);
    assert_eq!(events(&onshutdown), ["container.exited db", "container.started backup"]);
    assert_eq!(sim.machine.deadline(), Some(sim.now + Duration::from_secs(4)), "bounded by its timeout");
    assert!(!sim.machine.stopped());
    sim.exit("backup", 0);
    assert!(sim.machine.stopped());
}

#[test]
fn a_second_shutdown_request_kills_at_once() {
    let mut sim =
        Sim::with(vec![container("db", json!({})), container("app", json!({"depends_on": ["db"]}))]);
    sim.feed(Input::Boot);
    sim.feed(Input::Tick);
    sim.feed(Input::Shutdown);
    sim.at(100);
    let escalated = sim.feed(Input::Escalate);
    assert_eq!(
        signals(&escalated),
        [(sim.id("db"), n(Signal::SIGKILL)), (sim.id("app"), n(Signal::SIGKILL))],
        "everything still running, dependencies too, without waiting for timeouts or order"
    );
    assert_eq!(sim.machine.deadline(), None, "no SIGKILL left to send");
    assert!(signals(&sim.killed("app", Signal::SIGKILL)).is_empty(), "db was killed already");
    sim.killed("db", Signal::SIGKILL);
    assert!(sim.machine.stopped());
}

#[test]
fn shutdown_with_nothing_running_goes_straight_to_the_onshutdown_containers() {
    let mut sim = Sim::new(Plan {
        onshutdown: vec![container("a", json!({})), container("b", json!({}))],
        ..Plan::default()
    });
    sim.broken.insert("a".into());
    sim.feed(Input::Boot);
    let begin = sim.feed(Input::Shutdown);
    assert_eq!(events(&begin), ["container.failed a", "container.started b"]);
    sim.exit("b", 0);
    assert!(sim.machine.stopped());
}

#[test]
fn a_service_stopped_by_hand_is_not_restarted_until_started_again() {
    let mut sim = Sim::with(vec![container("web", json!({"restart": "always", "stop_timeout_ms": 2000}))]);
    sim.feed(Input::Boot);
    assert_eq!(sim.control(Request::Stop("web".into())), Reply::Text("stopping web\n".into()));
    assert_eq!(signals(&sim.done), [(sim.id("web"), n(Signal::SIGTERM))]);
    let ended = sim.exit("web", 0);
    assert_eq!(events(&ended), ["container.exited web", "system.done"], "no restart");
    let rows = sim.machine.ps(sim.now);
    assert_eq!(rows[0].state, "stopped/exited(0)");
    assert_eq!(sim.control(Request::Stop("web".into())), Reply::Error("web is not running".into()));
    assert_eq!(sim.control(Request::Start("web".into())), Reply::Text("started web\n".into()));
    let crashed = sim.exit("web", 1);
    assert!(event(&crashed, "container.restarting").is_some(), "restarted again after a start by hand");
}

#[test]
fn a_realtime_stop_signal_is_sent_as_it_is_numbered() {
    let mut sim = Sim::with(vec![container("app", json!({"stop_signal": 40}))]);
    sim.feed(Input::Boot);
    let stop = sim.feed(Input::Shutdown);
    assert_eq!(signals(&stop), [(sim.id("app"), SignalNumber(40))], "not SIGTERM in its place");
    assert_eq!(event(&stop, "container.stopping").unwrap().get("signal"), Some("40"));
}

#[test]
fn stop_by_hand_escalates_to_kill_at_the_containers_timeout() {
    let mut sim = Sim::with(vec![container("web", json!({"stop_signal": 2, "stop_timeout_ms": 2000}))]);
    sim.feed(Input::Boot);
    sim.control(Request::Stop("web".into()));
    assert_eq!(signals(&sim.done), [(sim.id("web"), n(Signal::SIGINT))]);
    assert_eq!(signals(&sim.at(2000)), [(sim.id("web"), n(Signal::SIGKILL))]);
}

#[test]
fn restart_by_hand_starts_the_service_again_once_it_has_ended() {
    let mut sim = Sim::with(vec![container("web", json!({}))]);
    sim.feed(Input::Boot);
    assert_eq!(sim.control(Request::Restart("web".into())), Reply::Text("restarting web\n".into()));
    let ended = sim.exit("web", 0);
    assert_eq!(events(&ended), ["container.exited web", "container.started web"]);
    assert_eq!(sim.control(Request::Restart("nosuch".into())), Reply::Error("nosuch is not running".into()));
}

#[test]
fn stopping_a_service_waiting_to_restart_cancels_the_restart() {
    let mut sim = Sim::with(vec![container("web", json!({"restart": "always"}))]);
    sim.feed(Input::Boot);
    sim.exit("web", 1);
    assert_eq!(sim.control(Request::Stop("web".into())), Reply::Text("stopping web\n".into()));
    assert!(launches(&sim.at(10_000)).is_empty());
}

#[test]
fn control_requests_about_containers() {
    let mut sim = Sim::new(Plan {
        onboot: vec![container("once", json!({}))],
        service: vec![container("web", json!({}))],
        ..Plan::default()
    });
    assert_eq!(
        sim.control(Request::Start("web".into())),
        Reply::Error("containers start by hand only while the machine runs".into())
    );
    sim.feed(Input::Boot);
    sim.exit("once", 0);
    for line in ["a", "b", "c"] {
        sim.machine.remember(sim.id("web"), line.as_bytes());
    }
    assert_eq!(
        sim.control(Request::Logs { name: "web".into(), tail: Some(2) }),
        Reply::Text("b\nc\n".into())
    );
    assert_eq!(sim.control(Request::Logs { name: "once".into(), tail: None }), Reply::Text(String::new()));
    assert_eq!(
        sim.control(Request::Logs { name: "nosuch".into(), tail: None }),
        Reply::Error("no container named nosuch".into())
    );
    assert_eq!(sim.control(Request::Start("web".into())), Reply::Error("web is running already".into()));
    assert_eq!(sim.control(Request::Start("once".into())), Reply::Error("no service named once".into()));
    sim.broken.insert("web".into());
    sim.control(Request::Stop("web".into()));
    sim.exit("web", 0);
    assert_eq!(
        sim.control(Request::Start("web".into())),
        Reply::Error("web failed to start (see the console)".into())
    );
    let table = render_ps(&sim.machine.ps(sim.now), |_| Some(3 << 20));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].ends_with("MEMORY"), "{table}");
    assert!(lines[1].starts_with("once ") && lines[1].contains(" exited(0) "), "{table}");
    assert!(lines[2].starts_with("web ") && lines[2].contains(" failed "), "{table}");
}

#[test]
fn when_done_powers_off_once_every_container_has_ended() {
    let mut plan = Plan { service: vec![container("job", json!({}))], ..Plan::default() };
    plan.system.when_done = berth_schema::config::WhenDone::Poweroff;
    plan.console = Some(container("shell", json!({})));
    let mut sim = Sim::new(plan);
    sim.feed(Input::Boot);
    assert!(sim.running("shell"));
    let done = sim.exit("job", 0);
    assert!(done.contains(&Action::Shutdown(PowerAction::Poweroff)), "the console does not count: {done:?}");
}

#[test]
fn the_console_shell_comes_back_a_second_after_it_exits() {
    let mut sim = Sim::new(Plan { console: Some(container("shell", json!({}))), ..Plan::default() });
    sim.feed(Input::Boot);
    sim.at(500);
    sim.exit("shell", 0);
    assert!(launches(&sim.at(1499)).is_empty());
    assert_eq!(launches(&sim.at(1500)), [sim.id("shell")]);
    sim.feed(Input::Shutdown);
    sim.exit("shell", 0);
    assert!(launches(&sim.at(5000)).is_empty(), "not during a shutdown");
    assert!(sim.machine.stopped());
}

#[test]
fn an_oom_kill_is_reported_and_shown() {
    let mut sim = Sim::with(vec![container("hog", json!({}))]);
    sim.feed(Input::Boot);
    let unit = sim.id("hog");
    let ended = sim.feed(Input::Exited {
        unit,
        exit: ExitInfo { code: None, signal: Some(Signal::SIGKILL), oom_killed: true },
    });
    let exited = event(&ended, "container.exited").unwrap();
    assert_eq!((exited.get("signal"), exited.get("oom_killed")), (Some("KILL"), Some("true")));
    assert_eq!(sim.machine.ps(sim.now)[0].state, "killed(KILL),oom");
}

#[test]
fn a_slot_is_healthy_once_onboot_succeeded_and_every_service_runs_and_passes_its_check() {
    use super::machine::SlotHealth;
    let mut sim = Sim::new(Plan {
        onboot: vec![container("migrate", json!({}))],
        service: vec![
            container("web", json!({})),
            container(
                "db",
                json!({"healthcheck": {"cmd": ["check"], "interval": "1000ms", "timeout": "300ms", "retries": 1, "start_period": "0ms"}}),
            ),
        ],
        ..Plan::default()
    });
    sim.feed(Input::Boot);
    assert!(matches!(sim.machine.slot_health(), SlotHealth::Pending(w) if w.contains("onboot")));
    sim.exit("migrate", 0);
    let db = sim.id("db");
    match sim.machine.slot_health() {
        SlotHealth::Pending(why) => {
            assert!(why.contains("db (not healthy yet)") && !why.contains("web"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    sim.at(1000);
    sim.feed(Input::CheckDone { unit: db, ok: false });
    assert!(matches!(sim.machine.slot_health(), SlotHealth::Pending(w) if w.contains("db (unhealthy)")));
    sim.at(2000);
    sim.feed(Input::CheckDone { unit: db, ok: true });
    assert_eq!(sim.machine.slot_health(), SlotHealth::Healthy);
    // A service that ended is not ready.
    sim.exit("web", 1);
    match sim.machine.slot_health() {
        SlotHealth::Pending(why) => assert!(why.contains("web (exited(1))"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_onboot_container_fails_the_slot_at_once() {
    use super::machine::SlotHealth;
    let mut sim = Sim::new(Plan {
        onboot: vec![container("migrate", json!({}))],
        service: vec![container("web", json!({}))],
        ..Plan::default()
    });
    sim.feed(Input::Boot);
    sim.exit("migrate", 3);
    match sim.machine.slot_health() {
        SlotHealth::Failed(why) => assert_eq!(why, "onboot container migrate exited(3)"),
        other => panic!("{other:?}"),
    }
}
