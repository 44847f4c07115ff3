//! nftables rules for the container bridge, as one netlink batch (no `nft` binary).
//!
//! berth owns one table, `ip berth`, and replaces it whole in a single transaction whenever the
//! set of published ports changes: the kernel applies a batch atomically, so there is never a
//! moment without NAT, and no rule handles need tracking. The table holds:
//!
//! ```text
//! table ip berth {
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr SUBNET oifname != BRIDGE masquerade }            # outbound NAT
//!   chain prerouting { type nat hook prerouting priority dstnat;
//!     iifname != BRIDGE [ip daddr HOST_IP] meta l4proto tcp th dport 8080 dnat to 172.30.0.2:80 }
//! }
//! ```
//!
//! Published ports are DNAT rules rather than a userland proxy in PID 1: the kernel forwards
//! the packets (no copy through PID 1, no extra memory per connection, the container sees the
//! client's real address), and they disappear with the rule when the container stops.
//!
//! Wire format (linux/netfilter/nf_tables.h): every message is a netlink header, a
//! `nfgenmsg` (family, version 0, resource id) and attributes; nftables integers are big
//! endian; the batch is framed by `NFNL_MSG_BATCH_BEGIN`/`END` addressed to the nftables
//! subsystem.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use berth_schema::config::{PortMapping, Protocol};

/// The table berth owns.
pub const TABLE: &str = "berth";

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFPROTO_IPV4: u8 = 2;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_IP_PRI_NAT_DST: i32 = -100;
const NF_IP_PRI_NAT_SRC: i32 = 100;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// Register 1 (16 bytes) and 2.
const REG1: u32 = 1;
const REG2: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_NAT_DNAT: u32 = 1;

/// A published port bound to a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The published port.
    pub port: PortMapping,
    /// The container's address on the bridge.
    pub container: Ipv4Addr,
}

/// Attribute writer: appends type-length-value attributes, 4-byte aligned.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        // The values are names, addresses, ports and the nested expressions of one rule: a few
        // hundred bytes, far below the u16 length field's limit.
        #[allow(clippy::cast_possible_truncation)]
        let len = (4 + value.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.pad();
        self
    }
    fn string(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.bytes(kind, &v)
    }
    fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }
    fn nested(&mut self, kind: u16, inner: Attrs) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }
    /// `NFTA_*_DATA`-style nested value.
    fn data(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let mut inner = Attrs::default();
        inner.bytes(NFTA_DATA_VALUE, value);
        self.nested(kind, inner)
    }
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

/// One expression of a rule.
fn expr(name: &str, data: Attrs) -> Attrs {
    let mut e = Attrs::default();
    e.string(NFTA_EXPR_NAME, name);
    if !data.0.is_empty() {
        e.nested(NFTA_EXPR_DATA, data);
    }
    e
}

fn meta(key: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, REG1).be32(2, key); // NFTA_META_DREG, NFTA_META_KEY
    expr("meta", d)
}

fn cmp(op: u32, value: &[u8]) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, REG1).be32(2, op).data(3, value); // SREG, OP, DATA
    expr("cmp", d)
}

fn payload(base: u32, offset: u32, len: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, REG1).be32(2, base).be32(3, offset).be32(4, len); // DREG, BASE, OFFSET, LEN
    expr("payload", d)
}

fn bitwise_mask(mask: &[u8; 4]) -> Attrs {
    let mut d = Attrs::default();
    // LEN is the mask's length: 4 bytes, an IPv4 mask.
    d.be32(1, REG1).be32(2, REG1).be32(3, 4).data(4, mask).data(5, &[0; 4]);
    expr("bitwise", d)
}

fn immediate(reg: u32, value: &[u8]) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, reg).data(2, value); // DREG, DATA
    expr("immediate", d)
}

fn ifname(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = name.len().min(15);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// A batch under construction.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    acked: Vec<u32>,
}

impl Batch {
    fn message(&mut self, kind: u16, flags: u16, family: u8, attrs: &Attrs) {
        // One message is one table, chain or rule: far below the u32 length field's limit.
        #[allow(clippy::cast_possible_truncation)]
        let len = (16 + 4 + attrs.0.len()) as u32;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        let res_id =
            if kind == NFNL_MSG_BATCH_BEGIN || kind == NFNL_MSG_BATCH_END { NFNL_SUBSYS_NFTABLES } else { 0 };
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(&attrs.0);
        if flags & NLM_F_ACK != 0 {
            self.acked.push(self.seq);
        }
        self.seq = self.seq.wrapping_add(1);
    }

    fn nft(&mut self, msg: u16, flags: u16, attrs: &Attrs) {
        self.message(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_IPV4,
            attrs,
        );
    }

    fn chain(&mut self, name: &str, hook: u32, priority: i32) {
        let mut h = Attrs::default();
        h.be32(NFTA_HOOK_HOOKNUM, hook).be32(NFTA_HOOK_PRIORITY, priority as u32);
        let mut a = Attrs::default();
        a.string(NFTA_CHAIN_TABLE, TABLE)
            .string(NFTA_CHAIN_NAME, name)
            .nested(NFTA_CHAIN_HOOK, h)
            .string(NFTA_CHAIN_TYPE, "nat");
        self.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a);
    }

    fn rule(&mut self, chain: &str, exprs: Vec<Attrs>) {
        let mut list = Attrs::default();
        for e in exprs {
            list.nested(NFTA_LIST_ELEM, e);
        }
        let mut a = Attrs::default();
        a.string(NFTA_RULE_TABLE, TABLE).string(NFTA_RULE_CHAIN, chain).nested(NFTA_RULE_EXPRESSIONS, list);
        self.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &a);
    }
}

/// An encoded batch: the bytes to send, and the sequence numbers the kernel will acknowledge.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The datagram for a `NETLINK_NETFILTER` socket.
    pub bytes: Vec<u8>,
    /// Sequence numbers of the messages that ask for an acknowledgement.
    pub acked: Vec<u32>,
}

/// The batch that (re)creates berth's table: masquerade for the bridge's subnet and one DNAT
/// rule per forward. Sequence numbers start at `seq`.
pub fn nat_table(seq: u32, bridge: &str, subnet: Ipv4Net, forwards: &[Forward]) -> EncodedBatch {
    let mut b = Batch { buf: Vec::new(), seq, acked: Vec::new() };
    b.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, &Attrs::default());
    let mut table = Attrs::default();
    table.string(NFTA_TABLE_NAME, TABLE);
    // add + delete + add: replaces whatever an earlier run left, without failing when the
    // table does not exist yet.
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
    b.nft(NFT_MSG_DELTABLE, 0, &table);
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table);
    b.chain("postrouting", NF_INET_POST_ROUTING, NF_IP_PRI_NAT_SRC);
    b.chain("prerouting", NF_INET_PRE_ROUTING, NF_IP_PRI_NAT_DST);

    let mask = u32::MAX.checked_shl(32 - u32::from(subnet.prefix_len())).unwrap_or(0).to_be_bytes();
    b.rule(
        "postrouting",
        vec![
            payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4), // ip saddr
            bitwise_mask(&mask),
            cmp(NFT_CMP_EQ, &subnet.network().octets()),
            meta(NFT_META_OIFNAME),
            cmp(NFT_CMP_NEQ, &ifname(bridge)),
            expr("masq", Attrs::default()),
        ],
    );
    for f in forwards {
        let mut exprs = vec![meta(NFT_META_IIFNAME), cmp(NFT_CMP_NEQ, &ifname(bridge))];
        if let Some(ip) = f.port.host_ip {
            exprs.push(payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)); // ip daddr
            exprs.push(cmp(NFT_CMP_EQ, &ip.octets()));
        }
        let proto = match f.port.protocol {
            Protocol::Tcp => 6u8,
            Protocol::Udp => 17u8,
        };
        exprs.push(meta(NFT_META_L4PROTO));
        exprs.push(cmp(NFT_CMP_EQ, &[proto]));
        exprs.push(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)); // th dport
        exprs.push(cmp(NFT_CMP_EQ, &f.port.host_port.to_be_bytes()));
        exprs.push(immediate(REG1, &f.container.octets()));
        exprs.push(immediate(REG2, &f.port.container_port.to_be_bytes()));
        let mut nat = Attrs::default();
        // NFTA_NAT_TYPE, NFTA_NAT_FAMILY, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_PROTO_MIN
        nat.be32(1, NFT_NAT_DNAT).be32(2, u32::from(NFPROTO_IPV4)).be32(3, REG1).be32(5, REG2);
        exprs.push(expr("nat", nat));
        b.rule("prerouting", exprs);
    }
    b.message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, &Attrs::default());
    EncodedBatch { bytes: b.buf, acked: b.acked }
}

/// Reads the acknowledgements in a reply datagram: `(seq, errno)` for each `NLMSG_ERROR`
/// (errno 0 is an ack). Malformed input ends the walk; it never panics.
pub fn parse_acks(buf: &[u8]) -> Vec<(u32, i32)> {
    const NLMSG_ERROR: u16 = 2;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 16 <= buf.len() {
        let field =
            |o: usize| u32::from_ne_bytes([buf[at + o], buf[at + o + 1], buf[at + o + 2], buf[at + o + 3]]);
        let len = field(0) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < 16 || at + len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            let errno = i32::from_ne_bytes([buf[at + 16], buf[at + 17], buf[at + 18], buf[at + 19]]);
            // The acknowledged request's header follows the error code.
            let seq = if len >= 20 + 16 { field(20 + 8) } else { field(8) };
            out.push((seq, -errno));
        }
        at += (len + 3) & !3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(bytes: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(bytes[at + 4..at + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(bytes[at + 6..at + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(len % 4, 0);
            out.push((kind, flags, seq));
            at += len;
        }
        assert_eq!(at, bytes.len());
        out
    }

    #[test]
    fn batch_framing() {
        let subnet: Ipv4Net = "172.30.0.0/16".parse().unwrap();
        let fwd =
            Forward { port: PortMapping::parse("8080:80").unwrap(), container: Ipv4Addr::new(172, 30, 0, 2) };
        let b = nat_table(100, "berth0", subnet, &[fwd, fwd]);
        let msgs = walk(&b.bytes);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        let nft = |m: u16| (10 << 8) | m;
        assert_eq!(kinds, vec![0x10, nft(0), nft(2), nft(0), nft(3), nft(3), nft(6), nft(6), nft(6), 0x11]);
        assert_eq!(msgs.iter().map(|m| m.2).collect::<Vec<_>>(), (100..110).collect::<Vec<_>>());
        assert_eq!(b.acked, (101..109).collect::<Vec<_>>());
        // The bridge name and the container's address are in the bytes as the kernel wants them.
        let hay = &b.bytes;
        assert!(hay.windows(16).any(|w| w == ifname("berth0")));
        assert!(hay.windows(4).any(|w| w == [172, 30, 0, 2]));
        assert!(hay.windows(8).any(|w| w == b"berth\0\0\0"));
    }

    #[test]
    fn acks_parse_and_garbage_does_not_panic() {
        let mut reply = Vec::new();
        for (seq, err) in [(5u32, 0i32), (6, -2)] {
            reply.extend_from_slice(&36u32.to_ne_bytes());
            reply.extend_from_slice(&2u16.to_ne_bytes());
            reply.extend_from_slice(&0u16.to_ne_bytes());
            reply.extend_from_slice(&seq.to_ne_bytes());
            reply.extend_from_slice(&0u32.to_ne_bytes());
            reply.extend_from_slice(&err.to_ne_bytes());
            reply.extend_from_slice(&16u32.to_ne_bytes());
            reply.extend_from_slice(&[0; 4]);
            reply.extend_from_slice(&seq.to_ne_bytes());
            reply.extend_from_slice(&[0; 4]);
        }
        assert_eq!(parse_acks(&reply), vec![(5, 0), (6, 2)]);
        let mut rng = 12345u64;
        for n in 0..5000 {
            let len = n % 97;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (rng >> 33).to_le_bytes()[0] // a random byte: the low 8 bits
                })
                .collect();
            let _ = parse_acks(&bytes);
            let mut cut = reply.clone();
            cut.truncate(n % reply.len());
            let _ = parse_acks(&cut);
        }
    }
}
