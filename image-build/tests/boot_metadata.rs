//! Cloud metadata as a configuration source (`[system] metadata = "auto"`): for each provider,
//! the machine is recognised by its SMBIOS strings, asks a server on the host that speaks that
//! provider's protocol (at 169.254.169.254 through QEMU's guestfwd), takes its hostname, keys
//! and user-data (a berth fragment adding a service), and the server saw what a real client
//! sends — the EC2 token first, Azure's ready report last. A provider that never answers
//! leaves the machine on the image's configuration once `metadata_timeout` has passed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_qemu::{default_timeout, Vm};
use common::metadata::{silent_qemu_args, MetadataServer, KEY};

/// The image: its own hostname and one service showing what a container sees of the metadata
/// (through the read-only bind of `/run/berth/metadata`).
fn config(timeout: &str) -> String {
    format!(
        r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "from-image"
metadata = "auto"
metadata_timeout = "{timeout}"

[[service]]
name = "probe"
image = "oci:images/busybox:latest"
binds = ["/run/berth/metadata:/run/metadata:ro"]
command = ["sh", "-c", "echo machine=$(grep 127.0.1.1 /etc/hosts | cut -f2); echo provider=$(cat /run/metadata/provider); echo key=$(cat /run/metadata/authorized_keys); sleep 600"]
"#
    )
}

/// The user-data each provider serves: a service of its own.
fn user_data(provider: &str) -> String {
    format!(
        "[[service]]\nname = \"from-cloud\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"echo\", \"user-data of {provider} ran\"]\n"
    )
}

/// The image, built once for every test of this file.
fn image() -> &'static Path {
    static OUT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &OUT.get_or_init(|| common::build_fresh("metadata", &config("120s"))).1
}

fn line_of(vm: &Vm, prefix: &str) -> String {
    let t = default_timeout();
    let line = vm
        .wait_for_line(|l| l.contains(prefix), t)
        .unwrap_or_else(|e| panic!("{prefix}: {e}\n{}", vm.console_tail(40)));
    line.split_once(prefix).map(|(_, rest)| rest.trim().to_string()).unwrap_or_default()
}

fn boots_with(provider: &'static str) {
    let server = MetadataServer::start(provider, &user_data(provider));
    let args = server.qemu_args();
    let mut vm = common::boot_with(image(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let chosen = vm.wait_for_event("metadata.provider", |_| true, t).unwrap();
    assert_eq!((chosen.get("provider"), chosen.get("by")), (Some(provider), Some("dmi")), "{chosen:?}");
    // The user-data's service ran, the hostname is the provider's, the key is readable.
    line_of(&vm, &format!("from-cloud | user-data of {provider} ran"));
    assert_eq!(line_of(&vm, "probe | machine="), format!("{provider}-host"));
    assert_eq!(line_of(&vm, "probe | provider="), provider);
    assert_eq!(line_of(&vm, "probe | key="), KEY);
    let found = vm.events().into_iter().find(|e| e.name == "metadata.found").expect("metadata.found");
    assert_eq!((found.get("keys"), found.get("user_data")), (Some("1"), Some("yes")), "{found:?}");
    assert!(found.get("from").unwrap_or_default().starts_with("http://169.254.169.254"), "{found:?}");
    // The containers started only once the metadata was in.
    common::assert_in_order(
        &common::event_names(&vm),
        &[
            "metadata.provider",
            "network.ready",
            "metadata.found",
            "config.applied",
            "container.started:probe",
        ],
    );
    if provider == "azure" {
        vm.wait_for_event("metadata.reported", |e| e.get("state") == Some("ready"), t).unwrap();
    }
    let seen = server.seen();
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    for s in &seen {
        assert!(
            s.problem.is_empty(),
            "{provider}: a real service would refuse {}: {}\n{lines:#?}",
            s.line,
            s.problem
        );
    }
    match provider {
        "ec2" => {
            assert_eq!(lines.first(), Some(&"PUT /latest/api/token"), "the token comes first: {lines:#?}")
        }
        "azure" => {
            assert!(lines[0].starts_with("GET /metadata/instance?api-version="), "{lines:#?}");
            assert_eq!(
                lines.last(),
                Some(&"POST /machine?comp=health"),
                "the ready report comes last: {lines:#?}"
            );
            assert_eq!(seen.last().unwrap().health.as_deref(), Some("Ready"));
            assert!(lines.contains(&"GET /machine/?comp=goalstate"), "{lines:#?}");
        }
        _ => assert!(!lines.is_empty()),
    }
    vm.kill();
}

#[test]
fn ec2_imdsv2() {
    boots_with("ec2");
}

#[test]
fn gce() {
    boots_with("gce");
}

#[test]
fn azure_imds_and_ready_report() {
    boots_with("azure");
}

#[test]
fn openstack_metadata_service() {
    boots_with("openstack");
}

#[test]
fn digitalocean() {
    boots_with("digitalocean");
}

#[test]
fn hetzner() {
    boots_with("hetzner");
}

#[test]
fn a_provider_that_never_answers_leaves_the_images_configuration() {
    let (_dir, out) = common::build_fresh("silent", &config("8s"));
    let args = silent_qemu_args("ec2");
    let mut vm = common::boot_with(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let failed = vm
        .wait_for_event("metadata.failed", |_| true, t)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
    assert!(failed.get("error").unwrap_or_default().contains("did not answer within 8 s"), "{failed:?}");
    assert_eq!(line_of(&vm, "probe | machine="), "from-image");
    // From the choice to the failure: the bound, not more (TCG's slowness aside).
    let events = vm.events();
    let at = |name: &str| events.iter().find(|e| e.name == name).map(|e| e.ms).unwrap();
    let waited = at("metadata.failed") - at("metadata.provider");
    assert!((8000..20000).contains(&waited), "waited {waited} ms for an 8 s timeout");
    assert!(!events.iter().any(|e| e.name == "metadata.found"));
    vm.kill();
}

#[test]
fn openstack_config_drive_comes_before_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let latest = dir.path().join("drive/openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    let meta = serde_json::json!({"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "drive-host.novalocal",
        "name": "drive-host", "availability_zone": "nova", "public_keys": {"k": format!("{KEY}\n")}});
    std::fs::write(latest.join("meta_data.json"), meta.to_string()).unwrap();
    std::fs::write(latest.join("user_data"), user_data("the config drive")).unwrap();
    let iso = dir.path().join("config-2.iso");
    let o = std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "config-2", "-J", "-R", "-o"])
        .arg(&iso)
        .arg(dir.path().join("drive"))
        .output()
        .unwrap();
    assert!(o.status.success(), "xorriso: {}", String::from_utf8_lossy(&o.stderr));
    let drive = format!("file={},media=cdrom,readonly=on", iso.display());
    let mut args: Vec<String> = berth_qemu::user_net_args(&[]);
    args.extend(["-drive".into(), drive]);
    for s in common::metadata::smbios("openstack") {
        args.extend(["-smbios".to_string(), s.to_string()]);
    }
    let mut vm = common::boot_with(image(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    line_of(&vm, "from-cloud | user-data of the config drive ran");
    assert_eq!(line_of(&vm, "probe | machine="), "drive-host");
    assert_eq!(line_of(&vm, "probe | key="), KEY);
    let found = vm.events().into_iter().find(|e| e.name == "metadata.found").expect("metadata.found");
    assert!(found.get("from").unwrap_or_default().starts_with("config drive /dev/"), "{found:?}");
    assert_eq!(found.get("instance_id"), Some("83679162-1378-4288-a2d4-70e13ec132aa"));
    vm.kill();
}

#[test]
fn azure_reports_a_refused_user_data_as_not_ready() {
    // User-data the machine cannot take: [network] is in force before the metadata is read.
    let server = MetadataServer::start("azure", "[network]\ndns = [\"1.1.1.1\"]\n");
    let args = server.qemu_args();
    let mut vm = common::boot_with(image(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = default_timeout();
    let rejected = vm.wait_for_event("config.rejected", |e| e.get("source") == Some("azure"), t).unwrap();
    assert!(
        rejected.get("error").unwrap_or_default().contains("azure user-data:1:1: [network]"),
        "{rejected:?}"
    );
    vm.wait_for_event("metadata.reported", |e| e.get("state") == Some("not-ready"), t).unwrap();
    // The image's service runs, on the provider's hostname (the fragment alone was refused).
    assert_eq!(line_of(&vm, "probe | machine="), "azure-host");
    let seen = server.seen();
    let report = seen.last().unwrap();
    assert_eq!(report.line, "POST /machine?comp=health");
    assert_eq!(report.health.as_deref(), Some("NotReady"), "{seen:#?}");
    vm.kill();
}

#[test]
fn a_machine_no_cloud_names_boots_at_once() {
    let args = berth_qemu::user_net_args(&[]);
    let mut vm = common::boot_with(image(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let none = vm.wait_for_event("metadata.none", |_| true, default_timeout()).unwrap();
    assert_eq!(none.get("vendor"), Some("QEMU"), "{none:?}");
    assert_eq!(line_of(&vm, "probe | machine="), "from-image");
    assert!(!vm.events().iter().any(|e| e.name.starts_with("metadata.") && e.name != "metadata.none"));
    vm.kill();
}

/// One raw request to a fake server: its status line.
fn ask(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_fake_services_refuse_what_the_real_ones_refuse() {
    let get =
        |path: &str, headers: &str| format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}\r\n");
    let cases: [(&str, String, &str); 9] = [
        ("ec2", get("/latest/meta-data/instance-id", ""), "401"),
        ("ec2", "PUT /latest/api/token HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(), "400"),
        (
            "ec2",
            "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 99999\r\n\r\n".into(),
            "400",
        ),
        ("gce", get("/computeMetadata/v1/instance/id", ""), "403"),
        (
            "gce",
            get("/computeMetadata/v1/instance/id", "Metadata-Flavor: Google\r\nX-Forwarded-For: 1.2.3.4\r\n"),
            "403",
        ),
        ("azure", get("/metadata/instance?api-version=2021-08-01", ""), "400"),
        ("azure", get("/metadata/instance?api-version=2099-01-01", "Metadata: true\r\n"), "400"),
        ("azure", get("/metadata/instance", "Metadata: true\r\n"), "400"),
        (
            "azure",
            get(
                "/metadata/instance?api-version=2021-08-01",
                "Metadata: true\r\nX-Forwarded-For: 1.2.3.4\r\n",
            ),
            "403",
        ),
    ];
    for (provider, request, status) in cases {
        let server = MetadataServer::start(provider, "");
        let line = ask(server.ports().0, &request);
        assert!(line.contains(&format!(" {status} ")), "{provider} {request:?}: {line}");
        let seen = server.seen();
        assert!(!seen[0].problem.is_empty(), "{provider} {request:?}: the problem is recorded");
    }
    // The wireserver: its headers, and a health report whose ids are not the goal state's.
    let server = MetadataServer::start("azure", "");
    let wire = server.ports().1.unwrap();
    assert!(ask(wire, &get("/machine/?comp=goalstate", "x-ms-agent-name: t\r\n")).contains(" 400 "));
    assert!(ask(wire, &get("/machine/?comp=goalstate", "x-ms-version: 2012-11-30\r\n")).contains(" 400 "));
    let body = "<Health><GoalStateIncarnation>3</GoalStateIncarnation><Container><ContainerId>other</ContainerId>\
                <RoleInstanceList><Role><InstanceId>x</InstanceId><Health><State>Ready</State></Health></Role>\
                </RoleInstanceList></Container></Health>";
    let post = format!(
        "POST /machine?comp=health HTTP/1.1\r\nx-ms-version: 2012-11-30\r\nx-ms-agent-name: t\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert!(ask(wire, &post).contains(" 400 "));
    let seen = server.seen();
    assert!(seen.iter().all(|s| !s.problem.is_empty()), "{seen:#?}");
    assert!(seen[2].problem.contains("ContainerId"), "{seen:#?}");
    // A good request passes.
    let server = MetadataServer::start("gce", "");
    assert!(ask(server.ports().0, &get("/computeMetadata/v1/instance/id", "Metadata-Flavor: Google\r\n"))
        .contains(" 200 "));
    assert!(server.seen()[0].problem.is_empty());
}
