//! cgroup v2 limits inside a booted machine, where PID 1 owns a pure cgroup2 hierarchy: a fork
//! bomb stops at `pids_limit`, a busy loop with `cpus = 0.5` gets about half a CPU (and one
//! without a limit gets the whole CPU). The memory hog is in boot_failures.rs.

mod common;

use berth_qemu::default_timeout;

const CGROUPS: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "forkbomb"
image = "oci:images/busybox:latest"
pids_limit = 20
command = ["sh", "-c", """
# The subshell forks until the kernel refuses (a refused fork ends a shell); its children stay.
( i=0; while [ $i -lt 60 ]; do sleep 60 & i=$((i+1)); done ) 2>/dev/null
echo current=$(cat /sys/fs/cgroup/pids.current) max=$(cat /sys/fs/cgroup/pids.max)
echo refused=$(sed -n 's/^max //p' /sys/fs/cgroup/pids.events)
kill -9 -1; exit 0
"""]

[[onboot]]
name = "half"
image = "oci:images/busybox:latest"
cpus = 0.5
command = ["sh", "-c", """
u0=$(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat); t0=$(cut -d' ' -f1 /proc/uptime)
yes >/dev/null & p=$!; sleep 4; kill $p
u1=$(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat); t1=$(cut -d' ' -f1 /proc/uptime)
echo share=$(( (u1-u0) / ( ($(echo $t1 | tr -d .) - $(echo $t0 | tr -d .)) * 100 ) ))
"""]

[[onboot]]
name = "whole"
image = "oci:images/busybox:latest"
command = ["sh", "-c", """
u0=$(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat); t0=$(cut -d' ' -f1 /proc/uptime)
yes >/dev/null & p=$!; sleep 4; kill $p
u1=$(sed -n 's/^usage_usec //p' /sys/fs/cgroup/cpu.stat); t1=$(cut -d' ' -f1 /proc/uptime)
echo share=$(( (u1-u0) / ( ($(echo $t1 | tr -d .) - $(echo $t0 | tr -d .)) * 100 ) ))
"""]
"#;

fn field(console: &str, prefix: &str) -> String {
    console
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{console}"))
        .to_string()
}

#[test]
fn pids_and_cpu_limits_hold() {
    let (_dir, out) = common::build_fresh("cgroups", CGROUPS);
    let mut vm = common::boot(&out);
    let t = default_timeout() * 2;
    for name in ["forkbomb", "half", "whole"] {
        let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some(name), t).unwrap();
        assert_eq!(e.get("code"), Some("0"), "{name}: {}", vm.console_text());
    }
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();

    let line = field(&c, "forkbomb | current=");
    let current: u32 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(current <= 20, "pids.current {current} above pids.max: {line}");
    assert!(line.ends_with("max=20"), "{line}");
    let refused: u32 = field(&c, "forkbomb | refused=").parse().unwrap();
    assert!(refused > 0, "no fork was refused:\n{c}");

    // Percent of one CPU used by the busy loop over 4 s of guest time.
    let half: u32 = field(&c, "half | share=").parse().unwrap();
    let whole: u32 = field(&c, "whole | share=").parse().unwrap();
    eprintln!(
        "busy loop: {half}% of a CPU with cpus = 0.5, {whole}% without a limit; {refused} forks refused"
    );
    assert!((35..=60).contains(&half), "cpus = 0.5 gave {half}% of a CPU");
    assert!(whole >= 80, "without a limit the loop got only {whole}% of a CPU");
}

const IO_AND_MORE: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"
modules = ["virtio_pci", "virtio_blk"]

[system]
when_done = "poweroff"

[[onboot]]
name = "throttled"
image = "oci:images/busybox:latest"
devices = ["/dev/vda"]
io = { weight = 500, write_bps = { "/dev/vda" = "1m" } }
command = ["sh", "-c", """
echo "io.max=$(cat /sys/fs/cgroup/io.max) io.weight=$(cat /sys/fs/cgroup/io.weight)"
s=$(cut -d' ' -f1 /proc/uptime | tr -d .)
dd if=/dev/zero of=/dev/vda bs=64k count=48 conv=fsync 2>/dev/null
e=$(cut -d' ' -f1 /proc/uptime | tr -d .)
echo "centiseconds=$((e - s))"
"""]

[[onboot]]
name = "free"
image = "oci:images/busybox:latest"
devices = ["/dev/vda"]
command = ["sh", "-c", """
s=$(cut -d' ' -f1 /proc/uptime | tr -d .)
dd if=/dev/zero of=/dev/vda bs=64k count=48 conv=fsync 2>/dev/null
e=$(cut -d' ' -f1 /proc/uptime | tr -d .)
echo "centiseconds=$((e - s))"
"""]

[[onboot]]
name = "tuned"
image = "oci:images/busybox:latest"
memory = "64m"
memory_reservation = "16m"
memory_swap = "96m"
cpu_shares = 512
cpuset = "0"
command = ["sh", "-c", "echo low=$(cat /sys/fs/cgroup/memory.low) swap=$(cat /sys/fs/cgroup/memory.swap.max) weight=$(cat /sys/fs/cgroup/cpu.weight) cpus=$(cat /sys/fs/cgroup/cpuset.cpus)"]
"#;

#[test]
fn io_throttling_and_docker_resource_options() {
    let (dir, out) = common::build_fresh("io", IO_AND_MORE);
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(64 << 20).unwrap();
    let drive = format!("file={},if=virtio,format=raw,cache=unsafe", disk.display());
    let mut vm = common::boot_with(&out, &["-drive", &drive]);
    let t = default_timeout() * 2;
    for name in ["throttled", "free", "tuned"] {
        let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some(name), t).unwrap();
        assert_eq!(e.get("code"), Some("0"), "{name}: {}", vm.console_text());
    }
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    let io = field(&c, "throttled | io.max=");
    assert!(io.contains("wbps=1048576"), "{io}");
    assert!(io.ends_with("io.weight=default 4950"), "blkio weight 500 → io.weight 4950 (runc): {io}");
    // 3 MiB at 1 MiB/s take about 3 s; unthrottled the same write is much faster.
    let throttled: u32 = field(&c, "throttled | centiseconds=").parse().unwrap();
    let free: u32 = field(&c, "free | centiseconds=").parse().unwrap();
    eprintln!("3 MiB written in {throttled} cs with write_bps = 1m, {free} cs without");
    assert!(throttled >= 200, "write_bps = 1m did not slow 3 MiB down: {throttled} cs");
    assert!(free * 2 < throttled, "unthrottled {free} cs vs throttled {throttled} cs");
    assert_eq!(field(&c, "tuned | low="), "16777216 swap=33554432 weight=20 cpus=0");
}
