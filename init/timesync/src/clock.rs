//! The system clock: read, stepped, slewed (`clock_adjtime(2)` on `CLOCK_REALTIME`, the calls
//! systemd-timesyncd makes). Both leave `STA_UNSYNC` clear, which turns on the kernel's
//! 11-minute copy of the system time into the hardware clock (`CONFIG_RTC_SYSTOHC`).

use std::time::{SystemTime, UNIX_EPOCH};

/// The clock now, in nanoseconds since 1970 (negative before it).
pub fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

fn adjtime(tx: &mut libc::timex) -> Result<(), String> {
    // SAFETY: `tx` is a valid, initialised timex the kernel reads and writes for the call.
    let rc = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, tx) };
    // The call returns the clock's state (TIME_OK … TIME_ERROR), not 0, on success.
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

fn zeroed_timex() -> libc::timex {
    // SAFETY: timex is plain integers; all zeroes is a valid value (no mode set).
    unsafe { std::mem::zeroed() }
}

/// Moves the clock by `offset_ns` at once.
pub fn step(offset_ns: i128) -> Result<(), String> {
    let mut tx = zeroed_timex();
    tx.modes =
        libc::ADJ_SETOFFSET | libc::ADJ_NANO | libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
    tx.status = libc::STA_PLL;
    // With ADJ_NANO the "usec" field holds nanoseconds, and must not be negative:
    // −0.3 s is {−1 s, 700 000 000 ns}.
    tx.time.tv_sec = libc::time_t::try_from(offset_ns.div_euclid(1_000_000_000))
        .map_err(|_| format!("an offset of {offset_ns} ns is out of range"))?;
    tx.time.tv_usec = libc::suseconds_t::try_from(offset_ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    adjtime(&mut tx)
}

/// Lets the kernel's PLL slew the clock by `offset_ns` (below 0.5 s), with the time constant
/// for polls every 2^`poll_log2` seconds.
pub fn slew(offset_ns: i128, poll_log2: u32) -> Result<(), String> {
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_OFFSET
        | libc::ADJ_NANO
        | libc::ADJ_STATUS
        | libc::ADJ_TIMECONST
        | libc::ADJ_MAXERROR
        | libc::ADJ_ESTERROR;
    tx.status = libc::STA_PLL;
    tx.offset = libc::c_long::try_from(offset_ns.clamp(-499_999_999, 499_999_999)).unwrap_or(0);
    // The PLL's time constant: log2(poll) − 4, as timesyncd sets it.
    tx.constant = libc::c_long::from(poll_log2.saturating_sub(4));
    adjtime(&mut tx)
}
