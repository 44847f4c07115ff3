//! Network time: the `[system] ntp` sources (`"dhcp"`, `"HOST"`, `"HOST:PORT"`), the report
//! lines the time helper (`berth-timesync`) gives PID 1, and `depends_on = ["time"]`.
//!
//! The helper does the networking (names, SNTP, the clock); PID 1 only starts it once the
//! network is up, reads its reports, tells the services that wait for `time`, and writes the
//! hardware clock at shutdown.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The helper's file name, in the plan's tools directory.
pub const HELPER: &str = "berth-timesync";

/// The dependency a service names to start only once the clock is right.
pub const TIME_UNIT: &str = "time";

/// The NTP port.
pub const NTP_PORT: u16 = 123;

/// One entry of `[system] ntp`, in the order servers are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtpSource {
    /// The servers DHCP offered (option 42), in its order.
    Dhcp,
    /// A server by name or address.
    Server(NtpServer),
}

/// A server to ask: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtpServer {
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The UDP port (123 unless given).
    pub port: u16,
}

impl NtpServer {
    /// `host:port` as a socket address resolver takes it (`[v6]:port` for IPv6).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for NtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == NTP_PORT && !self.host.contains(':') {
            f.write_str(&self.host)
        } else {
            f.write_str(&self.authority())
        }
    }
}

impl NtpServer {
    /// Parses `pool.ntp.example`, `10.0.2.2:1123`, `[fd00::1]:123` or `fd00::1`.
    pub fn parse(text: &str) -> Result<NtpServer, String> {
        let bad = |why: &str| {
            format!("NTP server `{text}`: {why}; write a host name or an IP address, with an optional :PORT (like \"time.example.com\" or \"10.0.2.2:123\")")
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("no `]` after the IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("`]` must be followed by :PORT"))?),
            };
            (host, port)
        } else if text.matches(':').count() > 1 {
            (text, None)
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        if host.contains(':') {
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad("not an IPv6 address"))?;
        } else if !is_host_name(host) {
            return Err(bad("not a host name"));
        }
        let port = match port {
            None => NTP_PORT,
            Some(p) => {
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port is not 1–65535"))?
            }
        };
        Ok(NtpServer { host: host.to_string(), port })
    }
}

/// A DNS name or dotted IPv4 address: labels of letters, digits and `-`, 1–63 long, 253 in all.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl NtpSource {
    /// Parses one `[system] ntp` entry: `"dhcp"` or a server.
    pub fn parse(text: &str) -> Result<NtpSource, String> {
        if text == "dhcp" {
            return Ok(NtpSource::Dhcp);
        }
        NtpServer::parse(text).map(NtpSource::Server)
    }
}

impl fmt::Display for NtpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NtpSource::Dhcp => f.write_str("dhcp"),
            NtpSource::Server(s) => s.fmt(f),
        }
    }
}

crate::text_form::serde_as_text!(NtpSource);

/// The servers to ask, in order: `sources` with `"dhcp"` replaced by what DHCP offered,
/// without repeats.
pub fn servers(sources: &[NtpSource], from_dhcp: &[std::net::Ipv4Addr]) -> Vec<NtpServer> {
    let mut out: Vec<NtpServer> = Vec::new();
    for s in sources {
        let add: Vec<NtpServer> = match s {
            NtpSource::Dhcp => {
                from_dhcp.iter().map(|a| NtpServer { host: a.to_string(), port: NTP_PORT }).collect()
            }
            NtpSource::Server(server) => vec![server.clone()],
        };
        for server in add {
            if !out.contains(&server) {
                out.push(server);
            }
        }
    }
    out
}

/// One line of the helper's output (JSON): what PID 1 reports and acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeReport {
    /// The clock was set (stepped or slewed) from a server's answer.
    Synced(Sample),
    /// No server gave a usable answer this round (each one's reason).
    Failed(String),
}

/// A server's answer, applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The server (`host:port`) and the address it was reached at.
    pub server: String,
    /// How far the clock was from the server's, in microseconds (positive: it was behind).
    pub offset_us: i64,
    /// The round trip, in microseconds.
    pub delay_us: u64,
    /// The server's stratum (1–15).
    pub stratum: u8,
    /// Whether the clock was stepped (set at once) rather than slewed.
    pub stepped: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn server(host: &str, port: u16) -> NtpServer {
        NtpServer { host: host.into(), port }
    }

    #[test]
    fn sources_parse_and_print_back() {
        for (text, want) in [
            ("dhcp", NtpSource::Dhcp),
            ("time.example.com", NtpSource::Server(server("time.example.com", 123))),
            ("10.0.2.2:1123", NtpSource::Server(server("10.0.2.2", 1123))),
            ("[fd00::1]:124", NtpSource::Server(server("fd00::1", 124))),
            ("fd00::1", NtpSource::Server(server("fd00::1", 123))),
        ] {
            let got = NtpSource::parse(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(NtpSource::parse(&got.to_string()).unwrap(), got, "{text} round trip");
        }
        assert_eq!(server("fd00::1", 124).authority(), "[fd00::1]:124");
    }

    #[test]
    fn bad_sources_say_what_to_write() {
        for (text, why) in [
            ("", "not a host name"),
            ("host:0", "the port is not 1–65535"),
            ("host:99999", "the port is not 1–65535"),
            ("host:abc", "the port is not 1–65535"),
            ("bad_name", "not a host name"),
            ("udp://x", "the port is not"),
            ("a..b", "not a host name"),
            ("[fd00::1", "no `]`"),
            ("[fd00::1]x", "followed by :PORT"),
            ("fd00::zz", "not an IPv6 address"),
        ] {
            let e = NtpSource::parse(text).unwrap_err();
            assert!(e.contains(why) && e.contains("write a host name"), "{text}: {e}");
        }
    }

    #[test]
    fn dhcp_servers_take_dhcps_place_without_repeats() {
        let sources = [
            NtpSource::Server(server("10.0.0.9", 123)),
            NtpSource::Dhcp,
            NtpSource::Server(server("time.example.com", 123)),
        ];
        let got = servers(&sources, &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9)]);
        let names: Vec<String> = got.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["10.0.0.9", "10.0.0.1", "time.example.com"]);
        assert_eq!(servers(&[NtpSource::Dhcp], &[]), Vec::<NtpServer>::new());
    }

    #[test]
    fn reports_are_json_lines() {
        let r = TimeReport::Synced(Sample {
            server: "10.0.2.2:123".into(),
            offset_us: -5,
            delay_us: 7,
            stratum: 2,
            stepped: true,
        });
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.starts_with("{\"synced\":"), "{line}");
        assert_eq!(serde_json::from_str::<TimeReport>(&line).unwrap(), r);
    }
}
