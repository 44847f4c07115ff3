//! `berth-runtime` on a pure cgroup v2 machine: what the host tests cannot see on a hybrid
//! host. A QEMU guest (Debian's cloud kernel) boots an initramfs whose PID 1 is a busybox
//! script: it mounts cgroup2 with `+cpu +memory +pids`, runs the cases below with the CLI (the
//! test's own build, with its shared libraries) on bundles made here from `berth-runtime spec`
//! (runc's default config: deny-all device rules), and prints one line per case.
//!
//! Cases: limits applied in the container's own cgroup, which `delete` removes; the devices of
//! `linux.devices` usable under deny-all rules (kmsg, 1:11) while a node of another device
//! (ttyS0, 4:64) made in the container is not; an existing
//! cgroup named by `cgroupsPath` joined and left in place, with its other process, at delete;
//! `kill --all` reaching every process of the cgroup.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_image_build::cpio::CpioWriter;
use berth_image_build::kernel::{debian_cloud_kernel, default_cache_dir};
use berth_qemu::{default_timeout, Vm, VmConfig};
use common::guest;
use serde_json::{json, Value};

/// Prefix of the guest's result lines.
const MARKER: &str = "rt:";

/// The berth-runtime binary of this workspace (built if missing; a no-op after the tests'
/// own build).
fn berth_runtime() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(common::workspace())
        .args(["build", "-q", "-p", "berth-runtime", "--features", "cli", "--bin", "berth-runtime"])
        .status()
        .expect("running cargo");
    assert!(status.success(), "building berth-runtime failed");
    // This test runs from TARGET/debug/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(2).unwrap().join("berth-runtime")
}

/// PID 1: leave the initramfs root (pivot_root fails on it), mount what containers need, run
/// the cases, power off.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
if [ "$1" != stage2 ]; then
  mkdir -p /.root && mount --bind / /.root && cd /.root && mount --move . / && exec chroot . /init stage2
  echo "rt: FAIL could not leave the initramfs root"; poweroff -f
fi
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup; mount -t tmpfs -o mode=1777 tmpfs /tmp; mount -t tmpfs tmpfs /run
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
sh /cases.sh 2>&1 | sed 's/^/rt: /'
echo "rt: done"
poweroff -f
"#;

/// The cases (see the module doc); each prints `NAME ok` or `NAME FAIL …`.
const CASES: &str = r#"
rt() { /bin/berth-runtime --root /run/rt "$@"; }
check() { if [ "$2" = "$3" ]; then echo "$1 ok"; else echo "$1 FAIL: got [$2] want [$3] $(cat /tmp/err 2>/dev/null)"; fi; }

out=$(rt run --bundle /bundles/limits lim 2>/tmp/err)
check limits "$(echo $out)" "1234 67108864 0::/"
check own-cgroup-removed "$([ -e /sys/fs/cgroup/berth-runtime/lim ] && echo left)" ""
mkdir /sys/fs/cgroup/berth-runtime/taken
check id-in-use "$(rt run --bundle /bundles/limits taken 2>&1 | grep -c 'is in use on this host')" "1"

out=$(rt run --bundle /bundles/devices dev 2>/tmp/err)
check devices "$(echo $out)" "listed-ok unlisted-denied"

mkdir /sys/fs/cgroup/pre
sleep 1000 &
other=$!
echo $other > /sys/fs/cgroup/pre/cgroup.procs
out=$(rt run --bundle /bundles/pre pre 2>/tmp/err)
check joined "$(echo $out)" "0::/ 2"
alive=no; kill -0 $other 2>/dev/null && alive=yes
check existing-cgroup-kept "$([ -d /sys/fs/cgroup/pre ] && echo kept) $alive" "kept yes"
kill $other

rt run -d --bundle /bundles/killall ka > /dev/null 2>/tmp/err < /dev/null
n=0; while [ "$(wc -l < /sys/fs/cgroup/berth-runtime/ka/cgroup.procs)" -lt 2 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
check kill-all-started "$(wc -l < /sys/fs/cgroup/berth-runtime/ka/cgroup.procs)" "2"
check kill-all-exit "$(rt kill --all ka KILL 2>&1; echo $?)" "0"
n=0; while grep -q "populated 1" /sys/fs/cgroup/berth-runtime/ka/cgroup.events && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
check kill-all "$(cat /sys/fs/cgroup/berth-runtime/ka/cgroup.events | grep populated)" "populated 0"
rt delete ka
check kill-all-removed "$([ -e /sys/fs/cgroup/berth-runtime/ka ] && echo left)" ""
"#;

/// `berth-runtime spec`'s config, with the command `sh -c SCRIPT`, the shared rootfs, and
/// `edit` applied.
fn bundle_config(
    runtime: &Path,
    scratch: &Path,
    name: &str,
    script: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    let dir = scratch.join(format!("spec-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let status = Command::new(runtime).arg("spec").current_dir(&dir).status().unwrap();
    assert!(status.success());
    let mut c: Value = serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    c["root"]["path"] = json!("/rootfs");
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(["sh", "-c", script]);
    edit(&mut c);
    serde_json::to_string_pretty(&c).unwrap()
}

fn write_initrd(path: &Path, runtime: &Path, scratch: &Path) {
    let out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut cpio = CpioWriter::new(out, 0);
    for d in ["dev", "proc", "sys", "run", "tmp", "etc", "bundles", "rootfs"] {
        cpio.dir(d, 0o755, 0, 0).unwrap();
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        cpio.dir(&format!("rootfs/{d}"), 0o755, 0, 0).unwrap();
    }
    cpio.char_dev("dev/console", 0o600, 0, 0, 5, 1).unwrap();
    cpio.file("init", 0o755, 0, 0, INIT.len() as u64, INIT.as_bytes()).unwrap();
    cpio.file("cases.sh", 0o644, 0, 0, CASES.len() as u64, CASES.as_bytes()).unwrap();
    guest::add_busybox(&mut cpio, "");
    guest::add_busybox(&mut cpio, "rootfs/");
    guest::add_file(&mut cpio, "bin/berth-runtime", runtime, 0o755);
    guest::add_libraries(&mut cpio, &[runtime]);

    let bundles: [(&str, String); 4] = [
        (
            "limits",
            bundle_config(runtime, scratch, "limits", "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max /proc/self/cgroup", |c| {
                c["linux"]["resources"]["pids"] = json!({"limit": 1234});
                c["linux"]["resources"]["memory"] = json!({"limit": 67_108_864});
            }),
        ),
        (
            "devices",
            bundle_config(
                runtime,
                scratch,
                "devices",
                ": > /dev/kmsg2 && echo listed-ok; mknod /tmp/k c 4 64; if (: > /tmp/k) 2>/tmp/e; then echo unlisted-open; elif grep -q 'not permitted' /tmp/e; then echo unlisted-denied; else cat /tmp/e; fi",
                |c| {
                    c["linux"]["devices"] = json!([{"path": "/dev/kmsg2", "type": "c", "major": 1, "minor": 11, "fileMode": 0o666}]);
                    c["root"]["readonly"] = json!(false);
                    for set in ["bounding", "effective", "permitted"] {
                        c["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_MKNOD"));
                    }
                },
            ),
        ),
        // Its own view is the group's root; the group holds it and the other process.
        (
            "pre",
            bundle_config(runtime, scratch, "pre", "cat /proc/self/cgroup; wc -l < /sys/fs/cgroup/cgroup.procs", |c| {
                c["linux"]["cgroupsPath"] = json!("/pre")
            }),
        ),
        ("killall", bundle_config(runtime, scratch, "killall", "sleep 1000 & exec sleep 1000", |_| {})),
    ];
    for (name, config) in &bundles {
        cpio.dir(&format!("bundles/{name}"), 0o755, 0, 0).unwrap();
        cpio.file(
            &format!("bundles/{name}/config.json"),
            0o644,
            0,
            0,
            config.len() as u64,
            config.as_bytes(),
        )
        .unwrap();
    }
    let mut out = cpio.finish().unwrap();
    out.flush().unwrap();
}

#[test]
fn cgroups_devices_and_existing_groups_on_a_cgroup_v2_machine() {
    let runtime = berth_runtime();
    let kernel =
        debian_cloud_kernel(&default_cache_dir(), &|l| eprintln!("{l}")).expect("Debian cloud kernel");
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    write_initrd(&initrd, &runtime, dir.path());
    let mut cfg = VmConfig::new(&kernel.vmlinuz, &initrd, "console=ttyS0 quiet");
    cfg.memory_mib = 512;
    cfg.console_log = Some(dir.path().join("console.log"));
    let mut vm = Vm::start(cfg).unwrap();
    let t = default_timeout();
    vm.wait_for_line(|l| l.starts_with("rt: done") || l.contains("Kernel panic"), t * 2)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_text()));
    let console = vm.console_text();
    let _ = vm.wait_exit(t);
    let results: Vec<&str> = console.lines().filter_map(|l| l.strip_prefix(MARKER)).map(str::trim).collect();
    let failed: Vec<&&str> = results.iter().filter(|l| l.contains("FAIL")).collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}\n{console}");
    for case in [
        "limits",
        "own-cgroup-removed",
        "id-in-use",
        "devices",
        "joined",
        "existing-cgroup-kept",
        "kill-all-started",
        "kill-all-exit",
        "kill-all",
        "kill-all-removed",
    ] {
        assert!(results.contains(&format!("{case} ok").as_str()), "{case} did not pass:\n{console}");
    }
}
