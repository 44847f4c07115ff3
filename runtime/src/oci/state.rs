//! Container state kept by the CLI: `ROOT/<id>/state.json` (written atomically: temp file +
//! rename), the start fifo `ROOT/<id>/exec.fifo`, and the status derived from the process.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the CLI remembers about one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// The OCI version of the bundle's config.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// The init process, as seen from the runtime's pid namespace.
    pub pid: i32,
    /// Start time of `pid` (field 22 of `/proc/PID/stat`), to detect pid reuse.
    pub start_time: u64,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Root filesystem directory.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// User name (or uid) of the creator.
    pub owner: String,
    /// The config's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The cgroup the container runs in, if it has one.
    pub cgroup: Option<PathBuf>,
    /// Whether `create` made that cgroup (else it joined an existing one, which `delete` then
    /// leaves alone: the spec forbids deleting what the container did not create). States
    /// written before the field existed: made by create, as those versions assumed.
    #[serde(default = "made_by_create")]
    pub cgroup_created: bool,
    /// The bundle's config as it was at create (hooks, and `exec`'s process settings).
    pub config: serde_json::Value,
}

fn made_by_create() -> bool {
    true
}

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Set up, waiting for `start`.
    Created,
    /// Started and alive.
    Running,
    /// The process is gone.
    Stopped,
}

impl Status {
    /// The spec's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// The state directory (`--root`).
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
}

/// Checks a container id the way runc does: letters, digits, `_ + - .`, not `.`/`..`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
}

impl StateRoot {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateRoot {
        StateRoot { root: root.into() }
    }

    /// `ROOT/<id>`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `ROOT/<id>/exec.fifo`.
    pub fn fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// Reserves `ROOT/<id>` (mode 0711) and makes its start fifo (0622); fails if it exists.
    pub fn create(&self, id: &str) -> Result<PathBuf, String> {
        fs::create_dir_all(&self.root).map_err(|e| format!("create {}: {e}", self.root.display()))?;
        let dir = self.dir(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(format!("container with id exists: {id}"))
            }
            Err(e) => return Err(format!("create {}: {e}", dir.display())),
        }
        let fifo = self.fifo(id);
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o622);
        nix::unistd::mkfifo(&fifo, mode).map_err(|e| format!("mkfifo {}: {e}", fifo.display()))?;
        // mkfifo applies the umask (0622 & !022 = 0600): set the mode itself, so that the
        // container's root, another host uid in a user namespace, can open it for writing.
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o622))
            .map_err(|e| format!("chmod {}: {e}", fifo.display()))?;
        Ok(dir)
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, state: &ContainerState) -> Result<(), String> {
        let dir = self.dir(&state.id);
        let tmp = dir.join(".state.json.tmp");
        let text = serde_json::to_vec(state).map_err(|e| format!("encode state: {e}"))?;
        fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        fs::rename(&tmp, dir.join("state.json")).map_err(|e| format!("rename {}: {e}", tmp.display()))
    }

    /// Reads `state.json`; `container "x" does not exist` when there is none.
    pub fn load(&self, id: &str) -> Result<ContainerState, String> {
        if !valid_id(id) {
            return Err(format!("invalid container id format: {id}"));
        }
        let path = self.dir(id).join("state.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("container \"{id}\" does not exist"))
            }
            Err(e) => return Err(format!("read {}: {e}", path.display())),
        };
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Removes `ROOT/<id>` and everything in it.
    pub fn remove(&self, id: &str) -> Result<(), String> {
        match fs::remove_dir_all(self.dir(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(format!("remove {}: {e}", self.dir(id).display()))
            }
            _ => Ok(()),
        }
    }

    /// Every container with a state file, sorted by id.
    pub fn list(&self) -> Vec<ContainerState> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
            .unwrap_or_default();
        ids.sort();
        ids.iter().filter_map(|id| self.load(id).ok()).collect()
    }

    /// The status: stopped when the process is gone (or a zombie, or its pid was reused),
    /// created while the start fifo exists, running otherwise.
    pub fn status(&self, state: &ContainerState) -> Status {
        match process_start_time(state.pid) {
            Some((start, zombie)) if start == state.start_time && !zombie => {
                if self.fifo(&state.id).exists() {
                    Status::Created
                } else {
                    Status::Running
                }
            }
            _ => Status::Stopped,
        }
    }
}

/// (start time, is a zombie) of a process, from `/proc/PID/stat`.
pub fn process_start_time(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    // Field 22 of the whole line is index 19 after the state (field 3).
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// The OCI state document (`state` output, hooks' stdin).
pub fn oci_state(state: &ContainerState, status: Status) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": state.oci_version,
        "id": state.id,
        "status": status.as_str(),
        "pid": if status == Status::Stopped { 0 } else { state.pid },
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
        "owner": state.owner,
    });
    if !state.annotations.is_empty() {
        v["annotations"] = serde_json::json!(state.annotations);
    }
    v
}

/// The current time as RFC 3339 UTC with nanoseconds, e.g. `2026-11-22T10:00:00.123456789Z`.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// Formats seconds since the epoch (UTC) as RFC 3339.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let (year, month, day, hour, minute, second) = crate::civil_time::utc_civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z")
}

/// Removes a directory tree if it exists (used for cleanup on failed creates).
pub fn remove_if_exists(path: &Path) {
    let _ = fs::remove_dir_all(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn ids() {
        assert!(valid_id("a-b_c.1+2"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(".."));
    }

    #[test]
    fn own_start_time() {
        let (start, zombie) = process_start_time(std::process::id() as i32).unwrap();
        assert!(start > 0 && !zombie);
    }
}
