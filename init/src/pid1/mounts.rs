//! The machine's filesystems: leaving the initramfs, then the kernel filesystems.

use std::fs;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot};

/// `RAMFS_MAGIC` from linux/magic.h (libc does not export it).
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether the root is an in-memory filesystem (the initramfs is ramfs or tmpfs).
fn root_is_in_memory() -> bool {
    nix::sys::statfs::statfs("/")
        .map(|s| {
            let magic = s.filesystem_type().0;
            magic == RAMFS_MAGIC || magic == libc::TMPFS_MAGIC
        })
        .unwrap_or(false)
}

/// Moves PID 1 off the initramfs root.
///
/// `pivot_root(2)` refuses to move away from `rootfs` (it has no parent mount), and containers
/// need `pivot_root`. Copying the initramfs into a tmpfs would double its memory for a moment
/// and cost boot time, so instead: bind-mount `/` (non-recursively) on `/.berth-root`, move that
/// mount onto `/` and `chroot` into it. The root is then an ordinary mount stacked on `rootfs`,
/// with the same files, and `pivot_root` works below it. Must run before anything else is
/// mounted (the bind is not recursive).
pub fn leave_initramfs() -> Result<bool, String> {
    // PID 1 on an in-memory root runs from the initramfs (a tmpfs root mounted by something
    // else merely gets a harmless extra bind mount).
    if !root_is_in_memory() {
        return Ok(false);
    }
    let dir = "/.berth-root";
    let _ = fs::create_dir(dir);
    mount(Some("/"), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind / on {dir}: {e}"))?;
    chdir(dir).map_err(|e| format!("chdir {dir}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move {dir} onto /: {e}"))?;
    chroot(".").map_err(|e| format!("chroot: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let _ = fs::remove_dir(dir);
    Ok(true)
}

struct Fs {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

/// Mounts proc, sysfs, devtmpfs, devpts, /dev/shm, /run, /tmp and cgroup2. Returns the
/// failures (each one a line naming the mount); later steps cope with what is missing.
pub fn mount_kernel_filesystems() -> Vec<String> {
    let nsne = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table = [
        Fs { source: "proc", target: "/proc", fstype: "proc", flags: nsne, data: None },
        Fs { source: "sysfs", target: "/sys", fstype: "sysfs", flags: nsne, data: None },
        Fs {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Fs {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("gid=5,mode=0620,ptmxmode=0666"),
        },
        Fs {
            source: "shm",
            target: "/dev/shm",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777"),
        },
        Fs {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=0755"),
        },
        Fs {
            source: "tmpfs",
            target: "/tmp",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777"),
        },
        Fs {
            source: "cgroup2",
            target: "/sys/fs/cgroup",
            fstype: "cgroup2",
            flags: nsne,
            data: Some("nsdelegate"),
        },
    ];
    let mut failures = Vec::new();
    for fs in table {
        let _ = fs::create_dir_all(fs.target);
        if let Err(e) = mount(Some(fs.source), fs.target, Some(fs.fstype), fs.flags, fs.data) {
            // devtmpfs may already be there (CONFIG_DEVTMPFS_MOUNT) — that is fine.
            if !(e == nix::errno::Errno::EBUSY && fs.target == "/dev") {
                failures.push(format!("mount {} on {}: {}", fs.fstype, fs.target, e));
            }
        }
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    failures
}

/// Unmounts everything but `/`, innermost first; what stays busy is detached.
pub fn unmount_all() {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p != "/")
        .map(|p| p.replace("\\040", " "))
        .collect();
    points.reverse();
    for p in points {
        if umount2(Path::new(&p), MntFlags::empty()).is_err() {
            let _ = umount2(Path::new(&p), MntFlags::MNT_DETACH);
        }
    }
}
