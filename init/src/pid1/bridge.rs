//! `net = "bridge"` containers: the bridge, one veth pair per container, addresses, NAT and
//! published ports.
//!
//! Order for one container (run from the launch's before-pivot hook, while the child waits with
//! its new network namespace and `lo` up):
//! 1. lease the container's address (reserved by name at boot, see `crate::net::ipam`);
//! 2. create the veth pair: `vbPID` here, its peer created directly in the container's
//!    namespace as `eth0`;
//! 3. `vbPID` onto the bridge, up;
//! 4. inside the container's namespace: `eth0` up, the address, the default route via the
//!    bridge;
//! 5. the nftables table replaced with the new set of published ports (one transaction).
//!
//! When the container ends, its namespace and with it the pair vanish; the host end is deleted
//! anyway (it may outlive a namespace kept by a straggler), the lease released and the table
//! replaced without its ports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use crate::net::ipam::Ipam;
use crate::net::nft::{self, Forward};
use berth_schema::config::{BridgeConfig, NetMode};
use berth_schema::plan::Plan;
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::RouteProtocol;

use super::log;
use super::netlink::{self, Route, Rtnl};

/// The container bridge.
pub struct Bridge {
    cfg: BridgeConfig,
    ipam: Ipam,
    rtnl: Option<Rtnl>,
    index: Option<u32>,
    /// Attached containers: name → (host veth index, published ports).
    attached: BTreeMap<String, (u32, Vec<Forward>)>,
    nft_seq: u32,
}

impl Bridge {
    /// The bridge for `plan`, with an address reserved for each bridge container in config
    /// order; `None` when no container uses the bridge.
    pub fn for_plan(plan: &Plan) -> Option<Bridge> {
        let bridged: Vec<&str> =
            plan.containers().filter(|c| c.net == NetMode::Bridge).map(|c| c.name.as_str()).collect();
        if bridged.is_empty() {
            return None;
        }
        let cfg = plan.network.bridge.clone();
        let mut ipam = Ipam::new(cfg.subnet);
        for name in bridged {
            if let Err(e) = ipam.reserve(name) {
                log::error(&format!("bridge: container {name}: {e}"));
            }
        }
        Some(Bridge { cfg, ipam, rtnl: None, index: None, attached: BTreeMap::new(), nft_seq: 1 })
    }

    /// `/etc/hosts` entries: every bridge container's address, name and hostname.
    pub fn hosts_entries(&self, plan: &Plan) -> Vec<(Ipv4Addr, String, String)> {
        self.ipam
            .reservations()
            .iter()
            .map(|(name, addr)| {
                let host = plan
                    .containers()
                    .find(|c| &c.name == name)
                    .map(|c| c.hostname.clone())
                    .unwrap_or_default();
                (*addr, name.clone(), host)
            })
            .collect()
    }

    /// Creates the bridge with its address, turns on IPv4 forwarding and installs the NAT table.
    pub fn setup(&mut self) -> Result<(), String> {
        let mut rtnl = Rtnl::open()?;
        let index = rtnl.create_bridge(&self.cfg.name, self.cfg.mtu)?;
        let gw = Ipv4Net::new(self.ipam.gateway(), self.ipam.prefix_len()).map_err(|e| e.to_string())?;
        rtnl.add_address(index, IpNet::V4(gw))?;
        rtnl.set_up(index, None)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| format!("enable IPv4 forwarding: {e}"))?;
        self.rtnl = Some(rtnl);
        self.index = Some(index);
        self.sync_nat()?;
        log::emit(
            log::event("network.bridge")
                .with("name", &self.cfg.name)
                .with("address", gw)
                .with("containers", self.ipam.reservations().len()),
        );
        Ok(())
    }

    /// Replaces the NAT table with masquerade plus the ports of the attached containers.
    fn sync_nat(&mut self) -> Result<(), String> {
        let forwards: Vec<Forward> = self.attached.values().flat_map(|(_, f)| f.iter().copied()).collect();
        let batch = nft::nat_table(self.nft_seq, &self.cfg.name, self.cfg.subnet, &forwards);
        // The batch used one sequence number per acknowledged message, plus its begin and end.
        // Sequence numbers wrap: adding the count modulo 2^32 (what the cast keeps) is exact.
        #[allow(clippy::cast_possible_truncation)]
        let used = (batch.acked.len() as u32).wrapping_add(2);
        self.nft_seq = self.nft_seq.wrapping_add(used);
        netlink::send_nft_batch(&batch)
    }

    /// Connects the container `name` (whose first process is `pid`, waiting before
    /// `pivot_root`) to the bridge; returns its address.
    pub fn attach(
        &mut self,
        name: &str,
        pid: i32,
        ports: &[berth_schema::config::PortMapping],
    ) -> Result<Ipv4Addr, String> {
        let bridge = self.index.ok_or("the bridge is not set up (see the error at boot)")?;
        let rtnl = self.rtnl.as_mut().ok_or("the bridge is not set up")?;
        let addr = self.ipam.lease(name)?;
        let netns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .map_err(|e| format!("open the container's network namespace: {e}"))?
            .into();
        let host = format!("vb{pid}");
        let result = (|| {
            let host_index = rtnl.create_veth(&host, "eth0", &netns, self.cfg.mtu)?;
            rtnl.set_master(host_index, bridge)?;
            rtnl.set_up(host_index, None)?;
            let mut inside = Rtnl::in_netns(&netns)?;
            let eth0 = inside.index_of("eth0")?.ok_or("eth0 is missing in the container")?;
            inside.set_up(eth0, None)?;
            let net = Ipv4Net::new(addr, self.ipam.prefix_len()).map_err(|e| e.to_string())?;
            inside.add_address(eth0, IpNet::V4(net))?;
            inside.add_route(&Route {
                to: IpNet::V4(Ipv4Net::default()),
                via: Some(self.ipam.gateway().into()),
                oif: eth0,
                metric: None,
                protocol: RouteProtocol::Boot,
            })?;
            Ok::<u32, String>(host_index)
        })();
        let host_index = match result {
            Ok(i) => i,
            Err(e) => {
                if let Ok(Some(i)) = rtnl.index_of(&host) {
                    let _ = rtnl.delete_link(i);
                }
                self.ipam.release(name);
                return Err(e);
            }
        };
        let forwards: Vec<Forward> = ports.iter().map(|p| Forward { port: *p, container: addr }).collect();
        let published = !forwards.is_empty();
        self.attached.insert(name.to_string(), (host_index, forwards));
        if published {
            if let Err(e) = self.sync_nat() {
                self.detach(name);
                return Err(e);
            }
        }
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        let mut ev =
            log::event("network.attached").with("name", name).with("address", addr).with("veth", &host);
        if !ports.is_empty() {
            ev = ev.with("ports", ports.join(","));
        }
        log::emit(ev);
        Ok(addr)
    }

    /// Disconnects `name`: its veth, lease and published ports. Nothing to do if it was not
    /// attached.
    pub fn detach(&mut self, name: &str) {
        let Some((host_index, forwards)) = self.attached.remove(name) else { return };
        if let Some(rtnl) = self.rtnl.as_mut() {
            if let Err(e) = rtnl.delete_link(host_index) {
                log::warn(&format!("bridge: {name}: {e}"));
            }
        }
        self.ipam.release(name);
        if !forwards.is_empty() {
            if let Err(e) = self.sync_nat() {
                log::warn(&format!("bridge: removing the ports of {name}: {e}"));
            }
        }
        log::emit(log::event("network.detached").with("name", name));
    }
}
