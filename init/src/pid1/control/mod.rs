//! PID 1's control socket: one request line in, a text reply out, then the connection closes.
//! `berthctl` (this binary under that name) is the client. The requests and replies are the
//! types of [`protocol`]. With `-f` the connection stays open and PID 1 keeps sending; a reader
//! that falls behind is dropped.

pub mod protocol;

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use crate::pid1::log;
use protocol::{Reply, Request, USAGE};

/// Where PID 1 listens.
pub const SOCKET_PATH: &str = "/run/berth/control.sock";
/// The longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);
/// The longest request line.
const MAX_REQUEST: usize = 4096;

/// The listening socket.
pub struct ControlSocket {
    listener: UnixListener,
}

impl ControlSocket {
    /// Binds [`SOCKET_PATH`] (root only), non-blocking.
    pub fn bind() -> Result<ControlSocket, String> {
        let _ = std::fs::create_dir_all("/run/berth");
        let _ = std::fs::remove_file(SOCKET_PATH);
        let listener =
            UnixListener::bind(SOCKET_PATH).map_err(|e| format!("control socket {SOCKET_PATH}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("control socket: {e}"))?;
        let _ = std::fs::set_permissions(SOCKET_PATH, std::fs::Permissions::from_mode(0o600));
        Ok(ControlSocket { listener })
    }

    /// Accepts a pending connection and reads its request line.
    pub fn next_request(&self) -> Option<(UnixStream, String)> {
        let (mut stream, _) = self.listener.accept().ok()?;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.contains(&b'\n') && buf.len() < MAX_REQUEST {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let line = String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().trim().to_string();
        Some((stream, line))
    }
}

impl AsFd for ControlSocket {
    /// The listening socket, to poll for connections.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

/// Sends `reply`; a follower's connection stays open for what comes next, the others close (a
/// client gone away is not PID 1's problem).
pub fn reply(mut stream: UnixStream, reply: &Reply) {
    let sent = stream.write_all(reply.wire().as_bytes()).is_ok();
    if let (Reply::Follow { what, .. }, true) = (reply, sent) {
        log::add_follower(stream, what.clone());
    }
}

/// `update apply -`: waits for PID 1's go-ahead line, then streams standard input (the bundle's
/// layout as a tar stream) and closes the sending side; the report follows as any reply.
fn send_bundle(stream: &mut UnixStream) -> Result<(), String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < MAX_REQUEST {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&line).trim().to_string();
    if line != protocol::SEND_BUNDLE {
        return Err(line.strip_prefix("error: ").unwrap_or(&line).to_string());
    }
    std::io::copy(&mut std::io::stdin().lock(), stream).map_err(|e| format!("sending the bundle: {e}"))?;
    stream.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())
}

/// `berthctl ARGS…`: sends the request and prints the reply; exit status 1 for `error:`.
pub fn client(args: &[String]) -> i32 {
    if args.is_empty() || args[0] == "-h" || args[0] == "--help" {
        eprintln!("usage: berthctl {USAGE}");
        return 2;
    }
    let request = match Request::parse(&args.join(" ")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthctl: {e}");
            return 2;
        }
    };
    let path = std::env::var("BERTH_CONTROL").unwrap_or_else(|_| SOCKET_PATH.to_string());
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berthctl: cannot reach PID 1 at {path}: {e}");
            return 1;
        }
    };
    if let Err(e) = stream.write_all(format!("{request}\n").as_bytes()) {
        eprintln!("berthctl: {e}");
        return 1;
    }
    if request == Request::Update(protocol::UpdateRequest::ApplyBundle) {
        if let Err(e) = send_bundle(&mut stream) {
            eprintln!("berthctl: {e}");
            return 1;
        }
    }
    // The reply is streamed (`-f` never ends): an `error:` reply is short and comes whole.
    let mut first = [0u8; 4096];
    let n = stream.read(&mut first).unwrap_or(0);
    let head = String::from_utf8_lossy(&first[..n]).into_owned();
    if let Some(err) = head.strip_prefix("error: ") {
        let mut rest = String::new();
        let _ = stream.read_to_string(&mut rest);
        eprint!("berthctl: {err}{rest}");
        return 1;
    }
    let mut out = std::io::stdout();
    let _ = out.write_all(&first[..n]);
    let _ = out.flush();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).is_err() || out.flush().is_err() {
            break;
        }
    }
    0
}
