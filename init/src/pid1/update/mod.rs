//! Updates in place (`[update]`), PID 1's side: the EFI system partition mounted, the boot
//! judged (a slot being tried, or committed), the slot being tried committed once the machine
//! is healthy or rolled back, and the updater (`berth-updater`, a child process: it talks HTTP
//! and writes hundreds of MB, never in PID 1) run every `interval` to fill the other slot.
//!
//! Order at boot ([`Updates::start`], after the modules and the plan): mount the ESP → find
//! this boot's entry (the mounted slot's) → report a rollback systemd-boot did on its own (the
//! other slot ran out of tries) → a slot being tried: `update.trial`, then the gate every
//! second (`Pid1Event::UpdateGate`; the decisions are `gate`'s) until it is committed
//! (`update.committed`, its entry renamed without the counter) or rolled back
//! (`update.rolled_back`, its root hash refused for good, its entry marked bad, reboot) →
//! committed: the updater runs once the network is up, then every `interval`; its event lines
//! are passed on; when it has installed the other slot, the machine reboots into it when
//! `[update] reboot` allows.

pub mod gate;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_events::Event;
use berth_schema::config::{DiskSelector, RebootPolicy, UpdateSettings};
use berth_schema::slots::{BootEntry, Slot};
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};

use super::control::protocol::{Reply, UpdateRequest, SEND_BUNDLE};
use super::event_source::{EventSource, Pid1Event};
use super::log;
use super::supervisor::machine::SlotHealth;
use super::system_partition::SystemSource;
use crate::esp::Esp;
use gate::Decision;

/// Where PID 1 runs the updater from (the system partition's tools).
fn updater_path() -> String {
    format!("{}/{}", berth_schema::plan::TOOLS_DIR, berth_schema::system_partition::UPDATER)
}

/// Retires `entry`: its version refused for good (when its UKI's root hash can be read), the
/// entry marked bad, `update.rolled_back` emitted. The one way a version is rolled back — at
/// the gate, on request, and after a failed boot.
fn retire(esp: &Esp, entry: &BootEntry, reason: &str) -> Result<BootEntry, String> {
    let root = esp.spec_of(entry).map(|s| s.root_hex()).unwrap_or_default();
    if !root.is_empty() {
        esp.refuse(&root)?;
    }
    let bad = entry.bad();
    esp.rename(entry, &bad)?;
    log::emit(
        log::event("update.rolled_back")
            .with("slot", entry.slot)
            .with("root_hash", &root)
            .with("reason", reason),
    );
    Ok(bad)
}

/// After a boot from a slot that failed before its plan was read (`error`): when this boot came
/// from a slot being tried, it is marked bad and its version refused, and the caller reboots —
/// systemd-boot then boots the committed slot. Works without the plan: the ESP is found by its
/// GPT name (the FAT modules are in the slim initramfs of an image with `[update]`). True when
/// the machine must reboot.
pub fn roll_back_failed_boot(cmdline: &str, system: &SystemSource, error: &str) -> bool {
    let slotted = matches!(super::system_partition::requested(cmdline), Some(Ok((selectors, _)))
        if selectors.iter().any(|s| matches!(s, DiskSelector::PartLabel(n) if Slot::of_partition(n).is_some())));
    if !slotted {
        return false;
    }
    let esp = match system {
        SystemSource::Partition(m) => Esp::mount(&m.disk),
        _ => {
            let selector = DiskSelector::PartLabel(berth_schema::slots::ESP_PARTITION_NAME.into());
            super::storage::find_disk(
                &selector,
                Duration::from_secs(5),
                "the EFI system partition",
                &mut || false,
            )
            .and_then(|dev| Esp::mount_device(&std::path::Path::new("/dev").join(dev)))
        }
    };
    let rolled = esp.and_then(|esp| match gate::failed_trial(&esp.entries()?) {
        Some(entry) => retire(&esp, &entry, &format!("the boot failed: {error}")).map(|_| true),
        None => Ok(false),
    });
    match rolled {
        Ok(reboot) => reboot,
        Err(e) => {
            log::warn(&format!("update: after the failed boot: {e}"));
            false
        }
    }
}

/// How often a slot being tried is looked at.
const GATE_EVERY: Duration = Duration::from_secs(1);
/// How often an installed update waiting for its reboot window looks at the clock.
const WINDOW_EVERY: Duration = Duration::from_secs(30);

/// A slot being tried.
struct Trial {
    since: Instant,
    next: Instant,
}

/// The updater, running.
struct Child {
    out: std::fs::File,
    buf: Vec<u8>,
    installed: bool,
    /// Its lines, for the `berthctl update` requests waiting for it.
    lines: String,
    /// Those requests.
    waiters: Vec<UnixStream>,
    /// `berthctl update apply`: reboot into what it installs whatever `[update] reboot` says.
    apply: bool,
}

/// PID 1's part of updates in place.
pub struct Updates {
    settings: UpdateSettings,
    esp: Esp,
    slot: Slot,
    disk: String,
    entry: BootEntry,
    trial: Option<Trial>,
    next_check: Option<Instant>,
    /// The network is up (checks wait for it).
    network_up: bool,
    child: Option<Child>,
    /// An installed update waits for its reboot (the window, or a request).
    installed: bool,
    next_window_look: Option<Instant>,
    /// Where a bundle sent by `berthctl update apply -` is unpacked.
    staging: String,
}

impl Updates {
    /// Starts updates for a machine booted from a slot, when the plan has `[update]`. Failures
    /// are reported (`update.failed`) and leave updates off.
    pub fn start(
        settings: Option<&UpdateSettings>,
        system: &SystemSource,
        staging: &str,
        now: Instant,
    ) -> Option<Updates> {
        let settings = settings?.clone();
        let started = (|| {
            let SystemSource::Partition(mounted) = system else {
                return Err("this boot is not from a system slot (a disk format is needed)".to_string());
            };
            let slot = mounted.slot().ok_or("the system partition is not a slot")?;
            let esp = Esp::mount(&mounted.disk)?;
            let entries = esp.entries()?;
            let entry = gate::booted(&entries, slot)
                .ok_or_else(|| format!("no boot entry for slot {slot} on the EFI system partition"))?;
            Ok((esp, slot, mounted.disk.clone(), entry))
        })();
        let (esp, slot, disk, entry) = match started {
            Ok(s) => s,
            Err(e) => {
                log::error(&format!("update: {e}"));
                log::emit(log::event("update.failed").with("error", &e));
                return None;
            }
        };
        let mut updates = Updates {
            settings,
            esp,
            slot,
            disk,
            entry,
            trial: None,
            next_check: None,
            network_up: false,
            child: None,
            installed: false,
            next_window_look: None,
            staging: staging.to_string(),
        };
        updates.report_unreported_rollback();
        if gate::is_trial(&entry) {
            log::emit(log::event("update.trial").with("slot", slot).with("entry", entry.file_name()));
            updates.trial = Some(Trial { since: now, next: now });
        }
        Some(updates)
    }

    /// The other slot went bad without this machine's PID 1 rolling it back (it never reached
    /// it): report it, and refuse its root hash.
    fn report_unreported_rollback(&mut self) {
        let other = self.esp.entry_of(self.slot.other()).ok().flatten();
        let root = other.as_ref().and_then(|e| self.esp.spec_of(e).ok()).map(|s| s.root_hex());
        let refused = self.esp.state().map(|s| s.refused).unwrap_or_default();
        if let Some(root) = gate::unreported_rollback(other.as_ref(), root.as_deref(), &refused) {
            log::emit(
                log::event("update.rolled_back")
                    .with("slot", self.slot.other())
                    .with("root_hash", &root)
                    .with("reason", "it never came up: systemd-boot used its tries"),
            );
            if let Err(e) = self.esp.refuse(&root) {
                log::warn(&format!("update: {e}"));
            }
        }
    }

    /// The network is up: the first check runs now (not while a slot is being tried).
    pub fn network_ready(&mut self, now: Instant) {
        self.network_up = true;
        if self.next_check.is_none() && self.trial.is_none() {
            self.next_check = Some(now);
        }
    }

    /// Looks at the slot being tried with the containers' `health`; returns the reboot to do
    /// when it is rolled back.
    pub fn gate(&mut self, health: &SlotHealth, now: Instant) -> bool {
        let Some(trial) = &mut self.trial else { return false };
        if now < trial.next {
            return false;
        }
        trial.next = now + GATE_EVERY;
        let entry = self.entry;
        match gate::decide(health, now - trial.since, self.settings.commit_timeout) {
            Decision::Wait => false,
            Decision::Commit => {
                let committed = entry.committed();
                match self.esp.rename(&entry, &committed) {
                    Ok(()) => {
                        log::emit(
                            log::event("update.committed")
                                .with("slot", self.slot)
                                .with("entry", committed.file_name())
                                .with("took_ms", (now - trial.since).as_millis()),
                        );
                        self.entry = committed;
                        self.trial = None;
                        // The first check: now, or once the network is up (`network_ready`).
                        self.next_check = self.network_up.then_some(now);
                    }
                    Err(e) => log::error(&format!("update: cannot commit slot {}: {e}", self.slot)),
                }
                false
            }
            Decision::RollBack(reason) => match self.roll_back(&reason) {
                Ok(_) => true,
                Err(e) => {
                    log::error(&format!(
                        "update: slot {} is not healthy ({reason}) and cannot be rolled back: {e}",
                        self.slot
                    ));
                    self.trial = None;
                    false
                }
            },
        }
    }

    /// Runs the updater now (`check`: only report; `bundle`: the connection the bundle comes
    /// on, its standard input), unless it runs already.
    fn run_updater(&mut self, check: bool, bundle: Option<&UnixStream>) {
        if self.child.is_some() {
            return;
        }
        let stdin = match bundle.map(UnixStream::try_clone) {
            None => Stdio::null(),
            Some(Ok(s)) => Stdio::from(OwnedFd::from(s)),
            Some(Err(e)) => return log::warn(&format!("update: the bundle's connection: {e}")),
        };
        let (read, write): (OwnedFd, OwnedFd) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => return log::warn(&format!("update: pipe: {e}")),
        };
        let stderr = match write.try_clone() {
            Ok(fd) => fd,
            Err(e) => return log::warn(&format!("update: pipe: {e}")),
        };
        let mut cmd = Command::new(updater_path());
        match bundle {
            Some(_) => cmd.args(["--bundle", "-", "--staging", &self.staging]),
            None => cmd.arg("--source").arg(self.settings.source.to_string()),
        };
        cmd.args(["--slot", &self.slot.to_string(), "--disk", &self.disk, "--esp", crate::esp::MOUNT_POINT])
            .env_clear()
            .stdin(stdin)
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(stderr));
        if self.settings.insecure && bundle.is_none() {
            cmd.arg("--insecure");
        }
        if check {
            cmd.arg("--check");
        }
        crate::pid1::helper_process::unblock_signals(&mut cmd);
        // The supervisor reaps it with every other child; its pipe tells how it went.
        match cmd.spawn() {
            Ok(_) => {
                let out = std::fs::File::from(read);
                let _ = nix::fcntl::fcntl(out.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
                self.child = Some(Child {
                    out,
                    buf: Vec::new(),
                    installed: false,
                    lines: String::new(),
                    waiters: Vec::new(),
                    apply: false,
                });
            }
            Err(e) => log::warn(&format!("update: cannot run {}: {e}", updater_path())),
        }
    }

    /// Passes on the updater's complete lines; true once its output ended.
    fn read_child(&mut self) -> bool {
        let Some(child) = &mut self.child else { return false };
        let mut chunk = [0u8; 4096];
        let ended = loop {
            match child.out.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => child.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        while let Some(at) = child.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = child.buf.drain(..=at).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            child.lines.push_str(&line);
            child.lines.push('\n');
            match Event::parse(&line) {
                Some(e) => {
                    child.installed |= e.name == "update.installed";
                    let mut stamped = log::event(&e.name);
                    stamped.fields = e.fields;
                    log::emit(stamped);
                }
                None if !line.is_empty() => log::info(&format!("update: {line}")),
                None => {}
            }
        }
        ended
    }

    /// What `berthctl update status` prints.
    pub fn status(&self) -> String {
        let mut out = String::new();
        for slot in berth_schema::slots::SLOTS {
            let entry = self.esp.entry_of(slot).ok().flatten();
            let what = match (&entry, slot == self.slot) {
                (None, _) => "empty".to_string(),
                (Some(e), true) if self.trial.is_some() => format!("{}: running, being tried", e.file_name()),
                (Some(e), true) => format!("{}: running, committed", e.file_name()),
                (Some(e), false) if !e.bootable() => format!("{}: rolled back", e.file_name()),
                (Some(e), false) if self.installed || gate::is_trial(e) => {
                    format!("{}: installed, boots next", e.file_name())
                }
                (Some(e), false) => format!("{}: the previous version", e.file_name()),
            };
            let root = entry
                .and_then(|e| self.esp.spec_of(&e).ok())
                .map(|s| format!(" (root hash {})", s.root_hex()));
            out.push_str(&format!("slot {slot}  {what}{}\n", root.unwrap_or_default()));
        }
        out.push_str(&format!(
            "source {} every {} s, reboot {}, commit_timeout {} s\n",
            self.settings.source,
            self.settings.interval.as_secs(),
            self.settings.reboot,
            self.settings.commit_timeout.as_secs()
        ));
        if let Ok(state) = self.esp.state() {
            if !state.refused.is_empty() {
                out.push_str(&format!("refused {}\n", state.refused.join(", ")));
            }
        }
        out
    }

    /// Answers `berthctl update …` on `stream` (now, or when the updater ends); true when the
    /// machine reboots now.
    pub fn control(&mut self, request: UpdateRequest, stream: UnixStream) -> bool {
        let now_reply = |stream: UnixStream, reply: Reply| super::control::reply(stream, &reply);
        match request {
            UpdateRequest::Status => now_reply(stream, Reply::Text(self.status())),
            UpdateRequest::Check | UpdateRequest::Apply | UpdateRequest::ApplyBundle
                if self.trial.is_some() =>
            {
                now_reply(
                    stream,
                    Reply::Error(format!(
                        "slot {} is being tried; updates resume once it is committed",
                        self.slot
                    )),
                )
            }
            UpdateRequest::Apply if self.installed => {
                now_reply(stream, Reply::Text(format!("rebooting into slot {}", self.slot.other())));
                return true;
            }
            UpdateRequest::ApplyBundle if self.child.is_some() => {
                now_reply(stream, Reply::Error("the updater is running; try again when it is done".into()))
            }
            UpdateRequest::ApplyBundle => {
                // The client may take its time sending: no read timeout for the updater.
                let _ = stream.set_read_timeout(None);
                self.run_updater(false, Some(&stream));
                match &mut self.child {
                    Some(child) => {
                        let mut s = &stream;
                        let _ = s.write_all(format!("{SEND_BUNDLE}\n").as_bytes());
                        child.apply = true;
                        child.waiters.push(stream);
                    }
                    None => now_reply(stream, Reply::Error(format!("cannot run {}", updater_path()))),
                }
            }
            UpdateRequest::Check | UpdateRequest::Apply => {
                let apply = request == UpdateRequest::Apply;
                self.run_updater(!apply, None);
                match &mut self.child {
                    Some(child) => {
                        child.apply |= apply;
                        child.waiters.push(stream);
                    }
                    None => now_reply(stream, Reply::Error(format!("cannot run {}", updater_path()))),
                }
            }
            UpdateRequest::Rollback => match self.roll_back("requested") {
                Ok(text) => {
                    now_reply(stream, Reply::Text(text));
                    return true;
                }
                Err(e) => now_reply(stream, Reply::Error(e)),
            },
        }
        false
    }

    /// Leaves this slot for the other's committed version: this one marked bad and refused.
    fn roll_back(&mut self, reason: &str) -> Result<String, String> {
        let other = self.slot.other();
        let target = self.esp.entry_of(other)?.filter(|e| e.bootable());
        if target.is_none() {
            return Err(format!("slot {other} holds no version to go back to"));
        }
        self.entry = retire(&self.esp, &self.entry, reason)?;
        self.trial = None;
        Ok(format!("rolling back to slot {other}"))
    }

    /// Whether the clock allows an installed update's reboot now.
    fn reboot_allowed(&self) -> bool {
        let minute =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| (d.as_secs() / 60) % 1440).unwrap_or(0);
        self.settings.reboot.allows(u16::try_from(minute).unwrap_or(0))
    }
}

impl EventSource for Option<Updates> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(child) = self.as_ref().and_then(|u| u.child.as_ref()) {
            fds.push(PollFd::new(child.out.as_fd(), PollFlags::POLLIN));
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let u = self.as_ref()?;
        let check = if u.child.is_none() { u.next_check } else { None };
        [u.trial.as_ref().map(|t| t.next), check, u.next_window_look].into_iter().flatten().min()
    }

    fn service(&mut self, now: Instant, out: &mut Vec<Pid1Event>) {
        let Some(u) = self else { return };
        if u.trial.as_ref().is_some_and(|t| now >= t.next) {
            out.push(Pid1Event::UpdateGate);
        }
        if u.read_child() {
            let Some(child) = u.child.take() else { return };
            let text = if child.lines.is_empty() { "nothing new".to_string() } else { child.lines };
            for w in child.waiters {
                super::control::reply(w, &Reply::Text(text.clone()));
            }
            u.next_check = Some(now + u.settings.interval);
            if child.installed {
                u.installed = true;
                if child.apply {
                    out.push(Pid1Event::UpdateReboot);
                    return;
                }
                match u.settings.reboot {
                    RebootPolicy::Manual => log::info(
                        "update: installed; it runs after the next reboot ([update] reboot = \"manual\")",
                    ),
                    RebootPolicy::Now => out.push(Pid1Event::UpdateReboot),
                    RebootPolicy::Window { .. } => u.next_window_look = Some(now),
                }
            }
        }
        if u.next_window_look.is_some_and(|t| now >= t) {
            if u.reboot_allowed() {
                u.next_window_look = None;
                out.push(Pid1Event::UpdateReboot);
            } else {
                u.next_window_look = Some(now + WINDOW_EVERY);
            }
        }
        if u.child.is_none() && !u.installed && u.trial.is_none() && u.next_check.is_some_and(|t| now >= t) {
            u.next_check = Some(now + u.settings.interval);
            u.run_updater(false, None);
        }
    }
}
