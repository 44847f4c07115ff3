//! The control socket's requests and replies as types: a request line is parsed once, by
//! [`Request::parse`], in PID 1 and in `berthctl` alike (which refuses a bad one before
//! connecting); a [`Reply`] knows its wire form.
//!
//! Wire format: one request line (`ps`, `logs -n 2 web` …) in; text out, then the connection
//! closes — except for the `-f` requests, which keep streaming. A reply that starts with
//! `error: ` is a failure.

use std::fmt;

use crate::pid1::log::Follow;
use crate::pid1::shutdown::PowerAction;

/// The requests, as `berthctl` spells them.
pub const USAGE: &str =
    "ps | logs [-n N] NAME | logs -f NAME | events -f | start NAME | stop NAME | restart NAME | net | renew [IFACE] | update status|check|apply [-]|rollback | poweroff | reboot | halt";

/// PID 1's first line to `update apply -`: send the bundle now.
pub const SEND_BUNDLE: &str = "send the bundle";

/// `update …`: updates in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateRequest {
    /// The slots, their entries and what waits.
    Status,
    /// Ask the registry now; report what is there.
    Check,
    /// Install what the registry has now (if needed) and reboot into it.
    Apply,
    /// `update apply -`: install the bundle that follows on the connection (its OCI layout as
    /// a tar stream, sent once PID 1 answers [`SEND_BUNDLE`]) and reboot into it.
    ApplyBundle,
    /// Go back to the other slot's committed version, refusing this one.
    Rollback,
}

impl UpdateRequest {
    fn as_str(self) -> &'static str {
        match self {
            UpdateRequest::Status => "status",
            UpdateRequest::Check => "check",
            UpdateRequest::Apply => "apply",
            UpdateRequest::ApplyBundle => "apply -",
            UpdateRequest::Rollback => "rollback",
        }
    }
}

/// One control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `ps`: one line per container.
    Ps,
    /// `logs [-n N] NAME`: the container's last output lines (the last `tail` only).
    Logs {
        /// The container.
        name: String,
        /// How many lines from the end; all that are kept with `None`.
        tail: Option<usize>,
    },
    /// `logs -f NAME` or `events -f`: what is kept, then every new line.
    Follow(Follow),
    /// `start NAME`: start a service that is not running.
    Start(String),
    /// `stop NAME`: stop a running container; it is not restarted until started by hand.
    Stop(String),
    /// `restart NAME`: stop a running container and start it again.
    Restart(String),
    /// `net`: the machine's interfaces and leases.
    Net,
    /// `renew [IFACE]`: renew the DHCP leases (of one interface).
    Renew(Option<String>),
    /// `update status|check|apply|rollback`.
    Update(UpdateRequest),
    /// `poweroff`, `reboot`, `halt`: end the machine gracefully.
    Power(PowerAction),
    /// `debug-stall SECONDS` (builds with the `test-hooks` feature only): PID 1's loop blocks
    /// for that long, as a frozen PID 1 would.
    #[cfg(feature = "test-hooks")]
    Stall(u64),
}

impl Request {
    /// Parses a request line; the error says what is wrong and lists the requests.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let name = |n: &str| n.to_string();
        Ok(match words.as_slice() {
            ["ps"] => Request::Ps,
            ["logs", "-f", n] => Request::Follow(Follow::Logs(name(n))),
            ["events", "-f"] => Request::Follow(Follow::Events),
            ["logs", "-n", count, n] => {
                let tail = count
                    .parse::<usize>()
                    .map_err(|_| format!("logs -n: `{count}` is not a number of lines"))?;
                Request::Logs { name: name(n), tail: Some(tail) }
            }
            ["logs", n] if !n.starts_with('-') => Request::Logs { name: name(n), tail: None },
            ["logs", ..] => return Err("usage: logs [-n N] NAME | logs -f NAME".to_string()),
            ["start", n] => Request::Start(name(n)),
            ["stop", n] => Request::Stop(name(n)),
            ["restart", n] => Request::Restart(name(n)),
            ["net"] => Request::Net,
            ["renew"] => Request::Renew(None),
            ["renew", iface] => Request::Renew(Some(name(iface))),
            ["update", "status"] => Request::Update(UpdateRequest::Status),
            ["update", "check"] => Request::Update(UpdateRequest::Check),
            ["update", "apply"] => Request::Update(UpdateRequest::Apply),
            ["update", "apply", "-"] => Request::Update(UpdateRequest::ApplyBundle),
            ["update", "rollback"] => Request::Update(UpdateRequest::Rollback),
            ["update", ..] => {
                return Err("usage: update status | update check | update apply | update rollback".to_string())
            }
            ["poweroff"] => Request::Power(PowerAction::Poweroff),
            ["reboot"] => Request::Power(PowerAction::Reboot),
            ["halt"] => Request::Power(PowerAction::Halt),
            #[cfg(feature = "test-hooks")]
            ["debug-stall", secs] => Request::Stall(
                secs.parse().map_err(|_| format!("debug-stall: `{secs}` is not a number of seconds"))?,
            ),
            _ => return Err(format!("unknown request `{}` ({USAGE})", line.trim())),
        })
    }
}

impl fmt::Display for Request {
    /// The request line, as [`Request::parse`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Ps => f.write_str("ps"),
            Request::Logs { name, tail: Some(n) } => write!(f, "logs -n {n} {name}"),
            Request::Logs { name, tail: None } => write!(f, "logs {name}"),
            Request::Follow(Follow::Logs(name)) => write!(f, "logs -f {name}"),
            Request::Follow(Follow::Events) => f.write_str("events -f"),
            Request::Start(name) => write!(f, "start {name}"),
            Request::Stop(name) => write!(f, "stop {name}"),
            Request::Restart(name) => write!(f, "restart {name}"),
            Request::Net => f.write_str("net"),
            Request::Renew(None) => f.write_str("renew"),
            Request::Renew(Some(iface)) => write!(f, "renew {iface}"),
            Request::Update(u) => write!(f, "update {}", u.as_str()),
            Request::Power(action) => f.write_str(action.as_str()),
            #[cfg(feature = "test-hooks")]
            Request::Stall(secs) => write!(f, "debug-stall {secs}"),
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Text, then the connection closes.
    Text(String),
    /// A failure, then the connection closes.
    Error(String),
    /// The text kept so far, then every new line of `what` while the reader keeps up.
    Follow {
        /// What was kept before the request.
        past: String,
        /// What to go on sending.
        what: Follow,
    },
}

impl Reply {
    /// The bytes sent first: an error as `error: …`, text ending in a newline.
    pub fn wire(&self) -> String {
        let mut text = match self {
            Reply::Text(text) => text.clone(),
            Reply::Error(message) => format!("error: {message}"),
            Reply::Follow { past, .. } => return past.clone(),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "test-hooks"))]
    fn the_stall_hook_exists_only_in_test_builds() {
        let e = Request::parse("debug-stall 5").unwrap_err();
        assert!(e.starts_with("unknown request `debug-stall 5`"), "{e}");
    }

    #[test]
    #[cfg(feature = "test-hooks")]
    fn the_stall_hook_reads_back() {
        assert_eq!(Request::parse("debug-stall 5").unwrap(), Request::Stall(5));
        assert_eq!(Request::Stall(5).to_string(), "debug-stall 5");
        assert!(Request::parse("debug-stall soon").is_err());
    }

    #[test]
    fn every_request_reads_back_as_written() {
        let requests = [
            Request::Ps,
            Request::Logs { name: "web".into(), tail: Some(2) },
            Request::Logs { name: "web".into(), tail: None },
            Request::Follow(Follow::Logs("web".into())),
            Request::Follow(Follow::Events),
            Request::Start("a".into()),
            Request::Stop("a".into()),
            Request::Restart("a".into()),
            Request::Net,
            Request::Renew(None),
            Request::Renew(Some("eth0".into())),
            Request::Power(PowerAction::Poweroff),
            Request::Power(PowerAction::Reboot),
            Request::Power(PowerAction::Halt),
            Request::Update(UpdateRequest::Status),
            Request::Update(UpdateRequest::Check),
            Request::Update(UpdateRequest::Apply),
            Request::Update(UpdateRequest::ApplyBundle),
            Request::Update(UpdateRequest::Rollback),
        ];
        for r in requests {
            assert_eq!(Request::parse(&r.to_string()), Ok(r.clone()), "{r}");
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(Request::parse("logs -n many web").unwrap_err().contains("`many` is not a number"));
        assert!(Request::parse("logs").unwrap_err().starts_with("usage: logs"));
        assert!(Request::parse("logs -x web").unwrap_err().starts_with("usage: logs"));
        let e = Request::parse("dance now").unwrap_err();
        assert!(e.contains("unknown request `dance now`") && e.contains("restart NAME"), "{e}");
        assert!(Request::parse("stop").is_err(), "a name is needed");
        assert!(Request::parse("update now").unwrap_err().starts_with("usage: update"));
    }

    #[test]
    fn replies_on_the_wire() {
        assert_eq!(Reply::Error("no container named x".into()).wire(), "error: no container named x\n");
        assert_eq!(Reply::Text("stopping a".into()).wire(), "stopping a\n");
        assert_eq!(Reply::Follow { past: String::new(), what: Follow::Events }.wire(), "");
    }
}
