//! The seccomp filters an image carries: berth's default profile compiled for the packed
//! kernel (Docker's profile has kernel-version rules), so PID 1 only installs them. One filter
//! per subset of the capabilities the profile tests that a container uses, and one for Docker's
//! default capability set — what containers delivered at boot mostly get (PID 1 picks theirs
//! with `berth_init::resolve::seccomp_filter`; it has no compiler, which would add ~95 kB to it).

use std::collections::BTreeSet;

use anyhow::{anyhow, Result};
use berth_init::plan::{PlannedContainer, SeccompFilter, SeccompFilters, SeccompVariant};
use berth_init::resolve::seccomp_key;
use berth_runtime::defaults::DEFAULT_CAPABILITIES;
use berth_runtime::seccomp::{self, KernelVersion};

/// Compiles the filters for Docker's default capability set and for each of `cap_sets` (the
/// capabilities, by name, of the containers that get a filter).
pub fn compile<'a>(
    cap_sets: impl Iterator<Item = &'a [String]>,
    kernel: KernelVersion,
) -> Result<SeccompFilters> {
    let profile_caps = seccomp::berth_profile_capabilities().map_err(|e| anyhow!("seccomp profile: {e}"))?;
    let mut keys: BTreeSet<Vec<String>> = BTreeSet::new();
    keys.insert(seccomp_key(DEFAULT_CAPABILITIES, &profile_caps).map_err(|e| anyhow!(e))?);
    for caps in cap_sets {
        keys.insert(seccomp_key(caps, &profile_caps).map_err(|e| anyhow!(e))?);
    }
    let variants = keys
        .into_iter()
        .map(|caps| {
            let filter = compile_one(&caps, kernel)
                .map_err(|e| anyhow!("seccomp filter for [{}]: {e}", caps.join(", ")))?;
            Ok(SeccompVariant { caps, filter })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SeccompFilters { profile_caps, variants })
}

/// Drops the filters one of `containers` carries: PID 1 takes them from there
/// (`berth_init::resolve::collect_filters`), and the plan, parsed at every boot, holds each once.
pub fn drop_carried<'a>(
    filters: &mut SeccompFilters,
    containers: impl Iterator<Item = &'a PlannedContainer>,
) {
    let carried: Vec<&SeccompFilter> = containers.filter_map(|c| c.seccomp.as_ref()).collect();
    filters.variants.retain(|v| !carried.contains(&&v.filter));
}

/// berth's default profile (Docker's, without the keyring calls) for `caps`, compiled.
fn compile_one(caps: &[String], kernel: KernelVersion) -> Result<SeccompFilter, String> {
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    let profile = seccomp::berth_default_profile(&caps, kernel).map_err(|e| e.to_string())?;
    let program = seccomp::compile(&profile).map_err(|e| e.to_string())?;
    let instructions = program
        .filter
        .iter()
        .map(|i| (i.code as u64) << 48 | (i.jt as u64) << 40 | (i.jf as u64) << 32 | i.k as u64)
        .collect();
    Ok(SeccompFilter { flags: program.flags, instructions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_filter_per_tested_subset() {
        let k = KernelVersion { major: 6, minor: 1 };
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let default = v(DEFAULT_CAPABILITIES);
        let mut with_net_admin = default.clone();
        with_net_admin.push("CAP_NET_ADMIN".into());
        let admin = v(&["CAP_SYS_ADMIN", "CAP_CHOWN"]);
        let f = compile([default.as_slice(), with_net_admin.as_slice(), admin.as_slice()].into_iter(), k)
            .unwrap();
        assert!(f.profile_caps.contains(&"CAP_SYS_ADMIN".to_string()));
        let keys: Vec<&[String]> = f.variants.iter().map(|v| v.caps.as_slice()).collect();
        assert_eq!(
            keys,
            [&v(&["CAP_SYS_ADMIN"])[..], &v(&["CAP_SYS_CHROOT"])[..]],
            "NET_ADMIN is not tested"
        );
        // The filter compiled for the subset is the one for the whole set.
        assert_eq!(f.variants[1].filter, compile_one(&default, k).unwrap());
        assert_ne!(f.variants[0].filter, f.variants[1].filter);
    }
}
