//! The root filesystem of a container with a user namespace (`userns = "auto"`).
//!
//! An overlay mounted inside a user namespace needs the `userxattr` option and `user.overlay.*`
//! xattrs, which the initramfs's tmpfs cannot hold before Linux 6.6, so opaque directories would
//! stop working. PID 1 therefore mounts the overlay in its own namespace, where it is an ordinary
//! privileged mount (copy-up runs with PID 1's credentials), and the container bind-mounts it as
//! its root from inside its user namespace. The image's files stay owned by the machine's root:
//! inside the container they show as `nobody` and are readable as their mode allows; the
//! writable layer's root belongs to the container's root.

use std::fs;
use std::path::{Path, PathBuf};

use berth_schema::plan::PlannedContainer;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chown, Gid, Uid};

/// For a user-namespaced container, mounts its root in PID 1's namespace (see
/// this module) and returns it; `None` for the others, whose child mounts its own.
pub fn premount(
    c: &PlannedContainer,
    state: &Path,
    writable: Option<&Path>,
) -> Result<Option<PathBuf>, String> {
    let Some(range) = c.userns else { return Ok(None) };
    let layers: Vec<PathBuf> = c.layers.iter().map(|l| PathBuf::from(l.dir())).collect();
    let root = mount_root(state, &layers, range.host_id, writable)?;
    // The resolver files' mount points are made here, with PID 1's credentials: the image's
    // /etc belongs to the machine's root, which the container's root is not.
    for bind in crate::pid1::launch_spec::resolver_binds(c) {
        let target = root.join(bind.target.trim_start_matches('/'));
        if !target.exists() {
            let made = target
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|_| std::fs::File::create(&target).map(|_| ()));
            if let Err(e) = made {
                unmount_root(state);
                return Err(format!("create {}: {e}", bind.target));
            }
        }
    }
    Ok(Some(root))
}

/// Mounts a tmpfs on `state` holding the writable layer (owned by `owner`, the container's
/// root seen from outside) and the overlay of `layers` (bottom first) on `state/rootfs`. With
/// `writable`, the layer's `upper/` and `work/` are there instead (a persistent layer).
/// Returns the merged root.
pub fn mount_root(
    state: &Path,
    layers: &[PathBuf],
    owner: u32,
    writable: Option<&Path>,
) -> Result<PathBuf, String> {
    fs::create_dir_all(state).map_err(|e| format!("create {}: {e}", state.display()))?;
    mount(Some("tmpfs"), state, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
        .map_err(|e| format!("mount tmpfs on {}: {e}", state.display()))?;
    let result = (|| {
        let layer = writable.unwrap_or(state);
        let (upper, work, root) = (layer.join("upper"), layer.join("work"), state.join("rootfs"));
        for d in [&upper, &work, &root] {
            fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        chown(&upper, Some(Uid::from_raw(owner)), Some(Gid::from_raw(owner)))
            .map_err(|e| format!("chown {}: {e}", upper.display()))?;
        let lower: Vec<String> = layers.iter().rev().map(|l| l.display().to_string()).collect();
        let options =
            format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
        mount(Some("overlay"), &root, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
            .map_err(|e| format!("mount overlay on {}: {e} ({options})", root.display()))?;
        Ok(root)
    })();
    if result.is_err() {
        let _ = umount2(state, MntFlags::MNT_DETACH);
    }
    result
}

/// Unmounts what [`mount_root`] mounted (the container has exited).
pub fn unmount_root(state: &Path) {
    let _ = umount2(&state.join("rootfs"), MntFlags::MNT_DETACH);
    let _ = umount2(state, MntFlags::MNT_DETACH);
}
