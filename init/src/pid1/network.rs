//! The machine's interfaces: static addresses and routes, DHCP, IPv6 autoconfiguration, and
//! `/etc/resolv.conf`. Driven by PID 1's event loop: DHCP sockets are polled with everything
//! else and timers come from [`HostNetwork::deadline`], so a server that never answers delays
//! nothing but the services that wait for `"network"`.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use crate::net::dhcp::{Action, Destination, DhcpClient, Lease};
use crate::net::files;
use berth_schema::config::{InterfaceConfig, InterfaceMatch, NetworkConfig};
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::RouteProtocol;

use super::log;
use super::netlink::{Link, Route, Rtnl};

/// Where PID 1 keeps the resolver files it gives every container (read-only binds).
pub const NET_DIR: &str = "/run/berth/net";
/// The machine's `resolv.conf`.
pub const RESOLV_CONF: &str = "/run/berth/net/resolv.conf";
/// The machine's `hosts`.
pub const HOSTS: &str = "/run/berth/net/hosts";

/// How long to wait between looks for an interface that is not there yet, when the kernel's
/// link notifications cannot be received (with them, a new link wakes PID 1 at once).
const RESCAN: std::time::Duration = std::time::Duration::from_secs(1);
/// The same with link notifications: only a safety net.
const RESCAN_NOTIFIED: std::time::Duration = std::time::Duration::from_secs(30);
/// rtnetlink's multicast group of link changes (`RTNLGRP_LINK`).
const RTNLGRP_LINK: u32 = 1;

struct Interface {
    cfg: InterfaceConfig,
    link: Option<Link>,
    dhcp: Option<(DhcpClient, UdpSocket)>,
    lease: Option<Lease>,
    /// Static part applied (and, without DHCP, the interface is ready).
    configured: bool,
    waiting_reported: bool,
}

impl Interface {
    fn ready(&self) -> bool {
        self.configured && (!self.cfg.dhcp || self.lease.is_some())
    }
}

/// The machine's network.
pub struct HostNetwork {
    rtnl: Option<Rtnl>,
    config: NetworkConfig,
    ifaces: Vec<Interface>,
    next_scan: Option<Instant>,
    /// Subscribed to the kernel's link notifications (new NICs, hot-plugged or late drivers).
    link_events: Option<netlink_sys::Socket>,
    ready_reported: bool,
    resolv: String,
}

/// Writes a file that containers have bind-mounted: in place (a rename would leave the binds on
/// the old file), and only when the text changes.
pub fn write_in_place(path: &str, text: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    f.set_len(text.len() as u64).map_err(|e| format!("{path}: {e}"))
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    // Only the low 64 bits of the nanoseconds (the ones that change) matter for a seed.
    #[allow(clippy::cast_possible_truncation)]
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    if n == 8 {
        u64::from_ne_bytes(b) ^ t
    } else {
        t ^ 0x5DEE_CE66_D1CE_4E5B
    }
}

/// A socket that receives the kernel's link notifications, or `None` (then PID 1 polls).
fn link_events() -> Option<netlink_sys::Socket> {
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).ok()?;
    sock.bind_auto().ok()?;
    sock.add_membership(RTNLGRP_LINK).ok()?;
    sock.set_non_blocking(true).ok()?;
    Some(sock)
}

/// A UDP socket on port 68 of one interface, allowed to broadcast.
fn dhcp_socket(ifname: &str) -> Result<UdpSocket, String> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("DHCP socket: {e}"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("DHCP socket SO_REUSEADDR: {e}"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(|e| format!("DHCP socket SO_BROADCAST: {e}"))?;
    setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(ifname))
        .map_err(|e| format!("DHCP socket SO_BINDTODEVICE {ifname}: {e}"))?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)))
        .map_err(|e| format!("DHCP socket bind to port 68: {e}"))?;
    Ok(UdpSocket::from(fd))
}

fn set_ipv6_autoconf(ifname: &str, on: bool) {
    let v = if on { "1" } else { "0" };
    for key in ["autoconf", "accept_ra"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/{key}"), v);
    }
}

fn lease_net(l: &Lease) -> IpNet {
    IpNet::V4(Ipv4Net::new(l.address, l.prefix_len).unwrap_or_else(|_| Ipv4Net::from(l.address)))
}

impl HostNetwork {
    /// Configures what can be configured now (static addresses) and starts DHCP. `cmdline` is
    /// the kernel command line; its `ip=`/`nameserver=` override the config (a bad one is
    /// reported and ignored).
    pub fn start(config: &NetworkConfig, cmdline: &str) -> HostNetwork {
        let mut config = config.clone();
        match crate::net::cmdline::parse(cmdline) {
            Ok(over) => {
                if over.interfaces.is_some() {
                    log::info("network: the kernel command line's ip= replaces [[network.interface]]");
                }
                over.apply(&mut config);
                if let Some(h) = &over.hostname {
                    if let Err(e) = nix::unistd::sethostname(h) {
                        log::warn(&format!("network: hostname {h} from ip=: {e}"));
                    }
                }
            }
            Err(e) => log::error(&format!("{e}; using the image's network configuration")),
        }
        let _ = std::fs::create_dir_all(NET_DIR);
        let rtnl = match Rtnl::open() {
            Ok(r) => Some(r),
            Err(e) => {
                log::error(&format!("network: {e}; no interface will be configured"));
                None
            }
        };
        let ifaces = config
            .effective_interfaces()
            .into_iter()
            .map(|cfg| Interface {
                cfg,
                link: None,
                dhcp: None,
                lease: None,
                configured: false,
                waiting_reported: false,
            })
            .collect();
        let mut net = HostNetwork {
            rtnl,
            config,
            ifaces,
            next_scan: None,
            link_events: link_events(),
            ready_reported: false,
            resolv: String::new(),
        };
        net.write_resolv_conf();
        net
    }

    /// Looks for the interfaces (once their drivers are loaded) and configures those found;
    /// missing ones are looked for again every second.
    pub fn look_for_interfaces(&mut self) {
        self.scan(Instant::now());
    }

    /// Finds the links of interfaces not found yet and configures them.
    fn scan(&mut self, now: Instant) {
        self.next_scan = None;
        let Some(rtnl) = self.rtnl.as_mut() else { return };
        let links = match rtnl.links() {
            Ok(l) => l,
            Err(e) => {
                log::warn(&format!("network: {e}"));
                self.next_scan = Some(now + self.rescan_interval());
                return;
            }
        };
        let taken: Vec<u32> = self.ifaces.iter().filter_map(|i| i.link.as_ref().map(|l| l.index)).collect();
        let mut claimed = taken.clone();
        for i in 0..self.ifaces.len() {
            if self.ifaces[i].link.is_some() {
                continue;
            }
            let found = links
                .iter()
                .filter(|l| !claimed.contains(&l.index))
                .find(|l| match &self.ifaces[i].cfg.matches {
                    InterfaceMatch::First => l.is_hardware_ethernet(),
                    InterfaceMatch::Name(n) => &l.name == n,
                    InterfaceMatch::Mac(m) => l.mac == m,
                })
                .cloned();
            match found {
                Some(link) => {
                    claimed.push(link.index);
                    self.ifaces[i].link = Some(link);
                    self.configure(i, now);
                }
                None => {
                    self.next_scan = Some(now + self.rescan_interval());
                    if !self.ifaces[i].waiting_reported {
                        self.ifaces[i].waiting_reported = true;
                        let m = self.ifaces[i].cfg.matches.to_string();
                        let what = if m == "first" {
                            "ethernet interface".to_string()
                        } else {
                            format!("interface {m}")
                        };
                        log::warn(&format!("network: no {what} yet; still looking"));
                        log::emit(log::event("network.waiting").with("match", m));
                    }
                }
            }
        }
    }

    /// Brings a found interface up with its static settings and starts its DHCP client.
    fn configure(&mut self, i: usize, now: Instant) {
        let Some(rtnl) = self.rtnl.as_mut() else { return };
        let iface = &mut self.ifaces[i];
        let Some(link) = iface.link.clone() else { return };
        let cfg = iface.cfg.clone();
        let mut errors = Vec::new();
        set_ipv6_autoconf(&link.name, cfg.ipv6_autoconf);
        if let Err(e) = rtnl.set_up(link.index, cfg.mtu) {
            errors.push(e);
        }
        for a in &cfg.addresses {
            if let Err(e) = rtnl.add_address(link.index, *a) {
                errors.push(e);
            }
        }
        let default4 = IpNet::V4(ipnet::Ipv4Net::default());
        let default6 = IpNet::V6(ipnet::Ipv6Net::default());
        let mut routes: Vec<Route> = Vec::new();
        if let Some(g) = cfg.gateway {
            routes.push(Route {
                to: default4,
                via: Some(IpAddr::V4(g)),
                oif: link.index,
                metric: None,
                protocol: RouteProtocol::Static,
            });
        }
        if let Some(g) = cfg.gateway6 {
            routes.push(Route {
                to: default6,
                via: Some(IpAddr::V6(g)),
                oif: link.index,
                metric: None,
                protocol: RouteProtocol::Static,
            });
        }
        for r in &cfg.routes {
            routes.push(Route {
                to: r.to,
                via: Some(r.via),
                oif: link.index,
                metric: r.metric,
                protocol: RouteProtocol::Static,
            });
        }
        for r in &routes {
            if let Err(e) = rtnl.add_route(r) {
                errors.push(e);
            }
        }
        for e in &errors {
            log::error(&format!("network {}: {e}", link.name));
            log::emit(log::event("network.failed").with("iface", &link.name).with("error", e));
        }
        iface.configured = true;
        let mac = link.mac.clone();
        if !cfg.addresses.is_empty() {
            let addrs: Vec<String> = cfg.addresses.iter().map(|a| a.to_string()).collect();
            let mut ev = log::event("network.address")
                .with("iface", &link.name)
                .with("address", addrs.join(","))
                .with("source", "static");
            if let Some(g) = cfg.gateway {
                ev = ev.with("gateway", g);
            }
            log::emit(ev);
        }
        if cfg.dhcp {
            let mac6: [u8; 6] = match mac.as_slice().try_into() {
                Ok(m) => m,
                Err(_) => {
                    log::error(&format!("network {}: DHCP needs an ethernet address", link.name));
                    return;
                }
            };
            match dhcp_socket(&link.name) {
                Ok(sock) => {
                    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
                    let mut client = DhcpClient::new(mac6, random_seed(), hostname);
                    let actions = client.start(now);
                    iface.dhcp = Some((client, sock));
                    self.run_actions(i, actions);
                }
                Err(e) => {
                    log::error(&format!("network {}: {e}", link.name));
                    log::emit(log::event("network.failed").with("iface", &link.name).with("error", e));
                }
            }
        }
    }

    /// Performs what a DHCP client asked for.
    fn run_actions(&mut self, i: usize, actions: Vec<Action>) {
        let name = self.ifaces[i].link.as_ref().map(|l| l.name.clone()).unwrap_or_default();
        for action in actions {
            match action {
                Action::Send(bytes, dest) => {
                    let Some((_, sock)) = &self.ifaces[i].dhcp else { continue };
                    let to = match dest {
                        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
                        Destination::Server(ip) => SocketAddrV4::new(ip, 67),
                    };
                    if let Err(e) = sock.send_to(&bytes, to) {
                        log::warn(&format!("network {name}: DHCP send to {to}: {e}"));
                    }
                }
                Action::Retry { attempt, delay } => {
                    log::emit(
                        log::event("network.dhcp.retry")
                            .with("iface", &name)
                            .with("attempt", attempt)
                            .with("delay_ms", delay.as_millis()),
                    );
                }
                Action::Bound(lease) => self.apply_lease(i, lease, false),
                Action::Renewed(lease) => self.apply_lease(i, lease, true),
                Action::Lost(reason) => {
                    if let (Some(old), Some(rtnl), Some(link)) =
                        (self.ifaces[i].lease.take(), self.rtnl.as_mut(), self.ifaces[i].link.as_ref())
                    {
                        let _ = rtnl.del_address(link.index, lease_net(&old));
                    }
                    log::warn(&format!("network {name}: DHCP lease lost: {reason}"));
                    log::emit(log::event("network.dhcp.lost").with("iface", &name).with("reason", reason));
                    self.write_resolv_conf();
                }
            }
        }
    }

    fn apply_lease(&mut self, i: usize, lease: Lease, renewed: bool) {
        let Some(link) = self.ifaces[i].link.clone() else { return };
        let cfg = self.ifaces[i].cfg.clone();
        if let Some(rtnl) = self.rtnl.as_mut() {
            let old = self.ifaces[i].lease.take();
            if let Some(old) = old.filter(|o| o.address != lease.address || o.prefix_len != lease.prefix_len)
            {
                let _ = rtnl.del_address(link.index, lease_net(&old));
            }
            let mut errors = Vec::new();
            if cfg.mtu.is_none() {
                if let Some(mtu) = lease.mtu {
                    if let Err(e) = rtnl.set_up(link.index, Some(u32::from(mtu))) {
                        errors.push(e);
                    }
                }
            }
            if let Err(e) = rtnl.add_address(link.index, lease_net(&lease)) {
                errors.push(e);
            }
            if let (Some(router), None) = (lease.router, cfg.gateway) {
                let r = Route {
                    to: IpNet::V4(Ipv4Net::default()),
                    via: Some(IpAddr::V4(router)),
                    oif: link.index,
                    metric: None,
                    protocol: RouteProtocol::Dhcp,
                };
                if let Err(e) = rtnl.add_route(&r) {
                    errors.push(e);
                }
            }
            for e in errors {
                log::error(&format!("network {}: {e}", link.name));
            }
        }
        if cfg.dhcp_hostname {
            if let Some(h) = &lease.hostname {
                if let Err(e) = nix::unistd::sethostname(h) {
                    log::warn(&format!("network {}: hostname {h} from DHCP: {e}", link.name));
                }
            }
        }
        let dns: Vec<String> = lease.dns.iter().map(|d| d.to_string()).collect();
        let mut ev = log::event(if renewed { "network.dhcp.renewed" } else { "network.address" })
            .with("iface", &link.name)
            .with("address", lease_net(&lease))
            .with("source", "dhcp")
            .with("lease_s", lease.lease_time.as_secs());
        if let Some(r) = lease.router {
            ev = ev.with("gateway", r);
        }
        if !dns.is_empty() {
            ev = ev.with("dns", dns.join(","));
        }
        if !renewed {
            log::info(&format!(
                "network {}: {} from DHCP server {}",
                link.name,
                lease_net(&lease),
                lease.server
            ));
        }
        log::emit(ev);
        self.ifaces[i].lease = Some(lease);
        self.write_resolv_conf();
    }

    /// The NTP servers the DHCP leases offer (option 42), interface by interface.
    pub fn ntp_servers(&self) -> Vec<std::net::Ipv4Addr> {
        self.ifaces.iter().filter_map(|i| i.lease.as_ref()).flat_map(|l| l.ntp.iter().copied()).collect()
    }

    /// Rewrites `resolv.conf` from the config and the leases.
    fn write_resolv_conf(&mut self) {
        let mut servers: Vec<IpAddr> = self.config.dns.clone();
        let mut search = self.config.search.clone();
        for i in &self.ifaces {
            if let Some(l) = &i.lease {
                servers.extend(l.dns.iter().map(|d| IpAddr::V4(*d)));
                search.extend(l.domain.clone());
            }
        }
        let text = files::resolv_conf(&servers, &search);
        if text != self.resolv {
            match write_in_place(RESOLV_CONF, &text) {
                Ok(()) => self.resolv = text,
                Err(e) => log::warn(&format!("network: {e}")),
            }
        }
    }

    /// Whether every configured interface has its addresses; reported once as `network.ready`.
    pub fn check_ready(&mut self) -> bool {
        let ready = self.ifaces.iter().all(Interface::ready);
        if ready && !self.ready_reported {
            self.ready_reported = true;
            log::emit(log::event("network.ready").with("interfaces", self.ifaces.len()));
        }
        ready
    }

    fn rescan_interval(&self) -> std::time::Duration {
        if self.link_events.is_some() {
            RESCAN_NOTIFIED
        } else {
            RESCAN
        }
    }

    /// Descriptors to poll: the DHCP sockets and the link notifications.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.ifaces
            .iter()
            .filter_map(|i| i.dhcp.as_ref().map(|(_, s)| s.as_fd()))
            .chain(self.link_events.as_ref().map(|s| s.as_fd()))
            .collect()
    }

    /// When [`poll`](Self::poll) must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.ifaces
            .iter()
            .filter_map(|i| i.dhcp.as_ref().and_then(|(c, _)| c.deadline()))
            .chain(self.next_scan)
            .min()
    }

    /// Reads what arrived, runs due timers and looks again for missing interfaces.
    pub fn poll(&mut self, now: Instant) {
        let mut buf = [0u8; 1500];
        for i in 0..self.ifaces.len() {
            let mut actions = Vec::new();
            if let Some((client, sock)) = self.ifaces[i].dhcp.as_mut() {
                while let Ok((n, _)) = sock.recv_from(&mut buf) {
                    actions.extend(client.receive(&buf[..n], now));
                }
                actions.extend(client.tick(now));
            }
            self.run_actions(i, actions);
        }
        // A link appeared or changed: look again now if an interface is still missing, and a
        // DHCP client still without an answer asks again (its carrier may have just come up).
        let mut notified = false;
        if let Some(sock) = &self.link_events {
            let mut buf = vec![0u8; 16 * 1024];
            while sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT).is_ok_and(|n| n > 0) {
                notified = true;
            }
        }
        if notified {
            for i in 0..self.ifaces.len() {
                let actions = match self.ifaces[i].dhcp.as_mut() {
                    Some((client, _)) => client.link_changed(now),
                    None => continue,
                };
                self.run_actions(i, actions);
            }
        }
        let missing = self.ifaces.iter().any(|i| i.link.is_none());
        if (notified && missing) || self.next_scan.is_some_and(|t| now >= t) {
            self.scan(now);
        }
    }

    /// `berthctl renew [IFACE]`: renews DHCP leases now.
    pub fn renew(&mut self, only: Option<&str>) -> String {
        let now = Instant::now();
        let mut out = String::new();
        for i in 0..self.ifaces.len() {
            let name = self.ifaces[i].link.as_ref().map(|l| l.name.clone()).unwrap_or_default();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let Some((client, _)) = self.ifaces[i].dhcp.as_mut() else { continue };
            let actions = client.renew_now(now);
            out.push_str(&format!("renewing the DHCP lease of {name}\n"));
            self.run_actions(i, actions);
        }
        if out.is_empty() {
            out = match only {
                Some(n) => format!("error: no DHCP interface named {n}\n"),
                None => "error: no interface uses DHCP\n".to_string(),
            };
        }
        out
    }

    /// `berthctl net`: each interface, its addresses and DHCP state.
    pub fn status(&self) -> String {
        let mut out =
            format!("{:<10} {:<18} {:<20} {:<10} {}\n", "IFACE", "MAC", "ADDRESS", "DHCP", "GATEWAY");
        for i in &self.ifaces {
            let Some(link) = &i.link else {
                out.push_str(&format!("{:<10} (not found: match = {})\n", "-", i.cfg.matches));
                continue;
            };
            let mac: Vec<String> = link.mac.iter().map(|b| format!("{b:02x}")).collect();
            let mut addrs: Vec<String> = i.cfg.addresses.iter().map(|a| a.to_string()).collect();
            if let Some(l) = &i.lease {
                addrs.push(lease_net(l).to_string());
            }
            let dhcp = i.dhcp.as_ref().map(|(c, _)| c.state_name()).unwrap_or("off");
            let gw = i
                .lease
                .as_ref()
                .and_then(|l| l.router)
                .map(|g| g.to_string())
                .or(i.cfg.gateway.map(|g| g.to_string()));
            let addr = if addrs.is_empty() { "-".to_string() } else { addrs.join(",") };
            out.push_str(&format!(
                "{:<10} {:<18} {:<20} {:<10} {}\n",
                link.name,
                mac.join(":"),
                addr,
                dhcp,
                gw.unwrap_or_else(|| "-".into())
            ));
        }
        out
    }

    /// At shutdown: DHCPRELEASE for every lease.
    pub fn release(&mut self) {
        for i in &mut self.ifaces {
            if let Some((client, sock)) = i.dhcp.as_mut() {
                if let Some((bytes, Destination::Server(ip))) = client.release() {
                    let _ = sock.send_to(&bytes, SocketAddrV4::new(ip, 67));
                    log::emit(
                        log::event("network.dhcp.released")
                            .with("iface", i.link.as_ref().map(|l| l.name.as_str()).unwrap_or("")),
                    );
                }
            }
        }
    }
}
