//! What a container gets from the machine besides its image: bind mounts, tmpfs mounts and
//! devices. Each is parsed once, from its Docker spelling in the config, and carried typed into
//! the plan, which writes it back in the same spelling (see `text_form`).

use std::fmt;

use berth_runtime::Mount;

use crate::text_form::serde_as_text;
use crate::units;

serde_as_text!(Bind, TmpfsMount, DeviceMapping);

/// A bind mount from the machine, Docker's `SRC:DST[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Path on the machine.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Bind {
    /// Parses Docker's `SRC:DST[:ro|rw]`.
    pub fn parse(text: &str) -> Result<Bind, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => {
                return Err(format!(
                    "bind `{text}` must look like \"/source:/target\" or \"/source:/target:ro\""
                ))
            }
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(format!("bind `{text}`: both paths must be absolute"));
        }
        if target.split('/').any(|c| c == "..") {
            return Err(format!("bind `{text}`: the target may not contain `..`"));
        }
        Ok(Bind { source: source.to_string(), target: target.to_string(), read_only })
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}{}", self.source, self.target, if self.read_only { ":ro" } else { "" })
    }
}

/// Docker's default options of a container's tmpfs mounts, before the given ones.
const TMPFS_DEFAULTS: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// The filesystem options tmpfs knows (the rest of `mount(8)`'s options are flags).
const TMPFS_KEYS: &[&str] = &["size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol"];

/// A tmpfs mount of a container, Docker's `--tmpfs`: `"/path"` or `"/path:size=64m,mode=1777"`.
/// Parsing checks the options and makes the runtime's mount: Docker's defaults (`nosuid`,
/// `nodev`, `noexec`) first, then the given options, sizes in bytes. It is written back with the
/// sizes in bytes (`"/cache:size=67108864,mode=1777"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// The given options, sizes in bytes.
    options: Vec<String>,
    /// The mount the runtime makes.
    mount: Mount,
}

impl TmpfsMount {
    /// Parses `"/path"` or `"/path:size=64m,mode=1777"` and checks the options.
    pub fn parse(text: &str) -> Result<TmpfsMount, String> {
        let (target, given) = text.split_once(':').unwrap_or((text, ""));
        if !target.starts_with('/') || target.split('/').any(|c| c == "..") || target == "/" {
            return Err(format!("tmpfs `{text}`: the path must be absolute, without `..`, and not `/`"));
        }
        let mut options = Vec::new();
        for o in given.split(',').filter(|o| !o.is_empty()) {
            let o = match o.strip_prefix("size=") {
                Some(size) => {
                    let bytes = units::parse_bytes(size).map_err(|e| format!("tmpfs `{text}`: size: {e}"))?;
                    format!("size={bytes}")
                }
                None => o.to_string(),
            };
            let parsed = berth_runtime::mounts::parse_options(std::slice::from_ref(&o))
                .map_err(|e| format!("tmpfs `{text}`: {e}"))?;
            let key = o.split('=').next().unwrap_or_default();
            if !parsed.data.is_empty() && !TMPFS_KEYS.contains(&key) {
                return Err(format!(
                    "tmpfs `{text}`: `{o}` is not a tmpfs option (size, mode, uid, gid, nr_inodes, huge; or ro, exec, nosuid …)"
                ));
            }
            options.push(o);
        }
        let all: Vec<String> =
            TMPFS_DEFAULTS.iter().map(|o| o.to_string()).chain(options.iter().cloned()).collect();
        let mount = Mount::parse(target, "tmpfs", "tmpfs", &all).map_err(|e| {
            format!("tmpfs `{text}`: {e} (options are mount(8)'s: size=64m, mode=1777, ro, exec …)")
        })?;
        Ok(TmpfsMount { options, mount })
    }

    /// Absolute path in the container.
    pub fn target(&self) -> &str {
        &self.mount.destination
    }

    /// The mount the runtime makes.
    pub fn mount(&self) -> &Mount {
        &self.mount
    }
}

impl fmt::Display for TmpfsMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.target())?;
        if !self.options.is_empty() {
            write!(f, ":{}", self.options.join(","))?;
        }
        Ok(())
    }
}

/// A device of the machine given to a container, Docker's `HOST[:CONTAINER[:PERMISSIONS]]`;
/// written back as `HOST:CONTAINER:PERMISSIONS`. The device itself is looked up at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    /// The device on the machine.
    pub host: String,
    /// Its path in the container.
    pub container: String,
    /// Allowed access: some of `r`, `w`, `m`.
    pub access: String,
}

impl DeviceMapping {
    /// Parses Docker's `HOST[:CONTAINER[:PERMISSIONS]]`.
    pub fn parse(text: &str) -> Result<DeviceMapping, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, access) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, c] => (*h, *c, "rwm"),
            [h, c, a] => (*h, *c, *a),
            _ => return Err(format!("device `{text}` must look like \"/dev/vda\", \"/dev/vda:/dev/disk\" or \"/dev/vda:/dev/disk:r\"")),
        };
        if !host.starts_with("/dev/") || !container.starts_with("/dev/") || container.contains("..") {
            return Err(format!("device `{text}`: both paths must be under /dev/"));
        }
        if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(format!("device `{text}`: permissions are some of `r`, `w`, `m`"));
        }
        Ok(DeviceMapping {
            host: host.to_string(),
            container: container.to_string(),
            access: access.to_string(),
        })
    }
}

impl fmt::Display for DeviceMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.host, self.container, self.access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_mounts() {
        let t = TmpfsMount::parse("/cache:size=64m,mode=1777").unwrap();
        assert_eq!(t.target(), "/cache");
        assert_eq!(t.mount().flags, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        assert_eq!(
            (t.mount().fstype.as_str(), t.mount().data.as_str()),
            ("tmpfs", "size=67108864,mode=1777")
        );
        assert_eq!(t.to_string(), "/cache:size=67108864,mode=1777");
        let exec = TmpfsMount::parse("/run:exec").unwrap();
        assert_eq!(exec.mount().flags, libc::MS_NOSUID | libc::MS_NODEV, "exec clears the default noexec");
        assert_eq!(TmpfsMount::parse("/run").unwrap().to_string(), "/run");
        for bad in ["cache", "/", "/a/../b", "/x:size=lots", "/x:bogus-option", "/x:idmap"] {
            assert!(TmpfsMount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn written_back_as_parsed() {
        for text in ["/cache:size=64m,mode=1777", "/run", "/t:ro,exec,uid=5"] {
            let t = TmpfsMount::parse(text).unwrap();
            assert_eq!(TmpfsMount::parse(&t.to_string()).unwrap(), t, "{text}");
        }
        for text in ["/a:/b", "/a:/b:ro", "/a:/b:rw"] {
            let b = Bind::parse(text).unwrap();
            assert_eq!(Bind::parse(&b.to_string()).unwrap(), b, "{text}");
        }
        for text in ["/dev/vda", "/dev/vda:/dev/disk", "/dev/vda:/dev/disk:r"] {
            let d = DeviceMapping::parse(text).unwrap();
            assert_eq!(DeviceMapping::parse(&d.to_string()).unwrap(), d, "{text}");
        }
        let json = serde_json::to_string(&Bind::parse("/a:/b:ro").unwrap()).unwrap();
        assert_eq!(json, "\"/a:/b:ro\"");
    }
}
