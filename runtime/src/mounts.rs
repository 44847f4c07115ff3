//! Mounts as data: one mount of a container, `mount(8)`-style option parsing, berth's fixed set of
//! kernel mounts, and the default devices every container gets.

use libc::c_ulong;

/// One mount in the container, done in list order after the root is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path in the container (no `..`).
    pub destination: String,
    /// Filesystem type (`proc`, `tmpfs`, `cgroup2`, …); ignored for bind mounts.
    pub fstype: String,
    /// Source: a path in the caller's mount namespace for binds, a label otherwise.
    pub source: String,
    /// `MS_*` flags. With `MS_BIND` the bind is made first and the other flags are applied by a
    /// read-only/nosuid/… remount, as `mount(8)` does.
    pub flags: c_ulong,
    /// Propagation to set afterwards: 0, or `MS_PRIVATE`/`MS_SHARED`/`MS_SLAVE`/`MS_UNBINDABLE`,
    /// possibly with `MS_REC`.
    pub propagation: c_ulong,
    /// Filesystem-specific options (`size=64m,mode=755`), comma-separated; empty for none.
    pub data: String,
}

impl Mount {
    /// A mount from `mount(8)`-style options: `ro`, `nosuid`, `bind`, `rbind`, `rprivate`,
    /// `size=…` and so on. A `bind` type or a `bind`/`rbind` option makes a bind mount; the OCI
    /// `cgroup` type becomes `cgroup2` (berth only knows the unified hierarchy).
    pub fn parse(destination: &str, fstype: &str, source: &str, options: &[String]) -> Result<Mount, String> {
        let parsed = parse_options(options)?;
        let mut flags = parsed.flags;
        if fstype == "bind" && flags & libc::MS_BIND == 0 {
            flags |= libc::MS_BIND;
        }
        let fstype = match fstype {
            "cgroup" => "cgroup2",
            other => other,
        };
        Ok(Mount {
            destination: destination.to_string(),
            fstype: fstype.to_string(),
            source: source.to_string(),
            flags,
            propagation: parsed.propagation,
            data: parsed.data,
        })
    }

    /// Whether this is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }
}

/// Options split into flags, propagation and filesystem data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags.
    pub flags: c_ulong,
    /// Propagation flags (see [`Mount::propagation`]).
    pub propagation: c_ulong,
    /// The remaining options, comma-separated.
    pub data: String,
}

/// Options that set (`true`) or clear (`false`) a flag.
const FLAG_OPTIONS: &[(&str, bool, c_ulong)] = &[
    ("defaults", false, 0),
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("nosuid", true, libc::MS_NOSUID),
    ("suid", false, libc::MS_NOSUID),
    ("nodev", true, libc::MS_NODEV),
    ("dev", false, libc::MS_NODEV),
    ("noexec", true, libc::MS_NOEXEC),
    ("exec", false, libc::MS_NOEXEC),
    ("sync", true, libc::MS_SYNCHRONOUS),
    ("async", false, libc::MS_SYNCHRONOUS),
    ("dirsync", true, libc::MS_DIRSYNC),
    ("remount", true, libc::MS_REMOUNT),
    ("mand", true, libc::MS_MANDLOCK),
    ("nomand", false, libc::MS_MANDLOCK),
    ("noatime", true, libc::MS_NOATIME),
    ("atime", false, libc::MS_NOATIME),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("diratime", false, libc::MS_NODIRATIME),
    ("relatime", true, libc::MS_RELATIME),
    ("norelatime", false, libc::MS_RELATIME),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("nostrictatime", false, libc::MS_STRICTATIME),
    ("silent", true, libc::MS_SILENT),
    ("loud", false, libc::MS_SILENT),
    ("bind", true, libc::MS_BIND),
    ("rbind", true, libc::MS_BIND | libc::MS_REC),
    ("iversion", true, libc::MS_I_VERSION),
    ("noiversion", false, libc::MS_I_VERSION),
    ("lazytime", true, libc::MS_LAZYTIME),
    ("nolazytime", false, libc::MS_LAZYTIME),
];

/// Propagation options.
const PROPAGATION_OPTIONS: &[(&str, c_ulong)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

/// Parses a propagation name (`rprivate`, `shared`, …) as used by `rootfsPropagation`.
pub fn parse_propagation(name: &str) -> Option<c_ulong> {
    PROPAGATION_OPTIONS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Splits `mount(8)` options into flags, propagation and data. Options berth cannot honour
/// (`idmap`, `ridmap`, `tmpcopyup`) are errors; unknown ones are passed to the filesystem as data.
pub fn parse_options(options: &[String]) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_str();
        if let Some((_, set, flag)) = FLAG_OPTIONS.iter().find(|(n, _, _)| *n == opt) {
            if *set {
                out.flags |= flag;
            } else {
                out.flags &= !flag;
            }
        } else if let Some(p) = parse_propagation(opt) {
            out.propagation = p;
        } else if matches!(opt, "idmap" | "ridmap") {
            return Err(format!("mount option `{opt}` (id-mapped mounts) is not supported"));
        } else if opt == "tmpcopyup" {
            return Err(
                "mount option `tmpcopyup` (copy the image's files into the tmpfs) is not supported".into()
            );
        } else if !opt.is_empty() {
            data.push(opt);
        }
    }
    out.data = data.join(",");
    Ok(out)
}

/// berth's fixed set of kernel mounts: `/proc`, a tmpfs `/dev` with `pts` (a new devpts
/// instance), `shm` and `mqueue`, read-only `/sys` and, when the container has its own cgroup,
/// the cgroup2 hierarchy read-only at `/sys/fs/cgroup` (showing the container's group as root).
pub fn berth_mounts(cgroup: bool) -> Vec<Mount> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let m = |destination: &str, fstype: &str, source: &str, flags: c_ulong, data: &str| Mount {
        destination: destination.into(),
        fstype: fstype.into(),
        source: source.into(),
        flags,
        propagation: 0,
        data: data.into(),
    };
    let mut list = vec![
        m("/proc", "proc", "proc", nosuid_nodev_noexec, ""),
        m("/dev", "tmpfs", "tmpfs", libc::MS_NOSUID | libc::MS_STRICTATIME, "mode=755,size=65536k"),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        m("/dev/shm", "tmpfs", "shm", nosuid_nodev_noexec, "mode=1777,size=65536k"),
        m("/dev/mqueue", "mqueue", "mqueue", nosuid_nodev_noexec, ""),
        m("/sys", "sysfs", "sysfs", nosuid_nodev_noexec | libc::MS_RDONLY, ""),
    ];
    if cgroup {
        list.push(m("/sys/fs/cgroup", "cgroup2", "cgroup2", nosuid_nodev_noexec | libc::MS_RDONLY, ""));
    }
    list
}

/// The character devices every container gets in `/dev` (name, major, minor), as the OCI
/// runtime spec requires.
pub const DEFAULT_DEVICES: &[(&str, u32, u32)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// The symlinks every container gets in `/dev` (target, link name).
pub const DEFAULT_SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags_propagation_and_data() {
        let m =
            Mount::parse("/x", "tmpfs", "tmpfs", &opts(&["nosuid", "ro", "size=1m", "mode=755", "rslave"]))
                .unwrap();
        assert_eq!(m.flags, libc::MS_NOSUID | libc::MS_RDONLY);
        assert_eq!(m.propagation, libc::MS_SLAVE | libc::MS_REC);
        assert_eq!(m.data, "size=1m,mode=755");
        let b = Mount::parse("/y", "none", "/src", &opts(&["rbind", "ro", "rw"])).unwrap();
        assert!(b.is_bind());
        assert_eq!(b.flags, libc::MS_BIND | libc::MS_REC);
        assert!(Mount::parse("/y", "bind", "/src", &[]).unwrap().is_bind());
        assert_eq!(Mount::parse("/c", "cgroup", "cgroup", &[]).unwrap().fstype, "cgroup2");
        assert!(Mount::parse("/y", "none", "/src", &opts(&["idmap"])).is_err());
    }

    #[test]
    fn berth_set() {
        assert_eq!(berth_mounts(false).len(), 6);
        assert_eq!(berth_mounts(true).last().unwrap().destination, "/sys/fs/cgroup");
    }
}
