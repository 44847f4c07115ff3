//! Containers that fail are reported precisely and the others go on: an OOM kill, a non-zero
//! exit code, a death by signal, a command missing from the image (a clear console error, no
//! kernel panic). Then the shutdown path: Ctrl-Alt-Del reboots, a container that ignores SIGTERM
//! is killed at its stop timeout.

mod common;

use berth_qemu::{default_timeout, GuestShutdown};
use serde_json::json;

const FAILURES: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "code"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo exiting with 3; exit 3"]

[[onboot]]
name = "missing"
image = "oci:images/busybox:latest"
command = ["/bin/nope"]

[[service]]
name = "oom"
image = "oci:images/busybox:latest"
memory = "16m"
command = ["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=64; echo survived"]

[[service]]
name = "crash"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "f() { f; }; f"]

[[service]]
name = "survivor"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "sleep 3; echo still here"]
"#;

#[test]
fn failures_are_reported_and_others_go_on() {
    let (_dir, out) = common::build_fresh("failures", FAILURES);
    let mut vm = common::boot(&out);
    let t = default_timeout();

    let code = vm.wait_for_event("container.exited", |e| e.get("name") == Some("code"), t).unwrap();
    assert_eq!(code.get("code"), Some("3"));
    let missing = vm.wait_for_event("container.failed", |e| e.get("name") == Some("missing"), t).unwrap();
    let error = missing.get("error").unwrap_or_default().to_string();
    assert!(error.starts_with("exec /bin/nope: ENOENT"), "{error}");
    let oom = vm.wait_for_event("container.exited", |e| e.get("name") == Some("oom"), t).unwrap();
    assert_eq!((oom.get("signal"), oom.get("oom_killed")), (Some("KILL"), Some("true")), "{oom:?}");
    let crash = vm.wait_for_event("container.exited", |e| e.get("name") == Some("crash"), t).unwrap();
    assert_eq!(crash.get("signal"), Some("SEGV"), "{crash:?}");
    let survivor = vm.wait_for_event("container.exited", |e| e.get("name") == Some("survivor"), t).unwrap();
    assert_eq!(survivor.get("code"), Some("0"));

    let status = vm.wait_exit(t).unwrap();
    assert!(status.success());
    let console = vm.console_text();
    assert!(console.contains("code | exiting with 3"), "{console}");
    assert!(console.contains("survivor | still here"), "{console}");
    assert!(!console.contains("oom | survived"), "{console}");
    assert!(
        console.contains(
            "berth: container missing failed to start: exec /bin/nope: ENOENT (No such file or directory)"
        ),
        "no clear console error for the missing command:\n{console}"
    );
    assert!(!console.contains("Kernel panic"), "{console}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}

const STOPPING: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"
compression = "gzip"

[system]
stop_timeout = "3s"

[[service]]
name = "polite"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 1; done"]

[[service]]
name = "stubborn"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo ready; exec sleep 1000"]
"#;

#[test]
fn ctrl_alt_del_stops_containers_then_reboots() {
    let (_dir, out) = common::build_fresh("stopping", STOPPING);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    vm.wait_for_line(|l| l.starts_with("polite | ready"), t).unwrap();
    vm.wait_for_line(|l| l.starts_with("stubborn | ready"), t).unwrap();

    vm.qmp().unwrap().execute("send-key", json!({"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]})).unwrap();

    let begin = vm.wait_for_event("shutdown.begin", |_| true, t).unwrap();
    assert_eq!((begin.get("action"), begin.get("reason")), (Some("reboot"), Some("int")), "{begin:?}");
    let polite = vm.wait_for_event("container.exited", |e| e.get("name") == Some("polite"), t).unwrap();
    assert_eq!(polite.get("code"), Some("0"));
    let stubborn = vm.wait_for_event("container.exited", |e| e.get("name") == Some("stubborn"), t).unwrap();
    assert_eq!(stubborn.get("signal"), Some("KILL"), "{stubborn:?}");
    assert!(
        stubborn.ms >= begin.ms + 3000,
        "SIGKILL came before the stop timeout: {} → {}",
        begin.ms,
        stubborn.ms
    );
    assert!(vm.console_text().contains("polite | got TERM"));
    vm.wait_exit(t).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::Reboot), "{}", vm.console_text());
    common::assert_in_order(
        &common::event_names(&vm),
        &[
            "shutdown.begin",
            "container.stopping:stubborn",
            "container.exited:polite",
            "container.exited:stubborn",
            "shutdown.complete",
        ],
    );
}

#[test]
fn an_unreadable_boot_plan_leaves_a_defined_state() {
    use std::io::Write;
    let (_dir, out) = common::build_fresh("plain", STOPPING);
    // A second archive appended to the initramfs replaces the plan with garbage.
    let initrd = out.join("initrd.img");
    let mut bytes = std::fs::read(&initrd).unwrap();
    let gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
    let mut cpio = berth_image_build::cpio::CpioWriter::new(gz, 0);
    let garbage = b"{ this is not a plan";
    cpio.file("berth/plan.json", 0o644, 0, 0, garbage.len() as u64, &garbage[..]).unwrap();
    bytes.extend(cpio.finish().unwrap().finish().unwrap());
    std::fs::File::create(&initrd).unwrap().write_all(&bytes).unwrap();

    let mut vm = common::boot(&out);
    let t = default_timeout();
    let failed = vm.wait_for_event("boot.failed", |_| true, t).unwrap();
    assert!(
        failed.get("error").unwrap_or_default().contains("/berth/plan.json is not a valid boot plan"),
        "{failed:?}"
    );
    // The machine is up without containers and still obeys a shutdown request.
    vm.qmp().unwrap().execute("send-key", json!({"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]})).unwrap();
    vm.wait_for_event("shutdown.complete", |e| e.get("action") == Some("reboot"), t).unwrap();
    vm.wait_exit(t).unwrap();
    let console = vm.console_text();
    assert!(!console.contains("container.started"), "{console}");
    assert!(console.contains("rebuild the image with `berth build`"), "{console}");
    assert!(!console.contains("Kernel panic"), "{console}");
}

#[test]
fn the_acpi_power_button_shuts_down_gracefully() {
    let (_dir, out) = common::build_fresh("button", STOPPING);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    vm.wait_for_event("power_button.ready", |_| true, t).unwrap();
    vm.wait_for_line(|l| l.starts_with("polite | ready"), t).unwrap();

    // What `virsh shutdown` or a hypervisor's "shut down" does.
    vm.qmp().unwrap().system_powerdown().unwrap();

    let begin = vm.wait_for_event("shutdown.begin", |_| true, t).unwrap();
    assert_eq!((begin.get("action"), begin.get("reason")), (Some("poweroff"), Some("acpi")), "{begin:?}");
    let polite = vm.wait_for_event("container.exited", |e| e.get("name") == Some("polite"), t).unwrap();
    assert_eq!(polite.get("code"), Some("0"));
    vm.wait_exit(t).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_text());
}

const RESTARTS: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[service]]
name = "flaky"
image = "oci:images/busybox:latest"
restart = "on-failure:4"
command = ["sh", "-c", "echo failing; exit 1"]

[[service]]
name = "once"
image = "oci:images/busybox:latest"
restart = "on-failure"
command = ["sh", "-c", "echo fine; exit 0"]

[[service]]
name = "ticker"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "i=0; while [ $i -lt 8 ]; do echo tick $i; i=$((i+1)); sleep 0.25; done"]
"#;

#[test]
fn a_failing_service_restarts_with_growing_delays() {
    let (_dir, out) = common::build_fresh("restarts", RESTARTS);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    vm.wait_for_event("shutdown.complete", |_| true, t).unwrap();
    vm.wait_exit(t).unwrap();
    let events = vm.events();
    let of = |name: &str, kind: &str| -> Vec<u64> {
        events.iter().filter(|e| e.name == kind && e.get("name") == Some(name)).map(|e| e.ms).collect()
    };
    let (starts, exits) = (of("flaky", "container.started"), of("flaky", "container.exited"));
    assert_eq!(starts.len(), 5, "on-failure:4 = the first run and 4 restarts: {starts:?}");
    let delays: Vec<u64> = starts[1..].iter().zip(&exits).map(|(s, e)| s - e).collect();
    eprintln!("restart delays (ms, from exit to start): {delays:?}");
    let announced: Vec<String> = events
        .iter()
        .filter(|e| e.name == "container.restarting" && e.get("name") == Some("flaky"))
        .filter_map(|e| e.get("in_ms").map(String::from))
        .collect();
    // The back-off doubles; each restart waits at least its back-off (the measured delay also
    // holds the container's start, which varies with the machine's load).
    assert_eq!(announced, ["100", "200", "400", "800"]);
    for (delay, backoff) in delays.iter().zip([100, 200, 400, 800]) {
        assert!(*delay >= backoff, "a restart came before its back-off of {backoff} ms: {delays:?}");
    }
    // A clean exit is not a failure; the other service kept running throughout.
    assert_eq!(of("once", "container.started").len(), 1);
    let console = vm.console_text();
    assert!(console.contains("ticker | tick 7"), "{console}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}

const ORPHANS: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "parent"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "sleep 1000 & sleep 1000 & sh -c 'sleep 1000 &' ; echo leaving children behind"]

[[onboot]]
name = "inspector"
image = "oci:images/busybox:latest"
binds = ["/proc:/hostproc:ro"]
command = ["sh", "-c", """
sleep 1
echo processes=$(ls -d /hostproc/[0-9]* | wc -l)
echo zombies=$(cat /hostproc/[0-9]*/stat 2>/dev/null | grep -c '^[0-9]* ([^)]*) Z')
echo sleepers=$(cat /hostproc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -o 'sleep 100[0]' | wc -l)
"""]
"#;

#[test]
fn orphans_are_reaped() {
    let (_dir, out) = common::build_fresh("orphans", ORPHANS);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    let e = vm.wait_for_event("container.exited", |e| e.get("name") == Some("inspector"), t).unwrap();
    assert_eq!(e.get("code"), Some("0"), "{}", vm.console_text());
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    let get = |key: &str| -> u32 {
        c.lines()
            .find_map(|l| l.trim_end().strip_prefix(&format!("inspector | {key}=")))
            .unwrap_or_else(|| panic!("no {key} in {c}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(get("processes") > 5, "the machine's /proc is visible: {c}");
    assert_eq!(get("sleepers"), 0, "the container's children died with it: {c}");
    assert_eq!(get("zombies"), 0, "PID 1 reaped them: {c}");
}

const STOP_SETTINGS: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
stop_timeout = "20s"

[[service]]
name = "quitter"
image = "oci:images/busybox:latest"
stop_signal = "SIGQUIT"
command = ["sh", "-c", "trap 'echo got QUIT; exit 0' QUIT; echo ready; while true; do sleep 1; done"]

[[service]]
name = "impatient"
image = "oci:images/busybox:latest"
stop_timeout = "1s"
command = ["sh", "-c", "echo ready; exec sleep 1000"]

[[onshutdown]]
name = "goodbye"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo bye"]
"#;

#[test]
fn stop_signal_stop_timeout_and_onshutdown() {
    let (_dir, out) = common::build_fresh("stopsettings", STOP_SETTINGS);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    vm.wait_for_event("power_button.ready", |_| true, t).unwrap();
    vm.wait_for_line(|l| l.starts_with("quitter | ready"), t).unwrap();
    vm.wait_for_line(|l| l.starts_with("impatient | ready"), t).unwrap();
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(t).unwrap();
    let events = vm.events();
    let find = |name: &str, f: &dyn Fn(&berth_qemu::Event) -> bool| {
        events
            .iter()
            .find(|e| e.name == name && f(e))
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {events:#?}"))
    };
    let begin = find("shutdown.begin", &|_| true);
    let quit = find("container.stopping", &|e| e.get("name") == Some("quitter"));
    assert_eq!(quit.get("signal"), Some("QUIT"));
    let killed = find("container.stopping", &|e| {
        e.get("name") == Some("impatient") && e.get("signal") == Some("KILL")
    });
    let waited = killed.ms - begin.ms;
    assert!(
        (1000..5000).contains(&waited),
        "impatient killed {waited} ms after the stop began (its stop_timeout is 1s)"
    );
    let services_done = events
        .iter()
        .filter(|e| e.name == "container.exited" && matches!(e.get("name"), Some("quitter" | "impatient")))
        .map(|e| e.ms)
        .max()
        .unwrap();
    let goodbye = find("container.started", &|e| e.get("name") == Some("goodbye"));
    assert!(goodbye.ms >= services_done, "onshutdown ran before the services stopped");
    assert_eq!(goodbye.get("kind"), Some("onshutdown"));
    let c = vm.console_text();
    assert!(c.contains("quitter | got QUIT") && c.contains("goodbye | bye"), "{c}");
    common::assert_in_order(
        &common::event_names(&vm),
        &["shutdown.begin", "container.exited:goodbye", "shutdown.complete"],
    );
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}

const DEPENDENCIES: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
stop_timeout = "1s"

[[onboot]]
name = "setup"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo set up"]

[[onboot]]
name = "broken"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "exit 1"]

[[service]]
name = "app"
image = "oci:images/busybox:latest"
depends_on = ["db", "setup"]
command = ["sh", "-c", "echo app started; sleep 1000"]

[[service]]
name = "db"
image = "oci:images/busybox:latest"
healthcheck = { cmd = "test -f /tmp/ready", interval = "300ms", timeout = "2s", retries = 50 }
command = ["sh", "-c", "sleep 2; touch /tmp/ready; echo db ready; sleep 1000"]

[[service]]
name = "orphaned"
image = "oci:images/busybox:latest"
depends_on = ["broken"]
command = ["sh", "-c", "echo should not run"]
"#;

#[test]
fn depends_on_waits_for_a_healthy_dependency() {
    let (_dir, out) = common::build_fresh("deps", DEPENDENCIES);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    let healthy = vm.wait_for_event("container.healthy", |e| e.get("name") == Some("db"), t).unwrap();
    let app = vm.wait_for_event("container.started", |e| e.get("name") == Some("app"), t).unwrap();
    let db = vm.wait_for_event("container.started", |e| e.get("name") == Some("db"), t).unwrap();
    assert!(app.ms >= healthy.ms, "app started at {} before db was healthy at {}", app.ms, healthy.ms);
    assert!(healthy.ms >= db.ms + 2000, "db was declared healthy before it wrote its file");
    let orphaned = vm.wait_for_event("container.failed", |e| e.get("name") == Some("orphaned"), t).unwrap();
    assert!(orphaned.get("error").unwrap_or_default().contains("broken"), "{orphaned:?}");
    vm.wait_for_line(|l| l.starts_with("app | app started"), t).unwrap();
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(t).unwrap();
    assert!(!vm.console_text().contains("should not run"));
    // Reverse dependency order: db is asked to stop only once app has ended.
    let events = vm.events();
    let at = |kind: &str, name: &str| {
        events.iter().find(|e| e.name == kind && e.get("name") == Some(name)).map(|e| e.ms).unwrap()
    };
    assert!(
        at("container.stopping", "db") >= at("container.exited", "app"),
        "db stopped before its dependent app ended"
    );
}

const KERNEL_POWEROFF: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
# A crash's core dump goes to /sbin/poweroff, run by the kernel as a usermode helper — the way
# the kernel runs it for a Hyper-V host shutdown.
sysctl = { "kernel.core_pattern" = "|/sbin/poweroff" }

[[service]]
name = "polite"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 1; done"]

[[service]]
name = "crasher"
image = "oci:images/busybox:latest"
ulimits = { core = 100000000 }
command = ["sh", "-c", "sleep 2; f() { f; }; f"]
"#;

#[test]
fn the_kernel_running_sbin_poweroff_shuts_down_gracefully() {
    let (_dir, out) = common::build_fresh("kpoweroff", KERNEL_POWEROFF);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    let begin = vm.wait_for_event("shutdown.begin", |_| true, t).unwrap();
    assert_eq!((begin.get("action"), begin.get("reason")), (Some("poweroff"), Some("usr2")), "{begin:?}");
    let polite = vm.wait_for_event("container.exited", |e| e.get("name") == Some("polite"), t).unwrap();
    assert_eq!(polite.get("code"), Some("0"), "{}", vm.console_text());
    vm.wait_exit(t).unwrap();
    assert!(vm.console_text().contains("polite | got TERM"));
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}

#[test]
fn ctrl_alt_del_reboots_into_a_second_boot() {
    let (_dir, out) = common::build_fresh("reboot", STOPPING);
    let mut vm = common::boot_rebootable(&out);
    let t = default_timeout();
    vm.wait_for_line(|l| l.starts_with("polite | ready"), t).unwrap();
    vm.qmp().unwrap().execute("send-key", json!({"keys": [{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}]})).unwrap();
    vm.wait_for_event("shutdown.complete", |e| e.get("action") == Some("reboot"), t).unwrap();
    // The machine comes up again: a second boot, its containers running.
    let second =
        || vm.events().iter().filter(|e| e.name == "boot.stage" && e.get("stage") == Some("init")).count();
    let end = std::time::Instant::now() + t;
    while second() < 2 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(second(), 2, "no second boot: {}", vm.console_tail(40));
    // Wait for the second boot's power button (an ACPI event before it is there is lost).
    while vm.events().iter().filter(|e| e.name == "power_button.ready").count() < 2
        && std::time::Instant::now() < end
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let started = || {
        vm.events()
            .iter()
            .filter(|e| e.name == "container.started" && e.get("name") == Some("polite"))
            .count()
    };
    while started() < 2 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(started(), 2, "polite did not start in the second boot");
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(t).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}
