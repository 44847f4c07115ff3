//! `berth-runtime run` against `runc run` and `crun run` inside a QEMU VM whose cgroups are a
//! pure cgroup v2 hierarchy, so that all three create a cgroup (with a `pids.max` limit) for
//! every container: median, p90 and peak RSS of each, interleaved.
//!
//!     cargo bench -p berth-image-build --bench oci_run_vm       # BENCH_RUNS=N (default 30)
//!
//! Needs `runc`, `crun`, `busybox-static` and `qemu-system-x86` (Debian packages) and the Debian
//! cloud kernel (fetched into the berth cache on first use). A static `berth-runtime` is built
//! with a nested `cargo build` (`crt-static`), or taken from `$BERTH_RUNTIME_STATIC`.
//!
//! How: the bench writes an initramfs holding static busybox, `runc` and `crun` with the shared
//! libraries `ldd` lists (and the loader), the static `berth-runtime`, a bundle (busybox rootfs,
//! `runc spec`'s config with `args = ["/bin/true"]` and `linux.resources.pids.limit = 1234`) and,
//! as `/init`, **this bench binary itself** (with its own libraries): started as PID 1 it is the
//! guest driver. That needs no second program to build and keeps host and guest code in one
//! file. The driver leaves the initramfs root (so `pivot_root` works), mounts proc, sys,
//! devtmpfs, cgroup2, `/run` and `/tmp`, enables `+cpu +memory +pids +io`, checks that each
//! runtime creates a cgroup with `pids.max = 1234` (`create`, `state`, `/proc/PID/cgroup`,
//! `delete --force`), then runs 3 warm-up rounds and `BENCH_RUNS` measured rounds (wall time on
//! `CLOCK_MONOTONIC`, peak RSS from `wait4`; the order of the runtimes turns each round), prints
//! the table and berth-runtime's ratios to crun behind the marker `oci-vm` and powers off. The host prints the guest's lines.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_image_build::cpio::CpioWriter;
use berth_image_build::kernel::{debian_cloud_kernel, default_cache_dir};
use berth_qemu::{Vm, VmConfig};

#[path = "../tests/common/guest.rs"]
mod guest;
use guest::add_file;

/// Every guest line meant for the host starts with this.
const MARKER: &str = "oci-vm";
/// The pids limit every container's cgroup must get.
const PIDS_LIMIT: &str = "1234";
/// Warm-up rounds before the measured ones.
const WARMUP: usize = 3;
/// The runtimes in the guest: label, binary, state root.
const GUEST_RUNTIMES: [(&str, &str, &str); 3] = [
    ("berth-runtime", "/bin/berth-runtime", "/run/b"),
    ("crun", "/usr/bin/crun", "/run/c"),
    ("runc", "/usr/sbin/runc", "/run/r"),
];

fn main() {
    if std::process::id() == 1 {
        guest_main();
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list
    }
    host_main();
}

// ---------------------------------------------------------------------------------------------
// Host side: build the initramfs, boot it, print the guest's table.

fn host_main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let berth = static_berth_runtime();
    let kernel =
        debian_cloud_kernel(&default_cache_dir(), &|l| eprintln!("{l}")).expect("Debian cloud kernel");
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    write_initrd(&initrd, &berth, dir.path());
    let cmdline = format!("console=ttyS0 quiet oci_vm_runs={runs}");
    println!(
        "booting {} ({} bytes of initramfs), accelerator {}, {runs} runs each",
        kernel.version,
        fs::metadata(&initrd).unwrap().len(),
        if berth_qemu::kvm_usable() { "kvm" } else { "tcg" }
    );
    let mut cfg = VmConfig::new(&kernel.vmlinuz, &initrd, &cmdline);
    cfg.memory_mib = 1024;
    let log = dir.path().join("console.log");
    eprintln!("console log: {}", log.display());
    cfg.console_log = Some(log);
    let mut vm = Vm::start(cfg).unwrap();
    let done =
        |l: &str| l.starts_with(&format!("{MARKER}-done")) || l.starts_with(&format!("{MARKER}-error"));
    let last = vm.wait_for_line(done, Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"));
    for line in vm.console_text().lines().filter(|l| l.starts_with(MARKER)) {
        println!("{line}");
    }
    let _ = vm.wait_exit(Duration::from_secs(60));
    assert!(!last.starts_with(&format!("{MARKER}-error")), "the guest failed: {last}");
}

/// A static `berth-runtime`: `$BERTH_RUNTIME_STATIC`, else built by a nested `cargo build`.
fn static_berth_runtime() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME_STATIC") {
        return PathBuf::from(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--release", "-p", "berth-runtime", "--features", "cli"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .status()
        .expect("running cargo");
    assert!(status.success(), "building the static berth-runtime failed");
    // This bench runs from TARGET/release/deps/.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    target.join("x86_64-unknown-linux-gnu/release/berth-runtime")
}

/// The host binary called `name` on `PATH`.
fn which(name: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: apt-get install {name}"))
}

/// The bundle's `config.json`: `runc spec` with `/bin/true`, no terminal and a pids limit.
fn config_json(dir: &Path) -> String {
    let status = Command::new("runc").arg("spec").current_dir(dir).status().expect("running runc spec");
    assert!(status.success(), "runc spec failed");
    let config = fs::read_to_string(dir.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["process"]["args"] = serde_json::json!(["/bin/true"]);
    v["process"]["terminal"] = serde_json::json!(false);
    v["linux"]["resources"]["pids"] = serde_json::json!({ "limit": PIDS_LIMIT.parse::<i64>().unwrap() });
    serde_json::to_string_pretty(&v).unwrap()
}

/// Writes the zstd-compressed initramfs (see the module doc) to `path`.
fn write_initrd(path: &Path, berth: &Path, scratch: &Path) {
    let exe = std::env::current_exe().unwrap();
    let runc = which("runc");
    let crun = which("crun");
    let busybox = Path::new("/bin/busybox");
    let out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let zst = zstd::stream::write::Encoder::new(out, 12).unwrap();
    let mut cpio = CpioWriter::new(zst, 0);
    for d in ["dev", "proc", "sys", "run", "tmp", "etc", "root"] {
        cpio.dir(d, 0o755, 0, 0).unwrap();
    }
    cpio.char_dev("dev/console", 0o600, 0, 0, 5, 1).unwrap();
    add_file(&mut cpio, "init", &exe, 0o755);
    guest::add_busybox(&mut cpio, "");
    add_file(&mut cpio, "bin/berth-runtime", berth, 0o755);
    add_file(&mut cpio, "usr/bin/crun", &crun, 0o755);
    add_file(&mut cpio, "usr/sbin/runc", &runc, 0o755);
    // Each dynamic binary's libraries, at the paths `ldd` names (one copy each).
    guest::add_libraries(&mut cpio, &[&exe, &runc, &crun]);
    // The bundle.
    add_file(&mut cpio, "bundle/rootfs/bin/busybox", busybox, 0o755);
    for applet in ["true", "sh"] {
        cpio.symlink(&format!("bundle/rootfs/bin/{applet}"), "busybox", 0, 0).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        cpio.dir(&format!("bundle/rootfs/{d}"), 0o755, 0, 0).unwrap();
    }
    let config = config_json(scratch);
    cpio.file("bundle/config.json", 0o644, 0, 0, config.len() as u64, config.as_bytes()).unwrap();
    let mut out = cpio.finish().unwrap().finish().unwrap();
    out.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Guest side: this binary as PID 1.

/// PID 1 in the VM: runs the benchmark, prints the result (or the error) and powers off.
fn guest_main() -> ! {
    let result = std::panic::catch_unwind(guest_bench);
    match result {
        Ok(Ok(())) => println!("{MARKER}-done"),
        Ok(Err(e)) => println!("{MARKER}-error: {e}"),
        Err(_) => println!("{MARKER}-error: panic (see above)"),
    }
    let _ = std::io::stdout().flush();
    // SAFETY: plain system calls; PID 1 powers the machine off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `mount(2)` with C strings made from `&str`s.
fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<(), String> {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (cs, ct, cf, cd) = (c(src), c(target), c(fstype), c(data));
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            cs.as_ptr(),
            ct.as_ptr(),
            if fstype.is_empty() { std::ptr::null() } else { cf.as_ptr() },
            flags,
            if data.is_empty() { std::ptr::null() } else { cd.as_ptr().cast() },
        )
    };
    if r != 0 {
        return Err(format!("mount {fstype} {src} on {target}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Leaves the initramfs root, on which `pivot_root` fails: bind `/` on a directory, move that
/// mount onto `/` and chroot into it (as berth's PID 1 does); then mounts the kernel filesystems.
fn guest_setup() -> Result<(), String> {
    fs::create_dir_all("/.root").map_err(|e| e.to_string())?;
    mount("/", "/.root", "", libc::MS_BIND, "")?;
    std::env::set_current_dir("/.root").map_err(|e| e.to_string())?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    std::os::unix::fs::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| e.to_string())?;
    mount("proc", "/proc", "proc", 0, "")?;
    mount("sysfs", "/sys", "sysfs", 0, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", 0, "")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, "")?;
    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")?;
    mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")?;
    fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +memory +pids +io")
        .map_err(|e| format!("enabling cgroup controllers: {e}"))?;
    // Single-threaded PID 1, before any child is started.
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    Ok(())
}

/// The value of `name=` on the kernel command line.
fn cmdline_arg(name: &str) -> Option<String> {
    let line = fs::read_to_string("/proc/cmdline").ok()?;
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// Runs `rt --root ROOT ARGS…`, returning its stdout; an error with its stderr if it fails.
fn runtime_cmd(rt: &str, root: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(rt)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{rt}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{rt} {args:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks that `rt` puts a container in a cgroup of its own with the bundle's pids limit:
/// `create`, read the init's `/proc/PID/cgroup` and that group's `pids.max`, `delete --force`.
fn check_cgroup(name: &str, rt: &str, root: &str) -> Result<(), String> {
    let id = "cgcheck";
    // Not through a pipe: the created container keeps the runtime's stdio open.
    let err_path = format!("/tmp/{name}-create.err");
    let status = Command::new(rt)
        .args(["--root", root, "create", "--bundle", "/bundle", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).map_err(|e| e.to_string())?)
        .status()
        .map_err(|e| format!("{rt}: {e}"))?;
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        return Err(format!("{name} create: {status} {}", err.trim()));
    }
    if err.to_lowercase().contains("cgroup") {
        return Err(format!("{name} create warned about cgroups: {}", err.trim()));
    }
    let check = (|| {
        let state: serde_json::Value = serde_json::from_str(&runtime_cmd(rt, root, &["state", id])?)
            .map_err(|e| format!("{name} state: {e}"))?;
        let pid = state["pid"].as_i64().ok_or(format!("{name} state has no pid: {state}"))?;
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())?;
        let path = cg.trim().strip_prefix("0::").ok_or(format!("{name}: /proc/{pid}/cgroup is {cg:?}"))?;
        if path == "/" {
            return Err(format!("{name} left its container in the root cgroup"));
        }
        let max = fs::read_to_string(format!("/sys/fs/cgroup{path}/pids.max"))
            .map_err(|e| format!("{name}: {path}/pids.max: {e}"))?;
        if max.trim() != PIDS_LIMIT {
            return Err(format!("{name}: {path}/pids.max is {:?}, not {PIDS_LIMIT}", max.trim()));
        }
        println!("{MARKER}-check {name}: container in cgroup {path}, pids.max {}", max.trim());
        Ok(())
    })();
    runtime_cmd(rt, root, &["delete", "--force", id])?;
    check
}

/// Runs `rt --root ROOT run --bundle /bundle ID` once: (seconds, peak RSS in kB of the runtime
/// and everything it waited for). Fails on a non-zero exit or a warning about cgroups.
// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_once(name: &str, rt: &str, root: &str, id: &str) -> Result<(f64, i64), String> {
    let start = Instant::now();
    let child = Command::new(rt)
        .args(["--root", root, "run", "--bundle", "/bundle", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{rt}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    let mut err = String::new();
    child.stderr.unwrap().read_to_string(&mut err).ok();
    if r != pid || !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{name} run {id} failed ({status}): {}", err.trim()));
    }
    if err.to_lowercase().contains("cgroup") {
        return Err(format!("{name} warned about cgroups: {}", err.trim()));
    }
    if !err.trim().is_empty() {
        println!("{MARKER}-stderr {name}: {}", err.trim());
    }
    Ok((secs, usage.ru_maxrss))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    // p is in 0..=1, so the rounded index is in 0..len (and `as` saturates anyway).
    #[allow(clippy::cast_possible_truncation)]
    let at = ((v.len() - 1) as f64 * p).round() as usize;
    v[at]
}

/// The benchmark proper (see the module doc).
fn guest_bench() -> Result<(), String> {
    guest_setup()?;
    let runs: usize = cmdline_arg("oci_vm_runs").and_then(|v| v.parse().ok()).unwrap_or(30);
    let version = |rt: &str| {
        Command::new(rt)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let uname = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{MARKER}-info kernel {}, cgroup2 controllers: {}", uname.trim(), {
        fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").unwrap_or_default().trim()
    });
    for (name, rt, root) in GUEST_RUNTIMES {
        println!("{MARKER}-info {name}: {}", version(rt));
        check_cgroup(name, rt, root)?;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); GUEST_RUNTIMES.len()];
    let mut rss: Vec<i64> = vec![0; GUEST_RUNTIMES.len()];
    for i in 0..runs + WARMUP {
        let mut line = format!("{MARKER}-run {i:>3}");
        // The order turns each round, so that no runtime always follows the same one (a
        // runtime leaves work to the kernel that the next one pays for: namespace teardown).
        for j in 0..GUEST_RUNTIMES.len() {
            let k = (i + j) % GUEST_RUNTIMES.len();
            let (name, rt, root) = GUEST_RUNTIMES[k];
            let (t, m) = run_once(name, rt, root, &format!("bench{i}"))?;
            line.push_str(&format!("  {name} {:.2} ms {m} kB", t * 1e3));
            if i >= WARMUP {
                times[k].push(t);
                rss[k] = rss[k].max(m);
            }
        }
        if i < WARMUP {
            line.push_str("  (warm-up)");
        }
        println!("{line}");
    }
    println!(
        "{MARKER} `run` of /bin/true on a busybox bundle, {runs} interleaved runs each (VM, cgroup v2, pids.max set)"
    );
    println!("{MARKER} {:<14} {:>10} {:>10} {:>14}", "runtime", "median ms", "p90 ms", "peak RSS kB");
    let mut figures = Vec::new();
    for (k, (name, _, _)) in GUEST_RUNTIMES.iter().enumerate() {
        let (med, p90) = (percentile(&mut times[k], 0.5), percentile(&mut times[k], 0.9));
        println!("{MARKER} {:<14} {:>10.2} {:>10.2} {:>14}", name, med * 1e3, p90 * 1e3, rss[k]);
        figures.push((med, p90));
    }
    println!(
        "{MARKER} berth-runtime / crun: median {:.2}x, p90 {:.2}x",
        figures[0].0 / figures[1].0,
        figures[0].1 / figures[1].1
    );
    Ok(())
}
