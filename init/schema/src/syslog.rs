//! Remote syslog: the target (`[log] syslog = "udp://HOST:PORT"`) and RFC 5424 messages, with
//! RFC 6587 octet counting for TCP. PID 1's sender (`pid1::syslog`) does the I/O.

use std::fmt;
use std::net::SocketAddr;

/// Transport to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message (RFC 5426).
    Udp,
    /// A stream, each message framed as `LEN SP MSG` (RFC 6587 octet counting).
    Tcp,
}

/// Where messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogTarget {
    /// UDP or TCP.
    pub transport: Transport,
    /// The collector's address.
    pub addr: SocketAddr,
}

impl SyslogTarget {
    /// Parses `udp://10.0.2.2:514`, `tcp://[fd00::1]:6514`; the port defaults to 514.
    pub fn parse(text: &str) -> Result<SyslogTarget, String> {
        let (transport, rest) = if let Some(r) = text.strip_prefix("udp://") {
            (Transport::Udp, r)
        } else if let Some(r) = text.strip_prefix("tcp://") {
            (Transport::Tcp, r)
        } else {
            return Err(format!(
                "[log] syslog `{text}`: write udp://ADDRESS:PORT or tcp://ADDRESS:PORT (like \"udp://10.0.2.2:514\")"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let addr = rest
            .parse::<SocketAddr>()
            .or_else(|_| format!("{rest}:514").parse::<SocketAddr>())
            .or_else(|_| format!("[{rest}]:514").parse::<SocketAddr>())
            .map_err(|_| {
                format!("[log] syslog `{text}`: `{rest}` is not an IP address with an optional port (names are not resolved: PID 1 has no DNS resolver)")
            })?;
        Ok(SyslogTarget { transport, addr })
    }
}

impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

crate::text_form::serde_as_text!(SyslogTarget);

/// Facility `daemon` (3): services and PID 1 alike.
pub const FACILITY_DAEMON: u8 = 3;
/// Facility `kern` (0): the kernel's own log.
pub const FACILITY_KERN: u8 = 0;

/// A message's facility and severity (0 emergency … 7 debug): its RFC 5424 PRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    facility: u8,
    severity: u8,
}

impl Priority {
    /// A message of PID 1 or a service (`daemon`).
    pub fn daemon(severity: u8) -> Priority {
        Priority { facility: FACILITY_DAEMON, severity: severity.min(7) }
    }

    /// A record of the kernel's log (`kern`), at its own level.
    pub fn kernel(severity: u8) -> Priority {
        Priority { facility: FACILITY_KERN, severity: severity.min(7) }
    }

    /// The PRI value: facility × 8 + severity.
    pub fn value(self) -> u16 {
        u16::from(self.facility) * 8 + u16::from(self.severity)
    }
}

/// The RFC 3339 UTC timestamp of a Unix time with microseconds (RFC 5424 allows at most six
/// digits of fraction): `2026-11-22T09:15:33.123456Z`.
pub fn rfc3339(secs: i64, micros: u32) -> String {
    let (year, month, day, hour, minute, second) = berth_runtime::civil_time::utc_civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z")
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`. Header fields
/// are printable ASCII without spaces (anything else becomes `_`, empty ones `-`); the message
/// is the line as given (invalid UTF-8 replaced).
#[allow(clippy::too_many_arguments)]
pub fn rfc5424(
    priority: Priority,
    timestamp: &str,
    hostname: &str,
    app: &str,
    procid: Option<u32>,
    msgid: &str,
    message: &[u8],
) -> String {
    fn field(s: &str, max: usize) -> String {
        let f: String = s.chars().take(max).map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
        if f.is_empty() {
            "-".into()
        } else {
            f
        }
    }
    let pri = priority.value();
    let procid = procid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "<{pri}>1 {timestamp} {} {} {procid} {} - {}",
        field(hostname, 255),
        field(app, 48),
        field(msgid, 32),
        String::from_utf8_lossy(message)
    )
}

/// A message framed for TCP (RFC 6587 octet counting).
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = SyslogTarget::parse("udp://10.0.2.2:5514").unwrap();
        assert_eq!((t.transport, t.addr.to_string()), (Transport::Udp, "10.0.2.2:5514".to_string()));
        assert_eq!(SyslogTarget::parse("tcp://10.0.2.2").unwrap().addr.port(), 514);
        assert_eq!(SyslogTarget::parse("tcp://[fd00::1]:6514").unwrap().to_string(), "tcp://[fd00::1]:6514");
        assert!(SyslogTarget::parse("10.0.2.2:514").unwrap_err().contains("udp://"));
        assert!(SyslogTarget::parse("udp://logs.example.com:514").unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(rfc3339(1_795_338_933, 123_456), "2026-11-22T09:15:33.123456Z");
        assert_eq!(rfc3339(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z");
    }

    #[test]
    fn messages() {
        let m = rfc5424(
            Priority::daemon(6),
            "2026-11-22T09:15:33.000000Z",
            "edge",
            "web",
            Some(78),
            "-",
            b"hello world",
        );
        assert_eq!(m, "<30>1 2026-11-22T09:15:33.000000Z edge web 78 - - hello world");
        let m = rfc5424(Priority::daemon(3), "T", "", "a b", None, "event", b"x");
        assert_eq!(m, "<27>1 T - a_b - event - x");
        // The kernel's records keep their level under `kern`: PRI is the level.
        let m = rfc5424(Priority::kernel(4), "T", "edge", "kernel", None, "-", b"eth0: link up");
        assert_eq!(m, "<4>1 T edge kernel - - - eth0: link up");
        assert_eq!(octet_counted("abc"), "3 abc");
    }
}
