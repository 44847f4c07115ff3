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
use std::process::Command;
use std::time::Duration;

use berth_image_build::update_bundle;
use berth_qemu::Vm;
use common::registry::Registry;
use common::update::{blobs_fetched, boot, greeting_image, push, wait};

/// The appliance of version `v`, following `source`. v3's greeter never becomes healthy.
fn config(v: &str, source: &str) -> String {
    let healthcheck =
        if v == "v3" { "healthcheck = { cmd = [\"false\"], interval = \"1s\", retries = 1 }\n" } else { "" };
    let commit_timeout = if v == "v3" { "20s" } else { "120s" };
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[network]
hosts = {{ "registry.test" = "10.0.2.2" }}

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

fn build(dir: &Path, v: &str, source: &str, formats: &[&str]) -> PathBuf {
    let file = dir.join(format!("{v}.toml"));
    fs::write(&file, config(v, source)).unwrap();
    let out = dir.join(format!("out-{v}"));
    common::build_formats(&file, &out, formats, &["--data-size", "64m"]);
    out
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
    // By name: the static updater resolves it through the machine's /etc/hosts.
    let guest_source = format!("registry.test:{}/fleet/app:stable", registry.port);
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

/// The appliance of version `v` for the `berthctl update` test: updates by hand (`reboot =
/// "manual"`), and a `ctl` service that drives `berthctl update`, boot by boot.
fn ctl_config(v: &str, source: &str) -> String {
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[storage]
disk = "partlabel:berth-data"

[update]
source = "{source}"
insecure = true
reboot = "manual"

[[service]]
name = "greeter"
image = "oci:images/busybox:{v}"
command = ["sh", "-c", "echo greeting=$(cat /greeting); exec sleep 100000"]

[[service]]
name = "ctl"
image = "oci:images/busybox:latest"
volumes = ["state:/state"]
binds = ["/run/berth/control.sock:/run/berth/control.sock", "/init:/bin/berthctl:ro"]
command = ["sh", "-c", """
n=$(cat /state/boots 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/boots; sync
echo boot=$n
case $n in
1) until berthctl update status | grep -q 'boots next'; do sleep 1; done
   berthctl update status
   berthctl update apply ;;
2) until berthctl update status | grep -q 'running, committed'; do sleep 1; done
   berthctl update status
   berthctl update rollback ;;
*) sleep 5; berthctl update status ;;
esac
exec sleep 100000
"""]
"#
    )
}

#[test]
fn berthctl_update_status_apply_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::busybox_image(dir);
    for v in ["v1", "v2"] {
        greeting_image(dir, v);
    }
    let registry = Registry::start(dir, None);
    let guest_source = format!("10.0.2.2:{}/fleet/app:stable", registry.port);
    let build_ctl = |v: &str, formats: &[&str]| {
        let file = dir.join(format!("ctl-{v}.toml"));
        fs::write(&file, ctl_config(v, &guest_source)).unwrap();
        let out = dir.join(format!("ctl-out-{v}"));
        common::build_formats(&file, &out, formats, &["--data-size", "64m"]);
        out
    };
    let v1 = build_ctl("v1", &["raw-efi"]);
    let v2 = build_ctl("v2", &["update"]);
    push(&v2, &format!("{}/fleet/app:stable", registry.host()));

    let mut vm = boot(&v1.join("disk.raw"), &dir.join("console.log"));
    // Boot 1: the first check installs v2 (reboot = "manual": no reboot), `apply` reboots.
    let (installed, at) = wait(&vm, 0, "update.installed", |_| true, 240);
    assert_eq!(installed.get("slot"), Some("b"));
    vm.wait_for_line(|l| l.contains("ctl | rebooting into slot b"), Duration::from_secs(120)).unwrap();
    // Boot 2: v2 is tried, committed; `rollback` goes back to v1 and refuses v2.
    let (_, at) = wait(&vm, at, "update.committed", |e| e.get("slot") == Some("b"), 240);
    let (rolled, at) = wait(&vm, at, "update.rolled_back", |_| true, 240);
    assert_eq!((rolled.get("slot"), rolled.get("reason")), (Some("b"), Some("requested")), "{rolled:?}");
    let (mounted, at) = wait(&vm, at, "system_partition.mounted", |_| true, 240);
    assert_eq!(mounted.get("slot"), Some("a"), "back on v1: {mounted:?}");
    // Boot 3: v1 again; v2 is not installed again.
    let (skipped, _) = wait(&vm, at, "update.skipped", |_| true, 240);
    assert_eq!(skipped.get("reason"), Some("rolled_back"));
    vm.wait_for_line(|l| l.contains("ctl | refused "), Duration::from_secs(120)).unwrap();
    let c = vm.console_text();
    let ctl: Vec<&str> = c.lines().filter_map(|l| l.trim_end().strip_prefix("ctl | ")).collect();
    assert!(ctl.contains(&"boot=3"), "{c}");
    assert!(ctl.iter().any(|l| l.starts_with("slot b  berth-2-b+3.efi: installed, boots next")), "{ctl:#?}");
    assert!(ctl.iter().any(|l| l.starts_with("slot b  berth-2-b.efi: running, committed")), "{ctl:#?}");
    assert!(ctl.contains(&"rolling back to slot a"), "{ctl:#?}");
    assert!(ctl.iter().any(|l| l.starts_with("slot a  berth-1-a.efi: running, committed")), "{ctl:#?}");
    assert!(ctl.iter().any(|l| l.starts_with("refused ")), "{ctl:#?}");
    assert_eq!(c.matches("greeter | greeting=hello from v1").count(), 2, "{c}");
    vm.kill();
}

/// v1's disk and v2's bundle, following `fleet/app:stable` on a registry of their own.
struct Versions {
    registry: Registry,
    /// The tag as this machine reaches it.
    host_source: String,
    v1: PathBuf,
    v2: PathBuf,
}

fn versions(dir: &Path) -> Versions {
    common::busybox_image(dir);
    for v in ["v1", "v2"] {
        greeting_image(dir, v);
    }
    let registry = Registry::start(dir, None);
    let host_source = format!("{}/fleet/app:stable", registry.host());
    let guest_source = format!("10.0.2.2:{}/fleet/app:stable", registry.port);
    let v1 = build(dir, "v1", &guest_source, &["raw-efi"]);
    let v2 = build(dir, "v2", &guest_source, &["update"]);
    Versions { registry, host_source, v1, v2 }
}

#[test]
fn a_power_cut_while_the_slot_is_written_or_right_after_the_switch_still_boots_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Versions { registry: _registry, host_source, v1, v2 } = versions(dir);
    let disk = v1.join("disk.raw");
    let log = dir.join("console.log");
    push(&v2, &host_source);

    // Cut while v1 fills slot B (as soon as it says there is an update): v1 comes back,
    // committed, and tries again.
    let mut vm = boot(&disk, &log);
    wait(&vm, 0, "update.available", |_| true, 240);
    vm.kill();
    let mut vm = boot(&disk, &log);
    let (mounted, at) = wait(&vm, 0, "system_partition.mounted", |_| true, 240);
    assert_eq!(mounted.get("slot"), Some("a"), "{mounted:?}");
    vm.wait_for_line(|l| l.contains("greeter | greeting=hello from v1"), Duration::from_secs(120)).unwrap();
    assert!(!vm.events().iter().any(|e| e.name == "update.trial"), "v1 is committed: no trial");

    // Cut right after the switch (the new entry is in place): v2 boots, is tried, committed.
    wait(&vm, at, "update.installed", |e| e.get("slot") == Some("b"), 240);
    vm.kill();
    let o = common::run_berth(&["inspect", "--json", disk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        r["boot"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("berth-2-b+")),
        "the new entry is on the disk: {r}\n{}",
        vm.console_tail(60)
    );
    let mut vm = boot(&disk, &log);
    let (mounted, at) = wait(&vm, 0, "system_partition.mounted", |_| true, 240);
    assert_eq!(mounted.get("slot"), Some("b"), "{mounted:?}");
    wait(&vm, at, "update.committed", |e| e.get("slot") == Some("b"), 240);
    vm.wait_for_line(|l| l.contains("greeter | greeting=hello from v2"), Duration::from_secs(120)).unwrap();
    let c = vm.console_text();
    let seen = c
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("history | seen="))
        .next_back()
        .unwrap_or_default();
    assert!(
        seen.starts_with("v1,v1,") && seen.ends_with(",v2,"),
        "the data partition kept the boots' lines: {seen}\n{c}"
    );
    vm.kill();
}

/// Waits for `update.failed` saying `what`, after `at` events; fails if `forbidden` (an event
/// that would mean the update went further) shows up first. Returns how many events there are.
fn refusal(vm: &Vm, at: usize, what: &str, forbidden: &str) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let events = vm.events();
        let found =
            events.iter().enumerate().skip(at).find(|(_, e)| {
                e.name == "update.failed" && e.get("error").unwrap_or_default().contains(what)
            });
        if let Some((i, _)) = found {
            return i + 1;
        }
        assert!(!events.iter().skip(at).any(|e| e.name == forbidden), "{}", vm.console_tail(80));
        assert!(std::time::Instant::now() < deadline, "no refusal ({what}):\n{}", vm.console_tail(80));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A copy of the bundle at `from` in `to` whose config carries another root hash (the UKI's is
/// unchanged): what a forged or mixed-up bundle looks like.
fn with_forged_root(from: &Path, to: &Path) {
    use sha2::{Digest as _, Sha256};
    let copy = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(copy.success());
    let blob = |digest: &str| to.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let put = |bytes: &[u8]| -> (String, usize) {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        fs::write(blob(&digest), bytes).unwrap();
        (digest, bytes.len())
    };
    let index: serde_json::Value = serde_json::from_slice(&fs::read(to.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&config_digest)).unwrap()).unwrap();
    let verity = config["verity"].as_str().unwrap().to_string();
    let parts: Vec<&str> = verity.split(':').collect();
    config["verity"] = format!("{}:{}:{}", parts[0], "ee".repeat(32), parts[2]).into();
    let (digest, size) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put(&serde_json::to_vec(&manifest).unwrap());
    let mut index = index;
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    fs::write(to.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_bundle_with_a_bad_digest_or_another_root_hash_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Versions { registry, host_source, v1, v2 } = versions(dir);
    let disk = v1.join("disk.raw");
    let b2 = update_bundle::open(&v2.join("update")).unwrap();

    // The registry serves v2's UKI with one byte changed.
    push(&v2, &host_source);
    let hex = b2.bundle.uki.digest.trim_start_matches("sha256:").to_string();
    let stored = registry.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let good = fs::read(&stored).unwrap();
    let mut bad = good.clone();
    bad[4096] ^= 1;
    fs::write(&stored, &bad).unwrap();
    let mut vm = boot(&disk, &dir.join("console.log"));
    let at = vm.events().len();
    let at = refusal(&vm, at, "does not match its digest", "update.installed");

    // A bundle whose config names another root hash than its UKI carries.
    fs::write(&stored, &good).unwrap();
    let forged = dir.join("forged");
    with_forged_root(&v2.join("update"), &forged);
    push(&forged, &host_source);
    refusal(&vm, at, "carries root hash", "update.installed");
    vm.kill();

    // Nothing was written: slot B is still blank, the ESP holds slot A's entry only.
    let table = berth_image_build::formats::read_gpt(&disk).unwrap();
    let b = table.iter().find(|p| p.name == "berth-system-b").unwrap();
    let mut head = vec![0u8; 1 << 20];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs::File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(b.offset)).unwrap();
        f.read_exact(&mut head).unwrap();
    }
    assert!(head.iter().all(|x| *x == 0), "slot B was written");
    let o = common::run_berth(&["inspect", "--json", disk.to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["boot"]["entries"], serde_json::json!(["berth-1-a.efi"]), "{r}");
}

#[test]
fn a_new_slot_that_cannot_boot_goes_back_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Versions { registry: _registry, host_source, v1, v2 } = versions(dir);
    let disk = v1.join("disk.raw");
    let log = dir.join("console.log");
    push(&v2, &host_source);
    let mut vm = boot(&disk, &log);
    wait(&vm, 0, "update.installed", |e| e.get("slot") == Some("b"), 240);
    vm.kill();

    // Slot B's first block (its index) is damaged: v2's UKI finds no partition that matches.
    let table = berth_image_build::formats::read_gpt(&disk).unwrap();
    let b = table.iter().find(|p| p.name == "berth-system-b").unwrap();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(b.offset + 100)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(b.offset + 100)).unwrap();
        f.write_all(&[byte[0] ^ 0xff]).unwrap();
    }
    let vm = boot(&disk, &log);
    let (_, at) = wait(&vm, 0, "system_partition.failed", |_| true, 240);
    let (rolled, at) = wait(&vm, at, "update.rolled_back", |_| true, 240);
    assert_eq!(rolled.get("slot"), Some("b"), "{rolled:?}");
    assert!(rolled.get("reason").unwrap_or_default().starts_with("the boot failed"), "{rolled:?}");
    let (mounted, at) = wait(&vm, at, "system_partition.mounted", |_| true, 240);
    assert_eq!(mounted.get("slot"), Some("a"), "back on v1 by itself: {mounted:?}");
    let (skipped, _) = wait(&vm, at, "update.skipped", |_| true, 240);
    assert_eq!(skipped.get("reason"), Some("rolled_back"), "v2 is not installed again");
    vm.wait_for_line(|l| l.contains("greeter | greeting=hello from v1"), Duration::from_secs(120)).unwrap();
}

#[test]
fn a_machine_built_with_a_key_installs_only_updates_signed_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::busybox_image(dir);
    for v in ["v1", "v2"] {
        greeting_image(dir, v);
    }
    let (key, cert) = common::update::key_pair(dir, "fleet");
    let (other_key, other_cert) = common::update::key_pair(dir, "other");
    let registry = Registry::start(dir, None);
    let host_source = format!("{}/fleet/app:stable", registry.host());
    let guest_source = format!("10.0.2.2:{}/fleet/app:stable", registry.port);
    let build_signed = |v: &str, out: &str, formats: &[&str], signing: Option<(&Path, &Path)>| -> PathBuf {
        let file = dir.join(format!("{out}.toml"));
        fs::write(&file, config(v, &guest_source)).unwrap();
        let out = dir.join(out);
        let mut extra = vec!["--data-size".to_string(), "64m".into()];
        if let Some((k, c)) = signing {
            extra.extend([
                "--sign-key".into(),
                k.display().to_string(),
                "--sign-cert".into(),
                c.display().to_string(),
            ]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        common::build_formats(&file, &out, formats, &extra);
        out
    };
    let v1 = build_signed("v1", "v1", &["raw-efi"], Some((&key, &cert)));
    let unsigned = build_signed("v2", "v2-unsigned", &["update"], None);
    let wrong = build_signed("v2", "v2-other-key", &["update"], Some((&other_key, &other_cert)));
    let signed = build_signed("v2", "v2-signed", &["update"], Some((&key, &cert)));

    push(&unsigned, &host_source);
    let mut vm = boot(&v1.join("disk.raw"), &dir.join("console.log"));
    let at = refusal(&vm, 0, "not signed", "update.available");
    push(&wrong, &host_source);
    let at = refusal(&vm, at, "does not verify with this machine's key", "update.available");
    push(&signed, &host_source);
    let (installed, at) = wait(&vm, at, "update.installed", |_| true, 240);
    assert_eq!(installed.get("slot"), Some("b"));
    wait(&vm, at, "update.committed", |e| e.get("slot") == Some("b"), 240);
    vm.kill();
}

#[test]
fn a_bundle_handed_over_with_berthctl_is_installed_without_a_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::busybox_image(dir);
    for v in ["v1", "v2"] {
        greeting_image(dir, v);
    }
    // The registry the machine follows never gets the tag: the bundle comes another way.
    let registry = Registry::start(dir, None);
    let source = format!("10.0.2.2:{}/fleet/app:never", registry.port);
    let ctl = r#"
[[service]]
name = "ctl"
image = "oci:images/busybox:latest"
devices = ["/dev/vdb:/dev/bundle:r"]
binds = ["/run/berth/control.sock:/run/berth/control.sock", "/init:/bin/berthctl:ro"]
command = ["sh", "-c", "until berthctl update apply - < /dev/bundle; do sleep 1; done; echo applied; exec sleep 100000"]
"#;
    let build_with = |v: &str, formats: &[&str]| {
        let file = dir.join(format!("{v}-ctl.toml"));
        let text = config(v, &source).replace("interval = \"3s\"", "interval = \"1h\"\nreboot = \"manual\"");
        fs::write(&file, format!("{text}{ctl}")).unwrap();
        let out = dir.join(format!("{v}-ctl"));
        common::build_formats(&file, &out, formats, &["--data-size", "64m"]);
        out
    };
    let v1 = build_with("v1", &["raw-efi"]);
    let v2 = build_with("v2", &["update"]);
    // The bundle as a tar stream on a disk of its own (read by the container as /dev/bundle).
    let bundle = dir.join("bundle.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(v2.join("update"))
        .arg("-cf")
        .arg(&bundle)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());

    let vm = common::update::boot_with_disks(&v1.join("disk.raw"), &dir.join("console.log"), &[&bundle]);
    let (installed, at) = wait(&vm, 0, "update.installed", |_| true, 240);
    assert_eq!(installed.get("slot"), Some("b"), "{installed:?}");
    let (mounted, at) = wait(&vm, at, "system_partition.mounted", |_| true, 240);
    assert_eq!(mounted.get("slot"), Some("b"), "berthctl's apply rebooted into it: {mounted:?}");
    wait(&vm, at, "update.committed", |e| e.get("slot") == Some("b"), 240);
    vm.wait_for_line(|l| l.contains("greeter | greeting=hello from v2"), Duration::from_secs(120)).unwrap();
    // berthctl printed the updater's report and ended well (on v2, applying it again is a no-op).
    vm.wait_for_line(|l| l.contains("ctl | applied"), Duration::from_secs(120)).unwrap();
    let c = vm.console_text();
    assert!(c.contains("source=\"the bundle on standard input\""), "{c}");
}
