//! The kernel's own initramfs unpacker (not just GNU cpio) reads the writer's archives as
//! documented: implicit parents, hard links, a path written twice, device nodes, owners.
//!
//! Boots the cached Debian cloud kernel under QEMU (TCG) with a busybox `/init` that prints what
//! it finds. Skipped when qemu-system-x86_64 or a static busybox is missing.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use berth_image_build::cpio::CpioWriter;
use berth_image_build::kernel::{debian_cloud_kernel, default_cache_dir};

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
echo "BT ino $(stat -c %i /usr/bin/tool) $(stat -c %i /usr/sbin/tool2) $(stat -c %i /usr/bin/tool-alias)"
echo "BT nlink $(stat -c %h /usr/bin/tool)"
echo "BT data $(cat /usr/sbin/tool2)"
echo "BT motd $(cat /etc/motd) $(stat -c %a /etc/motd)"
echo "BT vda $(stat -c '%F %t:%T' /dev/vda)"
echo "BT owner $(stat -c '%a %u %g' /home/app/data) $(stat -c '%a %u %g' /home/app)"
echo "BT implicit $(stat -c '%a %u %g' /deep/a/b)"
echo "BT link $(readlink /sbin)"
echo "BT end"
poweroff -f
"#;

fn tool_available(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

fn initramfs(busybox: &Path) -> Vec<u8> {
    let bb = std::fs::read(busybox).unwrap();
    let mut w = CpioWriter::new(Vec::new(), 0);
    w.char_dev("dev/console", 0o600, 0, 0, 5, 1).unwrap();
    w.block_dev("dev/vda", 0o660, 0, 6, 254, 16).unwrap();
    w.file("bin/busybox", 0o755, 0, 0, bb.len() as u64, &bb[..]).unwrap();
    w.symlink("sbin", "bin", 0, 0).unwrap();
    w.file("init", 0o755, 0, 0, INIT.len() as u64, INIT.as_bytes()).unwrap();
    w.expect_hardlink_target("usr/bin/tool").unwrap();
    w.file("usr/bin/tool", 0o750, 0, 0, 5, &b"tool!"[..]).unwrap();
    w.hardlink("usr/sbin/tool2", "usr/bin/tool").unwrap();
    w.hardlink("usr/bin/tool-alias", "usr/bin/tool").unwrap();
    w.file("etc/motd", 0o644, 0, 0, 3, &b"old"[..]).unwrap();
    w.file("etc/motd", 0o600, 0, 0, 3, &b"new"[..]).unwrap();
    w.file("home/app/data", 0o640, 1000, 1001, 1, &b"x"[..]).unwrap();
    w.dir("home/app", 0o700, 1000, 1001).unwrap();
    w.dir("deep/a/b", 0o711, 0, 0).unwrap();
    w.finish().unwrap()
}

#[test]
fn kernel_unpacks_the_archive() {
    let (Some(qemu), Some(busybox)) = (tool_available("qemu-system-x86_64"), tool_available("busybox"))
    else {
        panic!("needs qemu-system-x86_64 and a static busybox: scripts/setup.sh installs them");
    };
    let kernel = debian_cloud_kernel(&default_cache_dir(), &|l| eprintln!("kernel: {l}"))
        .expect("Debian cloud kernel");
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    std::fs::File::create(&initrd).unwrap().write_all(&initramfs(&busybox)).unwrap();

    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-m", "256", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                let end = line == "BT end";
                lines.push(line);
                if end {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let get = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("BT {key} ")))
            .unwrap_or_else(|| panic!("no `BT {key}` line in console output:\n{}", lines.join("\n")))
            .to_string()
    };

    let inos: Vec<String> = get("ino").split(' ').map(str::to_string).collect();
    assert_eq!(inos.len(), 3);
    assert!(inos[0] == inos[1] && inos[1] == inos[2], "hard links: {inos:?}");
    assert_eq!(get("nlink"), "3");
    assert_eq!(get("data"), "tool!");
    assert_eq!(get("motd"), "new 600", "the later entry of a path wins");
    assert_eq!(get("vda"), "block special file fe:10");
    assert_eq!(get("owner"), "640 1000 1001 700 1000 1001");
    assert_eq!(get("implicit"), "711 0 0");
    assert_eq!(get("link"), "bin");
}
