//! What `[kernel] hardware` costs (issue 20): the same image (examples/hello.toml) built with
//! each driver set, against virtio only — image size, the drivers packed for the set, and the
//! boot to the first container output on the same QEMU machine (virtio devices), runs
//! interleaved so load hits every variant alike.
//!
//!     cargo bench -p berth-image-build --bench hardware     # BENCH_RUNS=N (default 5)
//!
//! `metal` and `all` need Debian's generic kernel (`source = "debian-generic"`), so the table
//! also has virtio only on that kernel: the kernel's own share is told apart from the set's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_qemu::{Vm, VmConfig};

/// One variant: its name, the `[kernel]` lines it adds.
const VARIANTS: [(&str, &str); 7] = [
    ("virtio only (cloud kernel)", ""),
    ("vmware (cloud kernel)", "hardware = [\"vmware\"]\n"),
    ("hyperv (cloud kernel)", "hardware = [\"hyperv\"]\n"),
    ("vmware + hyperv (cloud kernel)", "hardware = [\"vmware\", \"hyperv\"]\n"),
    ("virtio only (generic kernel)", "source = \"debian-generic\"\n"),
    ("metal (generic kernel)", "source = \"debian-generic\"\nhardware = [\"metal\"]\n"),
    ("all (generic kernel)", "source = \"debian-generic\"\nhardware = [\"all\"]\n"),
];

/// Builds a variant; returns its output directory and the build's line about the drivers.
fn build(dir: &Path, i: usize, kernel_lines: &str) -> (PathBuf, String) {
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let config = example.replacen("[kernel]\n", &format!("[kernel]\n{kernel_lines}"), 1);
    let file = dir.join(format!("v{i}.toml"));
    std::fs::write(&file, config).unwrap();
    let out = dir.join(format!("v{i}.out"));
    let stderr = common::build_formats(&file, &out, &[], &[]);
    let drivers = stderr
        .lines()
        .find_map(|l| l.strip_prefix("berth: drivers by device ([kernel] hardware) "))
        .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest).to_string())
        .unwrap_or_else(|| "-".to_string());
    (out, drivers)
}

/// QEMU start → the first line of hello's output, seconds; and the accelerator it ran on.
fn boot(out: &Path) -> (f64, &'static str) {
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    let cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
    let start = Instant::now();
    let mut vm = Vm::start(cfg).expect("qemu");
    vm.wait_for_line(|l| l.contains("hello | "), Duration::from_secs(120)).expect("hello runs");
    let first = start.elapsed().as_secs_f64();
    let accel = vm.accel().name();
    let _ = vm.wait_exit(Duration::from_secs(60));
    (first, accel)
}

fn mib(path: &Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / f64::from(1 << 20)).unwrap_or(f64::NAN)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let built: Vec<(PathBuf, String)> =
        VARIANTS.iter().enumerate().map(|(i, (_, lines))| build(dir.path(), i, lines)).collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut accels = std::collections::BTreeSet::new();
    for _ in 0..runs {
        for (i, (out, _)) in built.iter().enumerate() {
            let (secs, accel) = boot(out);
            times[i].push(secs);
            accels.insert(accel);
        }
    }
    let accels: Vec<&str> = accels.into_iter().collect();
    println!("hello on QEMU (virtio devices, {}), medians of {runs} interleaved runs:", accels.join("+"));
    println!(
        "{:<32}{:>10}{:>10}{:>12}{:>42}",
        "variant", "kernel", "initrd", "boot", "drivers by device (uncompressed)"
    );
    for (i, (name, _)) in VARIANTS.iter().enumerate() {
        let (out, drivers) = &built[i];
        println!(
            "{:<32}{:>6.1} MiB{:>6.1} MiB{:>10.2} s{:>42}",
            name,
            mib(&out.join("vmlinuz")),
            mib(&out.join("initrd.img")),
            common::median(&mut times[i]),
            drivers
        );
    }
}
