//! Secure defaults of berth's containers in a booted machine — Docker's capability set,
//! `no_new_privs`, Docker's seccomp profile, masked and read-only paths — and their documented
//! opt-outs.

mod common;

use berth_qemu::default_timeout;

const SECURITY: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "default"
image = "oci:images/busybox:latest"
command = ["sh", "-c", """
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mount-ok || echo mount-denied
ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-denied
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
capabilities = { add = ["SYS_ADMIN"], drop = ["CAP_NET_RAW"] }
command = ["sh", "-c", """
mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo mount-ok || echo mount-denied
ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-denied
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
    let (_dir, out) = common::build_fresh("security", SECURITY);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    for name in ["default", "unconfined", "adjusted", "privileged"] {
        let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some(name), t).unwrap();
        assert_eq!(e.get("code"), Some("0"), "{name}: {}", vm.console_text());
    }
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    let docker = berth_runtime::capabilities::mask(berth_runtime::defaults::DEFAULT_CAPABILITIES).unwrap();
    assert_eq!(field(&c, "default | CapEff:").trim(), format!("{docker:016x}"));
    assert_eq!(field(&c, "default | NoNewPrivs:").trim(), "1");
    assert!(c.contains("default | mount-denied"), "{c}");
    assert!(c.contains("default | ping-ok"), "{c}");
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
    assert!(c.contains("adjusted | ping-denied"), "{c}");

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
