//! What a machine left alone needs, as `[system]` spells it: the hardware watchdog's timeout
//! (`watchdog = "30s"`), compressed swap in RAM (`zram = "50%"` or `"512m"`) and the memory
//! pressure at which a container is reported (`pressure_warning = "10%"`). Each is one typed
//! value, parsed once from its text; PID 1 acts on them (`pid1::watchdog`, `pid1::memory`).

use std::fmt;
use std::time::Duration;

use crate::units;

/// The hardware watchdog's timeout: whole seconds, 5 s to 1 hour. (A driver may allow less:
/// the i6300ESB takes up to 2046 s; PID 1 then pets by the timeout the driver keeps.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogTimeout(u32);

impl WatchdogTimeout {
    /// Parses `"30s"`, `"1m"` or `30`.
    pub fn parse(text: &str) -> Result<WatchdogTimeout, String> {
        let d = units::parse_duration(text)?;
        if d.subsec_nanos() != 0 {
            return Err(format!("watchdog `{text}`: watchdogs count whole seconds; write it like \"30s\""));
        }
        match u32::try_from(d.as_secs()) {
            Ok(s @ 5..=3600) => Ok(WatchdogTimeout(s)),
            _ => Err(format!(
                "watchdog `{text}`: the timeout must be 5 s to 1 h (PID 1 pets the watchdog every third of it)"
            )),
        }
    }

    /// In seconds.
    pub fn secs(self) -> u32 {
        self.0
    }

    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0.into())
    }
}

impl fmt::Display for WatchdogTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

/// The size of the zram swap device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZramSize {
    /// A share of the machine's memory (1–100 %; zram holds pages compressed, so 50 % of RAM
    /// in swap takes a fraction of that).
    Percent(u8),
    /// Bytes (at least 1 MiB).
    Bytes(u64),
}

impl ZramSize {
    /// Parses `"50%"` or a size (`"512m"`).
    pub fn parse(text: &str) -> Result<ZramSize, String> {
        if let Some(p) = text.trim().strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(ZramSize::Percent(p)),
                _ => Err(format!("zram `{text}`: a share of the memory is 1% to 100%")),
            };
        }
        let bytes = units::parse_bytes(text)
            .map_err(|e| format!("zram: {e}; or a share of the memory like \"50%\""))?;
        if bytes < 1 << 20 {
            return Err(format!("zram `{text}`: the swap device must be at least 1 MiB"));
        }
        Ok(ZramSize::Bytes(bytes))
    }

    /// The device's size on a machine with `memory` bytes, in whole 4 KiB pages.
    pub fn bytes(self, memory: u64) -> u64 {
        let b = match self {
            ZramSize::Percent(p) => memory / 100 * u64::from(p),
            ZramSize::Bytes(b) => b,
        };
        b & !4095
    }
}

impl fmt::Display for ZramSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZramSize::Percent(p) => write!(f, "{p}%"),
            ZramSize::Bytes(b) => write!(f, "{b}"),
        }
    }
}

/// When a container's memory pressure is reported: the share of a one-second window its tasks
/// spent stalled on memory (PSI's `some`), or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureWarning {
    /// No reports.
    Off,
    /// Report at this share (1–100 %) of a second.
    Percent(u8),
}

impl Default for PressureWarning {
    /// 10 %: tasks waited 100 ms of a second for memory (reclaim, swap-in, refaults).
    fn default() -> Self {
        PressureWarning::Percent(10)
    }
}

/// PSI's window for the trigger: one second.
pub const PRESSURE_WINDOW_US: u32 = 1_000_000;

impl PressureWarning {
    /// Parses `"10%"` or `"off"`.
    pub fn parse(text: &str) -> Result<PressureWarning, String> {
        if text.trim() == "off" {
            return Ok(PressureWarning::Off);
        }
        match text.trim().strip_suffix('%').map(|p| p.trim().parse::<u8>()) {
            Some(Ok(p @ 1..=100)) => Ok(PressureWarning::Percent(p)),
            _ => Err(format!(
                "pressure_warning `{text}`: write a share of a second like \"10%\" (1% to 100%), or \"off\""
            )),
        }
    }

    /// The PSI trigger to write (`some STALL_US WINDOW_US`), when on.
    pub fn trigger(self) -> Option<String> {
        match self {
            PressureWarning::Off => None,
            PressureWarning::Percent(p) => {
                Some(format!("some {} {PRESSURE_WINDOW_US}", u32::from(p) * (PRESSURE_WINDOW_US / 100)))
            }
        }
    }

    /// The threshold as PSI's averages (`avg10`) state it, in percent.
    pub fn percent(self) -> Option<u8> {
        match self {
            PressureWarning::Off => None,
            PressureWarning::Percent(p) => Some(p),
        }
    }
}

impl fmt::Display for PressureWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PressureWarning::Off => f.write_str("off"),
            PressureWarning::Percent(p) => write!(f, "{p}%"),
        }
    }
}

crate::text_form::serde_as_text!(WatchdogTimeout, ZramSize, PressureWarning);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_timeouts_are_whole_seconds_in_range() {
        assert_eq!(WatchdogTimeout::parse("30s").unwrap().secs(), 30);
        assert_eq!(WatchdogTimeout::parse("1m").unwrap().secs(), 60);
        assert_eq!(WatchdogTimeout::parse("10").unwrap().duration(), Duration::from_secs(10));
        assert!(WatchdogTimeout::parse("1500ms").unwrap_err().contains("whole seconds"));
        assert!(WatchdogTimeout::parse("4s").unwrap_err().contains("5 s to 1 h"));
        assert!(WatchdogTimeout::parse("2h").unwrap_err().contains("5 s to 1 h"));
        assert!(WatchdogTimeout::parse("soon").unwrap_err().contains("not a duration"));
        let t = WatchdogTimeout::parse("45s").unwrap();
        assert_eq!(WatchdogTimeout::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn zram_is_a_share_or_a_size() {
        assert_eq!(ZramSize::parse("50%").unwrap(), ZramSize::Percent(50));
        assert_eq!(ZramSize::parse("512m").unwrap(), ZramSize::Bytes(512 << 20));
        assert_eq!(ZramSize::Percent(50).bytes(1000 << 20), 500 << 20);
        assert_eq!(ZramSize::Percent(33).bytes(1 << 30) % 4096, 0, "whole pages");
        for (bad, why) in
            [("0%", "1% to 100%"), ("150%", "1% to 100%"), ("4k", "at least 1 MiB"), ("lots", "not a size")]
        {
            let e = ZramSize::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for z in [ZramSize::Percent(25), ZramSize::Bytes(3 << 20)] {
            assert_eq!(ZramSize::parse(&z.to_string()).unwrap(), z);
        }
    }

    #[test]
    fn pressure_warnings_become_psi_triggers() {
        assert_eq!(PressureWarning::default().trigger().as_deref(), Some("some 100000 1000000"));
        assert_eq!(PressureWarning::parse("25%").unwrap().trigger().as_deref(), Some("some 250000 1000000"));
        assert_eq!(PressureWarning::parse("off").unwrap().trigger(), None);
        assert!(PressureWarning::parse("0%").unwrap_err().contains("1% to 100%"));
        assert!(PressureWarning::parse("10").unwrap_err().contains("like \"10%\""));
        for p in [PressureWarning::Off, PressureWarning::Percent(7)] {
            assert_eq!(PressureWarning::parse(&p.to_string()).unwrap(), p);
        }
    }
}
