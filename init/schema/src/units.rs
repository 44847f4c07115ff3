//! Docker's spellings of sizes and durations: `512m`, `1.5g`, `10s`, `500ms`.

use std::time::Duration;

/// Parses a byte size the way `docker run --memory` does: a number with an optional
/// `b`, `k`, `m`, `g` or `t` suffix (binary multiples, case-insensitive).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix("ib").map(|s| s.to_string()).unwrap_or(t);
    let t = t.strip_suffix('b').map(|s| s.to_string()).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (&t[..], 1),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write it like \"512m\", \"1g\" or \"65536\""))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("`{text}` is not a size; it must be a positive number"));
    }
    let bytes = value * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    // Finite, non-negative and at most u64::MAX (checked above); `as` rounds the fraction.
    #[allow(clippy::cast_possible_truncation)]
    Ok(bytes as u64)
}

/// The longest duration [`parse_duration`] accepts: 100 years. PID 1 adds durations to the
/// clock (`Instant + Duration` panics past `i64` seconds), and a boot-time fragment is input
/// from outside the image.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration like Docker's `--stop-timeout`/healthcheck intervals: `10s`, `500ms`,
/// `2m`, `1h`, or a bare number of seconds; at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write it like \"10s\", \"500ms\" or \"2m\""))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("`{text}` is not a duration; it must be positive"));
    }
    // `from_secs_f64` panics on a value too large for a `Duration` (found by
    // tests/fuzz_inputs.rs: `interval = "18446744073709551616s"`).
    match Duration::try_from_secs_f64(value * unit) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("`{text}` is too long; durations are at most 100 years")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("64k"), Ok(65536));
        assert_eq!(parse_bytes("100MiB"), Ok(100 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1m").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("18446744073709551616s").unwrap_err().contains("too long"));
        assert!(parse_duration("1e300h").unwrap_err().contains("too long"));
        assert!(parse_duration("9223372036854775807").unwrap_err().contains("too long"));
        assert_eq!(parse_duration("876000h"), Ok(Duration::from_secs(876_000 * 3600)));
    }
}
