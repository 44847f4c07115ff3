//! rtnetlink requests PID 1 makes (links, addresses, routes, bridge, veth), one request and its
//! acknowledgement at a time, with `netlink-packet-route` for the wire format; and the
//! nftables batch sender.
//!
//! A netlink socket belongs to the network namespace it was created in: [`Rtnl::in_netns`]
//! enters a container's namespace just long enough to create one (PID 1 is single-threaded and
//! returns to its own namespace before anything else runs).

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols, Socket, SocketAddr};

/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u16 = 1;

/// A link as the kernel lists it.
#[derive(Debug, Clone)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// `IFLA_INFO_KIND` (`"bridge"`, `"veth"` …); `None` for hardware.
    pub kind: Option<String>,
    /// ARPHRD_ETHER.
    pub ethernet: bool,
}

impl Link {
    /// A hardware ethernet interface (not a bridge, veth or other virtual link).
    pub fn is_hardware_ethernet(&self) -> bool {
        self.ethernet && self.kind.is_none() && self.name != "lo"
    }
}

/// A route to add.
#[derive(Debug, Clone)]
pub struct Route {
    /// Destination (`0.0.0.0/0` for the default route).
    pub to: IpNet,
    /// Next hop; `None` for a directly connected route.
    pub via: Option<IpAddr>,
    /// Outgoing interface.
    pub oif: u32,
    /// Metric.
    pub metric: Option<u32>,
    /// Who added it (`RTPROT_STATIC`, `RTPROT_DHCP` …).
    pub protocol: RouteProtocol,
}

/// An rtnetlink socket.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn io_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Rtnl {
    /// A socket in PID 1's own network namespace.
    pub fn open() -> Result<Rtnl, String> {
        let mut sock = Socket::new(protocols::NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))?;
        sock.bind_auto().map_err(|e| format!("netlink bind: {e}"))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(|e| format!("netlink connect: {e}"))?;
        set_receive_timeout(&sock, 2);
        Ok(Rtnl { sock, seq: 1 })
    }

    /// A socket in the network namespace `netns` refers to (e.g. `/proc/PID/ns/net`).
    pub fn in_netns(netns: &OwnedFd) -> Result<Rtnl, String> {
        let own = std::fs::File::open("/proc/self/ns/net").map_err(|e| format!("open own netns: {e}"))?;
        nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter the container's network namespace: {e}"))?;
        let result = Rtnl::open();
        // Back home before anything else: PID 1's sockets and routes live there.
        if let Err(e) = nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
            crate::pid1::log::error(&format!("cannot return to PID 1's network namespace: {e}"));
        }
        result
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16) -> (Vec<u8>, u32) {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        (buf, seq)
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), nix::errno::Errno> {
        let (buf, seq) = self.encode(msg, flags | NLM_F_REQUEST | NLM_F_ACK);
        self.sock
            .send(&buf, 0)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut done = false;
        let mut result = Ok(());
        while !done {
            self.read_replies(|m| {
                if m.header.sequence_number != seq {
                    return;
                }
                if let NetlinkPayload::Error(e) = &m.payload {
                    done = true;
                    if let Some(code) = e.code {
                        result = Err(nix::errno::Errno::from_raw(-code.get()));
                    }
                }
            })
            .map_err(|_| nix::errno::Errno::EIO)?;
        }
        result
    }

    /// Reads one datagram and hands each message to `f`.
    fn read_replies(
        &mut self,
        mut f: impl FnMut(&NetlinkMessage<RouteNetlinkMessage>),
    ) -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.sock.recv(&mut &mut buf[..], 0).map_err(io_err)?;
        for m in crate::net::rtnl::parse_messages(&buf[..n]) {
            f(&m);
        }
        Ok(())
    }

    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>, String> {
        let (buf, seq) =
            self.encode(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_REQUEST | NLM_F_DUMP);
        self.sock.send(&buf, 0).map_err(io_err)?;
        let mut links = Vec::new();
        let mut done = false;
        let mut failed = None;
        while !done {
            self.read_replies(|m| {
                if m.header.sequence_number != seq {
                    return;
                }
                match &m.payload {
                    NetlinkPayload::Done(_) => done = true,
                    NetlinkPayload::Error(e) => {
                        done = true;
                        failed =
                            e.code.map(|c| format!("list links: {}", nix::errno::Errno::from_raw(-c.get())));
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                        let mut link = Link {
                            index: l.header.index,
                            name: String::new(),
                            mac: Vec::new(),
                            kind: None,
                            ethernet: u16::from(l.header.link_layer_type) == ARPHRD_ETHER,
                        };
                        for a in &l.attributes {
                            match a {
                                LinkAttribute::IfName(n) => link.name = n.clone(),
                                LinkAttribute::Address(m) => link.mac = m.clone(),
                                LinkAttribute::LinkInfo(infos) => {
                                    for i in infos {
                                        if let LinkInfo::Kind(k) = i {
                                            link.kind = Some(k.to_string());
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        links.push(link);
                    }
                    _ => {}
                }
            })?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(links),
        }
    }

    /// The index of the link named `name`.
    pub fn index_of(&mut self, name: &str) -> Result<Option<u32>, String> {
        Ok(self.links()?.into_iter().find(|l| l.name == name).map(|l| l.index))
    }

    /// Sets a link up, optionally with an MTU.
    pub fn set_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), String> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(m) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map_err(|e| format!("set link {index} up: {e}"))
    }

    /// Puts a link on a bridge.
    pub fn set_master(&mut self, index: u32, bridge: u32) -> Result<(), String> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(bridge));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| format!("attach link {index} to the bridge: {e}"))
    }

    /// Creates a bridge (or finds the existing one); returns its index.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<u32, String> {
        if let Some(i) = self.index_of(name)? {
            return Ok(i);
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(m) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| format!("create bridge {name}: {e}"))?;
        self.index_of(name)?.ok_or_else(|| format!("bridge {name} vanished after creation"))
    }

    /// Creates a veth pair: `host` here, `peer` created directly in the namespace `peer_netns`.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: &OwnedFd,
        mtu: Option<u32>,
    ) -> Result<u32, String> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if let Some(m) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
            peer_msg.attributes.push(LinkAttribute::Mtu(m));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| format!("create veth {host}: {e}"))?;
        self.index_of(host)?.ok_or_else(|| format!("veth {host} vanished after creation"))
    }

    /// Deletes a link; a link that is gone already is fine.
    pub fn delete_link(&mut self, index: u32) -> Result<(), String> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) | Err(nix::errno::Errno::ENODEV) => Ok(()),
            Err(e) => Err(format!("delete link {index}: {e}")),
        }
    }

    fn address_message(index: u32, addr: IpNet) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = if addr.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.addr()));
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        if let IpNet::V4(v4) = addr {
            if v4.prefix_len() < 31 {
                msg.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        msg
    }

    /// Adds an address (an existing identical one is fine).
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<(), String> {
        match self.request(
            RouteNetlinkMessage::NewAddress(Self::address_message(index, addr)),
            NLM_F_CREATE | NLM_F_REPLACE,
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(format!("add address {addr}: {e}")),
        }
    }

    /// Removes an address (a missing one is fine).
    pub fn del_address(&mut self, index: u32, addr: IpNet) -> Result<(), String> {
        match self.request(RouteNetlinkMessage::DelAddress(Self::address_message(index, addr)), 0) {
            Ok(()) | Err(nix::errno::Errno::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(format!("remove address {addr}: {e}")),
        }
    }

    /// Adds or replaces a route.
    pub fn add_route(&mut self, r: &Route) -> Result<(), String> {
        let mut msg = RouteMessage::default();
        let v4 = r.to.addr().is_ipv4();
        msg.header.address_family = if v4 { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = r.to.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = r.protocol;
        msg.header.scope = if r.via.is_some() { RouteScope::Universe } else { RouteScope::Link };
        msg.header.kind = RouteType::Unicast;
        let addr = |a: IpAddr| match a {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        };
        if r.to.prefix_len() > 0 {
            msg.attributes.push(RouteAttribute::Destination(addr(r.to.network())));
        }
        if let Some(via) = r.via {
            msg.attributes.push(RouteAttribute::Gateway(addr(via)));
        }
        msg.attributes.push(RouteAttribute::Oif(r.oif));
        if let Some(m) = r.metric {
            msg.attributes.push(RouteAttribute::Priority(m));
        }
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_REPLACE).map_err(|e| {
            let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
            format!("add route to {}{via}: {e}", r.to)
        })
    }
}

/// Makes `recv` on a netlink socket give up after `secs` (the kernel answers at once; this only
/// keeps a lost reply from stopping PID 1 for ever).
fn set_receive_timeout(sock: &Socket, secs: i64) {
    let timeout = libc::timeval { tv_sec: secs, tv_usec: 0 };
    // A timeval is 16 bytes (8 on 32-bit targets): its size fits a socklen_t.
    #[allow(clippy::cast_possible_truncation)]
    let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: setsockopt reads a timeval that lives across the call, on a socket we own.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            len,
        );
    }
}

/// Sends an nftables batch (see `crate::net::nft`) and checks every acknowledgement.
pub fn send_nft_batch(batch: &crate::net::nft::EncodedBatch) -> Result<(), String> {
    let mut sock = Socket::new(protocols::NETLINK_NETFILTER).map_err(|e| format!("netfilter socket: {e}"))?;
    sock.bind_auto().map_err(|e| format!("netfilter bind: {e}"))?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(|e| format!("netfilter connect: {e}"))?;
    set_receive_timeout(&sock, 2);
    sock.send(&batch.bytes, 0).map_err(|e| format!("send nftables batch: {e}"))?;
    let mut pending: Vec<u32> = batch.acked.clone();
    let mut first_error = None;
    let mut buf = vec![0u8; 64 * 1024];
    while !pending.is_empty() {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) => {
                if first_error.is_some() {
                    break;
                }
                return Err(format!("nftables: no answer from the kernel ({e})"));
            }
        };
        for (seq, errno) in crate::net::nft::parse_acks(&buf[..n]) {
            pending.retain(|s| *s != seq);
            if errno != 0 && first_error.is_none() {
                first_error = Some(nix::errno::Errno::from_raw(errno));
            }
        }
    }
    match first_error {
        Some(e) => Err(format!("nftables rejected the NAT rules: {e} (is nf_tables loaded?)")),
        None => Ok(()),
    }
}
