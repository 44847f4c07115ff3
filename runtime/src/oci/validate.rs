//! Checks on the raw `config.json` document, before the `oci-spec` types read it, for what those
//! types would silently default, drop or accept: REQUIRED fields that are missing (a missing
//! `process.user.uid` would otherwise run the process as root), values the spec forbids
//! (duplicate rlimits, relative hook paths, `errnoRet` on an action without an errno, a
//! `ociVersion` that is not SemVer) and fields berth-runtime does not implement — the spec:
//! "runtimes MUST generate an error when invalid or unsupported values are encountered".
//!
//! Every error names the field (`process.rlimits[1].type`) and says what to do.

use serde_json::Value;

use super::config::ConfigError;

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The list at `v`, or nothing.
fn items(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.as_array().into_iter().flatten().enumerate()
}

/// Whether `v` holds a value (not absent, not `null`).
fn present(v: &Value) -> bool {
    !v.is_null()
}

/// Runs every check on the parsed document.
pub fn check(v: &Value) -> Result<(), ConfigError> {
    version(v)?;
    required(v)?;
    forbidden(v)?;
    unsupported(v)
}

/// `ociVersion`: REQUIRED, SemVer 2.0.0, major version 1.
fn version(v: &Value) -> Result<(), ConfigError> {
    let Some(text) = v["ociVersion"].as_str() else {
        return err("ociVersion: missing (the spec version the bundle follows, e.g. \"1.0.2\")");
    };
    if !is_semver(text) {
        return err(format!("ociVersion: \"{text}\" is not a SemVer version like \"1.0.2\""));
    }
    if !text.starts_with("1.") {
        return err(format!("ociVersion: \"{text}\" is not supported (berth-runtime reads 1.x)"));
    }
    Ok(())
}

/// SemVer 2.0.0: `MAJOR.MINOR.PATCH`, numbers without leading zeros, then an optional
/// `-prerelease` and `+build` of dot-separated `[0-9A-Za-z-]` identifiers.
pub fn is_semver(text: &str) -> bool {
    let (rest, build) = match text.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (text, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let number =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let idents = |s: &str| {
        s.split('.').all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| number(p))
        && pre.is_none_or(|p| {
            idents(p) && p.split('.').all(|id| !id.bytes().all(|b| b.is_ascii_digit()) || number(id))
        })
        && build.is_none_or(idents)
}

/// REQUIRED fields inside optional objects, which `oci-spec` would default to 0 or `false`.
fn required(v: &Value) -> Result<(), ConfigError> {
    let root = &v["root"];
    if present(root) && root["path"].as_str().is_none_or(str::is_empty) {
        return err("root.path: missing (the rootfs directory, e.g. \"rootfs\")");
    }
    let user = &v["process"]["user"];
    for key in ["uid", "gid"] {
        if present(user) && !user[key].is_u64() {
            return err(format!("process.user.{key}: missing or not a number (e.g. 0)"));
        }
    }
    for (i, r) in items(&v["process"]["rlimits"]) {
        for key in ["soft", "hard"] {
            if !r[key].is_u64() {
                return err(format!("process.rlimits[{i}].{key}: missing or not a number"));
            }
        }
    }
    for (i, d) in items(&v["linux"]["devices"]) {
        if d["type"] != "p" {
            for key in ["major", "minor"] {
                if !d[key].is_i64() {
                    return err(format!(
                        "linux.devices[{i}].{key}: missing (REQUIRED for a \"{}\" device)",
                        d["type"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    let resources = &v["linux"]["resources"];
    for (i, d) in items(&resources["devices"]) {
        if !d["allow"].is_boolean() {
            return err(format!("linux.resources.devices[{i}].allow: missing (true or false)"));
        }
    }
    if present(&resources["pids"]) && !resources["pids"]["limit"].is_i64() {
        return err("linux.resources.pids.limit: missing (a number, or -1 for no limit)");
    }
    for field in [
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOPSDevice",
        "throttleWriteIOPSDevice",
    ] {
        for (i, d) in items(&resources["blockIO"][field]) {
            for key in ["major", "minor", "rate"] {
                if !d[key].is_i64() && !d[key].is_u64() {
                    return err(format!("linux.resources.blockIO.{field}[{i}].{key}: missing"));
                }
            }
        }
    }
    for (i, h) in items(&resources["hugepageLimits"]) {
        if !h["pageSize"].is_string() || !(h["limit"].is_u64() || h["limit"].is_i64()) {
            return err(format!("linux.resources.hugepageLimits[{i}]: pageSize and limit are REQUIRED"));
        }
    }
    Ok(())
}

/// Values the spec forbids that the types accept.
fn forbidden(v: &Value) -> Result<(), ConfigError> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, r) in items(&v["process"]["rlimits"]) {
        let t = r["type"].as_str().unwrap_or("");
        if seen.contains(&t) {
            return err(format!("process.rlimits[{i}].type: {t} is given twice (keep one)"));
        }
        seen.push(t);
    }
    if let Some(hooks) = v["hooks"].as_object() {
        for (kind, list) in hooks {
            for (i, h) in items(list) {
                let path = h["path"].as_str().unwrap_or("");
                if !path.starts_with('/') {
                    return err(format!("hooks.{kind}[{i}].path: \"{path}\" must be an absolute path"));
                }
                if let Some(t) = h.get("timeout").filter(|t| !t.is_null()) {
                    if t.as_i64().is_none_or(|t| t <= 0) {
                        return err(format!(
                            "hooks.{kind}[{i}].timeout: {t} must be a number of seconds above 0"
                        ));
                    }
                }
            }
        }
    }
    for (i, ns) in items(&v["linux"]["namespaces"]) {
        if let Some(p) = ns["path"].as_str().filter(|p| !p.is_empty()) {
            if !p.starts_with('/') {
                return err(format!("linux.namespaces[{i}].path: \"{p}\" must be an absolute path"));
            }
        }
    }
    if let Some(map) = v["annotations"].as_object() {
        if map.keys().any(String::is_empty) {
            return err("annotations: a key is empty");
        }
    }
    let seccomp = &v["linux"]["seccomp"];
    let takes_errno = |action: &Value| matches!(action.as_str(), Some("SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE"));
    if present(&seccomp["defaultErrnoRet"]) && !takes_errno(&seccomp["defaultAction"]) {
        return err(format!(
            "linux.seccomp.defaultErrnoRet: the default action {} takes no errno (remove it, or use SCMP_ACT_ERRNO)",
            seccomp["defaultAction"]
        ));
    }
    for (i, s) in items(&seccomp["syscalls"]) {
        if s["names"].as_array().is_none_or(Vec::is_empty) {
            return err(format!("linux.seccomp.syscalls[{i}].names: empty (list at least one system call)"));
        }
        if present(&s["errnoRet"]) && !takes_errno(&s["action"]) {
            return err(format!(
                "linux.seccomp.syscalls[{i}].errnoRet: the action {} takes no errno (remove it, or use SCMP_ACT_ERRNO)",
                s["action"]
            ));
        }
    }
    Ok(())
}

/// Fields berth-runtime does not implement, when they ask for something (a field left at its
/// neutral value, as generators write them, is accepted).
fn unsupported(v: &Value) -> Result<(), ConfigError> {
    let non_empty_string = |x: &Value| x.as_str().is_some_and(|s| !s.is_empty());
    let set_number = |x: &Value| x.as_i64().is_some_and(|n| n != 0) || x.as_u64().is_some_and(|n| n != 0);
    let process = &v["process"];
    let linux = &v["linux"];
    let resources = &linux["resources"];
    let memory = &resources["memory"];
    let block_io = &resources["blockIO"];
    let checks: [(&str, bool, &str); 20] = [
        (
            "process.apparmorProfile",
            non_empty_string(&process["apparmorProfile"]),
            "AppArmor profiles are not supported",
        ),
        (
            "process.selinuxLabel",
            non_empty_string(&process["selinuxLabel"]),
            "SELinux labels are not supported",
        ),
        ("linux.mountLabel", non_empty_string(&linux["mountLabel"]), "SELinux labels are not supported"),
        ("process.scheduler", present(&process["scheduler"]), "scheduling policies are not supported"),
        ("process.ioPriority", present(&process["ioPriority"]), "I/O priorities are not supported"),
        (
            "process.execCPUAffinity",
            present(&process["execCPUAffinity"]),
            "exec CPU affinity is not supported",
        ),
        ("linux.intelRdt", present(&linux["intelRdt"]), "Intel RDT is not supported"),
        (
            "linux.resources.rdma",
            resources["rdma"].as_object().is_some_and(|m| !m.is_empty()),
            "the rdma controller is not supported",
        ),
        (
            "linux.resources.network",
            present(&resources["network"]),
            "net_cls/net_prio exist only in cgroup v1",
        ),
        (
            "linux.resources.memory.disableOOMKiller",
            resources["memory"]["disableOOMKiller"] == true,
            "cgroup v2 cannot turn the OOM killer off",
        ),
        (
            "linux.resources.cpu.realtimeRuntime",
            set_number(&resources["cpu"]["realtimeRuntime"])
                || set_number(&resources["cpu"]["realtimePeriod"]),
            "real-time CPU bandwidth exists only in cgroup v1",
        ),
        ("linux.resources.cpu.idle", set_number(&resources["cpu"]["idle"]), "cpu.idle is not supported"),
        (
            "linux.resources.cpu.burst",
            set_number(&resources["cpu"]["burst"]),
            "cpu.max.burst is not supported",
        ),
        (
            "linux.resources.unified",
            resources["unified"].as_object().is_some_and(|m| !m.is_empty()),
            "linux.resources.unified is not supported (use the typed fields)",
        ),
        (
            "linux.resources.memory.kernel",
            present(&memory["kernel"]),
            "kernel memory limits exist only in cgroup v1",
        ),
        (
            "linux.resources.memory.kernelTCP",
            present(&memory["kernelTCP"]),
            "kernel TCP memory limits exist only in cgroup v1",
        ),
        (
            "linux.resources.memory.swappiness",
            present(&memory["swappiness"]),
            "per-group swappiness exists only in cgroup v1",
        ),
        (
            "linux.resources.memory.useHierarchy",
            memory["useHierarchy"] == false,
            "cgroup v2 is always hierarchical",
        ),
        (
            "linux.resources.blockIO.weightDevice",
            block_io["weightDevice"].as_array().is_some_and(|l| !l.is_empty()),
            "per-device I/O weights are not supported",
        ),
        (
            "linux.resources.blockIO.leafWeight",
            set_number(&block_io["leafWeight"]),
            "leafWeight exists only in cgroup v1",
        ),
    ];
    if let Some((field, _, why)) = checks.iter().find(|(_, set, _)| *set) {
        return err(format!("{field}: {why} by berth-runtime; remove the field"));
    }
    let personality = &linux["personality"];
    if present(personality) {
        let plain =
            personality["domain"] == "LINUX" && personality["flags"].as_array().is_none_or(Vec::is_empty);
        if !plain {
            return err("linux.personality: only {\"domain\": \"LINUX\"} is supported by berth-runtime");
        }
    }
    for (i, m) in items(&v["mounts"]) {
        if present(&m["uidMappings"]) || present(&m["gidMappings"]) {
            return err(format!(
                "mounts[{i}].uidMappings: id-mapped mounts are not supported by berth-runtime"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver() {
        for ok in ["1.0.0", "1.0.2-dev", "1.2.1", "1.0.0-rc.1+build.5", "10.20.30"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["1.0", "1.x", "01.0.0", "1.0.0-", "1.0.0+", "1.0.0-01", "v1.0.0", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
