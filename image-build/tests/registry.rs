//! Pulling from a registry: a real registry server (Debian's `docker-registry`) on 127.0.0.1,
//! filled with skopeo, with no authentication, token authentication (a token service run by
//! the test, JWTs signed with a key made by the `openssl` CLI) and basic authentication
//! (`htpasswd`); a corrupt blob; a download cut off by a proxy; the lock file.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use berth_image_build::blobs::sha256_file;

use common::registry::Registry;

/// What these tests do with a registry besides running it.
trait Fill {
    fn push(&self, layout: &Path, name: &str, tag: &str, creds: Option<&str>) -> String;
    fn blob_data(&self, digest: &str) -> PathBuf;
}

impl Fill for Registry {
    /// Pushes the OCI layout `layout:latest` as `NAME:TAG`; returns the manifest digest.
    fn push(&self, layout: &Path, name: &str, tag: &str, creds: Option<&str>) -> String {
        let digest_file = self.dir.join("pushed-digest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false", "--digestfile"]).arg(&digest_file);
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        let out = cmd
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.host()))
            .output()
            .expect("run skopeo (apt-get install skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}\nregistry log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        std::fs::read_to_string(digest_file).unwrap().trim().to_string()
    }

    /// The `data` file of a blob in the registry's storage.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

/// A test directory: the busybox image, a blob cache of its own (sharing the kernels of the
/// default cache, so the kernel is fetched at most once), a clean environment for berth.
struct Fixture {
    dir: tempfile::TempDir,
    cache: PathBuf,
    /// Environment variables for every berth run (credentials, insecure registries).
    env: Vec<(String, String)>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        common::busybox_image(dir.path());
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let kernels = berth_image_build::kernel::default_cache_dir().join("kernels");
        std::fs::create_dir_all(&kernels).unwrap();
        std::os::unix::fs::symlink(&kernels, cache.join("kernels")).unwrap();
        // No credentials of the machine's user.
        let docker_config = dir.path().join("no-docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        let env = vec![("DOCKER_CONFIG".to_string(), docker_config.display().to_string())];
        Fixture { dir, cache, env }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn busybox(&self) -> PathBuf {
        self.path().join("images/busybox")
    }

    /// The manifest digest of the busybox layout's `latest` image and its layer digest.
    fn busybox_layer(&self) -> String {
        let layout = self.busybox();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let manifest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(layout.join("blobs/sha256").join(&manifest["sha256:".len()..])).unwrap(),
        )
        .unwrap();
        manifest["layers"][0]["digest"].as_str().unwrap().to_string()
    }

    /// Writes `NAME.toml` with one onboot container using `image` and runs `berth build`
    /// with `args`; the config's directory is the fixture's (so is `berth.lock`).
    fn build(&self, name: &str, image: &str, args: &[&str]) -> Output {
        let config = format!(
            "[kernel]\ncmdline = \"console=ttyS0 quiet\"\n\n[[onboot]]\nname = \"hello\"\nimage = \"{image}\"\n\
             command = [\"echo\", \"hello\"]\n"
        );
        let file = self.path().join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        let out_dir = self.path().join(format!("{name}.out"));
        let mut cmd = Command::new(common::berth());
        cmd.env("BERTH_INIT", common::init_binary())
            .env_remove("BERTH_REGISTRY_USERNAME")
            .env_remove("BERTH_REGISTRY_PASSWORD")
            .env_remove("BERTH_INSECURE_REGISTRIES")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .args(["build", file.to_str().unwrap(), "-o", out_dir.to_str().unwrap(), "--cache-dir"])
            .arg(&self.cache)
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("run berth")
    }

    /// [`Fixture::build`] that must succeed; returns stderr.
    fn build_ok(&self, name: &str, image: &str, args: &[&str]) -> String {
        let out = self.build(name, image, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "berth build failed: {stderr}");
        assert!(self.path().join(format!("{name}.out/initrd.img")).is_file());
        stderr
    }

    /// [`Fixture::build`] that must fail; returns stderr.
    fn build_err(&self, name: &str, image: &str, args: &[&str]) -> String {
        let out = self.build(name, image, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "berth build succeeded: {stderr}");
        assert!(!self.path().join(format!("{name}.out")).exists(), "output written despite the error");
        stderr
    }

    fn blob_dir(&self) -> PathBuf {
        self.cache.join("blobs/sha256")
    }

    /// Names in the cache's blob directory that are not finished blobs.
    fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.blob_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() != 64)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.path().join("berth.lock")).unwrap_or_default()
    }
}

/// The digest berth reports for `image` (`berth: image IMAGE is DIGEST`).
fn reported_digest(stderr: &str, image: &str) -> String {
    let prefix = format!("berth: image {image} is ");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no digest reported for {image}: {stderr}"))
        .trim()
        .to_string()
}

#[test]
fn pull_by_tag_and_digest_insecure_only_when_marked() {
    let fx = Fixture::new();
    let registry = Registry::start(fx.path(), None);
    let pushed = registry.push(&fx.busybox(), "team/busybox", "1.0", None);
    let host = registry.host();

    // Plain HTTP is refused unless the registry is marked insecure.
    let image = format!("{host}/team/busybox:1.0");
    let err = fx.build_err("refused", &image, &[]);
    assert!(err.contains("HTTPS") && err.contains(&format!("--insecure-registry {host}")), "{err}");
    assert!(err.contains("refused.toml:6:"), "the error is located in the config: {err}");

    // By tag: the plan names the pushed digest, and the cache holds every blob.
    let stderr = fx.build_ok("tag", &image, &["--insecure-registry", &host]);
    assert_eq!(reported_digest(&stderr, &image), pushed);
    let layer = fx.busybox_layer();
    assert_eq!(sha256_file(&fx.blob_dir().join(&layer["sha256:".len()..])).unwrap(), layer);
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());
    assert!(fx.lock().contains(&format!("\"{image}\" = \"{pushed}\"")), "{}", fx.lock());

    // By digest, marked insecure through the environment, from an empty cache.
    std::fs::remove_dir_all(fx.blob_dir()).unwrap();
    let by_digest = format!("{host}/team/busybox@{pushed}");
    let mut fx = fx;
    fx.env.push(("BERTH_INSECURE_REGISTRIES".into(), format!("other.example:5000, {host}")));
    let stderr = fx.build_ok("digest", &by_digest, &[]);
    assert_eq!(reported_digest(&stderr, &by_digest), pushed);

    // A digest the registry does not have.
    let missing = format!("{host}/team/busybox@sha256:{}", "0".repeat(64));
    let err = fx.build_err("missing", &missing, &[]);
    assert!(err.contains("404") && err.contains("manifest"), "{err}");
}

/// A token service for the registry's `auth: token`: answers GETs with an RS256 JWT signed by
/// `key.pem` (through `openssl dgst`), `x5c` holding `cert.pem`, granting the requested scope
/// to the user `tok` with password `secret`.
struct TokenService {
    port: u16,
    /// The query strings of the requests received.
    requests: Arc<Mutex<Vec<String>>>,
}

const TOKEN_USER: &str = "tok";
const TOKEN_PASSWORD: &str = "secret";
const TOKEN_SERVICE: &str = "berth-test-registry";
const TOKEN_ISSUER: &str = "berth-test-issuer";

impl TokenService {
    fn start(dir: &Path) -> TokenService {
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=berth-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(der.status.success());
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (query, authorization) = read_request(&stream);
                seen.lock().unwrap().push(query.clone());
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"))
                );
                let reply = if authorization.as_deref() != Some(expected.as_str()) {
                    http_reply("401 Unauthorized", "{\"details\":\"bad credentials\"}")
                } else {
                    let jwt = sign_jwt(&dir.join("key.pem"), &x5c, &query);
                    // `access_token` only: the older spelling of the reply.
                    http_reply("200 OK", &format!("{{\"access_token\":\"{jwt}\",\"expires_in\":3600}}"))
                };
                let mut stream = stream;
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        TokenService { port, requests }
    }

    /// The registry's `auth:` section for this service.
    fn registry_auth(&self, dir: &Path) -> String {
        format!(
            "  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    \
             rootcertbundle: {}\n",
            self.port,
            dir.join("cert.pem").display()
        )
    }
}

/// Reads an HTTP request head; returns the query string and the `Authorization` header.
fn read_request(stream: &TcpStream) -> (String, Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap_or_default();
    let target = line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let query = target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    (query, authorization)
}

fn http_reply(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Decodes `%XX` in a query parameter value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JWT granting every `scope` parameter of `query` (`repository:NAME:ACTIONS`).
fn sign_jwt(key: &Path, x5c: &str, query: &str) -> String {
    let b64url = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": TOKEN_USER, "aud": TOKEN_SERVICE,
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60,
        "jti": format!("berth-{now}-{}", std::process::id()),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{signing_input}.{}", b64url(&out.stdout))
}

#[test]
fn pull_through_a_token_challenge() {
    let fx = Fixture::new();
    let tokens = TokenService::start(fx.path());
    let registry = Registry::start(fx.path(), Some(&tokens.registry_auth(fx.path())));
    let creds = format!("{TOKEN_USER}:{TOKEN_PASSWORD}");
    let pushed = registry.push(&fx.busybox(), "secure/busybox", "v1", Some(&creds));
    let host = registry.host();
    let image = format!("{host}/secure/busybox:v1");

    // Without credentials the token service refuses: the error says how to give them.
    let err = fx.build_err("anonymous", &image, &["--insecure-registry", &host]);
    assert!(err.contains("401") && err.contains("BERTH_REGISTRY_USERNAME"), "{err}");

    let mut fx = fx;
    fx.env.push(("BERTH_REGISTRY_USERNAME".into(), TOKEN_USER.into()));
    fx.env.push(("BERTH_REGISTRY_PASSWORD".into(), TOKEN_PASSWORD.into()));
    let before = tokens.requests.lock().unwrap().len();
    let stderr = fx.build_ok("token", &image, &["--insecure-registry", &host]);
    assert_eq!(reported_digest(&stderr, &image), pushed);
    let requests = tokens.requests.lock().unwrap()[before..].to_vec();
    assert!(
        requests.iter().any(|q| q.contains(&format!("service={TOKEN_SERVICE}"))
            && percent_decode(q).contains("scope=repository:secure/busybox:pull")),
        "berth asked the token service for {requests:?}"
    );
}

#[test]
fn pull_with_basic_auth() {
    let fx = Fixture::new();
    let out = Command::new("htpasswd").args(["-Bbn", "user", "pass"]).output().expect("run htpasswd");
    assert!(out.status.success());
    let htpasswd = fx.path().join("htpasswd");
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let auth = format!("  htpasswd:\n    realm: berth-test\n    path: {}\n", htpasswd.display());
    let registry = Registry::start(fx.path(), Some(&auth));
    let pushed = registry.push(&fx.busybox(), "private/busybox", "v1", Some("user:pass"));
    let host = registry.host();
    let image = format!("{host}/private/busybox:v1");
    let insecure = ["--insecure-registry", host.as_str()];

    // Credentials from $DOCKER_CONFIG/config.json.
    let docker_config = fx.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let write_config = |creds: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(creds);
        std::fs::write(
            docker_config.join("config.json"),
            format!(
                r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}, "other.example": {{"auth": "eDp5"}}}}}}"#
            ),
        )
        .unwrap();
    };
    write_config("user:pass");
    let mut fx = fx;
    fx.env = vec![("DOCKER_CONFIG".into(), docker_config.display().to_string())];
    let stderr = fx.build_ok("config-json", &image, &insecure);
    assert_eq!(reported_digest(&stderr, &image), pushed);

    // Wrong credentials in config.json: a clear 401.
    write_config("user:wrong");
    let err = fx.build_err("wrong-config", &image, &insecure);
    assert!(
        err.contains("401") && err.contains("rejected the credentials") && err.contains("\"user\""),
        "{err}"
    );
    assert!(err.contains(&docker_config.join("config.json").display().to_string()), "{err}");

    // Credentials from the environment (they win over config.json), from an empty cache.
    std::fs::remove_dir_all(fx.blob_dir()).unwrap();
    fx.env.push(("BERTH_REGISTRY_USERNAME".into(), "user".into()));
    fx.env.push(("BERTH_REGISTRY_PASSWORD".into(), "pass".into()));
    let stderr = fx.build_ok("env", &image, &insecure);
    assert_eq!(reported_digest(&stderr, &image), pushed);

    // Wrong credentials in the environment; none at all.
    fx.env.pop();
    fx.env.push(("BERTH_REGISTRY_PASSWORD".into(), "nope".into()));
    let err = fx.build_err("wrong-env", &image, &insecure);
    assert!(err.contains("401") && err.contains("$BERTH_REGISTRY_USERNAME"), "{err}");
    fx.env = vec![("DOCKER_CONFIG".into(), fx.path().join("no-docker-config").display().to_string())];
    let err = fx.build_err("none", &image, &insecure);
    assert!(err.contains("requires credentials") && err.contains("docker login"), "{err}");
}

#[test]
fn corrupt_blob_is_rejected_and_not_cached() {
    let fx = Fixture::new();
    let registry = Registry::start(fx.path(), None);
    registry.push(&fx.busybox(), "corrupt/busybox", "v1", None);
    let layer = fx.busybox_layer();
    let data = registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let host = registry.host();
    let err = fx.build_err("corrupt", &format!("{host}/corrupt/busybox:v1"), &["--insecure-registry", &host]);
    assert!(err.contains(&format!("expected {layer}")) && err.contains("content has digest"), "{err}");
    assert!(!fx.blob_dir().join(&layer["sha256:".len()..]).exists(), "the corrupt blob was cached");
    assert!(fx.temp_files().is_empty(), "temporary files left: {:?}", fx.temp_files());
}

/// A proxy in front of the registry that cuts the first `cuts` downloads of `digest` halfway.
struct CuttingProxy {
    port: u16,
    cut: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, digest: String, cuts: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (digest, counter) = (digest.clone(), counter.clone());
                std::thread::spawn(move || proxy_one(client, upstream, &digest, &counter, cuts));
            }
        });
        CuttingProxy { port, cut }
    }
}

/// Forwards one request (as `Connection: close`) and its response, cut halfway if it is a
/// download of `digest` and fewer than `cuts` were cut.
fn proxy_one(mut client: TcpStream, upstream: u16, digest: &str, counter: &AtomicUsize, cuts: usize) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
    }
    let blob_get = head.starts_with("GET ") && head.lines().next().unwrap_or_default().contains(digest);
    head.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
    server.write_all(head.as_bytes()).unwrap();
    let mut response = Vec::new();
    server.read_to_end(&mut response).unwrap();
    if blob_get && counter.fetch_add(1, Ordering::SeqCst) < cuts {
        let body_start = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let half = body_start + (response.len() - body_start) / 2;
        let _ = client.write_all(&response[..half]);
    } else {
        let _ = client.write_all(&response);
    }
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
}

#[test]
fn interrupted_download_restarts_cleanly() {
    let fx = Fixture::new();
    let registry = Registry::start(fx.path(), None);
    let pushed = registry.push(&fx.busybox(), "flaky/busybox", "v1", None);
    let layer = fx.busybox_layer();
    // Every try of the first build is cut (berth tries a broken download 3 times).
    let proxy = CuttingProxy::start(registry.port, layer.clone(), 3);
    let host = format!("127.0.0.1:{}", proxy.port);
    let image = format!("{host}/flaky/busybox:v1");

    let err = fx.build_err("cut", &image, &["--insecure-registry", &host]);
    assert!(err.contains("broke off") && err.contains(&layer) && err.contains("tried 3 times"), "{err}");
    assert_eq!(proxy.cut.load(Ordering::SeqCst), 3);
    assert!(!fx.blob_dir().join(&layer["sha256:".len()..]).exists(), "a partial blob was cached");
    assert!(fx.temp_files().is_empty(), "temporary files left: {:?}", fx.temp_files());

    // The next build downloads the layer again, whole.
    let stderr = fx.build_ok("whole", &image, &["--insecure-registry", &host]);
    assert_eq!(reported_digest(&stderr, &image), pushed);
    assert_eq!(proxy.cut.load(Ordering::SeqCst), 4);
    assert_eq!(sha256_file(&fx.blob_dir().join(&layer["sha256:".len()..])).unwrap(), layer);
    assert!(fx.temp_files().is_empty(), "temporary files left: {:?}", fx.temp_files());
}

/// Imports a small image (busybox and a marker file) into the layout `layout` as `tag`.
fn other_image(dir: &Path, layout: &Path, tag: &str) {
    let rootfs = dir.join(format!("other-root-{tag}"));
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/echo")).unwrap();
    std::fs::write(rootfs.join("marker"), "second image\n").unwrap();
    let out = common::run_berth(&[
        "image",
        "import",
        rootfs.to_str().unwrap(),
        "--tag",
        tag,
        "-o",
        layout.to_str().unwrap(),
        "--env",
        "PATH=/bin",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn index_leads_to_the_linux_amd64_image() {
    let fx = Fixture::new();
    let layout = fx.busybox();
    // The layout gets a second image, and an index naming it arm64 and busybox amd64.
    other_image(fx.path(), &layout, "arm");
    let index_path = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = |tag: &str| {
        let found = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag));
        found.unwrap_or_else(|| panic!("no {tag} in {index}")).clone()
    };
    let (amd64, arm64) = (entry("latest"), entry("arm"));
    let platform = |mut d: serde_json::Value, arch: &str| {
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        d
    };
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [platform(arm64, "arm64"), platform(amd64.clone(), "amd64")],
    })
    .to_string();
    let nested_digest = berth_image_build::blobs::sha256_bytes(nested.as_bytes());
    std::fs::write(layout.join("blobs/sha256").join(&nested_digest["sha256:".len()..]), &nested).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nested_digest,
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(&index_path, top.to_string()).unwrap();

    let registry = Registry::start(fx.path(), None);
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/multi/app:v1", registry.host()))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy --all: {}", String::from_utf8_lossy(&out.stderr));

    let host = registry.host();
    let image = format!("{host}/multi/app:v1");
    let stderr = fx.build_ok("multi", &image, &["--insecure-registry", &host]);
    let amd64_digest = amd64["digest"].as_str().unwrap();
    assert_eq!(reported_digest(&stderr, &image), amd64_digest);
    assert!(fx.lock().contains(amd64_digest), "{}", fx.lock());
    // The index itself was verified and cached too.
    assert!(fx.blob_dir().join(&nested_digest["sha256:".len()..]).is_file());
}

#[test]
fn lock_file_pins_tags_until_update() {
    let fx = Fixture::new();
    let registry = Registry::start(fx.path(), None);
    let host = registry.host();
    let first = registry.push(&fx.busybox(), "moving/app", "stable", None);
    let image = format!("{host}/moving/app:stable");
    let insecure = ["--insecure-registry", host.as_str()];

    let stderr = fx.build_ok("app", &image, &insecure);
    assert_eq!(reported_digest(&stderr, &image), first);
    let lock = fx.lock();
    assert!(lock.contains(&format!("\"{image}\" = \"{first}\"")), "{lock}");

    // Another image under the same tag.
    let other = fx.path().join("images/other");
    other_image(fx.path(), &other, "latest");
    let second = registry.push(&other, "moving/app", "stable", None);
    assert_ne!(first, second);

    // Without --update the lock wins; the lock file is left as it was.
    let stderr = fx.build_ok("app", &image, &insecure);
    assert_eq!(reported_digest(&stderr, &image), first);
    assert_eq!(fx.lock(), lock);

    // With --update the tag is resolved again and the lock rewritten.
    let stderr = fx.build_ok("app", &image, &["--insecure-registry", &host, "--update"]);
    assert_eq!(reported_digest(&stderr, &image), second);
    let updated = fx.lock();
    assert!(
        updated.contains(&format!("\"{image}\" = \"{second}\"")) && !updated.contains(&first),
        "{updated}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(fx.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".berth.lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // And later builds keep the new digest.
    let stderr = fx.build_ok("app", &image, &insecure);
    assert_eq!(reported_digest(&stderr, &image), second);
}

#[test]
fn concurrent_builds_share_the_cache_safely() {
    let fx = Fixture::new();
    let registry = Registry::start(fx.path(), None);
    let pushed = registry.push(&fx.busybox(), "team/busybox", "1.0", None);
    let host = registry.host();
    let image = format!("{host}/team/busybox:1.0");
    // Four builds at once into one empty cache: each downloads and commits the same blobs.
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (fx, image, host) = (&fx, &image, &host);
                s.spawn(move || fx.build(&format!("c{i}"), image, &["--insecure-registry", host]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "build {i}: {stderr}");
        assert_eq!(reported_digest(&stderr, &image), pushed);
    }
    let layer = fx.busybox_layer();
    assert_eq!(sha256_file(&fx.blob_dir().join(&layer["sha256:".len()..])).unwrap(), layer);
    assert!(fx.temp_files().is_empty(), "{:?}", fx.temp_files());
    // The four initramfs files are identical: same inputs, same bytes.
    let first = std::fs::read(fx.path().join("c0.out/initrd.img")).unwrap();
    for i in 1..4 {
        assert!(
            std::fs::read(fx.path().join(format!("c{i}.out/initrd.img"))).unwrap() == first,
            "build {i} differs"
        );
    }
}
