//! OCI hooks: each hook's program runs with the state JSON on its stdin; a failure (non-zero
//! exit, timeout) is an error naming the hook.
//!
//! What a failure does (runtime spec, lifecycle): a failing `prestart`, `createRuntime`,
//! `createContainer` or `startContainer` hook stops the operation ([`run_hooks`]); a failing
//! `poststart` or `poststop` hook is a warning, and the remaining hooks and the lifecycle go on
//! ([`run_hooks_warning`]).
//!
//! The state each kind receives (as crun): `created` for the four hooks of `create` and
//! `start` — the container's process exists and has not run the user's program —, `running`
//! for `poststart`, `stopped` for `poststop`.
//!
//! Where berth-runtime runs them (`berth-runtime` CLI):
//! - `prestart`, `createRuntime`: in the runtime's namespaces, while the container's child waits
//!   right before `pivot_root` (its namespaces and mounts exist);
//! - `createContainer`: at the same point, in the container's namespaces (`setns` into
//!   `/proc/PID/ns/*` before `exec`, mount namespace last: the hook path resolves in that mount
//!   namespace — before `pivot_root`, that is the runtime's view of the paths);
//! - `startContainer`: by `start`, in the container's namespaces, before the start fifo is
//!   opened; after `pivot_root`, so the path resolves in the container's root. The hook runs
//!   with the runtime's credentials, not the container process's.
//!
//! "In the container's namespaces" includes its pid and time namespaces: those only apply to
//! children of the caller, so the runtime enters them itself (`pid_for_children`,
//! `time_for_children`) around the hook's `fork` and goes back right after. Such hooks get the
//! state with the pid as the container sees it ([`pid_in_namespace`]).
//! - `poststart`: by `start`/`run` after the fifo was opened; `poststop`: by `delete` (and `run`).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::pidfd::PidFd;

/// The pid of `pid` in its own (innermost) pid namespace (`NSpid` in its status).
pub fn pid_in_namespace(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// The namespaces a hook's child enters in the child (user first, mount last).
const CHILD_NAMESPACES: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

/// The namespaces the runtime enters itself for the hook's fork (they apply to children only).
const PARENT_NAMESPACES: &[(&str, &str, libc::c_int)] =
    &[("pid", "pid_for_children", libc::CLONE_NEWPID), ("time", "time_for_children", libc::CLONE_NEWTIME)];

/// The namespace files of `pid` among `kinds` (`ns/` name, our file to compare with, flag) that
/// differ from ours, opened for `setns`.
fn differing_namespaces(
    pid: i32,
    kinds: &[(&str, &str, libc::c_int)],
) -> Result<Vec<(OwnedFd, libc::c_int)>, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for (name, our_name, flag) in kinds {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{our_name}");
        let (a, b) = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => (a, b),
            // A kernel without this namespace type (time namespaces before 5.6) has neither.
            (Err(_), Err(_)) => continue,
            (Err(e), _) => return Err(format!("{theirs}: {e}")),
            (_, Err(_)) => continue,
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| format!("{theirs}: {e}"))?;
        out.push((OwnedFd::from(f), *flag));
    }
    Ok(out)
}

/// Opens our own `ns/…_for_children` files of the [`PARENT_NAMESPACES`] in `theirs`, to come back
/// to after [`differing_namespaces`].
fn own_namespaces(theirs: &[(OwnedFd, libc::c_int)]) -> Result<Vec<(OwnedFd, libc::c_int)>, String> {
    theirs
        .iter()
        .filter_map(|(_, flag)| PARENT_NAMESPACES.iter().find(|(_, _, f)| f == flag))
        .map(|(_, ours, flag)| {
            let path = format!("/proc/self/ns/{ours}");
            std::fs::File::open(&path).map(|f| (OwnedFd::from(f), *flag)).map_err(|e| format!("{path}: {e}"))
        })
        .collect()
}

/// `setns` into each of `list`.
fn enter(list: &[(OwnedFd, libc::c_int)]) -> Result<(), String> {
    for (fd, flag) in list {
        // SAFETY: setns on a namespace descriptor we own; for pid and time namespaces it only
        // changes the namespace of this thread's future children.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } < 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Runs the hooks of one kind in order. `in_namespaces_of`: run them in that process's
/// namespaces (except pid). `kind` names the hook list in errors (`createRuntime`, …).
pub fn run_hooks(
    kind: &str,
    hooks: &[Hook],
    state: &str,
    in_namespaces_of: Option<i32>,
) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, state, in_namespaces_of)
            .map_err(|e| format!("hooks.{kind}[{i}] ({}): {e}", hook.path().display()))?;
    }
    Ok(())
}

/// Runs every hook of one kind, in order, whatever the others did; returns one message per
/// failed hook, for the caller to log as warnings.
pub fn run_hooks_warning(
    kind: &str,
    hooks: &[Hook],
    state: &str,
    in_namespaces_of: Option<i32>,
) -> Vec<String> {
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, hook)| {
            run_one(hook, state, in_namespaces_of)
                .err()
                .map(|e| format!("hooks.{kind}[{i}] ({}): {e}", hook.path().display()))
        })
        .collect()
}

fn run_one(hook: &Hook, state: &str, in_namespaces_of: Option<i32>) -> Result<(), String> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1)).env_clear().stdin(Stdio::piped());
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(pid) = in_namespaces_of {
        let kinds: Vec<(&str, &str, libc::c_int)> =
            CHILD_NAMESPACES.iter().map(|(n, f)| (*n, *n, *f)).collect();
        let fds = differing_namespaces(pid, &kinds)?;
        let for_children = differing_namespaces(pid, PARENT_NAMESPACES)?;
        let back = own_namespaces(&for_children)?;
        let raw: Vec<(i32, libc::c_int)> = fds.iter().map(|(fd, flag)| (fd.as_raw_fd(), *flag)).collect();
        // SAFETY: the closure runs in the forked child before exec and only makes `setns`
        // system calls on descriptors opened above (kept alive by `fds` until spawn returns);
        // it does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                for (fd, flag) in &raw {
                    if libc::setns(*fd, *flag) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // The pid and time namespaces: ours for the fork, then back before anything else.
        if let Err(e) = enter(&for_children) {
            // Part of the way in: back to ours for what was entered, whatever failed.
            let _ = enter(&back);
            return Err(e);
        }
        let spawned = cmd.spawn().map_err(|e| format!("cannot run: {e}"));
        let restored = enter(&back);
        let mut child = spawned?;
        if let Err(e) = restored {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        return wait_hook(child, hook, state);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
    wait_hook(child, hook, state)
}

/// Writes the state to the hook's stdin and waits for it, up to its timeout.
fn wait_hook(mut child: std::process::Child, hook: &Hook, state: &str) -> Result<(), String> {
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin closes the pipe: not an error.
        let _ = stdin.write_all(state.as_bytes());
    }
    let Some(deadline) =
        hook.timeout().filter(|t| *t > 0).map(|t| Instant::now() + Duration::from_secs(t as u64))
    else {
        let status = child.wait().map_err(|e| format!("wait: {e}"))?;
        return if status.success() { Ok(()) } else { Err(format!("failed: {status}")) };
    };
    // Our child is not reaped before the wait below, so its pid cannot name another process.
    let process = PidFd::open(child.id() as i32).map_err(|e| format!("pidfd: {e}"))?;
    let exited = process
        .wait_exit(Some(deadline.saturating_duration_since(Instant::now())))
        .map_err(|e| format!("wait: {e}"))?;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("timed out after {}s", hook.timeout().unwrap_or(0)));
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed: {status}"))
    }
}
