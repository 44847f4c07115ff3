//! A planned container's resource settings as cgroup v2 limits, with Docker's conversions.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_runtime::device_filter::{
    DeviceRule, ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE, DOCKER_DEFAULT_RULES,
};
use berth_runtime::CgroupLimits;
use berth_runtime::{Device, DeviceKind};
use berth_schema::config::SwapLimit;
use berth_schema::plan::PlannedContainer;

/// How long a device named in `io` may take to appear (its driver may still be probing).
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Whether the container asks for anything only a cgroup can give.
pub fn wants_cgroup_limits(c: &PlannedContainer) -> bool {
    c.memory.is_some()
        || c.cpus.is_some()
        || c.pids_limit.is_some()
        || c.memory_reservation.is_some()
        || c.cpu_shares.is_some()
        || c.cpuset.is_some()
        || c.io != Default::default()
}

/// The cgroup limits of a container. Device paths of `io` are resolved to `major:minor` here,
/// waiting briefly for devices whose driver is still probing.
pub fn cgroup_limits(c: &PlannedContainer) -> Result<CgroupLimits, String> {
    let memory_swap = match (c.memory_swap, c.memory) {
        (Some(SwapLimit::Unlimited), _) => Some(u64::MAX),
        (Some(SwapLimit::Total(total)), Some(memory)) => Some(total.saturating_sub(memory)),
        _ => None,
    };
    // runc's conversions of Docker's cgroup v1 numbers to cgroup v2.
    let cpu_weight = c.cpu_shares.map(|shares| 1 + (shares.saturating_sub(2) * 9999) / 262_142);
    let io_weight = c.io.weight.map(|w| 1 + (w.saturating_sub(10) * 9999) / 990);
    let mut per_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, map) in [
        ("rbps", &c.io.read_bps),
        ("wbps", &c.io.write_bps),
        ("riops", &c.io.read_iops),
        ("wiops", &c.io.write_iops),
    ] {
        for (path, value) in map {
            per_device.entry(device_number(path)?).or_default().push(format!("{key}={value}"));
        }
    }
    Ok(CgroupLimits {
        memory: c.memory,
        cpus: c.cpus,
        pids: c.pids_limit,
        memory_swap,
        memory_low: c.memory_reservation,
        cpu_weight,
        cpuset_cpus: c.cpuset.clone(),
        io_weight,
        io_max: per_device.into_iter().map(|(dev, limits)| format!("{dev} {}", limits.join(" "))).collect(),
        // Docker's device rules: a node of any device may be made, only the standard ones opened.
        devices: if c.privileged { None } else { Some(device_rules(c)?) },
        ..Default::default()
    })
}

/// Docker's default rules plus one per `devices` entry.
fn device_rules(c: &PlannedContainer) -> Result<Vec<DeviceRule>, String> {
    let mut rules = DOCKER_DEFAULT_RULES.to_vec();
    for d in &c.devices {
        let node = device_node(&d.host)?;
        let access = d.access.chars().fold(0, |a, ch| {
            a | match ch {
                'r' => ACCESS_READ,
                'w' => ACCESS_WRITE,
                _ => ACCESS_MKNOD,
            }
        });
        let kind = if node.kind == DeviceKind::Block { 'b' } else { 'c' };
        rules.push(DeviceRule {
            allow: true,
            kind,
            major: Some(node.major),
            minor: Some(node.minor),
            access,
        });
    }
    Ok(rules)
}

/// The device nodes `devices` creates in the container.
pub fn device_nodes(c: &PlannedContainer) -> Result<Vec<Device>, String> {
    c.devices
        .iter()
        .map(|d| {
            let node = device_node(&d.host)?;
            Ok(Device { path: d.container.clone(), ..node })
        })
        .collect()
}

/// A device of the machine as a node description, waiting up to [`DEVICE_WAIT`] for it.
fn device_node(path: &str) -> Result<Device, String> {
    use std::os::unix::fs::MetadataExt;
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        match std::fs::metadata(Path::new(path)) {
            Ok(m) if m.file_type().is_block_device() || m.file_type().is_char_device() => {
                return Ok(Device {
                    path: path.to_string(),
                    kind: if m.file_type().is_char_device() { DeviceKind::Char } else { DeviceKind::Block },
                    major: libc::major(m.rdev()),
                    minor: libc::minor(m.rdev()),
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                });
            }
            Ok(_) => return Err(format!("devices: {path} is not a device")),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("devices: {path}: {e} (is its driver in [kernel] modules?)")),
        }
    }
}

/// `major:minor` of a block device, waiting up to [`DEVICE_WAIT`] for it to appear.
fn device_number(path: &str) -> Result<String, String> {
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        match std::fs::metadata(Path::new(path)) {
            Ok(m) if m.file_type().is_block_device() => {
                use std::os::unix::fs::MetadataExt;
                let rdev = m.rdev();
                return Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)));
            }
            Ok(_) => return Err(format!("io: {path} is not a block device")),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(format!("io: block device {path}: {e} (is its driver in [kernel] modules?)"))
            }
        }
    }
}
