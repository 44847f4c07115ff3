//! Updates in place, end to end: a real registry on this machine (Debian's `docker-registry`,
//! logging every request), reached by the guest as 10.0.2.2; a raw-efi disk booted with OVMF,
//! a guest reboot restarting the machine as a hypervisor does.
//!
//! v1 boots and follows `fleet/app:stable`. v2 (the greeter's image changed) is pushed; v1
//! finds it, fills slot B (fetching only what it lacks: the UKI, the index, the config, the
//! base and the changed layer — counted in the registry's log), reboots into it; v2 is tried,
//! its services come up, it is committed; the file v1 wrote on the data partition is still
//! there. v3, whose service never passes its healthcheck, is pushed: v2 installs it in slot A,
//! boots it, v3 is not committed within its `commit_timeout`, rolls back and reboots; v2 comes
//! back by itself, and does not install v3 again.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_image_build::update_bundle;
use berth_qemu::{Event, Vm, VmConfig};
use common::registry::Registry;

/// The appliance of version `v`, following `source`. v3's greeter never becomes healthy.
fn config(v: &str, source: &str) -> String {
    let healthcheck =
        if v == "v3" { "healthcheck = { cmd = [\"false\"], interval = \"1s\", retries = 1 }\n" } else { "" };
    let commit_timeout = if v == "v3" { "20s" } else { "120s" };
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[storage]
disk = "partlabel:berth-data"

[update]
source = "{source}"
insecure = true
interval = "3s"
commit_timeout = "{commit_timeout}"

[[onboot]]
name = "history"
image = "oci:images/busybox:latest"
volumes = ["state:/state"]
command = ["sh", "-c", "echo {v} >> /state/history && sync && echo seen=$(cat /state/history | tr '\n' ,)"]

[[service]]
name = "greeter"
image = "oci:images/busybox:{v}"
command = ["sh", "-c", "echo greeting=$(cat /greeting); exec sleep 100000"]
{healthcheck}"#
    )
}

/// An image of busybox (the same layer as `images/busybox`) plus a layer with `/greeting`.
fn greeting_image(dir: &Path, v: &str) {
    let root = dir.join(format!("{v}-greeting"));
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("greeting"), format!("hello from {v}\n")).unwrap();
    let o = common::run_berth(&[
        "image",
        "import",
        root.to_str().unwrap(),
        "--tag",
        v,
        "-o",
        dir.join("images/busybox").to_str().unwrap(),
        "--base",
        "latest",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn build(dir: &Path, v: &str, source: &str, formats: &[&str]) -> PathBuf {
    let file = dir.join(format!("{v}.toml"));
    fs::write(&file, config(v, source)).unwrap();
    let out = dir.join(format!("out-{v}"));
    common::build_formats(&file, &out, formats, &["--data-size", "64m"]);
    out
}

fn push(bundle: &Path, target: &str) {
    let registry = target.split('/').next().unwrap();
    let o = common::run_berth(&[
        "update",
        "push",
        bundle.to_str().unwrap(),
        target,
        "--insecure-registry",
        registry,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn boot(disk: &Path, log: &Path) -> Vm {
    let mut extra_args = vec![
        "-bios".into(),
        berth_image_build::formats::ovmf().unwrap().display().to_string(),
        "-drive".into(),
        format!("file={},format=raw,if=virtio", disk.display()),
    ];
    extra_args.extend(berth_qemu::user_net_args(&[]));
    let cfg = VmConfig {
        memory_mib: 512,
        allow_reboot: true,
        console_log: Some(log.to_path_buf()),
        extra_args,
        ..VmConfig::default()
    };
    Vm::start(cfg).expect("start qemu")
}

/// Waits for event `name` whose fields match, after `after` events were seen; returns it and
/// how many events there are now.
fn wait(vm: &Vm, after: usize, name: &str, matches: impl Fn(&Event) -> bool, secs: u64) -> (Event, usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let events = vm.events();
        if let Some((i, e)) =
            events.iter().enumerate().skip(after).find(|(_, e)| e.name == name && matches(e))
        {
            return (e.clone(), i + 1);
        }
        if let Some(f) = events.iter().skip(after).find(|e| e.name == "update.failed") {
            panic!("update.failed: {f:?}\n{}", vm.console_tail(80));
        }
        assert!(std::time::Instant::now() < deadline, "no {name} within {secs} s:\n{}", vm.console_tail(120));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The blob digests the registry served (GET) since request `from`.
fn blobs_fetched(registry: &Registry, from: usize) -> Vec<String> {
    registry
        .requests()
        .iter()
        .skip(from)
        .filter_map(|r| r.strip_prefix("GET ").and_then(|p| p.split("/blobs/").nth(1)).map(str::to_string))
        .collect()
}

#[test]
fn an_update_is_installed_committed_and_a_bad_one_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::busybox_image(dir);
    for v in ["v1", "v2", "v3"] {
        greeting_image(dir, v);
    }
    let registry = Registry::start_logging_requests(dir);
    let host_source = format!("{}/fleet/app:stable", registry.host());
    let guest_source = format!("10.0.2.2:{}/fleet/app:stable", registry.port);
    let v1 = build(dir, "v1", &guest_source, &["raw-efi", "update"]);
    let v2 = build(dir, "v2", &guest_source, &["update"]);
    let v3 = build(dir, "v3", &guest_source, &["update"]);
    let disk = v1.join("disk.raw");

    let mut vm = boot(&disk, &dir.join("console.log"));
    vm.wait_for_line(|l| l.contains("greeter | greeting=hello from v1"), Duration::from_secs(180)).unwrap();
    let seen = vm.events().len();

    // v2 is published: v1 fetches what it lacks, fills slot B, reboots into it.
    let before_v2 = registry.requests().len();
    push(&v2, &host_source);
    let (installed, at) = wait(&vm, seen, "update.installed", |_| true, 240);
    assert_eq!(installed.get("slot"), Some("b"), "{installed:?}");
    let (_, at) = wait(&vm, at, "update.trial", |e| e.get("slot") == Some("b"), 240);
    let (committed, at) = wait(&vm, at, "update.committed", |_| true, 240);
    assert_eq!(committed.get("slot"), Some("b"));
    vm.wait_for_line(|l| l.contains("greeter | greeting=hello from v2"), Duration::from_secs(60)).unwrap();
    let console = vm.console_text();
    assert!(
        console.contains("history | seen=v1,v2,"),
        "v1's file on the data partition is still there:\n{console}"
    );

    // Only what v1 did not have was fetched: never busybox's layer or the modules.
    let b1 = update_bundle::open(&v1.join("update")).unwrap();
    let b2 = update_bundle::open(&v2.join("update")).unwrap();
    let fetched = blobs_fetched(&registry, before_v2);
    let v1_pieces: Vec<&String> = b1.index.pieces.iter().map(|p| &p.digest).collect();
    let shared: Vec<&String> =
        b2.index.pieces.iter().map(|p| &p.digest).filter(|d| v1_pieces.contains(d)).collect();
    assert!(shared.len() >= 2, "busybox's layer and the modules are in both: {shared:?}");
    for d in &shared {
        assert!(!fetched.contains(d), "{d} was fetched though v1 had it: {fetched:?}");
    }
    let lacking: Vec<String> =
        b2.descriptors().unwrap().into_iter().map(|d| d.digest).filter(|d| !shared.contains(&d)).collect();
    let mut unique = fetched.clone();
    unique.sort();
    unique.dedup();
    let mut expected = lacking.clone();
    expected.sort();
    assert_eq!(unique, expected, "fetched exactly what v1 lacked");
    // Each once; only the small config again, by v2's own first check (it is what runs).
    let config = &b2.descriptors().unwrap()[0].digest;
    let once: Vec<&String> = fetched.iter().filter(|d| *d != config).collect();
    assert_eq!(once.len(), unique.len() - 1, "each blob fetched once: {fetched:?}");

    // v3 never passes its healthcheck: installed in slot A, tried, rolled back; v2 again.
    push(&v3, &host_source);
    let (installed, at) = wait(&vm, at, "update.installed", |_| true, 240);
    assert_eq!(installed.get("slot"), Some("a"), "{installed:?}");
    let (_, at) = wait(&vm, at, "update.trial", |e| e.get("slot") == Some("a"), 240);
    let (rolled, at) = wait(&vm, at, "update.rolled_back", |_| true, 240);
    assert_eq!(rolled.get("slot"), Some("a"));
    assert!(rolled.get("reason").unwrap_or_default().contains("greeter"), "{rolled:?}");
    let (mounted, at) = wait(&vm, at, "system_partition.mounted", |_| true, 240);
    assert_eq!(mounted.get("slot"), Some("b"), "back on v2: {mounted:?}");
    let (skipped, _) = wait(&vm, at, "update.skipped", |_| true, 240);
    assert_eq!(skipped.get("reason"), Some("rolled_back"), "v3 is not tried again");
    let console = vm.console_text();
    assert!(console.contains("history | seen=v1,v2,v3,v2,"), "{console}");
    assert!(!console.contains("Kernel panic") && !console.contains("PID 1 bug"), "{console}");
    vm.kill();
}
