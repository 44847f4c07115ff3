//! `[update]`: the machine follows a tag in a registry and updates itself in place (A/B slots,
//! see `crate::slots` and `crate::update`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[update]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    /// The tag followed: `REGISTRY/REPO:TAG` (the registry named: no default registry).
    pub source: UpdateSource,
    /// How often the tag is checked (the first check runs soon after boot).
    #[serde(default = "default_interval", with = "crate::config::duration_text")]
    pub interval: Duration,
    /// Reach the registry over plain HTTP (for tests and closed networks).
    #[serde(default)]
    pub insecure: bool,
    /// When an installed update may reboot the machine.
    #[serde(default)]
    pub reboot: RebootPolicy,
    /// How long a newly booted slot has for every service to start and every healthcheck to
    /// pass before it is rolled back.
    #[serde(default = "default_commit_timeout", with = "crate::config::duration_text")]
    pub commit_timeout: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_commit_timeout() -> Duration {
    Duration::from_secs(300)
}

/// `REGISTRY/REPO:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSource {
    /// `HOST[:PORT]`.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    /// The tag.
    pub tag: String,
}

impl UpdateSource {
    /// Parses `REGISTRY/REPO:TAG`.
    pub fn parse(text: &str) -> Result<UpdateSource, String> {
        let hint = "write REGISTRY/REPO:TAG, e.g. \"registry.example:5000/fleet/app:stable\"";
        let (name, tag) = text
            .rsplit_once(':')
            .filter(|(name, tag)| !tag.contains('/') && name.contains('/'))
            .ok_or_else(|| format!("[update] source `{text}` has no tag; {hint}"))?;
        let (registry, repository) =
            name.split_once('/').ok_or_else(|| format!("[update] source `{text}`: {hint}"))?;
        let host_like = registry.contains('.') || registry.contains(':') || registry == "localhost";
        if !host_like {
            return Err(format!("[update] source `{text}` names no registry host (`{registry}`); {hint}"));
        }
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            });
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !repo_ok || !tag_ok {
            return Err(format!("[update] source `{text}`: bad repository or tag; {hint}"));
        }
        Ok(UpdateSource { registry: registry.into(), repository: repository.into(), tag: tag.into() })
    }
}

impl fmt::Display for UpdateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// When an installed update reboots the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootPolicy {
    /// As soon as it is installed.
    #[default]
    Now,
    /// Within a daily window of UTC time, `window 02:00-04:00` (minutes since midnight; it may
    /// wrap past midnight).
    Window {
        /// The first minute.
        start: u16,
        /// The minute it ends (not included).
        end: u16,
    },
    /// Only when asked (`berthctl update apply`, or any reboot).
    Manual,
}

impl RebootPolicy {
    /// Parses `now`, `manual` or `window HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<RebootPolicy, String> {
        let bad = || format!("[update] reboot = `{text}`: use \"now\", \"manual\" or \"window 02:00-04:00\"");
        match text.trim() {
            "now" => Ok(RebootPolicy::Now),
            "manual" => Ok(RebootPolicy::Manual),
            other => {
                let range = other.strip_prefix("window ").ok_or_else(bad)?;
                let (a, b) = range.trim().split_once('-').ok_or_else(bad)?;
                let minute = |t: &str| -> Option<u16> {
                    let (h, m) = t.trim().split_once(':')?;
                    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
                    (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
                };
                let (start, end) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
                if start == end {
                    return Err(format!("[update] reboot = `{text}`: the window is empty"));
                }
                Ok(RebootPolicy::Window { start, end })
            }
        }
    }

    /// Whether a reboot may happen at `minute` (of the UTC day) without being asked for.
    pub fn allows(self, minute: u16) -> bool {
        match self {
            RebootPolicy::Now => true,
            RebootPolicy::Manual => false,
            RebootPolicy::Window { start, end } if start < end => (start..end).contains(&minute),
            RebootPolicy::Window { start, end } => minute >= start || minute < end,
        }
    }
}

impl fmt::Display for RebootPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebootPolicy::Now => f.write_str("now"),
            RebootPolicy::Manual => f.write_str("manual"),
            RebootPolicy::Window { start, end } => {
                write!(f, "window {:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60)
            }
        }
    }
}

crate::text_form::serde_as_text!(UpdateSource, RebootPolicy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_a_registry_a_repository_and_a_tag() {
        let s = UpdateSource::parse("10.0.2.2:5000/fleet/app:stable").unwrap();
        assert_eq!(
            (s.registry.as_str(), s.repository.as_str(), s.tag.as_str()),
            ("10.0.2.2:5000", "fleet/app", "stable")
        );
        assert_eq!(s.to_string(), "10.0.2.2:5000/fleet/app:stable");
        for bad in [
            "fleet/app:stable",
            "registry.example/app",
            "registry.example/App:x",
            "r.example/a:b/c",
            "r.example/:x",
        ] {
            assert!(UpdateSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reboot_windows_may_wrap_midnight() {
        assert_eq!(RebootPolicy::parse("now").unwrap(), RebootPolicy::Now);
        let w = RebootPolicy::parse("window 02:00-04:00").unwrap();
        assert!(w.allows(120) && w.allows(239) && !w.allows(240) && !w.allows(60));
        assert_eq!(w.to_string(), "window 02:00-04:00");
        let night = RebootPolicy::parse("window 23:30-01:00").unwrap();
        assert!(
            night.allows(23 * 60 + 45) && night.allows(30) && !night.allows(60) && !night.allows(12 * 60)
        );
        assert!(!RebootPolicy::Manual.allows(0));
        for bad in ["later", "window 2:00-04:00", "window 02:00-02:00", "window 25:00-01:00", "window 02:00"]
        {
            assert!(RebootPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_section_reads_from_toml_with_defaults() {
        let s: UpdateSettings = toml::from_str("source = \"r.example/app:v\"\n").unwrap();
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert_eq!(s.reboot, RebootPolicy::Now);
        assert_eq!(s.commit_timeout, Duration::from_secs(300));
        let err = toml::from_str::<UpdateSettings>("source = \"r.example/app:v\"\nreboot = \"soon\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("use \"now\""), "{err}");
    }
}
