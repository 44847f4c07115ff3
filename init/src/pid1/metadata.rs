//! Cloud metadata (`[system] metadata`), PID 1's side: the provider chosen from the DMI strings
//! (read here: a few sysfs files), the helper (`berth-metadata`, a child: it talks HTTP and
//! retries) started once the network is up, its answer read without blocking, and the helper
//! killed at `metadata_timeout`. The containers wait for the answer or the timeout; the
//! merge itself (`Pid1::metadata_arrived`) uses the rules of every boot-time fragment.
//!
//! Order: [`CloudMetadata::choose`] at boot (`metadata.provider`, or nothing to wait for) →
//! [`CloudMetadata::network_ready`] spawns the helper → its first line is the metadata or why
//! not (`Pid1Event::Metadata`) → PID 1 merges it, starts the containers and hands the verdict
//! back ([`CloudMetadata::verdict`]) → Azure's helper reports it to the wireserver and writes a
//! second line (`metadata.reported`). The deadline bounds everything before the containers
//! start; the report runs beside them.

use std::io::Write;
use std::time::{Duration, Instant};

use berth_schema::metadata::{Dmi, Metadata, MetadataSetting, Provider, VERDICT_READY};
use nix::poll::{PollFd, PollFlags};

use super::event_source::{EventSource, Pid1Event};
use super::helper_process::{self, HelperProcess};
use super::log;

/// Where PID 1 runs the helper from.
pub fn helper_path() -> String {
    helper_process::path(berth_schema::metadata::HELPER)
}

/// Where the metadata is written for containers that bind it (read-only).
pub const METADATA_DIR: &str = "/run/berth/metadata";

/// The machine's DMI strings (empty where a file is missing).
pub fn read_dmi() -> Dmi {
    let mut dmi = Dmi::default();
    for (path, field) in Dmi::FILES {
        if let Ok(text) = std::fs::read_to_string(path) {
            *field(&mut dmi) = text.trim().to_string();
        }
    }
    dmi
}

/// Where the helper is.
enum Stage {
    /// Waiting for the network.
    Waiting,
    /// Asked; its answer not read yet.
    Asking(HelperProcess),
    /// Answered; Azure's helper waits for the verdict, then reports.
    Reporting(HelperProcess),
    /// Nothing more to read.
    Done,
}

/// The metadata step: chosen provider, helper, deadline.
pub struct CloudMetadata {
    provider: Provider,
    timeout: Duration,
    deadline: Instant,
    stage: Stage,
}

impl CloudMetadata {
    /// The provider this machine's metadata comes from, per `setting` and the DMI strings;
    /// `None` (the containers need not wait) when the setting is off or no provider is
    /// recognised.
    pub fn choose(setting: &MetadataSetting, timeout: Duration, now: Instant) -> Option<CloudMetadata> {
        if !setting.is_on() {
            return None;
        }
        // There even when no metadata comes: containers bind it.
        if let Err(e) = std::fs::create_dir_all(METADATA_DIR) {
            log::warn(&format!("metadata: {METADATA_DIR}: {e}"));
        }
        let dmi = read_dmi();
        let Some(provider) = setting.choose(&dmi) else {
            log::info(&format!(
                "metadata: no cloud provider recognised (DMI vendor \"{}\", product \"{}\"): booting on the image's configuration",
                dmi.sys_vendor, dmi.product_name
            ));
            log::emit(log::event("metadata.none").with("vendor", &dmi.sys_vendor));
            return None;
        };
        let by = if provider.matches(&dmi) { "dmi" } else { "config" };
        log::emit(log::event("metadata.provider").with("provider", provider.name()).with("by", by));
        Some(CloudMetadata { provider, timeout, deadline: now + timeout, stage: Stage::Waiting })
    }

    /// The provider asked.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Whether the containers still wait for the answer.
    pub fn pending(&self) -> bool {
        matches!(self.stage, Stage::Waiting | Stage::Asking(_))
    }

    /// The network is up: starts the helper (once).
    pub fn network_ready(&mut self, now: Instant) -> Option<Pid1Event> {
        if !matches!(self.stage, Stage::Waiting) || now >= self.deadline {
            return None;
        }
        let left = self.deadline.saturating_duration_since(now);
        match spawn(self.provider, left) {
            Ok(helper) => {
                self.stage = Stage::Asking(helper);
                None
            }
            Err(e) => {
                self.stage = Stage::Done;
                Some(Pid1Event::Metadata(Err(e)))
            }
        }
    }

    /// PID 1's verdict on the metadata (applied, or the first fragment refused), for the
    /// helper to report where the provider wants one (Azure).
    pub fn verdict(&mut self, outcome: Result<(), String>) {
        let Stage::Reporting(helper) = &mut self.stage else { return };
        if let Some(mut stdin) = helper.stdin.take() {
            // A short line into an empty pipe, which is non-blocking anyway: PID 1 never waits.
            let _ = stdin.write_all(verdict_line(outcome).as_bytes());
        }
    }

    /// Reads the helper's answer or report; kills it at the deadline.
    fn poll_helper(&mut self, now: Instant, out: &mut Vec<Pid1Event>) {
        match &mut self.stage {
            Stage::Waiting if now >= self.deadline => {
                self.stage = Stage::Done;
                out.push(Pid1Event::Metadata(Err(format!(
                    "the network was not up within {} s (metadata_timeout)",
                    self.timeout.as_secs()
                ))));
            }
            Stage::Asking(helper) => {
                let (lines, ended) = helper.read_lines();
                let timed_out = now >= self.deadline;
                let Some((answer, next)) =
                    judge_answer(self.provider, self.timeout, &lines, ended, timed_out)
                else {
                    return;
                };
                if timed_out && lines.is_empty() && !ended {
                    helper.kill();
                }
                out.push(Pid1Event::Metadata(answer));
                let Stage::Asking(helper) = std::mem::replace(&mut self.stage, Stage::Done) else { return };
                match next {
                    Report::None => {}
                    Report::Expected => self.stage = Stage::Reporting(helper),
                    Report::Lost => log::emit(
                        log::event("metadata.report_failed")
                            .with("provider", self.provider.name())
                            .with("error", "the helper ended before it could report the provisioning"),
                    ),
                }
            }
            Stage::Reporting(helper) => {
                let (lines, ended) = helper.read_lines();
                for line in lines {
                    let event = match serde_json::from_str::<Result<String, String>>(&line) {
                        Ok(Ok(state)) => log::event("metadata.reported").with("state", state),
                        Ok(Err(e)) => log::event("metadata.report_failed").with("error", e),
                        Err(_) => log::event("metadata.report_failed").with("error", line),
                    };
                    log::emit(event.with("provider", self.provider.name()));
                }
                if ended {
                    self.stage = Stage::Done;
                }
            }
            _ => {}
        }
    }
}

/// What comes after the helper's answer.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// Nothing: the provider wants no report.
    None,
    /// The helper waits for the verdict, then reports (Azure).
    Expected,
    /// A report was due but the helper's output ended.
    Lost,
}

/// The helper's answer, once there is one (its first line, the end of its output, or the
/// deadline), and what comes after it. Pure: unit tested.
fn judge_answer(
    provider: Provider,
    timeout: Duration,
    lines: &[String],
    ended: bool,
    timed_out: bool,
) -> Option<(Result<Metadata, String>, Report)> {
    if let Some(first) = lines.first() {
        let answer = serde_json::from_str::<Result<Metadata, String>>(first)
            .unwrap_or_else(|e| Err(format!("the helper's answer is not readable: {e}")));
        let next = match (provider == Provider::Azure && answer.is_ok(), ended) {
            (false, _) => Report::None,
            (true, false) => Report::Expected,
            (true, true) => Report::Lost,
        };
        return Some((answer, next));
    }
    if ended {
        return Some((Err("the helper ended without an answer".into()), Report::None));
    }
    timed_out.then(|| {
        (
            Err(format!("{provider} did not answer within {} s (metadata_timeout)", timeout.as_secs())),
            Report::None,
        )
    })
}

/// The line telling the helper PID 1's verdict: `ready`, or `failed REASON` (one line, at most
/// 512 characters of reason, as the report carries).
fn verdict_line(outcome: Result<(), String>) -> String {
    match outcome {
        Ok(()) => format!("{VERDICT_READY}\n"),
        Err(e) => format!("failed {}\n", e.replace('\n', " ").chars().take(512).collect::<String>()),
    }
}

/// Starts the helper; PID 1 writes its verdict into the helper's input.
fn spawn(provider: Provider, left: Duration) -> Result<HelperProcess, String> {
    let args = [
        "--provider".to_string(),
        provider.name().to_string(),
        "--deadline-ms".to_string(),
        left.as_millis().to_string(),
    ];
    HelperProcess::spawn(&helper_path(), &args, true)
}

impl EventSource for Option<CloudMetadata> {
    fn interest<'a>(&'a mut self, fds: &mut Vec<PollFd<'a>>) {
        if let Some(CloudMetadata { stage: Stage::Asking(h) | Stage::Reporting(h), .. }) = self {
            fds.push(PollFd::new(h.stdout(), PollFlags::POLLIN));
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.as_ref().filter(|m| m.pending()).map(|m| m.deadline)
    }

    fn service(&mut self, now: Instant, out: &mut Vec<Pid1Event>) {
        if let Some(m) = self {
            m.poll_helper(now, out);
        }
    }
}

/// Writes what containers may read (`binds = ["/run/berth/metadata:/run/metadata:ro"]`): one
/// file per fact (`provider`, `instance-id`, `hostname`, `authorized_keys`, and each network
/// fact by name: `local-ipv4`, `public-ipv4`, `mac`, `region`, `zone`). The user-data stays out:
/// it may hold secrets meant for PID 1.
pub fn write_files(m: &Metadata) -> Result<(), String> {
    let _ = std::fs::create_dir_all(METADATA_DIR);
    let mut files: Vec<(String, String)> = Vec::new();
    if let Some(p) = m.provider {
        files.push(("provider".into(), p.name().into()));
    }
    if let Some(id) = &m.instance_id {
        files.push(("instance-id".into(), id.clone()));
    }
    if let Some(h) = &m.hostname {
        files.push(("hostname".into(), h.clone()));
    }
    files.push(("authorized_keys".into(), m.public_keys.join("\n")));
    for (k, v) in &m.network {
        // Provider facts are names like `local-ipv4`; anything else is not a file name.
        if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            files.push((k.clone(), v.clone()));
        }
    }
    for (name, text) in files {
        let path = format!("{METADATA_DIR}/{name}");
        let text = if text.is_empty() { text } else { format!("{text}\n") };
        std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    fn ok_line() -> String {
        serde_json::to_string(&Ok::<Metadata, String>(Metadata {
            provider: Some(Provider::Azure),
            hostname: Some("h".into()),
            ..Default::default()
        }))
        .unwrap()
    }

    #[test]
    fn the_answer_is_the_first_line() {
        let (answer, next) = judge_answer(Provider::Azure, T, &[ok_line()], false, false).unwrap();
        assert_eq!(answer.unwrap().hostname.as_deref(), Some("h"));
        assert_eq!(next, Report::Expected, "Azure's helper reports next");
        // The same answer from a helper whose output ended: the report is lost, and said so.
        assert_eq!(judge_answer(Provider::Azure, T, &[ok_line()], true, false).unwrap().1, Report::Lost);
        // Other providers want no report.
        assert_eq!(judge_answer(Provider::Ec2, T, &[ok_line()], false, false).unwrap().1, Report::None);
        // A failure is not reported either.
        let err = serde_json::to_string(&Err::<Metadata, String>("ec2: refused".into())).unwrap();
        let (answer, next) = judge_answer(Provider::Azure, T, &[err], false, false).unwrap();
        assert_eq!((answer, next), (Err("ec2: refused".into()), Report::None));
        // An answer that arrives at the deadline still counts.
        assert!(judge_answer(Provider::Gce, T, &[ok_line()], false, true).unwrap().0.is_ok());
    }

    #[test]
    fn no_answer_until_the_output_ends_or_the_deadline() {
        assert_eq!(judge_answer(Provider::Gce, T, &[], false, false), None);
        let (answer, _) = judge_answer(Provider::Gce, T, &[], true, false).unwrap();
        assert_eq!(answer.unwrap_err(), "the helper ended without an answer");
        let (answer, _) = judge_answer(Provider::Gce, T, &[], false, true).unwrap();
        assert_eq!(answer.unwrap_err(), "gce did not answer within 30 s (metadata_timeout)");
        let (answer, _) = judge_answer(Provider::Gce, T, &["garbage".into()], false, false).unwrap();
        assert!(answer.unwrap_err().starts_with("the helper's answer is not readable"));
    }

    #[test]
    fn the_verdict_is_one_bounded_line() {
        assert_eq!(verdict_line(Ok(())), "ready\n");
        let line = verdict_line(Err(format!("a\nb{}", "x".repeat(2000))));
        assert!(line.starts_with("failed a b") && line.ends_with('\n'));
        assert_eq!(line.lines().count(), 1);
        assert_eq!(line.len(), "failed ".len() + 512 + 1);
    }
}
