//! Image references as written in a berth config file.
//!
//! The syntax follows the containers-image transport names that skopeo and podman users know:
//! `oci:DIR[:TAG]` (an OCI image layout directory), `docker-archive:FILE` (a `docker save` /
//! `podman save` tarball) and anything else is a registry reference (`nginx:1.27`,
//! `registry.local:5000/team/app@sha256:…`; `docker://REF` is accepted as well).

use std::fmt;
use std::path::{Path, PathBuf};

/// Transports of containers-image that berth recognizes but does not read; naming them gives a
/// clear error rather than a confusing registry lookup.
const UNSUPPORTED_TRANSPORTS: &[&str] =
    &["oci-archive", "dir", "containers-storage", "docker-daemon", "ostree", "sif"];

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, optionally with the tag to pick from its `index.json`.
    OciLayout {
        /// The layout directory (resolved against the config file's directory).
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` annotation to pick; `None`: the only image.
        tag: Option<String>,
    },
    /// A `docker save` / `podman save` tarball.
    DockerArchive {
        /// The tarball (resolved against the config file's directory).
        file: PathBuf,
    },
    /// A registry reference such as `nginx:1.27`.
    Registry {
        /// As written (without `docker://`).
        written: String,
        /// Parsed and normalized.
        parsed: RegistryRef,
    },
}

impl ImageRef {
    /// Parses an image reference; relative paths are resolved against `base_dir` (the directory
    /// of the config file that names the image).
    pub fn parse(text: &str, base_dir: &Path) -> Result<ImageRef, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty image reference".to_string());
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest);
            if dir.is_empty() {
                return Err(format!("{text:?}: `oci:` needs a directory, as in `oci:images/app:1.0`"));
            }
            if let Some(tag) = tag {
                if tag.is_empty() {
                    return Err(format!(
                        "{text:?}: empty tag after `:` (write `oci:{dir}` to use the only image)"
                    ));
                }
            }
            return Ok(ImageRef::OciLayout { dir: base_dir.join(dir), tag: tag.map(str::to_string) });
        }
        if let Some(file) = text.strip_prefix("docker-archive:") {
            if file.is_empty() {
                return Err(format!(
                    "{text:?}: `docker-archive:` needs a file, as in `docker-archive:images/app.tar`"
                ));
            }
            return Ok(ImageRef::DockerArchive { file: base_dir.join(file) });
        }
        let registry = text.strip_prefix("docker://").unwrap_or(text);
        if let Some((transport, _)) = registry.split_once(':') {
            if UNSUPPORTED_TRANSPORTS.contains(&transport) {
                return Err(format!(
                    "{text:?}: the `{transport}:` transport is not supported; use oci:DIR[:TAG], \
                     docker-archive:FILE or a registry reference"
                ));
            }
        }
        if registry.is_empty() || registry.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text:?}: not a valid registry reference"));
        }
        let parsed = RegistryRef::parse(registry).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(ImageRef::Registry { written: registry.to_string(), parsed })
    }
}

/// The registry that Docker's short names (`busybox`, `team/app:1.0`) refer to: the
/// normalization rule every Docker-compatible tool applies.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The host that serves the API of [`DEFAULT_REGISTRY`].
pub const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";

/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// A registry reference, normalized the way Docker does: `busybox` is
/// `docker.io/library/busybox:latest`, `team/app` is `docker.io/team/app:latest`, and a first
/// component with a `.` or `:` (or `localhost`) names the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// The registry, `HOST[:PORT]` (lowercase host), e.g. `registry.example:5000`.
    pub registry: String,
    /// The repository path inside the registry, e.g. `team/app` or `library/busybox`.
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest was written).
    pub tag: Option<String>,
    /// The manifest digest (`sha256:…`) after `@`, if written.
    pub digest: Option<String>,
}

impl RegistryRef {
    /// Parses and normalizes `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.
    pub fn parse(text: &str) -> Result<RegistryRef, String> {
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                crate::blobs::validate_digest(digest).map_err(|e| e.to_string())?;
                (name, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name, None),
        };
        if let Some(tag) = tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && !tag.starts_with(['.', '-'])
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(format!(
                    "invalid tag {tag:?} (letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`)"
                ));
            }
        }
        let (registry, mut repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first =>
            {
                (first.to_lowercase(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == format!("index.{DEFAULT_REGISTRY}") {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        validate_registry(&registry)?;
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        validate_repository(&repository)?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(RegistryRef { registry, repository, tag, digest })
    }

    /// The host (and port) that serves the registry's API.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API_HOST
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if written, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// `REGISTRY/REPOSITORY`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for RegistryRef {
    /// The fully qualified form, `REGISTRY/REPOSITORY[:TAG][@DIGEST]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks `HOST[:PORT]` (a DNS name, an IPv4 address or a bracketed IPv6 address).
fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => (v6, after.strip_prefix(':')),
            _ => return Err(format!("invalid registry {registry:?}")),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    let host_ok = registry.starts_with('[')
        || (!host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("invalid registry {registry:?} (expected HOST[:PORT])"))
    }
}

/// Checks a repository path: `/`-separated components of lowercase letters and digits,
/// joined inside a component by `.`, `_`, `__` or dashes.
fn validate_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
                return false;
            }
        }
        true
    };
    if repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "invalid repository name {repository:?} (lowercase letters and digits, separated by `/`, `.`, `_` or `-`)"
        ));
    }
    Ok(())
}

/// Splits `DIR[:TAG]`: the tag is the part after the last `:` if it contains no `/`.
fn split_tag(rest: &str) -> (&str, Option<&str>) {
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag)),
        _ => (rest, None),
    }
}

impl fmt::Display for ImageRef {
    /// Writes the reference back in transport syntax (with the resolved path).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::OciLayout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::OciLayout { dir, tag: Some(tag) } => write!(f, "oci:{}:{tag}", dir.display()),
            ImageRef::DockerArchive { file } => write!(f, "docker-archive:{}", file.display()),
            ImageRef::Registry { written, .. } => f.write_str(written),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ImageRef, String> {
        ImageRef::parse(s, Path::new("/cfg"))
    }

    #[test]
    fn oci_layout() {
        assert_eq!(
            parse("oci:images/app:1.4").unwrap(),
            ImageRef::OciLayout { dir: "/cfg/images/app".into(), tag: Some("1.4".into()) }
        );
        assert_eq!(
            parse("oci:images/app").unwrap(),
            ImageRef::OciLayout { dir: "/cfg/images/app".into(), tag: None }
        );
        // The last `:` part contains a `/`: it is part of the directory.
        assert_eq!(parse("oci:a:b/c").unwrap(), ImageRef::OciLayout { dir: "/cfg/a:b/c".into(), tag: None });
        assert_eq!(
            parse("oci:/abs/dir:latest").unwrap(),
            ImageRef::OciLayout { dir: "/abs/dir".into(), tag: Some("latest".into()) }
        );
        assert!(parse("oci:").is_err());
        assert!(parse("oci::tag").is_err());
        assert!(parse("oci:dir:").is_err());
        assert_eq!(parse("oci:images/app:1.4").unwrap().to_string(), "oci:/cfg/images/app:1.4");
    }

    #[test]
    fn docker_archive() {
        assert_eq!(
            parse("docker-archive:images/pg.tar").unwrap(),
            ImageRef::DockerArchive { file: "/cfg/images/pg.tar".into() }
        );
        assert_eq!(
            parse("docker-archive:/x/pg.tar").unwrap(),
            ImageRef::DockerArchive { file: "/x/pg.tar".into() }
        );
        assert!(parse("docker-archive:").is_err());
    }

    #[test]
    fn registry() {
        let registry = |text: &str| ImageRef::Registry {
            written: text.to_string(),
            parsed: RegistryRef::parse(text).unwrap(),
        };
        assert_eq!(parse("nginx:1.27").unwrap(), registry("nginx:1.27"));
        assert_eq!(
            parse("registry.local:5000/team/app:1.4").unwrap(),
            registry("registry.local:5000/team/app:1.4")
        );
        assert_eq!(parse("docker://busybox").unwrap(), registry("busybox"));
        assert_eq!(registry("busybox").to_string(), "busybox");
        assert!(parse("").is_err());
        assert!(parse("a b").is_err());
        let err = parse("oci-archive:x.tar").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        assert!(parse("Team/App").is_err());
        assert!(parse("busybox:").is_err());
    }

    fn norm(s: &str) -> String {
        RegistryRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn registry_normalization() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("docker.io/team/app:2"), "docker.io/team/app:2");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:1"), "localhost:5000/app:1");
        assert_eq!(norm("registry.example:5000/team/app:1.4"), "registry.example:5000/team/app:1.4");
        assert_eq!(norm("Registry.Example/a/b"), "registry.example/a/b:latest");
        assert_eq!(norm("127.0.0.1:5000/x/y"), "127.0.0.1:5000/x/y:latest");
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = RegistryRef::parse(&format!("registry.example/app@{digest}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (None, Some(digest.as_str())));
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.to_string(), format!("registry.example/app@{digest}"));
        let r = RegistryRef::parse(&format!("app:1@{digest}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/app:1@{digest}"));
        assert_eq!(r.manifest_reference(), digest);
        let r = RegistryRef::parse("busybox").unwrap();
        assert_eq!(
            (r.api_host(), r.name().as_str()),
            (DEFAULT_REGISTRY_API_HOST, "docker.io/library/busybox")
        );
        assert_eq!(RegistryRef::parse("r.example:1/a").unwrap().api_host(), "r.example:1");
        assert_eq!(r.manifest_reference(), "latest");
        for bad in [
            "app@sha256:12",
            "app@md5:abc",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "r.example:0/a",
            "r.example:x/a",
            "a:-x",
        ] {
            assert!(RegistryRef::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(RegistryRef::parse("a__b/c-d--e.f_g").is_ok());
    }
}
