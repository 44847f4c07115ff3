//! Telling a person watching a console that the guest has gone quiet, and what to try.
//!
//! `berth run` shows the guest's serial console and nothing else; a guest that prints nothing
//! (a kernel without `console=ttyS0`, a hypervisor that hangs it, a very busy host) would leave
//! a blank terminal. [`SilenceNotices`] decides when to say so: once the silence reaches the
//! first interval, then each time it has grown by another interval.

use std::time::Duration;

use crate::accel::Accel;

/// Decides when a silent guest deserves a notice (pure: the caller measures the silence).
#[derive(Debug, Clone)]
pub struct SilenceNotices {
    every: Duration,
    /// The silence at which the last notice was given, during the current silence.
    noticed_at: Option<Duration>,
}

impl SilenceNotices {
    /// A notice after `every` of silence, and after each further `every` of it.
    pub fn new(every: Duration) -> SilenceNotices {
        SilenceNotices { every, noticed_at: None }
    }

    /// The notice to print now, given how long the guest has printed nothing, under which
    /// accelerator and why that one; `None` when nothing is due. Output resets the count.
    pub fn check(&mut self, silent_for: Duration, accel: Accel, reason: &str) -> Option<String> {
        if silent_for < self.every {
            self.noticed_at = None;
            return None;
        }
        let due = match self.noticed_at {
            None => true,
            Some(at) => silent_for >= at + self.every,
        };
        if !due {
            return None;
        }
        self.noticed_at = Some(silent_for);
        let mut text = format!(
            "berth: the guest has printed nothing for {} s (accelerator {}: {reason}).",
            silent_for.as_secs(),
            accel.name()
        );
        text.push_str(match accel {
            Accel::Kvm => {
                " If it stays silent: KVM may hang guests on this host; try --accel tcg \
                 (or BERTH_ACCEL=tcg)."
            }
            _ => " Under TCG a boot takes several seconds, more on a busy host.",
        });
        text.push_str(
            " The kernel command line needs console=ttyS0 for the console to show anything; \
             --timeout SECONDS gives up, Ctrl-C stops it now.",
        );
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_at_each_interval_of_one_silence_and_none_after_output() {
        let s = Duration::from_secs;
        let mut n = SilenceNotices::new(s(15));
        assert_eq!(n.check(s(3), Accel::Tcg, "r"), None);
        let first = n.check(s(15), Accel::Tcg, "BERTH_ACCEL=tcg").expect("due at 15 s");
        assert!(
            first.contains("nothing for 15 s") && first.contains("accelerator tcg: BERTH_ACCEL=tcg"),
            "{first}"
        );
        assert!(first.contains("console=ttyS0") && first.contains("--timeout"), "{first}");
        assert_eq!(n.check(s(16), Accel::Tcg, "r"), None);
        assert_eq!(n.check(s(29), Accel::Tcg, "r"), None);
        assert!(n.check(s(30), Accel::Tcg, "r").is_some());
        // Output came: a new silence starts over.
        assert_eq!(n.check(s(1), Accel::Tcg, "r"), None);
        let kvm = n.check(s(15), Accel::Kvm, "a guest under KVM reached its console").unwrap();
        assert!(kvm.contains("--accel tcg"), "{kvm}");
    }
}
