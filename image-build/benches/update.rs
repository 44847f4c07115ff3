//! Updates in place: bytes downloaded and time from `update.available` to `update.committed`
//! for a one-layer change, against an update that shares nothing with the running version but
//! the kernel's modules (the whole image downloaded). Both install the same v2: busybox, a
//! 24 MiB application layer, a one-file layer on top; the first from v1 (the same busybox and
//! application layers, another top layer), the second from v0 (one layer of its own). A real
//! registry on this machine, the guest booted with OVMF, runs interleaved.
//!
//!     cargo bench -p berth-image-build --bench update        # BENCH_RUNS=N (default 2)

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::update::{boot, push, wait};

/// `len` bytes no compressor shrinks, different for each `seed`.
fn noise(seed: u8, len: usize) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut out = Vec::with_capacity(len);
    let mut h: [u8; 32] = Sha256::digest([seed]).into();
    while out.len() < len {
        h = Sha256::digest(h).into();
        out.extend_from_slice(&h);
    }
    out.truncate(len);
    out
}

fn import(dir: &Path, root: &Path, tag: &str, base: Option<&str>) {
    let mut args = vec![
        "image".to_string(),
        "import".into(),
        root.display().to_string(),
        "--tag".into(),
        tag.into(),
        "-o".into(),
        dir.join("images/busybox").display().to_string(),
    ];
    if let Some(base) = base {
        args.extend(["--base".into(), base.into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::run_berth(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The images: `app` (busybox + 24 MiB), `v1`, `v2` on it, and `v0`, one layer of its own.
fn images(dir: &Path) {
    common::busybox_image(dir);
    let app = dir.join("app-root/app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("data"), noise(1, 24 << 20)).unwrap();
    import(dir, &dir.join("app-root"), "app", Some("latest"));
    for v in ["v1", "v2"] {
        let root = dir.join(format!("{v}-root"));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("greeting"), format!("hello from {v}\n")).unwrap();
        import(dir, &root, v, Some("app"));
    }
    let root = dir.join("v0-root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("app")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("app/data"), noise(0, 24 << 20)).unwrap();
    fs::write(root.join("greeting"), "hello from v0\n").unwrap();
    import(dir, &root, "v0", None);
}

fn build(dir: &Path, v: &str, source: &str, formats: &[&str]) -> PathBuf {
    let config = format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[update]
source = "{source}"
insecure = true
interval = "2s"

[[service]]
name = "greeter"
image = "oci:images/busybox:{v}"
command = ["sh", "-c", "echo greeting=$(cat /greeting); exec sleep 100000"]
"#
    );
    let file = dir.join(format!("{v}.toml"));
    fs::write(&file, config).unwrap();
    let out = dir.join(format!("out-{v}-{}", source.rsplit(':').next().unwrap()));
    common::build_formats(&file, &out, formats, &[]);
    out
}

/// What one update took: bytes fetched, blobs fetched, bytes copied from the running slot,
/// seconds from update.available to update.committed.
type Figures = (u64, u64, u64, f64);

/// One update of a copy of `disk` to what `tag` gets.
fn run(dir: &Path, registry: &Registry, disk: &Path, v2: &Path, tag: &str) -> Figures {
    let copy = dir.join(format!("run-{tag}.raw"));
    let status =
        std::process::Command::new("cp").args(["--sparse=always"]).arg(disk).arg(&copy).status().unwrap();
    assert!(status.success());
    let vm = boot(&copy, &dir.join(format!("console-{tag}.log")));
    vm.wait_for_line(|l| l.contains("greeter | greeting="), Duration::from_secs(240)).unwrap();
    push(v2, &format!("{}/bench/app:{tag}", registry.host()));
    let (_, at) = wait(&vm, 0, "update.available", |_| true, 240);
    let available = Instant::now();
    let (downloaded, at) = wait(&vm, at, "update.downloaded", |_| true, 240);
    wait(&vm, at, "update.committed", |_| true, 300);
    let took = available.elapsed().as_secs_f64();
    let n = |k: &str| downloaded.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    drop(vm);
    let _ = fs::remove_file(&copy);
    (n("bytes"), n("blobs"), n("copied_bytes"), took)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    images(dir);
    let registry = Registry::start(dir, None);
    let source = |tag: &str| format!("10.0.2.2:{}/bench/app:{tag}", registry.port);
    let mut rows: Vec<(&str, Vec<Figures>)> =
        vec![("one layer changed (v1 -> v2)", vec![]), ("nothing shared (v0 -> v2)", vec![])];
    for round in 0..runs {
        for (i, from) in ["v1", "v0"].into_iter().enumerate() {
            let tag = format!("{from}-{round}");
            let start = build(dir, from, &source(&tag), &["raw-efi"]);
            let v2 = build(dir, "v2", &source(&tag), &["update"]);
            let r = run(dir, &registry, &start.join("disk.raw"), &v2, &tag);
            eprintln!("{}: {r:?}", rows[i].0);
            rows[i].1.push(r);
        }
    }
    println!("update to v2 (busybox + 24 MiB app layer + 1 file), {runs} runs each, interleaved");
    println!(
        "{:<30} {:>14} {:>7} {:>14} {:>22}",
        "from", "fetched MiB", "blobs", "copied MiB", "available->committed s"
    );
    for (name, rs) in &rows {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mut times: Vec<f64> = rs.iter().map(|r| r.3).collect();
        let median = common::median(&mut times);
        let last = rs.last().copied().unwrap_or_default();
        println!("{name:<30} {:>14.1} {:>7} {:>14.1} {:>22.1}", mib(last.0), last.1, mib(last.2), median);
    }
}
