//! `berth-metadata`: asks one cloud's metadata service for what configures the machine — its
//! hostname, SSH public keys, user-data (a berth TOML fragment) and network facts — and hands it
//! to PID 1. PID 1 runs it as a child once the network is up (never in PID 1: it talks HTTP and
//! retries), kills it at `[system] metadata_timeout`, and reads its standard output:
//!
//! 1. one JSON line: `{"Ok": Metadata}` or `{"Err": "why"}` (`berth_schema::metadata`);
//! 2. Azure only: then it waits for PID 1's verdict on standard input (`ready`, or `failed
//!    REASON` when the metadata could not be applied), reports it to the wireserver, and writes
//!    a second line: `{"Ok": "ready"}` or `{"Err": "why"}`.
//!
//! ```text
//! berth-metadata --provider ec2 --deadline-ms 30000 [--endpoint URL] [--wireserver URL]
//! ```
//!
//! `--endpoint` and `--wireserver` replace `http://169.254.169.254` and
//! `http://168.63.129.16` (a test's server on the host). Exit status: 0 when the metadata was
//! read (and reported), 1 otherwise.

mod azure;
mod digitalocean;
mod ec2;
mod gce;
mod hetzner;
mod http;
mod openstack;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use berth_schema::metadata::{Metadata, Provider, VERDICT_READY};
use http::Http;

/// Where every provider's metadata service answers.
const LINK_LOCAL: &str = "http://169.254.169.254";
/// Azure's wireserver (DHCP option 245 may name another on Azure Stack).
const WIRESERVER: &str = "http://168.63.129.16";
/// How long Azure's provisioning report is retried (azure-init's bound: Azure fails the VM's
/// provisioning after about that long anyway).
const REPORT_DEADLINE: Duration = Duration::from_secs(20 * 60);

#[derive(Debug)]
struct Args {
    provider: Provider,
    deadline: Duration,
    endpoint: String,
    wireserver: String,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut provider = None;
    let mut deadline = Duration::from_secs(30);
    let mut endpoint = LINK_LOCAL.to_string();
    let mut wireserver = WIRESERVER.to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--provider" => {
                let name = value()?;
                provider =
                    Some(Provider::from_name(&name).ok_or_else(|| format!("unknown provider {name}"))?);
            }
            "--deadline-ms" => {
                let ms = value()?;
                deadline = Duration::from_millis(
                    ms.parse().map_err(|_| format!("--deadline-ms {ms}: not a number"))?,
                );
            }
            "--endpoint" => endpoint = value()?.trim_end_matches('/').to_string(),
            "--wireserver" => wireserver = value()?.trim_end_matches('/').to_string(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args { provider: provider.ok_or("--provider is required")?, deadline, endpoint, wireserver })
}

fn fetch(args: &Args, http: &Http) -> Result<Metadata, String> {
    let base = args.endpoint.as_str();
    let result = match args.provider {
        Provider::Ec2 => ec2::fetch(http, base),
        Provider::Gce => gce::fetch(http, base),
        Provider::Azure => azure::fetch(http, base),
        Provider::Openstack => openstack::fetch(http, base).map(|(m, from)| Metadata { source: from, ..m }),
        Provider::Digitalocean => digitalocean::fetch(http, base),
        Provider::Hetzner => hetzner::fetch(http, base),
    };
    result
        .map(|m| if m.source.is_empty() { Metadata { source: base.to_string(), ..m } } else { m })
        .map_err(|e| format!("{}: {e}", args.provider))
}

/// Writes one JSON line and flushes it (PID 1 reads line by line).
fn say<T: serde::Serialize>(value: &T) {
    let line = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"Err\":\"{e}\"}}"));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            say(&Err::<Metadata, String>(format!("berth-metadata: {e}")));
            return ExitCode::FAILURE;
        }
    };
    let http = Http::new(Instant::now() + args.deadline);
    let result = fetch(&args, &http);
    let found = result.is_ok();
    say(&result);
    if !(found && args.provider == Provider::Azure) {
        return if found { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    // Azure: report what PID 1 made of it.
    let mut verdict = String::new();
    if std::io::stdin().lock().read_line(&mut verdict).unwrap_or(0) == 0 {
        say(&Err::<String, String>("PID 1 gave no verdict: nothing reported".into()));
        return ExitCode::FAILURE;
    }
    let verdict = verdict.trim();
    let failure = (verdict != VERDICT_READY).then(|| verdict.strip_prefix("failed ").unwrap_or(verdict));
    let report = Http::new(Instant::now() + REPORT_DEADLINE);
    match azure::report(&report, &args.wireserver, failure) {
        Ok(()) => {
            say(&Ok::<&str, String>(if failure.is_none() { "ready" } else { "not-ready" }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&Err::<String, String>(format!("azure provisioning report: {e}")));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments() {
        let a = |s: &str| super::parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>());
        let args = a("--provider gce --deadline-ms 1500 --endpoint http://127.0.0.1:9/").unwrap();
        assert_eq!(args.provider, berth_schema::metadata::Provider::Gce);
        assert_eq!(args.deadline.as_millis(), 1500);
        assert_eq!(args.endpoint, "http://127.0.0.1:9");
        assert!(a("--provider aws").unwrap_err().contains("unknown provider aws"));
        assert!(a("").unwrap_err().contains("--provider"));
        assert!(a("--provider ec2 --deadline-ms soon").is_err());
    }
}
