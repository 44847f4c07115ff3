//! The project kernel against Debian's cloud kernel (issue 8), same image (examples/hello.toml),
//! TCG: time to PID 1, boot to the first container output, image size, and the smallest guest
//! memory (`-m`) that boots it.
//!
//!     cargo bench -p berth-image-build --bench kernel     # BENCH_RUNS=N (default 5)
//!
//! "Time to PID 1" is the kernel's own clock when PID 1 starts (the `ms` of its first event,
//! `boot.stage stage=init`, read from CLOCK_BOOTTIME). "To first output" is the host's clock
//! from QEMU's start to the container's first line on the serial console.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_qemu::{Vm, VmConfig};

const TIMEOUT: Duration = Duration::from_secs(120);

/// One boot with `memory_mib` of RAM: (time to PID 1 s, QEMU start → first output s), or
/// `None` if hello did not run to its end.
fn boot(out: &Path, memory_mib: u32) -> Option<(f64, f64)> {
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    let mut cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
    cfg.memory_mib = memory_mib;
    let start = Instant::now();
    let mut vm = Vm::start(cfg).map_err(|e| eprintln!("qemu: {e}")).ok()?;
    let line = |prefix: &'static str, secs: u64| {
        vm.wait_for_line(move |l| l.contains(prefix), Duration::from_secs(secs))
            .map_err(|e| eprintln!("{memory_mib} MiB: no `{prefix}` line: {e}"))
            .ok()
    };
    line("hello | ", 60)?;
    let first = start.elapsed().as_secs_f64();
    line("hello | root filesystem", 30)?;
    let pid1 = vm
        .events()
        .iter()
        .find(|e| e.name == "boot.stage" && e.get("stage") == Some("init"))
        .map(|e| e.ms as f64)?;
    let _ = vm.wait_exit(TIMEOUT);
    Some((pid1 / 1000.0, first))
}

/// The smallest memory (MiB, in steps of 8) that still boots hello, by bisection.
fn smallest_memory(out: &Path) -> u32 {
    let (mut bad, mut good) = (8u32, 512u32);
    assert!(boot(out, good).is_some(), "does not boot even with {good} MiB");
    while good - bad > 8 {
        let mid = (bad + good) / 2 / 8 * 8;
        if boot(out, mid).is_some() {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

fn size_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / (1 << 20) as f64).unwrap_or(f64::NAN)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let debian = common::build(dir.path(), "debian", &example);
    let project = common::build(dir.path(), "project", &common::with_project_kernel(&example));

    let mut figures = Vec::new();
    for out in [&debian, &project] {
        let (mut pid1, mut first) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (p, f) = boot(out, 512).expect("hello boots");
            pid1.push(p);
            first.push(f);
        }
        let size = size_mib(&out.join("vmlinuz")) + size_mib(&out.join("initrd.img"));
        figures.push((
            common::median(&mut pid1),
            common::median(&mut first),
            size_mib(&out.join("vmlinuz")),
            size,
            smallest_memory(out),
        ));
    }
    let (d, p) = (figures[0], figures[1]);
    println!("hello, TCG, medians of {runs} runs:");
    println!("{:<38}{:>16}{:>16}", "", "Debian cloud", "project");
    println!("{:<38}{:>14.2} s{:>14.2} s", "time to PID 1 (kernel clock)", d.0, p.0);
    println!("{:<38}{:>14.2} s{:>14.2} s", "QEMU start → first container output", d.1, p.1);
    println!("{:<38}{:>12.1} MiB{:>12.1} MiB", "kernel", d.2, p.2);
    println!("{:<38}{:>12.1} MiB{:>12.1} MiB", "kernel + initrd (goal ≤ 8 MiB)", d.3, p.3);
    println!("{:<38}{:>12} MiB{:>12} MiB", "smallest -m that boots (goal ≤ 64)", d.4, p.4);
}
