//! Azure: the instance metadata service (IMDS, `Metadata: true`) for the hostname, keys and
//! user-data; then, once PID 1 has applied them, the provisioning report to the wireserver,
//! without which Azure marks the VM as failed to provision.
//!
//! The report is cloud-init's: `GET /machine/?comp=goalstate` (its incarnation, container id
//! and role instance id), then `POST /machine?comp=health` with the `Health` document saying
//! `Ready`, or `NotReady` with the reason. Both carry `x-ms-version: 2012-11-30`.
//!
//! Azure's `customData` is not in IMDS (only in `ovf-env.xml` on the provisioning media);
//! berth reads `userData` (docs/metadata.md).

use std::collections::BTreeMap;

use base64::Engine;
use berth_schema::metadata::{short_hostname, Metadata, Provider};

use crate::http::{required_text, Http, Method};

/// The IMDS API version asked for, and the older one tried when it is refused (400).
const API_VERSIONS: [&str; 2] = ["2021-08-01", "2019-06-01"];
/// The wireserver protocol version.
const WIRE_VERSION: &str = "2012-11-30";

/// Statuses Azure asks clients to retry (410: "IMDS will be available within 70 seconds").
fn imds_retry(status: u16) -> bool {
    matches!(status, 404 | 410 | 429 | 500 | 503)
}

/// Reads the instance's metadata from IMDS at `base` (`http://169.254.169.254`).
pub fn fetch(http: &Http, base: &str) -> Result<Metadata, String> {
    let mut last = String::new();
    for version in API_VERSIONS {
        let url = format!("{base}/metadata/instance?api-version={version}");
        let reply = http.get(&url, &[("Metadata", "true")], imds_retry)?;
        if reply.status == 400 {
            last = format!("{url} answered HTTP 400");
            continue;
        }
        let text = required_text(&url, reply)?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
        return from_document(&doc).map_err(|e| format!("{url}: {e}"));
    }
    Err(last)
}

/// The metadata in an IMDS `instance` document.
fn from_document(doc: &serde_json::Value) -> Result<Metadata, String> {
    let compute = &doc["compute"];
    let text =
        |v: &serde_json::Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let user_data = match text(&compute["userData"]) {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.split_whitespace().collect::<String>())
                .map_err(|e| format!("compute.userData is not base64: {e}"))?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        None => None,
    };
    let public_keys = compute["publicKeys"]
        .as_array()
        .map(|keys| keys.iter().filter_map(|k| text(&k["keyData"])).collect())
        .unwrap_or_default();
    let mut network = BTreeMap::new();
    let iface = &doc["network"]["interface"][0];
    let address = &iface["ipv4"]["ipAddress"][0];
    for (key, value) in [
        ("local-ipv4", &address["privateIpAddress"]),
        ("public-ipv4", &address["publicIpAddress"]),
        ("mac", &iface["macAddress"]),
        ("region", &compute["location"]),
        ("zone", &compute["zone"]),
    ] {
        if let Some(v) = text(value) {
            network.insert(key.to_string(), v);
        }
    }
    Ok(Metadata {
        provider: Some(Provider::Azure),
        instance_id: text(&compute["vmId"]),
        hostname: text(&compute["osProfile"]["computerName"])
            .or_else(|| text(&compute["name"]))
            .and_then(|h| short_hostname(&h)),
        public_keys,
        user_data,
        network,
        ..Default::default()
    })
}

/// What the goal state names: the ids the health report repeats.
#[derive(Debug, PartialEq, Eq)]
struct GoalState {
    incarnation: String,
    container_id: String,
    instance_id: String,
}

fn parse_goal_state(xml: &str) -> Result<GoalState, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("the goal state is not XML: {e}"))?;
    let find = |path: &[&str]| -> Result<String, String> {
        let mut node = doc.root_element();
        if node.tag_name().name() != "GoalState" {
            return Err("the goal state has no <GoalState>".into());
        }
        for step in path {
            node = node
                .children()
                .find(|c| c.tag_name().name() == *step)
                .ok_or_else(|| format!("the goal state has no {}", path.join("/")))?;
        }
        Ok(node.text().unwrap_or_default().trim().to_string())
    };
    Ok(GoalState {
        incarnation: find(&["Incarnation"])?,
        container_id: find(&["Container", "ContainerId"])?,
        instance_id: find(&["Container", "RoleInstanceList", "RoleInstance", "InstanceId"])?,
    })
}

/// Text escaped for an XML element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The `Health` document cloud-init posts: `Ready`, or `NotReady` with the reason (at most 512
/// characters).
fn health_document(goal: &GoalState, failure: Option<&str>) -> String {
    let (state, details) = match failure {
        None => ("Ready", String::new()),
        Some(reason) => {
            let reason: String = reason.chars().take(512).collect();
            (
                "NotReady",
                format!(
                    "<Details>\n  <SubStatus>ProvisioningFailed</SubStatus>\n  <Description>{}</Description>\n</Details>\n",
                    escape(&reason)
                ),
            )
        }
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
<Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"\n xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n  \
<GoalStateIncarnation>{}</GoalStateIncarnation>\n  <Container>\n    <ContainerId>{}</ContainerId>\n    \
<RoleInstanceList>\n      <Role>\n        <InstanceId>{}</InstanceId>\n        <Health>\n          \
<State>{state}</State>\n          {details}\n        </Health>\n      </Role>\n    </RoleInstanceList>\n  \
</Container>\n</Health>\n",
        escape(&goal.incarnation),
        escape(&goal.container_id),
        escape(&goal.instance_id),
    )
}

/// Reports the provisioning to the wireserver at `wireserver` (`http://168.63.129.16`):
/// ready, or failed with `failure`.
pub fn report(http: &Http, wireserver: &str, failure: Option<&str>) -> Result<(), String> {
    let headers = [("x-ms-agent-name", "berth"), ("x-ms-version", WIRE_VERSION)];
    let url = format!("{wireserver}/machine/?comp=goalstate");
    let reply = http.get(&url, &headers, |s| s >= 500 || s == 429 || s == 410)?;
    let goal = parse_goal_state(&required_text(&url, reply)?)?;
    let body = health_document(&goal, failure);
    let url = format!("{wireserver}/machine?comp=health");
    let post_headers = [headers[0], headers[1], ("Content-Type", "text/xml; charset=utf-8")];
    let reply =
        http.retrying(Method::Post, &url, &post_headers, body.as_bytes(), |s| matches!(s, 429 | 500 | 503))?;
    if !reply.ok() {
        return Err(format!("{url} answered HTTP {}", reply.status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOAL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>42</Incarnation>
  <Machine><ExpectedState>Started</ExpectedState></Machine>
  <Container>
    <ContainerId>a511aa6d-29e7-4f53-8788-55655dfe848f</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>f6cd1d7ef1644557b9059345e5ba890c.lars-test-1</InstanceId>
        <State>Started</State>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>"#;

    #[test]
    fn goal_state_and_the_health_report() {
        let goal = parse_goal_state(GOAL).unwrap();
        assert_eq!(goal.incarnation, "42");
        assert_eq!(goal.container_id, "a511aa6d-29e7-4f53-8788-55655dfe848f");
        assert_eq!(goal.instance_id, "f6cd1d7ef1644557b9059345e5ba890c.lars-test-1");
        let ready = health_document(&goal, None);
        // cloud-init's bytes: the empty details leave a line of ten spaces.
        assert!(ready.contains("<State>Ready</State>\n          \n        </Health>"), "{ready}");
        assert!(ready.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Health "));
        let failed = health_document(&goal, Some("bad <fragment>"));
        assert!(failed.contains("<State>NotReady</State>"));
        assert!(failed.contains("<Description>bad &lt;fragment&gt;</Description>"), "{failed}");
        roxmltree::Document::parse(&failed).unwrap();
        assert!(parse_goal_state("<GoalState><Incarnation>1</Incarnation></GoalState>").is_err());
    }

    #[test]
    fn imds_document() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"compute":{"vmId":"v-1","name":"n","location":"westeurope","zone":"",
               "osProfile":{"computerName":"web-7","adminUsername":"a","disablePasswordAuthentication":"true"},
               "publicKeys":[{"keyData":"ssh-rsa AAAA x","path":"/home/a/.ssh/authorized_keys"}],
               "userData":"W3N5c3RlbV0K"},
               "network":{"interface":[{"macAddress":"000D3A047598","ipv4":{"ipAddress":[{"privateIpAddress":"10.0.0.4","publicIpAddress":""}]}}]}}"#,
        )
        .unwrap();
        let m = from_document(&doc).unwrap();
        assert_eq!(m.hostname.as_deref(), Some("web-7"));
        assert_eq!(m.instance_id.as_deref(), Some("v-1"));
        assert_eq!(m.public_keys, vec!["ssh-rsa AAAA x".to_string()]);
        assert_eq!(m.user_data.as_deref(), Some("[system]\n"));
        assert_eq!(m.network.get("mac").map(String::as_str), Some("000D3A047598"));
        assert!(!m.network.contains_key("public-ipv4") && !m.network.contains_key("zone"));
    }
}
