//! Which accelerator a VM runs under, and why.
//!
//! `/dev/kvm` and even a passing [`crate::probe_kvm`] prove little: on some hosts a Linux guest
//! under KVM hangs for ever right after the kernel's real-mode setup, while tiny guests run
//! fine. Only a real guest reaching its console proves KVM. So [`Accel::Auto`] is decided in
//! this order (the pure part is [`choose`]):
//!
//! 1. `BERTH_ACCEL=kvm|tcg` forces it;
//! 2. else no `/dev/kvm` means TCG, not recorded (a module loaded later changes that);
//! 3. else a [`Verdict`] cached for this host ([`HostKey`]: CPU model, host kernel, QEMU
//!    version) in a [`VerdictCache`] decides;
//! 4. else the cheap probes run (KVM ioctls, QEMU's reset vector under KVM): a failure means
//!    TCG, recorded;
//! 5. else the VM starts under KVM **on probation** ([`crate::Vm::start`]): if its console shows
//!    no sign of a running kernel (a printk line, a berth event, `Linux version`) within
//!    [`crate::VmConfig::progress_deadline`], QEMU is killed, a TCG verdict is recorded and the
//!    VM starts again under TCG; the first sign of progress records a KVM verdict.
//!
//! Invariant: no step can wait without a bound: every probe and the probation have deadlines,
//! and a verdict once recorded is reused, so the cost is paid once per host.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Decided as this module's documentation says: KVM only when proven on this host.
    #[default]
    Auto,
    /// KVM, even if the probes or a verdict say it does not work.
    Kvm,
    /// Emulation (TCG).
    Tcg,
}

impl Accel {
    /// The name QEMU's `-accel` takes (`Auto` has none: it is decided first).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Interprets a `BERTH_ACCEL` value: `Some(Kvm)`, `Some(Tcg)`, or `None` (decide) when unset,
/// empty, `auto` or unknown.
pub(crate) fn accel_override(value: Option<&str>) -> Option<Accel> {
    match value.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("kvm") => Some(Accel::Kvm),
        Some(v) if v.eq_ignore_ascii_case("tcg") => Some(Accel::Tcg),
        None | Some("") => None,
        Some(v) if v.eq_ignore_ascii_case("auto") => None,
        Some(other) => {
            log::warn!("ignoring BERTH_ACCEL={other:?} (expected kvm, tcg or auto)");
            None
        }
    }
}

/// Whether `/dev/kvm` exists.
pub(crate) fn kvm_device_exists() -> bool {
    Path::new("/dev/kvm").exists()
}

/// `BERTH_ACCEL` from the environment, interpreted by [`accel_override`].
pub(crate) fn env_override() -> Option<Accel> {
    accel_override(std::env::var("BERTH_ACCEL").ok().as_deref())
}

/// What a verdict is valid for: the same CPU, host kernel and QEMU give the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// The host kernel's release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu: String,
}

impl HostKey {
    /// This host's key, computed once per process.
    pub fn current() -> HostKey {
        static KEY: OnceLock<HostKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let cpu_model = cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into());
            let kernel =
                std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
            HostKey { cpu_model, kernel, qemu: qemu_version() }
        })
        .clone()
    }
}

/// The first line of `$BERTH_QEMU --version` (waiting at most 10 s), or `unknown`.
fn qemu_version() -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let program = std::env::var_os("BERTH_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
    let mut cmd = Command::new(program);
    cmd.arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let Ok(mut child) = crate::spawn::spawn_guarded(cmd) else { return "unknown".into() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return "unknown".into();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    out.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether KVM runs real guests on a host, and what showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// KVM works (`true`) or guests must run under TCG.
    pub kvm: bool,
    /// What showed it, for people (`a KVM guest made no progress in 20 s`).
    pub reason: String,
}

/// Verdicts kept on disk, one file for the host (a new [`HostKey`] replaces it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictCache {
    path: PathBuf,
}

impl Default for VerdictCache {
    /// The file `accel-verdict` in berth's cache directory: `$BERTH_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/berth`, else `~/.cache/berth`.
    fn default() -> VerdictCache {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("BERTH_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("berth")))
            .unwrap_or_else(|| var("HOME").unwrap_or_default().join(".cache").join("berth"));
        VerdictCache::in_dir(&dir)
    }
}

impl VerdictCache {
    /// A cache kept in `dir` (created when a verdict is stored).
    pub fn in_dir(dir: &Path) -> VerdictCache {
        VerdictCache { path: dir.join("accel-verdict") }
    }

    /// The file holding the verdict: delete it to have the host judged again.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The verdict recorded for `key`, if any (a file for another key, or unreadable, is none).
    pub fn load(&self, key: &HostKey) -> Option<Verdict> {
        parse_verdict(&std::fs::read_to_string(&self.path).ok()?, key)
    }

    /// Records `verdict` for `key`, atomically (a temporary file renamed over the old one).
    pub fn store(&self, key: &HostKey, verdict: &Verdict) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".accel-verdict.{}", std::process::id()));
        std::fs::write(&tmp, format_verdict(key, verdict))?;
        std::fs::rename(&tmp, &self.path)
    }

    /// [`VerdictCache::store`], logging a failure (a verdict that cannot be kept is only
    /// found again next time).
    pub(crate) fn store_logged(&self, key: &HostKey, verdict: &Verdict) {
        match self.store(key, verdict) {
            Ok(()) => log::info!("accelerator verdict for this host: {}", verdict.reason),
            Err(e) => log::warn!("cannot record the accelerator verdict in {}: {e}", self.path.display()),
        }
    }
}

/// The file format: `key=value` lines; values never contain a newline.
fn format_verdict(key: &HostKey, verdict: &Verdict) -> String {
    let one_line = |s: &str| s.replace('\n', " ");
    format!(
        "cpu={}\nkernel={}\nqemu={}\naccel={}\nreason={}\n",
        one_line(&key.cpu_model),
        one_line(&key.kernel),
        one_line(&key.qemu),
        if verdict.kvm { "kvm" } else { "tcg" },
        one_line(&verdict.reason)
    )
}

fn parse_verdict(text: &str, key: &HostKey) -> Option<Verdict> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='));
    let same_host = field("cpu")? == key.cpu_model.replace('\n', " ")
        && field("kernel")? == key.kernel.replace('\n', " ")
        && field("qemu")? == key.qemu.replace('\n', " ");
    if !same_host {
        return None;
    }
    let kvm = match field("accel")? {
        "kvm" => true,
        "tcg" => false,
        _ => return None,
    };
    Some(Verdict { kvm, reason: field("reason").unwrap_or("").to_string() })
}

/// How one VM with [`Accel::Auto`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Under this accelerator, for this reason; `record` is a new verdict to store.
    Settled { accel: Accel, reason: String, record: Option<Verdict> },
    /// Under KVM on probation: the probes passed but no real guest has proven it yet.
    Probation,
}

/// Decides [`Accel::Auto`] (see the module documentation); `kvm_device`: whether `/dev/kvm`
/// exists. `probe` runs the cheap KVM probes; it is called only when neither the environment,
/// a missing device nor a cached verdict decides.
pub(crate) fn choose(
    forced: Option<Accel>,
    kvm_device: bool,
    cached: Option<Verdict>,
    probe: impl FnOnce() -> Result<(), String>,
) -> Choice {
    if let Some(accel @ (Accel::Kvm | Accel::Tcg)) = forced {
        return Choice::Settled { accel, reason: format!("BERTH_ACCEL={}", accel.name()), record: None };
    }
    // Not judged: the module may be loaded later, and finding out again costs nothing.
    if !kvm_device {
        return Choice::Settled {
            accel: Accel::Tcg,
            reason: "KVM is not usable: /dev/kvm does not exist".into(),
            record: None,
        };
    }
    if let Some(verdict) = cached {
        let accel = if verdict.kvm { Accel::Kvm } else { Accel::Tcg };
        return Choice::Settled {
            accel,
            reason: format!("verdict for this host: {}", verdict.reason),
            record: None,
        };
    }
    match probe() {
        Err(why) => {
            let reason = format!("KVM is not usable: {why}");
            Choice::Settled {
                accel: Accel::Tcg,
                reason: reason.clone(),
                record: Some(Verdict { kvm: false, reason }),
            }
        }
        Ok(()) => Choice::Probation,
    }
}

/// The message and verdict when a guest on probation showed no progress in `waited`.
pub(crate) fn no_progress_verdict(candidate: Accel, waited: Duration) -> Verdict {
    Verdict {
        kvm: false,
        reason: format!(
            "a guest under {} made no progress in {:.0} s (no kernel or berth line on its console)",
            candidate.name(),
            waited.as_secs_f64()
        ),
    }
}

/// The verdict when a guest on probation under KVM showed progress after `after`.
pub(crate) fn progress_verdict(after: Duration) -> Verdict {
    Verdict {
        kvm: true,
        reason: format!("a guest under KVM reached its console in {:.1} s", after.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HostKey {
        HostKey {
            cpu_model: "AMD EPYC".into(),
            kernel: "6.1.0".into(),
            qemu: "QEMU emulator version 10.0.2".into(),
        }
    }

    #[test]
    fn override_values() {
        assert_eq!(accel_override(Some("kvm")), Some(Accel::Kvm));
        assert_eq!(accel_override(Some(" TCG ")), Some(Accel::Tcg));
        assert_eq!(accel_override(Some("auto")), None);
        assert_eq!(accel_override(Some("")), None);
        assert_eq!(accel_override(Some("xen")), None);
        assert_eq!(accel_override(None), None);
    }

    #[test]
    fn the_environment_then_the_cache_then_the_probes_decide() {
        let never = || -> Result<(), String> { panic!("the probes must not run") };
        let tcg = Verdict { kvm: false, reason: "a guest made no progress".into() };
        assert_eq!(
            choose(Some(Accel::Kvm), false, Some(tcg.clone()), never),
            Choice::Settled { accel: Accel::Kvm, reason: "BERTH_ACCEL=kvm".into(), record: None }
        );
        match choose(None, true, Some(tcg.clone()), never) {
            Choice::Settled { accel: Accel::Tcg, reason, record: None } => {
                assert!(reason.contains("made no progress"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match choose(None, true, None, || Err("KVM_CREATE_VM failed".into())) {
            Choice::Settled { accel: Accel::Tcg, reason, record: Some(v) } => {
                assert!(!v.kvm && reason.contains("KVM_CREATE_VM failed"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // No device: TCG, nothing recorded (a module loaded later changes that), even over a
        // cached verdict.
        match choose(None, false, Some(Verdict { kvm: true, reason: "r".into() }), never) {
            Choice::Settled { accel: Accel::Tcg, reason, record: None } => {
                assert!(reason.contains("/dev/kvm does not exist"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(choose(None, true, None, || Ok(())), Choice::Probation);
    }

    #[test]
    fn verdicts_round_trip_and_belong_to_one_host() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VerdictCache::in_dir(&dir.path().join("sub"));
        assert_eq!(cache.load(&key()), None);
        let v = no_progress_verdict(Accel::Kvm, Duration::from_secs(20));
        cache.store(&key(), &v).unwrap();
        assert_eq!(cache.load(&key()), Some(v.clone()));
        assert!(v.reason.contains("in 20 s"), "{}", v.reason);
        let other_qemu = HostKey { qemu: "QEMU emulator version 9.2".into(), ..key() };
        assert_eq!(cache.load(&other_qemu), None, "a new QEMU is judged again");
        let ok = progress_verdict(Duration::from_millis(1500));
        cache.store(&key(), &ok).unwrap();
        assert_eq!(cache.load(&key()), Some(ok));
        std::fs::write(cache.path(), "garbage").unwrap();
        assert_eq!(cache.load(&key()), None);
    }

    #[test]
    fn this_hosts_key_is_filled_in() {
        let k = HostKey::current();
        assert!(!k.kernel.is_empty() && !k.cpu_model.is_empty() && !k.qemu.is_empty(), "{k:?}");
    }
}
