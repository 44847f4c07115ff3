//! Plans one container: its config (`[[service]]`, `[[onboot]]` …) against a packed image
//! gives the [`PlannedContainer`] PID 1 runs — the process merged with the image's defaults
//! (Docker's rules), the user resolved in the image's accounts, the capability set and the
//! seccomp filter. `berth build` plans the config file's containers with it and PID 1 those of
//! boot-time fragments: one implementation for both.

use berth_runtime::capabilities;
use berth_runtime::defaults::{default_capabilities, UNPRIVILEGED_PING};
use berth_runtime::seccomp::SeccompProgram;

use crate::config::{ContainerConfig, NetMode, SeccompMode, UsernsMode};
use crate::plan::{
    PlannedContainer, PlannedImage, SeccompFilters, SeccompVariant, UsernsRanges, USERNS_RANGE,
};
use crate::process::merge_process;

/// An error at a byte offset of the config text the container came from.
pub type Located = (usize, String);

/// Plans `c` on `image` (the image `c.image` names). With `userns = "auto"` the container gets
/// its id range from `ids` (the one it holds there, else a new one). The seccomp filter (see
/// [`seccomp_filter`]) is left for the caller: it depends on more than this container.
pub fn plan_container(
    c: &ContainerConfig,
    image: &PlannedImage,
    ids: &mut UsernsRanges,
) -> Result<PlannedContainer, Located> {
    let name = c.name.get_ref().clone();
    let at = c.name.span().start;
    let merged = merge_process(
        &image.config,
        c.entrypoint.as_deref(),
        c.command.as_deref(),
        &c.env,
        c.working_dir.as_deref(),
        c.user.as_deref(),
    )
    .map_err(|e| (at, format!("container `{name}`: {e}")))?;
    let (uid, gid, additional_gids) =
        image.accounts.resolve(&merged.user).map_err(|e| (at, format!("container `{name}`: user: {e}")))?;
    let capabilities = capability_set(c)
        .map_err(|(offset, e)| (offset, format!("container `{name}`: capabilities: {e}")))?;
    let userns = match c.userns {
        UsernsMode::Auto => Some(ids.range_for(&name).map_err(|e| (at, format!("container `{name}`: {e}")))?),
        UsernsMode::Host => None,
    };
    Ok(PlannedContainer {
        hostname: c.hostname.clone().unwrap_or_else(|| name.clone()),
        name,
        image: c.image.get_ref().clone(),
        image_digest: image.digest.clone(),
        layers: image.layers.clone(),
        args: merged.args,
        env: merged.env,
        working_dir: merged.working_dir,
        uid,
        gid,
        additional_gids,
        net: c.net,
        ports: c.ports.iter().map(|p| *p.get_ref()).collect(),
        memory: c.memory,
        cpus: c.cpus,
        pids_limit: c.pids_limit,
        binds: c.binds.iter().map(|b| b.get_ref().clone()).collect(),
        tmpfs: c.tmpfs.iter().map(|t| t.get_ref().clone()).collect(),
        volumes: c.volumes.iter().map(|v| v.get_ref().clone()).collect(),
        persistent: c.persistent,
        read_only: c.read_only,
        capabilities,
        privileged: c.privileged,
        seccomp: None,
        ulimits: c.ulimits.iter().map(|(resource, limit)| limit.get_ref().rlimit(*resource)).collect(),
        sysctls: container_sysctls(c),
        oom_score_adj: c.oom_score_adj,
        userns,
        memory_reservation: c.memory_reservation,
        memory_swap: c.memory_swap,
        cpu_shares: c.cpu_shares,
        cpuset: c.cpuset.clone(),
        io: c.io.clone(),
        devices: c.devices.iter().map(|d| d.get_ref().clone()).collect(),
        restart: c.restart,
        depends_on: c.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
        healthcheck: c.healthcheck.clone(),
        stop_signal: c.stop_signal.map(|s| s.number()),
        stop_timeout_ms: c.stop_timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// A container's namespaced sysctls: its own, and in a network namespace of its own
/// [`UNPRIVILEGED_PING`] unless it sets that itself (`ping` without `CAP_NET_RAW`), and the
/// hardened defaults of its network namespace (`hardening::CONTAINER_NETNS`). In a user
/// namespace the ping range can only name mapped groups: the container's 0–65535.
pub fn container_sysctls(c: &ContainerConfig) -> std::collections::BTreeMap<String, String> {
    let mut sysctls = c.sysctls.clone();
    if c.net != NetMode::Host {
        let (key, all) = UNPRIVILEGED_PING;
        let value = match c.userns {
            UsernsMode::Auto => format!("0 {}", USERNS_RANGE - 1),
            UsernsMode::Host => all.to_string(),
        };
        sysctls.entry(key.to_string()).or_insert(value);
        for d in crate::hardening::CONTAINER_NETNS {
            sysctls.entry(d.key.to_string()).or_insert_with(|| d.value.to_string());
        }
    }
    sysctls
}

/// A container's capability mask: Docker's defaults, plus `add`, minus `drop`; all when
/// privileged. Errors carry the offset of the bad name.
pub fn capability_set(c: &ContainerConfig) -> Result<u64, Located> {
    if c.privileged {
        return Ok(capabilities::all());
    }
    let mut set = default_capabilities().map_err(|e| (c.name.span().start, e))?;
    for name in &c.capabilities.add {
        set |= capabilities::mask(&[name.get_ref()]).map_err(|e| (name.span().start, e))?;
    }
    for name in &c.capabilities.drop {
        set &= !capabilities::mask(&[name.get_ref()]).map_err(|e| (name.span().start, e))?;
    }
    Ok(set)
}

/// The capabilities of the mask `caps` that the seccomp profile tests (`profile_caps`): the key
/// of the filter a container with `caps` gets.
pub fn seccomp_key(caps: u64, profile_caps: u64) -> u64 {
    caps & profile_caps
}

/// The seccomp filter of a container with the capability mask `caps`: berth's default profile
/// for them, taken from the filters `berth build` compiled; none when unconfined or privileged.
/// An error when no compiled filter fits.
pub fn seccomp_filter(
    c: &ContainerConfig,
    caps: u64,
    filters: &SeccompFilters,
) -> Result<Option<SeccompProgram>, String> {
    if !wants_seccomp(c) {
        return Ok(None);
    }
    let key = seccomp_key(caps, filters.profile_caps);
    match filters.variants.iter().find(|v| v.caps == key) {
        Some(v) => Ok(Some(v.filter.clone())),
        None => {
            let packed: Vec<String> = filters
                .variants
                .iter()
                .map(|v| format!("[{}]", capabilities::names(v.caps).join(", ")))
                .collect();
            Err(format!(
                "no seccomp filter for the capabilities [{}] is packed (the default profile tests {}; the image has filters for {}): give it the capabilities of one of the image's containers, set seccomp = \"unconfined\", or add such a container to the image",
                capabilities::names(key).join(", "),
                capabilities::names(filters.profile_caps).join(", "),
                if packed.is_empty() { "none".to_string() } else { packed.join(", ") }
            ))
        }
    }
}

/// Adds to `filters` those the `containers` carry (each for its capabilities' key) that it
/// does not hold yet: `berth build` leaves them out of the catalog, the plan's containers
/// having them.
pub fn collect_filters<'a>(
    filters: &mut SeccompFilters,
    containers: impl Iterator<Item = &'a PlannedContainer>,
) {
    for c in containers {
        let Some(filter) = &c.seccomp else { continue };
        let caps = seccomp_key(c.capabilities, filters.profile_caps);
        if !filters.variants.iter().any(|v| v.caps == caps) {
            filters.variants.push(SeccompVariant { caps, filter: filter.clone() });
        }
    }
}

/// Whether a container gets a seccomp filter: not when unconfined or privileged.
pub fn wants_seccomp(c: &ContainerConfig) -> bool {
    !c.privileged && c.seccomp == SeccompMode::Default
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Accounts;
    use crate::config::Config;
    use crate::plan::PlannedLayer;
    use crate::process::ImageConfig;

    fn image() -> PlannedImage {
        PlannedImage {
            digest: "sha256:11".into(),
            layers: vec![PlannedLayer { digest: "sha256:22".into(), opaque_dirs: vec![] }],
            config: ImageConfig {
                cmd: vec!["sh".into()],
                env: vec!["PATH=/bin".into()],
                ..Default::default()
            },
            accounts: Accounts::parse(Some(b"root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"), None),
        }
    }

    fn container(extra: &str) -> ContainerConfig {
        let text = format!("[[service]]\nname = \"s\"\nimage = \"oci:x\"\n{extra}");
        Config::parse(&text, "x.toml").unwrap().service.remove(0)
    }

    fn plan(c: &ContainerConfig) -> Result<PlannedContainer, Located> {
        plan_container(c, &image(), &mut UsernsRanges::default())
    }

    #[test]
    fn plans_process_user_and_capabilities() {
        let p = plan(&container(
            "user = \"app\"\nenv = { A = \"1\" }\ncapabilities = { drop = [\"ALL\"], add = [\"NET_ADMIN\"] }\n",
        ))
        .unwrap();
        assert_eq!(p.args, ["sh"]);
        assert_eq!(p.env, ["PATH=/bin", "A=1"]);
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert_eq!(p.capabilities, 0, "drop applies after add");
        assert_eq!((p.image_digest.as_str(), p.hostname.as_str()), ("sha256:11", "s"));
        let e = plan(&container("user = \"nobody\"\n")).unwrap_err();
        assert!(e.1.contains("container `s`: user:") && e.0 > 0, "{e:?}");
        let e = plan(&container("capabilities = { add = [\"FLY\"] }\n")).unwrap_err();
        assert!(e.1.contains("`FLY` is not a capability"), "{e:?}");
    }

    #[test]
    fn carries_typed_values() {
        let p = plan(&container(
            "net = \"bridge\"\nports = [\"8080:80\"]\ntmpfs = [\"/t:size=1k\"]\nulimits = { nofile = 7 }\nstop_signal = \"SIGQUIT\"\nuserns = \"auto\"\n",
        ))
        .unwrap();
        assert_eq!(p.ports[0].host_port, 8080);
        assert_eq!(p.tmpfs[0].mount().data, "size=1024");
        assert_eq!(p.ulimits, [berth_runtime::Rlimit { resource: libc::RLIMIT_NOFILE, soft: 7, hard: 7 }]);
        assert_eq!(p.stop_signal, Some(3));
        assert_eq!(p.userns.map(|r| r.host_id), Some(crate::plan::USERNS_FIRST_ID));
    }

    fn program(k: u32) -> SeccompProgram {
        SeccompProgram { filter: vec![libc::sock_filter { code: 0x06, jt: 0, jf: 0, k }], flags: 0 }
    }

    #[test]
    fn seccomp_filters_by_the_capabilities_the_profile_tests() {
        let [sys_admin, sys_chroot] =
            [capabilities::mask(&["SYS_ADMIN"]), capabilities::mask(&["SYS_CHROOT"])].map(Result::unwrap);
        let filters = SeccompFilters {
            profile_caps: sys_admin | sys_chroot,
            variants: vec![SeccompVariant { caps: sys_chroot, filter: program(1) }],
        };
        let plain = container("");
        let caps = |c: &ContainerConfig| capability_set(c).unwrap();
        assert_eq!(seccomp_filter(&plain, caps(&plain), &filters).unwrap(), Some(program(1)));
        let net = container("capabilities = { add = [\"NET_ADMIN\"] }\n");
        assert_eq!(seccomp_filter(&net, caps(&net), &filters).unwrap(), Some(program(1)), "not tested");
        let admin = container("capabilities = { add = [\"SYS_ADMIN\"] }\n");
        let e = seccomp_filter(&admin, caps(&admin), &filters).unwrap_err();
        assert!(e.contains("[CAP_SYS_CHROOT, CAP_SYS_ADMIN]") && e.contains("unconfined"), "{e}");
        let free = container("capabilities = { add = [\"SYS_ADMIN\"] }\nseccomp = \"unconfined\"\n");
        assert_eq!(seccomp_filter(&free, caps(&free), &filters).unwrap(), None);

        // A filter a container carries is found once collected.
        let mut carrier = plan(&admin).unwrap();
        carrier.seccomp = Some(program(2));
        let mut collected = filters.clone();
        collect_filters(&mut collected, [&carrier].into_iter());
        collect_filters(&mut collected, [&carrier].into_iter());
        assert_eq!(collected.variants.len(), 2, "once each");
        assert_eq!(seccomp_filter(&admin, caps(&admin), &collected).unwrap(), Some(program(2)));
    }
}
