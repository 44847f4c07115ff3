//! `berth-timesync`: sets the machine's clock from NTP servers (SNTP, RFC 4330 client mode) and
//! keeps it right. PID 1 starts it once the network is up (never in PID 1: it resolves names
//! and waits on the network) and reads its standard output, one JSON line per report
//! (`berth_schema::time_sync::TimeReport`):
//!
//! - `{"synced": Sample}` after each answer applied;
//! - `{"failed": "why"}` when a round got no usable answer, once until the next answer.
//!
//! ```text
//! berth-timesync --server HOST[:PORT] [--server …]
//! ```
//!
//! Each round asks the servers in order (every address of each name) and applies the first
//! good answer (`sntp::judge`); `schedule` decides the step or slew and the wait before the
//! next round. It runs until PID 1 ends it; it exits 2 on bad arguments and 1 when its
//! output is gone (PID 1 no longer listens).

mod clock;
mod schedule;
mod sntp;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_schema::time_sync::{NtpServer, Sample, TimeReport};
use schedule::{Correction, Schedule};
use sntp::{Measurement, NtpTime, Refusal};

/// How long one address is waited for.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

fn parse_args(args: &[String]) -> Result<Vec<NtpServer>, String> {
    let mut servers = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--server" => {
                let v = it.next().ok_or("--server needs a value")?;
                servers.push(NtpServer::parse(v)?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if servers.is_empty() {
        return Err("no --server given".into());
    }
    Ok(servers)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let servers = match parse_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth-timesync: {e}; usage: berth-timesync --server HOST[:PORT] [--server …]");
            return ExitCode::from(2);
        }
    };
    let mut helper =
        Helper { servers: servers.into_iter().map(|s| (s, true)).collect(), schedule: Schedule::default() };
    let mut failing = false;
    loop {
        let wait = match helper.round() {
            Ok(sample) => {
                failing = false;
                if report(&TimeReport::Synced(sample)).is_err() {
                    return ExitCode::FAILURE;
                }
                helper.schedule.answered()
            }
            Err(why) => {
                if !failing && report(&TimeReport::Failed(why)).is_err() {
                    return ExitCode::FAILURE;
                }
                failing = true;
                helper.schedule.failed()
            }
        };
        std::thread::sleep(wait);
    }
}

/// One report line on standard output.
fn report(r: &TimeReport) -> std::io::Result<()> {
    let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// The servers (each with whether it may still be asked) and the schedule.
struct Helper {
    servers: Vec<(NtpServer, bool)>,
    schedule: Schedule,
}

impl Helper {
    /// Asks the servers in order; applies the first good answer.
    fn round(&mut self) -> Result<Sample, String> {
        let mut why = Vec::new();
        for (server, usable) in self.servers.iter_mut().filter(|(_, usable)| *usable) {
            let addrs: Vec<SocketAddr> = match server.authority().to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(e) => {
                    why.push(format!("{server}: cannot resolve: {e}"));
                    continue;
                }
            };
            for addr in addrs {
                match ask(addr) {
                    Ok(m) => return apply(server, addr, m, self.schedule.poll_log2()),
                    Err(Refusal::Kiss(code)) => {
                        why.push(format!("{server} ({addr}): Kiss-o'-Death {code}"));
                        if Refusal::Kiss(code.clone()).stop_asking() {
                            *usable = false;
                            break;
                        }
                        if code == "RATE" {
                            self.schedule.slow_down();
                        }
                    }
                    Err(Refusal::Bad(e)) => why.push(format!("{server} ({addr}): {e}")),
                    Err(Refusal::NotOurs) => why.push(format!("{server} ({addr}): no answer to our request")),
                }
            }
        }
        if why.is_empty() {
            why.push("every server refused to be asked again (Kiss-o'-Death DENY or RSTR)".into());
        }
        Err(why.join("; "))
    }
}

/// One request to `addr` and its reply, or why there is none.
fn ask(addr: SocketAddr) -> Result<Measurement, Refusal> {
    let bad = |e: std::io::Error| Refusal::Bad(e.to_string());
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).map_err(bad)?;
    socket.connect(addr).map_err(bad)?;
    let t1 = clock::now_ns();
    let sent = NtpTime::from_unix_ns(t1);
    socket.send(&sntp::request(sent)).map_err(bad)?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Refusal::Bad(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())));
        }
        socket.set_read_timeout(Some(left)).map_err(bad)?;
        match socket.recv(&mut buf) {
            Ok(n) => match sntp::judge(&buf[..n], sent, t1, clock::now_ns()) {
                Err(Refusal::NotOurs) => continue,
                other => return other,
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue
            }
            Err(e) => return Err(bad(e)),
        }
    }
}

/// Corrects the clock by `m`'s offset.
fn apply(server: &NtpServer, addr: SocketAddr, m: Measurement, poll_log2: u32) -> Result<Sample, String> {
    let correction = schedule::correction(m.offset_ns);
    match correction {
        Correction::Step => clock::step(m.offset_ns),
        Correction::Slew => clock::slew(m.offset_ns, poll_log2),
    }
    .map_err(|e| format!("{server} ({addr}) answered, but the clock could not be set: {e}"))?;
    Ok(Sample {
        server: if server.authority() == addr.to_string() {
            addr.to_string()
        } else {
            format!("{server} ({addr})")
        },
        offset_us: i64::try_from(m.offset_ns / 1000).unwrap_or(i64::MAX),
        delay_us: u64::try_from(m.delay_ns / 1000).unwrap_or(0),
        stratum: m.stratum,
        stepped: correction == Correction::Step,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_the_servers() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let s = args(&["--server", "10.0.2.2:1123", "--server", "time.example.com"]).unwrap();
        assert_eq!(s[0].authority(), "10.0.2.2:1123");
        assert_eq!(s[1].authority(), "time.example.com:123");
        assert_eq!(args(&[]).unwrap_err(), "no --server given");
        assert_eq!(args(&["--server"]).unwrap_err(), "--server needs a value");
        assert!(args(&["--server", "bad_name"]).unwrap_err().contains("not a host name"));
        assert_eq!(args(&["--port"]).unwrap_err(), "unknown argument --port");
    }
}
