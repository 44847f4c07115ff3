//! The error type of this crate.

use std::io;

/// What went wrong while running or talking to QEMU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out after {secs:.1} s waiting for {what}\n--- last console lines ---\n{tail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout, in seconds.
        secs: f64,
        /// The last console lines (and QEMU's own error output, if any).
        tail: String,
    },
    /// QEMU exited (or closed its console) before the awaited thing happened.
    #[error("QEMU exited while waiting for {what}\n--- last console lines ---\n{tail}")]
    Exited {
        /// What was awaited.
        what: String,
        /// The last console lines (and QEMU's own error output, if any).
        tail: String,
    },
    /// QEMU answered a QMP command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    QmpCommand {
        /// The command that failed.
        command: String,
        /// QEMU's error class, e.g. `GenericError`.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// The QMP conversation did not follow the protocol.
    #[error("QMP protocol error: {0}")]
    QmpProtocol(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}
