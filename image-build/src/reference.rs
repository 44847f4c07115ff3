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
    /// A registry reference such as `nginx:1.27` (pulling is not implemented yet).
    Registry(String),
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
        Ok(ImageRef::Registry(registry.to_string()))
    }
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
            ImageRef::Registry(r) => f.write_str(r),
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
        assert_eq!(parse("nginx:1.27").unwrap(), ImageRef::Registry("nginx:1.27".into()));
        assert_eq!(
            parse("registry.local:5000/team/app:1.4").unwrap(),
            ImageRef::Registry("registry.local:5000/team/app:1.4".into())
        );
        assert_eq!(parse("docker://busybox").unwrap(), ImageRef::Registry("busybox".into()));
        assert!(parse("").is_err());
        assert!(parse("a b").is_err());
        let err = parse("oci-archive:x.tar").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
    }
}
