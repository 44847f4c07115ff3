//! Checks over a machine's whole set of containers: unique names, each host port published
//! once, `depends_on` naming another onboot or service container, no dependency cycle.
//! `Config::validate` runs them on a config file; PID 1 on the image's containers merged with
//! those of a boot-time fragment (`extra_containers`).

use std::collections::{BTreeMap, BTreeSet};

use super::{ContainerConfig, PortMapping, Protocol, NETWORK_UNIT};
use crate::plan::PlannedContainer;
use crate::time_sync::TIME_UNIT;

/// Which list a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `[[onboot]]`.
    Onboot,
    /// `[[service]]`.
    Service,
    /// `[[onshutdown]]`.
    OnShutdown,
    /// `[console]`.
    Console,
}

/// A container as these checks see it; offsets locate it in the text it was written in
/// (`None`: it comes from the image's plan).
pub(crate) struct Member<'a> {
    kind: Kind,
    name: &'a str,
    at: Option<usize>,
    depends_on: Vec<(&'a str, Option<usize>)>,
    ports: Vec<(PortMapping, Option<usize>)>,
}

impl<'a> Member<'a> {
    /// A container from config text.
    pub(crate) fn from_config(kind: Kind, c: &'a ContainerConfig) -> Member<'a> {
        Member {
            kind,
            name: c.name.get_ref(),
            at: Some(c.name.span().start),
            depends_on: c.depends_on.iter().map(|d| (d.get_ref().as_str(), Some(d.span().start))).collect(),
            ports: c.ports.iter().map(|p| (*p.get_ref(), Some(p.span().start))).collect(),
        }
    }

    /// A container of the image's plan.
    pub(crate) fn from_planned(kind: Kind, c: &'a PlannedContainer) -> Member<'a> {
        Member {
            kind,
            name: &c.name,
            at: None,
            depends_on: c.depends_on.iter().map(|d| (d.as_str(), None)).collect(),
            ports: c.ports.iter().map(|p| (*p, None)).collect(),
        }
    }
}

/// Runs the checks; an error carries the offset of what it is about, when known. `time`: the
/// machine sets its clock from NTP (`[system] ntp`), so services may wait for `"time"`.
pub(crate) fn check(members: &[Member<'_>], time: bool) -> Result<(), (Option<usize>, String)> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for m in members {
        if !seen.insert(m.name) {
            return Err((m.at, format!("two containers are named `{}`; names must be unique", m.name)));
        }
    }
    let mut published: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
    for m in members {
        for (port, at) in &m.ports {
            if let Some(other) = published.insert((port.host_port, port.protocol), m.name) {
                return Err((
                    *at,
                    format!(
                        "container `{}`: port {} is published by `{other}` already",
                        m.name, port.host_port
                    ),
                ));
            }
        }
    }
    let startable: Vec<&str> =
        members.iter().filter(|m| matches!(m.kind, Kind::Onboot | Kind::Service)).map(|m| m.name).collect();
    let services: Vec<&Member<'_>> = members.iter().filter(|m| m.kind == Kind::Service).collect();
    for m in &services {
        for (dep, at) in &m.depends_on {
            if *dep == NETWORK_UNIT {
                continue;
            }
            if *dep == TIME_UNIT {
                if time {
                    continue;
                }
                return Err((
                    *at,
                    format!(
                        "container `{}`: depends_on `{TIME_UNIT}` waits for the clock to be set from NTP, but [system] ntp names no server; add one (like ntp = [\"dhcp\", \"time.example.com\"]) or drop the dependency",
                        m.name
                    ),
                ));
            }
            if *dep == m.name || !startable.contains(dep) {
                return Err((
                    *at,
                    format!(
                        "container `{}`: depends_on `{dep}` is not another onboot or service container (nor \"network\" or \"time\")",
                        m.name
                    ),
                ));
            }
        }
    }
    // Cycles among services: depth-first search with colours.
    fn visit<'a>(
        name: &'a str,
        services: &[&Member<'a>],
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), Vec<&'a str>> {
        match state.get(name) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(name);
                return Err(cycle);
            }
            _ => {}
        }
        state.insert(name, 1);
        path.push(name);
        if let Some(m) = services.iter().find(|m| m.name == name) {
            for (dep, _) in &m.depends_on {
                if services.iter().any(|s| s.name == *dep) {
                    visit(dep, services, state, path)?;
                }
            }
        }
        path.pop();
        state.insert(name, 2);
        Ok(())
    }
    let mut state = BTreeMap::new();
    for m in &services {
        if let Err(cycle) = visit(m.name, &services, &mut state, &mut Vec::new()) {
            let at =
                cycle.first().and_then(|first| services.iter().find(|s| s.name == *first)).and_then(|s| s.at);
            return Err((at, format!("depends_on makes a cycle: {}", cycle.join(" → "))));
        }
    }
    Ok(())
}
