//! Networking in a booted machine, with QEMU's user-mode network (DHCP server and gateway at
//! 10.0.2.2, which is this host's 127.0.0.1): DHCP with renewal, a static address, bridge
//! containers with NAT, published ports and names, `none` and `host` containers, and a DHCP
//! server that never answers.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_qemu::{default_timeout, user_net_args, GuestShutdown, Vm};

/// An HTTP server on 127.0.0.1 answering every request with `body`; returns its port and a
/// counter of requests served.
fn http_server(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let reply = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = s.write_all(reply.as_bytes());
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, served)
}

/// A free TCP port on 127.0.0.1 (for a QEMU port forward).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET / from 127.0.0.1:port; the body, or None.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).filter(|b| !b.is_empty())
}

/// Lines a container printed.
fn lines_of(vm: &Vm, name: &str) -> Vec<String> {
    let prefix = format!("{name} | ");
    vm.console_text().lines().filter_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_string)).collect()
}

fn powerdown(vm: &mut Vm) {
    vm.qmp().unwrap().system_powerdown().unwrap();
    vm.wait_exit(default_timeout()).unwrap();
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_tail(30));
}

#[test]
fn dhcp_lease_route_dns_and_renewal() {
    let (port, served) = http_server("host-page-ok");
    let config = format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "edge"

[[service]]
name = "probe"
image = "oci:images/busybox:latest"
net = "host"
depends_on = ["network"]
binds = ["/run/berth/control.sock:/run/berth/control.sock", "/init:/bin/berthctl:ro"]
command = ["sh", "-c", """
ip -4 addr show dev eth0 | grep inet
ip route | grep default
grep nameserver /etc/resolv.conf
echo "page: $(wget -q -O - http://10.0.2.2:{port}/)"
berthctl renew eth0
sleep 2
berthctl net
sleep 2; ip -6 addr show dev eth0 | grep fec0
sleep 100
"""]
"#
    );
    let (_dir, out) = common::build_fresh("dhcp", &config);
    let mut vm = common::boot_with(&out, &user_net_args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let addr = vm.wait_for_event("network.address", |_| true, t).unwrap();
    assert_eq!(addr.get("iface"), Some("eth0"), "{addr:?}");
    assert_eq!(addr.get("address"), Some("10.0.2.15/24"), "{addr:?}");
    assert_eq!(addr.get("gateway"), Some("10.0.2.2"), "{addr:?}");
    assert_eq!(addr.get("dns"), Some("10.0.2.3"), "{addr:?}");
    assert_eq!(addr.get("source"), Some("dhcp"), "{addr:?}");
    let renewed = vm.wait_for_event("network.dhcp.renewed", |_| true, t).unwrap();
    assert_eq!(renewed.get("address"), Some("10.0.2.15/24"), "{renewed:?}");
    vm.wait_for_line(|l| l.contains("probe | eth0") && l.contains("bound"), t).unwrap();
    let probe = lines_of(&vm, "probe");
    let text = probe.join("\n");
    assert!(text.contains("inet 10.0.2.15/24"), "{text}");
    assert!(text.contains("default via 10.0.2.2 dev eth0"), "{text}");
    assert!(text.contains("nameserver 10.0.2.3"), "{text}");
    assert!(text.contains("page: host-page-ok"), "{text}");
    assert!(text.contains("renewing the DHCP lease of eth0"), "{text}");
    // IPv6 autoconfiguration by the kernel from QEMU's router advertisement (prefix fec0::/64).
    vm.wait_for_line(|l| l.contains("probe |     inet6 fec0::"), t).unwrap();
    assert!(served.load(Ordering::SeqCst) >= 1);
    // The service waited for the address.
    common::assert_in_order(
        &common::event_names(&vm),
        &["network.address", "network.ready", "container.started:probe"],
    );
    powerdown(&mut vm);
    assert!(vm.events().iter().any(|e| e.name == "network.dhcp.released"), "{}", vm.console_tail(20));
}

#[test]
fn static_address_without_dhcp() {
    let (port, served) = http_server("static-page-ok");
    let config = format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[network]
dns = ["10.0.2.3"]

[[network.interface]]
match = "eth0"
addresses = ["10.0.2.15/24", "fd00::15/64"]
gateway = "10.0.2.2"
ipv6_autoconf = false

[[service]]
name = "probe"
image = "oci:images/busybox:latest"
net = "host"
depends_on = ["network"]
command = ["sh", "-c", "ip addr show dev eth0 | grep inet; echo \"page: $(wget -q -O - http://10.0.2.2:{port}/)\"; grep nameserver /etc/resolv.conf"]
"#
    );
    let (_dir, out) = common::build_fresh("static", &config);
    let mut vm = common::boot_with(&out, &user_net_args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let addr = vm.wait_for_event("network.address", |_| true, t).unwrap();
    assert_eq!(
        (addr.get("address"), addr.get("source")),
        (Some("10.0.2.15/24,fd00::15/64"), Some("static")),
        "{addr:?}"
    );
    vm.wait_for_event("container.exited", |e| e.get("name") == Some("probe"), t).unwrap();
    let text = lines_of(&vm, "probe").join("\n");
    assert!(text.contains("inet 10.0.2.15/24"), "{text}");
    assert!(text.contains("inet6 fd00::15/64"), "{text}");
    assert!(!text.contains("inet6 fec0::"), "autoconfiguration is off: {text}");
    assert!(text.contains("page: static-page-ok"), "{text}");
    assert!(text.contains("nameserver 10.0.2.3"), "{text}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert!(!vm.events().iter().any(|e| e.name.starts_with("network.dhcp")), "no DHCP expected");
    powerdown(&mut vm);
}

#[test]
fn kernel_command_line_ip_overrides_the_config() {
    let config = r#"
[kernel]
cmdline = "console=ttyS0 quiet ip=10.0.2.16::10.0.2.2:255.255.255.0:from-cmdline:eth0:none nameserver=10.0.2.3"

[[network.interface]]
match = "eth0"
dhcp = true

[[service]]
name = "probe"
image = "oci:images/busybox:latest"
net = "host"
depends_on = ["network"]
command = ["sh", "-c", "ip -4 addr show dev eth0 | grep inet; grep 127.0.1.1 /etc/hosts; grep nameserver /etc/resolv.conf; ip route | grep default"]
"#;
    let (_dir, out) = common::build_fresh("cmdline-ip", config);
    let mut vm = common::boot_with(&out, &user_net_args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let addr = vm.wait_for_event("network.address", |_| true, t).unwrap();
    assert_eq!((addr.get("address"), addr.get("source")), (Some("10.0.2.16/24"), Some("static")), "{addr:?}");
    vm.wait_for_event("container.exited", |e| e.get("name") == Some("probe"), t).unwrap();
    let text = lines_of(&vm, "probe").join("\n");
    assert!(text.contains("inet 10.0.2.16/24"), "{text}");
    assert!(text.contains("127.0.1.1\tfrom-cmdline"), "the machine's hostname: {text}");
    assert!(text.contains("nameserver 10.0.2.3"), "{text}");
    assert!(text.contains("default via 10.0.2.2"), "{text}");
    assert!(!vm.events().iter().any(|e| e.name.starts_with("network.dhcp")), "ip= replaced DHCP");
    powerdown(&mut vm);
}

#[test]
fn bridge_nat_published_port_names_and_restart() {
    let (port, served) = http_server("through-nat-ok");
    let fwd = free_port();
    let config = format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[[service]]
name = "web"
image = "oci:images/busybox:latest"
net = "bridge"
ports = ["8080:80"]
restart = "on-failure"
command = ["sh", "-c", "mkdir -p /www; echo served-by-web > /www/index.html; ip -4 addr show dev eth0 | grep inet; httpd -f -p 80 -h /www & sleep 25; exit 1"]

[[service]]
name = "fetch"
image = "oci:images/busybox:latest"
net = "bridge"
depends_on = ["network", "web"]
command = ["sh", "-c", "sleep 1; echo \"nat: $(wget -q -O - http://10.0.2.2:{port}/)\"; echo \"by-name: $(wget -q -O - http://web/)\"; ip -4 route | grep default"]

[[service]]
name = "lonely"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo links: $(ip -o link | cut -d: -f2 | tr -d ' ' | tr '\\n' ' ')"]

[[service]]
name = "hostnet"
image = "oci:images/busybox:latest"
net = "host"
depends_on = ["network"]
command = ["sh", "-c", "echo links: $(ip -o link | cut -d: -f2 | tr -d ' ' | tr '\\n' ' ')"]
"#
    );
    let (_dir, out) = common::build_fresh("bridge", &config);
    let args = user_net_args(&[(fwd, 8080)]);
    let mut vm = common::boot_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let attached = vm.wait_for_event("network.attached", |e| e.get("name") == Some("web"), t).unwrap();
    assert_eq!(attached.get("address"), Some("172.30.0.2"), "{attached:?}");
    assert_eq!(attached.get("ports"), Some("8080:80/tcp"), "{attached:?}");

    // From the host, through QEMU's forward to the guest's 8080, DNAT to web's port 80.
    let get_page = |what: &str| {
        let deadline = Instant::now() + t;
        loop {
            if let Some(body) = http_get(fwd) {
                return body;
            }
            assert!(Instant::now() < deadline, "no answer on the published port ({what})");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert_eq!(get_page("first start").trim(), "served-by-web");

    vm.wait_for_event("container.exited", |e| e.get("name") == Some("fetch"), t).unwrap();
    let fetch = lines_of(&vm, "fetch").join("\n");
    assert!(fetch.contains("nat: through-nat-ok"), "{fetch}\n{}", vm.console_tail(30));
    assert!(fetch.contains("by-name: served-by-web"), "{fetch}");
    assert!(fetch.contains("default via 172.30.0.1 dev eth0"), "{fetch}");
    assert!(served.load(Ordering::SeqCst) >= 1);
    vm.wait_for_event("container.exited", |e| e.get("name") == Some("lonely"), t).unwrap();
    vm.wait_for_event("container.exited", |e| e.get("name") == Some("hostnet"), t).unwrap();
    let lonely = lines_of(&vm, "lonely").join("\n");
    assert_eq!(lonely.trim(), "links: lo", "{lonely}");
    let hostnet = lines_of(&vm, "hostnet").join("\n");
    assert!(hostnet.contains("eth0") && hostnet.contains("berth0"), "{hostnet}");

    // web exits after 25 s and is restarted: its veth, lease and port go, then come back.
    vm.wait_for_event("network.detached", |e| e.get("name") == Some("web"), Duration::from_secs(90)).unwrap();
    let attaches = || {
        vm.events().iter().filter(|e| e.name == "network.attached" && e.get("name") == Some("web")).count()
    };
    let deadline = Instant::now() + t;
    while attaches() < 2 {
        assert!(Instant::now() < deadline, "web was not attached again: {}", vm.console_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get_page("after the restart").trim(), "served-by-web");
    powerdown(&mut vm);
}

#[test]
fn silent_dhcp_server_retries_and_others_start() {
    // A NIC whose other end is a UDP socket nobody reads: DHCP is never answered.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let config = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[[service]]
name = "independent"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo independent running; sleep 100"]

[[service]]
name = "needs"
image = "oci:images/busybox:latest"
depends_on = ["network"]
command = ["sh", "-c", "echo needs started"]
"#;
    let (_dir, out) = common::build_fresh("silent", config);
    let netdev = format!("socket,id=net0,udp=127.0.0.1:{sink_port},localaddr=127.0.0.1:0");
    let mut vm = common::boot_with(&out, &["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
    let t = default_timeout();
    vm.wait_for_line(|l| l.contains("independent | independent running"), t).unwrap();
    let first = vm.wait_for_event("network.dhcp.retry", |_| true, t).unwrap();
    let second = vm.wait_for_event("network.dhcp.retry", |e| e.get("attempt") == Some("3"), t).unwrap();
    let delay = |e: &berth_qemu::Event| e.get("delay_ms").and_then(|d| d.parse::<u64>().ok()).unwrap();
    assert!(delay(&second) > delay(&first), "{first:?} {second:?}");
    assert!(!vm.console_text().contains("needs started"));
    assert!(!vm.events().iter().any(|e| e.name == "network.ready"));
    powerdown(&mut vm);
    drop(sink);
}

#[test]
fn berth_run_publishes_a_port_for_the_web_example() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/web.toml")).unwrap();
    let out = common::build(dir.path(), "web", &example);
    let port = free_port();
    let mut child = std::process::Command::new(common::berth())
        .args(["run", out.to_str().unwrap(), "-p", &format!("{port}:8080"), "--timeout", "120"])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + default_timeout();
    let body = loop {
        if let Some(b) = http_get(port) {
            break b;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the web example did not answer on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.starts_with("hello from web at 172.30.0.2/16"), "{body}");
}

#[test]
fn a_hot_plugged_nic_is_configured_at_once() {
    let config = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[[service]]
name = "probe"
image = "oci:images/busybox:latest"
net = "host"
depends_on = ["network"]
command = ["sh", "-c", "ip -4 addr show dev eth0 | grep inet; sleep 100"]
"#;
    let (_dir, out) = common::build_fresh("hotplug", config);
    // The user-mode network exists, the NIC does not yet.
    let mut vm = common::boot_with(&out, &["-netdev", "user,id=net0"]);
    let t = default_timeout();
    vm.wait_for_event("network.waiting", |_| true, t).unwrap();
    vm.wait_for_event("power_button.ready", |_| true, t).unwrap();
    let plugged = Instant::now();
    vm.qmp()
        .unwrap()
        .execute(
            "device_add",
            serde_json::json!({"driver": "virtio-net-pci", "netdev": "net0", "id": "nic1"}),
        )
        .unwrap();
    let addr = vm.wait_for_event("network.address", |_| true, t).unwrap();
    assert_eq!(addr.get("address"), Some("10.0.2.15/24"), "{addr:?}");
    // Well before the 30 s safety-net rescan: the kernel's link notification woke PID 1.
    assert!(plugged.elapsed() < Duration::from_secs(20), "took {:?}", plugged.elapsed());
    vm.wait_for_line(|l| l.contains("probe |     inet 10.0.2.15/24"), t).unwrap();
    powerdown(&mut vm);
}
