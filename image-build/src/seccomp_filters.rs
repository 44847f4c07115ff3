//! The seccomp filters an image carries: berth's default profile compiled for the packed
//! kernel (Docker's profile has kernel-version rules), so PID 1 only installs them. One filter
//! per subset of the capabilities the profile tests that a container uses, and one for Docker's
//! default capability set — what containers delivered at boot mostly get (PID 1 picks theirs
//! with `berth_schema::resolve::seccomp_filter`; it has no compiler, which would add ~95 kB to it).

use std::collections::BTreeSet;

use anyhow::{anyhow, Result};
use berth_runtime::capabilities;
use berth_runtime::defaults::default_capabilities;
use berth_runtime::seccomp::{self, KernelVersion, SeccompProgram};
use berth_schema::plan::{PlannedContainer, SeccompFilters, SeccompVariant};
use berth_schema::resolve::seccomp_key;

/// Compiles the filters for Docker's default capability set and for each of `cap_sets` (the
/// capability masks of the containers that get a filter).
pub fn compile(cap_sets: impl Iterator<Item = u64>, kernel: KernelVersion) -> Result<SeccompFilters> {
    let names = seccomp::berth_profile_capabilities().map_err(|e| anyhow!("seccomp profile: {e}"))?;
    let profile_caps = capabilities::mask(&names).map_err(|e| anyhow!("seccomp profile: {e}"))?;
    let default_caps = default_capabilities().map_err(|e| anyhow!(e))?;
    let keys: BTreeSet<u64> =
        [default_caps].into_iter().chain(cap_sets).map(|caps| seccomp_key(caps, profile_caps)).collect();
    let variants = keys
        .into_iter()
        .map(|caps| {
            let filter = compile_one(caps, kernel)
                .map_err(|e| anyhow!("seccomp filter for [{}]: {e}", capabilities::names(caps).join(", ")))?;
            Ok(SeccompVariant { caps, filter })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SeccompFilters { profile_caps, variants })
}

/// Drops the filters one of `containers` carries: PID 1 takes them from there
/// (`berth_schema::resolve::collect_filters`), and the plan, parsed at every boot, holds each once.
pub fn drop_carried<'a>(
    filters: &mut SeccompFilters,
    containers: impl Iterator<Item = &'a PlannedContainer>,
) {
    let carried: Vec<&SeccompProgram> = containers.filter_map(|c| c.seccomp.as_ref()).collect();
    filters.variants.retain(|v| !carried.contains(&&v.filter));
}

/// berth's default profile (Docker's, without the keyring calls) for the capability mask
/// `caps`, compiled.
fn compile_one(caps: u64, kernel: KernelVersion) -> Result<SeccompProgram, String> {
    let names = capabilities::names(caps);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let profile = seccomp::berth_default_profile(&names, kernel).map_err(|e| e.to_string())?;
    seccomp::compile(&profile).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_filter_per_tested_subset() {
        let k = KernelVersion { major: 6, minor: 1 };
        let mask = |names: &[&str]| capabilities::mask(names).unwrap();
        let default = default_capabilities().unwrap();
        let with_net_admin = default | mask(&["CAP_NET_ADMIN"]);
        let admin = mask(&["CAP_SYS_ADMIN", "CAP_CHOWN"]);
        let f = compile([default, with_net_admin, admin].into_iter(), k).unwrap();
        assert!(f.profile_caps & mask(&["CAP_SYS_ADMIN"]) != 0);
        let keys: Vec<u64> = f.variants.iter().map(|v| v.caps).collect();
        // (in mask order: CAP_SYS_CHROOT is bit 18, CAP_SYS_ADMIN bit 21)
        assert_eq!(keys, [mask(&["CAP_SYS_CHROOT"]), mask(&["CAP_SYS_ADMIN"])], "NET_ADMIN is not tested");
        // The filter compiled for the subset is the one for the whole set.
        assert_eq!(f.variants[0].filter, compile_one(default, k).unwrap());
        assert_ne!(f.variants[0].filter, f.variants[1].filter);
    }
}
