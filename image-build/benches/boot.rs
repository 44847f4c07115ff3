//! Boot to the first container output under QEMU: `examples/hello.toml` built by berth, against
//! a bare initramfs whose `/init` execs the same program directly (same kernel, same QEMU
//! flags, same zstd compression). Runs are interleaved; prints each run, the medians and the ratio.
//!
//!     cargo bench -p berth-image-build --bench boot          # BENCH_RUNS=N (default 10)
//!     BENCH_KERNEL=project cargo bench -p berth-image-build --bench boot   # the project kernel

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_image_build::cpio::CpioWriter;
use berth_qemu::{Vm, VmConfig};

/// A bare initramfs: busybox, and an `/init` that execs `sh SCRIPT` directly.
fn bare_initrd(path: &Path, script: &str) {
    let out = std::fs::File::create(path).unwrap();
    // The same compression berth uses by default (zstd, level 12).
    let zst = zstd::stream::write::Encoder::new(out, 12).unwrap();
    let mut cpio = CpioWriter::new(zst, 0);
    for dir in ["dev", "bin", "proc"] {
        cpio.dir(dir, 0o755, 0, 0).unwrap();
    }
    cpio.char_dev("dev/console", 0o600, 0, 0, 5, 1).unwrap();
    let busybox = std::fs::File::open("/bin/busybox").unwrap();
    let len = busybox.metadata().unwrap().len();
    cpio.file("bin/busybox", 0o755, 0, 0, len, busybox).unwrap();
    for applet in ["sh", "hostname", "echo", "cat", "grep", "cut"] {
        cpio.symlink(&format!("bin/{applet}"), "busybox", 0, 0).unwrap();
    }
    cpio.file("program.sh", 0o644, 0, 0, script.len() as u64, script.as_bytes()).unwrap();
    let init = "#!/bin/sh\nexec /bin/sh /program.sh\n";
    cpio.file("init", 0o755, 0, 0, init.len() as u64, init.as_bytes()).unwrap();
    let mut out = cpio.finish().unwrap().finish().unwrap();
    out.flush().unwrap();
}

/// Seconds from QEMU start to the first line `pred` accepts.
fn time_boot(kernel: &Path, initrd: &Path, cmdline: &str, pred: impl Fn(&str) -> bool) -> f64 {
    let start = Instant::now();
    let vm = Vm::start(VmConfig::new(kernel, initrd, cmdline)).unwrap();
    vm.wait_for_line(pred, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let mut config = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    if std::env::var("BENCH_KERNEL").as_deref() == Ok("project") {
        config = common::with_project_kernel(&config);
    }
    // The example's program: `sh -c SCRIPT`.
    let parsed = berth_schema::config::Config::parse(&config, "hello.toml").unwrap();
    let command = parsed.onboot[0].command.clone().unwrap();
    assert_eq!(&command[..2], ["sh", "-c"], "the bench expects the example to run `sh -c SCRIPT`");
    let out = common::build(dir.path(), "hello", &config);
    let kernel = out.join("vmlinuz");
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap().trim().to_string();
    let bare = dir.path().join("bare.img");
    bare_initrd(&bare, &command[2]);

    println!(
        "boot to first container output; accelerator: {}; {runs} interleaved runs; cmdline `{cmdline}`",
        if berth_qemu::kvm_usable() { "kvm" } else { "tcg" }
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    println!("initrd: berth {} bytes, bare {} bytes", size(&out.join("initrd.img")), size(&bare));
    let (mut b, mut p) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let t_bare = time_boot(&kernel, &bare, &cmdline, |l| l.starts_with("hello from"));
        let t_berth =
            time_boot(&kernel, &out.join("initrd.img"), &cmdline, |l| l.starts_with("hello | hello from"));
        println!("run {:>2}: bare /init {:.3} s   berth {:.3} s", i + 1, t_bare, t_berth);
        b.push(t_bare);
        p.push(t_berth);
    }
    let (mb, mp) = (common::median(&mut b), common::median(&mut p));
    println!("median: bare /init {mb:.3} s   berth {mp:.3} s   ratio {:.3}", mp / mb);
}
