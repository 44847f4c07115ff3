//! Reading rtnetlink replies: a datagram holds several netlink messages back to back.

use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

/// Splits a datagram into messages and decodes each. A message the decoder rejects is skipped
/// (the ones after it, e.g. the end of a dump, still count); a panic inside the decoder (a bug
/// in it, on input from the kernel) is caught and skips the message too: PID 1 must not go down
/// or wait for ever over a reply it cannot read. A broken length ends the walk.
pub fn parse_messages(buf: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let one = &buf[at..at + len];
        let decoded = std::panic::catch_unwind(|| NetlinkMessage::<RouteNetlinkMessage>::deserialize(one));
        if let Ok(Ok(m)) = decoded {
            out.push(m);
        }
        at += (len + 3) & !3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkPayload};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    fn link_dump() -> Vec<u8> {
        let mut bytes = Vec::new();
        for (i, name) in ["lo", "eth0", "berth0"].iter().enumerate() {
            let mut msg = LinkMessage::default();
            let i = u8::try_from(i).unwrap();
            msg.header.index = u32::from(i) + 1;
            msg.attributes.push(LinkAttribute::IfName(name.to_string()));
            msg.attributes.push(LinkAttribute::Address(vec![0x52, 0x54, 0, 0x12, 0x34, i]));
            msg.attributes.push(LinkAttribute::Mtu(1500));
            let mut nl = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::from(RouteNetlinkMessage::NewLink(msg)),
            );
            nl.finalize();
            let mut buf = vec![0u8; nl.buffer_len()];
            nl.serialize(&mut buf);
            bytes.extend_from_slice(&buf);
        }
        bytes
    }

    #[test]
    fn reads_a_dump() {
        let msgs = parse_messages(&link_dump());
        assert_eq!(msgs.len(), 3);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = &msgs[1].payload else {
            panic!()
        };
        assert!(l.attributes.contains(&LinkAttribute::IfName("eth0".into())));
    }

    /// Property: arbitrary bytes and mutated real replies never panic.
    #[test]
    // Random inputs: each cast keeps the low bits of the generator's output on purpose.
    #[allow(clippy::cast_possible_truncation)]
    fn arbitrary_replies_never_panic() {
        let real = link_dump();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..20_000 {
            let mut bytes = if i % 2 == 0 {
                (0..(next() % 300)).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                real.clone()
            };
            for _ in 0..(next() % 6) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            if next() % 3 == 0 {
                let cut = (next() as usize) % (bytes.len() + 1);
                bytes.truncate(cut);
            }
            let _ = parse_messages(&bytes);
        }
    }
}
