//! berthctl, the in-guest client of PID 1's control socket: ps, logs (-f), events -f, restart,
//! stop, poweroff; and log files. The test's
//! container gets the socket and the init binary (as /bin/berthctl) by binds.

mod common;

use berth_qemu::{default_timeout, GuestShutdown};

const CONTROL: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
stop_timeout = "2s"

[[service]]
name = "web"
image = "oci:images/busybox:latest"
restart = "always"
command = ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]

[[service]]
name = "ctl"
image = "oci:images/busybox:latest"
depends_on = ["web"]
binds = ["/run/berth/control.sock:/run/berth/control.sock", "/init:/bin/berthctl:ro"]
command = ["sh", "-c", """
sleep 1.5
berthctl ps
echo "--- logs"
berthctl logs -n 2 web
echo "--- restart"
berthctl events -f > /tmp/events &
berthctl logs -f web > /tmp/follow &
sleep 0.5
berthctl restart web
sleep 1.5
echo "followed $(grep -c '^line' /tmp/follow) events $(grep -c 'event=container.started name=web' /tmp/events)"
kill $(jobs -p) 2>/dev/null
echo "--- stop"
berthctl stop web
sleep 1
berthctl ps | grep '^web'
berthctl logs nosuch || echo "logs error reported"
berthctl poweroff
sleep 100
"""]
"#;

#[test]
fn berthctl_ps_logs_stop_poweroff() {
    let (_dir, out) = common::build_fresh("control", CONTROL);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    let begin = vm.wait_for_event("shutdown.begin", |_| true, t).unwrap();
    assert_eq!((begin.get("action"), begin.get("reason")), (Some("poweroff"), Some("control")), "{begin:?}");
    vm.wait_exit(t).unwrap();
    let c = vm.console_text();
    let ctl: Vec<&str> = c.lines().filter_map(|l| l.trim_end().strip_prefix("ctl | ")).collect();
    let header =
        ctl.iter().position(|l| l.starts_with("NAME")).unwrap_or_else(|| panic!("no ps header: {c}"));
    let web = ctl[header + 1..].iter().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{c}"));
    assert!(web.contains(" service ") && web.contains(" running "), "{web}");
    assert!(web.trim_end().ends_with('M'), "memory from the cgroup: {web}");
    let logs = ctl.iter().position(|l| *l == "--- logs").unwrap();
    let stop = ctl.iter().position(|l| *l == "--- stop").unwrap();
    let restart = ctl.iter().position(|l| *l == "--- restart").unwrap();
    let lines = &ctl[logs + 1..restart];
    assert_eq!(lines.len(), 2, "logs -n 2: {lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("line ")), "{lines:?}");
    assert!(ctl.contains(&"stopping web"), "{c}");
    // restart, logs -f and events -f: the follower saw lines as they came, the restart's start.
    let followed = ctl.iter().find_map(|l| l.strip_prefix("followed ")).unwrap_or_else(|| panic!("{c}"));
    let (lines, events) = followed.split_once(" events ").unwrap();
    assert!(lines.parse::<u32>().unwrap() >= 3, "logs -f saw {lines} lines");
    assert_eq!(events, "1", "events -f saw the restarted web start once");
    assert!(ctl.contains(&"restarting web"), "{c}");
    // Stopped by hand: not restarted despite restart = "always".
    let after = ctl[stop..].iter().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{c}"));
    assert!(after.contains("stopped/exited(0)"), "{after}");
    assert!(ctl.contains(&"logs error reported"), "{c}");
    assert!(c.contains("berthctl: no container named nosuch"), "{c}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}

const LOG_FILES: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[log]
max_size = "1k"
max_files = 2

[[onboot]]
name = "chatty"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "i=0; while [ $i -lt 200 ]; do echo chatty line $i; i=$((i+1)); done"]

[[onboot]]
name = "reader"
image = "oci:images/busybox:latest"
binds = ["/var/log/berth:/logs:ro"]
command = ["sh", "-c", "ls /logs | tr '\\n' ' '; echo; echo sizes $(wc -c /logs/chatty.log /logs/chatty.log.1 | head -2 | tr -s ' ' | cut -d' ' -f2 | tr '\\n' ' '); echo last $(tail -1 /logs/chatty.log)"]
"#;

#[test]
fn output_goes_to_rotated_files() {
    let (_dir, out) = common::build_fresh("logfiles", LOG_FILES);
    let mut vm = common::boot(&out);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    let line = |prefix: &str| -> String {
        c.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {c}"))
            .trim()
            .to_string()
    };
    // 200 lines of ~16 bytes: ~3.3 kB through 1 kB files, two rotated ones kept.
    assert_eq!(line("reader | "), "chatty.log chatty.log.1 chatty.log.2", "{c}");
    let sizes: Vec<u64> = line("reader | sizes").split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert!(sizes.iter().all(|s| *s <= 1024), "{sizes:?}");
    assert!(sizes[1] > 900, "a rotated file is nearly full: {sizes:?}");
    assert_eq!(line("reader | last"), "chatty line 199");
}

const CONSOLE: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[console]
name = "shell"
image = "oci:images/busybox:latest"
command = ["sh"]
"#;

#[test]
fn the_debug_console_is_a_shell_on_the_serial_line() {
    let (_dir, out) = common::build_fresh("console", CONSOLE);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    let started = vm.wait_for_event("container.started", |e| e.get("name") == Some("shell"), t).unwrap();
    assert_eq!(started.get("kind"), Some("console"));
    vm.wait_for_event("power_button.ready", |_| true, t).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    vm.send_console(b"echo shell-says-$((6*7)) on $(tty)\n").unwrap();
    let line = vm.wait_for_line(|l| l.contains("shell-says-42 on"), t).unwrap();
    assert!(line.contains("shell-says-42 on /dev/console"), "{line}");
    // Exiting the shell gets a new one, like a getty.
    vm.send_console(b"exit\n").unwrap();
    vm.wait_for_event("container.exited", |e| e.get("name") == Some("shell"), t).unwrap();
    let count = || {
        vm.events().iter().filter(|e| e.name == "container.started" && e.get("name") == Some("shell")).count()
    };
    let end = std::time::Instant::now() + t;
    while count() < 2 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(count(), 2, "the console shell was not started again");
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(t).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}
