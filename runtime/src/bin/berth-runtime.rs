//! `berth-runtime`: a runc-compatible command line for OCI bundles.
//!
//! `create` leaves the container set up and blocked on its start fifo (`ROOT/<id>/exec.fifo`),
//! then exits: the container's init is orphaned and reparented to the nearest child subreaper
//! (or the host's init), which reaps it when it ends — `state` reports `stopped` for a zombie too.
//! `start` opens the fifo, `delete` removes what is left. Errors are printed to stderr (and the
//! `--log` file) and exit with status 1, like runc.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_runtime::oci::{self, hooks, state, ContainerState, StateRoot, Status};
use berth_runtime::pidfd::{self, PidFd};
use berth_runtime::{launch_with, Container, LaunchHooks, Namespace, Root, Stdio};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// `time="…" level=… msg="…"`.
    Text,
    /// `{"level":…,"msg":…,"time":…}` per line.
    Json,
}

/// Who manages containers' cgroups (crun's option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CgroupManager {
    /// berth-runtime writes cgroup v2 groups itself; a config with `linux.resources` fails on a
    /// host without a usable cgroup v2 hierarchy.
    Cgroupfs,
    /// No cgroups: `linux.resources` is not applied (a warning names what is skipped).
    Disabled,
}

/// berth-runtime: run OCI bundles (runc-compatible commands).
#[derive(Debug, Parser)]
#[command(name = "berth-runtime", version)]
struct Cli {
    /// State directory.
    #[arg(long, global = true, default_value = "/run/berth-runtime")]
    root: PathBuf,
    /// Log file (default: errors and warnings to stderr only).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format.
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// `cgroupfs` (cgroup v2) or `disabled`.
    #[arg(long = "cgroup-manager", global = true, value_enum, default_value = "cgroupfs")]
    cgroup_manager: CgroupManager,
    #[command(subcommand)]
    command: Command,
}

/// What `create` and `run` take.
#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Container id.
    id: String,
    /// Bundle directory (with config.json).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's pid here.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (process.terminal).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container (set up, waiting for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print the OCI state of a container.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (default SIGTERM) to the container's init.
    Kill {
        /// Signal every process of the container's cgroup (when it has one).
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name (`KILL`, `SIGKILL`) or number.
        signal: Option<String>,
    },
    /// Delete a container's state (and the container, with --force).
    Delete {
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Create, start and wait; exits with the container's status (128+N for signal N).
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Do not wait: leave the container running.
        #[arg(short, long)]
        detach: bool,
    },
    /// Write runc's default config.json into the bundle directory.
    Spec {
        /// Bundle directory (default: the current directory).
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        /// Not supported: a rootless config.
        #[arg(long)]
        rootless: bool,
    },
    /// List containers.
    List {
        /// `table` or `json`.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Ids only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a process in a running container.
    Exec {
        /// Allocate a pty (needs --console-socket).
        #[arg(short, long)]
        tty: bool,
        /// Unix socket that receives the pty master.
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        /// Working directory in the container.
        #[arg(long)]
        cwd: Option<String>,
        /// Extra environment, KEY=VALUE.
        #[arg(short, long)]
        env: Vec<String>,
        /// uid[:gid].
        #[arg(short, long)]
        user: Option<String>,
        /// Write the process's pid here.
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// Container id.
        id: String,
        /// Command and arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

/// Writes log lines to `--log` (and warnings/errors to stderr).
struct Logger {
    file: Option<fs::File>,
    json: bool,
    debug: bool,
}

impl Logger {
    fn open(cli: &Cli) -> Logger {
        let file =
            cli.log.as_ref().and_then(|p| fs::OpenOptions::new().create(true).append(true).open(p).ok());
        Logger { file, json: cli.log_format == LogFormat::Json, debug: cli.debug }
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(mut f) = self.file.as_ref() else { return };
        let time = state::now_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level={level} msg={}", serde_json::Value::from(msg))
        };
        let _ = writeln!(f, "{line}");
    }

    fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }

    fn warn(&self, msg: &str) {
        eprintln!("berth-runtime: warning: {msg}");
        self.write("warning", msg);
    }

    fn error(&self, msg: &str) {
        eprintln!("{msg}");
        self.write("error", msg);
    }
}

type Res<T> = Result<T, String>;

fn main() {
    let cli = Cli::parse();
    let log = Logger::open(&cli);
    let roots = StateRoot::new(&cli.root);
    let cgroups = cli.cgroup_manager;
    let result = match &cli.command {
        Command::Create(args) => create(&log, &roots, &args.request(cgroups), true).map(|_| 0),
        Command::Start { id } => start(&log, &roots, id).map(|_| 0),
        Command::State { id } => show_state(&roots, id).map(|_| 0),
        Command::Kill { all, id, signal } => kill(&roots, id, signal.as_deref(), *all).map(|_| 0),
        Command::Delete { force, id } => delete(&log, &roots, id, *force).map(|_| 0),
        Command::Run { create, detach } => run(&log, &roots, &create.request(cgroups), *detach),
        Command::Spec { bundle, rootless } => spec(bundle.as_deref(), *rootless).map(|_| 0),
        Command::List { format, quiet } => list(&roots, format, *quiet).map(|_| 0),
        Command::Exec { tty, console_socket, cwd, env, user, pid_file, id, command } => exec(
            &log,
            &roots,
            ExecArgs {
                id,
                command,
                tty: *tty,
                console_socket: console_socket.as_deref(),
                cwd: cwd.as_deref(),
                env,
                user: user.as_deref(),
                pid_file: pid_file.as_deref(),
            },
        ),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(msg) => {
            log.error(&msg);
            std::process::exit(1)
        }
    }
}

/// A created container, for `run`.
struct Created {
    container: Container,
    state: ContainerState,
    hooks: oci_spec::runtime::Hooks,
    fifo: bool,
}

fn write_pid_file(path: &Path, pid: i32) -> Res<()> {
    let tmp = path.with_extension("berth-tmp");
    fs::write(&tmp, pid.to_string()).map_err(|e| format!("write pid file {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("write pid file {}: {e}", path.display()))
}

fn owner() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name).unwrap_or_else(|| uid.to_string())
}

impl CreateArgs {
    /// The request these arguments make, with the global cgroup manager.
    fn request(&self, cgroups: CgroupManager) -> CreateRequest<'_> {
        CreateRequest {
            id: &self.id,
            bundle: &self.bundle,
            pid_file: self.pid_file.as_deref(),
            console_socket: self.console_socket.as_deref(),
            cgroups,
        }
    }
}

/// Whether a container may run given the cgroup manager, whether the host has a usable cgroup
/// v2 hierarchy, and the limits its config asks for: `Ok(None)` with what was asked, a warning
/// to log, or the error that refuses it (the spec: a property the runtime cannot apply is an
/// error, and no container).
fn cgroup_decision(manager: CgroupManager, v2: bool, requested: &[String]) -> Res<Option<String>> {
    let limits = requested.join(", ");
    match (manager, v2) {
        (CgroupManager::Cgroupfs, true) => Ok(None),
        (CgroupManager::Cgroupfs, false) if !requested.is_empty() => Err(format!(
            "linux.resources ({limits}): this host has no usable cgroup v2 hierarchy (v1 or hybrid) to apply them; \
             run on a cgroup v2 host, remove them from config.json, or pass --cgroup-manager=disabled to run without them"
        )),
        (CgroupManager::Cgroupfs, false) => {
            Ok(Some("cgroup v2 is not this host's cgroup hierarchy (v1 or hybrid): running without cgroups".into()))
        }
        (CgroupManager::Disabled, _) if !requested.is_empty() => {
            Ok(Some(format!("--cgroup-manager=disabled: linux.resources NOT applied: {limits}")))
        }
        (CgroupManager::Disabled, _) => Ok(None),
    }
}

/// What `create` and `run` were asked for.
struct CreateRequest<'a> {
    id: &'a str,
    bundle: &'a Path,
    pid_file: Option<&'a Path>,
    console_socket: Option<&'a Path>,
    cgroups: CgroupManager,
}

/// Creates the container. `fifo`: stop before exec until `start` (else it runs right away, for
/// `run` without startContainer hooks).
fn create(log: &Logger, roots: &StateRoot, req: &CreateRequest<'_>, fifo: bool) -> Res<Created> {
    let CreateRequest { id, bundle, pid_file, console_socket, cgroups: manager } = *req;
    if !state::valid_id(id) {
        return Err(format!("invalid container id format: {id}"));
    }
    let bundle = bundle.canonicalize().map_err(|e| format!("bundle {}: {e}", bundle.display()))?;
    let oci::Loaded { spec: config, warnings } = oci::load(&bundle).map_err(|e| e.to_string())?;
    for w in &warnings {
        log.warn(w);
    }
    let v2 = berth_runtime::cgroup::unified_hierarchy();
    let cgroups = manager == CgroupManager::Cgroupfs && v2;
    let opts = oci::Options { id: id.to_string(), bundle: bundle.clone(), cgroups };
    let mut t = oci::translate(&config, &opts).map_err(|e| e.to_string())?;
    for w in &t.warnings {
        log.warn(w);
    }
    // The spec: an id is unique on the host. Other state roots are out of sight, but their
    // containers' default cgroups are not.
    let default_cgroup = config
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .is_none_or(|p| p.as_os_str().is_empty());
    if cgroups && default_cgroup && t.cgroup_path.exists() {
        return Err(format!(
            "container id {id} is in use on this host: its cgroup {} exists (pick another id)",
            t.cgroup_path.display()
        ));
    }
    if let Some(warning) = cgroup_decision(manager, v2, &t.requested_limits)? {
        log.warn(&warning);
    }
    if t.terminal && console_socket.is_none() {
        return Err(
            "process.terminal is true: pass --console-socket, or set \"terminal\": false in config.json"
                .to_string(),
        );
    }
    let fifo = fifo || t.hooks.start_container().as_ref().is_some_and(|h| !h.is_empty());

    let dir = roots.create(id)?;
    let result = (|| -> Res<Created> {
        if fifo {
            t.spec.start_fifo = Some(roots.fifo(id));
        } else {
            let _ = fs::remove_file(roots.fifo(id));
        }
        let pty = if t.terminal { Some(oci::console::open_pty()?) } else { None };
        if let Some((_, slave)) = &pty {
            let fd = slave.as_raw_fd();
            t.spec.stdio = Stdio::Fds([fd, fd, fd]);
            t.spec.controlling_tty = true;
        }
        if let Some((path, _)) = &t.spec.cgroup {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("create cgroup {}: {e}", parent.display()))?;
            }
        }
        let rootfs = match &t.spec.root {
            Root::Directory(p) => p.clone(),
            _ => PathBuf::new(),
        };
        let mut st = ContainerState {
            oci_version: config.version().clone(),
            id: id.to_string(),
            pid: 0,
            start_time: 0,
            bundle: bundle.clone(),
            rootfs,
            created: state::now_rfc3339(),
            owner: owner(),
            annotations: config.annotations().clone().unwrap_or_default(),
            cgroup: t.spec.cgroup.as_ref().map(|(p, _)| p.clone()),
            cgroup_created: t.spec.cgroup.as_ref().is_some_and(|(p, _)| !p.exists()),
            config: serde_json::to_value(&config).map_err(|e| format!("encode config: {e}"))?,
        };
        let prestart: Vec<_> = t.hooks.prestart().clone().unwrap_or_default();
        let create_runtime = t.hooks.create_runtime().clone().unwrap_or_default();
        let create_container = t.hooks.create_container().clone().unwrap_or_default();
        let hook_failed = std::cell::Cell::new(false);
        let mut before_pivot = |pid: Pid| -> Result<(), String> {
            let mut s = st.clone();
            s.pid = pid.as_raw();
            let text = state::oci_state(&s, Status::Created).to_string();
            // Hooks in the container's namespaces see its pid as the container does.
            s.pid = hooks::pid_in_namespace(s.pid).unwrap_or(s.pid);
            let inside = state::oci_state(&s, Status::Created).to_string();
            let result = hooks::run_hooks("prestart", &prestart, &text, None)
                .and_then(|()| hooks::run_hooks("createRuntime", &create_runtime, &text, None))
                .and_then(|()| {
                    hooks::run_hooks("createContainer", &create_container, &inside, Some(pid.as_raw()))
                });
            hook_failed.set(result.is_err());
            result
        };
        let any_hooks = !(prestart.is_empty() && create_runtime.is_empty() && create_container.is_empty());
        let hooks_arg = LaunchHooks {
            before_pivot: if any_hooks {
                Some(&mut before_pivot as &mut dyn FnMut(Pid) -> Result<(), String>)
            } else {
                None
            },
        };
        log.debug(&format!("launching {id}: {:?}", t.spec.args));
        let launched = launch_with(&t.spec, hooks_arg).map_err(|e| e.to_string());
        let container = match launched {
            Ok(c) => c,
            Err(e) => {
                if hook_failed.get() {
                    // The spec: after a failing create-time hook the container is destroyed
                    // (launch killed it) and the poststop hooks run.
                    let text = state::oci_state(&st, Status::Stopped).to_string();
                    let poststop = t.hooks.poststop().clone().unwrap_or_default();
                    for w in hooks::run_hooks_warning("poststop", &poststop, &text, None) {
                        log.warn(&w);
                    }
                }
                return Err(e);
            }
        };
        // From here on a failure must not leave the container behind: kill and reap it.
        let finish = |st: &mut ContainerState| -> Res<()> {
            st.pid = container.pid.as_raw();
            st.start_time = state::process_start_time(st.pid).map(|(s, _)| s).unwrap_or(0);
            roots.save(st)?;
            if let Some(p) = pid_file {
                write_pid_file(p, st.pid)?;
            }
            if let (Some((master, _)), Some(sock)) = (&pty, console_socket) {
                oci::console::send_master(sock, master)?;
            }
            Ok(())
        };
        if let Err(e) = finish(&mut st) {
            let _ = nix::sys::signal::kill(container.pid, Signal::SIGKILL);
            let _ = container.wait();
            // Only a group this create made: another one may hold other processes.
            if st.cgroup_created {
                let _ = container.cleanup();
            }
            if let Some(p) = pid_file {
                let _ = fs::remove_file(p);
            }
            return Err(e);
        }
        Ok(Created { container, state: st, hooks: t.hooks.clone(), fifo })
    })();
    if result.is_err() {
        state::remove_if_exists(&dir);
    }
    result
}

/// A pidfd for the container's process, if it is still the process `st` describes (not a
/// later one that reused the pid); `None` when it has ended.
fn container_pidfd(roots: &StateRoot, st: &ContainerState) -> Option<PidFd> {
    let fd = PidFd::open(st.pid).ok()?;
    // Checked after opening: from here on the descriptor pins the process.
    (roots.status(st) != Status::Stopped).then_some(fd)
}

/// Opens the start fifo for reading and waits for the container's byte, or for its process to
/// end (its pidfd), whichever comes first: one `poll`, no sleeps. Then waits for the fifo to
/// hang up: the container's end is close-on-exec, so that is the user's program running (the
/// spec runs `poststart` hooks after it is executed), or the container gone.
fn open_fifo(roots: &StateRoot, st: &ContainerState) -> Res<()> {
    let exited = || format!("container \"{}\" exited before it was started", st.id);
    // The pidfd first: once the fifo is open the container may run, and end, at once.
    let process = container_pidfd(roots, st).ok_or_else(exited)?;
    let fifo = roots.fifo(&st.id);
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(|e| format!("open {}: {e}", fifo.display()))?;
    loop {
        let fds = [f.as_fd(), process.as_fd()];
        match pidfd::wait_readable(&fds, None).map_err(|e| format!("wait for {}: {e}", fifo.display()))? {
            Some(0) => {
                // Readable: the byte; or end of file, the writer gone: the container exited, or
                // another `start` took the byte and the program runs already.
                let mut b = [0u8; 1];
                match nix::unistd::read(f.as_raw_fd(), &mut b) {
                    Ok(1) => break,
                    Ok(_) if process.wait_exit(Some(Duration::ZERO)).unwrap_or(false) => return Err(exited()),
                    Ok(_) => return Err("cannot start an already running container".to_string()),
                    Err(_) => {} // EAGAIN: a wake-up without data
                }
            }
            _ => return Err(exited()),
        }
    }
    let _ = fs::remove_file(&fifo);
    let fds = [f.as_fd(), process.as_fd()];
    pidfd::wait_readable(&fds, None).map_err(|e| format!("wait for {}: {e}", fifo.display()))?;
    Ok(())
}

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

fn hook_list(st: &ContainerState, kind: &str) -> Vec<oci_spec::runtime::Hook> {
    serde_json::from_value(st.config["hooks"][kind].clone()).unwrap_or_default()
}

fn start(log: &Logger, roots: &StateRoot, id: &str) -> Res<()> {
    let st = roots.load(id)?;
    match roots.status(&st) {
        Status::Created => {}
        Status::Running => return Err("cannot start an already running container".to_string()),
        Status::Stopped => return Err("cannot start a container that has stopped".to_string()),
    }
    // The hook runs in the container's namespaces and sees its pid as the container does.
    let inside = ContainerState { pid: hooks::pid_in_namespace(st.pid).unwrap_or(st.pid), ..st.clone() };
    let text = state::oci_state(&inside, Status::Created).to_string();
    if let Err(e) = hooks::run_hooks("startContainer", &hook_list(&st, "startContainer"), &text, Some(st.pid))
    {
        // The spec: a failing startContainer hook stops the container; `delete` does the rest.
        let _ = nix::sys::signal::kill(Pid::from_raw(st.pid), Signal::SIGKILL);
        return Err(e);
    }
    open_fifo(roots, &st)?;
    let text = state::oci_state(&st, Status::Running).to_string();
    for e in hooks::run_hooks_warning("poststart", &hook_list(&st, "poststart"), &text, None) {
        log.warn(&e);
    }
    Ok(())
}

fn show_state(roots: &StateRoot, id: &str) -> Res<()> {
    let st = roots.load(id)?;
    let json = state::oci_state(&st, roots.status(&st));
    println!("{}", serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?);
    Ok(())
}

/// A signal from a name (`KILL`, `SIGKILL`, `kill`) or a number.
fn parse_signal(s: &str) -> Res<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("invalid signal: {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<Signal>().map_err(|_| format!("invalid signal: {s}"))
}

fn kill(roots: &StateRoot, id: &str, signal: Option<&str>, all: bool) -> Res<()> {
    let st = roots.load(id)?;
    let sig = parse_signal(signal.unwrap_or("SIGTERM"))?;
    // Through a pidfd: a pid that ended and was reused meanwhile is never signalled.
    let process = container_pidfd(roots, &st).ok_or("container not running")?;
    if all {
        if let Some(cg) = &st.cgroup {
            let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
            }
        }
    }
    match process.send_signal(sig as i32) {
        Ok(()) => Ok(()),
        // With --all the init may be gone already, by the same signal.
        Err(e) if all && e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(e) => Err(format!("kill container {id}: {e}")),
    }
}

/// Waits (up to `limit`) until the container's process is gone or a zombie.
fn wait_stopped(roots: &StateRoot, st: &ContainerState, limit: Duration) -> bool {
    match container_pidfd(roots, st) {
        None => true,
        Some(fd) => fd.wait_exit(Some(limit)).unwrap_or(false),
    }
}

/// Removes the cgroup (if `create` made it), runs poststop hooks, removes the state directory.
fn destroy(log: &Logger, roots: &StateRoot, st: &ContainerState) -> Res<()> {
    if let Some(cg) = st.cgroup.as_ref().filter(|_| st.cgroup_created) {
        let group = berth_runtime::Cgroup::at(cg);
        let _ = group.kill_all();
        // Removable once empty: wait for the kernel's notice (not in sleeps), then remove it
        // with the groups the container made inside it.
        if group.remove().is_err() {
            group.wait_empty(Duration::from_secs(2));
            if let Err(e) = group.remove_tree() {
                log.warn(&format!("cgroup {} not removed: {e}", cg.display()));
            }
        }
    }
    let text = state::oci_state(st, Status::Stopped).to_string();
    for e in hooks::run_hooks_warning("poststop", &hook_list(st, "poststop"), &text, None) {
        log.warn(&e);
    }
    roots.remove(&st.id)
}

fn delete(log: &Logger, roots: &StateRoot, id: &str, force: bool) -> Res<()> {
    let st = roots.load(id)?;
    // The spec: deleting a container that is not stopped is an error and changes nothing —
    // a created one too (runc deletes those); --force kills it first.
    match roots.status(&st) {
        Status::Stopped => {}
        status @ (Status::Created | Status::Running) if !force => {
            return Err(format!(
                "cannot delete container {id} that is not stopped: {} (kill it first, or use --force)",
                status.as_str()
            ));
        }
        Status::Created | Status::Running => {
            let _ = nix::sys::signal::kill(Pid::from_raw(st.pid), Signal::SIGKILL);
            if !wait_stopped(roots, &st, Duration::from_secs(10)) {
                return Err(format!("container {id} did not stop after SIGKILL"));
            }
        }
    }
    destroy(log, roots, &st)
}

/// Exit status like a shell: the code, or 128 + the signal.
fn exit_status(info: &berth_runtime::ExitInfo) -> i32 {
    match (info.code, info.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s as i32,
        _ => 1,
    }
}

fn run(log: &Logger, roots: &StateRoot, req: &CreateRequest<'_>, detach: bool) -> Res<i32> {
    let id = req.id;
    let created = create(log, roots, req, detach)?;
    let st = &created.state;
    if created.fifo {
        if let Err(e) = start(log, roots, id) {
            let _ = nix::sys::signal::kill(created.container.pid, Signal::SIGKILL);
            let _ = created.container.wait();
            let _ = destroy(log, roots, st);
            return Err(e);
        }
    } else {
        let text = state::oci_state(st, Status::Running).to_string();
        let poststart = created.hooks.poststart().clone().unwrap_or_default();
        for e in hooks::run_hooks_warning("poststart", &poststart, &text, None) {
            log.warn(&e);
        }
    }
    if detach {
        return Ok(0);
    }
    let info = created.container.wait().map_err(|e| e.to_string())?;
    destroy(log, roots, st)?;
    Ok(exit_status(&info))
}

fn spec(bundle: Option<&Path>, rootless: bool) -> Res<()> {
    if rootless {
        return Err("berth-runtime spec: --rootless is not supported".to_string());
    }
    let dir = bundle.unwrap_or(Path::new("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err("File config.json exists. Remove it first".to_string());
    }
    fs::write(&path, oci::default_spec::DEFAULT_CONFIG_JSON)
        .map_err(|e| format!("write {}: {e}", path.display()))
}

fn list(roots: &StateRoot, format: &str, quiet: bool) -> Res<()> {
    let all = roots.list();
    if quiet {
        for st in &all {
            println!("{}", st.id);
        }
        return Ok(());
    }
    match format {
        "json" => {
            let v: Vec<serde_json::Value> = all
                .iter()
                .map(|st| {
                    let mut s = state::oci_state(st, roots.status(st));
                    s["rootfs"] = serde_json::json!(st.rootfs);
                    s
                })
                .collect();
            println!("{}", serde_json::Value::from(v));
        }
        "table" => {
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
            let rows: Vec<[String; 6]> = all
                .iter()
                .map(|st| {
                    let status = roots.status(st);
                    let pid = if status == Status::Stopped { 0 } else { st.pid };
                    [
                        st.id.clone(),
                        pid.to_string(),
                        status.as_str().to_string(),
                        st.bundle.display().to_string(),
                        st.created.clone(),
                        st.owner.clone(),
                    ]
                })
                .collect();
            // runc's tabwriter: minimum width 12, padding 3.
            let mut widths = header.map(|h| h.len());
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r.iter()) {
                    *w = (*w).max(c.len());
                }
            }
            let widths = widths.map(|w| (w + 3).max(12));
            let line = |cells: Vec<&str>| {
                let mut out = String::new();
                for (i, c) in cells.iter().enumerate() {
                    if i + 1 == cells.len() {
                        out.push_str(c);
                    } else {
                        out.push_str(&format!("{c:<width$}", width = widths[i]));
                    }
                }
                println!("{}", out.trim_end());
            };
            line(header.to_vec());
            for r in &rows {
                line(r.iter().map(String::as_str).collect());
            }
        }
        other => return Err(format!("invalid format option: {other}")),
    }
    Ok(())
}

/// `exec`'s options.
struct ExecArgs<'a> {
    id: &'a str,
    command: &'a [String],
    tty: bool,
    console_socket: Option<&'a Path>,
    cwd: Option<&'a str>,
    env: &'a [String],
    user: Option<&'a str>,
    pid_file: Option<&'a Path>,
}

fn exec(log: &Logger, roots: &StateRoot, a: ExecArgs<'_>) -> Res<i32> {
    let st = roots.load(a.id)?;
    if roots.status(&st) != Status::Running {
        return Err("cannot exec in a stopped or created container (start it first)".to_string());
    }
    let config: oci_spec::runtime::Spec =
        serde_json::from_value(st.config.clone()).map_err(|e| format!("stored config: {e}"))?;
    let opts = oci::Options { id: a.id.to_string(), bundle: st.bundle.clone(), cgroups: false };
    let mut t = oci::translate(&config, &opts).map_err(|e| e.to_string())?;
    let spec = &mut t.spec;
    // Join every namespace the container has (new or joined at create) through its init.
    let kinds: Vec<_> = spec.effective_namespaces().iter().map(|n| n.kind).collect();
    spec.namespaces = Some(
        kinds
            .into_iter()
            .map(|kind| Namespace {
                kind,
                path: Some(PathBuf::from(format!("/proc/{}/ns/{}", st.pid, kind.proc_name()))),
            })
            .collect(),
    );
    spec.uid_mappings.clear();
    spec.gid_mappings.clear();
    spec.time_offsets.clear();
    spec.root = Root::Joined;
    spec.mounts = None;
    spec.cgroup = None;
    spec.join_cgroup = st.cgroup.clone().filter(|p| p.exists());
    spec.args = a.command.to_vec();
    spec.env.extend(a.env.iter().cloned());
    if let Some(cwd) = a.cwd {
        spec.working_dir = cwd.to_string();
    }
    if let Some(user) = a.user {
        let (u, g) = user.split_once(':').unwrap_or((user, "0"));
        spec.uid = u.parse().map_err(|_| format!("--user {user}: expected uid[:gid]"))?;
        spec.gid = g.parse().map_err(|_| format!("--user {user}: expected uid[:gid]"))?;
    }
    let pty = if a.tty {
        let sock = a.console_socket.ok_or("exec --tty needs --console-socket")?;
        let (master, slave) = oci::console::open_pty()?;
        oci::console::send_master(sock, &master)?;
        let fd = slave.as_raw_fd();
        spec.stdio = Stdio::Fds([fd, fd, fd]);
        spec.controlling_tty = true;
        Some((master, slave))
    } else {
        None
    };
    log.debug(&format!("exec in {}: {:?}", a.id, spec.args));
    let container = launch_with(spec, LaunchHooks::default()).map_err(|e| e.to_string())?;
    drop(pty);
    if let Some(p) = a.pid_file {
        write_pid_file(p, container.pid.as_raw())?;
    }
    let info = container.wait().map_err(|e| e.to_string())?;
    Ok(exit_status(&info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_decision_refuses_limits_it_cannot_apply() {
        let limits = vec!["memory.limit".to_string(), "devices".to_string()];
        assert_eq!(cgroup_decision(CgroupManager::Cgroupfs, true, &limits), Ok(None));
        let e = cgroup_decision(CgroupManager::Cgroupfs, false, &limits).unwrap_err();
        assert!(
            e.starts_with("linux.resources (memory.limit, devices):")
                && e.contains("--cgroup-manager=disabled"),
            "{e}"
        );
        assert!(cgroup_decision(CgroupManager::Cgroupfs, false, &[])
            .unwrap()
            .unwrap()
            .contains("running without cgroups"));
        let w = cgroup_decision(CgroupManager::Disabled, true, &limits).unwrap().unwrap();
        assert_eq!(w, "--cgroup-manager=disabled: linux.resources NOT applied: memory.limit, devices");
        assert_eq!(cgroup_decision(CgroupManager::Disabled, false, &[]), Ok(None));
    }
}
