//! The eBPF device filter loads and attaches on this host's cgroup v2 hierarchy, and refuses
//! what it must (a cgroup v2 directory is all the device controller needs, no controllers).

use std::path::Path;

#[test]
fn device_filter_attaches_and_refuses() {
    let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists());
    let Some(base) = base else {
        eprintln!("skipped: no cgroup v2 hierarchy on this host");
        return;
    };
    let dir = base.join(format!("berth-devtest-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let r = berth_runtime::device_filter::attach(&dir, berth_runtime::device_filter::DOCKER_DEFAULT_RULES);
    let _ = std::fs::remove_dir(&dir);
    r.unwrap_or_else(|e| panic!("{e}"));
}
