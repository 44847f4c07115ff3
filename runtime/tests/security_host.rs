//! Security settings of a container, on the host (root): capabilities (all five sets),
//! no_new_privs, masked and read-only paths, rlimits, sysctls, oom_score_adj, umask, devices.
//! Each feature has a case that would fail without it.

mod common;

use berth_runtime::capabilities::{mask, CapabilitySets};
use berth_runtime::defaults::{default_capabilities, MASKED_PATHS, READONLY_PATHS, UNPRIVILEGED_PING};
use berth_runtime::{Device, DeviceKind, Rlimit};
use common::run_script;

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn docker_caps() -> CapabilitySets {
    CapabilitySets::uniform(default_capabilities().unwrap())
}

/// A layer with iputils ping (which uses ICMP datagram sockets without CAP_NET_RAW; Debian's
/// busybox ping does not), from `scripts/ping-rootfs.sh`.
fn ping_layer() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ping-rootfs.sh");
    let o = std::process::Command::new(script).arg(dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir
}

#[test]
fn default_capabilities_are_dockers_without_net_raw() {
    let script = "grep ^Cap /proc/self/status; \
                  mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mount-ok || echo mount-denied; \
                  mknod /tmp/n c 1 3 && echo mknod-ok; \
                  /usr/bin/ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-denied; \
                  arping -c1 -w1 -I lo 127.0.0.1 2>&1 | grep -q 'not permitted' && echo packet-denied || echo packet-ok; \
                  traceroute -m1 -q1 -w1 127.0.0.1 2>&1 | grep -q 'not permitted' && echo raw-denied || echo raw-ok";
    let ping = ping_layer();
    let (code, out) = run_script(script, |s| {
        s.capabilities = Some(docker_caps());
        s.sysctl = vec![(UNPRIVILEGED_PING.0.into(), UNPRIVILEGED_PING.1.into())];
        s.layers.push(ping.path().to_path_buf());
    });
    assert_eq!(code, Some(0), "{out}");
    let want = format!("{:016x}", default_capabilities().unwrap());
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:"] {
        assert_eq!(field(&out, set), want, "{set} in {out}");
    }
    assert_eq!(field(&out, "CapAmb:"), "0000000000000000");
    assert!(out.contains("mount-denied"), "CAP_SYS_ADMIN must be missing: {out}");
    assert!(out.contains("mknod-ok"), "CAP_MKNOD is a default: {out}");
    assert!(out.contains("ping-ok"), "ping through ICMP datagram sockets: {out}");
    assert!(out.contains("packet-denied") && out.contains("raw-denied"), "no CAP_NET_RAW: {out}");
    let net_raw = mask(&["NET_RAW"]).unwrap();
    assert_eq!(u64::from_str_radix(&field(&out, "CapEff:"), 16).unwrap() & net_raw, 0);

    // Without the sysctl, ping has no way left.
    let (_, out) = run_script(
        "/usr/bin/ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-denied",
        |s| {
            s.capabilities = Some(docker_caps());
            s.layers.push(ping.path().to_path_buf());
        },
    );
    assert!(out.contains("ping-denied"), "{out}");

    // A dropped capability is really gone, an added one there.
    let (drop, add) = (mask(&["MKNOD"]).unwrap(), mask(&["NET_RAW"]).unwrap());
    let mut caps = docker_caps();
    for m in [&mut caps.bounding, &mut caps.effective, &mut caps.permitted, &mut caps.inheritable] {
        *m = (*m & !drop) | add;
    }
    let (_, out) = run_script(
        "mknod /tmp/n c 1 3 2>/dev/null && echo mknod-ok || echo mknod-denied; \
         traceroute -m1 -q1 -w1 127.0.0.1 2>&1 | grep -q 'not permitted' && echo raw-denied || echo raw-ok",
        |s| s.capabilities = Some(caps),
    );
    assert!(out.contains("mknod-denied") && out.contains("raw-ok"), "{out}");

    // Without a capability set the container keeps everything (the runtime adds nothing).
    let (_, out) = run_script("mkdir -p /mnt/t; mount -t tmpfs none /mnt/t && echo mount-ok", |_| {});
    assert!(out.contains("mount-ok"), "{out}");
}

#[test]
fn ambient_capabilities_reach_an_unprivileged_user() {
    let bind = mask(&["NET_BIND_SERVICE"]).unwrap();
    let sets =
        CapabilitySets { bounding: bind, effective: bind, permitted: bind, inheritable: bind, ambient: bind };
    let (code, out) = run_script("id -u; grep ^Cap /proc/self/status", |s| {
        s.uid = 1000;
        s.gid = 1000;
        s.working_dir = "/".into();
        s.capabilities = Some(sets);
    });
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("1000\n"), "{out}");
    let want = format!("{bind:016x}");
    assert_eq!(field(&out, "CapAmb:"), want, "{out}");
    assert_eq!(field(&out, "CapEff:"), want, "{out}");
    assert_eq!(field(&out, "CapBnd:"), want, "{out}");
}

#[test]
fn no_new_privileges() {
    let (_, out) = run_script("grep NoNewPrivs /proc/self/status", |s| s.no_new_privileges = true);
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
    let (_, out) = run_script("grep NoNewPrivs /proc/self/status", |_| {});
    assert_eq!(field(&out, "NoNewPrivs:"), "0");
}

#[test]
fn masked_and_read_only_paths() {
    let script = "echo kcore=$(head -c 100 /proc/kcore | wc -c); echo keys=$(cat /proc/keys | wc -c); \
                  echo interrupts=$(cat /proc/interrupts | wc -c); \
                  echo firmware=$(ls /sys/firmware | wc -l); \
                  echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo sys-writable || echo sys-read-only; \
                  echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-read-only";
    let paths = |s: &mut berth_runtime::ContainerSpec| {
        s.masked_paths = MASKED_PATHS.iter().map(|p| p.to_string()).collect();
        s.readonly_paths = READONLY_PATHS.iter().map(|p| p.to_string()).collect();
    };
    let (code, out) = run_script(script, paths);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(field(&out, "kcore="), "0", "{out}");
    assert_eq!(field(&out, "keys="), "0", "{out}");
    assert_eq!(field(&out, "interrupts="), "0", "{out}");
    assert_eq!(field(&out, "firmware="), "0", "{out}");
    assert!(out.contains("sys-read-only") && out.contains("sysrq-read-only"), "{out}");
    // Unmasked, the same read sees the kernel's file.
    let (_, out) = run_script("echo interrupts=$(cat /proc/interrupts | wc -c)", |_| {});
    assert_ne!(field(&out, "interrupts="), "0", "{out}");
}

#[test]
fn rlimits_sysctls_oom_score_umask_and_devices() {
    let script = "echo nofile=$(ulimit -n); echo forward=$(cat /proc/sys/net/ipv4/ip_forward); \
                  echo oom=$(cat /proc/self/oom_score_adj); echo umask=$(umask); \
                  echo dev=$(stat -c '%t:%T %a %u' /dev/custom/null2)";
    let (code, out) = run_script(script, |s| {
        s.rlimits = vec![Rlimit { resource: libc::RLIMIT_NOFILE, soft: 123, hard: 456 }];
        s.sysctl = vec![("net.ipv4.ip_forward".into(), "1".into())];
        s.oom_score_adj = Some(500);
        s.umask = Some(0o027);
        s.devices = vec![Device {
            path: "/dev/custom/null2".into(),
            kind: DeviceKind::Char,
            major: 1,
            minor: 3,
            mode: 0o600,
            uid: 1000,
            gid: 0,
        }];
    });
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(field(&out, "nofile="), "123");
    assert_eq!(field(&out, "forward="), "1", "sysctl in the container's own netns: {out}");
    assert_eq!(field(&out, "oom="), "500");
    assert_eq!(field(&out, "umask="), "0027");
    assert_eq!(field(&out, "dev="), "1:3 600 1000");
    // The host's forwarding setting is untouched by the container's.
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let (_, out) = run_script("echo forward=$(cat /proc/sys/net/ipv4/ip_forward)", |_| {});
    assert_ne!(field(&out, "forward="), "1", "a fresh netns starts with forwarding off (host: {host})");

    // A sysctl the kernel does not have is a step error naming it.
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::spec(dir.path(), "true", 1);
    s.sysctl = vec![("net.nope.nothing".into(), "1".into())];
    let e = berth_runtime::launch(&s).unwrap_err();
    assert!(e.to_string().starts_with("write sysctl: ENOENT"), "{e}");
    assert!(e.to_string().contains("net.nope.nothing"), "{e}");
}
