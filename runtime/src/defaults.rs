//! Docker's secure defaults for a container: its capability set, masked and read-only paths.
//! (Docker's seccomp profile is data: see `profiles/docker-default.json` and `seccomp`.)

/// Docker's default capabilities (moby `oci/caps/defaults.go`): what Docker's seccomp profile
/// is written against.
pub const DOCKER_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The capabilities of Docker's set that berth leaves out: `CAP_NET_RAW`, as Podman does. With
/// it a container opens `AF_PACKET` and raw IP sockets, and on a shared bridge forges ARP and IP
/// packets as any other container; `ping` works without it through ICMP datagram sockets, which
/// [`UNPRIVILEGED_PING`] opens to every group.
pub const NOT_BY_DEFAULT: &[&str] = &["CAP_NET_RAW"];

/// berth's default capability mask: [`DOCKER_CAPABILITIES`] less [`NOT_BY_DEFAULT`].
pub fn default_capabilities() -> Result<u64, String> {
    Ok(crate::capabilities::mask(DOCKER_CAPABILITIES)? & !crate::capabilities::mask(NOT_BY_DEFAULT)?)
}

/// The sysctl that lets every group open ICMP echo sockets (`socket(AF_INET, SOCK_DGRAM,
/// IPPROTO_ICMP)`), so that `ping` needs no `CAP_NET_RAW`; per network namespace. Docker sets
/// the same in each container's namespace.
pub const UNPRIVILEGED_PING: (&str, &str) = ("net.ipv4.ping_group_range", "0 2147483647");

/// Paths hidden from a container (a file gets `/dev/null` over it, a directory an empty
/// read-only tmpfs), as Docker does.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths a container may read but not write, as Docker does.
pub const READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
