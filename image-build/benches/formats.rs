//! Build times and sizes of every output format for the hello example (issue 6): a cold build
//! (empty kernel and blob cache: the Debian kernel is downloaded and unpacked) and warm
//! rebuilds (median), each format on its own, with the size of what it writes.
//!
//!     cargo bench -p berth-image-build --bench formats        # BENCH_RUNS=N (default 3)

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const FORMATS: [(&str, &str); 6] = [
    ("kernel+initrd", ""),
    ("uki", "berth.efi"),
    ("iso", "berth.iso"),
    ("raw-efi", "disk.raw"),
    ("qcow2", "disk.qcow2"),
    ("vhdx", "disk.vhdx"),
];

fn build(config: &Path, out: &Path, format: &str, cache: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(out);
    let start = Instant::now();
    let o = Command::new(common::berth())
        .env("BERTH_INIT", common::init_binary())
        .env("BERTH_CACHE_DIR", cache)
        .arg("build")
        .arg(config)
        .arg("-o")
        .arg(out)
        .args(["--format", format])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let config = dir.path().join("hello.toml");
    std::fs::copy(common::workspace().join("examples/hello.toml"), &config).unwrap();
    let cold_cache = dir.path().join("cold-cache");
    let out = dir.path().join("out");
    let cold = build(&config, &out, "iso", &cold_cache);
    println!("cold build (empty cache, kernel downloaded), iso: {cold:.2} s");
    println!("{:<14} {:>10} {:>12} {:>12}", "format", "warm (s)", "file (MiB)", "initrd (MiB)");
    for (format, file) in FORMATS {
        let mut times: Vec<f64> = (0..runs).map(|_| build(&config, &out, format, &cold_cache)).collect();
        let warm = common::median(&mut times);
        let size =
            |name: &str| std::fs::metadata(out.join(name)).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
        let file_size = if file.is_empty() { size("vmlinuz") + size("initrd.img") } else { size(file) };
        println!("{format:<14} {:>10.2} {:>12.1} {:>12.1}", warm, file_size, size("initrd.img"));
    }
}
