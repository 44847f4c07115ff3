//! Remote syslog sender: PID 1's messages, events and every container's output to the
//! `[log] syslog` collector, as RFC 5424 over UDP or TCP. It never blocks PID 1: sockets are
//! non-blocking; before the network is up messages wait in a bounded backlog; a TCP collector
//! that is away or slow gets a bounded queue and reconnects with backoff; beyond the bounds
//! messages are dropped (and counted), never waited for.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_schema::syslog::{octet_counted, rfc3339, rfc5424, Priority, SyslogTarget, Transport};
use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, SockFlag, SockType, SockaddrStorage};

/// Messages kept while the network is not up yet.
const BACKLOG: usize = 1000;
/// Bytes queued for a TCP collector before messages are dropped.
const TCP_QUEUE_BYTES: usize = 256 * 1024;
const FIRST_RECONNECT: Duration = Duration::from_secs(1);
const MAX_RECONNECT: Duration = Duration::from_secs(30);

enum Tcp {
    Down { retry_at: Instant, backoff: Duration },
    Connecting(Arc<OwnedFd>, Duration),
    Up(Arc<OwnedFd>),
}

struct Sender {
    target: SyslogTarget,
    ready: bool,
    /// Messages from before the network was up, formatted when sent (the hostname is set
    /// after the first ones): (priority, app, procid, msgid, text, timestamp).
    backlog: VecDeque<Pending>,
    udp: Option<UdpSocket>,
    tcp: Tcp,
    /// Framed messages for TCP, and how much of the first one is sent.
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    sent_of_first: usize,
    dropped: u64,
}

type Pending = (Priority, String, Option<u32>, String, Vec<u8>, String);

static SENDER: Mutex<Option<Sender>> = Mutex::new(None);

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

/// Starts sending to `target`; messages wait until [`network_ready`].
pub fn configure(target: SyslogTarget) {
    let sender = Sender {
        target,
        ready: false,
        backlog: VecDeque::new(),
        udp: None,
        tcp: Tcp::Down { retry_at: Instant::now(), backoff: FIRST_RECONNECT },
        queue: VecDeque::new(),
        queued_bytes: 0,
        sent_of_first: 0,
        dropped: 0,
    };
    if let Ok(mut s) = SENDER.lock() {
        *s = Some(sender);
    }
}

/// The machine has its addresses: send the backlog and everything from now on.
pub fn network_ready() {
    let Ok(mut guard) = SENDER.try_lock() else { return };
    let Some(s) = guard.as_mut() else { return };
    if s.ready {
        return;
    }
    s.ready = true;
    if s.target.transport == Transport::Udp {
        // Any local address, a port of the kernel's choosing, in the collector's family.
        let bind = if s.target.addr.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        };
        s.udp = UdpSocket::bind(bind).ok().filter(|u| u.set_nonblocking(true).is_ok());
    }
    let backlog: Vec<Pending> = s.backlog.drain(..).collect();
    let host = hostname();
    for (priority, app, procid, msgid, text, stamp) in backlog {
        s.deliver(rfc5424(priority, &stamp, &host, &app, procid, &msgid, &text));
    }
    s.service(Instant::now());
}

/// Sends one message (`daemon`, severity 0–7, app name, process id, message id, text).
pub fn send(severity: u8, app: &str, procid: Option<u32>, msgid: &str, text: &[u8]) {
    send_as(Priority::daemon(severity), app, procid, msgid, text);
}

/// Sends one message with its facility and severity.
pub fn send_as(priority: Priority, app: &str, procid: Option<u32>, msgid: &str, text: &[u8]) {
    // try_lock: a message produced while the sender itself is busy is dropped, never deadlocks.
    let Ok(mut guard) = SENDER.try_lock() else { return };
    let Some(s) = guard.as_mut() else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let stamp = rfc3339(now.as_secs() as i64, now.subsec_micros());
    if !s.ready {
        if s.backlog.len() >= BACKLOG {
            s.backlog.pop_front();
            s.dropped += 1;
        }
        s.backlog.push_back((priority, app.to_string(), procid, msgid.to_string(), text.to_vec(), stamp));
        return;
    }
    // The hostname is read each time: DHCP may change it.
    s.deliver(rfc5424(priority, &stamp, &hostname(), app, procid, msgid, text));
    s.service(Instant::now());
}

/// The TCP socket to poll, and whether PID 1 should wake when it is writable.
pub fn poll_fd() -> Option<(Arc<OwnedFd>, bool)> {
    let guard = SENDER.try_lock().ok()?;
    let s = guard.as_ref()?;
    match &s.tcp {
        Tcp::Connecting(fd, _) => Some((Arc::clone(fd), true)),
        Tcp::Up(fd) => Some((Arc::clone(fd), !s.queue.is_empty())),
        Tcp::Down { .. } => None,
    }
}

/// When a reconnection is due.
pub fn deadline() -> Option<Instant> {
    let guard = SENDER.try_lock().ok()?;
    let s = guard.as_ref()?;
    match s.tcp {
        Tcp::Down { retry_at, .. } if s.ready && !s.queue.is_empty() => Some(retry_at),
        _ => None,
    }
}

/// Connects, flushes, reconnects: called from the event loop.
pub fn service() {
    if let Ok(mut guard) = SENDER.try_lock() {
        if let Some(s) = guard.as_mut() {
            s.service(Instant::now());
        }
    }
}

/// At shutdown: gives a TCP collector up to `max` to take what is queued.
pub fn flush(max: Duration) {
    let end = Instant::now() + max;
    loop {
        service();
        let Some((fd, true)) = poll_fd() else { return };
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLOUT)];
        // Waits longer than u16::MAX ms are cut to it: the loop polls again until `end`.
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
    }
}

impl Sender {
    fn deliver(&mut self, message: String) {
        match self.target.transport {
            Transport::Udp => {
                let sent = self.udp.as_ref().map(|u| u.send_to(message.as_bytes(), self.target.addr));
                if !matches!(sent, Some(Ok(_))) {
                    self.dropped += 1;
                }
            }
            Transport::Tcp => {
                let framed = octet_counted(&message).into_bytes();
                if self.queued_bytes + framed.len() > TCP_QUEUE_BYTES {
                    self.dropped += 1;
                    return;
                }
                self.queued_bytes += framed.len();
                self.queue.push_back(framed);
            }
        }
    }

    fn service(&mut self, now: Instant) {
        if self.target.transport != Transport::Tcp || !self.ready {
            return;
        }
        loop {
            match std::mem::replace(&mut self.tcp, Tcp::Down { retry_at: now, backoff: FIRST_RECONNECT }) {
                Tcp::Down { retry_at, backoff } => {
                    if now < retry_at || self.queue.is_empty() {
                        self.tcp = Tcp::Down { retry_at, backoff };
                        return;
                    }
                    match self.connect() {
                        Ok(fd) => self.tcp = Tcp::Connecting(Arc::new(fd), backoff),
                        Err(_) => {
                            self.tcp = Tcp::Down {
                                retry_at: now + backoff,
                                backoff: (backoff * 2).min(MAX_RECONNECT),
                            };
                            return;
                        }
                    }
                }
                Tcp::Connecting(fd, backoff) => match socket::getsockopt(&fd, socket::sockopt::SocketError) {
                    Ok(0) if is_connected(&fd) => {
                        self.sent_of_first = 0;
                        self.tcp = Tcp::Up(fd);
                    }
                    Ok(0) => {
                        self.tcp = Tcp::Connecting(fd, backoff);
                        return;
                    }
                    _ => {
                        self.tcp =
                            Tcp::Down { retry_at: now + backoff, backoff: (backoff * 2).min(MAX_RECONNECT) };
                        return;
                    }
                },
                Tcp::Up(fd) => {
                    while let Some(first) = self.queue.front() {
                        let rest = &first[self.sent_of_first..];
                        match socket::send(
                            fd.as_raw_fd(),
                            rest,
                            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                        ) {
                            Ok(n) if n == rest.len() => {
                                self.queued_bytes -= first.len();
                                self.queue.pop_front();
                                self.sent_of_first = 0;
                            }
                            Ok(n) => {
                                self.sent_of_first += n;
                                break;
                            }
                            Err(Errno::EAGAIN) | Err(Errno::EINTR) => break,
                            Err(_) => {
                                // The collector went away: reconnect later, resend from the
                                // start of the message that was cut.
                                self.sent_of_first = 0;
                                self.tcp =
                                    Tcp::Down { retry_at: now + FIRST_RECONNECT, backoff: FIRST_RECONNECT };
                                return;
                            }
                        }
                    }
                    self.tcp = Tcp::Up(fd);
                    return;
                }
            }
        }
    }

    fn connect(&self) -> Result<OwnedFd, Errno> {
        let family = if self.target.addr.is_ipv4() {
            socket::AddressFamily::Inet
        } else {
            socket::AddressFamily::Inet6
        };
        let fd =
            socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
        let addr = SockaddrStorage::from(self.target.addr);
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) | Err(Errno::EINPROGRESS) => Ok(fd),
            Err(e) => Err(e),
        }
    }
}

fn is_connected(fd: &OwnedFd) -> bool {
    socket::getpeername::<SockaddrStorage>(fd.as_raw_fd()).is_ok()
}
