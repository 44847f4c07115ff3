//! The kernel settings berth applies on every machine unless `[system] sysctl` sets them
//! otherwise: the hardening LinuxKit and Talos (its KSPP list) apply, restricted to what holds
//! on a machine that runs containers (docs/config.md, *Hardened kernel defaults*, says why for
//! each). Pure data and one merge; PID 1 writes them.
//!
//! Two places: the machine's (global settings, and the IPv4 `conf` defaults that new network
//! namespaces copy from the machine's), and each container's own network namespace (reverse
//! path filtering, which the machine's own namespace cannot have: see [`CONTAINER_NETNS`]).

use std::collections::BTreeMap;

/// One default: the sysctl, its value, and the kernel option without which the key does not
/// exist (`None`: every kernel berth boots has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardened {
    /// The dotted sysctl name.
    pub key: &'static str,
    /// Its value.
    pub value: &'static str,
    /// The kernel option it needs, when kernels may lack it (then it is skipped, and said).
    pub needs: Option<&'static str>,
}

const fn always(key: &'static str, value: &'static str) -> Hardened {
    Hardened { key, value, needs: None }
}

const fn built(key: &'static str, value: &'static str, option: &'static str) -> Hardened {
    Hardened { key, value, needs: Some(option) }
}

/// The machine's defaults.
pub const MACHINE: [Hardened; 24] = [
    // Kernel addresses hidden from everyone (they defeat KASLR).
    always("kernel.kptr_restrict", "2"),
    // The kernel log is for CAP_SYSLOG only.
    always("kernel.dmesg_restrict", "1"),
    // No perf events for unprivileged users.
    built("kernel.perf_event_paranoid", "3", "CONFIG_PERF_EVENTS"),
    // No eBPF for unprivileged users (1: for good, until the next boot).
    built("kernel.unprivileged_bpf_disabled", "1", "CONFIG_BPF_SYSCALL"),
    // Constant blinding in the BPF JIT for every user.
    built("net.core.bpf_jit_harden", "2", "CONFIG_BPF_JIT"),
    // A process may ptrace only its own descendants (2 would stop `strace PROGRAM` too).
    built("kernel.yama.ptrace_scope", "1", "CONFIG_SECURITY_YAMA"),
    // No userfaultfd for unprivileged users (it makes kernel races easy to win).
    built("vm.unprivileged_userfaultfd", "0", "CONFIG_USERFAULTFD"),
    // Full address-space randomisation.
    always("kernel.randomize_va_space", "2"),
    // Links and files in world-writable sticky directories cannot be turned against their
    // owners' programs.
    always("fs.protected_hardlinks", "1"),
    always("fs.protected_symlinks", "1"),
    always("fs.protected_fifos", "2"),
    always("fs.protected_regular", "2"),
    // No core dumps of setuid programs.
    always("fs.suid_dumpable", "0"),
    // No line-discipline modules loaded on an unprivileged user's request.
    always("dev.tty.ldisc_autoload", "0"),
    // SYN floods answered with cookies.
    built("net.ipv4.tcp_syncookies", "1", "CONFIG_SYN_COOKIES"),
    // No ICMP redirects taken or sent, no source routing (new network namespaces copy these).
    always("net.ipv4.conf.all.accept_redirects", "0"),
    always("net.ipv4.conf.default.accept_redirects", "0"),
    always("net.ipv4.conf.all.send_redirects", "0"),
    always("net.ipv4.conf.default.send_redirects", "0"),
    always("net.ipv4.conf.all.accept_source_route", "0"),
    always("net.ipv4.conf.default.accept_source_route", "0"),
    built("net.ipv6.conf.all.accept_redirects", "0", "CONFIG_IPV6"),
    built("net.ipv6.conf.default.accept_redirects", "0", "CONFIG_IPV6"),
    // No answers to broadcast pings (smurf amplification).
    always("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
];

/// The defaults of a container's own network namespace: strict reverse-path filtering (no
/// spoofed sources). Not on the machine's interfaces: PID 1's DHCP client receives on a UDP
/// socket, and the filter drops what arrives on an interface that has no address yet.
pub const CONTAINER_NETNS: [Hardened; 2] =
    [always("net.ipv4.conf.all.rp_filter", "1"), always("net.ipv4.conf.default.rp_filter", "1")];

/// The `defaults` the config (`configured`) does not set: written first, the config's after.
pub fn not_overridden<'a>(
    defaults: &'a [Hardened],
    configured: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = Hardened> + 'a {
    defaults.iter().copied().filter(|d| !configured.contains_key(d.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_wins_over_a_default() {
        let configured = BTreeMap::from([("kernel.kptr_restrict".to_string(), "1".to_string())]);
        let kept: Vec<&str> = not_overridden(&MACHINE, &configured).map(|d| d.key).collect();
        assert!(!kept.contains(&"kernel.kptr_restrict"));
        assert!(kept.contains(&"kernel.dmesg_restrict"));
        assert_eq!(kept.len(), MACHINE.len() - 1);
    }

    #[test]
    fn every_key_once_and_none_a_machine_cannot_take() {
        let mut keys: Vec<&str> = MACHINE.iter().chain(&CONTAINER_NETNS).map(|d| d.key).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key twice");
        // Reverse-path filtering stays off the machine's own interfaces (DHCP).
        assert!(!MACHINE.iter().any(|d| d.key.ends_with("rp_filter")));
    }
}
