//! Starting QEMU so that it can never outlive us.
//!
//! The child gets its own process group (so it can be killed with everything it started, and
//! terminal signals meant for us do not reach it) and `PR_SET_PDEATHSIG(SIGKILL)`. The kernel
//! sends that signal when the *thread* that forked the child exits, not the process; so every
//! child is forked by one spawner thread that lives as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` in its own process group, killed (SIGKILL) when this process dies.
pub(crate) fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: the hook runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        let started = std::thread::Builder::new().name("berth-qemu-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        if let Err(e) = started {
            log::warn!("cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = sender.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, reply_tx));
    match sent {
        Ok(()) => reply_rx.recv().unwrap_or_else(|_| Err(io::Error::other("the spawner thread is gone"))),
        // No spawner thread: spawn here (the death signal then follows this thread).
        Err(mpsc::SendError((mut cmd, _))) => cmd.spawn(),
    }
}
