//! Data disk figures under TCG (issue 7): boot time with and without the first-boot format, and
//! N boot → write → power-button cycles with the records lost counted.
//!
//!     cargo bench -p berth-image-build --bench storage   # BENCH_RUNS=N (default 5), BENCH_CYCLES=N (default 100)
//!
//! "To first record" is taken on the host: QEMU started → the service's first fsync'd record
//! reported on the serial console. "Storage setup" is the guest's own figure (the `took_ms` of
//! `storage.mounted`: find, probe, format, e2fsck, mount), "format" the `took_ms` of
//! `storage.formatted`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_qemu::Vm;

const TIMEOUT: Duration = Duration::from_secs(120);

fn blank_disk(path: &Path) {
    let _ = std::fs::remove_file(path);
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg("1G")
        .output()
        .unwrap();
    assert!(o.status.success());
}

fn boot(out: &Path, disk: &Path) -> Vm {
    let drive = format!("if=none,id=data,file={},format=qcow2", disk.display());
    common::boot_with(out, &["-drive", &drive, "-device", "virtio-blk-pci,drive=data,serial=berth-data"])
}

/// One cycle: (QEMU start → first record, s; storage setup ms; format ms; records on disk
/// before this boot; QEMU start → exit, s).
fn cycle(out: &Path, disk: &Path) -> (f64, f64, Option<f64>, u64, f64) {
    let start = Instant::now();
    let mut vm = boot(out, disk);
    vm.wait_for_line(|l| l.contains("records | synced="), TIMEOUT).unwrap();
    let first = start.elapsed().as_secs_f64();
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(TIMEOUT).unwrap();
    let total = start.elapsed().as_secs_f64();
    let events = vm.events();
    let ms = |name: &str| {
        events
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.get("took_ms"))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let c = vm.console_text();
    let line = c.lines().find_map(|l| l.trim_end().strip_prefix("records | have=")).unwrap_or("0 gap=?");
    let (have, gap) = line.split_once(" gap=").unwrap_or((line, "?"));
    assert_eq!(gap, "", "records out of sequence: {c}");
    (first, ms("storage.mounted").unwrap_or(f64::NAN), ms("storage.formatted"), have.parse().unwrap(), total)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let cycles: u64 = std::env::var("BENCH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let (dir, out) = common::build_fresh("storage-bench", &common::records_config(Some(1)));
    let disk: PathBuf = dir.path().join("data.qcow2");

    // First boot (blank disk, formatted) beside the boot after it (formatted disk).
    let (mut first_boot, mut later_boot) = (Vec::new(), Vec::new());
    let (mut first_setup, mut later_setup, mut format_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        blank_disk(&disk);
        let (t, setup, format, _, _) = cycle(&out, &disk);
        first_boot.push(t);
        first_setup.push(setup);
        format_ms.push(format.expect("the first boot formats"));
        let (t, setup, format, _, _) = cycle(&out, &disk);
        assert!(format.is_none(), "formatted twice");
        later_boot.push(t);
        later_setup.push(setup);
    }
    println!("data disk, 1 GiB qcow2, TCG, {runs} runs (medians):");
    println!("{:<34}{:>14}{:>14}", "", "first boot", "later boots");
    println!(
        "{:<34}{:>12.2} s{:>12.2} s",
        "QEMU start → first fsync'd record",
        common::median(&mut first_boot),
        common::median(&mut later_boot)
    );
    println!(
        "{:<34}{:>11.0} ms{:>11.0} ms",
        "storage setup (guest)",
        common::median(&mut first_setup),
        common::median(&mut later_setup)
    );
    println!("{:<34}{:>11.0} ms{:>14}", "  of which mke2fs", common::median(&mut format_ms), "-");

    // Boot → write → power button, many times, on one disk.
    blank_disk(&disk);
    let mut times = Vec::new();
    let mut lost = 0u64;
    for i in 0..cycles {
        let (_, _, _, have, total) = cycle(&out, &disk);
        if have != i {
            lost += i.saturating_sub(have);
            eprintln!("cycle {i}: {have} records on disk, {i} written before");
        }
        times.push(total);
    }
    let disk_report = {
        let raw = dir.path().join("final.raw");
        let _ = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&disk)
            .arg(&raw)
            .status();
        let o = std::process::Command::new("e2fsck").args(["-fn"]).arg(&raw).output().unwrap();
        let _ = std::fs::remove_file(&raw);
        if o.status.success() {
            "e2fsck -fn: clean"
        } else {
            "e2fsck -fn: ERRORS"
        }
    };
    println!(
        "{cycles} boot → write → power-button cycles: {lost} records lost, median cycle {:.2} s, {disk_report}",
        common::median(&mut times)
    );
}
