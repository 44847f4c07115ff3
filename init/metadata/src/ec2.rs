//! Amazon EC2's instance metadata service, version 2: a session token first (`PUT
//! /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`), then every `GET` with
//! `X-aws-ec2-metadata-token`. A 401 means the token expired or was refused: one new token,
//! then the request again. A 403 on the token request means the service is turned off.

use std::cell::RefCell;
use std::collections::BTreeMap;

use berth_schema::metadata::{short_hostname, Metadata, Provider};

use crate::http::{optional_text, transient, Http, Method};

/// The token's lifetime asked for (the most EC2 allows: six hours).
const TOKEN_TTL: &str = "21600";

struct Session<'a> {
    http: &'a Http,
    base: &'a str,
    token: RefCell<String>,
}

impl Session<'_> {
    fn new_token(&self) -> Result<(), String> {
        let url = format!("{}/latest/api/token", self.base);
        let reply = self.http.retrying(
            Method::Put,
            &url,
            &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)],
            &[],
            transient,
        )?;
        match reply.status {
            200 => {
                *self.token.borrow_mut() = reply.text().trim().to_string();
                Ok(())
            }
            403 => Err(format!(
                "{url} answered 403: the instance metadata service is turned off for this instance"
            )),
            s => Err(format!("{url} answered HTTP {s} to the token request")),
        }
    }

    /// `GET` a path under `/latest/`; 404 is `None`.
    fn get(&self, path: &str) -> Result<Option<String>, String> {
        let url = format!("{}/latest/{path}", self.base);
        for renewed in [false, true] {
            let token = self.token.borrow().clone();
            let reply = self.http.get(&url, &[("X-aws-ec2-metadata-token", &token)], transient)?;
            if reply.status != 401 {
                return optional_text(&url, reply);
            }
            // Expired or refused: one new token, then the request once more.
            if !renewed {
                self.new_token()?;
            }
        }
        Err(format!("{url}: refused a new session token too (HTTP 401)"))
    }

    fn required(&self, path: &str) -> Result<String, String> {
        let url = format!("{}/latest/{path}", self.base);
        self.get(path)?.ok_or_else(|| format!("{url} answered 404"))
    }
}

/// Reads the instance's metadata from `base` (`http://169.254.169.254`).
pub fn fetch(http: &Http, base: &str) -> Result<Metadata, String> {
    let s = Session { http, base, token: RefCell::new(String::new()) };
    s.new_token()?;
    let instance_id = s.required("meta-data/instance-id")?;
    let hostname = s.get("meta-data/local-hostname")?.and_then(|h| short_hostname(&h));
    let mut public_keys = Vec::new();
    for index in key_indexes(&s.get("meta-data/public-keys/")?.unwrap_or_default()) {
        if let Some(key) = s.get(&format!("meta-data/public-keys/{index}/openssh-key"))? {
            public_keys.extend(key.lines().map(str::trim).filter(|k| !k.is_empty()).map(str::to_string));
        }
    }
    let user_data = s.get("user-data")?;
    let mut network = BTreeMap::new();
    for (key, path) in [
        ("local-ipv4", "meta-data/local-ipv4"),
        ("public-ipv4", "meta-data/public-ipv4"),
        ("mac", "meta-data/mac"),
        ("zone", "meta-data/placement/availability-zone"),
        ("region", "meta-data/placement/region"),
    ] {
        if let Some(v) = s.get(path)? {
            network.insert(key.to_string(), v.trim().to_string());
        }
    }
    Ok(Metadata {
        provider: Some(Provider::Ec2),
        instance_id: Some(instance_id.trim().to_string()),
        hostname,
        public_keys,
        user_data,
        network,
        ..Default::default()
    })
}

/// The key indexes of a `public-keys/` listing (`0=my-key` lines).
fn key_indexes(listing: &str) -> Vec<u32> {
    listing.lines().filter_map(|l| l.split_once('=')?.0.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_listing() {
        assert_eq!(super::key_indexes("0=my-key\n1=other\nbogus\n"), vec![0, 1]);
    }
}
