//! `[network]`: the machine's interfaces, DNS, and the bridge for `net = "bridge"` containers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// `[network]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// With no `[[network.interface]]`: configure the first ethernet interface with DHCP (and
    /// IPv6 autoconfiguration). `false`: no interface but `lo` is touched.
    #[serde(default = "yes")]
    pub auto: bool,
    /// `[[network.interface]]`: how each interface is configured.
    #[serde(default)]
    pub interface: Vec<InterfaceConfig>,
    /// Name servers, written to `/etc/resolv.conf` before the ones DHCP gives.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Search domains for `/etc/resolv.conf` (DHCP's domain is added after them).
    #[serde(default)]
    pub search: Vec<String>,
    /// Extra `/etc/hosts` entries: name → address.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    /// `[network.bridge]`: the bridge of `net = "bridge"` containers.
    #[serde(default)]
    pub bridge: BridgeConfig,
}

fn yes() -> bool {
    true
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            auto: true,
            interface: Vec::new(),
            dns: Vec::new(),
            search: Vec::new(),
            hosts: BTreeMap::new(),
            bridge: BridgeConfig::default(),
        }
    }
}

impl NetworkConfig {
    /// The interfaces to configure: the declared ones, else (with `auto`) DHCP on the first
    /// ethernet interface.
    pub fn effective_interfaces(&self) -> Vec<InterfaceConfig> {
        if !self.interface.is_empty() || !self.auto {
            return self.interface.clone();
        }
        vec![InterfaceConfig { dhcp: true, ..InterfaceConfig::default() }]
    }
}

/// `[[network.interface]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Which interface: `"first"` (the first ethernet interface, the default), a name
    /// (`"eth0"`) or a MAC address (`"52:54:00:12:34:56"`).
    #[serde(rename = "match", default)]
    pub matches: InterfaceMatch,
    /// Get an IPv4 address, router, DNS, domain and MTU by DHCP.
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses with their prefix length: `["10.0.2.15/24", "fd00::15/64"]`.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// IPv4 default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// More routes: `[{ to = "192.168.0.0/16", via = "10.0.2.1" }]`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The interface's MTU (DHCP's MTU option applies when unset).
    pub mtu: Option<u32>,
    /// IPv6 stateless autoconfiguration from router advertisements (done by the kernel).
    #[serde(default = "yes")]
    pub ipv6_autoconf: bool,
    /// Set the machine's hostname from DHCP's hostname option.
    #[serde(default)]
    pub dhcp_hostname: bool,
}

impl Default for InterfaceConfig {
    fn default() -> Self {
        InterfaceConfig {
            matches: InterfaceMatch::First,
            dhcp: false,
            addresses: Vec::new(),
            gateway: None,
            gateway6: None,
            routes: Vec::new(),
            mtu: None,
            ipv6_autoconf: true,
            dhcp_hostname: false,
        }
    }
}

/// `match` of `[[network.interface]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InterfaceMatch {
    /// The first ethernet interface (lowest index).
    #[default]
    First,
    /// By kernel name.
    Name(String),
    /// By MAC address.
    Mac([u8; 6]),
}

impl InterfaceMatch {
    /// Parses `"first"`, a MAC address (six hex pairs with `:`), or an interface name.
    pub fn parse(text: &str) -> Result<InterfaceMatch, String> {
        if text == "first" {
            return Ok(InterfaceMatch::First);
        }
        if let Some(mac) = parse_mac(text) {
            return Ok(InterfaceMatch::Mac(mac));
        }
        let ok = !text.is_empty()
            && text.len() <= 15
            && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(InterfaceMatch::Name(text.to_string()))
        } else {
            Err(format!(
                "`{text}` is neither \"first\", an interface name (at most 15 letters, digits, `-_.`) nor a MAC address like \"52:54:00:12:34:56\""
            ))
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

impl fmt::Display for InterfaceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceMatch::First => f.write_str("first"),
            InterfaceMatch::Name(n) => f.write_str(n),
            InterfaceMatch::Mac(m) => {
                write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
            }
        }
    }
}

crate::text_form::serde_as_text!(InterfaceMatch, PortMapping);

/// One static route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination network (`"0.0.0.0/0"` is a default route).
    pub to: IpNet,
    /// Next hop.
    pub via: IpAddr,
    /// Route metric (priority); lower wins.
    pub metric: Option<u32>,
}

/// `[network.bridge]`: Docker's default bridge, berth's way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The bridge's IPv4 subnet; the bridge takes the first address, containers the next ones.
    #[serde(default = "default_bridge_subnet")]
    pub subnet: Ipv4Net,
    /// The bridge interface's name.
    #[serde(default = "default_bridge_name")]
    pub name: String,
    /// MTU of the bridge and the containers' interfaces (default: the kernel's, 1500).
    pub mtu: Option<u32>,
}

fn default_bridge_subnet() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(172, 30, 0, 0), 16).unwrap_or_default()
}

fn default_bridge_name() -> String {
    "berth0".to_string()
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig { subnet: default_bridge_subnet(), name: default_bridge_name(), mtu: None }
    }
}

impl BridgeConfig {
    /// The bridge's own address (the subnet's first host), with the subnet's prefix.
    pub fn gateway(&self) -> Ipv4Net {
        let first = u32::from(self.subnet.network()) + 1;
        // The prefix comes from a valid net, so `new` cannot fail.
        Ipv4Net::new(Ipv4Addr::from(first), self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// A published port, Docker's `-p [IP:]HOST:CONTAINER[/PROTO]`; written as that text in the
/// config and the plan (`"10.0.2.15:8080:80/tcp"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// Only traffic to this address of the machine (default: any).
    pub host_ip: Option<Ipv4Addr>,
    /// The machine's port.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl PortMapping {
    /// Parses `"8080:80"`, `"8080:80/tcp"`, `"5353:53/udp"`, `"127.0.0.1:8080:80"`.
    pub fn parse(text: &str) -> Result<PortMapping, String> {
        let bad = |why: &str| {
            format!("ports: `{text}` {why}; write it like \"8080:80\", \"5353:53/udp\" or \"10.0.2.15:8080:80/tcp\"")
        };
        let (spec, protocol) = match text.rsplit_once('/') {
            Some((s, "tcp")) => (s, Protocol::Tcp),
            Some((s, "udp")) => (s, Protocol::Udp),
            Some(_) => return Err(bad("has a protocol other than tcp or udp")),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip.parse().map_err(|_| bad("has a host address that is not IPv4"))?;
                (Some(ip), *h, *c)
            }
            _ => return Err(bad("is not HOST:CONTAINER")),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
        let host_port = port(host).ok_or_else(|| bad("has a host port that is not 1–65535"))?;
        let container_port =
            port(container).ok_or_else(|| bad("has a container port that is not 1–65535"))?;
        Ok(PortMapping { host_ip, host_port, container_port, protocol })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}:{}/{proto}", self.host_port, self.container_port)
    }
}

/// Checks `[network]`; errors name the key.
pub fn validate(net: &NetworkConfig) -> Result<(), String> {
    let b = &net.bridge;
    if b.subnet.prefix_len() > 29 {
        return Err(format!(
            "[network.bridge] subnet {}: a /{} has no room for containers; use /29 or larger (like \"172.30.0.0/16\")",
            b.subnet,
            b.subnet.prefix_len()
        ));
    }
    if b.subnet != b.subnet.trunc() {
        return Err(format!(
            "[network.bridge] subnet {}: write the network address ({})",
            b.subnet,
            b.subnet.trunc()
        ));
    }
    if InterfaceMatch::parse(&b.name).map(|m| !matches!(m, InterfaceMatch::Name(_))).unwrap_or(true) {
        return Err(format!(
            "[network.bridge] name `{}` is not an interface name (at most 15 letters, digits, `-_.`)",
            b.name
        ));
    }
    for (i, iface) in net.interface.iter().enumerate() {
        let at = format!("[[network.interface]] #{} (match = \"{}\")", i + 1, iface.matches);
        for a in &iface.addresses {
            if let IpNet::V4(v4) = a {
                if b.subnet.contains(&v4.addr()) || v4.contains(&b.subnet.network()) {
                    return Err(format!("{at}: address {a} overlaps the bridge subnet {}; set [network.bridge] subnet to another range", b.subnet));
                }
            }
        }
        if let Some(mtu) = iface.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(format!("{at}: mtu {mtu} must be between 68 and 65535"));
            }
        }
        for r in &iface.routes {
            if r.to.addr().is_ipv4() != r.via.is_ipv4() {
                return Err(format!("{at}: route to {} via {} mixes IPv4 and IPv6", r.to, r.via));
            }
        }
        let dup = net.interface[..i]
            .iter()
            .any(|o| o.matches == iface.matches && o.matches != InterfaceMatch::First);
        if dup {
            return Err(format!("{at}: another interface has the same match"));
        }
    }
    for name in net.hosts.keys() {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(format!("[network] hosts: `{name}` is not a host name"));
        }
    }
    for s in &net.search {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace()) {
            return Err(format!("[network] search: `{s}` is not a domain"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!((p.host_port, p.container_port, p.protocol, p.host_ip), (8080, 80, Protocol::Tcp, None));
        let p = PortMapping::parse("5353:53/udp").unwrap();
        assert_eq!((p.host_port, p.container_port, p.protocol), (5353, 53, Protocol::Udp));
        let p = PortMapping::parse("10.0.2.15:8080:80/tcp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(p.to_string(), "10.0.2.15:8080:80/tcp");
        for bad in ["80", "0:80", "8080:70000", "8080:80/sctp", "x:1:2", "1:2:3:4", ""] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_match() {
        assert_eq!(InterfaceMatch::parse("first").unwrap(), InterfaceMatch::First);
        assert_eq!(InterfaceMatch::parse("eth0").unwrap(), InterfaceMatch::Name("eth0".into()));
        assert_eq!(
            InterfaceMatch::parse("52:54:00:12:34:5A").unwrap(),
            InterfaceMatch::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x5a])
        );
        assert!(InterfaceMatch::parse("a very long interface name").is_err());
        assert!(InterfaceMatch::parse("").is_err());
    }

    #[test]
    fn bridge_gateway_and_auto() {
        let b = BridgeConfig::default();
        assert_eq!(b.gateway().to_string(), "172.30.0.1/16");
        let n = NetworkConfig::default();
        let e = n.effective_interfaces();
        assert_eq!(e.len(), 1);
        assert!(e[0].dhcp);
        let off = NetworkConfig { auto: false, ..NetworkConfig::default() };
        assert!(off.effective_interfaces().is_empty());
    }

    #[test]
    fn validation() {
        let mut n = NetworkConfig::default();
        n.bridge.subnet = "10.9.0.0/30".parse().unwrap();
        assert!(validate(&n).unwrap_err().contains("no room"));
        n.bridge.subnet = "10.9.0.1/24".parse().unwrap();
        assert!(validate(&n).unwrap_err().contains("10.9.0.0/24"));
        n.bridge.subnet = "10.9.0.0/24".parse().unwrap();
        n.interface.push(InterfaceConfig {
            addresses: vec!["10.9.0.5/24".parse().unwrap()],
            ..InterfaceConfig::default()
        });
        assert!(validate(&n).unwrap_err().contains("overlaps"));
    }
}
