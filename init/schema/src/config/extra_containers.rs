//! Containers delivered at boot: a fragment's `[[onboot]]`, `[[service]]` and `[[onshutdown]]`
//! entries, planned
//! against the images packed in the image (the plan's catalog) exactly as `berth build` plans
//! the config file's, and merged over the plan: a container named like one of the same kind
//! replaces it wholly (in its place), a new name is appended. The fragment's containers pass
//! the build's per-container checks, and the merged set its set-wide ones (unique names,
//! ports, `depends_on`, cycles); anything wrong rejects the whole fragment and leaves the plan
//! untouched.

use super::container_set::{self, Kind, Member};
use super::{ContainerConfig, ContainerLists, NetMode};
use crate::plan::{Plan, PlannedContainer, SeccompFilters, UsernsRanges};
use crate::resolve;

/// An error, located by an offset in the fragment's text when known.
type Error = (Option<usize>, String);

/// One list of the plan merged with a fragment's containers of the same kind.
struct Merged<'a> {
    kind: Kind,
    containers: Vec<PlannedContainer>,
    /// For each of `containers`: the fragment's config it comes from (`None`: the image's).
    origins: Vec<Option<&'a ContainerConfig>>,
}

impl<'a> Merged<'a> {
    /// Substitutes the image's container named like each fragment container (the first such
    /// fragment container only), appends the others.
    fn new(
        kind: Kind,
        image: &[PlannedContainer],
        fragment: Vec<(&'a ContainerConfig, PlannedContainer)>,
    ) -> Self {
        let mut containers = image.to_vec();
        let mut origins: Vec<Option<&ContainerConfig>> = vec![None; containers.len()];
        for (config, planned) in fragment {
            let slot =
                containers.iter().position(|c| c.name == planned.name).filter(|i| origins[*i].is_none());
            match slot {
                Some(i) => {
                    containers[i] = planned;
                    origins[i] = Some(config);
                }
                None => {
                    containers.push(planned);
                    origins.push(Some(config));
                }
            }
        }
        Merged { kind, containers, origins }
    }

    fn members(&self) -> impl Iterator<Item = Member<'_>> {
        self.containers.iter().zip(&self.origins).map(|(planned, origin)| match origin {
            Some(config) => Member::from_config(self.kind, config),
            None => Member::from_planned(self.kind, planned),
        })
    }
}

/// Plans the fragment's containers (a fragment has no console) and merges them over `plan`;
/// returns the changed keys (`onboot.NAME`, `service.NAME`, `onshutdown.NAME`). On error
/// (located by offset in the fragment's text, when known) `plan` is unchanged.
pub(super) fn merge(fragment: ContainerLists<'_>, plan: &mut Plan) -> Result<Vec<String>, Error> {
    let ContainerLists { onboot, service, onshutdown, .. } = fragment;
    if onboot.is_empty() && service.is_empty() && onshutdown.is_empty() {
        return Ok(Vec::new());
    }
    // The build's checks of each container on its own (and of its kind's rules).
    // The machine's data disk is the plan's: volumes and persistent layers are allowed with one.
    fragment.validate(plan.storage.is_some())?;

    // The seccomp filters: the catalog's and those the plan's containers carry (kept once
    // collected, for later fragments, even when the container carrying one is replaced).
    let mut filters = plan.catalog.seccomp.clone();
    resolve::collect_filters(&mut filters, plan.containers());
    // `userns = "auto"` ids: a container replacing one of the plan's keeps its range, a new one
    // gets a range after every range in use.
    let mut ids = UsernsRanges::held_by(plan.containers());
    let mut planner = Planner { plan, filters: &filters, ids: &mut ids };
    let fragment_onboot = planner.plan_list(onboot)?;
    let fragment_service = planner.plan_list(service)?;
    let fragment_onshutdown = planner.plan_list(onshutdown)?;
    let lists = [
        Merged::new(Kind::Onboot, &plan.onboot, fragment_onboot),
        Merged::new(Kind::Service, &plan.service, fragment_service),
        Merged::new(Kind::OnShutdown, &plan.onshutdown, fragment_onshutdown),
    ];

    let mut members: Vec<Member<'_>> = lists.iter().flat_map(Merged::members).collect();
    members.extend(plan.console.iter().map(|c| Member::from_planned(Kind::Console, c)));
    container_set::check(&members, !plan.system.ntp.is_empty())?;
    drop(members);

    let changed = onboot
        .iter()
        .map(|c| format!("onboot.{}", c.name.get_ref()))
        .chain(service.iter().map(|c| format!("service.{}", c.name.get_ref())))
        .chain(onshutdown.iter().map(|c| format!("onshutdown.{}", c.name.get_ref())))
        .collect();
    let [merged_onboot, merged_service, merged_onshutdown] = lists;
    plan.onboot = merged_onboot.containers;
    plan.service = merged_service.containers;
    plan.onshutdown = merged_onshutdown.containers;
    plan.catalog.seccomp = filters;
    Ok(changed)
}

/// Plans a fragment's containers on the plan's catalog.
struct Planner<'p> {
    /// The plan the fragment is merged over.
    plan: &'p Plan,
    /// The seccomp filters at hand: the catalog's and those the plan's containers carry.
    filters: &'p SeccompFilters,
    /// The user-namespace ranges of the plan's containers and those given so far.
    ids: &'p mut UsernsRanges,
}

impl Planner<'_> {
    /// Plans each container of a list, with the config it comes from.
    fn plan_list<'a>(
        &mut self,
        list: &'a [ContainerConfig],
    ) -> Result<Vec<(&'a ContainerConfig, PlannedContainer)>, Error> {
        list.iter().map(|c| self.plan_one(c).map(|p| (c, p))).collect()
    }

    /// Plans one container of a fragment on the image it names, which must be packed.
    fn plan_one(&mut self, c: &ContainerConfig) -> Result<PlannedContainer, Error> {
        let name = c.name.get_ref();
        let catalog = &self.plan.catalog;
        let Some(image) = catalog.images.get(c.image.get_ref()) else {
            let packed: Vec<&str> = catalog.images.keys().map(String::as_str).collect();
            return Err((
                Some(c.image.span().start),
                format!(
                    "container `{name}`: image `{}` is not packed in this image (PID 1 cannot pull images); packed images: {}",
                    c.image.get_ref(),
                    if packed.is_empty() { "none".to_string() } else { packed.join(", ") }
                ),
            ));
        };
        if c.net == NetMode::Bridge && !catalog.bridge {
            return Err((
                Some(c.name.span().start),
                format!(
                    "container `{name}`: net = \"bridge\" needs the bridge and NAT modules, which this image does not pack (`berth build` packs them when one of its containers uses net = \"bridge\"); use net = \"host\" or \"none\", or rebuild the image"
                ),
            ));
        }
        let mut planned = resolve::plan_container(c, image, self.ids).map_err(|(at, m)| (Some(at), m))?;
        planned.seccomp = resolve::seccomp_filter(c, planned.capabilities, self.filters)
            .map_err(|m| (Some(c.name.span().start), format!("container `{name}`: seccomp: {m}")))?;
        Ok(planned)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::accounts::Accounts;
    use crate::config::overrides::Override;
    use crate::config::Config;
    use crate::plan::{
        Catalog, IdRange, PlannedImage, PlannedLayer, SeccompFilters, SeccompVariant, USERNS_FIRST_ID,
        USERNS_RANGE,
    };
    use crate::process::ImageConfig;
    use berth_runtime::capabilities;
    use berth_runtime::seccomp::SeccompProgram;

    const BUSYBOX: &str = "oci:images/busybox:latest";

    /// The image's own config, planned below as `berth build` plans it.
    const IMAGE: &str = r#"
[[onboot]]
name = "migrate"
image = "oci:images/busybox:latest"
command = ["true"]

[[service]]
name = "db"
image = "oci:images/busybox:latest"
ports = ["5432:5432"]
net = "bridge"

[[service]]
name = "web"
image = "oci:images/busybox:latest"
depends_on = ["db"]
env = { MODE = "image" }
userns = "auto"
"#;

    fn catalog(bridge: bool) -> Catalog {
        let image = PlannedImage {
            digest: "sha256:aa".into(),
            layers: vec![PlannedLayer { digest: "sha256:bb".into(), opaque_dirs: vec![] }],
            config: ImageConfig { cmd: vec!["sh".into()], ..Default::default() },
            accounts: Accounts::parse(Some(b"root:x:0:0::/:/bin/sh\nwww:x:33:33::/:/bin/sh\n"), None),
        };
        Catalog {
            images: BTreeMap::from([(BUSYBOX.to_string(), image)]),
            seccomp: SeccompFilters {
                profile_caps: caps(&["SYS_ADMIN", "SYS_CHROOT"]),
                variants: vec![SeccompVariant { caps: caps(&["SYS_CHROOT"]), filter: program(7) }],
            },
            bridge,
        }
    }

    fn caps(names: &[&str]) -> u64 {
        capabilities::mask(names).unwrap()
    }

    /// A one-instruction program returning `k`.
    fn program(k: u32) -> SeccompProgram {
        SeccompProgram { filter: vec![libc::sock_filter { code: 0x06, jt: 0, jf: 0, k }], flags: 0 }
    }

    fn plan_with(bridge: bool) -> Plan {
        let mut plan = Plan { catalog: catalog(bridge), ..Plan::default() };
        // An image without bridge containers has no bridge modules.
        let text = if bridge {
            IMAGE.to_string()
        } else {
            IMAGE.replace("ports = [\"5432:5432\"]\nnet = \"bridge\"\n", "")
        };
        let config = Config::parse(&text, "image.toml").unwrap();
        let mut ids = UsernsRanges::default();
        let mut planner = Planner { plan: &plan, filters: &plan.catalog.seccomp, ids: &mut ids };
        let onboot: Vec<_> = config.onboot.iter().map(|c| planner.plan_one(c).unwrap()).collect();
        let service: Vec<_> = config.service.iter().map(|c| planner.plan_one(c).unwrap()).collect();
        assert_eq!(service[1].userns, Some(IdRange { host_id: USERNS_FIRST_ID, size: USERNS_RANGE }));
        (plan.onboot, plan.service) = (onboot, service);
        // As `berth build` does: the containers carry the only filter, the catalog none.
        plan.catalog.seccomp.variants.clear();
        plan
    }

    fn plan() -> Plan {
        plan_with(true)
    }

    fn apply(plan: &mut Plan, fragment: &str) -> Result<Vec<String>, String> {
        Override::parse(fragment, "fw_cfg")?.apply(plan)
    }

    fn names(list: &[PlannedContainer]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_new_name_is_appended() {
        let mut p = plan();
        let changed = apply(
            &mut p,
            "[system]\nhostname = \"edge\"\n\n[[service]]\nname = \"extra\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"echo\", \"hi\"]\nenv = { GREETING = \"hello\" }\nuser = \"www\"\ndepends_on = [\"web\", \"migrate\"]\n",
        )
        .unwrap();
        assert_eq!(changed, ["system.hostname", "service.extra"]);
        assert_eq!(names(&p.service), ["db", "web", "extra"]);
        let extra = &p.service[2];
        assert_eq!(extra.args, ["echo", "hi"]);
        assert!(extra.env.iter().any(|e| e == "GREETING=hello"), "{:?}", extra.env);
        assert_eq!((extra.uid, extra.gid), (33, 33), "user looked up in the image's accounts");
        assert_eq!((extra.image_digest.as_str(), extra.layers.len()), ("sha256:aa", 1));
        assert_eq!(extra.seccomp, Some(program(7)));
        assert_eq!(extra.hostname, "extra");
    }

    #[test]
    fn onshutdown_containers_come_from_fragments_too() {
        let mut p = plan();
        let bye = "[[onshutdown]]\nname = \"bye\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"echo\", \"bye\"]\n";
        assert_eq!(apply(&mut p, bye).unwrap(), ["onshutdown.bye"]);
        assert_eq!(names(&p.onshutdown), ["bye"]);
        assert_eq!(p.onshutdown[0].args, ["echo", "bye"]);
        // Names are unique across kinds: an onshutdown named like a service is refused.
        let clash = bye.replace("\"bye\"", "\"web\"");
        let e = apply(&mut p, &clash).unwrap_err();
        assert!(e.contains("web"), "{e}");
        assert_eq!(names(&p.onshutdown), ["bye"], "a rejected fragment changes nothing");
    }

    #[test]
    fn a_matching_name_replaces_the_container_wholly_in_its_place() {
        let mut p = plan();
        let before = p.service[1].clone();
        let changed = apply(
            &mut p,
            "[[service]]\nname = \"web\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"httpd\"]\nuserns = \"auto\"\n\n[[onboot]]\nname = \"migrate\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"false\"]\n",
        )
        .unwrap();
        assert_eq!(changed, ["onboot.migrate", "service.web"]);
        assert_eq!(names(&p.service), ["db", "web"]);
        let web = &p.service[1];
        assert_eq!(web.args, ["httpd"]);
        assert!(web.depends_on.is_empty(), "nothing is kept from the replaced container");
        assert!(!web.env.iter().any(|e| e.starts_with("MODE=")), "{:?}", web.env);
        assert_eq!(web.userns, before.userns, "its id range is the replaced container's");
        assert_eq!(
            (names(&p.onboot), p.onboot[0].args.clone()),
            (vec!["migrate"], vec!["false".to_string()])
        );
    }

    #[test]
    fn seccomp_filters_outlive_the_containers_that_carried_them() {
        let mut p = plan();
        let unconfined = |name: &str| {
            format!("[[service]]\nname = \"{name}\"\nimage = \"oci:images/busybox:latest\"\nseccomp = \"unconfined\"\n")
        };
        let all = format!(
            "{}{}[[onboot]]\nname = \"migrate\"\nimage = \"oci:images/busybox:latest\"\nseccomp = \"unconfined\"\n",
            unconfined("db"),
            unconfined("web")
        );
        apply(&mut p, &all).unwrap();
        assert!(p.containers().all(|c| c.seccomp.is_none()));
        apply(&mut p, "[[service]]\nname = \"late\"\nimage = \"oci:images/busybox:latest\"\n").unwrap();
        assert_eq!(p.service[2].seccomp, Some(program(7)));
    }

    #[test]
    fn new_user_namespaces_get_a_free_range() {
        let mut p = plan();
        apply(
            &mut p,
            "[[service]]\nname = \"iso\"\nimage = \"oci:images/busybox:latest\"\nuserns = \"auto\"\n",
        )
        .unwrap();
        let range = p.service[2].userns.unwrap();
        assert_eq!(range.host_id, USERNS_FIRST_ID + USERNS_RANGE);
    }

    /// The plan's ranges and a fragment's: by container name, never overlapping, whatever the
    /// order of the containers in their lists.
    #[test]
    fn user_namespace_ranges_go_by_container_not_position() {
        let mut p = plan();
        let web = p.service[1].userns.unwrap();
        let image = "image = \"oci:images/busybox:latest\"\nuserns = \"auto\"\n";
        // An onboot container comes first in the plan's order, the replaced `web` last.
        let fragment = format!(
            "[[onboot]]\nname = \"first\"\n{image}\n[[service]]\nname = \"iso\"\n{image}\n[[service]]\nname = \"web\"\n{image}\n[[onshutdown]]\nname = \"bye\"\n{image}"
        );
        apply(&mut p, &fragment).unwrap();
        let range_in = |p: &Plan, name: &str| p.containers().find(|c| c.name == name).and_then(|c| c.userns);
        let range = |name: &str| range_in(&p, name).unwrap();
        assert_eq!(range("web"), web, "a replaced container keeps its range");
        let ranges: Vec<IdRange> = ["web", "first", "iso", "bye"].map(range).to_vec();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.host_id + a.size <= b.host_id || b.host_id + b.size <= a.host_id, "{a:?} {b:?}");
            }
        }
        assert!(ranges.iter().all(|r| r.host_id >= USERNS_FIRST_ID && r.size == USERNS_RANGE));
        // A later fragment gets a range after all of these.
        apply(&mut p, &format!("[[service]]\nname = \"late\"\n{image}")).unwrap();
        let late = range_in(&p, "late").unwrap();
        assert!(ranges.iter().all(|r| r.host_id + r.size <= late.host_id), "{late:?}");
    }

    #[test]
    fn an_image_that_is_not_packed_is_refused() {
        let mut p = plan();
        let before = p.clone();
        let e = apply(
            &mut p,
            "[system]\nhostname = \"edge\"\n\n[[service]]\nname = \"x\"\nimage = \"docker.io/library/nginx:1.27\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("fw_cfg:6:9: container `x`: image `docker.io/library/nginx:1.27` is not packed"),
            "{e}"
        );
        assert!(e.contains("packed images: oci:images/busybox:latest"), "{e}");
        assert_eq!(p, before, "a rejected fragment changes nothing, not even its hostname");
    }

    #[test]
    fn depends_on_must_name_a_container_of_the_merged_set() {
        let mut p = plan();
        let svc = |name: &str, deps: &str| {
            format!("[[service]]\nname = \"{name}\"\nimage = \"oci:images/busybox:latest\"\ndepends_on = [{deps}]\n")
        };
        let e = apply(&mut p, &svc("x", "\"ghost\"")).unwrap_err();
        assert!(e.starts_with("fw_cfg:4:15: container `x`: depends_on `ghost` is not another"), "{e}");
        // Replacing db so that it waits for web, which waits for db.
        let e = apply(&mut p, &svc("db", "\"web\"")).unwrap_err();
        assert!(e.contains("depends_on makes a cycle: db → web → db"), "{e}");
        assert!(apply(&mut p, &svc("x", "\"db\", \"network\"")).is_ok());
        let e = apply(
            &mut p,
            "[[onboot]]\nname = \"o\"\nimage = \"oci:images/busybox:latest\"\ndepends_on = [\"db\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("depends_on is for [[service]]"), "{e}");
    }

    #[test]
    fn names_and_ports_stay_unique() {
        let mut p = plan();
        let before = p.clone();
        let e = apply(&mut p, "[[service]]\nname = \"migrate\"\nimage = \"oci:images/busybox:latest\"\n")
            .unwrap_err();
        assert!(e.contains("two containers are named `migrate`"), "another kind: {e}");
        let twice = "[[service]]\nname = \"a\"\nimage = \"oci:images/busybox:latest\"\n";
        let e = apply(&mut p, &format!("{twice}{twice}")).unwrap_err();
        assert!(e.starts_with("fw_cfg:5:8: two containers are named `a`"), "{e}");
        let e = apply(
            &mut p,
            "[[service]]\nname = \"b\"\nimage = \"oci:images/busybox:latest\"\nnet = \"bridge\"\nports = [\"5432:80\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("port 5432 is published by `db` already"), "{e}");
        assert_eq!(p, before);
    }

    #[test]
    fn the_builds_checks_apply() {
        let mut p = plan();
        for (bad, why) in [
            ("memroy = \"1g\"\n", "unknown field `memroy`"),
            ("memory = \"1k\"\n", "at least 6m"),
            ("restart = \"sometimes\"\n", "on-failure"),
            ("ports = [\"80:80\"]\n", "ports need net = \"bridge\""),
            ("user = \"nobody\"\n", "user: user \"nobody\" is not in the image's /etc/passwd"),
            ("capabilities = { add = [\"FLY\"] }\n", "`FLY` is not a capability"),
            ("capabilities = { add = [\"SYS_ADMIN\"] }\n", "seccomp: no seccomp filter"),
        ] {
            let text = format!("[[service]]\nname = \"x\"\nimage = \"oci:images/busybox:latest\"\n{bad}");
            let e = apply(&mut p, &text).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.starts_with("fw_cfg:"), "{e}");
        }
        let ok = "[[service]]\nname = \"x\"\nimage = \"oci:images/busybox:latest\"\ncapabilities = { add = [\"SYS_ADMIN\"] }\nseccomp = \"unconfined\"\n";
        assert!(apply(&mut p, ok).is_ok());
    }

    #[test]
    fn the_bridge_needs_its_modules() {
        let text = "[[service]]\nname = \"b\"\nimage = \"oci:images/busybox:latest\"\nnet = \"bridge\"\nports = [\"8080:80\"]\n";
        let mut p = plan_with(false);
        let e = apply(&mut p, text).unwrap_err();
        assert!(e.contains("container `b`: net = \"bridge\" needs the bridge and NAT modules"), "{e}");
        let mut p = plan();
        apply(&mut p, text).unwrap();
        assert_eq!(p.service[2].ports.len(), 1);
    }
}
