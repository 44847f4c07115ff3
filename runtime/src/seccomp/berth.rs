//! berth's default profile: Docker's, minus the kernel keyring system calls.
//!
//! Docker's current profile allows `keyctl`, `add_key` and `request_key`. The keyring is
//! namespaced only by user namespaces, which berth's containers do not get by default, so a
//! container could read and change the keys of the machine's root user. berth refuses them, as
//! Docker's profile did until it started to rely on user namespaces.

use oci_spec::runtime::LinuxSeccomp;

use super::docker::{docker_profile, profile_capabilities, KernelVersion, DOCKER_DEFAULT_PROFILE_JSON};
use super::SeccompError;

/// System calls berth's default profile refuses on top of Docker's.
pub const BERTH_DENIED_SYSCALLS: &[&str] = &["keyctl", "add_key", "request_key"];

/// Docker's default profile for these capabilities and kernel, with [`BERTH_DENIED_SYSCALLS`]
/// taken out of every rule, so the profile's default action (EPERM) applies to them.
pub fn berth_default_profile(caps: &[&str], kernel: KernelVersion) -> Result<LinuxSeccomp, SeccompError> {
    let mut profile = docker_profile(DOCKER_DEFAULT_PROFILE_JSON, caps, kernel)?;
    let rules: Option<Vec<_>> = profile.syscalls().clone().map(|rules| {
        rules
            .into_iter()
            .filter_map(|mut rule| {
                let names: Vec<String> = rule
                    .names()
                    .iter()
                    .filter(|n| !BERTH_DENIED_SYSCALLS.contains(&n.as_str()))
                    .cloned()
                    .collect();
                (!names.is_empty()).then(|| {
                    rule.set_names(names);
                    rule
                })
            })
            .collect()
    });
    profile.set_syscalls(rules);
    Ok(profile)
}

/// The capabilities berth's default profile tests (see [`profile_capabilities`]): a filter
/// compiled for a capability set serves every set with the same intersection with these.
pub fn berth_profile_capabilities() -> Result<Vec<String>, SeccompError> {
    profile_capabilities(DOCKER_DEFAULT_PROFILE_JSON)
}
