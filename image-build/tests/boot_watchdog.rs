//! The watchdog (`[system] watchdog`) in a booted machine: on the project kernel with QEMU's
//! i6300ESB, PID 1 pets it for over a minute without a reset, a frozen PID 1 (the test-only
//! `berthctl debug-stall`, PID 1's loop blocked) is reset by it, and a power-button shutdown that
//! takes longer than the timeout does not trigger it; on Debian's cloud kernel, which has no
//! i6300ESB driver, the software watchdog stands in and resets a frozen PID 1 too.

mod common;

use std::cell::Cell;
use std::time::Duration;

use berth_qemu::{default_timeout, GuestShutdown};

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
watchdog = "10s"
stop_timeout = "30s"

[[service]]
name = "staller"
image = "oci:images/busybox:latest"
binds = ["/run/berth/control.sock:/run/berth/control.sock", "/init:/bin/berthctl:ro"]
command = ["sh", "-c", "trap 'echo stopping; sleep 15; exit 0' TERM; echo up; sleep STALL_AFTER & wait; echo stalling; berthctl debug-stall 300; sleep 1000"]
"#;

fn config(stall_after: u32) -> String {
    CONFIG.replace("STALL_AFTER", &stall_after.to_string())
}

/// Waits for the `n`th `name` event (counting from the boot's first).
fn wait_nth(vm: &berth_qemu::Vm, name: &str, n: u32, timeout: Duration) -> berth_qemu::Event {
    let seen = Cell::new(0);
    vm.wait_for_event(
        name,
        |_| {
            seen.set(seen.get() + 1);
            seen.get() == n
        },
        timeout,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_i6300esb_watchdog_resets_a_frozen_pid1_after_a_minute_of_petting() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let out = common::build(dir.path(), "watchdog", &common::with_project_kernel(&config(65)));
    let vm = common::boot_rebootable_with(&out, &["-device", "i6300esb"]);
    let mut qmp = vm.qmp().unwrap();
    let t = default_timeout();

    let armed = wait_nth(&vm, "watchdog.armed", 1, t);
    assert_eq!(
        (armed.get("identity"), armed.get("timeout_s"), armed.get("device")),
        (Some("i6300ESB timer"), Some("10"), Some("/dev/watchdog0")),
        "the hardware watchdog, not softdog: {armed:?}"
    );
    vm.wait_for_line(|l| l.contains("staller | up"), t).unwrap();
    // 65 s of a running machine: no reset meanwhile (a reset would boot again and arm again).
    vm.wait_for_line(|l| l.contains("staller | stalling"), t * 3).unwrap();
    assert_eq!(
        vm.events().iter().filter(|e| e.name == "boot.stage" && e.get("stage") == Some("init")).count(),
        1
    );
    assert!(qmp.events().iter().all(|e| e["event"] != "WATCHDOG"), "{:?}", qmp.events());

    // PID 1's loop blocks: the watchdog resets the machine, which boots again.
    let fired = qmp.wait_event("WATCHDOG", t).unwrap();
    assert_eq!(fired["data"]["action"], "reset", "{fired}");
    let again = wait_nth(&vm, "watchdog.armed", 2, t);
    assert_eq!(again.get("identity"), Some("i6300ESB timer"));
    let c = vm.console_text();
    assert!(c.contains("debug-stall: PID 1's loop blocks for 300 s"), "{c}");
}

#[test]
fn a_power_button_shutdown_longer_than_the_timeout_does_not_trigger_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let out = common::build(dir.path(), "watchdog", &common::with_project_kernel(&config(1000)));
    let mut vm = common::boot_with(&out, &["-device", "i6300esb"]);
    let t = default_timeout();
    vm.wait_for_event("watchdog.armed", |_| true, t).unwrap();
    vm.wait_for_line(|l| l.contains("staller | up"), t).unwrap();
    vm.qmp().unwrap().system_powerdown().unwrap();
    // The service takes 15 s to stop, past the 10 s timeout: PID 1 pets on meanwhile.
    vm.wait_exit(t * 2).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_tail(30));
    let events = vm.events();
    let ms = |name: &str| {
        events.iter().find(|e| e.name == name).map(|e| e.ms).unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(ms("shutdown.complete") - ms("shutdown.begin") > 12_000, "the stop outlasted the timeout");
    let disarmed = events.iter().find(|e| e.name == "watchdog.disarmed").expect("watchdog.disarmed");
    assert_eq!(disarmed.get("stopped"), Some("true"), "magic close: {disarmed:?}");
    common::assert_in_order(
        &common::event_names(&vm),
        &["shutdown.begin", "container.exited:staller", "watchdog.disarmed", "shutdown.complete"],
    );
}

#[test]
fn without_a_hardware_watchdog_softdog_resets_a_frozen_pid1() {
    // Debian's cloud kernel: no i6300ESB driver; the packed softdog module stands in.
    let (_dir, out) = common::build_fresh("softdog", &config(2));
    let vm = common::boot_rebootable_with(&out, &[]);
    let t = default_timeout();
    let armed = wait_nth(&vm, "watchdog.armed", 1, t);
    assert_eq!(
        (armed.get("identity"), armed.get("timeout_s")),
        (Some("Software Watchdog"), Some("10")),
        "{armed:?}"
    );
    vm.wait_for_line(|l| l.contains("softdog: Initiating system reboot"), t).unwrap();
    let again = wait_nth(&vm, "watchdog.armed", 2, t);
    assert_eq!(again.get("identity"), Some("Software Watchdog"));
}
