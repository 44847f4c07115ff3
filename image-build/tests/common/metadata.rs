//! Small servers that speak each cloud's metadata protocol as documented (paths, required
//! request headers, status codes, the answers' headers), for boot tests: the guest reaches them
//! at 169.254.169.254 (and Azure's wireserver at 168.63.129.16) through QEMU's `guestfwd`,
//! which runs `socat` to this process for every connection. Every request is recorded
//! (`METHOD PATH`), with the problems a real service would refuse it for.
//!
//! Protocol facts (see docs/metadata.md for sources): EC2 IMDSv2 — `PUT /latest/api/token`
//! needs `X-aws-ec2-metadata-token-ttl-seconds` in 1..=21600 (400 otherwise) and echoes it;
//! every `GET` needs `X-aws-ec2-metadata-token` (401 otherwise). GCE — `Metadata-Flavor:
//! Google` on every request (403 otherwise) and on every answer. Azure IMDS — `Metadata: true`
//! and `api-version` (400 otherwise); no `X-Forwarded-For` (403); the wireserver wants
//! `x-ms-version` and gets the `Health` document, read as XML.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

/// The providers, as berth names them.
pub const PROVIDERS: [&str; 6] = ["ec2", "gce", "azure", "openstack", "digitalocean", "hetzner"];

/// The EC2 session token the server hands out.
const TOKEN: &str = "AQAEAFakeTokenOfTheTestServer==";
/// The SSH key every provider serves.
pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKeyBerthTestKeyBerthTestKey0 berth@test";
/// The goal state's ids, which the health report must repeat.
const INCARNATION: &str = "3";
const CONTAINER_ID: &str = "c6d5fd66-5bd8-4ef7-9bf2-4ce6d1b1e1f8";
const ROLE_INSTANCE: &str = "b3f5a8e1-1e1c-4f2a-9f6e-7d8a7c6b5a4f.berth-test";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `METHOD PATH?QUERY`.
    pub line: String,
    /// What a real service would have refused in it (empty: a good request).
    pub problem: String,
    /// A health report's `State` (`Ready`, `NotReady`).
    pub health: Option<String>,
}

/// A request.
struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    fn query(&self, key: &str) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }
}

/// An answer.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn answer(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
    Answer { status, headers: vec![("Content-Type", content_type.to_string())], body: body.into() }
}

fn text(body: impl Into<Vec<u8>>) -> Answer {
    answer(200, "text/plain", body)
}

fn not_found() -> Answer {
    answer(404, "text/html", "<?xml version=\"1.0\"?><html><body><h1>404 - Not Found</h1></body></html>")
}

/// A provider's server: what it serves, and what it saw.
pub struct MetadataServer {
    /// The provider it speaks for.
    pub provider: &'static str,
    /// Its port for 169.254.169.254, and (Azure) for the wireserver.
    ports: (u16, Option<u16>),
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// What the server serves.
#[derive(Clone)]
struct Served {
    provider: &'static str,
    hostname: String,
    user_data: String,
}

impl MetadataServer {
    /// Starts a server for `provider` whose hostname is `NAME-host` (with the provider's
    /// domain) and whose user-data is `user_data`.
    pub fn start(provider: &'static str, user_data: &str) -> MetadataServer {
        let served =
            Served { provider, hostname: format!("{provider}-host"), user_data: user_data.to_string() };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let main = listen(served.clone(), seen.clone(), false);
        let wire = (provider == "azure").then(|| listen(served, seen.clone(), true));
        MetadataServer { provider, ports: (main, wire), seen }
    }

    /// The port answering for 169.254.169.254, and the wireserver's (Azure).
    pub fn ports(&self) -> (u16, Option<u16>) {
        self.ports
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// QEMU arguments: a virtio NIC on a user network holding both link-local services (QEMU
    /// forwards only addresses inside its network: 168.0.0.0/7 holds 168.63.129.16 and
    /// 169.254.169.254), and the SMBIOS strings that name the provider.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut netdev = format!(
            "user,id=net0,net=168.0.0.0/7,host=168.0.0.2,dns=168.0.0.3,dhcpstart=168.0.0.15,{}",
            forward("169.254.169.254", self.ports.0)
        );
        if let Some(wire) = self.ports.1 {
            netdev.push(',');
            netdev.push_str(&forward("168.63.129.16", wire));
        }
        let mut args = vec!["-netdev".into(), netdev, "-device".into(), "virtio-net-pci,netdev=net0".into()];
        for s in smbios(self.provider) {
            args.extend(["-smbios".to_string(), s.to_string()]);
        }
        args
    }
}

/// A `guestfwd` to 127.0.0.1:`port` through socat (one per connection).
fn forward(address: &str, port: u16) -> String {
    format!("guestfwd=tcp:{address}:80-cmd:socat -lf /dev/null - TCP:127.0.0.1:{port}")
}

/// QEMU arguments for a provider whose service accepts connections and never answers.
pub fn silent_qemu_args(provider: &str) -> Vec<String> {
    let netdev = "user,id=net0,net=168.0.0.0/7,host=168.0.0.2,dns=168.0.0.3,dhcpstart=168.0.0.15,guestfwd=tcp:169.254.169.254:80-cmd:sleep 60".to_string();
    let mut args = vec!["-netdev".into(), netdev, "-device".into(), "virtio-net-pci,netdev=net0".into()];
    for s in smbios(provider) {
        args.extend(["-smbios".to_string(), s.to_string()]);
    }
    args
}

/// The SMBIOS strings each cloud's machines carry (docs/metadata.md).
pub fn smbios(provider: &str) -> Vec<&'static str> {
    match provider {
        "ec2" => {
            vec!["type=1,manufacturer=Amazon EC2,product=m5.large,uuid=ec2e1916-9099-7caf-fd21-012345abcdef"]
        }
        "gce" => vec![
            "type=1,manufacturer=Google,product=Google Compute Engine,serial=GoogleCloud-0123456789ABCDEF",
        ],
        "azure" => vec![
            "type=1,manufacturer=Microsoft Corporation,product=Virtual Machine",
            "type=3,asset=7783-7084-3265-9085-8269-3286-77",
        ],
        "openstack" => vec!["type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova"],
        "digitalocean" => vec!["type=1,manufacturer=DigitalOcean,product=Droplet,serial=2756294"],
        "hetzner" => vec!["type=1,manufacturer=Hetzner,product=vServer,serial=42"],
        other => panic!("no provider {other}"),
    }
}

fn listen(served: Served, seen: Arc<Mutex<Vec<Seen>>>, wireserver: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (served, seen) = (served.clone(), seen.clone());
            std::thread::spawn(move || serve(stream, &served, &seen, wireserver));
        }
    });
    port
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request { method, target, headers, body })
}

fn serve(stream: TcpStream, served: &Served, seen: &Mutex<Vec<Seen>>, wireserver: bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&stream) else { return };
    let mut problem = String::new();
    let mut health = None;
    let answer = if wireserver {
        wire(&req, &mut problem, &mut health)
    } else {
        match served.provider {
            "ec2" => ec2(&req, served, &mut problem),
            "gce" => gce(&req, served, &mut problem),
            "azure" => azure(&req, served, &mut problem),
            "openstack" => openstack(&req, served),
            "digitalocean" => digitalocean(&req, served),
            "hetzner" => hetzner(&req, served),
            _ => not_found(),
        }
    };
    seen.lock().unwrap().push(Seen { line: format!("{} {}", req.method, req.target), problem, health });
    let reason = match answer.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Other",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = &stream;
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&answer.body);
    let _ = s.flush();
}

/// EC2 IMDSv2.
fn ec2(req: &Request, s: &Served, problem: &mut String) -> Answer {
    if req.path() == "/latest/api/token" {
        if req.method != "PUT" {
            *problem = "the token is asked for with PUT".into();
            return answer(405, "text/plain", "");
        }
        if req.header("x-forwarded-for").is_some() {
            *problem = "X-Forwarded-For on the token request".into();
            return answer(403, "text/plain", "");
        }
        let ttl = req.header("x-aws-ec2-metadata-token-ttl-seconds").and_then(|t| t.parse::<u32>().ok());
        return match ttl {
            Some(t) if (1..=21600).contains(&t) => {
                let mut a = text(TOKEN);
                a.headers.push(("X-aws-ec2-metadata-token-ttl-seconds", t.to_string()));
                a
            }
            _ => {
                *problem = "a token request without a TTL in 1..=21600".into();
                answer(400, "text/plain", "")
            }
        };
    }
    if req.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
        *problem = "a GET without the session token".into();
        return answer(401, "text/plain", "");
    }
    let Some(path) = req.path().strip_prefix("/latest/") else { return not_found() };
    match path {
        "meta-data/instance-id" => text("i-0123456789abcdef0"),
        "meta-data/local-hostname" => text(format!("{}.eu-west-1.compute.internal", s.hostname)),
        "meta-data/public-keys/" => text("0=berth-test"),
        "meta-data/public-keys/0/openssh-key" => text(format!("{KEY}\n")),
        "meta-data/local-ipv4" => text("168.0.0.15"),
        "meta-data/mac" => text("52:54:00:12:34:56"),
        "meta-data/placement/availability-zone" => text("eu-west-1a"),
        "meta-data/placement/region" => text("eu-west-1"),
        "user-data" if !s.user_data.is_empty() => {
            answer(200, "application/octet-stream", s.user_data.clone())
        }
        _ => not_found(),
    }
}

/// GCE: every answer carries `Metadata-Flavor: Google`.
fn gce(req: &Request, s: &Served, problem: &mut String) -> Answer {
    let mut a = if req.header("x-forwarded-for").is_some() {
        *problem = "X-Forwarded-For".into();
        answer(403, "text/html; charset=UTF-8", "Forbidden")
    } else if req.header("metadata-flavor") != Some("Google") {
        *problem = "no Metadata-Flavor: Google".into();
        answer(403, "text/html; charset=UTF-8", "Missing required header: Metadata-Flavor")
    } else {
        let t = |body: String| answer(200, "application/text", body);
        match req.path().strip_prefix("/computeMetadata/v1/").unwrap_or_default() {
            "instance/id" => t("4520031799277581759".into()),
            "instance/hostname" => t(format!("{}.c.berth-test.internal", s.hostname)),
            "instance/zone" => t("projects/123456789/zones/europe-west1-b".into()),
            "instance/network-interfaces/0/ip" => t("168.0.0.15".into()),
            "instance/network-interfaces/0/mac" => t("42:01:0a:80:00:46".into()),
            "instance/attributes/ssh-keys" => t(format!("berth:{KEY}")),
            "instance/attributes/user-data" if !s.user_data.is_empty() => t(s.user_data.clone()),
            _ => answer(404, "text/html; charset=UTF-8", "Not Found"),
        }
    };
    a.headers.push(("Metadata-Flavor", "Google".into()));
    a
}

/// API versions Azure's IMDS answers (a selection of its documented ones).
const AZURE_API_VERSIONS: [&str; 8] = [
    "2017-04-02",
    "2017-08-01",
    "2018-10-01",
    "2019-06-01",
    "2020-09-01",
    "2021-02-01",
    "2021-08-01",
    "2023-07-01",
];

/// Azure IMDS.
fn azure(req: &Request, s: &Served, problem: &mut String) -> Answer {
    if req.header("x-forwarded-for").is_some() {
        *problem = "X-Forwarded-For".into();
        return answer(403, "application/json", "{\"error\":\"Forbidden\"}");
    }
    if req.header("metadata") != Some("true") {
        *problem = "no Metadata: true".into();
        return answer(
            400,
            "application/json",
            "{\"error\":\"Bad request. Required metadata header not specified\"}",
        );
    }
    match req.query("api-version") {
        None => {
            *problem = "no api-version".into();
            return answer(
                400,
                "application/json",
                "{\"error\":\"Bad request. api-version was not specified\"}",
            );
        }
        Some(v) if !AZURE_API_VERSIONS.contains(&v) => {
            *problem = format!("api-version {v} is not one IMDS knows");
            return answer(400, "application/json", "{\"error\":\"Bad request. api-version is invalid\"}");
        }
        Some(_) => {}
    }
    if req.path() != "/metadata/instance" {
        return answer(404, "application/json", "{\"error\":\"Not found\"}");
    }
    let user_data = base64::engine::general_purpose::STANDARD.encode(&s.user_data);
    let doc = serde_json::json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud", "location": "westeurope", "name": "berth-vm", "zone": "",
            "vmId": "13f56399-bd52-4150-9748-7190aae1ff21",
            "osProfile": {"adminUsername": "azureuser", "computerName": s.hostname,
                          "disablePasswordAuthentication": "true"},
            "publicKeys": [{"keyData": KEY, "path": "/home/azureuser/.ssh/authorized_keys"}],
            "userData": user_data,
        },
        "network": {"interface": [{"macAddress": "000D3A047598",
            "ipv4": {"ipAddress": [{"privateIpAddress": "168.0.0.15", "publicIpAddress": ""}],
                     "subnet": [{"address": "168.0.0.0", "prefix": "7"}]},
            "ipv6": {"ipAddress": []}}]}
    });
    answer(200, "application/json; charset=utf-8", doc.to_string())
}

/// Azure's wireserver: the goal state, and the health report read as XML.
fn wire(req: &Request, problem: &mut String, health: &mut Option<String>) -> Answer {
    if req.header("x-ms-version") != Some("2012-11-30") {
        *problem = "no x-ms-version: 2012-11-30".into();
        return answer(400, "text/xml", "");
    }
    if req.header("x-ms-agent-name").is_none_or(str::is_empty) {
        *problem = "no x-ms-agent-name".into();
        return answer(400, "text/xml", "");
    }
    match (req.method.as_str(), req.path(), req.query("comp")) {
        ("GET", "/machine/" | "/machine", Some("goalstate")) => answer(
            200,
            "text/xml; charset=utf-8",
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<GoalState xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                 xsi:noNamespaceSchemaLocation=\"goalstate10.xsd\">\n  <Version>2012-11-30</Version>\n  <Incarnation>{INCARNATION}</Incarnation>\n  \
                 <Machine><ExpectedState>Started</ExpectedState><ExpectHealthReport>FALSE</ExpectHealthReport></Machine>\n  \
                 <Container>\n    <ContainerId>{CONTAINER_ID}</ContainerId>\n    <RoleInstanceList>\n      <RoleInstance>\n        \
                 <InstanceId>{ROLE_INSTANCE}</InstanceId>\n        <State>Started</State>\n      </RoleInstance>\n    </RoleInstanceList>\n  \
                 </Container>\n</GoalState>\n"
            ),
        ),
        ("POST", "/machine/" | "/machine", Some("health")) => {
            if !req.header("content-type").unwrap_or_default().starts_with("text/xml") {
                *problem = "the health report is not text/xml".into();
                return answer(400, "text/xml", "");
            }
            match health_state(&req.body) {
                Ok(state) => {
                    *health = Some(state);
                    answer(200, "text/xml", "")
                }
                Err(e) => {
                    *problem = e;
                    answer(400, "text/xml", "")
                }
            }
        }
        _ => not_found(),
    }
}

/// The `State` of a health report whose ids match the goal state's.
fn health_state(body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the health report is not UTF-8".to_string())?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("the health report is not XML: {e}"))?;
    let find = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    if doc.root_element().tag_name().name() != "Health" {
        return Err("the report is not a <Health> document".into());
    }
    for (name, want) in
        [("GoalStateIncarnation", INCARNATION), ("ContainerId", CONTAINER_ID), ("InstanceId", ROLE_INSTANCE)]
    {
        if find(name) != want {
            return Err(format!(
                "the health report's {name} is {:?}, not the goal state's {want}",
                find(name)
            ));
        }
    }
    Ok(find("State"))
}

/// OpenStack's metadata service.
fn openstack(req: &Request, s: &Served) -> Answer {
    match req.path() {
        "/openstack" | "/openstack/" => text("2012-08-10\n2013-04-04\n2018-08-27\nlatest"),
        "/openstack/latest/meta_data.json" => answer(
            200,
            "application/json",
            serde_json::json!({"uuid": "b3c7f4de-da0b-44ae-a42c-fa3806b61d7f", "availability_zone": "nova",
                "hostname": format!("{}.novalocal", s.hostname), "name": s.hostname, "launch_index": 0,
                "devices": [], "project_id": "8aa32be0972144a99ce5001d0f07905f",
                "public_keys": {"berth-test": format!("{KEY}\n")},
                "keys": [{"name": "berth-test", "type": "ssh", "data": format!("{KEY}\n")}]})
            .to_string(),
        ),
        "/openstack/latest/network_data.json" => answer(
            200,
            "application/json",
            serde_json::json!({"links": [{"id": "tap1", "type": "ovs", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": 1500}],
                "networks": [{"id": "network0", "link": "tap1", "type": "ipv4_dhcp"}], "services": []})
            .to_string(),
        ),
        "/openstack/latest/user_data" if !s.user_data.is_empty() => text(s.user_data.clone()),
        _ => not_found(),
    }
}

/// DigitalOcean.
fn digitalocean(req: &Request, s: &Served) -> Answer {
    match req.path() {
        "/metadata/v1.json" => answer(
            200,
            "application/json",
            serde_json::json!({"droplet_id": 2756294, "hostname": s.hostname, "region": "nyc3",
                "public_keys": [KEY], "user_data": s.user_data, "vendor_data": "",
                "interfaces": {"public": [{"mac": "d2:00:00:00:00:01", "type": "public",
                    "ipv4": {"ip_address": "203.0.113.7", "netmask": "255.255.255.0", "gateway": "203.0.113.1"}}]},
                "dns": {"nameservers": ["67.207.67.2"]}, "features": {"dhcp_enabled": true}})
            .to_string(),
        ),
        "/metadata/v1" => answer(301, "text/html", ""),
        _ => not_found(),
    }
}

/// Hetzner Cloud.
fn hetzner(req: &Request, s: &Served) -> Answer {
    match req.path() {
        "/hetzner/v1/metadata" => text(format!(
            "availability-zone: hel1-dc2\nhostname: {}\ninstance-id: 42\nlocal-ipv4: ''\nnetwork-config:\n  config:\n  - mac_address: 52:54:00:12:34:56\n    name: eth0\n    subnets:\n    - ipv4: true\n      type: dhcp\n    type: physical\n  version: 1\npublic-ipv4: 203.0.113.9\npublic-keys:\n- {KEY}\nregion: eu-central\n",
            s.hostname
        )),
        "/hetzner/v1/metadata/instance-id" => text("42"),
        "/hetzner/v1/userdata" if s.user_data.is_empty() => answer(204, "text/plain", ""),
        "/hetzner/v1/userdata" => text(s.user_data.clone()),
        _ => not_found(),
    }
}
