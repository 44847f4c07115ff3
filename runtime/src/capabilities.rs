//! Capability sets as bitmasks (bit N = capability N), built from names like `CAP_SYS_ADMIN`.

use std::str::FromStr;

use caps::Capability;

/// The five capability sets of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    /// The bounding set: what the process and its children can ever gain.
    pub bounding: u64,
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
    /// Inheritable.
    pub inheritable: u64,
    /// Ambient (kept across execve of unprivileged programs).
    pub ambient: u64,
}

impl CapabilitySets {
    /// The same set in bounding, effective, permitted and inheritable — what Docker gives a
    /// container (ambient stays empty).
    pub fn uniform(mask: u64) -> CapabilitySets {
        CapabilitySets { bounding: mask, effective: mask, permitted: mask, inheritable: mask, ambient: 0 }
    }
}

/// Every capability this library knows (the kernel may know fewer; see [`last_cap`]).
pub fn all() -> u64 {
    caps::all().iter().fold(0, |m, c| m | (1u64 << c.index()))
}

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(40)
}

/// Parses one capability name: `CAP_NET_RAW`, `NET_RAW` or `net_raw`.
pub fn parse(name: &str) -> Result<u8, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    Capability::from_str(&full).map(|c| c.index()).map_err(|_| {
        format!("`{name}` is not a capability (write it like \"NET_ADMIN\" or \"CAP_NET_ADMIN\")")
    })
}

/// A mask from names; `ALL` means every capability.
pub fn mask(names: &[impl AsRef<str>]) -> Result<u64, String> {
    let mut m = 0;
    for n in names {
        if n.as_ref().eq_ignore_ascii_case("ALL") {
            m |= all();
        } else {
            m |= 1u64 << parse(n.as_ref())?;
        }
    }
    Ok(m)
}

/// The names in a mask, `CAP_`-prefixed, in number order.
pub fn names(mask: u64) -> Vec<String> {
    let mut all: Vec<Capability> =
        caps::all().into_iter().filter(|c| mask & (1u64 << c.index()) != 0).collect();
    all.sort_by_key(|c| c.index());
    all.iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse("CAP_CHOWN"), Ok(0));
        assert_eq!(parse("net_raw"), Ok(13));
        assert_eq!(parse("SYS_ADMIN"), Ok(21));
        assert!(parse("CAP_FLY").is_err());
        assert_eq!(mask(&["CHOWN", "KILL"]), Ok(1 | (1 << 5)));
        assert_eq!(mask(&["ALL"]), Ok(all()));
        assert_eq!(names(1 | (1 << 5)), vec!["CAP_CHOWN", "CAP_KILL"]);
    }
}
