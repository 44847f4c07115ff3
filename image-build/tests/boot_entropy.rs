//! PID 1 never waits for the kernel's entropy pool: booted the way many hypervisors boot guests
//! — QEMU's default CPU model (`qemu64`, no RDRAND), no RNG device — with a NIC on DHCP (the
//! default), containers that run for several seconds (`net = "none"`, then `net = "bridge"`)
//! print all their output and finish and the machine powers off; and a press of the power
//! button while either of them runs is answered at once.
//!
//! (Before the DHCP client stopped using `rand`, PID 1 froze here ~2 s into boot, in a `poll`
//! on `/dev/random`, and the kernel never reached `crng init done`.)

mod common;

use std::time::{Duration, Instant};

use berth_qemu::{default_timeout, user_net_args, GuestShutdown, Vm, VmConfig};

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "no-entropy"
when_done = "poweroff"

[[onboot]]
name = "alone"
image = "oci:images/busybox:latest"
net = "none"
command = ["sh", "-c", "for i in 1 2 3 4; do echo alone $i; sleep 1; done"]

[[service]]
name = "bridged"
image = "oci:images/busybox:latest"
net = "bridge"
restart = "no"
command = ["sh", "-c", "for i in 1 2 3 4; do echo bridged $i; sleep 1; done"]
"#;

/// Boots on QEMU's default CPU model with no RNG device (the harness's defaults, asserted
/// here so that a change of defaults cannot hide this test's point) and a NIC on DHCP.
fn boot(out: &std::path::Path) -> Vm {
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    let mut cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
    cfg.extra_args = user_net_args(&[]);
    assert!(cfg.cpu.is_none() && !cfg.rng, "the test needs QEMU's default CPU and no RNG device");
    Vm::start(cfg).expect("start qemu")
}

fn lines_of(vm: &Vm, name: &str) -> Vec<String> {
    let prefix = format!("{name} | ");
    vm.console_text().lines().filter_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_string)).collect()
}

/// Presses the power button once PID 1 has printed `line`; the machine must power off soon.
fn press_during(vm: &mut Vm, line: &str) {
    let t = default_timeout();
    vm.wait_for_line(|l| l.trim_end() == line, t).unwrap();
    let pressed = Instant::now();
    vm.qmp().unwrap().system_powerdown().unwrap();
    let begin = vm.wait_for_event("shutdown.begin", |_| true, t).unwrap();
    assert_eq!(begin.get("reason"), Some("acpi"), "{begin:?}");
    vm.wait_exit(t).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_tail(30));
    eprintln!("power button during `{line}`: off {:?} after the press", pressed.elapsed());
    assert!(
        pressed.elapsed() < Duration::from_secs(30),
        "the press took {:?} to power off",
        pressed.elapsed()
    );
}

#[test]
fn containers_run_and_the_power_button_works_without_entropy() {
    let (_dir, out) = common::build_fresh("entropy", CONFIG);
    let t = default_timeout();

    let mut vm = boot(&out);
    vm.wait_exit(t * 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_tail(30));
    assert_eq!(
        lines_of(&vm, "alone"),
        ["alone 1", "alone 2", "alone 3", "alone 4"],
        "{}",
        vm.console_tail(40)
    );
    assert_eq!(lines_of(&vm, "bridged"), ["bridged 1", "bridged 2", "bridged 3", "bridged 4"]);
    common::assert_in_order(
        &common::event_names(&vm),
        &[
            "power_button.ready",
            "container.exited:alone",
            "container.started:bridged",
            "container.exited:bridged",
            "shutdown.begin",
        ],
    );
    assert!(
        vm.events().iter().any(|e| e.name == "network.address"),
        "DHCP got no lease: {}",
        vm.console_tail(40)
    );

    let mut vm = boot(&out);
    press_during(&mut vm, "alone | alone 2");
    let mut vm = boot(&out);
    press_during(&mut vm, "bridged | bridged 2");
}

/// The `getrandom` crate is not linked into PID 1 at all: in a static glibc binary its Linux
/// backend cannot find glibc's `getrandom` with `dlsym` and falls back to polling `/dev/random`
/// until the pool is ready. (Its error texts are the mark it leaves in a stripped binary; std's
/// own random source, used for `HashMap` seeds, asks the kernel with `GRND_INSECURE` and never
/// waits.)
#[test]
fn pid1_links_no_getrandom_crate() {
    let binary = std::fs::read(common::init_binary()).unwrap();
    for mark in ["getrandom: this target is not supported", "errno: did not return a positive value"] {
        assert!(
            !binary.windows(mark.len()).any(|w| w == mark.as_bytes()),
            "PID 1 links the getrandom crate (found {mark:?}): something calls rand or getrandom; \
             PID 1 must never wait for entropy"
        );
    }
}

const SEED_CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[storage]
disk = "serial:berth-data"

[[onboot]]
name = "reader"
image = "oci:images/busybox:latest"
net = "none"
command = ["sh", "-c", "echo random-bytes=$(head -c 32 /dev/random | wc -c)"]
"#;

/// Two boots in a row with a data disk, on QEMU's default CPU and no RNG device: the first
/// saves a seed drawn from the ready RNG (at the latest at its shutdown), the second credits it
/// before any container runs, so its RNG is ready at once; a blocking read of `/dev/random`
/// answers in both.
#[test]
fn a_seed_saved_on_the_data_disk_is_credited_at_the_next_boot() {
    let (dir, out) = common::build_fresh("seed", SEED_CONFIG);
    let disk = dir.path().join("data.qcow2");
    let o = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("128M")
        .output()
        .unwrap();
    assert!(o.status.success());
    let boot_with_disk = || {
        let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
        let mut cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
        cfg.extra_args = vec![
            "-drive".into(),
            format!("if=none,id=data,file={},format=qcow2", disk.display()),
            "-device".into(),
            "virtio-blk-pci,drive=data,serial=berth-data".into(),
        ];
        assert!(cfg.cpu.is_none() && !cfg.rng, "the test needs QEMU's default CPU and no RNG device");
        let mut vm = Vm::start(cfg).expect("start qemu");
        vm.wait_exit(default_timeout() * 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_tail(30));
        assert_eq!(lines_of(&vm, "reader"), ["random-bytes=32"], "{}", vm.console_tail(30));
        vm
    };
    let event = |vm: &Vm, name: &str| vm.events().into_iter().find(|e| e.name == name);

    let first = boot_with_disk();
    let seeded = event(&first, "entropy.seeded").expect("entropy.seeded");
    assert_eq!(seeded.get("credited"), Some("false"), "{seeded:?}");
    assert_eq!(seeded.get("reason"), Some("no seed yet (first boot)"), "{seeded:?}");
    let saved: Vec<_> = first.events().into_iter().filter(|e| e.name == "entropy.saved").collect();
    assert_eq!(saved.last().and_then(|e| e.get("creditable")), Some("true"), "{saved:?}");
    eprintln!("first boot: {seeded:?}, then {saved:?}");

    let second = boot_with_disk();
    let seeded = event(&second, "entropy.seeded").expect("entropy.seeded");
    assert_eq!(
        (seeded.get("credited"), seeded.get("bytes"), seeded.get("crng")),
        (Some("true"), Some("512"), Some("ready")),
        "{seeded:?}"
    );
    assert!(seeded.get("error").is_none(), "{seeded:?}");
    common::assert_in_order(
        &common::event_names(&second),
        &["storage.mounted", "entropy.seeded", "container.started:reader", "entropy.saved"],
    );
    // Each boot credits the seed the boot before saved last, never the same one twice.
    let last_saved = |vm: &Vm| {
        let saved: Vec<_> = vm.events().into_iter().filter(|e| e.name == "entropy.saved").collect();
        saved.last().and_then(|e| e.get("digest").map(str::to_string)).expect("a saved seed")
    };
    let seeded_digest =
        |vm: &Vm| event(vm, "entropy.seeded").and_then(|e| e.get("digest").map(str::to_string));
    assert_eq!(seeded_digest(&second), Some(last_saved(&first)));
    let third = boot_with_disk();
    let seeded = event(&third, "entropy.seeded").expect("entropy.seeded");
    assert_eq!(seeded.get("credited"), Some("true"), "{seeded:?}");
    assert_eq!(seeded_digest(&third), Some(last_saved(&second)));
    assert_ne!(seeded_digest(&third), seeded_digest(&second), "a new seed, not the one credited before");
}
