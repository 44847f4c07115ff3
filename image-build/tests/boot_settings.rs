//! Every container setting of the config reaches the container in a booted machine: user and
//! groups, env, working dir, hostname, network mode, cgroup limits, binds, read-only root, ulimits,
//! container sysctls, oom_score_adj, and the machine's sysctls — berth's hardened defaults, one
//! of them overridden by the config. And `berth run` boots an image on the terminal.

mod common;

use std::process::Command;

use berth_qemu::default_timeout;

const SETTINGS: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "machine"
when_done = "poweroff"
sysctl = { "kernel.pid_max" = 54321, "fs.protected_regular" = 1 }

[[onboot]]
name = "settings"
image = "oci:images/busybox:latest"
user = "app"
working_dir = "/srv/app"
hostname = "custom-host"
env = { GREETING = "hi there" }
memory = "32m"
cpus = 0.5
pids_limit = 20
read_only = true
binds = ["/berth:/mnt/berth:ro"]
net = "host"
ulimits = { nofile = 512, nproc = { soft = 50, hard = 60 } }
oom_score_adj = 300
command = ["sh", "-c", """
echo "nofile=$(ulimit -n) nproc=$(ulimit -u)/$(ulimit -H -u) oom=$(cat /proc/self/oom_score_adj)"
echo "ids=$(id -u):$(id -g) groups=$(id -G)"
echo "cwd=$(pwd) host=$(hostname) greeting=$GREETING"
echo "limits=$(cat /sys/fs/cgroup/memory.max)/$(cat /sys/fs/cgroup/cpu.max)/$(cat /sys/fs/cgroup/pids.max)"
echo "pid_max=$(cat /proc/sys/kernel/pid_max)"
touch /x 2>/dev/null && echo root-writable || echo root-read-only
ls /mnt/berth/plan.json >/dev/null && echo bind-visible
touch /mnt/berth/x 2>/dev/null && echo bind-writable || echo bind-read-only
echo "netns=$(readlink /proc/self/ns/net)"
"""]

[[onboot]]
name = "host2"
image = "oci:images/busybox:latest"
net = "host"
command = ["sh", "-c", "echo netns=$(readlink /proc/self/ns/net)"]

[[onboot]]
name = "isolated"
image = "oci:images/busybox:latest"
sysctls = { "net.ipv4.ip_forward" = 1, "kernel.shmmni" = 1234 }
command = ["sh", "-c", """
echo netns=$(readlink /proc/self/ns/net); echo forward=$(cat /proc/sys/net/ipv4/ip_forward) shmmni=$(cat /proc/sys/kernel/shmmni)
cd /proc/sys
for k in kernel/kptr_restrict kernel/dmesg_restrict kernel/perf_event_paranoid kernel/unprivileged_bpf_disabled \
    kernel/yama/ptrace_scope kernel/randomize_va_space fs/protected_fifos fs/protected_regular fs/suid_dumpable \
    dev/tty/ldisc_autoload net/core/bpf_jit_harden net/ipv4/tcp_syncookies net/ipv4/conf/all/accept_redirects \
    net/ipv4/conf/all/send_redirects net/ipv4/conf/all/accept_source_route net/ipv4/conf/all/rp_filter \
    net/ipv4/icmp_echo_ignore_broadcasts; do echo "hardened $k=$(cat $k 2>&1)"; done
"""]
"#;

fn line<'a>(console: &'a str, prefix: &str) -> &'a str {
    console
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{console}"))
}

#[test]
fn container_settings_reach_the_container() {
    let (_dir, out) = common::build_fresh("settings", SETTINGS);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    for name in ["settings", "host2", "isolated"] {
        let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some(name), t).unwrap();
        assert_eq!(e.get("code"), Some("0"), "{name}: {}", vm.console_text());
    }
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    assert_eq!(line(&c, "settings | ids="), "1000:1000 groups=1000 10");
    assert_eq!(line(&c, "settings | cwd="), "/srv/app host=custom-host greeting=hi there");
    assert_eq!(line(&c, "settings | limits="), "33554432/50000 100000/20");
    assert_eq!(line(&c, "settings | pid_max="), "54321");
    assert!(c.contains("settings | root-read-only"), "{c}");
    assert!(c.contains("settings | bind-visible"), "{c}");
    assert!(c.contains("settings | bind-read-only"), "{c}");
    assert_eq!(line(&c, "settings | nofile="), "512 nproc=50/60 oom=300");
    assert_eq!(line(&c, "isolated | forward="), "1 shmmni=1234");
    // berth's hardened defaults, seen from a container with its own network namespace; the
    // config's fs.protected_regular = 1 wins over the default 2.
    for (key, value) in [
        ("kernel/kptr_restrict", "2"),
        ("kernel/dmesg_restrict", "1"),
        ("kernel/perf_event_paranoid", "3"),
        ("kernel/unprivileged_bpf_disabled", "1"),
        ("kernel/yama/ptrace_scope", "1"),
        ("kernel/randomize_va_space", "2"),
        ("fs/protected_fifos", "2"),
        ("fs/protected_regular", "1"),
        ("fs/suid_dumpable", "0"),
        ("dev/tty/ldisc_autoload", "0"),
        ("net/ipv4/tcp_syncookies", "1"),
        ("net/ipv4/conf/all/accept_redirects", "0"),
        ("net/ipv4/conf/all/send_redirects", "0"),
        ("net/ipv4/conf/all/accept_source_route", "0"),
        ("net/ipv4/conf/all/rp_filter", "1"),
        ("net/ipv4/icmp_echo_ignore_broadcasts", "1"),
    ] {
        assert_eq!(line(&c, &format!("isolated | hardened {key}=")), value, "{key}");
    }
    let (a, b, i) =
        (line(&c, "settings | netns="), line(&c, "host2 | netns="), line(&c, "isolated | netns="));
    assert_eq!(a, b, "two net=host containers share the machine's network namespace");
    assert_ne!(a, i, "a net=none container has its own network namespace");
}

#[test]
fn berth_run_boots_an_image_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let out = common::build(dir.path(), "hello", &example);
    let run = Command::new(common::berth())
        .args(["run", out.to_str().unwrap(), "--timeout", &default_timeout().as_secs().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "berth run failed: {stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("hello | hello from hello"), "{stdout}");
    assert!(stdout.contains("event=shutdown.complete action=poweroff"), "{stdout}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("berth: accelerator kvm (") || stderr.contains("berth: accelerator tcg ("),
        "{stderr}"
    );
    let missing = Command::new(common::berth()).args(["run", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("made by `berth build`"));
}

/// A guest that prints nothing (here: no `console=ttyS0`) does not leave a blank terminal:
/// after 15 s of silence `berth run` says so, with the accelerator and what to try; `--timeout`
/// then stops it with an error.
#[test]
fn berth_run_says_when_the_guest_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let config = r#"
[kernel]
cmdline = "quiet"

[[service]]
name = "idle"
image = "oci:images/busybox:latest"
command = ["sleep", "1000"]
"#;
    let out = common::build(dir.path(), "silent", config);
    let started = std::time::Instant::now();
    let run = Command::new(common::berth())
        .args(["run", out.to_str().unwrap(), "--no-net", "--timeout", "22"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "--timeout was not honoured");
    assert!(stderr.contains("berth: the guest has printed nothing for 15 s (accelerator "), "{stderr}");
    assert!(stderr.contains("console=ttyS0"), "the notice says what to try: {stderr}");
    assert!(stderr.contains("did not shut down within"), "{stderr}");
}
