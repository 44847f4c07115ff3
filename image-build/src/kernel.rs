//! The kernel an image boots: one of Debian's kernel packages (the cloud kernel, or the generic
//! one that has physical machines' drivers: [`DebianFlavor`]), fetched once with `apt-get
//! download` and cached, or an already extracted kernel tree — or a kernel image given by path
//! (`[kernel] path`), which comes without modules ([`BootKernel`]).
//!
//! Cache layout: `<cache_dir>/kernels/<version>/` holds the `dpkg-deb -x` of the package
//! `linux-image-<version>` (so `boot/vmlinuz-<version>` and `lib/modules/<version>/`), plus the
//! marker file [`COMPLETE_MARKER`], written last. A fetch extracts into a temporary directory
//! inside `<cache_dir>/kernels/` and renames it into place, so an interrupted fetch is never
//! used. Once any complete kernel of a flavor is cached (the flavor is the release's suffix:
//! `-cloud-amd64`, `-amd64`), it is used without touching the network: a rebuild never changes
//! the kernel silently (remove the cache directory to move to a newer kernel).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The Debian meta package that depends on the current cloud kernel package.
pub const DEBIAN_CLOUD_META_PACKAGE: &str = "linux-image-cloud-amd64";
/// The Debian meta package that depends on the current generic kernel package.
pub const DEBIAN_GENERIC_META_PACKAGE: &str = "linux-image-amd64";

/// Which of Debian's amd64 kernels: both come from one source at one ABI, with different
/// configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebianFlavor {
    /// `linux-image-cloud-amd64`: virtio, Hyper-V, VMware and the clouds' devices; no drivers
    /// for physical machines (no AHCI, no USB, none of the common wired NICs).
    Cloud,
    /// `linux-image-amd64`: every machine's drivers; ext4 and crc32c are modules there.
    Generic,
}

impl DebianFlavor {
    /// The meta package that depends on this flavor's current kernel package.
    pub fn meta_package(self) -> &'static str {
        match self {
            DebianFlavor::Cloud => DEBIAN_CLOUD_META_PACKAGE,
            DebianFlavor::Generic => DEBIAN_GENERIC_META_PACKAGE,
        }
    }

    /// The flavor of a Debian kernel release, by its suffix: `-cloud-amd64` (`6.1.0-57-cloud-amd64`,
    /// `6.12.41+deb13-cloud-amd64`), else `-amd64` right after the version (`6.1.0-57-amd64`,
    /// `6.12.41+deb13-amd64`). Other flavors (`-rt-amd64`) are none.
    pub fn of_release(release: &str) -> Option<DebianFlavor> {
        let rest = release.strip_suffix("-amd64")?;
        if rest.ends_with("-cloud") {
            return Some(DebianFlavor::Cloud);
        }
        // What precedes `-amd64` is the version (`6.1.0-57`, `6.12.41+deb13`), not a flavor
        // word: its last part starts with a digit.
        let last = rest.rsplit('-').next().unwrap_or(rest);
        last.starts_with(|c: char| c.is_ascii_digit()).then_some(DebianFlavor::Generic)
    }

    /// For messages: "the Debian cloud kernel".
    pub fn describe(self) -> &'static str {
        match self {
            DebianFlavor::Cloud => "the Debian cloud kernel",
            DebianFlavor::Generic => "the Debian generic kernel",
        }
    }
}

impl From<berth_schema::config::KernelSource> for DebianFlavor {
    fn from(source: berth_schema::config::KernelSource) -> DebianFlavor {
        match source {
            berth_schema::config::KernelSource::Debian => DebianFlavor::Cloud,
            berth_schema::config::KernelSource::DebianGeneric => DebianFlavor::Generic,
        }
    }
}

/// The file that marks a cached kernel directory as completely extracted. It records the
/// package name, version and the SHA-256 of the `.deb` it came from.
pub const COMPLETE_MARKER: &str = ".berth-complete";

/// A kernel image and its modules tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel release, as `uname -r` prints it (e.g. `6.1.0-40-cloud-amd64`).
    pub version: String,
    /// The bootable kernel image (a bzImage).
    pub vmlinuz: PathBuf,
    /// The modules tree of this kernel, `…/lib/modules/<version>`.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// The `.config` the kernel package ships beside the image (`boot/config-<version>`).
    pub fn config_file(&self) -> PathBuf {
        self.vmlinuz.with_file_name(format!("config-{}", self.version))
    }

    /// This kernel as `berth build` packs it: with its modules, its configuration from
    /// [`Kernel::config_file`].
    pub fn boot_kernel(&self) -> BootKernel {
        BootKernel {
            release: self.version.clone(),
            vmlinuz: self.vmlinuz.clone(),
            modules_dir: Some(self.modules_dir.clone()),
            config: self.config_file(),
            description: format!(
                "{} in {}",
                DebianFlavor::of_release(&self.version).map_or("the Debian kernel", DebianFlavor::describe),
                kernel_cache_root(self)
            ),
        }
    }
}

/// The kernel an image boots, whichever its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootKernel {
    /// The kernel release (`uname -r`), for the seccomp filters and the modules' directory.
    pub release: String,
    /// The kernel image (a bzImage).
    pub vmlinuz: PathBuf,
    /// Its modules tree; `None` for a `[kernel] path` kernel, which gets no modules.
    pub modules_dir: Option<PathBuf>,
    /// Where its configuration is read from: a `.config` (plain or gzip'd), or the bzImage
    /// itself (an embedded configuration, `CONFIG_IKCONFIG`).
    pub config: PathBuf,
    /// The kernel for people, in messages: "the Debian cloud kernel in DIR", "the kernel PATH".
    pub description: String,
}

/// A kernel image given by path (`[kernel] path`): its release is read from the bzImage
/// header; its configuration from `config`, else from the image (which then needs
/// `CONFIG_IKCONFIG`). It comes without modules.
pub fn path_kernel(vmlinuz: &Path, config: Option<&Path>) -> Result<BootKernel> {
    let mut head = Vec::new();
    {
        use std::io::Read;
        let file = fs::File::open(vmlinuz).with_context(|| format!("cannot open {}", vmlinuz.display()))?;
        file.take(64 * 1024)
            .read_to_end(&mut head)
            .with_context(|| format!("reading {}", vmlinuz.display()))?;
    }
    if !crate::bzimage::is_bzimage(&head) {
        bail!("{} is not an x86 kernel image (bzImage): it has no setup header", vmlinuz.display());
    }
    let release = crate::bzimage::release(&head)
        .ok_or_else(|| anyhow!("{}: the bzImage header has no kernel version string", vmlinuz.display()))?;
    Ok(BootKernel {
        description: format!("the kernel {}", vmlinuz.display()),
        release,
        vmlinuz: vmlinuz.to_path_buf(),
        modules_dir: None,
        config: config.unwrap_or(vmlinuz).to_path_buf(),
    })
}

/// The berth cache directory: `$BERTH_CACHE_DIR`, else `$XDG_CACHE_HOME/berth`, else
/// `$HOME/.cache/berth` (empty variables count as unset; with no `$HOME`, `.cache/berth`
/// relative to the working directory).
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("BERTH_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("berth");
    }
    var("HOME").map(PathBuf::from).unwrap_or_default().join(".cache").join("berth")
}

/// Return the Debian cloud kernel (`linux-image-cloud-amd64`): [`debian_kernel`] of
/// [`DebianFlavor::Cloud`].
pub fn debian_cloud_kernel(cache_dir: &Path, progress: &dyn Fn(&str)) -> Result<Kernel> {
    debian_kernel(DebianFlavor::Cloud, cache_dir, progress)
}

/// Return Debian's kernel of `flavor`, from the cache under `cache_dir` if any complete kernel
/// of that flavor is there (the newest by Debian version order), else by downloading it with
/// `apt-get download` and extracting it with `dpkg-deb -x`.
///
/// `progress` receives one human-readable line per step; a cache hit reports
/// `using cached kernel …` and runs no command at all, while a download reports each command
/// it runs (`running apt-get download …`).
pub fn debian_kernel(flavor: DebianFlavor, cache_dir: &Path, progress: &dyn Fn(&str)) -> Result<Kernel> {
    if let Some(kernel) = cached_debian_kernel(flavor, cache_dir)? {
        progress(&format!("using cached kernel {} from {}", kernel.version, kernel_cache_root(&kernel)));
        return Ok(kernel);
    }
    fetch_debian_kernel(flavor, cache_dir, progress)
}

/// The newest complete kernel of `flavor` in the cache under `cache_dir`, if any; never
/// touches the network. Incomplete directories (no [`COMPLETE_MARKER`]) are ignored.
pub fn cached_debian_kernel(flavor: DebianFlavor, cache_dir: &Path) -> Result<Option<Kernel>> {
    let kernels = cache_dir.join("kernels");
    let entries = match fs::read_dir(&kernels) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading kernel cache {}", kernels.display())),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading kernel cache {}", kernels.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.')
            || DebianFlavor::of_release(&name) != Some(flavor)
            || !entry.path().join(COMPLETE_MARKER).is_file()
        {
            continue;
        }
        versions.push(name);
    }
    versions.sort_by(|a, b| debian_version_cmp(a, b).then_with(|| a.cmp(b)));
    match versions.pop() {
        Some(version) => {
            let root = kernels.join(&version);
            kernel_in_tree(&root, &version).map(Some)
        }
        None => Ok(None),
    }
}

/// Use an already extracted kernel package tree `dir` (containing `boot/vmlinuz-<version>`
/// and `lib/modules/<version>/` or `usr/lib/modules/<version>/`). If several kernels are in
/// it, the newest by Debian version order that has both parts is used.
pub fn kernel_from_dir(dir: &Path) -> Result<Kernel> {
    let boot = dir.join("boot");
    let entries = fs::read_dir(&boot).with_context(|| format!("reading kernel tree {}", boot.display()))?;
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", boot.display()))?;
        if let Some(version) = entry.file_name().to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
            if modules_dir_in_tree(dir, version).is_some() {
                versions.push(version.to_string());
            }
        }
    }
    versions.sort_by(|a, b| debian_version_cmp(a, b).then_with(|| a.cmp(b)));
    let version = versions.pop().ok_or_else(|| {
        anyhow!(
            "no kernel in {}: expected boot/vmlinuz-<version> together with \
             lib/modules/<version>/ (the contents of a linux-image package, `dpkg-deb -x`)",
            dir.display()
        )
    })?;
    kernel_in_tree(dir, &version)
}

/// Compare two Debian version strings (or kernel releases) like `dpkg --compare-versions`:
/// an optional `epoch:` first, then alternating non-digit parts (letters sort before
/// non-letters, `~` before everything, even the end) and numeric parts.
pub fn debian_version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn split_epoch(v: &str) -> (u64, &str) {
        match v.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(u64::MAX), rest)
            }
            _ => (0, v),
        }
    }
    let (ea, ra) = split_epoch(a);
    let (eb, rb) = split_epoch(b);
    ea.cmp(&eb).then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// dpkg's `verrevcmp`.
fn verrevcmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(b'~') => -1,
            Some(c) => i32::from(c) + 256,
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = std::cmp::Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == std::cmp::Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return std::cmp::Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return std::cmp::Ordering::Less;
        }
        if first_diff != std::cmp::Ordering::Equal {
            return first_diff;
        }
    }
    std::cmp::Ordering::Equal
}

/// The directory a cached kernel lives in, for messages.
fn kernel_cache_root(kernel: &Kernel) -> String {
    kernel
        .vmlinuz
        .parent()
        .and_then(Path::parent)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| kernel.vmlinuz.display().to_string())
}

/// `<root>/lib/modules/<version>` or `<root>/usr/lib/modules/<version>` (merged /usr).
fn modules_dir_in_tree(root: &Path, version: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"].iter().map(|base| root.join(base).join(version)).find(|p| p.is_dir())
}

/// The kernel `version` inside the extracted tree `root`, checking both parts exist.
fn kernel_in_tree(root: &Path, version: &str) -> Result<Kernel> {
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    if !vmlinuz.is_file() {
        bail!("kernel image {} is missing", vmlinuz.display());
    }
    let modules_dir = modules_dir_in_tree(root, version).ok_or_else(|| {
        anyhow!("kernel {version} in {} has no lib/modules/{version}/ directory", root.display())
    })?;
    Ok(Kernel { version: version.to_string(), vmlinuz, modules_dir })
}

/// Download Debian's kernel of `flavor` into the cache and return it.
fn fetch_debian_kernel(flavor: DebianFlavor, cache_dir: &Path, progress: &dyn Fn(&str)) -> Result<Kernel> {
    let kernels = cache_dir.join("kernels");
    fs::create_dir_all(&kernels).with_context(|| format!("creating kernel cache {}", kernels.display()))?;
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&kernels)
        .with_context(|| format!("creating a temporary directory in {}", kernels.display()))?;

    let meta = flavor.meta_package();
    let meta_deb = apt_get_download(meta, None, download.path(), progress)?;
    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&meta_deb).arg("Depends"), &|_| None)?;
    let (package, constraint) = kernel_package_from_depends(&depends).ok_or_else(|| {
        anyhow!(
            "{} (from {}) depends on no linux-image-<version> package: Depends: {}",
            meta,
            meta_deb.display(),
            depends.trim()
        )
    })?;
    let version = package
        .strip_prefix("linux-image-")
        .map(|v| v.strip_suffix("-unsigned").unwrap_or(v))
        .unwrap_or(&package)
        .to_string();

    if DebianFlavor::of_release(&version) != Some(flavor) {
        bail!(
            "{meta} depends on {package}, whose release {version} is not {} (expected VERSION-{}); \
             the cache would not find it again",
            flavor.describe(),
            if flavor == DebianFlavor::Cloud { "cloud-amd64" } else { "amd64" },
        );
    }
    let target = kernels.join(&version);
    if target.join(COMPLETE_MARKER).is_file() {
        // Unreachable through `debian_kernel` unless another process fetched it
        // meanwhile; fine either way.
        return kernel_in_tree(&target, &version);
    }

    let deb = apt_get_download(&package, constraint.as_deref(), download.path(), progress)?;
    let package_version = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"), &|_| None)?;
    let digest = sha256_file(&deb)?;

    let staging = tempfile::Builder::new()
        .prefix(&format!(".extract-{version}-"))
        .tempdir_in(&kernels)
        .with_context(|| format!("creating a temporary directory in {}", kernels.display()))?;
    progress(&format!("running dpkg-deb -x {}", display_name(&deb)));
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(staging.path()), &|_| None)?;
    kernel_in_tree(staging.path(), &version)
        .with_context(|| format!("checking the contents of {}", deb.display()))?;
    let marker = staging.path().join(COMPLETE_MARKER);
    fs::write(&marker, format!("package={package}\nversion={}\nsha256={digest}\n", package_version.trim()))
        .with_context(|| format!("writing {}", marker.display()))?;

    // A leftover incomplete directory (from an older, non-atomic layout) is in the way.
    if target.exists() && !target.join(COMPLETE_MARKER).is_file() {
        fs::remove_dir_all(&target)
            .with_context(|| format!("removing incomplete kernel {}", target.display()))?;
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, &target) {
        // Lost a race with another fetch: use its copy if it is complete.
        let _ = fs::remove_dir_all(&staged);
        if !target.join(COMPLETE_MARKER).is_file() {
            return Err(e).with_context(|| format!("moving {} to {}", staged.display(), target.display()));
        }
    }
    progress(&format!("cached kernel {version} in {}", target.display()));
    kernel_in_tree(&target, &version)
}

/// `apt-get download PACKAGE[=VERSION]` in `dir`; returns the downloaded `.deb`.
fn apt_get_download(
    package: &str,
    version: Option<&str>,
    dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<PathBuf> {
    let spec = match version {
        Some(v) => format!("{package}={v}"),
        None => package.to_string(),
    };
    progress(&format!("running apt-get download {spec}"));
    run(Command::new("apt-get").arg("download").arg(&spec).current_dir(dir), &apt_hint)?;
    let prefix = format!("{package}_");
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(OsStr::to_str).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .collect();
    debs.sort();
    debs.pop().ok_or_else(|| {
        anyhow!("`apt-get download {spec}` succeeded but left no {prefix}*.deb in {}", dir.display())
    })
}

/// Pick the versioned kernel package out of a `Depends` field: the first alternative named
/// `linux-image-<digit>…`, with its version if the constraint is `(= VERSION)`.
///
/// Tolerates alternatives (`a | b`), version constraints, architecture qualifiers (`:amd64`)
/// and extra dependencies (e.g. on initramfs tools).
pub fn kernel_package_from_depends(depends: &str) -> Option<(String, Option<String>)> {
    for alternative in depends.split([',', '|']) {
        let alternative = alternative.trim();
        let name_end = alternative
            .find(|c: char| c.is_whitespace() || c == '(' || c == ':' || c == '[')
            .unwrap_or(alternative.len());
        let name = &alternative[..name_end];
        let is_kernel = name
            .strip_prefix("linux-image-")
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| c.is_ascii_digit());
        if !is_kernel {
            continue;
        }
        let version = alternative
            .split_once('(')
            .and_then(|(_, c)| c.split_once(')'))
            .and_then(|(c, _)| c.trim().strip_prefix('='))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        return Some((name.to_string(), version));
    }
    None
}

/// The fix to suggest for a failed `apt-get download`, from its stderr.
fn apt_hint(stderr: &str) -> Option<String> {
    let hint = if stderr.contains("Unable to locate package") || stderr.contains("was not found") {
        "the package index is missing or stale: run `apt-get update` (as root) first; \
         this needs a Debian host (bookworm) with the main and security archives in its apt \
         sources"
    } else if stderr.contains("Failed to fetch")
        || stderr.contains("Could not resolve")
        || stderr.contains("Temporary failure")
    {
        "the package archive is unreachable: check the network and proxy settings, or run \
         `apt-get update` if the index is old and the file has moved"
    } else {
        "check that `apt-get download` works on this host (Debian with apt sources set up)"
    };
    Some(hint.to_string())
}

/// Run a command; on failure the error names the command, its status and stderr, and the fix
/// `hint` suggests for that stderr, if any.
fn run(cmd: &mut Command, hint: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    let output = cmd.output().with_context(|| {
        format!("could not run `{shown}` (is it installed? it comes with apt and dpkg on Debian)")
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut msg = format!("`{shown}` failed ({}): {}", output.status, stderr.trim());
        if let Some(hint) = hint(&stderr) {
            msg.push_str("\nhint: ");
            msg.push_str(&hint);
        }
        bail!(msg);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_names_its_flavor() {
        assert_eq!(DebianFlavor::of_release("6.1.0-57-cloud-amd64"), Some(DebianFlavor::Cloud));
        assert_eq!(DebianFlavor::of_release("6.1.0-57-amd64"), Some(DebianFlavor::Generic));
        assert_eq!(DebianFlavor::of_release("6.1.0-57-rt-amd64"), None);
        assert_eq!(DebianFlavor::of_release("6.1.0-57-rt-amd64"), None);
        assert_eq!(DebianFlavor::of_release("6.12.41+deb13-amd64"), Some(DebianFlavor::Generic));
        assert_eq!(DebianFlavor::of_release("6.12.41+deb13-cloud-amd64"), Some(DebianFlavor::Cloud));
        assert_eq!(DebianFlavor::of_release("6.1.0"), None);
        assert_eq!(DebianFlavor::Generic.meta_package(), "linux-image-amd64");
    }
}
