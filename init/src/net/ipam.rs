//! Addresses on the container bridge.
//!
//! berth knows every container when it boots, so each `net = "bridge"` container's address is
//! reserved by name, in config order, from the subnet (the bridge itself has the first host
//! address): a restarted container gets the same address again, and `/etc/hosts` lists every
//! container before the first one starts. A lease is held while the container runs and released
//! when it stops; an address is never handed to two running containers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The bridge's address book.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Ipv4Net,
    reserved: BTreeMap<String, Ipv4Addr>,
    leased: BTreeSet<String>,
}

impl Ipam {
    /// An empty address book for `subnet` (the gateway is the first host address).
    pub fn new(subnet: Ipv4Net) -> Ipam {
        Ipam { subnet, reserved: BTreeMap::new(), leased: BTreeSet::new() }
    }

    /// The bridge's own address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The subnet's prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix_len()
    }

    /// The address reserved for `name`, reserving the lowest free one first.
    pub fn reserve(&mut self, name: &str) -> Result<Ipv4Addr, String> {
        if let Some(a) = self.reserved.get(name) {
            return Ok(*a);
        }
        let taken: BTreeSet<Ipv4Addr> = self.reserved.values().copied().collect();
        let first = u32::from(self.subnet.network()) + 2;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let free = (first..=last).map(Ipv4Addr::from).find(|a| !taken.contains(a)).ok_or_else(|| {
            format!(
                "the bridge subnet {} is full; give [network.bridge] subnet a shorter prefix",
                self.subnet
            )
        })?;
        self.reserved.insert(name.to_string(), free);
        Ok(free)
    }

    /// Leases `name`'s address to its starting container.
    pub fn lease(&mut self, name: &str) -> Result<Ipv4Addr, String> {
        let a = self.reserve(name)?;
        self.leased.insert(name.to_string());
        Ok(a)
    }

    /// Releases `name`'s lease (the reservation stays for its next start).
    pub fn release(&mut self, name: &str) {
        self.leased.remove(name);
    }

    /// Whether `name` holds a lease.
    pub fn is_leased(&self, name: &str) -> bool {
        self.leased.contains(name)
    }

    /// Every reservation: name → address.
    pub fn reservations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_addresses_and_leases() {
        let mut ipam = Ipam::new("10.88.0.0/29".parse().unwrap());
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let names = ["a", "b", "c", "d", "e"];
        let addrs: Vec<Ipv4Addr> = names.iter().map(|n| ipam.reserve(n).unwrap()).collect();
        assert_eq!(addrs[0], Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(addrs[4], Ipv4Addr::new(10, 88, 0, 6));
        assert!(ipam.reserve("f").unwrap_err().contains("full"));
        assert_eq!(ipam.lease("c").unwrap(), addrs[2]);
        assert!(ipam.is_leased("c"));
        ipam.release("c");
        assert!(!ipam.is_leased("c"));
        assert_eq!(ipam.lease("c").unwrap(), addrs[2]);
        let unique: BTreeSet<_> = ipam.reservations().values().collect();
        assert_eq!(unique.len(), 5);
    }
}
