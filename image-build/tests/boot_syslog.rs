//! Remote syslog: a collector on this host, reached by the guest as 10.0.2.2 through QEMU's
//! user-mode network, receives RFC 5424 messages — a service's output, PID 1's own messages and
//! its events, and the kernel's own log at its levels — over UDP and over TCP (octet-counted
//! frames).

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_qemu::{default_timeout, user_net_args};

fn config(target: &str) -> String {
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "edge-01"
when_done = "poweroff"

[log]
syslog = "{target}"

# Started once the machine has its address, so its lines go out live however slow the boot
# (what PID 1 said before that waits in the backlog).
[[service]]
name = "talker"
image = "oci:images/busybox:latest"
depends_on = ["network"]
command = ["sh", "-c", "for i in 1 2 3; do echo hello syslog $i; done; sleep 1"]
"#
    )
}

/// A parsed RFC 5424 message: (PRI, VERSION, TIMESTAMP, HOSTNAME, APP, PROCID, MSGID, SD, MSG).
fn parse(line: &str) -> Option<(u16, Vec<String>, String)> {
    let rest = line.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let mut parts = rest.splitn(8, ' ');
    let fields: Vec<String> = (0..7).map(|_| parts.next().map(str::to_string)).collect::<Option<_>>()?;
    let msg = parts.next().unwrap_or_default().to_string();
    Some((pri.parse().ok()?, fields, msg))
}

fn check(messages: &[String]) {
    let parsed: Vec<_> =
        messages.iter().map(|m| parse(m).unwrap_or_else(|| panic!("not RFC 5424: {m:?}"))).collect();
    for (_, f, _) in &parsed {
        assert_eq!(f[0], "1", "version: {f:?}");
        assert_eq!(f[2], "edge-01", "hostname: {f:?}");
        let ts = &f[1];
        assert!(ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "timestamp {ts}");
    }
    for i in 1..=3 {
        let hit = parsed.iter().find(|(_, f, m)| f[3] == "talker" && m == &format!("hello syslog {i}"));
        let (pri, _, _) = hit.unwrap_or_else(|| panic!("line {i} of the service missing: {messages:#?}"));
        assert_eq!(*pri, 30, "daemon.info");
    }
    let started = parsed.iter().find(|(_, f, m)| {
        f[3] == "berth" && f[4] == "1" && f[5] == "event" && m.contains("event=container.started name=talker")
    });
    assert!(started.is_some(), "PID 1's event missing: {messages:#?}");
    // Sent from the backlog: PID 1's events from before the network was up.
    let first =
        parsed.iter().find(|(_, f, m)| f[5] == "event" && m.contains("event=boot.stage stage=system"));
    assert!(first.is_some(), "the backlog was not sent: {messages:#?}");
    // The kernel's records, from the boot's first one, as `kern` (PRI = the level): the banner
    // is kern.notice.
    let banner = parsed.iter().find(|(_, f, m)| f[3] == "kernel" && m.starts_with("Linux version "));
    assert_eq!(banner.map(|(pri, ..)| *pri), Some(5), "the kernel's banner as kern.notice: {messages:#?}");
    assert!(parsed.iter().all(|(pri, f, _)| f[3] != "kernel" || *pri < 8), "kernel records are kern.*");
    // PID 1's own lines, which it also writes to the kernel's log, are not sent twice.
    assert!(!parsed.iter().any(|(_, f, m)| f[3] == "kernel" && m.contains("event=")), "{messages:#?}");
}

#[test]
fn udp_collector_gets_rfc5424_messages() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let (_dir, out) = common::build_fresh("syslog-udp", &config(&format!("udp://10.0.2.2:{port}")));
    let args = user_net_args(&[]);
    let mut vm = common::boot_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut messages = Vec::new();
    let deadline = Instant::now() + default_timeout();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && vm.try_wait().unwrap().is_none() {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    while let Ok(n) = sock.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    vm.wait_exit(default_timeout()).unwrap();
    check(&messages);
}

#[test]
fn tcp_collector_gets_octet_counted_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut data = Vec::new();
        let _ = stream.read_to_end(&mut data);
        let _ = tx.send(data);
    });
    let (_dir, out) = common::build_fresh("syslog-tcp", &config(&format!("tcp://10.0.2.2:{port}")));
    let args = user_net_args(&[]);
    let mut vm = common::boot_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    vm.wait_exit(default_timeout()).unwrap();
    let data = rx.recv_timeout(Duration::from_secs(10)).expect("the collector got a connection");
    // RFC 6587 octet counting: `LEN SP MSG`, back to back.
    let mut messages = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').expect("a length");
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().expect("a decimal length");
        messages.push(String::from_utf8_lossy(&rest[sp + 1..sp + 1 + len]).to_string());
        rest = &rest[sp + 1 + len..];
    }
    check(&messages);
}
