//! The kernel command line's `ip=` and `nameserver=` (dracut's syntax), which override
//! `[[network.interface]]` for one boot.
//!
//! Forms understood (dracut.cmdline(7)):
//! - `ip=dhcp` / `ip=on` / `ip=any` — DHCP on the first ethernet interface; `ip=off` / `ip=none` —
//!   no interface configured; `ip=auto6` — IPv6 autoconfiguration only;
//! - `ip=IFACE:dhcp|on|any|auto6|off|none[:MTU[:MAC]]`;
//! - `ip=CLIENT:[PEER]:GATEWAY:NETMASK:HOSTNAME:IFACE:none|off|dhcp[:MTU[:MAC]]` or with
//!   `[:DNS1[:DNS2]]` after the method; IPv6 addresses in brackets, NETMASK dotted or a prefix
//!   length; an empty IFACE means the first ethernet interface.
//! - `nameserver=IP` (repeatable).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use berth_schema::config::{parse_mac, InterfaceConfig, InterfaceMatch, NetworkConfig};

/// What the command line says about the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdlineNetwork {
    /// Interfaces from `ip=`; `Some(vec![])` for `ip=off`; `None` without `ip=`.
    pub interfaces: Option<Vec<InterfaceConfig>>,
    /// From `nameserver=` and the DNS fields of `ip=`.
    pub dns: Vec<IpAddr>,
    /// The hostname field of `ip=`.
    pub hostname: Option<String>,
}

impl CmdlineNetwork {
    /// Applies the override to a config: `ip=` replaces the interfaces, name servers come first.
    pub fn apply(&self, net: &mut NetworkConfig) {
        if let Some(ifaces) = &self.interfaces {
            net.interface = ifaces.clone();
            net.auto = false;
        }
        let mut dns = self.dns.clone();
        dns.extend(net.dns.iter().filter(|d| !self.dns.contains(d)));
        net.dns = dns;
    }
}

/// Splits on `:` outside `[...]`.
fn fields(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn ip(text: &str) -> Result<IpAddr, String> {
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{text}` is not an IP address"))
}

fn prefix_len(mask: &str, v4: bool) -> Result<u8, String> {
    if let Ok(n) = mask.parse::<u8>() {
        if n <= if v4 { 32 } else { 128 } {
            return Ok(n);
        }
    }
    let m: Ipv4Addr =
        mask.parse().map_err(|_| format!("netmask `{mask}` is neither dotted nor a prefix length"))?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("netmask `{mask}` is not contiguous"));
    }
    // At most 32 leading ones: the conversion cannot fail.
    u8::try_from(bits.leading_ones()).map_err(|_| format!("netmask `{mask}` is not contiguous"))
}

/// Applies a method (`dhcp`, `auto6`, `none` …) to an interface; false for `off`/`none` of
/// every interface (handled by the caller).
fn method(iface: &mut InterfaceConfig, m: &str) -> Result<(), String> {
    match m {
        "dhcp" | "on" | "any" | "single-dhcp" => iface.dhcp = true,
        "auto6" | "dhcp6" | "either6" | "link6" => iface.ipv6_autoconf = true,
        "none" | "off" | "" => {}
        other => return Err(format!("method `{other}` is not one of dhcp, on, any, auto6, none, off")),
    }
    Ok(())
}

fn iface_match(name: &str) -> InterfaceMatch {
    if name.is_empty() {
        InterfaceMatch::First
    } else {
        InterfaceMatch::Name(name.to_string())
    }
}

fn is_method(m: &str) -> bool {
    matches!(
        m,
        "dhcp" | "on" | "any" | "single-dhcp" | "auto6" | "dhcp6" | "either6" | "link6" | "none" | "off"
    )
}

/// The optional `:MTU:MAC` after a method (the MAC keeps its own colons).
fn mtu_and_mac(iface: &mut InterfaceConfig, rest: &[&str]) -> Result<(), String> {
    if let Some(mtu) = rest.first().filter(|s| !s.is_empty()) {
        iface.mtu = Some(mtu.parse().map_err(|_| format!("MTU `{mtu}` is not a number"))?);
    }
    if rest.len() > 1 {
        let mac = rest[1..].join(":");
        if !mac.is_empty() {
            iface.matches =
                InterfaceMatch::Mac(parse_mac(&mac).ok_or_else(|| format!("`{mac}` is not a MAC address"))?);
        }
    }
    Ok(())
}

/// Parses one `ip=` value.
fn parse_ip(value: &str, out: &mut CmdlineNetwork) -> Result<(), String> {
    let f = fields(value);
    let ifaces = out.interfaces.get_or_insert_with(Vec::new);
    match f.as_slice() {
        ["off" | "none"] => {}
        [m] => {
            let mut iface = InterfaceConfig { ipv6_autoconf: false, ..InterfaceConfig::default() };
            method(&mut iface, m)?;
            ifaces.push(iface);
        }
        [name, m, rest @ ..] if is_method(m) => {
            let mut iface = InterfaceConfig {
                matches: iface_match(name),
                ipv6_autoconf: false,
                ..InterfaceConfig::default()
            };
            method(&mut iface, m)?;
            mtu_and_mac(&mut iface, rest)?;
            if !matches!(*m, "off" | "none") || iface.mtu.is_some() {
                ifaces.push(iface);
            }
        }
        [client, _peer, gateway, mask, hostname, name, m, rest @ ..] => {
            let mut iface = InterfaceConfig {
                matches: iface_match(name),
                ipv6_autoconf: false,
                ..InterfaceConfig::default()
            };
            method(&mut iface, m)?;
            if !client.is_empty() {
                let addr = ip(client)?;
                let len = if mask.is_empty() {
                    if addr.is_ipv4() {
                        24
                    } else {
                        64
                    }
                } else {
                    prefix_len(mask, addr.is_ipv4())?
                };
                iface.addresses.push(IpNet::new(addr, len).map_err(|e| e.to_string())?);
            }
            if !gateway.is_empty() {
                match ip(gateway)? {
                    IpAddr::V4(g) => iface.gateway = Some(g),
                    IpAddr::V6(g) => iface.gateway6 = Some(g),
                }
            }
            if !hostname.is_empty() {
                out.hostname = Some(hostname.to_string());
            }
            // After the method: MTU and MAC, or up to two name servers.
            let dns_form = rest.first().is_some_and(|s| s.contains('.') || s.starts_with('['));
            if dns_form {
                for d in rest.iter().take(2).filter(|s| !s.is_empty()) {
                    out.dns.push(ip(d)?);
                }
            } else {
                mtu_and_mac(&mut iface, rest)?;
            }
            ifaces.push(iface);
        }
        _ => {
            return Err(
                "expected ip=dhcp, ip=IFACE:METHOD or ip=CLIENT:PEER:GATEWAY:NETMASK:HOSTNAME:IFACE:METHOD"
                    .into(),
            )
        }
    }
    Ok(())
}

/// Reads `ip=` and `nameserver=` from a kernel command line. Errors name the parameter; the
/// caller reports them and keeps the image's own configuration.
pub fn parse(cmdline: &str) -> Result<CmdlineNetwork, String> {
    let mut out = CmdlineNetwork::default();
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("ip=") {
            parse_ip(v, &mut out).map_err(|e| format!("kernel command line `{word}`: {e}"))?;
        } else if let Some(v) = word.strip_prefix("nameserver=") {
            out.dns.push(ip(v).map_err(|e| format!("kernel command line `{word}`: {e}"))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_and_off() {
        let n = parse("console=ttyS0 ip=dhcp").unwrap();
        let i = n.interfaces.unwrap();
        assert_eq!(i.len(), 1);
        assert!(i[0].dhcp);
        assert_eq!(i[0].matches, InterfaceMatch::First);
        assert_eq!(parse("ip=off").unwrap().interfaces, Some(vec![]));
        assert_eq!(parse("quiet").unwrap().interfaces, None);
    }

    #[test]
    fn interface_method_mtu_mac() {
        let n = parse("ip=eth1:dhcp:1400").unwrap();
        let i = &n.interfaces.unwrap()[0];
        assert_eq!(
            (i.matches.clone(), i.dhcp, i.mtu),
            (InterfaceMatch::Name("eth1".into()), true, Some(1400))
        );
        let n = parse("ip=eth1:dhcp::52:54:00:12:34:56").unwrap();
        assert_eq!(n.interfaces.unwrap()[0].matches, InterfaceMatch::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    }

    #[test]
    fn static_form() {
        let n = parse("ip=10.0.2.15::10.0.2.2:255.255.255.0:edge:eth0:none nameserver=10.0.2.3").unwrap();
        let i = &n.interfaces.as_ref().unwrap()[0];
        assert_eq!(i.addresses, vec!["10.0.2.15/24".parse::<IpNet>().unwrap()]);
        assert_eq!(i.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert!(!i.dhcp);
        assert_eq!(n.hostname.as_deref(), Some("edge"));
        assert_eq!(n.dns, vec!["10.0.2.3".parse::<IpAddr>().unwrap()]);
        let n = parse("ip=10.0.2.15::10.0.2.2:24::eth0:none:1.1.1.1:8.8.8.8").unwrap();
        assert_eq!(n.dns.len(), 2);
        let n = parse("ip=[fd00::15]::[fd00::1]:64::eth0:none").unwrap();
        let i = &n.interfaces.unwrap()[0];
        assert_eq!(i.addresses, vec!["fd00::15/64".parse::<IpNet>().unwrap()]);
        assert_eq!(i.gateway6, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = parse("ip=10.0.2.300::10.0.2.2:24::eth0:none").unwrap_err();
        assert!(e.contains("ip=10.0.2.300"), "{e}");
        assert!(parse("ip=eth0:bogus").unwrap_err().contains("expected ip=dhcp"));
        assert!(parse("ip=bogus").unwrap_err().contains("method"));
        assert!(parse("nameserver=x").is_err());
        assert!(parse("ip=1:2:3").is_err());
    }

    #[test]
    fn apply_replaces_interfaces() {
        let mut net = NetworkConfig { dns: vec!["9.9.9.9".parse().unwrap()], ..NetworkConfig::default() };
        parse("ip=off nameserver=1.1.1.1").unwrap().apply(&mut net);
        assert!(net.effective_interfaces().is_empty());
        assert_eq!(net.dns.len(), 2);
        assert_eq!(net.dns[0], "1.1.1.1".parse::<IpAddr>().unwrap());
    }
}
