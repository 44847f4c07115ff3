//! PID 1's resident memory with 5 services running and logging, and the shutdown latency from
//! QMP `system_powerdown` to QEMU's exit when the services stop at once (issue 4's goals:
//! ≤ 2 MiB VmRSS; ≤ 0.3 s plus the services' own stop time, under TCG).
//!
//!     cargo bench -p berth-image-build --bench pid1          # BENCH_RUNS=N (default 5)

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[[service]]
name = "s1"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo s1 line $i; i=$((i+1)); sleep 0.1; done"]

[[service]]
name = "s2"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo s2 line $i; i=$((i+1)); sleep 0.1; done"]

[[service]]
name = "s3"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo s3 line $i; i=$((i+1)); sleep 0.1; done"]

[[service]]
name = "s4"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo s4 line $i; i=$((i+1)); sleep 0.1; done"]

[[service]]
name = "probe"
image = "oci:images/busybox:latest"
binds = ["/proc:/hostproc:ro"]
command = ["sh", "-c", "trap 'exit 0' TERM; sleep 3; grep -E '^VmRSS|^VmHWM' /hostproc/1/status; while true; do sleep 0.1; done"]
"#;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let out = common::build(dir.path(), "pid1", CONFIG);
    let (mut rss, mut hwm, mut latency, mut stop_work) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let mut vm = common::boot(&out);
        let t = Duration::from_secs(120);
        let line = vm.wait_for_line(|l| l.starts_with("probe | VmRSS"), t).unwrap();
        let kb = |l: &str| l.split_whitespace().rev().nth(1).and_then(|n| n.parse::<f64>().ok()).unwrap();
        let hwm_line = vm.wait_for_line(|l| l.starts_with("probe | VmHWM"), t).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let start = Instant::now();
        vm.qmp().unwrap().system_powerdown().unwrap();
        vm.wait_exit(t).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let events = vm.events();
        let begin = events.iter().find(|e| e.name == "shutdown.begin").map(|e| e.ms).unwrap();
        let last_exit = events.iter().filter(|e| e.name == "container.exited").map(|e| e.ms).max().unwrap();
        let services = (last_exit - begin) as f64 / 1000.0;
        println!(
            "run {}: PID 1 VmRSS {} kB (peak {} kB); system_powerdown → QEMU exit {:.3} s, of which the services' own stop {:.3} s",
            i + 1,
            kb(&line),
            kb(&hwm_line),
            secs,
            services
        );
        rss.push(kb(&line));
        hwm.push(kb(&hwm_line));
        latency.push(secs);
        stop_work.push(secs - services);
    }
    println!(
        "median: PID 1 VmRSS {:.0} kB (peak {:.0} kB) with 5 services logging; shutdown {:.3} s, {:.3} s beyond the services' own stop (goals: ≤ 2048 kB; ≤ 0.3 s)",
        common::median(&mut rss),
        common::median(&mut hwm),
        common::median(&mut latency),
        common::median(&mut stop_work)
    );
}
