//! Pulling images from registries (the OCI distribution API, `/v2/`) into the [`BlobCache`].
//!
//! HTTPS by default; plain HTTP only for registries marked insecure (`--insecure-registry`,
//! `BERTH_INSECURE_REGISTRIES`). Bearer-token and basic authentication answer the registry's
//! `WWW-Authenticate` challenge with the credentials of [`auth::find_credentials`].
//! An index or Docker manifest list leads to its linux/amd64 image. Every document and blob is
//! verified (digest and size) while it is written to a temporary file in the cache, which is
//! renamed under its digest only then: an interrupted or corrupt download leaves nothing under
//! a digest name, and concurrent builds share the cache safely. Layers download in parallel,
//! with progress bars when standard error is a terminal.

pub mod auth;
pub mod push;

use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ureq::http::{Response, StatusCode};
use ureq::Body;

use crate::blobs::{sha256_bytes, validate_digest, BlobCache, BlobError};
use crate::image_config::ConfigFile;
use crate::reference::RegistryRef;
use crate::source::spec::{
    Compression, Descriptor, Index, Manifest, MEDIA_DOCKER_CONFIG, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use crate::source::{check_config, select_platform, ImageError, LayerBlob, ResolvedImage};
use auth::{Challenge, Credentials};

/// The environment variable listing insecure (plain HTTP) registries, comma-separated.
pub const INSECURE_ENV: &str = "BERTH_INSECURE_REGISTRIES";

/// The manifest media types berth accepts, most specific last (the `Accept` header).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index berth reads (the distribution spec asks registries to accept at
/// least 4 MiB).
const MAX_MANIFEST_SIZE: u64 = 8 << 20;
/// Largest image configuration berth reads into memory.
const MAX_CONFIG_SIZE: u64 = 64 << 20;
/// How deep indexes may nest.
const MAX_INDEX_DEPTH: usize = 4;
/// Parallel layer downloads.
const DOWNLOAD_THREADS: usize = 3;
/// Tries for a blob whose download fails on the way (connection lost, 5xx).
const BLOB_ATTEMPTS: u32 = 3;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`HOST[:PORT]`, or `HOST` for every port) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Show progress bars for downloads (only ever on a terminal).
    pub progress: bool,
}

impl PullOptions {
    /// `insecure` plus the registries of `$BERTH_INSECURE_REGISTRIES`; progress bars on.
    pub fn with_env(insecure: &[String]) -> PullOptions {
        let mut insecure_registries: Vec<String> = insecure.to_vec();
        if let Ok(list) = std::env::var(INSECURE_ENV) {
            insecure_registries
                .extend(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
        }
        PullOptions { insecure_registries, progress: true }
    }

    /// Whether `registry` (`HOST[:PORT]`) is reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').filter(|(h, _)| !h.ends_with(':')).map_or(registry, |(h, _)| h);
        self.insecure_registries.iter().any(|entry| {
            let entry = entry.trim().trim_start_matches("http://").trim_end_matches('/').to_ascii_lowercase();
            entry == registry || entry == host
        })
    }
}

/// Pulls `image` (written `written` in the config) into `cache`. `pinned`, when given, is the
/// manifest digest to fetch instead of the tag (from the lock file); a digest written in the
/// reference always wins.
pub fn pull(
    image: &RegistryRef,
    written: &str,
    pinned: Option<&str>,
    cache: &BlobCache,
    opts: &PullOptions,
) -> Result<ResolvedImage, ImageError> {
    let client = Client::new(image, written, cache, opts);
    let target = image.digest.as_deref().or(pinned).unwrap_or(image.manifest_reference()).to_string();
    let mut doc = client.manifest(&target, None)?;
    let mut depth = 0;
    let (manifest_digest, manifest) = loop {
        if !doc.is_index {
            let manifest: Manifest = client.parse_json(&doc.url, &doc.bytes)?;
            break (doc.digest, manifest);
        }
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(client.invalid(format!("image indexes nested more than {MAX_INDEX_DEPTH} deep")));
        }
        let index: Index = client.parse_json(&doc.url, &doc.bytes)?;
        let desc = select_platform(written, &doc.digest, &index)?;
        doc = client.manifest(&desc.digest, Some(&desc))?;
    };
    if manifest.schema_version != 2 {
        return Err(client.invalid(format!(
            "manifest {manifest_digest} has schemaVersion {}, berth reads version 2 (re-push the image with a current tool)",
            manifest.schema_version
        )));
    }
    match manifest.config.media_type.as_str() {
        MEDIA_OCI_CONFIG | MEDIA_DOCKER_CONFIG | "" => {}
        other => {
            return Err(client.invalid(format!(
                "manifest {manifest_digest} has a config of media type {other:?}: it is not a container image"
            )))
        }
    }
    if manifest.config.size > MAX_CONFIG_SIZE {
        return Err(client.invalid(format!(
            "the image configuration {} is {} bytes; berth reads up to {MAX_CONFIG_SIZE}",
            manifest.config.digest, manifest.config.size
        )));
    }
    let config_path = client.blob(&manifest.config, "config", &ProgressBar::hidden())?;
    let config_bytes = std::fs::read(&config_path).map_err(|source| ImageError::Io {
        reference: written.to_string(),
        location: config_path.display().to_string(),
        source,
    })?;
    let config: ConfigFile = client.parse_json(&client.blob_url(&manifest.config.digest), &config_bytes)?;
    check_config(written, &config, manifest.layers.len())?;

    let mut compressions = Vec::with_capacity(manifest.layers.len());
    for (i, (desc, diff_id)) in manifest.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let compression = Compression::from_layer_media_type(&desc.media_type).ok_or_else(|| {
            client.invalid(format!(
                "layer {} {} has media type {:?}, which is not a layer berth can read (tar, tar+gzip, tar+zstd)",
                i + 1,
                desc.digest,
                desc.media_type
            ))
        })?;
        if compression == Compression::None && desc.digest != *diff_id {
            return Err(client.invalid(format!(
                "layer {} is uncompressed but its digest {} differs from its diff id {diff_id}",
                i + 1,
                desc.digest
            )));
        }
        compressions.push(compression);
    }
    let paths = client.layers(&manifest.layers)?;
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(compressions)
        .zip(paths)
        .map(|(((desc, diff_id), compression), path)| LayerBlob {
            digest: desc.digest.clone(),
            diff_id: Some(diff_id.clone()),
            compression,
            path,
            size: desc.size,
        })
        .collect();
    Ok(ResolvedImage {
        manifest_digest,
        config_digest: manifest.config.digest,
        config: config.config,
        layers,
    })
}

/// A manifest or index as fetched and verified.
struct Document {
    url: String,
    digest: String,
    bytes: Vec<u8>,
    is_index: bool,
}

/// Why a request failed, and whether trying again may help.
struct Failure {
    error: ImageError,
    retry: bool,
}

impl From<ImageError> for Failure {
    fn from(error: ImageError) -> Failure {
        Failure { error, retry: false }
    }
}

/// A connection to one repository of one registry.
struct Client<'a> {
    agent: ureq::Agent,
    written: &'a str,
    image: &'a RegistryRef,
    base: String,
    insecure: bool,
    cache: &'a BlobCache,
    progress: bool,
    /// The `Authorization` header to send, once a challenge was answered.
    authorization: Mutex<Option<String>>,
    /// Looked up at the first challenge.
    credentials: OnceLock<Result<Option<Credentials>, String>>,
}

impl<'a> Client<'a> {
    fn new(image: &'a RegistryRef, written: &'a str, cache: &'a BlobCache, opts: &PullOptions) -> Client<'a> {
        let insecure = opts.is_insecure(&image.registry);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(format!("berth/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let scheme = if insecure { "http" } else { "https" };
        Client {
            agent,
            written,
            image,
            base: format!("{scheme}://{}", image.api_host()),
            insecure,
            cache,
            progress: opts.progress && io::stderr().is_terminal(),
            authorization: Mutex::new(None),
            credentials: OnceLock::new(),
        }
    }

    fn error(&self, message: String) -> ImageError {
        ImageError::Registry { reference: self.written.to_string(), message }
    }

    fn invalid(&self, message: String) -> ImageError {
        ImageError::Invalid { reference: self.written.to_string(), message }
    }

    fn parse_json<T: serde::de::DeserializeOwned>(&self, url: &str, bytes: &[u8]) -> Result<T, ImageError> {
        serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
            reference: self.written.to_string(),
            location: url.to_string(),
            source,
        })
    }

    fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.image.repository)
    }

    /// A request that could not be made or whose answer could not be read.
    fn transport(&self, url: &str, e: impl std::fmt::Display) -> Failure {
        let hint = if self.insecure || self.image.registry == crate::reference::DEFAULT_REGISTRY {
            String::new()
        } else {
            format!(
                " (berth reaches registries over HTTPS; if {} serves plain HTTP, mark it insecure with \
                 `--insecure-registry {}` or {INSECURE_ENV})",
                self.image.registry, self.image.registry
            )
        };
        Failure { error: self.error(format!("cannot reach {url}: {e}{hint}")), retry: true }
    }

    /// GET `url`, answering an authentication challenge once.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<Response<Body>, Failure> {
        let mut answered = false;
        loop {
            let sent = self.authorization.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut request = self.agent.get(url);
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            if let Some(authorization) = &sent {
                request = request.header("Authorization", authorization);
            }
            let response = request.call().map_err(|e| self.transport(url, e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if answered {
                return Err(self.rejected(url, "the registry", response).into());
            }
            answered = true;
            let challenges: Vec<Challenge> = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_www_authenticate)
                .collect();
            let authorization = self.answer(url, &challenges)?;
            *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(authorization);
        }
    }

    fn credentials(&self) -> Result<Option<&Credentials>, ImageError> {
        match self.credentials.get_or_init(|| auth::find_credentials(&self.image.registry)) {
            Ok(c) => Ok(c.as_ref()),
            Err(e) => Err(self.error(format!("registry credentials: {e}"))),
        }
    }

    /// How to supply credentials, for messages.
    fn credentials_hint(&self) -> String {
        format!(
            "set {} and {}, or log in with `docker login {}` (berth reads $DOCKER_CONFIG/config.json or ~/.docker/config.json)",
            auth::USERNAME_ENV,
            auth::PASSWORD_ENV,
            self.image.registry
        )
    }

    /// A 401 (or 403) after credentials or a token were sent, or when none were available.
    fn rejected(&self, url: &str, who: &str, response: Response<Body>) -> ImageError {
        let status = response.status();
        let detail = error_detail(response);
        let credentials = self.credentials.get().and_then(|c| c.as_ref().ok()).and_then(Option::as_ref);
        match credentials {
            Some(c) => self.error(format!(
                "{url}: {who} answered {status}{detail}: it rejected the credentials of user {:?} (from {}); check them",
                c.username, c.source
            )),
            None => self.error(format!(
                "{url}: {who} answered {status}{detail}: it requires credentials; {}",
                self.credentials_hint()
            )),
        }
    }

    /// The `Authorization` header answering `challenges`.
    fn answer(&self, url: &str, challenges: &[Challenge]) -> Result<String, Failure> {
        let credentials = self.credentials()?;
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            return self.token(url, bearer, credentials);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match credentials {
                Some(c) => Ok(c.basic_header()),
                None => Err(self
                    .error(format!(
                        "{url}: the registry requires credentials (basic authentication); {}",
                        self.credentials_hint()
                    ))
                    .into()),
            };
        }
        let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        Err(self
            .error(format!(
                "{url}: the registry answered 401 Unauthorized with no usable challenge (schemes: {}); berth supports Bearer and Basic",
                if schemes.is_empty() { "none".to_string() } else { schemes.join(", ") }
            ))
            .into())
    }

    /// Gets a bearer token from the challenge's realm.
    fn token(
        &self,
        url: &str,
        challenge: &Challenge,
        credentials: Option<&Credentials>,
    ) -> Result<String, Failure> {
        let Some(realm) = challenge.params.get("realm").filter(|r| !r.is_empty()) else {
            return Err(self.error(format!("{url}: the registry's Bearer challenge names no realm")).into());
        };
        let default_scope = format!("repository:{}:pull", self.image.repository);
        let scope = challenge.params.get("scope").unwrap_or(&default_scope);
        let mut query = Vec::new();
        if let Some(service) = challenge.params.get("service") {
            query.push(format!("service={}", percent_encode(service)));
        }
        query.push(format!("scope={}", percent_encode(scope)));
        let separator = if realm.contains('?') { '&' } else { '?' };
        let token_url = format!("{realm}{separator}{}", query.join("&"));
        let mut request = self.agent.get(&token_url);
        if let Some(c) = credentials {
            request = request.header("Authorization", c.basic_header());
        }
        let mut response = request.call().map_err(|e| Failure {
            error: self.error(format!("cannot reach the token service {token_url}: {e}")),
            retry: true,
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.rejected(&token_url, "the token service", response).into());
        }
        if !status.is_success() {
            let detail = error_detail(response);
            return Err(Failure {
                error: self.error(format!("the token service {token_url} answered {status}{detail}")),
                retry: status.is_server_error(),
            });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_SIZE)
            .read_to_vec()
            .map_err(|e| self.transport(&token_url, e))?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let reply: TokenReply = self.parse_json(&token_url, &body)?;
        match reply.token.or(reply.access_token).filter(|t| !t.is_empty()) {
            Some(token) => Ok(format!("Bearer {token}")),
            None => Err(self
                .error(format!("the token service {token_url} answered without `token` or `access_token`"))
                .into()),
        }
    }

    /// Fetches a manifest or index by tag or digest (verified against `desc` when given, and
    /// against a digest reference) and stores it in the cache.
    fn manifest(&self, reference: &str, desc: Option<&Descriptor>) -> Result<Document, ImageError> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.image.repository);
        let mut response = self.get(&url, Some(MANIFEST_ACCEPT)).map_err(|f| f.error)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let detail = error_detail(response);
            return Err(self.error(format!(
                "{url}: manifest not found (404{detail}); check the repository name and the tag or digest"
            )));
        }
        if !status.is_success() {
            let detail = error_detail(response);
            return Err(self.error(format!("{url}: the registry answered {status}{detail}")));
        }
        let content_type = header(&response, "content-type");
        let header_digest = header(&response, "docker-content-digest");
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_SIZE)
            .read_to_vec()
            .map_err(|e| self.transport(&url, e).error)?;
        let digest = sha256_bytes(&bytes);
        let expected =
            desc.map(|d| d.digest.as_str()).or_else(|| reference.starts_with("sha256:").then_some(reference));
        let bad = |source: BlobError| ImageError::BadBlob {
            reference: self.written.to_string(),
            what: "manifest".to_string(),
            digest: expected.unwrap_or(&digest).to_string(),
            location: url.clone(),
            source: Box::new(source),
        };
        if let Some(expected) = expected {
            validate_digest(expected).map_err(bad)?;
            if let Some(d) = desc {
                if d.size != bytes.len() as u64 {
                    return Err(bad(BlobError::SizeMismatch {
                        expected: d.size,
                        actual: bytes.len() as u64,
                    }));
                }
            }
            if digest != expected {
                return Err(bad(BlobError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: digest.clone(),
                }));
            }
        } else if let Some(announced) = header_digest.filter(|d| d.starts_with("sha256:")) {
            if announced != digest {
                return Err(ImageError::BadBlob {
                    reference: self.written.to_string(),
                    what: "manifest".to_string(),
                    digest: announced.clone(),
                    location: url.clone(),
                    source: Box::new(BlobError::DigestMismatch { expected: announced, actual: digest }),
                });
            }
        }
        self.cache.insert_verified(&digest, Some(bytes.len() as u64), &bytes[..]).map_err(|source| {
            ImageError::Cache { reference: self.written.to_string(), source: Box::new(source) }
        })?;
        let value: serde_json::Value = self.parse_json(&url, &bytes)?;
        if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            return Err(self.invalid(format!(
                "{url} is a Docker schema 1 manifest, which berth does not read (re-push the image with a current tool)"
            )));
        }
        let media_type = value
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_string()))
            .unwrap_or_default();
        let is_index = match media_type.as_str() {
            MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => true,
            MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => false,
            _ if value.get("manifests").is_some() => true,
            _ if value.get("config").is_some() => false,
            other => {
                return Err(self.invalid(format!(
                    "{url} has media type {other:?}, which is not a container image manifest"
                )))
            }
        };
        Ok(Document { url, digest, bytes, is_index })
    }

    /// A blob in the cache: already there, or downloaded and verified (retrying a download
    /// that breaks off).
    fn blob(&self, desc: &Descriptor, what: &str, bar: &ProgressBar) -> Result<PathBuf, ImageError> {
        let url = self.blob_url(&desc.digest);
        validate_digest(&desc.digest).map_err(|e| ImageError::BadBlob {
            reference: self.written.to_string(),
            what: what.to_string(),
            digest: desc.digest.clone(),
            location: url.clone(),
            source: Box::new(e),
        })?;
        if let Some(path) = self.cache.get(&desc.digest) {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == desc.size) {
                bar.set_position(desc.size);
                return Ok(path);
            }
        }
        let mut attempt = 1;
        loop {
            match self.download(desc, what, &url, bar) {
                Ok(path) => return Ok(path),
                Err(Failure { retry: true, .. }) if attempt < BLOB_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(300 * u64::from(attempt)));
                    attempt += 1;
                }
                Err(Failure { error, retry }) => {
                    return Err(if retry {
                        self.error(format!("{what} {}: {error} (tried {attempt} times)", desc.digest))
                    } else {
                        error
                    })
                }
            }
        }
    }

    /// One download of a blob into the cache.
    fn download(
        &self,
        desc: &Descriptor,
        what: &str,
        url: &str,
        bar: &ProgressBar,
    ) -> Result<PathBuf, Failure> {
        bar.set_position(0);
        let response = self.get(url, None)?;
        let status = response.status();
        if !status.is_success() {
            let detail = error_detail(response);
            return Err(Failure {
                error: self.error(format!("{what} {}: {url} answered {status}{detail}", desc.digest)),
                retry: status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS,
            });
        }
        let mut reader = TrackedReader { inner: response.into_body().into_reader(), bar, error: None };
        let result = self.cache.insert_verified(&desc.digest, Some(desc.size), &mut reader);
        if let Some(e) = reader.error.take() {
            return Err(Failure {
                error: self.error(format!("{what} {}: the download from {url} broke off: {e}", desc.digest)),
                retry: true,
            });
        }
        result.map(|(path, _)| path).map_err(|source| {
            let error = match source {
                BlobError::Io { .. } => {
                    ImageError::Cache { reference: self.written.to_string(), source: Box::new(source) }
                }
                source => ImageError::BadBlob {
                    reference: self.written.to_string(),
                    what: what.to_string(),
                    digest: desc.digest.clone(),
                    location: url.to_string(),
                    source: Box::new(source),
                },
            };
            Failure { error, retry: false }
        })
    }

    /// All layers, a few at a time; paths in layer order.
    fn layers(&self, layers: &[Descriptor]) -> Result<Vec<PathBuf>, ImageError> {
        let multi = if self.progress {
            MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        let style = ProgressStyle::with_template("  {msg:20} [{bar:30}] {bytes:>10}/{total_bytes:10}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars: Vec<ProgressBar> = layers
            .iter()
            .map(|d| {
                let bar = multi.add(ProgressBar::new(d.size));
                bar.set_style(style.clone());
                let hex = d.digest.strip_prefix("sha256:").unwrap_or(&d.digest);
                bar.set_message(format!("layer {}", &hex[..hex.len().min(12)]));
                bar
            })
            .collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Vec<Mutex<Option<Result<PathBuf, ImageError>>>> =
            layers.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..DOWNLOAD_THREADS.min(layers.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= layers.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let result = self.blob(&layers[i], &format!("layer {}", i + 1), &bars[i]);
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    bars[i].finish();
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                });
            }
        });
        let _ = multi.clear();
        let mut paths = Vec::with_capacity(layers.len());
        let mut first_error = None;
        for slot in results {
            match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(path)) => paths.push(path),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(paths),
        }
    }
}

/// Reads the body, advancing a progress bar, and remembers a read error (as opposed to an
/// error writing the cache).
struct TrackedReader<'b, R> {
    inner: R,
    bar: &'b ProgressBar,
    error: Option<io::Error>,
}

impl<R: Read> Read for TrackedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.bar.inc(n as u64);
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

/// A response header as text.
fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `: MESSAGE` from a registry's JSON error body (`{"errors":[{"code":…,"message":…}]}`),
/// or nothing.
fn error_detail(mut response: Response<Body>) -> String {
    let Ok(body) = response.body_mut().with_config().limit(64 << 10).read_to_vec() else {
        return String::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else { return String::new() };
    let messages: Vec<String> = value
        .get("errors")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or_default();
            let message = e.get("message").and_then(|c| c.as_str()).unwrap_or_default();
            format!("{code} {message}").trim().to_string()
        })
        .filter(|m| !m.is_empty())
        .collect();
    if messages.is_empty() {
        String::new()
    } else {
        format!(": {}", messages.join("; "))
    }
}

/// Percent-encodes a query parameter value (everything but RFC 3986's unreserved characters).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_matching() {
        let opts = PullOptions {
            insecure_registries: vec!["127.0.0.1:5000".into(), "Plain.Example".into()],
            progress: false,
        };
        assert!(opts.is_insecure("127.0.0.1:5000"));
        assert!(!opts.is_insecure("127.0.0.1:5001"));
        assert!(opts.is_insecure("plain.example"));
        assert!(opts.is_insecure("plain.example:8080"));
        assert!(!opts.is_insecure("other.example"));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(percent_encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(percent_encode("Az09-._~ "), "Az09-._~%20");
    }
}
