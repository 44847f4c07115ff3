//! Reading an update from a registry: the manifest by tag, blobs by digest (the OCI
//! distribution API's `GET`s), over HTTPS or — `[update] insecure` — plain HTTP. A registry
//! that asks for a bearer token gets an anonymous one from the realm it names. Every blob is
//! checked against its digest as it streams; the manifest against the registry's
//! `Docker-Content-Digest`.

use std::io::{Read, Write};
use std::time::Duration;

use berth_schema::config::UpdateSource;
use berth_schema::update::MANIFEST_MEDIA_TYPE;
use sha2::{Digest as _, Sha256};
use ureq::http::{Response, StatusCode};
use ureq::Body;

/// The largest manifest, config or index read into memory.
const SMALL_MAX: u64 = 8 << 20;

/// A connection to the repository an update comes from.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    repository: String,
    authorization: Option<String>,
    tag: String,
    shown: String,
    /// Blobs fetched so far, and their bytes.
    pub fetched: (usize, u64),
}

/// The hex SHA-256 of `bytes`, as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A client for `source`'s repository.
    pub fn new(source: &UpdateSource, insecure: bool) -> Registry {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(format!("berth-updater/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let scheme = if insecure { "http" } else { "https" };
        Registry {
            agent,
            base: format!("{scheme}://{}", source.registry),
            repository: source.repository.clone(),
            authorization: None,
            tag: source.tag.clone(),
            shown: source.to_string(),
            fetched: (0, 0),
        }
    }

    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response<Body>, String> {
        for attempt in 0..2 {
            let mut request = self.agent.get(url);
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            if let Some(a) = &self.authorization {
                request = request.header("Authorization", a);
            }
            let response = request.call().map_err(|e| format!("cannot reach {url}: {e}"))?;
            if response.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            self.authorization = Some(self.anonymous_token(url, &challenge)?);
        }
        Err(format!("{url}: the registry refused the anonymous token"))
    }

    /// An anonymous bearer token for the challenge `Bearer realm="…",service="…",scope="…"`.
    fn anonymous_token(&self, url: &str, challenge: &str) -> Result<String, String> {
        let params = challenge
            .strip_prefix("Bearer ")
            .ok_or_else(|| format!("{url}: the registry wants credentials (`{challenge}`); berth's updater reads public repositories"))?;
        let param = |name: &str| {
            params.split(',').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let realm = param("realm").ok_or_else(|| format!("{url}: a bearer challenge without a realm"))?;
        let mut query = Vec::new();
        if let Some(service) = param("service") {
            query.push(format!("service={service}"));
        }
        query.push(format!(
            "scope={}",
            param("scope").unwrap_or(format!("repository:{}:pull", self.repository))
        ));
        let token_url = format!("{realm}{}{}", if realm.contains('?') { '&' } else { '?' }, query.join("&"));
        let mut response =
            self.agent.get(&token_url).call().map_err(|e| format!("cannot reach {token_url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{token_url} answered {}", response.status()));
        }
        let body =
            response.body_mut().with_config().limit(SMALL_MAX).read_to_vec().map_err(|e| e.to_string())?;
        let reply: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{token_url}: {e}"))?;
        let token = reply["token"].as_str().or(reply["access_token"].as_str()).unwrap_or_default();
        if token.is_empty() {
            return Err(format!("{token_url} answered without a token"));
        }
        Ok(format!("Bearer {token}"))
    }

    /// The manifest the followed tag names, and its digest; `None` when the tag does not exist
    /// (yet).
    fn tagged_manifest(&mut self) -> Result<Option<(Vec<u8>, String)>, String> {
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repository, self.tag);
        let mut response = self.get(&url, Some(MANIFEST_MEDIA_TYPE))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if response.status() != StatusCode::OK {
            return Err(format!("{url}: the registry answered {}", response.status()));
        }
        let claimed =
            response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = response
            .body_mut()
            .with_config()
            .limit(SMALL_MAX)
            .read_to_vec()
            .map_err(|e| format!("{url}: {e}"))?;
        let digest = digest_of(&bytes);
        if claimed.as_ref().is_some_and(|c| *c != digest) {
            return Err(format!("{url}: the manifest does not match the digest the registry gives"));
        }
        Ok(Some((bytes, digest)))
    }

    /// Streams blob `digest` into `out`, checking its size and digest; returns an error (and
    /// has written what came) when they do not match.
    fn fetch(&mut self, digest: &str, size: u64, out: &mut dyn Write) -> Result<(), String> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        let mut response = self.get(&url, None)?;
        if response.status() != StatusCode::OK {
            return Err(format!("{url}: the registry answered {}", response.status()));
        }
        self.fetched.0 += 1;
        let mut reader = response.body_mut().with_config().limit(size + 1).reader();
        self.fetched.1 += copy_checked(&mut reader, digest, size, out, &url)?;
        Ok(())
    }
}

/// Copies `input` into `out`, checking that it is `size` bytes whose SHA-256 is `digest`;
/// returns the bytes copied. `shown` names the input in errors.
pub fn copy_checked(
    input: &mut dyn Read,
    digest: &str,
    size: u64,
    out: &mut dyn Write,
    shown: &str,
) -> Result<u64, String> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| format!("{shown}: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Err(format!("blob {digest} is larger than its {size} bytes: refused"));
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| format!("writing blob {digest}: {e}"))?;
    }
    let got = format!("sha256:{}", hex::encode(hash.finalize()));
    if total != size || got != digest {
        return Err(format!("blob {digest} does not match its digest ({got}, {total} bytes): refused"));
    }
    Ok(total)
}

/// Where an update comes from: a registry's tag, or a bundle handed to the machine.
pub trait Source {
    /// How to name it in messages.
    fn name(&self) -> String;
    /// The manifest and its digest; `None` when there is none (yet).
    fn manifest(&mut self) -> Result<Option<(Vec<u8>, String)>, String>;
    /// Streams blob `digest` of `size` bytes into `out`, checked.
    fn blob(&mut self, digest: &str, size: u64, out: &mut dyn Write) -> Result<(), String>;
    /// Blobs read so far, and their bytes.
    fn fetched(&self) -> (usize, u64);

    /// A small blob (config, index), checked against `digest` and `size`.
    fn small_blob(&mut self, digest: &str, size: u64) -> Result<Vec<u8>, String> {
        if size > SMALL_MAX {
            return Err(format!("blob {digest} claims {size} bytes, more than berth reads into memory"));
        }
        let mut out = Vec::new();
        self.blob(digest, size, &mut out)?;
        Ok(out)
    }
}

impl Source for Registry {
    fn name(&self) -> String {
        self.shown.clone()
    }

    fn manifest(&mut self) -> Result<Option<(Vec<u8>, String)>, String> {
        self.tagged_manifest()
    }

    fn blob(&mut self, digest: &str, size: u64, out: &mut dyn Write) -> Result<(), String> {
        self.fetch(digest, size, out)
    }

    fn fetched(&self) -> (usize, u64) {
        self.fetched
    }
}
