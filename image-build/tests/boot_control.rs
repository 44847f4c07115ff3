//! berthctl, the in-guest client of PID 1's control socket: ps, logs, stop, poweroff. The test's
//! container gets the socket and the init binary (as /bin/berthctl) by binds.

mod common;

use berth_qemu::{default_timeout, GuestShutdown};

const CONTROL: &str = r#"
[kernel]
cmdline = "console=ttyS0"

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
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let out = common::build(dir.path(), "control", CONTROL);
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
    let lines = &ctl[logs + 1..stop];
    assert_eq!(lines.len(), 2, "logs -n 2: {lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("line ")), "{lines:?}");
    assert!(ctl.contains(&"stopping web"), "{c}");
    // Stopped by hand: not restarted despite restart = "always".
    let after = ctl[stop..].iter().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{c}"));
    assert!(after.contains("stopped/exited(0)"), "{after}");
    assert!(ctl.contains(&"logs error reported"), "{c}");
    assert!(c.contains("berthctl: no container named nosuch"), "{c}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff));
}
