//! Registry authentication: the `WWW-Authenticate` challenge parser and the credentials berth
//! finds for a registry (`BERTH_REGISTRY_USERNAME` / `BERTH_REGISTRY_PASSWORD`, else the `auths`
//! of Docker's `config.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use crate::reference::DEFAULT_REGISTRY;

/// One challenge of a `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// The auth parameters, names lowercased, values unquoted.
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` header value (RFC 9110 §11.6.1): one or more challenges, each a
/// scheme followed by comma-separated `name=value` parameters (values plain tokens or quoted
/// strings with `\` escapes). A malformed header gives the challenges read before the error.
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut rest = header.trim_start_matches([' ', '\t', ',']);
    while !rest.is_empty() {
        let (token, after) = take_token(rest);
        if token.is_empty() {
            break;
        }
        let after = after.trim_start_matches([' ', '\t']);
        if let Some(value_text) = after.strip_prefix('=').filter(|_| !challenges.is_empty()) {
            // A parameter of the current challenge.
            let value_text = value_text.trim_start_matches([' ', '\t']);
            let (value, after_value) = if let Some(quoted) = value_text.strip_prefix('"') {
                match take_quoted(quoted) {
                    Some(v) => v,
                    None => break,
                }
            } else {
                let (v, a) = take_token(value_text);
                (v.to_string(), a)
            };
            if let Some(current) = challenges.last_mut() {
                current.params.insert(token.to_ascii_lowercase(), value);
            }
            rest = after_value.trim_start_matches([' ', '\t', ',']);
        } else {
            // A new challenge: the scheme, maybe followed by parameters.
            challenges.push(Challenge { scheme: token.to_ascii_lowercase(), params: BTreeMap::new() });
            rest = after.trim_start_matches([' ', '\t', ',']);
        }
    }
    challenges
}

/// A token: everything up to whitespace, `,`, `=` or `"`.
fn take_token(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t', ',', '=', '"']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// A quoted string's value (after the opening quote) and the rest after the closing quote.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// A user name and password for a registry, and where they came from (for messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or token).
    pub password: String,
    /// Where they were found, e.g. `BERTH_REGISTRY_USERNAME` or a config.json path.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, source: {:?} }}", self.username, self.source)
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP basic authentication.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

/// The environment variable with the user name for every registry.
pub const USERNAME_ENV: &str = "BERTH_REGISTRY_USERNAME";
/// The environment variable with the password for every registry.
pub const PASSWORD_ENV: &str = "BERTH_REGISTRY_PASSWORD";

/// The credentials for `registry` (`HOST[:PORT]` as in the reference): the environment's
/// `BERTH_REGISTRY_USERNAME` and `BERTH_REGISTRY_PASSWORD` when both are set, else the matching
/// `auths` entry of `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
/// `Ok(None)`: none found; `Err`: a config file that exists but cannot be used.
pub fn find_credentials(registry: &str) -> Result<Option<Credentials>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var(USERNAME_ENV), var(PASSWORD_ENV)) {
        (Some(username), Some(password)) => {
            return Ok(Some(Credentials { username, password, source: format!("${USERNAME_ENV}") }))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!("set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither"));
        }
        (None, None) => {}
    }
    let Some(path) = docker_config_path() else { return Ok(None) };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    credentials_from_docker_config(&text, registry, &path.display().to_string())
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// Finds `registry`'s entry in the text of a Docker `config.json` (`location` names it in
/// errors). Keys may carry a scheme and a path (`https://host/v1/`); the default registry's
/// credentials are also found under its legacy `index.` host name.
pub fn credentials_from_docker_config(
    text: &str,
    registry: &str,
    location: &str,
) -> Result<Option<Credentials>, String> {
    let config: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{location}: invalid JSON: {e}"))?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else { return Ok(None) };
    let host_of = |key: &str| -> String {
        let key = key.split_once("://").map_or(key, |(_, rest)| rest);
        key.split('/').next().unwrap_or_default().to_ascii_lowercase()
    };
    let legacy = format!("index.{DEFAULT_REGISTRY}");
    let matches = |key: &str| {
        let host = host_of(key);
        host == registry || (registry == DEFAULT_REGISTRY && host == legacy)
    };
    for (key, entry) in auths {
        if !matches(key) {
            continue;
        }
        let Some(auth) = entry.get("auth").and_then(|a| a.as_str()).filter(|a| !a.is_empty()) else {
            continue;
        };
        let bad = |why: &str| format!("{location}: auths.{key:?}.auth: {why}");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(&format!("not base64: {e}")))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
        let (username, password) =
            decoded.split_once(':').ok_or_else(|| bad("expected base64 of `user:password`"))?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
            source: location.to_string(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn bearer_challenge() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            [
                ("realm", "https://auth.example/token"),
                ("scope", "repository:team/app:pull"),
                ("service", "registry.example")
            ]
        );
    }

    #[test]
    fn basic_and_odd_spellings() {
        let c = parse_www_authenticate(r#"Basic realm="basic-realm""#);
        assert_eq!((c[0].scheme.as_str(), params(&c[0])), ("basic", vec![("realm", "basic-realm")]));
        assert_eq!(parse_www_authenticate("Basic")[0].scheme, "basic");
        // Spaces around `=` and commas, unquoted tokens, escapes, several challenges.
        let c = parse_www_authenticate(
            r#"BEARER Realm = "http://127.0.0.1:9/t" , service=reg,scope="a:\"b\":pull", Basic realm=x"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            params(&c[0]),
            [("realm", "http://127.0.0.1:9/t"), ("scope", "a:\"b\":pull"), ("service", "reg")]
        );
        assert_eq!((c[1].scheme.as_str(), params(&c[1])), ("basic", vec![("realm", "x")]));
        // Scope with several actions (commas inside quotes).
        let c = parse_www_authenticate(r#"Bearer realm="r",scope="repository:a:pull,push""#);
        assert_eq!(c[0].params["scope"], "repository:a:pull,push");
        // Malformed input never panics.
        assert!(parse_www_authenticate("").is_empty());
        assert!(parse_www_authenticate("=x").is_empty());
        let c = parse_www_authenticate(r#"Bearer realm="unterminated"#);
        assert_eq!((c.len(), c[0].params.len()), (1, 0));
    }

    #[test]
    fn docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        let text = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}}, "https://r.example/v1/": {{"auth": "{auth}"}}, "other:1": {{}}}}}}"#
        );
        let c = credentials_from_docker_config(&text, "127.0.0.1:5000", "cfg").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pa:ss"));
        assert!(credentials_from_docker_config(&text, "r.example", "cfg").unwrap().is_some());
        assert!(credentials_from_docker_config(&text, "other:1", "cfg").unwrap().is_none());
        assert!(credentials_from_docker_config(&text, "127.0.0.1:5001", "cfg").unwrap().is_none());
        let err = credentials_from_docker_config(r#"{"auths":{"h":{"auth":"!!"}}}"#, "h", "cfg").unwrap_err();
        assert!(err.contains("not base64"), "{err}");
        assert!(credentials_from_docker_config("{", "h", "cfg").unwrap_err().contains("invalid JSON"));
        assert_eq!(
            Credentials { username: "u".into(), password: "p".into(), source: String::new() }.basic_header(),
            "Basic dTpw"
        );
    }
}
