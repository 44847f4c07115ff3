//! A DHCPv4 client as a state machine (RFC 2131), without I/O.
//!
//! The caller owns the socket and the clock: it feeds received datagrams to [`DhcpClient::receive`]
//! and calls [`DhcpClient::tick`] at [`DhcpClient::deadline`]; both return [`Action`]s (datagrams to
//! send, a lease to apply or to drop). The wire format is `dhcproto`'s.
//!
//! States: INIT → (DISCOVER) SELECTING → (REQUEST) REQUESTING → BOUND → at T1 RENEWING (unicast
//! REQUEST to the server) → at T2 REBINDING (broadcast REQUEST) → at expiry INIT again. Lost
//! messages are sent again with exponential backoff (2 s doubling to 64 s, ±0.5 s of jitter);
//! a server that never answers is asked for ever, without blocking anything else.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

/// The first retransmission delay; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest delay between retransmissions.
pub const MAX_BACKOFF: Duration = Duration::from_secs(64);
/// How long an offer is waited for after REQUEST before starting over with DISCOVER.
const REQUEST_TRIES: u32 = 4;
/// The least time between two DISCOVERs sent because the link changed.
const LINK_RESEND_GAP: Duration = Duration::from_secs(1);

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Its prefix length (from the subnet mask; 24 without one).
    pub prefix_len: u8,
    /// The default gateway.
    pub router: Option<Ipv4Addr>,
    /// Name servers.
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (option 42), in the server's order of preference.
    pub ntp: Vec<Ipv4Addr>,
    /// The domain name (a search domain).
    pub domain: Option<String>,
    /// The host name the server gave us.
    pub hostname: Option<String>,
    /// The interface MTU.
    pub mtu: Option<u16>,
    /// The server that granted the lease.
    pub server: Ipv4Addr,
    /// Lease time.
    pub lease_time: Duration,
    /// Renewal time (T1).
    pub renew_after: Duration,
    /// Rebinding time (T2).
    pub rebind_after: Duration,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 out of the interface.
    Broadcast,
    /// The server's address, port 67.
    Server(Ipv4Addr),
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this DHCP message.
    Send(Vec<u8>, Destination),
    /// A lease was acquired (possibly a different address than before): configure it.
    Bound(Lease),
    /// The lease was extended (RENEWING or REBINDING ended with an ACK).
    Renewed(Lease),
    /// The lease ended (expired, or the server said NAK): remove its address and routes.
    Lost(String),
    /// A message is being sent again after no answer: attempt number and the delay before it.
    Retry { attempt: u32, delay: Duration },
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Init,
    Selecting,
    Requesting { offer: Ipv4Addr, server: Ipv4Addr },
    Bound,
    Renewing,
    Rebinding,
}

/// One interface's DHCP client.
#[derive(Debug)]
pub struct DhcpClient {
    mac: [u8; 6],
    hostname: Option<String>,
    xid: u32,
    rng: u64,
    state: State,
    /// Sends of the current message so far.
    attempt: u32,
    /// When the last message was sent.
    sent_at: Option<Instant>,
    next: Option<Instant>,
    lease: Option<(Lease, Instant)>,
}

impl DhcpClient {
    /// A client for the interface with this MAC; `seed` makes transaction ids and jitter (give it
    /// randomness); `hostname` is sent to the server (option 12).
    pub fn new(mac: [u8; 6], seed: u64, hostname: Option<String>) -> DhcpClient {
        let mut c = DhcpClient {
            mac,
            hostname,
            xid: 0,
            rng: seed | 1,
            state: State::Init,
            attempt: 0,
            sent_at: None,
            next: None,
            lease: None,
        };
        c.xid = c.random_xid();
        c
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: enough for transaction ids and jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A new transaction id: the low 32 bits of the next random number.
    // The cast keeps the low 32 bits on purpose: any 32 bits of the generator will do.
    #[allow(clippy::cast_possible_truncation)]
    fn random_xid(&mut self) -> u32 {
        self.random() as u32
    }

    /// The current lease, if bound (or renewing).
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref().map(|(l, _)| l)
    }

    /// When [`tick`](Self::tick) must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// The state's name, for events and `berthctl`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "init",
            State::Selecting => "selecting",
            State::Requesting { .. } => "requesting",
            State::Bound => "bound",
            State::Renewing => "renewing",
            State::Rebinding => "rebinding",
        }
    }

    /// Starts (or restarts) acquiring a lease: sends DISCOVER.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Selecting;
        self.xid = self.random_xid();
        self.attempt = 0;
        self.send_current(now)
    }

    /// The interface's link changed (its carrier came up, most often: a physical NIC's link
    /// negotiation ends seconds after the first DISCOVER went nowhere). A client still looking
    /// for a server starts over now instead of waiting out its backoff, at most once a
    /// [`LINK_RESEND_GAP`]; one with a lease, or asking for an offer, is left alone.
    pub fn link_changed(&mut self, now: Instant) -> Vec<Action> {
        let quiet = self.sent_at.is_none_or(|at| now.saturating_duration_since(at) >= LINK_RESEND_GAP);
        if self.state != State::Selecting || !quiet {
            return Vec::new();
        }
        self.start(now)
    }

    /// Renews the lease now instead of at T1 (`berthctl renew`); starts over without one.
    pub fn renew_now(&mut self, now: Instant) -> Vec<Action> {
        if self.lease.is_none() {
            return self.start(now);
        }
        self.state = State::Renewing;
        self.xid = self.random_xid();
        self.attempt = 0;
        self.send_current(now)
    }

    /// The DHCPRELEASE for the current lease (sent at shutdown), and forgets the lease.
    pub fn release(&mut self) -> Option<(Vec<u8>, Destination)> {
        let (lease, _) = self.lease.take()?;
        self.state = State::Init;
        self.next = None;
        let mut msg = self.message(MessageType::Release, lease.address)?;
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(lease.server));
        Some((encode(&msg), Destination::Server(lease.server)))
    }

    /// Time passed: retransmit, or move to RENEWING / REBINDING / INIT.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let Some(due) = self.next else { return Vec::new() };
        if now < due {
            return Vec::new();
        }
        let mut actions = Vec::new();
        if let Some((lease, acquired)) = &self.lease {
            let (lease, acquired) = (lease.clone(), *acquired);
            if now >= acquired + lease.lease_time {
                self.lease = None;
                actions.push(Action::Lost("the lease expired".to_string()));
                actions.extend(self.start(now));
                return actions;
            }
            match self.state {
                State::Bound => {
                    self.state = State::Renewing;
                    self.xid = self.random_xid();
                    self.attempt = 0;
                }
                State::Renewing if now >= acquired + lease.rebind_after => {
                    self.state = State::Rebinding;
                    self.attempt = 0;
                }
                _ => {}
            }
        }
        if matches!(self.state, State::Requesting { .. }) && self.attempt >= REQUEST_TRIES {
            return self.start(now);
        }
        if self.attempt > 0 && !matches!(self.state, State::Renewing | State::Rebinding) {
            actions.push(Action::Retry { attempt: self.attempt + 1, delay: self.backoff_for(self.attempt) });
        }
        actions.extend(self.send_current(now));
        actions
    }

    fn backoff_for(&self, attempt: u32) -> Duration {
        FIRST_BACKOFF.saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF)
    }

    /// Sends the message of the current state and schedules the next timer.
    fn send_current(&mut self, now: Instant) -> Vec<Action> {
        let jitter = Duration::from_millis(self.random() % 1000);
        let backoff = self.backoff_for(self.attempt).saturating_sub(Duration::from_millis(500)) + jitter;
        self.attempt += 1;
        self.sent_at = Some(now);
        match self.state.clone() {
            State::Init => Vec::new(),
            State::Bound => Vec::new(),
            State::Selecting => {
                self.next = Some(now + backoff);
                let msg = self.message(MessageType::Discover, Ipv4Addr::UNSPECIFIED);
                msg.map(|msg| Action::Send(encode(&msg), Destination::Broadcast)).into_iter().collect()
            }
            State::Requesting { offer, server } => {
                self.next = Some(now + backoff);
                let mut msg = self.message(MessageType::Request, Ipv4Addr::UNSPECIFIED);
                if let Some(msg) = msg.as_mut() {
                    msg.opts_mut().insert(DhcpOption::RequestedIpAddress(offer));
                    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                }
                msg.map(|msg| Action::Send(encode(&msg), Destination::Broadcast)).into_iter().collect()
            }
            State::Renewing | State::Rebinding => {
                let Some((lease, acquired)) = self.lease.clone() else { return self.start(now) };
                // RFC 2131 4.4.5: wait half the time left until T2 (renewing) or the end of the
                // lease (rebinding), at least 60 s — but the first retry of a forced renewal
                // comes after the normal backoff.
                let until = if self.state == State::Renewing {
                    acquired + lease.rebind_after
                } else {
                    acquired + lease.lease_time
                };
                let half = until.saturating_duration_since(now) / 2;
                let wait =
                    if self.attempt <= 1 { backoff.max(half.min(Duration::from_secs(60))) } else { half };
                self.next = Some((now + wait.max(Duration::from_secs(1))).min(until));
                let msg = self.message(MessageType::Request, lease.address);
                let dest = if self.state == State::Renewing {
                    Destination::Server(lease.server)
                } else {
                    Destination::Broadcast
                };
                msg.map(|msg| Action::Send(encode(&msg), dest)).into_iter().collect()
            }
        }
    }

    fn message(&self, kind: MessageType, ciaddr: Ipv4Addr) -> Option<Message> {
        let mut msg = boot_request(self.xid, ciaddr, &self.mac)?;
        if ciaddr.is_unspecified() {
            // Until we have an address the kernel cannot take a unicast reply: ask for broadcast.
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        if kind != MessageType::Release {
            opts.insert(DhcpOption::MaxMessageSize(1500));
            opts.insert(DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::NtpServers,
                OptionCode::DomainName,
                OptionCode::Hostname,
                OptionCode::InterfaceMtu,
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
            ]));
            if let Some(h) = &self.hostname {
                opts.insert(DhcpOption::Hostname(h.clone()));
            }
        }
        Some(msg)
    }

    /// A datagram arrived on port 68 of the interface. Anything that is not a reply to our
    /// current transaction is ignored.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Vec<Action> {
        let Some(msg) = decode(bytes) else { return Vec::new() };
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Vec::new();
        }
        let Some(kind) = msg.opts().msg_type() else { return Vec::new() };
        match (&self.state, kind) {
            (State::Selecting, MessageType::Offer) => {
                let offer = msg.yiaddr();
                let Some(server) = server_id(&msg) else { return Vec::new() };
                if offer.is_unspecified() || offer.is_broadcast() {
                    return Vec::new();
                }
                self.state = State::Requesting { offer, server };
                self.attempt = 0;
                self.send_current(now)
            }
            (State::Requesting { .. } | State::Renewing | State::Rebinding, MessageType::Ack) => {
                let Some(lease) = lease_from(&msg) else { return Vec::new() };
                let renewed = matches!(self.state, State::Renewing | State::Rebinding)
                    && self.lease.as_ref().is_some_and(|(l, _)| l.address == lease.address);
                self.state = State::Bound;
                self.attempt = 0;
                self.next = Some(now + lease.renew_after);
                self.lease = Some((lease.clone(), now));
                if renewed {
                    vec![Action::Renewed(lease)]
                } else {
                    vec![Action::Bound(lease)]
                }
            }
            (State::Requesting { .. } | State::Renewing | State::Rebinding, MessageType::Nak) => {
                let had = self.lease.take().is_some();
                let mut actions = Vec::new();
                if had {
                    actions.push(Action::Lost("the server refused the lease (NAK)".to_string()));
                }
                actions.extend(self.start(now));
                actions
            }
            _ => Vec::new(),
        }
    }
}

/// Decodes a datagram, or `None`. The options are walked first and odd ones refused (the crate
/// asserts on some, e.g. a Rapid Commit with a payload), and a panic in the decoder is caught:
/// nothing a network peer sends may take PID 1 down.
pub fn decode(bytes: &[u8]) -> Option<Message> {
    const OPTIONS_START: usize = 240;
    const RAPID_COMMIT: u8 = 80;
    // `Message::chaddr` slices its 16-byte array by `hlen` and panics past it — outside the
    // decoder, where nothing catches it (found by tests/fuzz_inputs.rs): refuse such a message.
    const HLEN_MAX: u8 = 16;
    if bytes.get(2).is_some_and(|&hlen| hlen > HLEN_MAX) {
        return None;
    }
    let mut at = OPTIONS_START;
    while at < bytes.len() {
        match bytes[at] {
            0 => at += 1,
            255 => break,
            code => {
                let len = *bytes.get(at + 1)? as usize;
                if code == RAPID_COMMIT && len != 0 {
                    return None;
                }
                at += 2 + len;
            }
        }
    }
    std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)).ok()).ok().flatten()
}

/// A BOOTREQUEST with our transaction id, client address and hardware address, and no options.
///
/// Built by decoding a fixed header rather than with `Message::new`/`new_with_id`/`default`:
/// those draw a transaction id from `rand`'s thread RNG, whose `getrandom` waits for the
/// kernel's entropy pool in a static binary (it polls `/dev/random` when `dlsym` cannot find
/// glibc's `getrandom`). PID 1 must never wait for entropy; our ids come from
/// [`DhcpClient::new`]'s seed.
fn boot_request(xid: u32, ciaddr: Ipv4Addr, mac: &[u8; 6]) -> Option<Message> {
    let mut header = [0u8; 241];
    header[0] = 1; // op: BOOTREQUEST
    header[1] = 1; // htype: Ethernet
    header[2] = 6; // hlen
    header[236..240].copy_from_slice(&[99, 130, 83, 99]); // the magic cookie
    header[240] = 255; // the end option
                       // The fixed header always decodes (a unit test checks it); `None` is never seen.
    let mut msg = Message::decode(&mut Decoder::new(&header)).ok()?;
    msg.set_xid(xid).set_ciaddr(ciaddr).set_chaddr(mac);
    Some(msg)
}

fn encode(msg: &Message) -> Vec<u8> {
    // Encoding a message we built ourselves cannot fail (every option fits its length byte).
    msg.to_vec().unwrap_or_default()
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// Reads a lease from an ACK; `None` without an address or server.
pub fn lease_from(msg: &Message) -> Option<Lease> {
    let address = msg.yiaddr();
    if address.is_unspecified() {
        return None;
    }
    let server = server_id(msg).unwrap_or(msg.siaddr());
    let opts = msg.opts();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            let bits = u32::from(*mask);
            if bits.leading_ones() + bits.trailing_zeros() == 32 {
                // At most 32 leading ones: the conversion cannot fail (24 as for a missing mask).
                u8::try_from(bits.leading_ones()).unwrap_or(24)
            } else {
                24
            }
        }
        _ => 24,
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let ntp = match opts.get(OptionCode::NtpServers) {
        Some(DhcpOption::NtpServers(n)) => n.clone(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) if is_plain_name(d) => Some(d.clone()),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if is_plain_name(h) => Some(h.clone()),
        _ => None,
    };
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
        _ => None,
    };
    let secs = |code, default: u32| match opts.get(code) {
        Some(DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s)) => *s,
        _ => default,
    };
    // Leases shorter than 10 s would keep the client busy; treat them as 10 s.
    let lease = secs(OptionCode::AddressLeaseTime, 86_400).max(10);
    let t1 = secs(OptionCode::Renewal, lease / 2).min(lease);
    let t2 = secs(OptionCode::Rebinding, lease / 8 * 7).clamp(t1, lease);
    Some(Lease {
        address,
        prefix_len,
        router,
        dns,
        ntp,
        domain,
        hostname,
        mtu,
        server,
        lease_time: Duration::from_secs(lease.into()),
        renew_after: Duration::from_secs(t1.into()),
        rebind_after: Duration::from_secs(t2.into()),
    })
}

/// A host or domain name safe to write into `/etc/resolv.conf`, `/etc/hosts` and events.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    /// A server's reply to `request` (QEMU's answers, in spirit).
    fn reply(request: &[u8], kind: MessageType, lease_secs: u32) -> Vec<u8> {
        let req = Message::decode(&mut Decoder::new(request)).unwrap();
        let mut msg = Message::new_with_id(
            req.xid(),
            Ipv4Addr::UNSPECIFIED,
            ADDR,
            SERVER,
            Ipv4Addr::UNSPECIFIED,
            &req.chaddr()[..6],
        );
        msg.set_opcode(Opcode::BootReply);
        let o = msg.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]));
        o.insert(DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 0, 2, 4), Ipv4Addr::new(10, 0, 2, 5)]));
        o.insert(DhcpOption::AddressLeaseTime(lease_secs));
        msg.to_vec().unwrap()
    }

    fn sent(actions: &[Action]) -> (Vec<u8>, Destination) {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Send(b, d) => Some((b.clone(), *d)),
                _ => None,
            })
            .expect("a datagram to send")
    }

    fn kind_of(bytes: &[u8]) -> MessageType {
        Message::decode(&mut Decoder::new(bytes)).unwrap().opts().msg_type().unwrap()
    }

    fn bind(c: &mut DhcpClient, t0: Instant, lease: u32) -> Lease {
        let (discover, dest) = sent(&c.start(t0));
        assert_eq!(kind_of(&discover), MessageType::Discover);
        assert_eq!(dest, Destination::Broadcast);
        let asked = Message::decode(&mut Decoder::new(&discover)).unwrap();
        assert!(
            matches!(asked.opts().get(OptionCode::ParameterRequestList), Some(DhcpOption::ParameterRequestList(l)) if l.contains(&OptionCode::NtpServers)),
            "NTP servers are asked for"
        );
        let (request, _) = sent(&c.receive(&reply(&discover, MessageType::Offer, lease), t0));
        assert_eq!(kind_of(&request), MessageType::Request);
        let acts = c.receive(&reply(&request, MessageType::Ack, lease), t0);
        match &acts[..] {
            [Action::Bound(l)] => l.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn discover_offer_request_ack() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, 42, Some("edge".into()));
        let lease = bind(&mut c, t0, 600);
        assert_eq!(lease.address, ADDR);
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.router, Some(SERVER));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(
            lease.ntp,
            [Ipv4Addr::new(10, 0, 2, 4), Ipv4Addr::new(10, 0, 2, 5)],
            "option 42, in order"
        );
        assert_eq!(lease.renew_after, Duration::from_secs(300));
        assert_eq!(lease.rebind_after, Duration::from_secs(525));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(300)));
        assert_eq!(c.state_name(), "bound");
    }

    #[test]
    fn renews_at_t1_by_unicast_then_rebinds_then_expires() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, 7, None);
        bind(&mut c, t0, 600);
        assert!(c.tick(t0 + Duration::from_secs(299)).is_empty());
        let t1 = t0 + Duration::from_secs(300);
        let (req, dest) = sent(&c.tick(t1));
        assert_eq!(dest, Destination::Server(SERVER));
        assert_eq!(Message::decode(&mut Decoder::new(&req)).unwrap().ciaddr(), ADDR);
        let acts = c.receive(&reply(&req, MessageType::Ack, 600), t1);
        assert!(matches!(&acts[..], [Action::Renewed(l)] if l.address == ADDR), "{acts:?}");
        // No answer to the renewal: rebinding by broadcast after T2, then the lease ends.
        let t1b = t1 + Duration::from_secs(300);
        sent(&c.tick(t1b));
        let t2 = t1 + Duration::from_secs(525);
        let mut now = t1b;
        let mut saw_broadcast = false;
        while now < t2 {
            now = c.deadline().unwrap();
            for a in c.tick(now) {
                if let Action::Send(_, Destination::Broadcast) = a {
                    saw_broadcast = true;
                }
            }
        }
        assert!(saw_broadcast);
        let mut lost = false;
        for _ in 0..100 {
            let at = c.deadline().unwrap();
            if c.tick(at).iter().any(|a| matches!(a, Action::Lost(_))) {
                lost = true;
                assert!(at >= t1 + Duration::from_secs(600));
                break;
            }
        }
        assert!(lost);
        assert_eq!(c.state_name(), "selecting");
    }

    #[test]
    fn retries_with_growing_backoff_when_nobody_answers() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, 9, None);
        c.start(t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let next = c.deadline().unwrap();
            delays.push(next - now);
            now = next;
            let acts = c.tick(now);
            assert!(acts.iter().any(|a| matches!(a, Action::Retry { .. })));
            assert_eq!(kind_of(&sent(&acts).0), MessageType::Discover);
        }
        assert!(delays[0] >= Duration::from_millis(1500) && delays[0] <= Duration::from_millis(2500));
        assert!(delays[1] > delays[0] && delays[2] > delays[1]);
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF + Duration::from_secs(1)));
        assert!(delays[7] >= MAX_BACKOFF - Duration::from_secs(1));
    }

    #[test]
    fn a_link_change_sends_discover_again_at_once_but_not_in_a_burst() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, 9, None);
        c.start(t0);
        // Within a second of the last DISCOVER: nothing.
        assert!(c.link_changed(t0 + Duration::from_millis(500)).is_empty());
        // Later (the carrier came up before the first retry): a new DISCOVER now, and the
        // backoff starts over from it.
        let up = t0 + Duration::from_millis(1200);
        let acts = c.link_changed(up);
        assert_eq!(kind_of(&sent(&acts).0), MessageType::Discover);
        assert!(c.deadline().unwrap() >= up + Duration::from_millis(1500), "{:?}", c.deadline());
        assert!(c.link_changed(up + Duration::from_millis(300)).is_empty());
        // Bound, a link change does nothing.
        let mut b = DhcpClient::new(MAC, 3, None);
        bind(&mut b, t0, 86_400);
        assert!(b.link_changed(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(b.state_name(), "bound");
    }

    #[test]
    fn forced_renewal_and_release() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, 3, None);
        bind(&mut c, t0, 86_400);
        let later = t0 + Duration::from_secs(5);
        let (req, dest) = sent(&c.renew_now(later));
        assert_eq!(dest, Destination::Server(SERVER));
        assert!(matches!(
            &c.receive(&reply(&req, MessageType::Ack, 86_400), later)[..],
            [Action::Renewed(_)]
        ));
        let (release, dest) = c.release().unwrap();
        assert_eq!(kind_of(&release), MessageType::Release);
        assert_eq!(dest, Destination::Server(SERVER));
        assert!(c.lease().is_none());
    }

    #[test]
    fn nak_starts_over_and_strangers_are_ignored() {
        let t0 = Instant::now();
        let mut c = DhcpClient::new(MAC, 5, None);
        let (discover, _) = sent(&c.start(t0));
        let (request, _) = sent(&c.receive(&reply(&discover, MessageType::Offer, 60), t0));
        // A reply to another transaction is ignored.
        let mut other = Message::decode(&mut Decoder::new(&reply(&request, MessageType::Ack, 60))).unwrap();
        other.set_xid(other.xid().wrapping_add(1));
        assert!(c.receive(&other.to_vec().unwrap(), t0).is_empty());
        let acts = c.receive(&reply(&request, MessageType::Nak, 60), t0);
        assert_eq!(kind_of(&sent(&acts).0), MessageType::Discover);
    }

    /// Property: no input makes the client panic (arbitrary bytes and mutated real replies).
    #[test]
    fn requests_are_built_without_the_crates_random_ids() {
        // The same bytes as dhcproto's constructor (which draws an unused random id first).
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let ciaddr = Ipv4Addr::new(10, 0, 2, 15);
        let ours = boot_request(0xdead_beef, ciaddr, &mac).expect("the fixed header decodes");
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let theirs = Message::new_with_id(0xdead_beef, ciaddr, unspecified, unspecified, unspecified, &mac);
        assert_eq!(encode(&ours), encode(&theirs));
        assert_eq!((ours.xid(), ours.chaddr(), ours.opcode()), (0xdead_beef, &mac[..], Opcode::BootRequest));
    }

    #[test]
    // Random inputs: each cast keeps the low bits of the generator's output on purpose.
    #[allow(clippy::cast_possible_truncation)]
    fn arbitrary_datagrams_never_panic() {
        let t0 = Instant::now();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut c = DhcpClient::new(MAC, 11, None);
        let (discover, _) = sent(&c.start(t0));
        let offer = reply(&discover, MessageType::Offer, 60);
        for i in 0..20_000 {
            let mut bytes = if i % 2 == 0 {
                let len = (next() % 600) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                offer.clone()
            };
            for _ in 0..(next() % 8) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            if next() % 4 == 0 {
                let cut = (next() as usize) % (bytes.len() + 1);
                bytes.truncate(cut);
            }
            let _ = c.receive(&bytes, t0);
            if i % 1000 == 0 {
                c.start(t0);
            }
        }
    }
}
