//! Secure defaults of berth's containers in a booted machine — Docker's capability set less
//! `NET_RAW` (with `ping` through ICMP datagram sockets), `no_new_privs`, Docker's seccomp
//! profile, masked and read-only paths — and their documented opt-outs.

mod common;

use berth_qemu::default_timeout;

const SECURITY: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "default"
image = "oci:images/netping:latest"
command = ["sh", "-c", """
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mount-ok || echo mount-denied
/usr/bin/ping -c1 -W1 127.0.0.1 >/tmp/ping.out 2>&1 && echo ping-ok || { echo ping-denied; cat /tmp/ping.out; }
echo ping_group_range=$(cat /proc/sys/net/ipv4/ping_group_range)
arping -c1 -w1 -I lo 127.0.0.1 2>&1 | grep -q 'not permitted' && echo packet-denied || echo packet-ok
traceroute -m1 -q1 -w1 127.0.0.1 2>&1 | grep -q 'not permitted' && echo raw-denied || echo raw-ok
echo interrupts=$(cat /proc/interrupts | wc -c)
echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-read-only
unshare -U true 2>/dev/null && echo userns-ok || echo userns-denied
grep ^Seccomp: /proc/self/status
mknod /tmp/kmsg c 1 11 && echo mknod-ok
head -c 1 /tmp/kmsg >/dev/null 2>&1 && echo kmsg-open || echo kmsg-denied
"""]

[[onboot]]
name = "unconfined"
image = "oci:images/busybox:latest"
seccomp = "unconfined"
command = ["sh", "-c", """
unshare -U true 2>/dev/null && echo userns-ok || echo userns-denied
grep ^Seccomp: /proc/self/status
"""]

[[onboot]]
name = "adjusted"
image = "oci:images/busybox:latest"
capabilities = { add = ["SYS_ADMIN", "NET_RAW"], drop = ["CAP_KILL"] }
command = ["sh", "-c", """
grep -E '^CapEff' /proc/self/status
mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mount-ok || echo mount-denied
arping -c1 -w1 -I lo 127.0.0.1 2>&1 | grep -q 'not permitted' && echo packet-denied || echo packet-ok
traceroute -m1 -q1 -w1 127.0.0.1 2>&1 | grep -q 'not permitted' && echo raw-denied || echo raw-ok
"""]

[[onboot]]
name = "hostnet"
image = "oci:images/netping:latest"
net = "host"
command = ["sh", "-c", """
/usr/bin/ping -c1 -W1 127.0.0.1 >/tmp/ping.out 2>&1 && echo ping-ok || { echo ping-denied; cat /tmp/ping.out; }
traceroute -m1 -q1 -w1 127.0.0.1 2>&1 | grep -q 'not permitted' && echo raw-denied || echo raw-ok
"""]

[[onboot]]
name = "privileged"
image = "oci:images/busybox:latest"
privileged = true
command = ["sh", "-c", """
mknod /tmp/kmsg c 1 11 && head -c 1 /tmp/kmsg >/dev/null 2>&1 && echo kmsg-open || echo kmsg-denied
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
echo interrupts=$(cat /proc/interrupts | wc -c)
"""]
"#;

fn field<'a>(console: &'a str, prefix: &str) -> &'a str {
    console
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{console}"))
}

#[test]
fn containers_get_dockers_defaults_and_opt_outs() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    common::busybox_ping_image(dir.path());
    let out = common::build(dir.path(), "security", SECURITY);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    for name in ["default", "unconfined", "adjusted", "hostnet", "privileged"] {
        let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some(name), t).unwrap();
        assert_eq!(e.get("code"), Some("0"), "{name}: {}", vm.console_text());
    }
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    let docker = berth_runtime::defaults::default_capabilities().unwrap();
    let net_raw = berth_runtime::capabilities::mask(&["NET_RAW"]).unwrap();
    assert_eq!(field(&c, "default | CapEff:").trim(), format!("{docker:016x}"));
    let default_caps = u64::from_str_radix(field(&c, "default | CapEff:").trim(), 16).unwrap();
    assert_eq!(default_caps & net_raw, 0, "no CAP_NET_RAW by default");
    assert_eq!(field(&c, "default | NoNewPrivs:").trim(), "1");
    assert!(c.contains("default | mount-denied"), "{c}");
    // No AF_PACKET, no raw IP socket, but ping works (ICMP datagram sockets).
    assert!(c.contains("default | packet-denied"), "{c}");
    assert!(c.contains("default | raw-denied"), "{c}");
    assert!(c.contains("default | ping-ok"), "{c}");
    assert_eq!(field(&c, "default | ping_group_range="), "0 2147483647");
    assert!(c.contains("hostnet | ping-ok"), "the machine's namespace allows ping too: {c}");
    assert!(c.contains("hostnet | raw-denied"), "{c}");
    assert_eq!(field(&c, "default | interrupts="), "0", "masked");
    assert!(c.contains("default | sysrq-read-only"), "{c}");
    // Docker's seccomp profile: a new user namespace needs no capability, only the filter
    // refuses it.
    assert_eq!(field(&c, "default | Seccomp:").trim(), "2", "filter mode");
    assert!(c.contains("default | userns-denied"), "{c}");
    assert_eq!(field(&c, "unconfined | Seccomp:").trim(), "0");
    assert!(c.contains("unconfined | userns-ok"), "{c}");
    // The device filter: a node for a machine device can be made (CAP_MKNOD) but not opened.
    assert!(c.contains("default | mknod-ok"), "{c}");
    assert!(c.contains("default | kmsg-denied"), "{c}");
    assert!(c.contains("privileged | kmsg-open"), "{c}");

    assert!(c.contains("adjusted | mount-ok"), "{c}");
    // capabilities = { add = ["NET_RAW"] } restores raw sockets.
    let adjusted = u64::from_str_radix(field(&c, "adjusted | CapEff:").trim(), 16).unwrap();
    assert_eq!(adjusted & net_raw, net_raw, "{c}");
    assert_eq!(adjusted & berth_runtime::capabilities::mask(&["KILL"]).unwrap(), 0, "{c}");
    assert!(c.contains("adjusted | packet-ok"), "{c}");
    assert!(c.contains("adjusted | raw-ok"), "{c}");

    let all = u64::from_str_radix(field(&c, "privileged | CapEff:").trim(), 16).unwrap();
    assert_eq!(all & docker, docker);
    assert_ne!(all, docker, "privileged has more than the defaults");
    assert_eq!(field(&c, "privileged | NoNewPrivs:").trim(), "0");
    assert_ne!(field(&c, "privileged | interrupts="), "0", "nothing masked");
}

#[test]
fn a_bad_capability_name_is_located() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[onboot]]\nname = \"a\"\nimage = \"oci:images/busybox:latest\"\ncapabilities = { add = [\"FLY\"] }\n",
    )
    .unwrap();
    let out =
        common::run_berth(&["build", file.to_str().unwrap(), "-o", dir.path().join("o").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:4:25:", file.display())), "{err}");
    assert!(err.contains("`FLY` is not a capability"), "{err}");
}

const USERNS: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "mapped"
image = "oci:images/busybox:latest"
userns = "auto"
binds = ["/berth:/mnt/berth:ro"]
command = ["sh", "-c", """
echo "uidmap=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
echo "gidmap=$(cat /proc/self/gid_map | tr -s ' ' | sed 's/^ //')"
echo "id=$(id -u):$(id -g) passwd-owner=$(stat -c %u /etc/passwd)"
head -1 /etc/passwd
ls /mnt/berth/plan.json >/dev/null && echo bind-readable
touch /new-file && echo root-writable
echo data > /tmp/x && echo tmp-writable
"""]

[[onboot]]
name = "mapped2"
image = "oci:images/busybox:latest"
userns = "auto"
command = ["sh", "-c", "echo \"uidmap=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')\""]

[[onboot]]
name = "host"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo \"uidmap=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')\""]
"#;

#[test]
fn userns_auto_maps_a_private_range_and_keeps_the_image_readable() {
    let (_dir, out) = common::build_fresh("userns", USERNS);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    for name in ["mapped", "mapped2", "host"] {
        let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some(name), t).unwrap();
        assert_eq!(e.get("code"), Some("0"), "{name}: {}", vm.console_text());
    }
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "mapped | uidmap="), "0 100000 65536");
    assert_eq!(field(&c, "mapped | gidmap="), "0 100000 65536");
    assert_eq!(
        field(&c, "mapped | id="),
        "0:0 passwd-owner=65534",
        "image files belong to the machine's root"
    );
    assert!(c.contains("mapped | root:x:0:0:root:/root:/bin/sh"), "image readable: {c}");
    assert!(c.contains("mapped | bind-readable"), "{c}");
    assert!(c.contains("mapped | root-writable"), "{c}");
    assert!(c.contains("mapped | tmp-writable"), "{c}");
    assert_eq!(field(&c, "mapped2 | uidmap="), "0 165536 65536", "ranges do not overlap");
    assert_eq!(field(&c, "host | uidmap="), "0 0 4294967295");
}
