//! Plans one container: its config (`[[service]]`, `[[onboot]]` …) against a packed image
//! gives the [`PlannedContainer`] PID 1 runs — the process merged with the image's defaults
//! (Docker's rules), the user resolved in the image's accounts, the capability set and the
//! seccomp filter. `berth build` plans the config file's containers with it and PID 1 those of
//! boot-time fragments: one implementation for both.

use berth_runtime::capabilities;
use berth_runtime::defaults::DEFAULT_CAPABILITIES;

use crate::config::{ContainerConfig, DeviceMapping, PortMapping, SeccompMode, TmpfsMount};
use crate::plan::{
    IdRange, PlannedContainer, PlannedImage, SeccompFilter, SeccompFilters, SeccompVariant, USERNS_FIRST_ID,
    USERNS_RANGE,
};
use crate::process::merge_process;

/// An error at a byte offset of the config text the container came from.
pub type Located = (usize, String);

/// Plans `c` on `image` (the image `c.image` names). The seccomp filter (see
/// [`seccomp_filter`]) and the user namespace range are left for the caller: both depend on
/// more than this container.
pub fn plan_container(c: &ContainerConfig, image: &PlannedImage) -> Result<PlannedContainer, Located> {
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
        ports: c.ports.iter().filter_map(|p| PortMapping::parse(p.get_ref()).ok()).collect(),
        memory: c.memory,
        cpus: c.cpus,
        pids_limit: c.pids_limit,
        binds: c.parsed_binds(),
        tmpfs: c.tmpfs.iter().filter_map(|t| TmpfsMount::parse(t.get_ref()).ok()).collect(),
        volumes: c.parsed_volumes(),
        persistent: c.persistent,
        read_only: c.read_only,
        capabilities: capabilities::names(capabilities),
        privileged: c.privileged,
        seccomp: None,
        ulimits: c.ulimits.iter().map(|(k, v)| (k.clone(), v.get_ref().limits())).collect(),
        sysctls: c.sysctls.clone(),
        oom_score_adj: c.oom_score_adj,
        userns: None,
        memory_reservation: c.memory_reservation,
        memory_swap: c.memory_swap,
        cpu_shares: c.cpu_shares,
        cpuset: c.cpuset.clone(),
        io: c.io.clone(),
        devices: c.devices.iter().filter_map(|d| DeviceMapping::parse(d.get_ref()).ok()).collect(),
        restart: c.restart,
        depends_on: c.depends_on.iter().map(|d| d.get_ref().clone()).collect(),
        healthcheck: c.healthcheck.clone(),
        stop_signal: c.stop_signal.as_deref().and_then(crate::config::signal_number),
        stop_timeout_ms: c.stop_timeout.map(|d| d.as_millis() as u64),
    })
}

/// A container's capability mask: Docker's defaults, plus `add`, minus `drop`; all when
/// privileged. Errors carry the offset of the bad name.
pub fn capability_set(c: &ContainerConfig) -> Result<u64, Located> {
    if c.privileged {
        return Ok(capabilities::all());
    }
    let mut set = capabilities::mask(DEFAULT_CAPABILITIES).map_err(|e| (c.name.span().start, e))?;
    for name in &c.capabilities.add {
        set |= capabilities::mask(&[name.get_ref()]).map_err(|e| (name.span().start, e))?;
    }
    for name in &c.capabilities.drop {
        set &= !capabilities::mask(&[name.get_ref()]).map_err(|e| (name.span().start, e))?;
    }
    Ok(set)
}

/// The capabilities of `caps` that the seccomp profile tests (a subset of `profile_caps`, in
/// its order): the key of the filter a container with `caps` gets.
pub fn seccomp_key(caps: &[impl AsRef<str>], profile_caps: &[String]) -> Result<Vec<String>, String> {
    let mask = capabilities::mask(caps)?;
    Ok(profile_caps
        .iter()
        .filter(|p| capabilities::parse(p).is_ok_and(|bit| mask & (1u64 << bit) != 0))
        .cloned()
        .collect())
}

/// The seccomp filter of a container with the capabilities `caps` (names): berth's default
/// profile for them, taken from the filters `berth build` compiled; none when unconfined or
/// privileged. An error when no compiled filter fits.
pub fn seccomp_filter(
    c: &ContainerConfig,
    caps: &[String],
    filters: &SeccompFilters,
) -> Result<Option<SeccompFilter>, String> {
    if !wants_seccomp(c) {
        return Ok(None);
    }
    let key = seccomp_key(caps, &filters.profile_caps)?;
    match filters.variants.iter().find(|v| v.caps == key) {
        Some(v) => Ok(Some(v.filter.clone())),
        None => {
            let packed: Vec<String> =
                filters.variants.iter().map(|v| format!("[{}]", v.caps.join(", "))).collect();
            Err(format!(
                "no seccomp filter for the capabilities [{}] is packed (the default profile tests {}; the image has filters for {}): give it the capabilities of one of the image's containers, set seccomp = \"unconfined\", or add such a container to the image",
                key.join(", "),
                filters.profile_caps.join(", "),
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
        let (Some(filter), Ok(caps)) = (&c.seccomp, seccomp_key(&c.capabilities, &filters.profile_caps))
        else {
            continue;
        };
        if !filters.variants.iter().any(|v| v.caps == caps) {
            filters.variants.push(SeccompVariant { caps, filter: filter.clone() });
        }
    }
}

/// Whether a container gets a seccomp filter: not when unconfined or privileged.
pub fn wants_seccomp(c: &ContainerConfig) -> bool {
    !c.privileged && c.seccomp == SeccompMode::Default
}

/// The first `userns = "auto"` range after those of `taken`: ranges never overlap.
pub fn next_userns_range<'a>(taken: impl Iterator<Item = &'a PlannedContainer>) -> IdRange {
    let host_id = taken
        .filter_map(|c| c.userns)
        .map(|r| r.host_id.saturating_add(r.size))
        .max()
        .unwrap_or(USERNS_FIRST_ID)
        .max(USERNS_FIRST_ID);
    IdRange { host_id, size: USERNS_RANGE }
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

    #[test]
    fn plans_process_user_and_capabilities() {
        let p =
            plan_container(&container("user = \"app\"\nenv = { A = \"1\" }\ncapabilities = { drop = [\"ALL\"], add = [\"NET_ADMIN\"] }\n"), &image())
                .unwrap();
        assert_eq!(p.args, ["sh"]);
        assert_eq!(p.env, ["PATH=/bin", "A=1"]);
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert_eq!(p.capabilities, Vec::<String>::new(), "drop applies after add");
        assert_eq!((p.image_digest.as_str(), p.hostname.as_str()), ("sha256:11", "s"));
        let e = plan_container(&container("user = \"nobody\"\n"), &image()).unwrap_err();
        assert!(e.1.contains("container `s`: user:") && e.0 > 0, "{e:?}");
        let e = plan_container(&container("capabilities = { add = [\"FLY\"] }\n"), &image()).unwrap_err();
        assert!(e.1.contains("`FLY` is not a capability"), "{e:?}");
    }

    #[test]
    fn seccomp_filters_by_the_capabilities_the_profile_tests() {
        let filter = |n| SeccompFilter { flags: 0, instructions: vec![n] };
        let filters = SeccompFilters {
            profile_caps: vec!["CAP_SYS_ADMIN".into(), "CAP_SYS_CHROOT".into()],
            variants: vec![SeccompVariant { caps: vec!["CAP_SYS_CHROOT".into()], filter: filter(1) }],
        };
        let plain = container("");
        let caps = |c: &ContainerConfig| capabilities::names(capability_set(c).unwrap());
        assert_eq!(seccomp_filter(&plain, &caps(&plain), &filters).unwrap(), Some(filter(1)));
        let net = container("capabilities = { add = [\"NET_ADMIN\"] }\n");
        assert_eq!(seccomp_filter(&net, &caps(&net), &filters).unwrap(), Some(filter(1)), "not tested");
        let admin = container("capabilities = { add = [\"SYS_ADMIN\"] }\n");
        let e = seccomp_filter(&admin, &caps(&admin), &filters).unwrap_err();
        assert!(e.contains("[CAP_SYS_ADMIN, CAP_SYS_CHROOT]") && e.contains("unconfined"), "{e}");
        let free = container("capabilities = { add = [\"SYS_ADMIN\"] }\nseccomp = \"unconfined\"\n");
        assert_eq!(seccomp_filter(&free, &caps(&free), &filters).unwrap(), None);

        // A filter a container carries is found once collected.
        let mut carrier = plan_container(&admin, &image()).unwrap();
        carrier.seccomp = Some(filter(2));
        let mut collected = filters.clone();
        collect_filters(&mut collected, [&carrier].into_iter());
        collect_filters(&mut collected, [&carrier].into_iter());
        assert_eq!(collected.variants.len(), 2, "once each");
        assert_eq!(seccomp_filter(&admin, &caps(&admin), &collected).unwrap(), Some(filter(2)));
    }

    #[test]
    fn userns_ranges_follow_the_taken_ones() {
        let mut a = plan_container(&container(""), &image()).unwrap();
        assert_eq!(next_userns_range([&a].into_iter()).host_id, USERNS_FIRST_ID);
        a.userns = Some(IdRange { host_id: USERNS_FIRST_ID, size: USERNS_RANGE });
        assert_eq!(next_userns_range([&a].into_iter()).host_id, USERNS_FIRST_ID + USERNS_RANGE);
    }
}
