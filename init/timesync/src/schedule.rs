//! When the helper asks again and how it corrects the clock: the decisions, pure and unit
//! tested (the I/O is in `main` and `clock`).
//!
//! - A clock off by 0.4 s or more is stepped (set at once): at boot, from a wrong or missing
//!   hardware clock; later only after a jump (a resumed VM). Smaller offsets are slewed by the
//!   kernel's PLL, as systemd-timesyncd and Talos do (the kernel slews at most 0.5 s per call).
//! - After an answer the next poll waits 32 s, then twice as long each time up to 2048 s (RFC
//!   4330 §10: never more often than every 15 s; chrony's and Talos' range).
//! - After a round with no usable answer it retries in 2 s, doubling up to 64 s, so a machine
//!   whose network comes up late is set soon after.
//! - A Kiss-o'-Death `RATE` doubles the poll interval; `DENY` and `RSTR` drop that server
//!   (`sntp::Refusal::stop_asking`).

use std::time::Duration;

/// The offset from which the clock is stepped rather than slewed, in nanoseconds.
pub const STEP_THRESHOLD_NS: i128 = 400_000_000;
const FIRST_POLL: Duration = Duration::from_secs(32);
const MAX_POLL: Duration = Duration::from_secs(2048);
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(64);

/// How an offset is corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Correction {
    /// Set the clock at once.
    Step,
    /// Let the kernel's PLL bring the clock there gradually.
    Slew,
}

/// The correction for `offset_ns`.
pub fn correction(offset_ns: i128) -> Correction {
    if offset_ns.abs() >= STEP_THRESHOLD_NS {
        Correction::Step
    } else {
        Correction::Slew
    }
}

/// The waits between rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The wait after the next answer.
    poll: Duration,
    /// The wait after the next round without one.
    retry: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { poll: FIRST_POLL, retry: FIRST_RETRY }
    }
}

impl Schedule {
    /// An answer was applied: the wait before the next round.
    pub fn answered(&mut self) -> Duration {
        self.retry = FIRST_RETRY;
        let wait = self.poll;
        self.poll = (self.poll * 2).min(MAX_POLL);
        wait
    }

    /// No server answered usably: the wait before the next round.
    pub fn failed(&mut self) -> Duration {
        let wait = self.retry;
        self.retry = (self.retry * 2).min(MAX_RETRY);
        wait
    }

    /// A server asked us to slow down (Kiss-o'-Death `RATE`).
    pub fn slow_down(&mut self) {
        self.poll = (self.poll * 2).min(MAX_POLL);
        self.retry = (self.retry * 2).min(MAX_POLL);
    }

    /// The poll interval in use, as the PLL's time constant wants it (log2 of seconds).
    pub fn poll_log2(&self) -> u32 {
        self.poll.as_secs().max(1).ilog2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_offsets_step_and_small_ones_slew() {
        assert_eq!(correction(819_000_000_000_000_000), Correction::Step, "25 years behind");
        assert_eq!(correction(-400_000_000), Correction::Step);
        assert_eq!(correction(399_999_999), Correction::Slew);
        assert_eq!(correction(-3_000_000), Correction::Slew);
    }

    #[test]
    fn polls_back_off_to_their_bounds_and_a_failure_resets_nothing_but_the_retry() {
        let mut s = Schedule::default();
        let failed: Vec<u64> = (0..8).map(|_| s.failed().as_secs()).collect();
        assert_eq!(failed, [2, 4, 8, 16, 32, 64, 64, 64]);
        let answered: Vec<u64> = (0..9).map(|_| s.answered().as_secs()).collect();
        assert_eq!(answered, [32, 64, 128, 256, 512, 1024, 2048, 2048, 2048]);
        assert_eq!(s.failed().as_secs(), 2, "an answer resets the retry");
        assert_eq!(s.answered().as_secs(), 2048, "a failure does not shorten the poll");
    }

    #[test]
    fn rate_doubles_the_poll() {
        let mut s = Schedule::default();
        s.slow_down();
        assert_eq!(s.failed().as_secs(), 4, "retries slow down too");
        assert_eq!(s.answered().as_secs(), 64);
        assert_eq!(s.poll_log2(), 7);
    }
}
