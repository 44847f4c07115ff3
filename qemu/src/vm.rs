//! Running one QEMU virtual machine and watching its serial console.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_events::Event;

use crate::accel::{self, Accel, Choice, HostKey, VerdictCache};
use crate::console::{self, Console, TAIL_LINES};
use crate::error::{Error, Result};
use crate::qmp::Qmp;

/// The timeout tests and tools use for a whole boot or shutdown: 60 s, multiplied by the
/// environment variable `BERTH_TIMEOUT_SCALE` (a positive float) on slow machines.
pub fn default_timeout() -> Duration {
    let scale = std::env::var("BERTH_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(60.0 * scale)
}

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `pc` (i440FX): boots a kernel fastest under TCG (measured ~1.3 s vs ~1.5 s to /init).
    #[default]
    Pc,
    /// `q35`: PCIe, needed by some firmware setups (e.g. OVMF with secure boot).
    Q35,
}

impl Machine {
    fn qemu_name(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }
}

/// How to start a VM. `VmConfig::default()` fills in 512 MiB, one CPU, `Accel::Auto`, QEMU's
/// default CPU model and no RNG device: what users' hypervisors give.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The kernel (`-kernel`). An empty path passes none (e.g. to boot a disk or ISO given in
    /// `extra_args`).
    pub kernel: PathBuf,
    /// The initramfs (`-initrd`); an empty path passes none.
    pub initrd: PathBuf,
    /// The kernel command line (`-append`); passed only with a kernel. Include `console=ttyS0`
    /// to see the kernel and init on the captured console.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of virtual CPUs.
    pub cpus: u32,
    /// The accelerator.
    pub accel: Accel,
    /// The CPU model (`-cpu`); `None` is QEMU's default (`qemu64`: no RDRAND, like many
    /// KVM and OpenStack CPU models).
    pub cpu: Option<String>,
    /// Give the guest a virtio RNG device (`virtio-rng-pci`).
    pub rng: bool,
    /// With [`Accel::Auto`] on a host not yet judged: how long a guest under KVM may show no
    /// progress (see [`crate::accel`]) before it is restarted under TCG.
    pub progress_deadline: Duration,
    /// Where the verdict on this host's KVM is kept.
    pub verdicts: VerdictCache,
    /// The machine type.
    pub machine: Machine,
    /// More QEMU arguments (devices, drives, `-bios`, port forwards …), appended last.
    pub extra_args: Vec<String>,
    /// Also write the raw console output to this file (created or truncated).
    pub console_log: Option<PathBuf>,
    /// Also copy the raw console output to our stdout (for interactive use).
    pub console_stdout: bool,
    /// Let a guest reboot restart the machine instead of ending QEMU (no `-no-reboot`).
    pub allow_reboot: bool,
}

impl Default for VmConfig {
    fn default() -> VmConfig {
        VmConfig {
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            cmdline: String::new(),
            memory_mib: 512,
            cpus: 1,
            accel: Accel::Auto,
            cpu: None,
            rng: false,
            progress_deadline: Duration::from_secs(20),
            verdicts: VerdictCache::default(),
            machine: Machine::Pc,
            extra_args: Vec::new(),
            console_log: None,
            console_stdout: false,
            allow_reboot: false,
        }
    }
}

impl VmConfig {
    /// A configuration booting `kernel` with `initrd` and `cmdline`, defaults otherwise.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, cmdline: &str) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: initrd.into(),
            cmdline: cmdline.to_string(),
            ..VmConfig::default()
        }
    }

    /// The QEMU arguments (without the program name) for this configuration, with the QMP
    /// socket at `qmp_socket` and `accel` already resolved.
    fn args(&self, accel: Accel, qmp_socket: &std::path::Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |a: &str| args.push(a.into());
        push("-machine");
        push(self.machine.qemu_name());
        push("-nodefaults");
        push("-no-user-config");
        push("-display");
        push("none");
        push("-chardev");
        push("stdio,id=console,signal=off");
        push("-serial");
        push("chardev:console");
        push("-m");
        push(&self.memory_mib.to_string());
        push("-smp");
        push(&self.cpus.to_string());
        push("-accel");
        push(if accel == Accel::Kvm { "kvm" } else { "tcg" });
        if let Some(cpu) = &self.cpu {
            push("-cpu");
            push(cpu);
        }
        if self.rng {
            push("-device");
            push("virtio-rng-pci");
        }
        if !self.allow_reboot {
            push("-no-reboot");
        }
        let mut qmp = OsString::from("unix:");
        qmp.push(qmp_socket);
        qmp.push(",server=on,wait=off");
        args.push("-qmp".into());
        args.push(qmp);
        if !self.kernel.as_os_str().is_empty() {
            args.push("-kernel".into());
            args.push(self.kernel.clone().into());
            args.push("-append".into());
            args.push(self.cmdline.clone().into());
        }
        if !self.initrd.as_os_str().is_empty() {
            args.push("-initrd".into());
            args.push(self.initrd.clone().into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }
}

/// QEMU arguments for a virtio NIC on user-mode networking (the guest gets 10.0.2.15 by DHCP,
/// the host is 10.0.2.2, DNS 10.0.2.3) with TCP port forwards `(host port on 127.0.0.1, guest
/// port)`.
pub fn user_net_args(tcp_forwards: &[(u16, u16)]) -> Vec<String> {
    let mut netdev = String::from("user,id=net0");
    for (host, guest) in tcp_forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    vec!["-netdev".into(), netdev, "-device".into(), "virtio-net-pci,netdev=net0".into()]
}

/// How the guest kernel said it was stopping (from its `reboot: …` console message). With
/// `-no-reboot` QEMU exits in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestShutdown {
    /// `reboot: Power down`.
    PowerOff,
    /// `reboot: Restarting system`.
    Reboot,
    /// `reboot: System halted`.
    Halt,
}

impl GuestShutdown {
    /// Recognises the kernel's final message in a console line.
    pub(crate) fn from_kernel_line(line: &str) -> Option<GuestShutdown> {
        let msg = line.split_once("reboot: ")?.1.trim_end();
        match msg {
            "Power down" => Some(GuestShutdown::PowerOff),
            "Restarting system" => Some(GuestShutdown::Reboot),
            "System halted" => Some(GuestShutdown::Halt),
            _ => None,
        }
    }
}

/// A running QEMU. Dropping it kills QEMU (SIGKILL to its process group) and reaps it.
///
/// QEMU runs in its own process group with `PR_SET_PDEATHSIG(SIGKILL)`, so it also dies when
/// this process does. The serial console is read by a thread into a shared buffer; every method
/// that waits sees both the lines already printed and new ones.
pub struct Vm {
    child: Child,
    status: Option<ExitStatus>,
    stdin: Mutex<Option<ChildStdin>>,
    console: Arc<Console>,
    dir: tempfile::TempDir,
    accel: Accel,
    accel_reason: String,
    started: Instant,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("pid", &self.child.id())
            .field("accel", &self.accel)
            .field("status", &self.status)
            .finish()
    }
}

/// Held while a VM is on probation, so that the other VMs this process starts meanwhile wait
/// for its verdict instead of each spending the probation deadline on a broken KVM.
static PROBATION: Mutex<()> = Mutex::new(());

impl Vm {
    /// Starts QEMU (`$BERTH_QEMU`, default `qemu-system-x86_64` from `PATH`). Returns once the
    /// process runs; QEMU's own start-up errors (bad arguments, missing files) surface as
    /// [`Error::Exited`] from the next wait, with QEMU's error output in the message.
    ///
    /// With [`Accel::Auto`] on a host whose KVM is not yet judged, this waits until the guest
    /// shows progress (at most [`VmConfig::progress_deadline`]); see [`crate::accel`]. Which
    /// accelerator was chosen, and why, is [`Vm::accel_reason`].
    pub fn start(cfg: VmConfig) -> Result<Vm> {
        match cfg.accel {
            Accel::Kvm => Vm::launch(&cfg, Accel::Kvm, "asked for (--accel kvm)".into()),
            Accel::Tcg => Vm::launch(&cfg, Accel::Tcg, "asked for (--accel tcg)".into()),
            Accel::Auto => {
                let _gate = PROBATION.lock().unwrap_or_else(|e| e.into_inner());
                let key = HostKey::current();
                match accel::choose(
                    accel::env_override(),
                    accel::kvm_device_exists(),
                    cfg.verdicts.load(&key),
                    crate::kvm::probe_kvm_once,
                ) {
                    Choice::Settled { accel, reason, record } => {
                        if let Some(verdict) = record {
                            cfg.verdicts.store_logged(&key, &verdict);
                        }
                        Vm::launch(&cfg, accel, reason)
                    }
                    Choice::Probation => Vm::start_on_probation(cfg, Accel::Kvm),
                }
            }
        }
    }

    /// Starts QEMU under `candidate` without trusting it: if the console shows no progress
    /// (see [`crate::accel`]) within [`VmConfig::progress_deadline`], QEMU is killed, a TCG
    /// verdict is recorded in [`VmConfig::verdicts`], a line saying so goes to stderr, and the
    /// VM starts again under TCG. Progress under KVM records a KVM verdict. [`Vm::start`] does
    /// this with KVM on a host not yet judged; any accelerator can be tried this way.
    pub fn start_on_probation(cfg: VmConfig, candidate: Accel) -> Result<Vm> {
        let started = Instant::now();
        eprintln!(
            "berth: trying {} (not yet proven on this host: a guest that shows no progress in {} s is \
             started again under TCG)",
            candidate.name(),
            cfg.progress_deadline.as_secs()
        );
        let mut vm = Vm::launch(&cfg, candidate, "on probation".into())?;
        let progress = vm
            .console
            .wait_until("progress on the console", cfg.progress_deadline, |st| st.progress.then_some(()));
        let key = HostKey::current();
        match progress {
            Ok(()) => {
                if candidate == Accel::Kvm {
                    let verdict = accel::progress_verdict(started.elapsed());
                    cfg.verdicts.store_logged(&key, &verdict);
                    vm.accel_reason = verdict.reason;
                }
                Ok(vm)
            }
            Err(Error::Exited { .. }) if vm.try_wait()?.is_none_or(|s| s.success()) => Ok(vm),
            Err(Error::Exited { tail, .. }) => {
                let why = format!("QEMU under {} ended before the guest showed progress", candidate.name());
                eprintln!("berth: {why}; starting it again under TCG");
                log::warn!("{why}:\n{tail}");
                drop(vm);
                Vm::launch(&cfg, Accel::Tcg, why)
            }
            Err(_) => {
                let verdict = accel::no_progress_verdict(candidate, started.elapsed());
                drop(vm);
                eprintln!(
                    "berth: {}; starting it again under TCG and using TCG on this host from now on \
                     (the verdict is kept in {}: delete it to judge again, or set BERTH_ACCEL=kvm|tcg)",
                    verdict.reason,
                    cfg.verdicts.path().display()
                );
                cfg.verdicts.store_logged(&key, &verdict);
                Vm::launch(&cfg, Accel::Tcg, verdict.reason)
            }
        }
    }

    /// Starts QEMU under `accel` (`Kvm` or `Tcg`) with its console readers.
    fn launch(cfg: &VmConfig, accel: Accel, accel_reason: String) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix("berth-qemu-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let qmp_socket = dir.path().join("qmp.sock");
        let program = std::env::var_os("BERTH_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
        let args = cfg.args(accel, &qmp_socket);
        log::debug!("starting {program:?} {args:?}");
        let mut cmd = Command::new(&program);
        cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());

        let mut tees: Vec<Box<dyn Write + Send>> = Vec::new();
        if let Some(path) = &cfg.console_log {
            let file = File::create(path)
                .map_err(|e| Error::io(format!("creating console log {}", path.display()), e))?;
            tees.push(Box::new(file));
        }
        if cfg.console_stdout {
            tees.push(Box::new(std::io::stdout()));
        }

        let mut child = crate::spawn::spawn_guarded(cmd)
            .map_err(|e| Error::io(format!("starting {}", program.to_string_lossy()), e))?;
        let console = Arc::new(Console::default());
        let stdin = child.stdin.take();
        // QEMU's error output is read by its own thread; the console thread waits for it at
        // the end of the console, so an "exited" error always includes QEMU's last words.
        let stderr_reader = match child.stderr.take() {
            Some(stderr) => {
                let c = Arc::clone(&console);
                let handle = std::thread::Builder::new()
                    .name("berth-qemu-stderr".into())
                    .spawn(move || {
                        for line in BufReader::new(stderr).lines() {
                            let Ok(line) = line else { break };
                            log::warn!("qemu: {line}");
                            c.push_stderr(line);
                        }
                    })
                    .map_err(|e| Error::io("starting the stderr reader thread", e))?;
                Some(handle)
            }
            None => None,
        };
        if let Some(stdout) = child.stdout.take() {
            let c = Arc::clone(&console);
            std::thread::Builder::new()
                .name("berth-qemu-console".into())
                .spawn(move || {
                    console::pump(stdout, &c, tees);
                    if let Some(handle) = stderr_reader {
                        let _ = handle.join();
                    }
                    c.finish();
                })
                .map_err(|e| Error::io("starting the console reader thread", e))?;
        }
        Ok(Vm {
            child,
            status: None,
            stdin: Mutex::new(stdin),
            console,
            dir,
            accel,
            accel_reason,
            started: Instant::now(),
        })
    }

    /// QEMU's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The accelerator actually used (`Kvm` or `Tcg`).
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Why [`Vm::accel`] was chosen, for people: `BERTH_ACCEL=tcg`, the verdict recorded for
    /// this host, what the probes found, or what the probation showed.
    pub fn accel_reason(&self) -> &str {
        &self.accel_reason
    }

    /// How long the guest has printed nothing on its console (since QEMU started, if it never
    /// printed anything).
    pub fn silent_for(&self) -> Duration {
        let last = self.console.lock().last_output;
        last.unwrap_or(self.started).elapsed()
    }

    /// The path of QEMU's QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// Waits for a console line for which `pred` is true, among the lines printed so far and
    /// those still to come, and returns it. Only complete lines are matched. Fails on timeout
    /// or when QEMU exits first; the error contains the last 40 console lines.
    pub fn wait_for_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Result<String> {
        let mut next = 0;
        self.console.wait_until("a matching console line", timeout, |st| {
            let found = (next.max(st.first)..st.end())
                .map(|i| &st.lines[i - st.first])
                .find(|line| pred(line))
                .cloned();
            next = st.end();
            found
        })
    }

    /// Waits for an event named `name` for which `pred` is true (among all events so far and
    /// those to come) and returns it. Fails like [`Vm::wait_for_line`].
    pub fn wait_for_event(
        &self,
        name: &str,
        pred: impl Fn(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event> {
        let mut next = 0;
        self.console.wait_until(&format!("event {name}"), timeout, |st| {
            let found = st.events[next..].iter().find(|e| e.name == name && pred(e)).cloned();
            next = st.events.len();
            found
        })
    }

    /// Every event parsed from the console so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.console.lock().events.clone()
    }

    /// The console output so far (the last 100 000 lines), lines joined with `\n`.
    pub fn console_text(&self) -> String {
        self.console.text()
    }

    /// The last `n` console lines (and QEMU's error output, if any).
    pub fn console_tail(&self, n: usize) -> String {
        self.console.tail(n)
    }

    /// How the guest kernel last announced it was stopping, if it did.
    pub fn guest_shutdown(&self) -> Option<GuestShutdown> {
        self.console.lock().shutdown
    }

    /// Writes bytes to the guest's serial console input.
    pub fn send_console(&self, bytes: &[u8]) -> Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pipe) = stdin.as_mut() else {
            return Err(Error::io(
                "writing to the console",
                std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            ));
        };
        pipe.write_all(bytes).and_then(|()| pipe.flush()).map_err(|e| Error::io("writing to the console", e))
    }

    /// Waits until QEMU exits (the guest powered off — or rebooted, since QEMU runs with
    /// `-no-reboot`; see [`Vm::guest_shutdown`]) and returns its exit status. On timeout QEMU
    /// keeps running and the error contains the console tail. After it returns, the console
    /// has been read to its end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "QEMU to exit".into(),
                    secs: timeout.as_secs_f64(),
                    tail: self.console.tail(TAIL_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.console.wait_eof(Duration::from_secs(2));
        match self.guest_shutdown() {
            Some(kind) => log::info!("QEMU exited ({status}) after guest {kind:?}"),
            None => log::info!("QEMU exited ({status})"),
        }
        Ok(status)
    }

    /// QEMU's exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|e| Error::io("waiting for QEMU", e))?;
        }
        Ok(self.status)
    }

    /// Kills QEMU (SIGKILL to its process group) and reaps it; nothing if it already exited.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.status = Some(status);
            return;
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions. QEMU is our unreaped child and leads
        // its own process group (spawned with process_group(0)), so the group id still names it.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => self.status = Some(status),
            Err(e) => log::warn!("reaping QEMU: {e}"),
        }
    }

    /// Connects to QEMU's QMP socket (waiting up to 10 s for it to appear). QEMU serves one
    /// QMP client at a time: drop the returned [`Qmp`] before calling this again.
    pub fn qmp(&self) -> Result<Qmp> {
        Qmp::connect(self.qmp_socket(), Duration::from_secs(10))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let mut cfg = VmConfig::new("/k", "/i", "console=ttyS0 quiet");
        assert_eq!(
            user_net_args(&[(8080, 80)]),
            [
                "-netdev",
                "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80",
                "-device",
                "virtio-net-pci,netdev=net0"
            ]
        );
        cfg.extra_args = vec!["-device".into(), "virtio-net-pci".into()];
        let args: Vec<String> = cfg
            .args(Accel::Tcg, std::path::Path::new("/t/qmp.sock"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("-machine pc -nodefaults -no-user-config"), "{joined}");
        assert!(
            joined.contains("-accel tcg -device virtio-net-pci") || joined.contains("-accel tcg -no-reboot"),
            "{joined}"
        );
        assert!(
            !joined.contains("-cpu") && !joined.contains("virtio-rng"),
            "QEMU's default CPU, no RNG: {joined}"
        );
        assert!(joined.contains("-qmp unix:/t/qmp.sock,server=on,wait=off"), "{joined}");
        assert!(joined.contains("-kernel /k -append"), "{joined}");
        assert!(args.contains(&"console=ttyS0 quiet".to_string()));
        assert!(joined.ends_with("-initrd /i -device virtio-net-pci"), "{joined}");
        assert!(joined.contains("-m 512 -smp 1"), "{joined}");

        let disk =
            VmConfig { machine: Machine::Q35, cpu: Some("max".into()), rng: true, ..VmConfig::default() };
        let joined: Vec<String> = disk
            .args(Accel::Kvm, std::path::Path::new("/q"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = joined.join(" ");
        assert!(joined.contains("-machine q35"), "{joined}");
        assert!(joined.contains("-accel kvm -cpu max -device virtio-rng-pci"), "{joined}");
        assert!(!joined.contains("-kernel") && !joined.contains("-initrd"), "{joined}");
    }

    #[test]
    fn timeout_scale() {
        // Only reads the variable; the default when unset is 60 s.
        if std::env::var_os("BERTH_TIMEOUT_SCALE").is_none() {
            assert_eq!(default_timeout(), Duration::from_secs(60));
        }
    }
}
