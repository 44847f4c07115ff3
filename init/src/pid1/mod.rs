//! PID 1: boot steps, the event loop, shutdown.
//!
//! Boot order: leave the initramfs → kernel filesystems → kmsg logging → Ctrl-Alt-Del to SIGINT
//! → read the plan → kernel modules → boot-time configuration → cgroup controllers → opaque
//! layer dirs → hostname, sysctls, `lo` → network (started) → the data disk → the first
//! container → the power button's modules and the button → the other late modules in a child
//! process (`late_modules`) → event loop (onboot containers one by one, then services).
//!
//! PID 1 must never exit or panic (the kernel would panic). Every step reports failures and goes
//! on; a plan that cannot be read leaves the machine up with no containers, waiting for a
//! shutdown request (event `boot.failed`). A bug that panics lands in [`emergency_loop`], which
//! only reaps children and obeys shutdown signals.

pub mod boot_config;
pub mod bridge;
pub mod control;
pub mod late_modules;
pub mod launch_spec;
pub mod limits;
pub mod log;
pub mod log_files;
pub mod mounts;
pub mod netlink;
pub mod network;
pub mod power_button;
pub mod shutdown;
pub mod storage;
pub mod supervisor;
pub mod syslog;
pub mod system;
pub mod userns_root;

use std::os::fd::{AsFd, BorrowedFd};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use berth_init::plan::{Plan, PLAN_PATH};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use shutdown::Action;
use supervisor::{Request, Supervisor};

/// Signals PID 1 handles through its signalfd (the ACPI power button is an input device, see
/// `power_button`). Meanings (docs/events.md):
/// SIGCHLD reap; SIGTERM, SIGUSR2, SIGPWR power off; SIGINT (Ctrl-Alt-Del) reboot; SIGUSR1 halt.
fn handled_signals() -> SigSet {
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

fn shutdown_action(sig: Signal) -> Option<Action> {
    match sig {
        Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR => Some(Action::Poweroff),
        Signal::SIGINT => Some(Action::Reboot),
        Signal::SIGUSR1 => Some(Action::Halt),
        _ => None,
    }
}

/// PID 1's entry point. Never returns.
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        log::console_write(format!("berth: PID 1 bug: {info}\n").as_bytes());
    }));
    log::ensure_stdio();
    let mask = handled_signals();
    let _ = mask.thread_block();
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| boot(signals.as_ref())));
    if let Err(_panic) = result {
        log::emit(
            log::event("boot.failed").with("error", "PID 1 hit a bug (see the line above); emergency mode"),
        );
    }
    emergency_loop()
}

fn stage(name: &str) {
    log::emit(log::event("boot.stage").with("stage", name));
}

fn boot(signals: Option<&SignalFd>) {
    stage("init");
    if let Err(e) = mounts::leave_initramfs() {
        log::console_write(
            format!("berth: cannot leave the initramfs ({e}); containers will fail to pivot_root\n")
                .as_bytes(),
        );
    }
    let failures = mounts::mount_kernel_filesystems();
    log::open_kmsg();
    for f in failures {
        log::warn(&f);
    }
    stage("mounts");
    // Ctrl-Alt-Del becomes SIGINT to PID 1 instead of an immediate reboot.
    let _ = nix::sys::reboot::set_cad_enabled(false);

    let plan = match std::fs::read_to_string(PLAN_PATH)
        .map_err(|e| format!("cannot read {PLAN_PATH}: {e}"))
        .and_then(|t| Plan::from_json(&t).map_err(|e| format!("{PLAN_PATH} is not a valid boot plan: {e}")))
    {
        Ok(p) => p,
        Err(e) => {
            log::error(&format!(
                "{e}\nthe machine stays up without containers; rebuild the image with `berth build`"
            ));
            log::emit(log::event("boot.failed").with("error", &e));
            Plan::default()
        }
    };

    for f in system::load_modules(&plan.modules) {
        log::warn(&f);
    }
    stage("modules");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut plan = plan;
    boot_config::apply(&mut plan, &cmdline);
    if let Some(target) = plan.log.syslog {
        syslog::configure(target);
    }
    let cgroups = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if cgroups {
        let _ = supervisor_cgroup_parent();
    } else {
        log::warn("the cgroup2 hierarchy is not mounted: containers run without resource limits");
    }
    for f in system::mark_opaque_dirs(&plan) {
        log::warn(&f);
    }
    if let Err(e) = system::set_hostname(&plan.system.hostname) {
        log::warn(&e);
    }
    for f in system::apply_sysctls(&plan) {
        log::warn(&f);
    }
    if let Err(e) = system::loopback_up() {
        log::warn(&e);
    }
    stage("system");

    let mut net = network::HostNetwork::start(&plan.network, &cmdline);
    let mut bridge = bridge::Bridge::for_plan(&plan);
    if let Some(b) = bridge.as_mut() {
        if let Err(e) = b.setup() {
            log::error(&format!("bridge: {e}; net = \"bridge\" containers cannot start"));
            log::emit(log::event("network.failed").with("iface", &plan.network.bridge.name).with("error", e));
        }
    }
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let entries = bridge.as_ref().map(|b| b.hosts_entries(&plan)).unwrap_or_default();
    let hosts = berth_init::net::files::hosts(&hostname, &entries, &plan.network.hosts);
    if let Err(e) = network::write_in_place(network::HOSTS, &hosts) {
        log::warn(&format!("network: {e}"));
    }
    for (file, target) in [("/etc/resolv.conf", network::RESOLV_CONF), ("/etc/hosts", network::HOSTS)] {
        let _ = std::fs::create_dir_all("/etc");
        let _ = std::fs::remove_file(file);
        let _ = std::os::unix::fs::symlink(target, file);
    }
    stage("network");

    // The data disk, before any container: volumes and persistent layers live there. A disk
    // that cannot be used fails only the containers that need it.
    if let Some(cfg) = plan.storage.clone() {
        if let Err(e) = storage::setup(&cfg, plan.tool_loader.as_deref()) {
            log::error(&format!("storage: {e}"));
            log::emit(log::event("storage.failed").with("error", &e));
        }
        stage("storage");
    }

    let late_paths = plan.late_modules.clone();
    let button_paths = plan.button_modules.clone();
    // Before the containers: a container may be given the socket by a bind.
    let control = match control::ControlSocket::bind() {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn(&format!("{e}: berthctl will not work"));
            None
        }
    };
    let mut sup = Supervisor::new(plan, cgroups);
    sup.set_bridge(bridge);
    if net.check_ready() {
        syslog::network_ready();
        sup.unit_ready(berth_init::config::NETWORK_UNIT);
    }
    stage("containers");
    let first = sup.start();
    // The power button's modules now, before any output is forwarded: once containers run, a
    // shutdown request must reach PID 1.
    for f in system::load_modules(&button_paths) {
        log::warn(&f);
    }
    let button = power_button::PowerButton::open();
    match &button {
        Some(b) => log::emit(log::event("power_button.ready").with("device", &b.path)),
        None => log::info("no ACPI power button: a host's shutdown request will not reach berth"),
    }
    // The other late modules (the NIC drivers, Hyper-V's helpers) load in a child process while
    // PID 1 forwards output; when they are in, the interfaces are configured.
    let mut late = late_modules::LateModules::start(&late_paths);
    if late.is_none() {
        for f in system::load_modules(&late_paths) {
            log::warn(&f);
        }
        net.look_for_interfaces();
    }
    event_loop(&mut sup, &mut net, signals, button.as_ref(), &mut late, control.as_ref(), first)
}

/// Enables the controllers for containers: in the root group and in `berth/`.
fn supervisor_cgroup_parent() -> std::io::Result<()> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    berth_runtime::cgroup::enable_controllers(root)?;
    let parent = std::path::Path::new(supervisor::CGROUP_PARENT);
    let _ = std::fs::create_dir(parent);
    berth_runtime::cgroup::enable_controllers(parent)?;
    Ok(())
}

fn event_loop(
    sup: &mut Supervisor,
    net: &mut network::HostNetwork,
    signals: Option<&SignalFd>,
    button: Option<&power_button::PowerButton>,
    late: &mut Option<late_modules::LateModules>,
    control: Option<&control::ControlSocket>,
    first: Request,
) -> ! {
    let mut action: Option<Action> = None;
    let mut pending = first;
    loop {
        if let Request::Shutdown(a) = pending {
            request_shutdown(sup, &mut action, a, "done");
        }
        pending = Request::None;
        // Before sleeping: whatever happened last round may have completed the network.
        if net.check_ready() {
            syslog::network_ready();
            sup.unit_ready(berth_init::config::NETWORK_UNIT);
        }
        if let Some(a) = action {
            if sup.stopped() {
                sup.drain_logs(None);
                net.release();
                syslog::flush(std::time::Duration::from_millis(500));
                shutdown::finish(a);
            }
        }

        let log_fds = sup.log_fds();
        let deadline = [sup.deadline(), net.deadline(), syslog::deadline()].into_iter().flatten().min();
        let timeout = match deadline {
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as u16;
                PollTimeout::from(ms)
            }
            None => PollTimeout::NONE,
        };
        let mut fds: Vec<PollFd> = Vec::with_capacity(log_fds.len() + 1);
        if let Some(sfd) = signals {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        }
        let extra =
            [button.map(|b| b.raw_fd()), control.map(|c| c.raw_fd()), late.as_ref().map(|l| l.raw_fd())];
        let net_fds = net.fds();
        for fd in log_fds.iter().chain(extra.iter().flatten()).chain(net_fds.iter()) {
            // SAFETY: the descriptors belong to `sup`, the power button, the control socket, the
            // late modules' pipe and the network, and stay open until after this poll.
            fds.push(PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, PollFlags::POLLIN));
        }
        if let Some((fd, write)) = syslog::poll_fd() {
            let flags = if write { PollFlags::POLLOUT } else { PollFlags::POLLIN };
            // SAFETY: the syslog socket stays open until after this poll (only `service`,
            // called after it, may close it).
            fds.push(PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, flags));
        }
        let _ = poll(&mut fds, timeout);
        drop(fds);

        sup.drain_logs(None);
        if late.as_mut().is_some_and(|l| l.finished()) {
            *late = None;
            net.look_for_interfaces();
        }
        net.poll(Instant::now());
        syslog::service();
        if button.is_some_and(|b| b.pressed()) {
            request_shutdown(sup, &mut action, Action::Poweroff, "acpi");
        }
        while let Some((stream, request)) = control.and_then(|c| c.next_request()) {
            let words: Vec<&str> = request.split_whitespace().collect();
            let (text, outcome) = match words.as_slice() {
                ["net"] => (net.status(), supervisor::Outcome::Close),
                ["renew"] => (net.renew(None), supervisor::Outcome::Close),
                ["renew", iface] => (net.renew(Some(iface)), supervisor::Outcome::Close),
                _ => sup.control(&request),
            };
            match outcome {
                supervisor::Outcome::Close => control::reply(stream, &text),
                supervisor::Outcome::Shutdown(a) => {
                    control::reply(stream, &text);
                    request_shutdown(sup, &mut action, a, "control");
                }
                supervisor::Outcome::Follow(what) => {
                    let mut stream = stream;
                    if std::io::Write::write_all(&mut stream, text.as_bytes()).is_ok() {
                        log::add_follower(stream, what);
                    }
                }
            }
        }
        if let Some(sfd) = signals {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if sig == Signal::SIGCHLD {
                    continue;
                }
                if let Some(a) = shutdown_action(sig) {
                    request_shutdown(sup, &mut action, a, sig.as_str());
                }
            }
        } else if let Some(sig) = wait_signal(100) {
            // No signalfd (should not happen): wait for signals directly, briefly, and keep
            // forwarding output and reaping in between.
            if let Some(a) = shutdown_action(sig) {
                request_shutdown(sup, &mut action, a, sig.as_str());
            }
        }
        let r = sup.reap();
        if r != Request::None {
            pending = r;
        }
        sup.deadline_passed();
        let r = sup.restart_due();
        if r != Request::None {
            pending = r;
        }
    }
}

fn request_shutdown(sup: &mut Supervisor, action: &mut Option<Action>, a: Action, reason: &str) {
    if action.is_some() {
        log::warn("second shutdown request: killing the containers now");
        sup.escalate();
        return;
    }
    *action = Some(a);
    log::emit(
        log::event("shutdown.begin")
            .with("action", a.as_str())
            .with("reason", reason.trim_start_matches("SIG").to_lowercase()),
    );
    sup.begin_stop();
}

/// After a PID 1 bug: reap children and obey shutdown signals, nothing else.
fn emergency_loop() -> ! {
    loop {
        while let Ok(status) =
            nix::sys::wait::waitpid(None::<nix::unistd::Pid>, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
        if let Some(a) = wait_signal(1000).and_then(shutdown_action) {
            shutdown::finish(a);
        }
    }
}

/// Waits up to `ms` for one of the handled (blocked) signals.
fn wait_signal(ms: i64) -> Option<Signal> {
    let mask = handled_signals();
    let timeout = libc::timespec { tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000 };
    // SAFETY: sigtimedwait reads the signal set and the timeout, both valid for the call; no
    // siginfo is requested.
    let sig = unsafe { libc::sigtimedwait(mask.as_ref(), std::ptr::null_mut(), &timeout) };
    Signal::try_from(sig).ok()
}
