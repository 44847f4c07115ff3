//! `berth-runtime run` against `runc run` and `crun run` on the same OCI bundle (busybox
//! rootfs, `/bin/true`), interleaved, on this host: median, p90 and peak RSS of each.
//!
//!     cargo bench -p berth-runtime --bench oci_run          # BENCH_RUNS=N (default 100)
//!
//! Needs root, `runc` and `crun` (Debian packages). This host's cgroups are hybrid v1/v2 and crun
//! refuses a v2 mount without controllers, so the bench first moves into a mount namespace of its
//! own with `/sys/fs/cgroup/unified` unmounted: runc and crun then use cgroup v1. berth-runtime
//! has no cgroup v1 support and runs with `--cgroup-manager=disabled` (without it, runc's default
//! device rules are an error on such a host); `crun nocgroup` is crun with the same option, its
//! like-for-like peer. The order of the runtimes turns each round; runc is measured on its own
//! afterwards (see `main`).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// A bundle: busybox rootfs and runc's default config running /bin/true.
fn bundle(dir: &Path) -> PathBuf {
    let b = dir.join("bundle");
    let rootfs = b.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    symlink("busybox", rootfs.join("bin/true")).unwrap();
    symlink("busybox", rootfs.join("bin/sh")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let out = Command::new("runc").arg("spec").current_dir(&b).status().unwrap();
    assert!(out.success(), "runc spec failed");
    let config = fs::read_to_string(b.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["process"]["args"] = serde_json::json!(["/bin/true"]);
    v["process"]["terminal"] = serde_json::json!(false);
    fs::write(b.join("config.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    b
}

/// Runs `rt --root ROOT run --bundle B ID` once: (seconds, peak RSS in kB of the runtime and
/// everything it waited for).
// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(rt: &Path, extra: &[&str], root: &Path, bundle: &Path, id: &str) -> (f64, i64) {
    let start = Instant::now();
    let child = Command::new(rt)
        .args(extra)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes the status and the usage into the two locals, for our own child.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(r, pid);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut err = String::new();
        use std::io::Read;
        child.stderr.unwrap().read_to_string(&mut err).ok();
        panic!("{} run failed ({status}): {err}", rt.display());
    }
    (secs, usage.ru_maxrss)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    // p is in 0..=1, so the rounded index is in 0..len (and `as` saturates anyway).
    #[allow(clippy::cast_possible_truncation)]
    let at = ((v.len() - 1) as f64 * p).round() as usize;
    v[at]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    // A private mount namespace without the empty cgroup2 hierarchy (see the module doc).
    // SAFETY: unshare/umount on our own process before any thread is started.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare needs root");
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
    }
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path());
    let mut runtimes: Vec<Runtime> = vec![(
        "berth-runtime".into(),
        PathBuf::from(env!("CARGO_BIN_EXE_berth-runtime")),
        vec!["--cgroup-manager=disabled"],
    )];
    let mut alone: Vec<Runtime> = Vec::new();
    for (label, peer, extra) in [
        ("crun nocgroup", "crun", vec!["--cgroup-manager=disabled"]),
        ("crun", "crun", vec![]),
        ("runc", "runc", vec![]),
    ] {
        match which(peer) {
            // runc runs on its own: the cgroup v1 groups it leaves behind are torn down by the
            // kernel after it exits, holding the cgroup lock, and whichever runtime comes next
            // and mounts cgroup2 (berth-runtime here; crun binds the v1 hierarchies instead)
            // waits 5–18 ms for it (strace: `mount("cgroup", …, "cgroup2", …) <0.010>`).
            Some(p) if peer == "runc" => alone.push((label.into(), p, extra)),
            Some(p) => runtimes.push((label.into(), p, extra)),
            None => println!("{peer}: not installed (apt-get install {peer}), skipped"),
        }
    }
    println!("`run` of /bin/true on a busybox bundle, {runs} interleaved runs each (host, cgroup v1 for the peers)");
    println!("{:<14} {:>10} {:>10} {:>14}", "runtime", "median ms", "p90 ms", "peak RSS kB");
    let figures = measure(&runtimes, runs, dir.path(), &b);
    // berth-runtime runs without cgroups here: its like-for-like peer is crun without them.
    if let Some(k) = runtimes.iter().position(|(n, _, _)| n == "crun nocgroup") {
        println!(
            "berth-runtime / crun nocgroup: median {:.2}x, p90 {:.2}x",
            figures[0].0 / figures[k].0,
            figures[0].1 / figures[k].1
        );
    }
    if !alone.is_empty() {
        println!("on its own, {runs} runs:");
        measure(&alone, runs, dir.path(), &b);
    }
}

/// A runtime to measure: label, binary, arguments before `--root`.
type Runtime = (String, PathBuf, Vec<&'static str>);

/// Runs each runtime `runs` times (after 3 warm-up rounds), interleaved, the order turning each
/// round so that no runtime always follows the same one (a runtime leaves work to the kernel
/// that the next one pays for: namespace teardown). Prints and returns (median s, p90 s) each.
fn measure(runtimes: &[Runtime], runs: usize, dir: &Path, bundle: &Path) -> Vec<(f64, f64)> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
    let mut rss: Vec<i64> = vec![0; runtimes.len()];
    for i in 0..runs + 3 {
        for j in 0..runtimes.len() {
            let k = (i + j) % runtimes.len();
            let (name, rt, extra) = &runtimes[k];
            let root = dir.join(format!("root-{}", name.replace(' ', "-")));
            let (t, m) = run_once(rt, extra, &root, bundle, &format!("bench{i}"));
            if i >= 3 {
                // the first runs warm the page cache
                times[k].push(t);
                rss[k] = rss[k].max(m);
            }
        }
    }
    let mut figures = Vec::new();
    for (k, (name, _, _)) in runtimes.iter().enumerate() {
        let (med, p90) = (percentile(&mut times[k], 0.5), percentile(&mut times[k], 0.9));
        println!("{:<14} {:>10.2} {:>10.2} {:>14}", name, med * 1e3, p90 * 1e3, rss[k]);
        figures.push((med, p90));
    }
    figures
}
