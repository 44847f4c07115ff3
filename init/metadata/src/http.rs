//! One small HTTP client for every provider: plain HTTP to a link-local address, short
//! timeouts, and retries bounded by the helper's deadline.
//!
//! A request that cannot connect, or that the provider answers with a status it says to retry
//! (each provider names its own), is tried again a second later until the deadline; any other
//! answer is returned as it is, for the provider to judge.

use std::time::{Duration, Instant};

/// How long one connection may take to open (a link-local service answers at once or never).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one response may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The largest body read (user-data is limited to 16–64 KiB by the clouds).
const BODY_MAX: u64 = 1 << 20;

/// An answer: status, headers (names lower-case), body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy: metadata is text).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A request method.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    /// `GET`.
    Get,
    /// `PUT` with an empty body.
    Put,
    /// `POST` with a body.
    Post,
}

/// The client, with the deadline every retry loop stops at.
pub struct Http {
    agent: ureq::Agent,
    deadline: Instant,
}

impl Http {
    /// A client whose retries end at `deadline`.
    pub fn new(deadline: Instant) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(RESPONSE_TIMEOUT))
            .user_agent(format!("berth-metadata/{}", env!("CARGO_PKG_VERSION")))
            // Link-local services are never reached through a proxy (Azure refuses proxied
            // requests).
            .proxy(None)
            .build()
            .into();
        Http { agent, deadline }
    }

    /// One attempt.
    pub fn once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let result = match method {
            Method::Get => {
                let mut r = self.agent.get(url);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.call()
            }
            Method::Put | Method::Post => {
                let mut r = match method {
                    Method::Put => self.agent.put(url),
                    _ => self.agent.post(url),
                };
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r.send(body)
            }
        };
        let mut response = result.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_MAX)
            .read_to_vec()
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        Ok(Reply { status, headers, body })
    }

    /// Attempts until an answer whose status `retry` does not ask to repeat, or the deadline;
    /// the last error or answer is returned then.
    pub fn retrying(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        retry: impl Fn(u16) -> bool,
    ) -> Result<Reply, String> {
        loop {
            let result = self.once(method, url, headers, body);
            let again = match &result {
                Ok(reply) => retry(reply.status),
                Err(_) => true,
            };
            if !again || Instant::now() + RETRY_PAUSE >= self.deadline {
                return result;
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// `GET`, retried on connection errors and on `retry` statuses.
    pub fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        retry: impl Fn(u16) -> bool,
    ) -> Result<Reply, String> {
        self.retrying(Method::Get, url, headers, &[], retry)
    }
}

/// A status worth trying again at any provider: throttled, or the service not ready.
pub fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The answer's text when it is 2xx, `None` on 404 (absent), an error naming `url` otherwise.
pub fn optional_text(url: &str, reply: Reply) -> Result<Option<String>, String> {
    match reply.status {
        404 => Ok(None),
        s if (200..300).contains(&s) => Ok(Some(reply.text())),
        s => Err(format!("{url} answered HTTP {s}")),
    }
}

/// The answer's text when it is 2xx, an error naming `url` otherwise.
pub fn required_text(url: &str, reply: Reply) -> Result<String, String> {
    match reply.status {
        s if (200..300).contains(&s) => Ok(reply.text()),
        s => Err(format!("{url} answered HTTP {s}")),
    }
}
