//! Networking figures under TCG (issue 5): time from PID 1's start to "address acquired", and
//! from QEMU's start to the first answer on a published port, with DHCP beside the same guest
//! with a static address.
//!
//!     cargo bench -p berth-image-build --bench network        # BENCH_RUNS=N (default 5)
//!
//! "PID 1 start" is the `boot.stage stage=init` event and "address acquired" the
//! `network.address` event (both on the guest's boot clock). The published-port time is taken
//! on the host: QEMU started → the first HTTP answer through `hostfwd` and the DNAT rule.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use berth_qemu::{user_net_args, Vm, VmConfig};

fn config(interface: &str) -> String {
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"
{interface}
[[service]]
name = "web"
image = "oci:images/busybox:latest"
net = "bridge"
ports = ["8080:80"]
command = ["sh", "-c", "mkdir -p /www; echo ok > /www/index.html; httpd -f -p 80 -h /www"]
"#
    )
}

const STATIC: &str = r#"
[[network.interface]]
match = "eth0"
addresses = ["10.0.2.15/24"]
gateway = "10.0.2.2"
"#;

fn answered(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.ends_with("ok\n")
}

/// One boot: (PID 1 start → address, s; QEMU start → published-port answer, s).
fn measure(out: &std::path::Path) -> (f64, f64) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    let mut cfg = VmConfig::new(out.join("vmlinuz"), out.join("initrd.img"), cmdline.trim());
    cfg.extra_args = user_net_args(&[(port, 8080)]);
    let start = Instant::now();
    let vm = Vm::start(cfg).unwrap();
    let deadline = start + Duration::from_secs(120);
    while !answered(port) {
        assert!(Instant::now() < deadline, "no answer: {}", vm.console_tail(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = start.elapsed().as_secs_f64();
    let t = Duration::from_secs(60);
    let addr = vm.wait_for_event("network.address", |_| true, t).unwrap();
    let init =
        vm.events().iter().find(|e| e.name == "boot.stage" && e.get("stage") == Some("init")).unwrap().ms;
    ((addr.ms - init) as f64 / 1000.0, answer)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let dhcp = common::build(dir.path(), "dhcp", &config(""));
    let fixed = common::build(dir.path(), "static", &config(STATIC));
    let (mut d_addr, mut d_port, mut s_addr, mut s_port) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Interleaved, so a busy moment on the host hits both alike.
        let (a, p) = measure(&dhcp);
        let (sa, sp) = measure(&fixed);
        println!("run {}: DHCP address {a:.3} s, port answer {p:.3} s | static address {sa:.3} s, port answer {sp:.3} s", i + 1);
        d_addr.push(a);
        d_port.push(p);
        s_addr.push(sa);
        s_port.push(sp);
    }
    println!("median of {runs} runs (TCG):");
    println!(
        "  PID 1 start → address acquired:      DHCP {:.3} s   static {:.3} s",
        common::median(&mut d_addr),
        common::median(&mut s_addr)
    );
    println!(
        "  QEMU start → published-port answer:  DHCP {:.3} s   static {:.3} s",
        common::median(&mut d_port),
        common::median(&mut s_port)
    );
}
