//! SNTP packets (RFC 4330 §4; RFC 5905's header): the client request, and the checks a reply
//! must pass before its time is believed (RFC 4330 §5, as systemd-timesyncd applies them).
//! Pure: no I/O, unit tested.
//!
//! Timestamps are 32.32 fixed point seconds since 1900-01-01 (the NTP era 0). A timestamp
//! whose top bit is clear is read as era 1 (from 2036-02-07), as RFC 4330 §3 advises.

/// A request's and a reply's length (no extension fields, no MAC).
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900-01-01 to 1970-01-01.
const NTP_TO_UNIX_S: i128 = 2_208_988_800;
/// Seconds in one NTP era (2^32).
const ERA_S: i128 = 1 << 32;
/// The largest root distance believed (systemd-timesyncd's bound).
const MAX_ROOT_DISTANCE_NS: i128 = 5_000_000_000;

/// An NTP timestamp as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The timestamp of `unix_ns` nanoseconds since 1970 (its era folded away).
    pub fn from_unix_ns(unix_ns: i128) -> NtpTime {
        let ns = unix_ns + NTP_TO_UNIX_S * 1_000_000_000;
        let secs = ns.div_euclid(1_000_000_000).rem_euclid(ERA_S);
        let frac = (ns.rem_euclid(1_000_000_000) << 32) / 1_000_000_000;
        // Both parts are below 2^32 by construction.
        NtpTime((u64::try_from(secs).unwrap_or(0) << 32) | u64::try_from(frac).unwrap_or(0))
    }

    /// Nanoseconds since 1970; era 1 when the top bit is clear (RFC 4330 §3).
    pub fn to_unix_ns(self) -> i128 {
        let secs = i128::from(self.0 >> 32);
        let era = if secs & 0x8000_0000 == 0 { ERA_S } else { 0 };
        let frac_ns = (i128::from(self.0 & 0xffff_ffff) * 1_000_000_000) >> 32;
        (secs + era - NTP_TO_UNIX_S) * 1_000_000_000 + frac_ns
    }
}

/// A client request (LI 0, version 4, mode 3) carrying `transmit`, which the server echoes
/// as the reply's originate timestamp: the reply's proof that it answers this request.
pub fn request(transmit: NtpTime) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
    p
}

/// What a good reply says about our clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    /// The server's time minus ours, in nanoseconds (positive: our clock is behind).
    pub offset_ns: i128,
    /// The round trip less the server's own time, in nanoseconds.
    pub delay_ns: i128,
    /// The server's stratum (1–15).
    pub stratum: u8,
}

/// Why a reply is not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A Kiss-o'-Death (stratum 0) with its code (`DENY`, `RSTR`, `RATE` …).
    Kiss(String),
    /// Not an answer to our request: another packet on the port, ignored.
    NotOurs,
    /// An answer, but not one to set a clock from.
    Bad(String),
}

impl Refusal {
    /// Whether the server asks never to be asked again (RFC 5905 §7.4: DENY and RSTR).
    pub fn stop_asking(&self) -> bool {
        matches!(self, Refusal::Kiss(code) if code == "DENY" || code == "RSTR")
    }
}

fn be_u32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn be_u64(p: &[u8], at: usize) -> u64 {
    (u64::from(be_u32(p, at)) << 32) | u64::from(be_u32(p, at + 4))
}

/// A 16.16 fixed point duration in nanoseconds.
fn short_ns(v: u32) -> i128 {
    (i128::from(v) * 1_000_000_000) >> 16
}

/// Judges `reply` to the request that carried `sent`, sent at `t1_ns` and answered at `t4_ns`
/// (our clock, ns since 1970): RFC 4330 §5's offset and delay, or why it is refused.
pub fn judge(reply: &[u8], sent: NtpTime, t1_ns: i128, t4_ns: i128) -> Result<Measurement, Refusal> {
    if reply.len() < PACKET_LEN {
        return Err(Refusal::NotOurs);
    }
    let (li, version, mode) = (reply[0] >> 6, (reply[0] >> 3) & 7, reply[0] & 7);
    if mode != 4 || be_u64(reply, 24) != sent.0 {
        return Err(Refusal::NotOurs);
    }
    if !(3..=4).contains(&version) {
        return Err(Refusal::Bad(format!("NTP version {version}")));
    }
    let stratum = reply[1];
    if stratum == 0 {
        let code: String =
            reply[12..16].iter().map(|&b| char::from(b)).filter(|c| c.is_ascii_graphic()).collect();
        return Err(Refusal::Kiss(code));
    }
    if stratum >= 16 || li == 3 {
        return Err(Refusal::Bad("the server's clock is not synchronised".into()));
    }
    let root_distance = short_ns(be_u32(reply, 4)) / 2 + short_ns(be_u32(reply, 8));
    if root_distance > MAX_ROOT_DISTANCE_NS {
        return Err(Refusal::Bad(format!("root distance {} ms is over 5 s", root_distance / 1_000_000)));
    }
    let (receive, transmit) = (NtpTime(be_u64(reply, 32)), NtpTime(be_u64(reply, 40)));
    if transmit.0 == 0 {
        return Err(Refusal::Bad("no transmit timestamp".into()));
    }
    let (t2, t3) = (receive.to_unix_ns(), transmit.to_unix_ns());
    let delay_ns = (t4_ns - t1_ns) - (t3 - t2);
    if delay_ns < 0 {
        return Err(Refusal::Bad("a negative round trip".into()));
    }
    Ok(Measurement { offset_ns: ((t2 - t1_ns) + (t3 - t4_ns)) / 2, delay_ns, stratum })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    /// A server's reply to `req`, with its clock `ahead` ns ahead of the client's, `hold` ns
    /// between receiving and sending.
    fn reply(req: &[u8; PACKET_LEN], t1: i128, one_way: i128, ahead: i128, hold: i128) -> [u8; PACKET_LEN] {
        let mut r = [0u8; PACKET_LEN];
        r[0] = 0x24; // LI 0, version 4, mode 4
        r[1] = 2;
        r[4..8].copy_from_slice(&0x0000_0800u32.to_be_bytes()); // 31 ms root delay
        r[24..32].copy_from_slice(&req[40..48]);
        let t2 = t1 + one_way + ahead;
        r[32..40].copy_from_slice(&NtpTime::from_unix_ns(t2).0.to_be_bytes());
        r[40..48].copy_from_slice(&NtpTime::from_unix_ns(t2 + hold).0.to_be_bytes());
        r
    }

    #[test]
    fn timestamps_round_trip_and_cross_the_2036_era() {
        for unix_s in [0i128, 978_307_200, 1_796_515_200, 2_085_978_496, 2_085_978_497, 4_000_000_000] {
            let ns = unix_s * S + 123_456_789;
            let back = NtpTime::from_unix_ns(ns).to_unix_ns();
            assert!((back - ns).abs() <= 1, "{unix_s}: {back} vs {ns}");
        }
        // 1900-01-01 is NTP 0 in era 0; read back as era 1 (2036-02-07T06:28:16Z).
        assert_eq!(NtpTime(0).to_unix_ns(), (ERA_S - NTP_TO_UNIX_S) * S);
        // 2001-01-01 from RFC 4330's epoch table: 3,187,296,000 s after 1900.
        assert_eq!(NtpTime::from_unix_ns(978_307_200 * S).0 >> 32, 3_187_296_000);
    }

    #[test]
    fn the_request_is_a_version_4_client_packet_with_the_cookie() {
        let t = NtpTime(0x1122_3344_5566_7788);
        let p = request(t);
        assert_eq!(p[0], 0x23);
        assert!(p[1..40].iter().all(|&b| b == 0));
        assert_eq!(&p[40..], &t.0.to_be_bytes());
    }

    #[test]
    fn a_clock_25_years_behind_is_measured() {
        // The client thinks it is 2001; the server says 2026; 10 ms each way, 1 ms held.
        let t1 = 978_307_200 * S;
        let ahead = (1_796_515_200 - 978_307_200) * S;
        let sent = NtpTime::from_unix_ns(t1);
        let r = reply(&request(sent), t1, 10_000_000, ahead, 1_000_000);
        let t4 = t1 + 21_000_000;
        let m = judge(&r, sent, t1, t4).unwrap();
        assert!((m.offset_ns - ahead).abs() < 2, "{m:?}");
        assert!((m.delay_ns - 20_000_000).abs() < 2, "{m:?}");
        assert_eq!(m.stratum, 2);
    }

    #[test]
    fn replies_that_are_not_ours_or_not_good_are_refused() {
        let t1 = 1_796_515_200 * S;
        let sent = NtpTime::from_unix_ns(t1);
        let good = reply(&request(sent), t1, 1_000_000, 0, 0);
        let t4 = t1 + 2_000_000;
        assert!(judge(&good, sent, t1, t4).is_ok());
        let with = |f: &dyn Fn(&mut [u8; PACKET_LEN])| {
            let mut r = good;
            f(&mut r);
            judge(&r, sent, t1, t4)
        };
        assert_eq!(judge(&good[..47], sent, t1, t4), Err(Refusal::NotOurs), "short");
        assert_eq!(with(&|r| r[24] ^= 1), Err(Refusal::NotOurs), "another request's cookie");
        assert_eq!(with(&|r| r[0] = 0x23), Err(Refusal::NotOurs), "mode 3 is a request");
        assert_eq!(with(&|r| r[0] = 0x14), Err(Refusal::Bad("NTP version 2".into())));
        assert!(
            matches!(with(&|r| r[0] = 0xe4), Err(Refusal::Bad(e)) if e.contains("not synchronised")),
            "LI 3"
        );
        assert!(matches!(with(&|r| r[1] = 16), Err(Refusal::Bad(e)) if e.contains("not synchronised")));
        assert!(
            matches!(with(&|r| r[8..12].copy_from_slice(&(6u32 << 16).to_be_bytes())), Err(Refusal::Bad(e)) if e.contains("root distance"))
        );
        assert_eq!(with(&|r| r[40..48].fill(0)), Err(Refusal::Bad("no transmit timestamp".into())));
        let deny = with(&|r| {
            r[1] = 0;
            r[12..16].copy_from_slice(b"DENY");
        });
        assert_eq!(deny, Err(Refusal::Kiss("DENY".into())));
        assert!(deny.unwrap_err().stop_asking());
        let rate = with(&|r| {
            r[1] = 0;
            r[12..16].copy_from_slice(b"RATE");
        });
        assert!(!rate.unwrap_err().stop_asking(), "RATE slows down, it does not stop");
        // An answer that arrives before it was sent.
        assert_eq!(judge(&good, sent, t1, t1 - 5_000_000), Err(Refusal::Bad("a negative round trip".into())));
    }
}
