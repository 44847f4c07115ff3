//! A container's process: an image's process defaults (the `config` object of an OCI image
//! configuration) merged with a berth config's overrides, following Docker's rules. Shared by
//! `berth build` and PID 1 (containers delivered at boot).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `PATH` Docker gives a Linux container whose environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Deserializes `null` (and absence, with `#[serde(default)]`) as the type's default: image
/// configurations written by various tools use both.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The process defaults of an image: the `config` object of an OCI image configuration.
/// Every field is optional and `null`-tolerant in the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(
        rename = "Entrypoint",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(
        rename = "Cmd",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE` strings.
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    /// `WorkingDir` (empty: not set).
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `User`: `user[:group]`, names or numbers (empty: root).
    #[serde(
        rename = "User",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
}

/// The process a container runs: the image defaults merged with the config's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedProcess {
    /// argv: entrypoint followed by the command.
    pub args: Vec<String>,
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// Absolute working directory.
    pub working_dir: String,
    /// `user[:group]` as written (empty: root); resolve with `accounts::Accounts::resolve`.
    pub user: String,
}

/// Merges an image's process defaults with overrides, exactly as Docker does:
///
/// - an `entrypoint` override replaces `Entrypoint` and drops the image's `Cmd` (unless
///   `command` is also given); an empty entrypoint override (`--entrypoint ""`) clears the
///   entrypoint but keeps the image `Cmd`;
/// - a `command` override replaces `Cmd` only; an empty `command` counts as not given;
/// - args = entrypoint ++ cmd; empty is an error;
/// - env: `PATH` defaulted first when the image has none, then the image `Env` in order, with
///   `env` overriding values by key in place and new keys appended in sorted order; `HOSTNAME`
///   is not added here;
/// - working directory: override, else image `WorkingDir`, else `/`; it must be absolute;
/// - user: override, else image `User`, else empty (root); empty overrides count as absent.
pub fn merge_process(
    image: &ImageConfig,
    entrypoint: Option<&[String]>,
    command: Option<&[String]>,
    env: &BTreeMap<String, String>,
    working_dir: Option<&str>,
    user: Option<&str>,
) -> Result<MergedProcess, String> {
    // Docker's daemon `merge()`: an empty override counts as absent, except that a non-nil
    // empty entrypoint clears the image entrypoint.
    let command = command.filter(|c| !c.is_empty());
    let (entrypoint, cmd): (&[String], &[String]) = match entrypoint {
        Some(ep) if !ep.is_empty() => (ep, command.unwrap_or(&[])),
        Some(_) => (&[], command.unwrap_or(&image.cmd)),
        None => (&image.entrypoint, command.unwrap_or(&image.cmd)),
    };
    let args: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if args.is_empty() {
        return Err(
            "no command: the image has no Entrypoint/Cmd and the config gives no `command`".to_string()
        );
    }

    for key in env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!(
                "invalid environment variable name {key:?} (it must be non-empty and contain no `=`)"
            ));
        }
    }
    let key_of = |entry: &str| entry.split_once('=').map_or(entry, |(k, _)| k).to_string();
    let mut merged: Vec<String> = Vec::with_capacity(image.env.len() + env.len() + 1);
    if !image.env.iter().any(|e| key_of(e) == "PATH") && !env.contains_key("PATH") {
        merged.push(format!("PATH={DEFAULT_PATH}"));
    }
    for entry in &image.env {
        let key = key_of(entry);
        match env.get(&key) {
            Some(value) => merged.push(format!("{key}={value}")),
            None => merged.push(entry.clone()),
        }
    }
    for (key, value) in env {
        if !image.env.iter().any(|e| key_of(e) == *key) {
            merged.push(format!("{key}={value}"));
        }
    }

    let working_dir = match working_dir.filter(|w| !w.is_empty()) {
        Some(w) if w.starts_with('/') => w.to_string(),
        Some(w) => return Err(format!("working directory {w:?} is invalid: it must be an absolute path")),
        None if image.working_dir.is_empty() => "/".to_string(),
        // Docker's builder always stores an absolute path; be lenient with hand-made images.
        None if !image.working_dir.starts_with('/') => format!("/{}", image.working_dir),
        None => image.working_dir.clone(),
    };

    // Docker: an empty user override counts as absent.
    let user = user.filter(|u| !u.is_empty()).map_or_else(|| image.user.clone(), str::to_string);

    Ok(MergedProcess { args, env: merged, working_dir, user })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: v(&["/docker-entrypoint.sh"]),
            cmd: v(&["nginx", "-g", "daemon off;"]),
            env: v(&["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27"]),
            working_dir: "/srv".into(),
            user: "nginx".into(),
        }
    }

    fn merge(img: &ImageConfig, ep: Option<&[&str]>, cmd: Option<&[&str]>) -> Result<MergedProcess, String> {
        let ep = ep.map(v);
        let cmd = cmd.map(v);
        merge_process(img, ep.as_deref(), cmd.as_deref(), &BTreeMap::new(), None, None)
    }

    #[test]
    fn image_defaults() {
        let m = merge(&image(), None, None).unwrap();
        assert_eq!(m.args, v(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]));
        assert_eq!(m.env, v(&["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27"]));
        assert_eq!(m.working_dir, "/srv");
        assert_eq!(m.user, "nginx");
    }

    #[test]
    fn command_replaces_cmd_only() {
        let m = merge(&image(), None, Some(&["sh"])).unwrap();
        assert_eq!(m.args, v(&["/docker-entrypoint.sh", "sh"]));
    }

    #[test]
    fn entrypoint_drops_image_cmd() {
        let m = merge(&image(), Some(&["/bin/sh"]), None).unwrap();
        assert_eq!(m.args, v(&["/bin/sh"]));
        let m = merge(&image(), Some(&["/bin/sh"]), Some(&["-c", "id"])).unwrap();
        assert_eq!(m.args, v(&["/bin/sh", "-c", "id"]));
    }

    #[test]
    fn empty_entrypoint_clears_it_but_keeps_cmd() {
        let m = merge(&image(), Some(&[]), None).unwrap();
        assert_eq!(m.args, v(&["nginx", "-g", "daemon off;"]));
    }

    #[test]
    fn empty_command_counts_as_absent() {
        let m = merge(&image(), None, Some(&[])).unwrap();
        assert_eq!(m.args, image().entrypoint.into_iter().chain(image().cmd).collect::<Vec<_>>());
    }

    #[test]
    fn no_command_is_an_error() {
        let err = merge(&ImageConfig::default(), None, None).unwrap_err();
        assert!(err.contains("no command"), "{err}");
        // Entrypoint override with an image that only has Cmd: Cmd is dropped, ep alone runs.
        let img = ImageConfig { cmd: v(&["sh"]), ..Default::default() };
        assert_eq!(merge(&img, Some(&["true"]), None).unwrap().args, v(&["true"]));
        assert!(merge(&img, Some(&[]), Some(&[])).unwrap().args == v(&["sh"]));
    }

    #[test]
    fn env_override_order_and_default_path() {
        let img = ImageConfig { cmd: v(&["sh"]), env: v(&["B=1", "A=2", "FLAG"]), ..Default::default() };
        let env: BTreeMap<String, String> = [("Z", "z"), ("A", "new"), ("C", "c")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let m = merge_process(&img, None, None, &env, None, None).unwrap();
        assert_eq!(m.env, v(&[&format!("PATH={DEFAULT_PATH}"), "B=1", "A=new", "FLAG", "C=c", "Z=z"]));
        assert!(!m.env.iter().any(|e| e.starts_with("HOSTNAME=")));
        // A PATH from the config replaces the default.
        let env: BTreeMap<String, String> = [("PATH".to_string(), "/x".to_string())].into();
        let m = merge_process(&img, None, None, &env, None, None).unwrap();
        assert_eq!(m.env, v(&["B=1", "A=2", "FLAG", "PATH=/x"]));
        let bad: BTreeMap<String, String> = [("A=B".to_string(), "x".to_string())].into();
        assert!(merge_process(&img, None, None, &bad, None, None).is_err());
    }

    #[test]
    fn working_dir_and_user() {
        let img = ImageConfig { cmd: v(&["sh"]), ..Default::default() };
        let m = merge_process(&img, None, None, &BTreeMap::new(), None, None).unwrap();
        assert_eq!((m.working_dir.as_str(), m.user.as_str()), ("/", ""));
        let m = merge_process(&image(), None, None, &BTreeMap::new(), Some("/app"), Some("1000:10")).unwrap();
        assert_eq!((m.working_dir.as_str(), m.user.as_str()), ("/app", "1000:10"));
        assert!(merge_process(&img, None, None, &BTreeMap::new(), Some("rel"), None).is_err());
    }
}
