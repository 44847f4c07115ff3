//! Errors that say which step failed and why.

use std::fmt;

use nix::errno::Errno;

/// A failed step of a container launch: what was being done, the errno, and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// The step, e.g. `mount overlay`.
    pub step: String,
    /// The errno the kernel returned.
    pub errno: Errno,
    /// What the step was working on (paths, options).
    pub detail: String,
}

impl StepError {
    /// A step error with details.
    pub fn new(step: impl Into<String>, errno: Errno, detail: impl Into<String>) -> StepError {
        StepError { step: step.into(), errno, detail: detail.into() }
    }

    /// A step error from the last `io::Error`.
    pub fn io(step: impl Into<String>, err: &std::io::Error, detail: impl Into<String>) -> StepError {
        let errno = err.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO);
        StepError::new(step, errno, detail)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?} ({})", self.step, self.errno, self.errno.desc())?;
        if !self.detail.is_empty() {
            write!(f, " [{}]", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for StepError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_step_and_errno() {
        let e = StepError::new("mount overlay", Errno::ENOENT, "lowerdir=/x");
        assert_eq!(e.to_string(), "mount overlay: ENOENT (No such file or directory) [lowerdir=/x]");
    }
}
