//! `process.terminal` with `--console-socket`: a pty whose master goes to the caller over a unix
//! socket (`SCM_RIGHTS`), as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// A new pty: (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
            .map_err(|e| format!("pty close-on-exec: {e}"))?;
    }
    Ok((pty.master, pty.slave))
}

/// Connects to the console socket and sends `master` with `SCM_RIGHTS` (the message body is the
/// pty's name, as runc sends it).
pub fn send_master(socket_path: &Path, master: &OwnedFd) -> Result<(), String> {
    let sock = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("console socket: {e}"))?;
    let addr =
        UnixAddr::new(socket_path).map_err(|e| format!("console socket {}: {e}", socket_path.display()))?;
    connect(sock.as_raw_fd(), &addr)
        .map_err(|e| format!("connect to console socket {}: {e}", socket_path.display()))?;
    let name = b"/dev/ptmx";
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send the pty master over {}: {e}", socket_path.display()))?;
    Ok(())
}
