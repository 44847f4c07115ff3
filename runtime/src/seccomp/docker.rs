//! Docker's seccomp profile format, evaluated the way moby's `profiles/seccomp` package does
//! (`setupSeccomp`) for x86_64 (`amd64`), a capability set and a kernel version.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;
use std::path::PathBuf;

use super::SeccompError;

/// Docker's default seccomp profile (moby's `profiles/seccomp/default.json`, now in the
/// moby/profiles repository), stored verbatim in `runtime/profiles/docker-default.json`.
/// Copyright The Moby Authors, Apache License 2.0 — the same license as berth.
pub const DOCKER_DEFAULT_PROFILE_JSON: &str = include_str!("../../profiles/docker-default.json");

/// Docker's name for the x86_64 architecture in `includes.arches` / `excludes.arches`.
const NATIVE_ARCH: &str = "amd64";

/// A kernel version as Docker compares it for `minKernel`: major and minor only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// The first number, e.g. 6 in "6.1.0-18-amd64".
    pub major: u32,
    /// The second number, e.g. 1 in "6.1.0-18-amd64".
    pub minor: u32,
}

impl KernelVersion {
    /// Parses `MAJOR.MINOR` with anything after the minor number ("4.8", "6.1.0-18-amd64");
    /// `None` otherwise.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.splitn(2, '.');
        let major = parts.next()?.parse().ok()?;
        let rest = parts.next()?;
        let digits: &str = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
        let minor = digits.parse().ok()?;
        Some(Self { major, minor })
    }

    /// The version of the running kernel, from `uname(2)`.
    pub fn running() -> Result<Self, SeccompError> {
        // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a valid, writable `utsname` for the duration of the call.
        if unsafe { libc::uname(&mut uts) } != 0 {
            return Err(SeccompError::DockerProfile(format!("uname: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: the kernel NUL-terminates `release` within the array.
        let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
        Self::parse(&release)
            .ok_or_else(|| SeccompError::DockerProfile(format!("cannot parse kernel release {release:?}")))
    }
}

/// The top level of a Docker profile: OCI's `LinuxSeccomp` plus `archMap`, with Docker's own
/// syscall entries.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Syscall>>,
}

/// An `archMap` entry: a native architecture and the ones its kernel also runs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

/// A Docker syscall entry: an OCI `LinuxSyscall` (or the older single `name`) with conditions.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

/// `includes` / `excludes`: architectures, capabilities, minimum kernel.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// "sys_admin", "CAP_SYS_ADMIN", "cap_sys_admin" → "CAP_SYS_ADMIN".
fn normalize_cap(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// `kernel >= min` for a `minKernel` string.
fn at_least(kernel: KernelVersion, min: &str) -> Result<bool, SeccompError> {
    let min = KernelVersion::parse(min)
        .ok_or_else(|| SeccompError::DockerProfile(format!("invalid minKernel {min:?}")))?;
    Ok(kernel >= min)
}

/// Evaluates the Docker-format profile `json` for x86_64, the capabilities `caps` and the kernel
/// `kernel`, as Docker's `setupSeccomp` does:
///
/// * `archMap`'s x86_64 entry becomes `architectures` (x86_64, x86, x32); giving both
///   `architectures` and `archMap` is an error.
/// * An entry is dropped when `excludes.arches` has "amd64", when any `excludes.caps` is in
///   `caps`, or when the kernel is at least `excludes.minKernel`; and when `includes.arches`
///   lacks "amd64", when any `includes.caps` is missing from `caps`, or when the kernel is older
///   than `includes.minKernel`.
/// * `name` and `names` together are an error; `name` alone becomes `names: [name]`.
///
/// Docker tests capabilities against the container's *bounding* set; pass the set the container
/// will run with (Docker makes its sets equal). Names are compared after normalising to
/// "CAP_…" in upper case.
pub fn docker_profile(
    json: &str,
    caps: &[&str],
    kernel: KernelVersion,
) -> Result<LinuxSeccomp, SeccompError> {
    let profile: Profile = serde_json::from_str(json)?;
    let caps: Vec<String> = caps.iter().map(|c| normalize_cap(c)).collect();
    let has_cap = |c: &String| caps.contains(&normalize_cap(c));

    let mut out = LinuxSeccomp::default();
    out.set_default_action(profile.default_action);
    out.set_default_errno_ret(profile.default_errno_ret);
    out.set_flags(profile.flags);
    out.set_listener_path(profile.listener_path);
    out.set_listener_metadata(profile.listener_metadata);

    let arch_map = profile.arch_map.unwrap_or_default();
    match profile.architectures {
        Some(a) if !a.is_empty() && !arch_map.is_empty() => {
            return Err(SeccompError::DockerProfile(
                "both 'architectures' and 'archMap' are specified; use either".to_string(),
            ))
        }
        Some(a) if !a.is_empty() => {
            out.set_architectures(Some(a));
        }
        _ => {
            if let Some(entry) = arch_map.into_iter().find(|m| m.architecture == Arch::ScmpArchX86_64) {
                let mut arches = vec![entry.architecture];
                arches.extend(entry.sub_architectures.unwrap_or_default());
                out.set_architectures(Some(arches));
            }
        }
    };

    let mut syscalls = Vec::new();
    for call in profile.syscalls.unwrap_or_default() {
        let names = match (call.name, call.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(SeccompError::DockerProfile(
                    "both 'name' and 'names' are specified in a syscall entry; use either".to_string(),
                ))
            }
            (Some(name), _) if !name.is_empty() => vec![name],
            (_, names) => names.unwrap_or_default(),
        };
        let ex = call.excludes.unwrap_or_default();
        if ex.arches.iter().flatten().any(|a| a == NATIVE_ARCH) || ex.caps.iter().flatten().any(has_cap) {
            continue;
        }
        if let Some(min) = &ex.min_kernel {
            if at_least(kernel, min)? {
                continue;
            }
        }
        let inc = call.includes.unwrap_or_default();
        if let Some(arches) = &inc.arches {
            if !arches.is_empty() && !arches.iter().any(|a| a == NATIVE_ARCH) {
                continue;
            }
        }
        if !inc.caps.iter().flatten().all(has_cap) {
            continue;
        }
        if let Some(min) = &inc.min_kernel {
            if !at_least(kernel, min)? {
                continue;
            }
        }
        let mut s = LinuxSyscall::default();
        s.set_names(names);
        s.set_action(call.action);
        s.set_errno_ret(call.errno_ret);
        s.set_args(call.args);
        syscalls.push(s);
    }
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

/// The capabilities a Docker-format profile's rules test (`includes.caps` and `excludes.caps`),
/// normalised to `CAP_…`, sorted, once each. [`docker_profile`] depends on a capability set only
/// through its intersection with these: two sets with the same intersection give the same
/// profile, which lets `berth build` compile one filter per intersection.
pub fn profile_capabilities(json: &str) -> Result<Vec<String>, SeccompError> {
    let profile: Profile = serde_json::from_str(json)?;
    let mut caps: Vec<String> = profile
        .syscalls
        .iter()
        .flatten()
        .flat_map(|c| [&c.includes, &c.excludes])
        .flat_map(|f| f.iter().flat_map(|f| f.caps.iter().flatten()))
        .map(|c| normalize_cap(c))
        .collect();
    caps.sort();
    caps.dedup();
    Ok(caps)
}

/// Docker's default profile ([`DOCKER_DEFAULT_PROFILE_JSON`]) evaluated for x86_64, the running
/// kernel and `effective_caps` (e.g. `["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]`); see
/// [`docker_profile`] for the rules. Without `CAP_SYS_ADMIN`, for instance, `mount`, `unshare`,
/// `setns` are refused, `clone` may not create namespaces and `clone3` fails with ENOSYS (so that
/// C libraries fall back to `clone`).
pub fn docker_default_profile(effective_caps: &[&str]) -> Result<LinuxSeccomp, SeccompError> {
    docker_profile(DOCKER_DEFAULT_PROFILE_JSON, effective_caps, KernelVersion::running()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls().iter().flatten().flat_map(|s| s.names().clone()).collect()
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion { major: 4, minor: 8 }));
        assert_eq!(KernelVersion::parse("6.18.44-fc-v669"), Some(KernelVersion { major: 6, minor: 18 }));
        assert_eq!(KernelVersion::parse("6.1-rc1"), Some(KernelVersion { major: 6, minor: 1 }));
        assert_eq!(KernelVersion::parse("six"), None);
        assert_eq!(KernelVersion::parse("6"), None);
        assert!(KernelVersion::running().is_ok());
    }

    #[test]
    fn default_profile_for_default_caps() {
        let p = docker_profile(
            DOCKER_DEFAULT_PROFILE_JSON,
            &["CAP_CHOWN", "CAP_SYS_CHROOT"],
            KernelVersion { major: 6, minor: 1 },
        )
        .unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let n = names(&p);
        for present in ["read", "arch_prctl", "modify_ldt", "chroot", "ptrace", "clone", "clone3"] {
            assert!(n.iter().any(|x| x == present), "{present}");
        }
        for absent in
            ["mount", "reboot", "riscv_flush_icache", "s390_runtime_instr", "open_by_handle_at", "bpf"]
        {
            assert!(!n.iter().any(|x| x == absent), "{absent}");
        }
        // clone: only the arg-0 masked rule (the s390 one is excluded); clone3: ENOSYS.
        let clone: Vec<_> =
            p.syscalls().iter().flatten().filter(|s| s.names().iter().any(|x| x == "clone")).collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().as_ref().map(|a| a[0].index()), Some(0));
        let clone3 = p.syscalls().iter().flatten().find(|s| s.names() == &["clone3"]).unwrap();
        assert_eq!((clone3.action(), clone3.errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
    }

    #[test]
    fn min_kernel_and_caps() {
        let old =
            docker_profile(DOCKER_DEFAULT_PROFILE_JSON, &[], KernelVersion { major: 4, minor: 4 }).unwrap();
        assert!(!names(&old).iter().any(|x| x == "ptrace"));
        let admin =
            docker_profile(DOCKER_DEFAULT_PROFILE_JSON, &["sys_admin"], KernelVersion { major: 4, minor: 8 })
                .unwrap();
        let n = names(&admin);
        assert!(n.iter().any(|x| x == "ptrace"));
        assert!(n.iter().any(|x| x == "mount"));
        assert!(!admin.syscalls().iter().flatten().any(|s| s.names() == &["clone3"]));
    }

    #[test]
    fn only_the_named_capabilities_matter() {
        let named = profile_capabilities(DOCKER_DEFAULT_PROFILE_JSON).unwrap();
        for c in ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_CHROOT", "CAP_BPF"] {
            assert!(named.iter().any(|n| n == c), "{c} in {named:?}");
        }
        assert!(!named.iter().any(|n| n == "CAP_NET_ADMIN" || n == "CAP_CHOWN"), "{named:?}");
        let k = KernelVersion { major: 6, minor: 1 };
        for full in [
            &["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_CHROOT", "CAP_KILL"][..],
            &["CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_SYS_PTRACE", "CAP_SETUID"][..],
        ] {
            let subset: Vec<&str> = full.iter().copied().filter(|c| named.iter().any(|n| n == c)).collect();
            assert_eq!(
                docker_profile(DOCKER_DEFAULT_PROFILE_JSON, full, k).unwrap(),
                docker_profile(DOCKER_DEFAULT_PROFILE_JSON, &subset, k).unwrap(),
                "{full:?}"
            );
        }
        let one = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["sys_time"]},"excludes":{"caps":["CAP_BPF","CAP_SYS_TIME"]}}]}"#;
        assert_eq!(profile_capabilities(one).unwrap(), ["CAP_BPF", "CAP_SYS_TIME"]);
    }

    #[test]
    fn malformed_profiles() {
        let k = KernelVersion { major: 6, minor: 1 };
        let both = r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}]}"#;
        assert!(matches!(docker_profile(both, &[], k), Err(SeccompError::DockerProfile(_))));
        let both = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#;
        assert!(matches!(docker_profile(both, &[], k), Err(SeccompError::DockerProfile(_))));
        let single =
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(names(&docker_profile(single, &[], k).unwrap()), ["read"]);
        assert!(matches!(docker_profile("{", &[], k), Err(SeccompError::DockerJson(_))));
        let bad_kernel = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"x"}}]}"#;
        assert!(matches!(docker_profile(bad_kernel, &[], k), Err(SeccompError::DockerProfile(_))));
    }
}
