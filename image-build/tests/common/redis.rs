//! The redis appliance of the system partition's test and benchmark: `redis-server` in a
//! Debian minbase root filesystem made by `debootstrap` (cached), imported as an OCI image,
//! published on the bridge.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The appliance's config: redis on the bridge, port 6379 published.
pub const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[[service]]
name = "redis"
image = "oci:images/redis:latest"
net = "bridge"
ports = ["6379:6379"]
command = ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
"#;

/// The Debian mirror and release this machine's apt uses (deb822 or one-line sources).
fn apt_source() -> (String, String) {
    let release = std::fs::read_to_string("/etc/os-release")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_string))
        .expect("VERSION_CODENAME in /etc/os-release");
    let mut texts = Vec::new();
    for file in ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"] {
        texts.extend(std::fs::read_to_string(file).ok());
    }
    let mirror = texts
        .iter()
        .flat_map(|t| t.lines())
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("URIs:")
                .map(|u| u.split_whitespace().next().unwrap_or_default().to_string())
                .or_else(|| {
                    l.strip_prefix("deb ")
                        .and_then(|r| r.split_whitespace().find(|w| w.contains("://")))
                        .map(str::to_string)
                })
        })
        .expect("a Debian mirror in /etc/apt/sources.list(.d)");
    (mirror, release)
}

/// The root filesystem (debootstrap minbase + redis-server), made once per cache directory.
pub fn rootfs() -> PathBuf {
    let cache = berth_image_build::kernel::default_cache_dir().join("debootstrap");
    let (mirror, release) = apt_source();
    let root = cache.join(format!("redis-{release}"));
    if root.join(".complete").exists() {
        return root;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let partial = cache.join(format!("redis-{release}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let o = Command::new("debootstrap")
        .args(["--variant=minbase", "--include=redis-server", &release])
        .arg(&partial)
        .arg(&mirror)
        .output()
        .expect("run debootstrap (apt-get install debootstrap)");
    assert!(o.status.success(), "debootstrap: {}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root).unwrap();
    std::fs::write(root.join(".complete"), b"").unwrap();
    root
}

/// Imports the root filesystem as `dir/images/redis:latest`.
pub fn image(dir: &Path) {
    super::import_image(dir, &rootfs(), "redis", &["--cmd", "redis-server"]);
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Asks redis on 127.0.0.1:`port` for PONG until it answers or `deadline`: whether it did.
pub fn wait_pong(port: u16, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if ping(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    matches!(s.read(&mut answer), Ok(n) if answer[..n].starts_with(b"+PONG"))
}
