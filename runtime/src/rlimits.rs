//! Resource limit names, as Docker (`--ulimit nofile=…`) and the OCI spec (`RLIMIT_NOFILE`) write
//! them.

/// Every limit: Docker's short name and the `RLIMIT_*` number.
pub const RLIMITS: &[(&str, u32)] = &[
    ("as", libc::RLIMIT_AS),
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// The `RLIMIT_*` number of `nofile`, `NOFILE` or `RLIMIT_NOFILE`.
pub fn resource(name: &str) -> Option<u32> {
    let lower = name.trim().to_ascii_lowercase();
    let short = lower.strip_prefix("rlimit_").unwrap_or(&lower);
    RLIMITS.iter().find(|(n, _)| *n == short).map(|(_, r)| *r)
}

/// Docker's short name (`nofile`) of an `RLIMIT_*` number.
pub fn name(resource: u32) -> Option<&'static str> {
    RLIMITS.iter().find(|(_, r)| *r == resource).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(resource("nofile"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(resource("RLIMIT_NPROC"), Some(libc::RLIMIT_NPROC));
        assert_eq!(resource("bogus"), None);
        assert_eq!(name(libc::RLIMIT_NOFILE), Some("nofile"));
        assert_eq!(name(999), None);
    }
}
