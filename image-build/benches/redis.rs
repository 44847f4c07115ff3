//! The redis appliance (redis-server in a Debian minbase root, 222 MB; see
//! `tests/common/redis.rs`), its layers unpacked into RAM from the initramfs against read from
//! the verified system partition: QEMU start → first PONG through the published port, the
//! smallest `-m` that reaches it, image size, build time. Same kernel, same QEMU flags, runs
//! interleaved; each layout is booted both by the kernel directly (`-kernel`, the slim
//! initramfs and the disk's command line for the partition) and through OVMF (the UKI, the
//! disk).
//!
//!     cargo bench -p berth-image-build --bench redis        # BENCH_RUNS=N (default 5)

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_qemu::{user_net_args, Vm, VmConfig};
use common::redis;

/// One way of booting the appliance.
struct Layout {
    name: &'static str,
    /// QEMU arguments besides memory and the port forward: (kernel, initrd, cmdline, extra).
    kernel: Option<(PathBuf, PathBuf, String)>,
    extra: Vec<String>,
}

impl Layout {
    /// Boots with `mib` of RAM: seconds to the first PONG, or `None` within `limit`.
    fn time_to_pong(&self, mib: u32, limit: Duration) -> Option<f64> {
        let port = redis::free_port();
        let mut cfg = match &self.kernel {
            Some((k, i, c)) => VmConfig::new(k, i, c),
            None => VmConfig::default(),
        };
        cfg.memory_mib = mib;
        cfg.extra_args.extend(self.extra.iter().cloned());
        cfg.extra_args.extend(user_net_args(&[(port, 6379)]));
        let start = Instant::now();
        let vm = Vm::start(cfg).unwrap();
        let answered = redis::wait_pong(port, start + limit);
        let t = start.elapsed().as_secs_f64();
        drop(vm);
        answered.then_some(t)
    }

    /// The smallest RAM (a multiple of 32 MiB in `lo..=hi`) with which it answers (`lo` itself
    /// is reported as `<= lo`).
    fn smallest_memory(&self, mut lo: u32, mut hi: u32) -> String {
        if self.time_to_pong(lo, Duration::from_secs(60)).is_some() {
            return format!("<= {lo}");
        }
        // Invariant: `hi` answers; `lo` does not.
        while hi - lo > 32 {
            let mid = (lo + hi) / 2 / 32 * 32;
            if self.time_to_pong(mid, Duration::from_secs(60)).is_some() {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi.to_string()
    }
}

fn build(dir: &Path, name: &str, formats: &[&str]) -> (PathBuf, f64) {
    let config = dir.join("redis.toml");
    std::fs::write(&config, redis::CONFIG).unwrap();
    let out = dir.join(name);
    let start = Instant::now();
    common::build_formats(&config, &out, formats, &[]);
    (out, start.elapsed().as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    redis::image(dir.path());
    let (ram, ram_build) = build(dir.path(), "ram", &["uki"]);
    let (disk, disk_build) = build(dir.path(), "disk", &["qcow2"]);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
    println!("accelerator: {}", if berth_qemu::kvm_usable() { "kvm" } else { "tcg" });
    println!(
        "build: initramfs layout (kernel+initrd, uki) {ram_build:.1} s; disk layout (qcow2, which also writes kernel+initrd) {disk_build:.1} s"
    );
    println!(
        "size: vmlinuz+initrd.img {:.1} MiB, berth.efi {:.1} MiB; disk.qcow2 {:.1} MiB",
        size(&ram.join("vmlinuz")) + size(&ram.join("initrd.img")),
        size(&ram.join("berth.efi")),
        size(&disk.join("disk.qcow2"))
    );
    let (_, slim, disk_cmdline) =
        berth_image_build::inspect::boot_files_of(&disk.join("disk.qcow2")).expect("the disk's UKI");
    let slim_path = dir.path().join("slim.img");
    std::fs::write(&slim_path, slim).unwrap();
    let cmdline = std::fs::read_to_string(ram.join("cmdline")).unwrap().trim().to_string();
    let ovmf = berth_image_build::formats::ovmf().unwrap().display().to_string();
    let qcow2 = format!("file={},format=qcow2,if=virtio,readonly=on", disk.join("disk.qcow2").display());
    let esp = dir.path().join("esp/EFI/BOOT");
    std::fs::create_dir_all(&esp).unwrap();
    std::fs::copy(ram.join("berth.efi"), esp.join("BOOTX64.EFI")).unwrap();
    let layouts = [
        Layout {
            name: "initramfs, -kernel",
            kernel: Some((ram.join("vmlinuz"), ram.join("initrd.img"), cmdline.clone())),
            extra: vec![],
        },
        Layout {
            name: "partition, -kernel",
            kernel: Some((ram.join("vmlinuz"), slim_path.clone(), disk_cmdline.clone())),
            extra: vec!["-drive".into(), qcow2.clone()],
        },
        Layout {
            name: "initramfs, UKI/OVMF",
            kernel: None,
            extra: vec![
                "-bios".into(),
                ovmf.clone(),
                "-drive".into(),
                format!("file=fat:ro:{},format=raw,if=virtio,readonly=on", dir.path().join("esp").display()),
            ],
        },
        Layout {
            name: "partition, qcow2/OVMF",
            kernel: None,
            extra: vec!["-bios".into(), ovmf, "-drive".into(), qcow2],
        },
    ];
    // Memory for the timed runs: what each layout needs, with room.
    let memory = [768, 256, 896, 256];
    println!("QEMU start -> first PONG, {runs} interleaved runs (-m: {memory:?} MiB)");
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); layouts.len()];
    for run in 0..runs {
        let mut line = format!("run {:>2}:", run + 1);
        for (i, l) in layouts.iter().enumerate() {
            let t = l
                .time_to_pong(memory[i], Duration::from_secs(120))
                .unwrap_or_else(|| panic!("{}: no PONG", l.name));
            line.push_str(&format!("  {} {t:.2} s", l.name));
            times[i].push(t);
        }
        println!("{line}");
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| common::median(t)).collect();
    for (l, m) in layouts.iter().zip(&medians) {
        println!("median {:<24} {m:.2} s", l.name);
    }
    println!(
        "ratio initramfs/partition: -kernel {:.2}, OVMF {:.2}",
        medians[0] / medians[1],
        medians[2] / medians[3]
    );
    println!("smallest -m reaching PONG (32 MiB steps):");
    for (l, (lo, hi)) in layouts.iter().zip([(256, 768), (64, 256), (384, 896), (128, 256)]) {
        println!("  {:<24} {} MiB", l.name, l.smallest_memory(lo, hi));
    }
}
