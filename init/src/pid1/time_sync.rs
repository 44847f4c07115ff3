//! Network time (`[system] ntp`), PID 1's side: the helper (`berth-timesync`, a child: it
//! resolves names and waits on the network) started once the network is up with the servers
//! of the config and of DHCP (option 42), its reports read without blocking, the services
//! that wait for `time` told once the clock is set, and the hardware clock written at a
//! deliberate shutdown.
//!
//! Order: [`TimeSync::new`] at boot → [`TimeSync::network_ready`] spawns the helper (once;
//! `time.failed` when no server is known) → each report line → `time.synced` (the first
//! answer, and every step after it) or `time.failed` (a round with no usable answer) → the
//! first answer wakes the services waiting for `time` (`Pid1Event::TimeSynced`) → at
//! shutdown, [`save_to_rtc`] when the clock was set.

use std::net::Ipv4Addr;
use std::time::Instant;

use berth_schema::time_sync::{self, NtpSource, TimeReport};
use nix::poll::{PollFd, PollFlags};

use super::event_source::{EventSource, Pid1Event};
use super::helper_process::{self, HelperProcess};
use super::log;

/// The hardware clock written at shutdown.
const RTC: &str = "/dev/rtc0";

/// The time step: its sources, the helper once started, whether the clock was set.
pub struct TimeSync {
    sources: Vec<NtpSource>,
    helper: Option<HelperProcess>,
    started: bool,
    synced: bool,
    /// Synced, or known not to be soon (a round failed, no server, no helper).
    settled: bool,
}

impl TimeSync {
    /// The time step for `sources` (`None` when the config names none).
    pub fn new(sources: &[NtpSource]) -> Option<TimeSync> {
        (!sources.is_empty()).then(|| TimeSync {
            sources: sources.to_vec(),
            helper: None,
            started: false,
            synced: false,
            settled: false,
        })
    }

    /// Whether the clock was set from NTP in this boot.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether the clock is as right as it will be soon: set from NTP, or NTP failed once
    /// (what waits on HTTPS, the update check, need not wait longer).
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// The network is up: starts the helper (once) with the config's servers, `"dhcp"`
    /// replaced by `from_dhcp`.
    pub fn network_ready(&mut self, from_dhcp: &[Ipv4Addr]) {
        if self.started {
            return;
        }
        self.started = true;
        let servers = time_sync::servers(&self.sources, from_dhcp);
        if servers.is_empty() {
            self.settled = true;
            log::emit(log::event("time.failed").with(
                "error",
                "no NTP server: [system] ntp = [\"dhcp\"] and DHCP offered none (option 42); name a server too",
            ));
            return;
        }
        let args: Vec<String> =
            servers.iter().flat_map(|s| ["--server".to_string(), s.to_string()]).collect();
        match HelperProcess::spawn(&helper_process::path(time_sync::HELPER), &args, false) {
            Ok(h) => self.helper = Some(h),
            Err(e) => {
                self.settled = true;
                log::emit(log::event("time.failed").with("error", e));
            }
        }
    }

    /// Reads the helper's reports: events, and the first sync for the rest of PID 1.
    fn read_reports(&mut self, out: &mut Vec<Pid1Event>) {
        let Some(helper) = self.helper.as_mut() else { return };
        let (lines, ended) = helper.read_lines();
        for line in lines {
            match serde_json::from_str::<TimeReport>(&line) {
                Ok(TimeReport::Synced(s)) => {
                    let first = !self.synced;
                    if first || s.stepped {
                        log::emit(
                            log::event("time.synced")
                                .with("server", &s.server)
                                .with("offset_ms", format!("{:.3}", s.offset_us as f64 / 1000.0))
                                .with("delay_ms", format!("{:.3}", s.delay_us as f64 / 1000.0))
                                .with("stratum", s.stratum)
                                .with("stepped", s.stepped),
                        );
                    }
                    if first {
                        self.synced = true;
                        self.settled = true;
                        out.push(Pid1Event::TimeSynced);
                    }
                }
                Ok(TimeReport::Failed(e)) => {
                    self.settled = true;
                    log::emit(log::event("time.failed").with("error", e));
                }
                Err(e) => {
                    log::warn(&format!("time: an unreadable report from {} ({e}): {line}", time_sync::HELPER))
                }
            }
        }
        if ended {
            self.helper = None;
            self.settled = true;
            log::emit(log::event("time.failed").with("error", format!("{} ended", time_sync::HELPER)));
        }
    }
}

impl EventSource for Option<TimeSync> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(h) = self.as_ref().and_then(|t| t.helper.as_ref()) {
            fds.push(PollFd::new(h.stdout(), PollFlags::POLLIN));
        }
    }

    fn service(&mut self, _now: Instant, out: &mut Vec<Pid1Event>) {
        if let Some(t) = self {
            t.read_reports(out);
        }
    }
}

/// `struct rtc_time` (`<linux/rtc.h>`): `struct tm`'s first nine fields.
#[repr(C)]
#[derive(Default)]
struct RtcTime {
    sec: i32,
    min: i32,
    hour: i32,
    mday: i32,
    /// 0–11.
    mon: i32,
    /// Years since 1900.
    year: i32,
    wday: i32,
    yday: i32,
    isdst: i32,
}

nix::ioctl_write_ptr!(rtc_set_time, b'p', 0x0a, RtcTime);

/// The hardware clock's fields for `unix_s` seconds since 1970, in UTC.
fn rtc_time(unix_s: i64) -> RtcTime {
    let (year, month, day, hour, min, sec) = berth_runtime::civil_time::utc_civil(unix_s);
    let field = |v: i64| i32::try_from(v).unwrap_or(0);
    RtcTime {
        sec: field(sec),
        min: field(min),
        hour: field(hour),
        mday: field(day),
        mon: field(month - 1),
        year: field(year - 1900),
        // 1970-01-01 was a Thursday.
        wday: field((unix_s.div_euclid(86_400) + 4).rem_euclid(7)),
        ..RtcTime::default()
    }
}

/// Writes the system time (set from NTP) into the hardware clock, so the next boot starts
/// near the right time before any server answers (`time.rtc_saved`).
pub fn save_to_rtc() {
    use std::os::fd::AsRawFd;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t = rtc_time(i64::try_from(now).unwrap_or(0));
    let result = std::fs::OpenOptions::new().write(true).open(RTC).map_err(|e| e.to_string()).and_then(|f| {
        // SAFETY: the descriptor is open for the call; the kernel reads one rtc_time from `t`.
        unsafe { rtc_set_time(f.as_raw_fd(), &t) }.map(drop).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => log::emit(log::event("time.rtc_saved").with("year", t.year + 1900)),
        Err(e) => log::warn(&format!("time: cannot write the hardware clock {RTC}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hardware_clock_gets_utc_fields() {
        let t = rtc_time(0);
        assert_eq!((t.year, t.mon, t.mday, t.hour, t.min, t.sec, t.wday), (70, 0, 1, 0, 0, 0, 4));
        // 2026-12-05T23:59:58Z, a Saturday.
        let t = rtc_time(1_796_515_198);
        assert_eq!((t.year, t.mon, t.mday, t.hour, t.min, t.sec, t.wday), (126, 11, 5, 23, 59, 58, 6));
        // 2000-02-29T12:00:00Z, a leap day (Tuesday).
        let t = rtc_time(951_825_600);
        assert_eq!((t.year, t.mon, t.mday, t.hour, t.wday), (100, 1, 29, 12, 2));
    }

    #[test]
    fn servers_are_needed() {
        assert!(TimeSync::new(&[]).is_none());
        let mut t = TimeSync::new(&[NtpSource::Dhcp]).unwrap();
        assert!(!t.synced() && !t.settled());
        // "dhcp" alone, and DHCP offered no server: nothing to wait for.
        t.network_ready(&[]);
        assert!(!t.synced() && t.settled());
    }
}
