//! `/etc/resolv.conf` and `/etc/hosts` as PID 1 writes them (and gives them to containers).

use std::net::{IpAddr, Ipv4Addr};

/// `resolv.conf` text: name servers (at most three are used by resolvers; all are written),
/// then the search domains.
pub fn resolv_conf(servers: &[IpAddr], search: &[String]) -> String {
    let mut out = String::from("# written by berth\n");
    let mut seen = Vec::new();
    for s in servers {
        if !seen.contains(s) {
            seen.push(*s);
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    let mut domains: Vec<&str> = Vec::new();
    for d in search {
        if !domains.contains(&d.as_str()) {
            domains.push(d);
        }
    }
    if !domains.is_empty() {
        out.push_str(&format!("search {}\n", domains.join(" ")));
    }
    out
}

/// `hosts` text: localhost, the machine's hostname, the bridge containers (address, name and
/// hostname when it differs), then the configured extra entries.
pub fn hosts(
    hostname: &str,
    containers: &[(Ipv4Addr, String, String)],
    extra: &std::collections::BTreeMap<String, IpAddr>,
) -> String {
    let mut out =
        String::from("# written by berth\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    for (addr, name, host) in containers {
        if host != name {
            out.push_str(&format!("{addr}\t{name} {host}\n"));
        } else {
            out.push_str(&format!("{addr}\t{name}\n"));
        }
    }
    for (name, addr) in extra {
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_and_hosts() {
        let r = resolv_conf(
            &["10.0.2.3".parse().unwrap(), "1.1.1.1".parse().unwrap(), "10.0.2.3".parse().unwrap()],
            &["example.com".into(), "example.com".into()],
        );
        assert_eq!(r, "# written by berth\nnameserver 10.0.2.3\nnameserver 1.1.1.1\nsearch example.com\n");
        let mut extra = std::collections::BTreeMap::new();
        extra.insert("db.local".to_string(), "10.0.0.5".parse().unwrap());
        let h = hosts("edge", &[(Ipv4Addr::new(172, 30, 0, 2), "web".into(), "www".into())], &extra);
        assert!(h.contains("127.0.1.1\tedge\n"));
        assert!(h.contains("172.30.0.2\tweb www\n"));
        assert!(h.contains("10.0.0.5\tdb.local\n"));
    }
}
