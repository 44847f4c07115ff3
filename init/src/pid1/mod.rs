//! PID 1: the boot as a flat list of named steps, then one event loop, then shutdown.
//!
//! Boot order ([`boot`]): leave the initramfs → kernel filesystems → kmsg logging →
//! Ctrl-Alt-Del to SIGINT → the verified system partition when the command line names one
//! (disk images: early modules, dm-verity, mount, binds; the kernel log followed for
//! corruption) → read the plan (from the initramfs or the partition) → kernel modules → boot-time configuration → cgroup
//! controllers → opaque layer dirs → hostname, sysctls, `lo` → zram swap (`zram`) → network
//! (started) → the data disk (its drivers by modalias while PID 1 waits for it, `coldplug`)
//! and its random seed (`random_seed`)
//! → the control socket → the cloud metadata provider (`metadata`; when there is one,
//! the containers wait for its answer or `metadata_timeout`, see `Pid1::metadata_arrived`) →
//! the first container → the power button's modules and the button → the kernel's uevents
//! followed, then the other late modules and every device's drivers in a child process
//! (`drivers`, `late_modules`; devices added later get a pass of their own) → the watchdog (`watchdog`) → event loop (onboot containers one by one, then
//! services; network time, `time_sync`, once the network is up). Each step ends with its
//! `boot.stage` event.
//!
//! PID 1 must never exit or panic (the kernel would panic). Every step reports failures and goes
//! on; a plan that cannot be read leaves the machine up with no containers, waiting for a
//! shutdown request (event `boot.failed`). A bug that panics lands in [`emergency_loop`], which
//! only reaps children and obeys shutdown signals.

pub mod boot_config;
pub mod bridge;
pub mod coldplug;
pub mod control;
pub mod device_mapper;
pub mod drivers;
pub mod event_source;
pub mod helper_process;
pub mod kernel_log;
pub mod late_modules;
pub mod launch_spec;
pub mod limits;
pub mod log;
pub mod log_files;
pub mod metadata;
pub mod mounts;
pub mod netlink;
pub mod network;
pub mod power_button;
pub mod pressure;
pub mod random_seed;
pub mod shutdown;
pub mod storage;
pub mod supervisor;
pub mod syslog;
pub mod system;
pub mod system_partition;
pub mod time_sync;
pub mod uevent;
pub mod update;
pub mod userns_root;
pub mod watchdog;
pub mod zram;

use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_schema::plan::Plan;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use control::protocol::{Reply, Request};
use control::ControlSocket;
use drivers::Drivers;
use event_source::{EventSource, Pid1Event, Signals, SyslogSocket};
use kernel_log::{KernelForward, KernelLog};
use metadata::CloudMetadata;
use network::HostNetwork;
use power_button::PowerButton;
use pressure::PressureWatch;
use random_seed::RandomSeed;
use shutdown::PowerAction;
use supervisor::Supervisor;
use system_partition::SystemSource;
use time_sync::TimeSync;
use update::Updates;
use watchdog::Watchdog;

/// PID 1's entry point. Never returns.
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        log::console_write(format!("berth: PID 1 bug: {info}\n").as_bytes());
    }));
    log::ensure_stdio();
    let mask = event_source::handled_signals();
    let _ = mask.thread_block();
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| boot(Signals::new(signals))));
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

/// The boot, step by step; then the event loop.
fn boot(signals: Signals) -> ! {
    stage("init");
    mount_filesystems();
    stage("mounts");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let system = mount_system_partition(&cmdline);
    let kernel_log = follow_verity_reports(&system);
    let (plan, failed) = read_plan(&system);
    if let Some(error) = failed {
        // A new slot that cannot boot goes back to the committed one without waiting.
        if update::roll_back_failed_boot(&cmdline, &system, &error) {
            shutdown::finish(PowerAction::Reboot, None);
        }
    }
    load_modules(&plan.modules);
    stage("modules");
    let plan = apply_boot_config(plan, &cmdline);
    let cgroups = enable_cgroups();
    configure_system(&plan, &system);
    if let Some(size) = plan.system.zram {
        zram::set_up(size);
    }
    stage("system");
    let net = start_network(&plan, &cmdline);
    stage("network");
    let random_seed = plan.storage.as_ref().and_then(|disk| {
        let seed = mount_data_disk(disk, plan.tool_loader.as_deref());
        stage("storage");
        seed
    });
    // The slot this boot came from: being tried (the gate runs in the loop), or committed.
    let staging = match &plan.storage {
        Some(disk) => format!("{}/.berth-update", disk.mount),
        None => "/run/berth/update-staging".to_string(),
    };
    let update = Updates::start(plan.update.as_ref(), &system, &staging, Instant::now());
    // Before the containers: a container may be given the socket by a bind.
    let control = open_control_socket();
    let metadata = choose_metadata(&plan);
    let (button_modules, late_modules) = (plan.button_modules.clone(), plan.late_modules.clone());
    let watchdog = plan.system.watchdog.map(|t| (t, plan.watchdog_modules.clone()));
    let mut pid1 = Pid1 {
        // No container runs before the configuration is final (see `start_containers`).
        sup: Supervisor::new(&Plan::default(), cgroups, None),
        net,
        update,
        ending: None,
        metadata,
        waiting: None,
        cgroups,
        kernel_forward: None,
        time: TimeSync::new(&plan.system.ntp),
        random_seed,
        watchdog: None,
        pressure: PressureWatch::new(plan.system.pressure_warning, Instant::now()),
    };
    pid1.forward_kernel_log(&plan);
    if pid1.metadata.is_some() {
        // The containers wait for the cloud's metadata, or its timeout (`metadata_arrived`).
        pid1.waiting = Some(plan);
        pid1.check_network();
    } else {
        pid1.start_containers(plan);
    }
    // The power button before any output is forwarded: once containers run, a shutdown
    // request must reach PID 1.
    let button = open_power_button(&button_modules);
    // The kernel's device announcements are followed before the late modules' child looks at
    // the devices present: one appearing in between is not missed.
    let mut drivers = Drivers::listen();
    if !drivers.start_late(&late_modules) {
        pid1.net.look_for_interfaces();
    }
    let syslog = SyslogSocket::default();
    // Armed last, once the boot's synchronous steps (a data disk's wait and check among them)
    // are done: from here on only the loop pets it.
    pid1.watchdog = watchdog.and_then(|(t, modules)| Watchdog::arm(t, &modules, Instant::now()));
    event_loop(pid1, Sources { signals, button, control, drivers, syslog, kernel_log })
}

/// Leaves the initramfs, mounts the kernel's filesystems, opens kmsg; Ctrl-Alt-Del becomes
/// SIGINT to PID 1 instead of an immediate reboot.
fn mount_filesystems() {
    if let Err(e) = mounts::leave_initramfs() {
        log::console_write(
            format!("berth: cannot leave the initramfs ({e}); containers will fail to pivot_root\n")
                .as_bytes(),
        );
    }
    let failures = mounts::mount_kernel_filesystems();
    log::open_kmsg();
    log::open_console_mirrors();
    for f in failures {
        log::warn(&f);
    }
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// The boot plan (from the initramfs or the system partition); an empty one (and
/// `boot.failed`, and why) when it cannot be read.
fn read_plan(system: &SystemSource) -> (Plan, Option<String>) {
    let path = system.plan_path();
    let read = match system {
        SystemSource::Failed(e) => {
            Err(format!("cannot read {path}: the system partition is not mounted: {e}"))
        }
        _ => std::fs::read_to_string(&path).map_err(|e| match kernel_log::initramfs_failure() {
            Some(kernel) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "cannot read {path}: the initramfs was not unpacked whole (the kernel said \"{kernel}\"): \
                 it does not fit in the machine's memory; give the machine the memory `berth build` \
                 prints, or boot a disk format (raw-efi, qcow2, vhdx), whose layers stay on the disk"
            ),
            _ => format!("cannot read {path}: {e}"),
        }),
    }
    .and_then(|t| Plan::from_json(&t).map_err(|e| format!("{path} is not a valid boot plan: {e}")));
    match read {
        Ok(plan) => (plan, None),
        Err(e) => {
            log::error(&format!(
                "{e}\nthe machine stays up without containers; rebuild the image with `berth build`"
            ));
            log::emit(log::event("boot.failed").with("error", &e));
            (Plan::default(), Some(e))
        }
    }
}

/// The verified system partition, when the command line names one (see `system_partition`).
fn mount_system_partition(cmdline: &str) -> SystemSource {
    let (source, warnings) = system_partition::mount_from(cmdline);
    for w in warnings {
        log::warn(&w);
    }
    match &source {
        SystemSource::Initramfs => {}
        SystemSource::Partition(m) => log::emit(
            log::event("system_partition.mounted")
                .with("partition", m.name())
                .with("slot", m.slot().map(|s| s.to_string()).unwrap_or_else(|| "none".into()))
                .with("disk", &m.disk)
                .with("root_hash", m.spec.root_hex())
                .with("path", system_partition::MOUNT_POINT),
        ),
        SystemSource::Failed(e) => {
            log::error(&format!("system partition: {e}"));
            log::emit(log::event("system_partition.failed").with("error", e));
        }
    }
    source
}

/// The kernel log, followed for dm-verity's reports once the system partition is mounted.
fn follow_verity_reports(system: &SystemSource) -> Option<KernelLog> {
    match system {
        SystemSource::Partition(m) => KernelLog::follow(&m.disk, &m.name()),
        _ => None,
    }
}

fn load_modules(paths: &[String]) {
    for f in system::load_modules(paths) {
        log::warn(&f);
    }
}

/// Merges the boot-time configuration fragments (config drive, fw_cfg, command line) and starts
/// the syslog sender it names.
fn apply_boot_config(mut plan: Plan, cmdline: &str) -> Plan {
    boot_config::apply(&mut plan, cmdline);
    if let Some(target) = plan.log.syslog {
        syslog::configure(target);
    }
    plan
}

/// Enables the controllers for containers, in the root group and in `berth/`; false when the
/// cgroup2 hierarchy is not there.
fn enable_cgroups() -> bool {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        log::warn("the cgroup2 hierarchy is not mounted: containers run without resource limits");
        return false;
    }
    let parent = Path::new(supervisor::CGROUP_PARENT);
    // A controller that cannot be enabled fails only the containers whose limits need it.
    let _ = berth_runtime::cgroup::enable_controllers(root).and_then(|_| {
        let _ = std::fs::create_dir(parent);
        berth_runtime::cgroup::enable_controllers(parent)
    });
    true
}

/// Opaque layer directories (in the initramfs; the partition's carry their xattr), the
/// hostname, sysctls, `lo`.
fn configure_system(plan: &Plan, system: &SystemSource) {
    let mut failures = if system.layers_on_partition() { Vec::new() } else { system::mark_opaque_dirs(plan) };
    failures.extend(system::set_hostname(&plan.system.hostname).err());
    failures.extend(system::apply_sysctls(plan));
    failures.extend(system::loopback_up().err());
    for f in failures {
        log::warn(&f);
    }
}

/// Starts configuring the interfaces and links `/etc/resolv.conf` and `/etc/hosts` to PID 1's
/// copies.
fn start_network(plan: &Plan, cmdline: &str) -> HostNetwork {
    let net = HostNetwork::start(&plan.network, cmdline);
    for (file, target) in [("/etc/resolv.conf", network::RESOLV_CONF), ("/etc/hosts", network::HOSTS)] {
        let _ = std::fs::create_dir_all("/etc");
        let _ = std::fs::remove_file(file);
        let _ = std::os::unix::fs::symlink(target, file);
    }
    net
}

/// The containers' side of the network, once the configuration is final: the bridge when a
/// container uses it, and `/etc/hosts` (the hostname, the bridge containers' names).
fn containers_network(plan: &Plan) -> Option<bridge::Bridge> {
    let mut bridge = bridge::Bridge::for_plan(plan);
    if let Some(Err(e)) = bridge.as_mut().map(bridge::Bridge::setup) {
        log::error(&format!("bridge: {e}; net = \"bridge\" containers cannot start"));
        log::emit(log::event("network.failed").with("iface", &plan.network.bridge.name).with("error", e));
    }
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let entries = bridge.as_ref().map(|b| b.hosts_entries(plan)).unwrap_or_default();
    let hosts = crate::net::files::hosts(&hostname, &entries, &plan.network.hosts);
    if let Err(e) = network::write_in_place(network::HOSTS, &hosts) {
        log::warn(&format!("network: {e}"));
    }
    bridge
}

/// The cloud metadata provider to wait for (`[system] metadata`); an OpenStack config drive's
/// drivers are loaded for it.
fn choose_metadata(plan: &Plan) -> Option<CloudMetadata> {
    let chosen = CloudMetadata::choose(&plan.system.metadata, plan.system.metadata_timeout, Instant::now());
    if chosen.as_ref().is_some_and(|m| m.provider() == berth_schema::metadata::Provider::Openstack) {
        load_modules(&plan.config_drive_modules);
    }
    if chosen.is_some() {
        stage("metadata");
    }
    chosen
}

/// The data disk, before any container: volumes and persistent layers live there. A disk that
/// cannot be used fails only the containers that need it. Once mounted, the random seed it
/// carries goes into the kernel and a new one is saved (`random_seed`).
fn mount_data_disk(
    cfg: &berth_schema::config::StorageConfig,
    tool_loader: Option<&str>,
) -> Option<RandomSeed> {
    // The disks' drivers the machine needs (by modalias) load while PID 1 looks for the disk.
    let mut drivers = coldplug::DiskDrivers::default();
    match storage::setup(cfg, tool_loader, &mut || drivers.look()) {
        Ok(()) => Some(RandomSeed::load(Path::new(&cfg.mount), Instant::now())),
        Err(e) => {
            log::error(&format!("storage: {e}"));
            log::emit(log::event("storage.failed").with("error", &e));
            None
        }
    }
}

fn open_control_socket() -> Option<ControlSocket> {
    ControlSocket::bind().map_err(|e| log::warn(&format!("{e}: berthctl will not work"))).ok()
}

/// Loads the power button's modules and opens the button.
fn open_power_button(modules: &[String]) -> Option<PowerButton> {
    load_modules(modules);
    let button = PowerButton::open();
    match &button {
        Some(b) => log::emit(log::event("power_button.ready").with("device", &b.path)),
        None => log::info("no ACPI power button: a host's shutdown request will not reach berth"),
    }
    button
}

/// What PID 1's event loop acts on.
struct Pid1 {
    sup: Supervisor,
    net: HostNetwork,
    /// Updates in place (`[update]` on a disk format).
    update: Option<Updates>,
    /// The shutdown under way.
    ending: Option<PowerAction>,
    /// The cloud metadata step (`[system] metadata`).
    metadata: Option<CloudMetadata>,
    /// The plan, while the containers wait for the cloud's metadata.
    waiting: Option<Plan>,
    /// Whether the cgroup2 hierarchy is there (for the supervisor).
    cgroups: bool,
    /// The kernel's log on its way to the `[log] syslog` collector.
    kernel_forward: Option<KernelForward>,
    /// The clock set from NTP (`[system] ntp`).
    time: Option<TimeSync>,
    /// The random seed on the data disk.
    random_seed: Option<RandomSeed>,
    /// The watchdog PID 1 pets (`[system] watchdog`).
    watchdog: Option<Watchdog>,
    /// Containers' memory pressure (`[system] pressure_warning`).
    pressure: Option<PressureWatch>,
}

/// The sources PID 1 waits on besides the supervisor and the network.
struct Sources {
    signals: Signals,
    button: Option<PowerButton>,
    control: Option<ControlSocket>,
    /// The late modules' child, devices' drivers, the kernel's uevents.
    drivers: Drivers,
    syslog: SyslogSocket,
    kernel_log: Option<KernelLog>,
}

/// The loop: wait on every source, handle what they report, end the machine once a shutdown
/// has stopped every container.
fn event_loop(mut pid1: Pid1, mut s: Sources) -> ! {
    loop {
        pid1.check_network();
        if let (Some(action), true) = (pid1.ending, pid1.sup.stopped()) {
            if let Some(w) = pid1.watchdog.as_mut() {
                w.pet(Instant::now());
            }
            pid1.sup.drain_logs();
            if pid1.time.as_ref().is_some_and(TimeSync::synced) {
                time_sync::save_to_rtc();
            }
            if let Some(seed) = pid1.random_seed.as_mut() {
                seed.save(true);
            }
            pid1.net.release();
            syslog::flush(Duration::from_millis(500));
            shutdown::finish(action, pid1.watchdog.take());
        }
        let events = event_source::wait(&mut [
            &mut s.signals as &mut dyn EventSource,
            &mut s.button,
            &mut s.control,
            &mut s.drivers,
            &mut s.syslog,
            &mut s.kernel_log,
            &mut pid1.kernel_forward,
            &mut pid1.net,
            &mut pid1.update,
            &mut pid1.metadata,
            &mut pid1.time,
            &mut pid1.random_seed,
            &mut pid1.watchdog,
            &mut pid1.pressure,
            &mut pid1.sup,
        ]);
        for event in events {
            pid1.handle(event);
        }
    }
}

impl Pid1 {
    /// Acts on one event: the one place PID 1's sources reach the supervisor and the network.
    fn handle(&mut self, event: Pid1Event) {
        match event {
            Pid1Event::Shutdown(action, reason) => self.request_shutdown(action, &reason),
            Pid1Event::Control(stream, request) => self.control(stream, request),
            Pid1Event::NetworkReady => self.check_network(),
            Pid1Event::LateModulesLoaded => {
                self.net.look_for_interfaces();
                self.check_network();
            }
            Pid1Event::UpdateGate => {
                let health = self.sup.slot_health();
                if self.update.as_mut().is_some_and(|u| u.gate(&health, Instant::now())) {
                    self.request_shutdown(PowerAction::Reboot, "update");
                }
            }
            Pid1Event::UpdateReboot => self.request_shutdown(PowerAction::Reboot, "update"),
            Pid1Event::Metadata(answer) => self.metadata_arrived(answer),
            Pid1Event::TimeSynced => self.sup.time_synced(),
        }
    }

    /// Sends the kernel's log to the collector once the plan names one (from the boot's first
    /// record on, whenever that is).
    fn forward_kernel_log(&mut self, plan: &Plan) {
        if plan.log.syslog.is_some() && self.kernel_forward.is_none() {
            self.kernel_forward = KernelForward::start();
        }
    }

    /// Starts the containers of the final plan: their network (bridge, `/etc/hosts`), then the
    /// supervisor.
    fn start_containers(&mut self, plan: Plan) {
        let bridge = containers_network(&plan);
        self.sup = Supervisor::new(&plan, self.cgroups, bridge);
        if self.time.as_ref().is_some_and(TimeSync::synced) {
            self.sup.time_synced();
        }
        self.check_network();
        stage("containers");
        self.sup.start();
    }

    /// The cloud's metadata (or why there is none): merged over the waiting plan like every
    /// boot-time fragment, then the containers start; the verdict goes back to the helper.
    fn metadata_arrived(&mut self, answer: Result<berth_schema::metadata::Metadata, String>) {
        let Some(mut plan) = self.waiting.take() else { return };
        let provider = self.metadata.as_ref().map_or("metadata", |m| m.provider().name());
        let verdict = match answer {
            Ok(found) => {
                log::emit(
                    log::event("metadata.found")
                        .with("provider", provider)
                        .with("from", &found.source)
                        .with("instance_id", found.instance_id.as_deref().unwrap_or_default())
                        .with("hostname", found.hostname.as_deref().unwrap_or_default())
                        .with("keys", found.public_keys.len())
                        .with("user_data", if found.user_data.is_some() { "yes" } else { "no" }),
                );
                if let Err(e) = metadata::write_files(&found) {
                    log::warn(&format!("metadata: {e}"));
                }
                let collector = plan.log.syslog;
                let verdict = boot_config::apply_metadata(&mut plan, &found);
                for f in system::set_hostname(&plan.system.hostname)
                    .err()
                    .into_iter()
                    .chain(system::apply_sysctls(&plan))
                {
                    log::warn(&f);
                }
                // A collector the user-data names (or changes); one already in use stays as it is.
                if let Some(target) = plan.log.syslog.filter(|t| Some(*t) != collector) {
                    syslog::configure(target);
                }
                self.forward_kernel_log(&plan);
                verdict
            }
            Err(e) => {
                log::warn(&format!("metadata: {e}; booting on the image's configuration"));
                log::emit(log::event("metadata.failed").with("provider", provider).with("error", &e));
                Err(e)
            }
        };
        if self.ending.is_none() {
            self.start_containers(plan);
        }
        if let Some(m) = self.metadata.as_mut() {
            m.verdict(verdict);
        }
    }

    /// Tells the syslog sender, the metadata step and the supervisor once the network is ready.
    fn check_network(&mut self) {
        if self.net.check_ready() {
            syslog::network_ready();
            if let Some(Pid1Event::Metadata(e)) =
                self.metadata.as_mut().and_then(|m| m.network_ready(Instant::now()))
            {
                self.metadata_arrived(e);
            }
            self.sup.network_ready();
            if let Some(t) = self.time.as_mut() {
                t.network_ready(&self.net.ntp_servers());
            }
            // The update check talks HTTPS: with NTP it waits for the clock (or NTP's failure).
            if let Some(u) = self.update.as_mut().filter(|_| self.time.as_ref().is_none_or(TimeSync::settled))
            {
                u.network_ready(Instant::now());
            }
        }
    }

    /// Answers a control request on its connection.
    fn control(&mut self, stream: UnixStream, request: Result<Request, String>) {
        let reply = match request {
            Err(e) => Reply::Error(e),
            Ok(Request::Net) => Reply::Text(self.net.status()),
            Ok(Request::Renew(iface)) => Reply::Text(self.net.renew(iface.as_deref())),
            Ok(Request::Follow(log::Follow::Events)) => {
                Reply::Follow { past: String::new(), what: log::Follow::Events }
            }
            #[cfg(feature = "test-hooks")]
            Ok(Request::Stall(secs)) => {
                control::reply(stream, &Reply::Text(format!("PID 1 stalls for {secs} s")));
                log::warn(&format!("debug-stall: PID 1's loop blocks for {secs} s (test-hooks build)"));
                std::thread::sleep(Duration::from_secs(secs));
                return;
            }
            Ok(Request::Power(action)) => {
                let text = match action {
                    PowerAction::Poweroff => "powering off",
                    PowerAction::Reboot => "rebooting",
                    PowerAction::Halt => "halting",
                };
                control::reply(stream, &Reply::Text(text.into()));
                return self.request_shutdown(action, "control");
            }
            Ok(Request::Update(request)) => match self.update.as_mut() {
                Some(u) => {
                    if u.control(request, stream) {
                        self.request_shutdown(PowerAction::Reboot, "update");
                    }
                    return;
                }
                None => Reply::Error(
                    "updates are off: the image has no [update], or this boot is not from a disk slot".into(),
                ),
            },
            Ok(request) => self.sup.control(request),
        };
        control::reply(stream, &reply);
    }

    /// The first request begins the shutdown; a second one kills the containers now.
    fn request_shutdown(&mut self, action: PowerAction, reason: &str) {
        if self.ending.is_some() {
            log::warn("second shutdown request: killing the containers now");
            self.sup.escalate();
            return;
        }
        self.ending = Some(action);
        log::emit(
            log::event("shutdown.begin")
                .with("action", action.as_str())
                .with("reason", reason.trim_start_matches("SIG").to_lowercase()),
        );
        self.sup.begin_stop();
    }
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
        if let Some(a) = event_source::wait_signal(1000).and_then(event_source::shutdown_action) {
            shutdown::finish(a, None);
        }
    }
}
