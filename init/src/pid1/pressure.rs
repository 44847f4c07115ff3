//! Memory pressure reports (`[system] pressure_warning`, PSI): an early warning, before the
//! OOM killer, that a container's tasks wait for memory (reclaim, swap-in, refaults).
//!
//! Every [`SCAN_EVERY`] PID 1 looks for containers' cgroups (`/sys/fs/cgroup/berth/NAME`) it
//! does not watch yet and writes a PSI trigger into each one's `memory.pressure` (opened
//! read-write, non-blocking: `some STALL_US 1000000`). The loop polls the triggers for
//! `POLLPRI` (the kernel raises it at most once per window, and the poll that reports it
//! consumes it: the loop hands each source what it saw, `EventSource::woke`) and `POLLERR` (the
//! cgroup is gone: the watch is dropped, and made again if the container comes back). A trigger makes the
//! container "under pressure" (`container.pressure`); while it is, its stall total is read every
//! [`EASE_CHECK_EVERY`], and once the share stalled since the last look falls below half the
//! threshold (PSI's `avg10` lags by tens of seconds), `container.pressure_eased`.
//! The decisions are [`next`] (pure); a kernel without PSI is said once and nothing is watched.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_schema::appliance::PressureWarning;
use nix::poll::{PollFd, PollFlags};

use super::event_source::{EventSource, Pid1Event};
use super::launch_spec::CGROUP_PARENT;
use super::log;

/// How often new containers' cgroups are looked for.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// How often a container under pressure is looked at again.
const EASE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// A cgroup's `memory.pressure` figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// Share of the last 10 s some task waited for memory, in percent.
    pub some_avg10: f64,
    /// Share of the last 10 s every task waited, in percent.
    pub full_avg10: f64,
    /// Time some task waited, in all, in microseconds.
    pub some_total_us: u64,
}

/// Reads `memory.pressure`'s text (`some avg10=… avg60=… avg300=… total=…` and `full …`).
pub fn parse(text: &str) -> Option<Pressure> {
    let avg10 = |kind: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(kind))
            .and_then(|rest| rest.split_whitespace().find_map(|f| f.strip_prefix("avg10=")))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let some_total_us = text
        .lines()
        .find_map(|l| l.strip_prefix("some "))
        .and_then(|rest| rest.split_whitespace().find_map(|f| f.strip_prefix("total=")))
        .and_then(|v| v.parse::<u64>().ok())?;
    Some(Pressure { some_avg10: avg10("some ")?, full_avg10: avg10("full ").unwrap_or(0.0), some_total_us })
}

/// What a container's watch saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// The trigger fired: stalls over the threshold within one window.
    Triggered,
    /// A later look: the share of the time since the last look some task stalled, in percent.
    Since(f64),
}

/// What to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The container came under pressure.
    Rose,
    /// The pressure fell back under half the threshold.
    Eased,
}

/// The change a sighting makes for a container `high` (under pressure) or not, at a threshold
/// of `percent`. Pure.
pub fn next(high: bool, seen: Seen, percent: u8) -> Option<Change> {
    match (high, seen) {
        (false, Seen::Triggered) => Some(Change::Rose),
        (true, Seen::Since(share)) if share < f64::from(percent) / 2.0 => Some(Change::Eased),
        _ => None,
    }
}

/// The share (percent) of `elapsed` that `stalled_us` is.
fn share(stalled_us: u64, elapsed: Duration) -> f64 {
    let us = elapsed.as_micros().max(1) as f64;
    stalled_us as f64 * 100.0 / us
}

/// One container's trigger.
struct Watch {
    trigger: File,
    cgroup: PathBuf,
    /// Under pressure: when to look again, and the stall total and time of the last look.
    high: Option<(Instant, u64, Instant)>,
    /// What the last wait saw on the trigger.
    revents: PollFlags,
}

/// Every container's watch.
pub struct PressureWatch {
    trigger: String,
    percent: u8,
    watches: BTreeMap<String, Watch>,
    next_scan: Instant,
}

impl PressureWatch {
    /// The watch for `warning` (`None` when off, or when the kernel has no PSI: said once).
    pub fn new(warning: PressureWarning, now: Instant) -> Option<PressureWatch> {
        let (trigger, percent) = (warning.trigger()?, warning.percent()?);
        if !Path::new("/proc/pressure/memory").exists() {
            log::info("pressure: the kernel has no PSI (CONFIG_PSI): no memory pressure reports");
            return None;
        }
        Some(PressureWatch { trigger, percent, watches: BTreeMap::new(), next_scan: now })
    }

    /// Watches the containers' cgroups not watched yet.
    fn scan(&mut self) {
        let Ok(dir) = std::fs::read_dir(CGROUP_PARENT) else { return };
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            if self.watches.contains_key(&name) || !entry.path().join("cgroup.procs").exists() {
                continue;
            }
            let cgroup = entry.path();
            // A cgroup removed meanwhile is looked at again at the next scan.
            if let Ok(trigger) = open_trigger(&cgroup, &self.trigger) {
                self.watches.insert(name, Watch { trigger, cgroup, high: None, revents: PollFlags::empty() });
            }
        }
    }

    fn report(&self, name: &str, change: Change, p: Option<Pressure>) {
        let event = match change {
            Change::Rose => log::event("container.pressure")
                .with("name", name)
                .with("resource", "memory")
                .with("threshold", format!("{}%", self.percent)),
            Change::Eased => {
                log::event("container.pressure_eased").with("name", name).with("resource", "memory")
            }
        };
        let event = match p {
            Some(p) => event
                .with("some_avg10", format!("{:.2}", p.some_avg10))
                .with("full_avg10", format!("{:.2}", p.full_avg10)),
            None => event,
        };
        log::emit(event);
    }
}

/// Opens `memory.pressure` read-write and non-blocking, and writes the trigger.
fn open_trigger(cgroup: &Path, trigger: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(cgroup.join("memory.pressure"))?;
    f.write_all(trigger.as_bytes())?;
    Ok(f)
}

fn read_pressure(cgroup: &Path) -> Option<Pressure> {
    parse(&std::fs::read_to_string(cgroup.join("memory.pressure")).ok()?)
}

impl EventSource for Option<PressureWatch> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(w) = self {
            fds.extend(
                w.watches.values().map(|watch| PollFd::new(watch.trigger.as_fd(), PollFlags::POLLPRI)),
            );
        }
    }

    fn woke(&mut self, revents: &[PollFlags]) {
        if let Some(w) = self {
            // The same watches, in the same order, as `interest` lent them.
            for (watch, r) in w.watches.values_mut().zip(revents) {
                watch.revents = *r;
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let w = self.as_ref()?;
        w.watches.values().filter_map(|watch| watch.high.map(|(at, ..)| at)).chain([w.next_scan]).min()
    }

    fn service(&mut self, now: Instant, _out: &mut Vec<Pid1Event>) {
        let Some(w) = self else { return };
        if now >= w.next_scan {
            w.scan();
            w.next_scan = now + SCAN_EVERY;
        }
        let mut gone = Vec::new();
        let mut changes = Vec::new();
        for (name, watch) in &mut w.watches {
            let revents = std::mem::replace(&mut watch.revents, PollFlags::empty());
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) || !watch.cgroup.exists() {
                gone.push(name.clone());
                continue;
            }
            let mut current = None;
            let seen = match watch.high {
                _ if revents.contains(PollFlags::POLLPRI) => Some(Seen::Triggered),
                Some((at, total, since)) if now >= at => {
                    current = read_pressure(&watch.cgroup);
                    current.map(|p| Seen::Since(share(p.some_total_us.saturating_sub(total), now - since)))
                }
                _ => None,
            };
            let Some(seen) = seen else { continue };
            let current = current.or_else(|| read_pressure(&watch.cgroup));
            // An unreadable file keeps the last look's figures (or none: a share too large to ease).
            let look_again = Some(match (current, watch.high) {
                (Some(p), _) => (now + EASE_CHECK_EVERY, p.some_total_us, now),
                (None, Some((_, total, since))) => (now + EASE_CHECK_EVERY, total, since),
                (None, None) => (now + EASE_CHECK_EVERY, 0, now),
            });
            match next(watch.high.is_some(), seen, w.percent) {
                Some(Change::Rose) => {
                    watch.high = look_again;
                    changes.push((name.clone(), Change::Rose, current));
                }
                Some(Change::Eased) => {
                    watch.high = None;
                    changes.push((name.clone(), Change::Eased, current));
                }
                None if watch.high.is_some() => watch.high = look_again,
                None => {}
            }
        }
        for name in gone {
            w.watches.remove(&name);
        }
        for (name, change, p) in changes {
            w.report(&name, change, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_files_are_read() {
        let text = "some avg10=12.50 avg60=3.00 avg300=0.61 total=812345\nfull avg10=4.25 avg60=1.00 avg300=0.20 total=2345\n";
        assert_eq!(
            parse(text),
            Some(Pressure { some_avg10: 12.5, full_avg10: 4.25, some_total_us: 812_345 })
        );
        // cpu.pressure of older kernels has no `full` line.
        assert_eq!(
            parse("some avg10=1.00 avg60=0.00 avg300=0.00 total=1\n"),
            Some(Pressure { some_avg10: 1.0, full_avg10: 0.0, some_total_us: 1 })
        );
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn a_trigger_raises_and_low_averages_ease() {
        let p = |stalled_ms: u64| Seen::Since(share(stalled_ms * 1000, Duration::from_secs(5)));
        assert_eq!(next(false, Seen::Triggered, 10), Some(Change::Rose));
        assert_eq!(next(true, Seen::Triggered, 10), None, "said once while it lasts");
        assert_eq!(next(true, p(350), 10), None, "7% of the last 5 s: above half the threshold");
        assert_eq!(next(true, p(249), 10), Some(Change::Eased), "under 5%");
        assert_eq!(next(false, p(2500), 10), None, "only the trigger raises");
    }
}
