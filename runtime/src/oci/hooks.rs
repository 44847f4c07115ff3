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
//!   opened; after `pivot_root`, so the path resolves in the container's root. Approximation:
//!   the pid namespace is not entered (`setns` to a pid namespace affects only children), and
//!   the hook runs with the runtime's credentials, not the container process's;
//! - `poststart`: by `start`/`run` after the fifo was opened; `poststop`: by `delete` (and `run`).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::pidfd::PidFd;

/// The namespace files of `pid` that differ from ours, opened for `setns` (user first, mount
/// last).
fn namespace_fds(pid: i32) -> Result<Vec<(OwnedFd, libc::c_int)>, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for (name, flag) in [
        ("user", libc::CLONE_NEWUSER),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let (a, b) = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) => return Err(format!("{theirs}: {e}")),
            (_, Err(_)) => continue,
        };
        if a.ino() == b.ino() && a.dev() == b.dev() {
            continue;
        }
        let f = std::fs::File::open(&theirs).map_err(|e| format!("{theirs}: {e}"))?;
        out.push((OwnedFd::from(f), flag));
    }
    Ok(out)
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
        let fds = namespace_fds(pid)?;
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
        return spawn_and_wait(cmd, hook, state);
    }
    spawn_and_wait(cmd, hook, state)
}

fn spawn_and_wait(mut cmd: Command, hook: &Hook, state: &str) -> Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
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
