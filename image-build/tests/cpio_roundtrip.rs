//! The cpio writer's archives round-trip through GNU `cpio -i` and are reproducible.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use berth_image_build::cpio::{CpioError, CpioWriter};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tree with every entry kind; `mtime` for all entries.
fn write_tree(mtime: u32) -> Vec<u8> {
    let mut w = CpioWriter::new(Vec::new(), mtime);
    w.dir("etc", 0o755, 0, 0).unwrap();
    w.file("etc/hostname", 0o644, 0, 0, 8, &b"edge-01\n"[..]).unwrap();
    // Parents `usr` and `usr/bin` are emitted by the writer.
    w.expect_hardlink_target("usr/bin/tool").unwrap();
    let tool = b"#!/bin/sh\necho tool\n";
    w.file("usr/bin/tool", 0o755, 0, 0, tool.len() as u64, &tool[..]).unwrap();
    w.hardlink("usr/bin/tool-alias", "usr/bin/tool").unwrap();
    w.hardlink("usr/sbin/tool2", "usr/bin/tool").unwrap();
    w.symlink("bin", "usr/bin", 0, 0).unwrap();
    w.file("usr/bin/su", 0o4755, 0, 0, 3, &b"su\n"[..]).unwrap();
    w.file("home/app/data", 0o600, 1000, 1001, 5, &b"hello"[..]).unwrap();
    w.dir("home/app", 0o700, 1000, 1001).unwrap();
    w.char_dev("dev/console", 0o600, 0, 5, 5, 1).unwrap();
    w.char_dev("dev/whiteout", 0o000, 0, 0, 0, 0).unwrap();
    w.block_dev("dev/vda", 0o660, 0, 6, 254, 0).unwrap();
    w.fifo("run/fifo", 0o644, 0, 0).unwrap();
    w.dir("tmp", 0o1777, 0, 0).unwrap();
    w.file("empty", 0o644, 0, 0, 0, std::io::empty()).unwrap();
    // The same path twice: the later entry wins.
    w.file("etc/motd", 0o644, 0, 0, 3, &b"old"[..]).unwrap();
    w.file("etc/motd", 0o640, 0, 0, 9, &b"new motd\n"[..]).unwrap();
    w.finish().unwrap()
}

fn extract(archive: &[u8], dest: &Path) {
    let mut child = Command::new("cpio")
        .args(["-idmu", "--no-absolute-filenames", "--quiet"])
        .current_dir(dest)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cpio");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "cpio -i failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn round_trips_through_gnu_cpio() {
    let archive = write_tree(1_700_000_000);
    assert_eq!(archive.len() % 512, 0, "padded to 512-byte blocks");
    assert_eq!(&archive[..6], b"070701");

    // The listing shows the implicit parents before their children, once.
    let listing = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&archive)?;
            c.wait_with_output()
        })
        .unwrap();
    let names: Vec<String> = String::from_utf8(listing.stdout).unwrap().lines().map(str::to_string).collect();
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} in {names:?}"));
    assert!(pos("usr") < pos("usr/bin"));
    assert!(pos("usr/bin") < pos("usr/bin/tool"));
    assert!(pos("usr/sbin") < pos("usr/sbin/tool2"));
    assert!(pos("home/app") < pos("home/app/data"));
    assert_eq!(names.iter().filter(|n| *n == "usr").count(), 1);

    assert!(is_root(), "the extraction checks need root (owners and device nodes): run the tests as root");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    extract(&archive, root);

    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(fs::read(root.join("etc/hostname")).unwrap(), b"edge-01\n");
    assert_eq!(meta("etc/hostname").mtime(), 1_700_000_000);
    assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"#!/bin/sh\necho tool\n");

    // Hard links: one inode, three names, data intact.
    let tool = meta("usr/bin/tool");
    for alias in ["usr/bin/tool-alias", "usr/sbin/tool2"] {
        let m = meta(alias);
        assert_eq!(m.ino(), tool.ino(), "{alias} is a hard link");
        assert_eq!(fs::read(root.join(alias)).unwrap(), b"#!/bin/sh\necho tool\n");
    }
    assert_eq!(tool.nlink(), 3);
    assert_eq!(tool.mode() & 0o7777, 0o755);

    // Symlink.
    assert!(meta("bin").file_type().is_symlink());
    assert_eq!(fs::read_link(root.join("bin")).unwrap().to_str(), Some("usr/bin"));

    // Setuid bit, owners.
    assert_eq!(meta("usr/bin/su").mode() & 0o7777, 0o4755);
    let data = meta("home/app/data");
    assert_eq!((data.uid(), data.gid()), (1000, 1001));
    assert_eq!(data.permissions().mode() & 0o7777, 0o600);
    let home_app = meta("home/app");
    assert!(home_app.is_dir());
    assert_eq!((home_app.uid(), home_app.gid()), (1000, 1001));
    assert_eq!(home_app.mode() & 0o7777, 0o700);
    let implicit = meta("usr/sbin");
    assert_eq!(implicit.mode() & 0o7777, 0o755);
    assert_eq!((implicit.uid(), implicit.gid()), (0, 0));
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);

    // Device nodes and a fifo.
    let console = meta("dev/console");
    assert!(console.file_type().is_char_device());
    assert_eq!((libc::major(console.rdev()), libc::minor(console.rdev())), (5, 1));
    assert_eq!(console.gid(), 5);
    let whiteout = meta("dev/whiteout");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    let vda = meta("dev/vda");
    assert!(vda.file_type().is_block_device());
    assert_eq!((libc::major(vda.rdev()), libc::minor(vda.rdev())), (254, 0));
    assert!(meta("run/fifo").file_type().is_fifo());

    assert_eq!(meta("empty").len(), 0);
    assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"new motd\n");
    assert_eq!(meta("etc/motd").mode() & 0o7777, 0o640);
}

#[test]
fn writing_twice_gives_identical_bytes() {
    assert_eq!(write_tree(0), write_tree(0));
    assert_eq!(write_tree(42), write_tree(42));
    assert_ne!(write_tree(0), write_tree(42));
}

#[test]
fn header_layout_matches_newc() {
    let mut w = CpioWriter::new(Vec::new(), 0x1234);
    w.file("a", 0o644, 1, 2, 3, &b"xyz"[..]).unwrap();
    let out = w.finish().unwrap();
    let header = std::str::from_utf8(&out[..110]).unwrap();
    let field = |i: usize| u32::from_str_radix(&header[6 + 8 * i..14 + 8 * i], 16).unwrap();
    assert_eq!(&header[..6], "070701");
    assert_eq!(field(0), 1, "first inode number");
    assert_eq!(field(1), 0o100644);
    assert_eq!((field(2), field(3)), (1, 2));
    assert_eq!(field(4), 1, "nlink");
    assert_eq!(field(5), 0x1234, "mtime");
    assert_eq!(field(6), 3, "filesize");
    assert_eq!(field(11), 2, "namesize includes the NUL");
    // Name "a\0" ends at 112, already 4-aligned; data follows, padded to 4.
    assert_eq!(&out[110..112], b"a\0");
    assert_eq!(&out[112..116], b"xyz\0");
    assert_eq!(&out[116..122], b"070701");
}

#[test]
fn hardlink_to_an_undeclared_file_is_refused() {
    let mut w = CpioWriter::new(Vec::new(), 0);
    w.file("a", 0o644, 0, 0, 1, &b"x"[..]).unwrap();
    let err = w.hardlink("b", "a").unwrap_err();
    assert!(matches!(err, CpioError::BadLinkTarget { .. }), "{err}");
    assert!(err.to_string().contains("expect_hardlink_target"), "{err}");
}

#[test]
fn invalid_paths_and_short_reads_are_errors() {
    let mut w = CpioWriter::new(Vec::new(), 0);
    for bad in ["/abs", "", "a/../b", "a//b", "./a", "TRAILER!!!"] {
        assert!(matches!(w.dir(bad, 0o755, 0, 0), Err(CpioError::InvalidPath { .. })), "{bad:?} accepted");
    }
    let err = w.file("short", 0o644, 0, 0, 10, &b"abc"[..]).unwrap_err();
    assert!(matches!(err, CpioError::ShortRead { actual: 3, .. }), "{err}");
}
