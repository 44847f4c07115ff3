//! Network time in a booted machine: a guest whose hardware clock says 2001 sets its clock from
//! a real NTP server on the host (chrony, which serves its time without touching the host's
//! clock), reached through QEMU's user network; a service that waits for `time` sees the right
//! year; the hardware clock written at the reboot makes the next boot start at the right year.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use berth_qemu::{default_timeout, user_net_args};

/// chronyd serving the host's time on 127.0.0.1:`port`, ended on drop.
struct Chrony {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free UDP port on 127.0.0.1 (QEMU's user network maps 10.0.2.2 to the host's loopback and
/// keeps the port).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn chrony(port: u16) -> Chrony {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("chrony.conf");
    // `-x`: never adjust the host's clock; `local`: serve as a synchronised server with no
    // upstream; `cmdport 0`: no control socket.
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile {}\n",
            dir.path().join("chronyd.pid").display()
        ),
    )
    .unwrap();
    let chronyd = ["/usr/sbin/chronyd", "/sbin/chronyd"].into_iter().map(PathBuf::from).find(|p| p.exists());
    let chronyd = chronyd.expect("chronyd is missing: run scripts/setup.sh (Debian package chrony)");
    let chrony = Chrony {
        child: Command::new(chronyd).arg("-x").arg("-d").arg("-f").arg(&conf).spawn().expect("start chronyd"),
        _dir: dir,
    };
    // Wait until it answers.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut request = [0u8; 48];
    request[0] = 0x23;
    request[40] = 1;
    for _ in 0..50 {
        sock.send_to(&request, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        if sock.recv(&mut buf).is_ok() {
            return chrony;
        }
    }
    panic!("chronyd did not answer on 127.0.0.1:{port}");
}

fn config(port: u16) -> String {
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
ntp = ["dhcp", "10.0.2.2:{port}"]
when_done = "reboot"

[[onboot]]
name = "early"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo clock-at-boot=$(date -u +%Y)"]

[[service]]
name = "tls"
image = "oci:images/busybox:latest"
depends_on = ["time"]
command = ["sh", "-c", "echo clock-for-tls=$(date -u +%Y)"]
"#
    )
}

fn host_year() -> String {
    let out = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_machine_born_in_2001_sets_its_clock_from_ntp_and_keeps_it_across_a_reboot() {
    let port = free_udp_port();
    let _chrony = chrony(port);
    let (_dir, out) = common::build_fresh("time", &config(port));
    let year = host_year();
    let mut args = user_net_args(&[]);
    args.extend(["-rtc".to_string(), "base=2001-01-01T00:00:00".to_string()]);
    let mut vm = common::boot_rebootable_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();

    vm.wait_for_line(|l| l.contains("clock-at-boot="), t).unwrap();
    let synced = vm.wait_for_event("time.synced", |_| true, t).unwrap();
    assert_eq!(synced.get("server"), Some(format!("10.0.2.2:{port}").as_str()), "{synced:?}");
    assert_eq!(synced.get("stepped"), Some("true"), "a clock 25 years off is stepped: {synced:?}");
    assert_eq!(synced.get("stratum"), Some("8"), "chrony's `local stratum 8`: {synced:?}");
    let offset_days = synced.get("offset_ms").unwrap().parse::<f64>().unwrap() / 86_400_000.0;
    assert!(offset_days > 365.0 * 20.0, "the clock was behind by about 25 years: {synced:?}");
    vm.wait_for_line(|l| l.contains("clock-for-tls="), t).unwrap();
    let saved = vm.wait_for_event("time.rtc_saved", |_| true, t).unwrap();
    assert_eq!(saved.get("year"), Some(year.as_str()), "{saved:?}");
    // The reboot (when_done): the same QEMU keeps its RTC, which PID 1 has just written.
    vm.wait_for_event("shutdown.complete", |e| e.get("action") == Some("reboot"), t).unwrap();
    let second = vm.wait_for_line(|l| l.contains("clock-at-boot=") && !l.contains("=2001"), t * 2);
    let console = vm.console_text();
    let names = common::event_names(&vm);
    let names_and_ms: Vec<(String, u64)> = vm.events().into_iter().map(|e| (e.name, e.ms)).collect();
    vm.kill();

    // (The onboot container's first `date` races with DHCP and NTP: the offset above is what
    // shows the clock started in 2001.)
    let lines: Vec<&str> = console.lines().filter(|l| l.contains("clock-")).collect();
    assert!(
        lines.iter().any(|l| l.ends_with(&format!("clock-for-tls={year}"))),
        "the service that waits for time sees {year}: {lines:?}"
    );
    assert!(second.unwrap().trim_end().ends_with(&format!("clock-at-boot={year}")), "{lines:?}");
    // The helper ends at the shutdown's SIGTERM (PID 1's blocked signals are not its own): no
    // 2 s wait for the SIGKILL that follows.
    let first_boot: Vec<_> = vm_events_until_reboot(&names_and_ms);
    let ms = |name: &str| first_boot.iter().find(|(n, _)| n == name).map(|(_, ms)| *ms).unwrap();
    assert!(ms("shutdown.complete") - ms("shutdown.begin") < 2000, "{first_boot:?}");
    // `time` came before the service that waits for it.
    common::assert_in_order(
        &names,
        &["time.synced", "container.started:tls", "time.rtc_saved", "shutdown.complete"],
    );
}

#[test]
fn depends_on_time_needs_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    std::fs::write(&file, config(123).replace("ntp = [\"dhcp\", \"10.0.2.2:123\"]\n", "")).unwrap();
    let out =
        common::run_berth(&["build", file.to_str().unwrap(), "-o", dir.path().join("o").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("app.toml:16:15: container `tls`: depends_on `time`")
            && err.contains("[system] ntp names no server"),
        "{err}"
    );
    std::fs::write(&file, config(123).replace("10.0.2.2:123", "10.0.2.2:0")).unwrap();
    let out =
        common::run_berth(&["build", file.to_str().unwrap(), "-o", dir.path().join("o").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app.toml:6:16: NTP server `10.0.2.2:0`: the port is not 1–65535"), "{err}");
    assert!(!dir.path().join("o").exists(), "nothing is left behind");
}

/// The events of the first boot: those up to the first `shutdown.complete`.
fn vm_events_until_reboot(events: &[(String, u64)]) -> Vec<(String, u64)> {
    let end = events.iter().position(|(n, _)| n == "shutdown.complete").map_or(events.len(), |i| i + 1);
    events[..end].to_vec()
}
