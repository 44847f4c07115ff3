//! The data disk (`[storage]`): found, formatted on first boot (only when blank), checked,
//! mounted and grown at boot, before any container starts; named volumes and persistent
//! writable layers on it; unmounted cleanly at shutdown.
//!
//! Order at boot: wait for the disk → read its ends (`disk_probe`) → blank: `mke2fs`; ext4:
//! go on; anything else: refuse, untouched → `e2fsck -p` (replays the journal after a power
//! cut, fixes what is safe to fix) → mount → grow online (`EXT4_IOC_RESIZE_FS`) when the disk
//! is larger than the filesystem → `volumes/` and `containers/` made.
//!
//! The formatter and checker are e2fsprogs, packed by `berth build` from the build machine with
//! their libraries and run through the packed dynamic loader (see docs/architecture.md for why
//! not a format container or an ext4 writer of our own).

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::disk_probe::{self, DiskContent, ExtSuperblock, PROBE_BYTES};
use berth_runtime::BindMount;
use berth_schema::config::{DiskSelector, StorageConfig, CONTAINERS_DIR, VOLUMES_DIR};
use berth_schema::plan::{PlannedContainer, TOOLS_DIR};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::pid1::log;

/// The mounted data disk: (device, mount point). Set once at boot.
static MOUNTED: OnceLock<(String, PathBuf)> = OnceLock::new();

/// Where read-only overlays for a volume's first fill are mounted.
const COPY_UP_MOUNT: &str = "/run/berth/copy-up";

nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// The data disk's mount point, once mounted.
pub fn mount_point() -> Option<&'static Path> {
    MOUNTED.get().map(|(_, m)| m.as_path())
}

/// Finds, checks and mounts the data disk, formatting it first if it is blank. `look` runs
/// before each look for the disk (it loads the drivers of disks that appeared). Errors are
/// reported by the caller (`storage.failed`); nothing is written to a disk that holds data.
pub fn setup(
    cfg: &StorageConfig,
    loader: Option<&str>,
    look: &mut dyn FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let name = find_disk(&cfg.disk, cfg.wait, "[storage] disk", look)?;
    let dev = format!("/dev/{name}");
    let size = disk_size(&name)?;
    let content = probe(&dev, size)?;
    let mut formatted = false;
    let sb = match content {
        DiskContent::Ext(sb) => sb,
        DiskContent::Blank if cfg.format => {
            let begun = Instant::now();
            format(&dev, &cfg.label, loader)?;
            formatted = true;
            let sb = match probe(&dev, size)? {
                DiskContent::Ext(sb) => sb,
                other => return Err(format!("{dev}: mke2fs left no ext4 filesystem ({other:?})")),
            };
            log::emit(
                log::event("storage.formatted")
                    .with("device", &dev)
                    .with("label", &sb.label)
                    .with("size", size)
                    .with("took_ms", begun.elapsed().as_millis()),
            );
            sb
        }
        DiskContent::Blank => {
            return Err(format!("{dev} is blank and [storage] format = false: format it (mkfs.ext4) or allow berth to"))
        }
        DiskContent::Other(what) => {
            return Err(format!(
                "{dev} holds {what}; berth formats only blank disks (all zeros at both ends) and mounts only ext4 — it was left untouched. Point [storage] disk at another disk, or wipe this one (blkdiscard, or zeros over its first and last MiB) if its data is not wanted"
            ))
        }
    };
    let was_clean = sb.clean && !sb.needs_recovery;
    check(&dev, loader)?;
    let target = PathBuf::from(&cfg.mount);
    fs::create_dir_all(&target).map_err(|e| format!("create {}: {e}", target.display()))?;
    mount(Some(dev.as_str()), &target, Some("ext4"), MsFlags::empty(), Some("errors=remount-ro"))
        .map_err(|e| format!("mount {dev} (ext4) on {}: {e}", target.display()))?;
    let _ = MOUNTED.set((dev.clone(), target.clone()));
    if cfg.grow {
        grow(&dev, &target, &sb, size);
    }
    for dir in [VOLUMES_DIR, CONTAINERS_DIR] {
        let p = target.join(dir);
        fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
    }
    log::emit(
        log::event("storage.mounted")
            .with("device", &dev)
            .with("mount", &cfg.mount)
            .with("formatted", formatted)
            .with("was_clean", was_clean || formatted)
            .with("took_ms", start.elapsed().as_millis()),
    );
    Ok(())
}

/// Block devices worth looking at: not loop, RAM, floppy, CD-ROM or device-mapper nodes.
fn block_devices() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| !["loop", "ram", "zram", "fd", "sr", "dm-"].iter().any(|p| n.starts_with(p)));
    names.sort();
    names
}

fn sys_attr(name: &str, attr: &str) -> Option<String> {
    fs::read_to_string(format!("/sys/class/block/{name}/{attr}")).ok().map(|s| s.trim().to_string())
}

/// What `[storage] disk` compares for one device.
fn matches(sel: &DiskSelector, name: &str) -> bool {
    match sel {
        DiskSelector::Path(p) => p.strip_prefix("/dev/") == Some(name),
        DiskSelector::Serial(s) => {
            sys_attr(name, "serial").or_else(|| sys_attr(name, "device/serial")).as_deref()
                == Some(s.as_str())
        }
        DiskSelector::PartLabel(l) => sys_attr(name, "uevent")
            .is_some_and(|u| u.lines().any(|line| line.strip_prefix("PARTNAME=") == Some(l.as_str()))),
        DiskSelector::Label(l) => {
            let mut head = vec![0u8; 2048];
            File::open(format!("/dev/{name}"))
                .and_then(|mut f| f.read_exact(&mut head))
                .ok()
                .and_then(|_| disk_probe::ext_superblock(&head))
                .is_some_and(|sb| sb.label == *l)
        }
    }
}

/// The one disk `sel` names, waiting up to `wait` for it to appear; two matching are an error
/// (which one to format would be a guess). `look` runs before each look; `setting` names where
/// the selector was written, for the errors.
pub(crate) fn find_disk(
    sel: &DiskSelector,
    wait: Duration,
    setting: &str,
    look: &mut dyn FnMut() -> bool,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        // (a driver that loaded may bring its disks a little later: the next look sees them)
        look();
        let names = block_devices();
        let found: Vec<&String> = names.iter().filter(|n| matches(sel, n)).collect();
        match found.as_slice() {
            [one] => return Ok(one.to_string()),
            [] => {}
            many => {
                let list: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                return Err(format!(
                    "{setting} = \"{sel}\" matches {}; make it name one disk",
                    list.join(", ")
                ));
            }
        }
        if start.elapsed() >= wait {
            let seen: Vec<String> = names
                .iter()
                .map(|n| match sys_attr(n, "serial").or_else(|| sys_attr(n, "device/serial")) {
                    Some(s) if !s.is_empty() => format!("{n} (serial {s})"),
                    _ => n.clone(),
                })
                .collect();
            return Err(format!(
                "no disk matches {setting} = \"{sel}\" after {} s (disks: {}); attach it or fix the selector",
                wait.as_secs(),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn disk_size(name: &str) -> Result<u64, String> {
    sys_attr(name, "size")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|sectors| sectors * 512)
        .ok_or_else(|| format!("/dev/{name}: cannot read its size"))
}

/// Reads the first and last [`PROBE_BYTES`] and classifies them.
fn probe(dev: &str, size: u64) -> Result<DiskContent, String> {
    let f = File::open(dev).map_err(|e| format!("open {dev}: {e}"))?;
    let n = usize::try_from(size).map_or(PROBE_BYTES, |s| s.min(PROBE_BYTES));
    let mut head = vec![0u8; n];
    let mut tail = vec![0u8; n];
    f.read_exact_at(&mut head, 0).map_err(|e| format!("read {dev}: {e}"))?;
    f.read_exact_at(&mut tail, size - n as u64).map_err(|e| format!("read {dev}: {e}"))?;
    Ok(disk_probe::classify(&head, &tail))
}

/// Runs a packed e2fsprogs tool; returns its exit code and output.
fn run_tool(tool: &str, args: &[&str], loader: Option<&str>) -> Result<(i32, String), String> {
    let program = format!("{TOOLS_DIR}/bin/{tool}");
    let mut cmd = match loader {
        Some(ld) => {
            let mut c = Command::new(ld);
            c.arg("--library-path").arg(format!("{TOOLS_DIR}/lib")).arg(&program);
            c
        }
        None => Command::new(&program),
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", format!("{TOOLS_DIR}/bin"))
        .env("MKE2FS_CONFIG", format!("{TOOLS_DIR}/etc/mke2fs.conf"))
        .env("E2FSCK_CONFIG", "/dev/null")
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only sigprocmask runs, which is async-signal-safe; it
    // unblocks the signals PID 1 keeps blocked for its signalfd, so the tool gets default ones.
    unsafe {
        cmd.pre_exec(|| {
            let empty = nix::sys::signal::SigSet::empty();
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&empty), None)
                .map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().map_err(|e| format!("run {program}: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text.trim().to_string()))
}

/// `mke2fs -t ext4`: inode tables and the journal are zeroed lazily by the kernel, so the
/// first boot does not wait for them.
fn format(dev: &str, label: &str, loader: Option<&str>) -> Result<(), String> {
    log::info(&format!("storage: {dev} is blank; formatting it (ext4, label {label})"));
    let (code, out) = run_tool(
        "mke2fs",
        &["-t", "ext4", "-q", "-L", label, "-E", "lazy_itable_init=1,lazy_journal_init=1", dev],
        loader,
    )?;
    if code != 0 {
        return Err(format!("mke2fs {dev} failed (exit {code}): {out}"));
    }
    Ok(())
}

/// `e2fsck -p`: replays the journal and fixes what is safe; exit 4 and up leaves the disk
/// unmounted.
fn check(dev: &str, loader: Option<&str>) -> Result<(), String> {
    let (code, out) = run_tool("e2fsck", &["-p", dev], loader)?;
    log::emit(log::event("storage.checked").with("device", dev).with("exit", code));
    match code {
        0 => Ok(()),
        1 | 2 => {
            log::warn(&format!("storage: e2fsck fixed {dev}: {out}"));
            Ok(())
        }
        _ => Err(format!(
            "e2fsck found errors on {dev} it could not fix safely (exit {code}): {out}; the disk was not mounted — check it with `e2fsck -f {dev}`"
        )),
    }
}

/// Grows the mounted filesystem to the disk's size, online.
fn grow(dev: &str, target: &Path, sb: &ExtSuperblock, size: u64) {
    let blocks = size / sb.block_size;
    if blocks <= sb.blocks {
        return;
    }
    let result = File::open(target).map_err(|e| e.to_string()).and_then(|dir| {
        // SAFETY: the ioctl reads one u64 (the new block count) from a live local.
        unsafe { ext4_resize_fs(std::os::fd::AsRawFd::as_raw_fd(&dir), &blocks) }
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => log::emit(
            log::event("storage.grown")
                .with("device", dev)
                .with("from", sb.blocks * sb.block_size)
                .with("to", blocks * sb.block_size),
        ),
        Err(e) => log::warn(&format!("storage: growing {dev} to {size} bytes failed: {e}")),
    }
}

/// What a container keeps on the data disk.
#[derive(Debug, Default)]
pub struct OnDisk {
    /// Its named volumes, as binds from the data disk.
    pub volumes: Vec<BindMount>,
    /// The directory holding its persistent `upper/` and `work/`.
    pub writable_layer: Option<PathBuf>,
}

/// The machine paths a container's volumes and persistent layer use, made if missing. A new
/// volume starts with the image's content at its target (Docker's copy-up).
pub fn prepare(c: &PlannedContainer) -> Result<OnDisk, String> {
    if c.volumes.is_empty() && !c.persistent {
        return Ok(OnDisk::default());
    }
    let Some(root) = mount_point() else {
        return Err("it keeps data on the data disk, which is not mounted (see storage.failed)".to_string());
    };
    let mut binds = Vec::new();
    for v in &c.volumes {
        let dir = root.join(VOLUMES_DIR).join(&v.name);
        if !dir.exists() {
            create_volume(&dir, c, &v.target).map_err(|e| format!("volume {}: {e}", v.name))?;
            log::emit(log::event("volume.created").with("name", &v.name).with("container", &c.name));
        }
        binds.push(BindMount { source: dir, target: v.target.clone(), read_only: v.read_only });
    }
    let layer = if c.persistent {
        let dir = root.join(CONTAINERS_DIR).join(&c.name);
        for sub in ["upper", "work"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        Some(dir)
    } else {
        None
    };
    Ok(OnDisk { volumes: binds, writable_layer: layer })
}

/// Makes a volume directory: filled in a temporary sibling, then renamed, so a volume is never
/// half made.
fn create_volume(dir: &Path, c: &PlannedContainer, target: &str) -> Result<(), String> {
    let tmp = dir
        .with_file_name(format!(".{}.new", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let filled = copy_up(c, target, &tmp);
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, dir).map_err(|e| format!("rename {} to {}: {e}", tmp.display(), dir.display()))?;
    if let Some(parent) = dir.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Copies what the image holds at `target` into `dest` (owner, mode, files, links). The
/// image's layers are merged by a read-only overlay (one layer needs none).
fn copy_up(c: &PlannedContainer, target: &str, dest: &Path) -> Result<(), String> {
    let rel = target.trim_start_matches('/');
    let layers: Vec<String> = c.layers.iter().map(|l| l.dir()).collect();
    let (root, mounted) = match layers.as_slice() {
        [] => return Ok(()),
        [one] => (PathBuf::from(one), false),
        many => {
            fs::create_dir_all(COPY_UP_MOUNT).map_err(|e| format!("create {COPY_UP_MOUNT}: {e}"))?;
            let lower: Vec<&str> = many.iter().rev().map(String::as_str).collect();
            let options = format!("lowerdir={}", lower.join(":"));
            mount(
                Some("overlay"),
                COPY_UP_MOUNT,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )
            .map_err(|e| format!("mount the image to copy {target} from: {e}"))?;
            (PathBuf::from(COPY_UP_MOUNT), true)
        }
    };
    let src = root.join(rel);
    let result = match fs::symlink_metadata(&src) {
        Ok(m) if m.is_dir() => copy_tree(&src, dest).and_then(|_| copy_owner_mode(&m, dest)),
        _ => Ok(()), // nothing there in the image: an empty volume owned by root
    };
    if mounted {
        let _ = umount2(COPY_UP_MOUNT, MntFlags::MNT_DETACH);
    }
    result
}

fn copy_owner_mode(m: &fs::Metadata, dest: &Path) -> Result<(), String> {
    std::os::unix::fs::lchown(dest, Some(m.uid()), Some(m.gid()))
        .map_err(|e| format!("chown {}: {e}", dest.display()))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dest, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| format!("chmod {}: {e}", dest.display()))?;
    }
    Ok(())
}

/// Copies directories, regular files and symbolic links with owners and modes; device nodes,
/// fifos and sockets (and whiteouts) are skipped.
fn copy_tree(src: &Path, dest: &Path) -> Result<(), String> {
    let entries = fs::read_dir(src).map_err(|e| format!("read {}: {e}", src.display()))?;
    for entry in entries.flatten() {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let m = fs::symlink_metadata(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| format!("create {}: {e}", to.display()))?;
            copy_tree(&from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(|e| format!("copy {}: {e}", from.display()))?;
        } else if ft.is_symlink() {
            let link = fs::read_link(&from).map_err(|e| format!("{}: {e}", from.display()))?;
            std::os::unix::fs::symlink(&link, &to).map_err(|e| format!("link {}: {e}", to.display()))?;
        } else {
            continue;
        }
        copy_owner_mode(&m, &to)?;
    }
    Ok(())
}

/// At shutdown, once every container is gone: flush and unmount the data disk; if something
/// still holds it, remount it read-only, which also leaves the filesystem clean.
pub fn release() {
    let Some((dev, target)) = MOUNTED.get() else { return };
    nix::unistd::sync();
    let outcome = match umount2(target, MntFlags::empty()) {
        Ok(()) => "unmounted",
        Err(e) => {
            log::warn(&format!("storage: unmount {}: {e}; remounting it read-only", target.display()));
            match mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            ) {
                Ok(()) => "read-only",
                Err(e) => {
                    log::error(&format!("storage: remount {} read-only: {e}", target.display()));
                    "busy"
                }
            }
        }
    };
    if let Ok(f) = OpenOptions::new().read(true).open(dev) {
        let _ = f.sync_all();
    }
    log::emit(log::event("storage.unmounted").with("device", dev).with("result", outcome));
}
