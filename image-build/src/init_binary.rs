//! Finding the PID 1 binary to pack, and making sure it is static.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::Object;

/// The target the init is built for.
pub const INIT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// How to build the init, for error messages.
pub const BUILD_HINT: &str =
    "build it with `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p berth-init -p berth-updater -p berth-metadata -p berth-timesync --target x86_64-unknown-linux-gnu`, or name it with --init / BERTH_INIT";

/// The init binary: `explicit`, else `$BERTH_INIT`, else `berth-init` beside this executable,
/// else the static build in the cargo target directory this executable came from.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else if let Some(p) = std::env::var_os("BERTH_INIT").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(p));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("berth-init"));
            // target/{debug,release}[/deps] → target/<triple>/release/berth-init
            for up in [dir.parent(), dir.parent().and_then(Path::parent)].into_iter().flatten() {
                candidates.push(up.join(INIT_TARGET).join("release").join("berth-init"));
            }
        }
    }
    let mut refused = Vec::new();
    for c in &candidates {
        if !c.is_file() {
            continue;
        }
        match check_static(c) {
            Ok(()) => return Ok(c.clone()),
            Err(e) => refused.push(format!("{e:#}")),
        }
    }
    if explicit.is_some() || !refused.is_empty() {
        let why = if refused.is_empty() {
            format!("{} does not exist", candidates[0].display())
        } else {
            refused.join("; ")
        };
        bail!("no usable init binary: {why}; {BUILD_HINT}");
    }
    bail!(
        "no init binary found (looked at {}); {BUILD_HINT}",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// The updater packed for `[update]`: `$BERTH_UPDATER`, else `berth-updater` beside the init
/// binary (the same build makes both), checked to be static.
pub fn find_updater(init: &Path) -> Result<PathBuf> {
    find_helper(init, "berth-updater", "BERTH_UPDATER", "[update]")
}

/// The cloud metadata helper packed for `[system] metadata`: `$BERTH_METADATA`, else
/// `berth-metadata` beside the init binary, checked to be static.
pub fn find_metadata_helper(init: &Path) -> Result<PathBuf> {
    find_helper(init, berth_schema::metadata::HELPER, "BERTH_METADATA", "[system] metadata")
}

/// The time helper packed for `[system] ntp`: `$BERTH_TIMESYNC`, else `berth-timesync`
/// beside the init binary, checked to be static.
pub fn find_time_helper(init: &Path) -> Result<PathBuf> {
    find_helper(init, berth_schema::time_sync::HELPER, "BERTH_TIMESYNC", "[system] ntp")
}

/// A helper binary PID 1 runs: `$VAR`, else `name` beside the init binary; static.
fn find_helper(init: &Path, name: &str, var: &str, needed_by: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => init.with_file_name(name),
    };
    if !path.is_file() {
        bail!(
            "{needed_by} needs {name}, {} (beside the init binary, or ${var}); build it with \
             `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p {name} --target {INIT_TARGET}`",
            path.display()
        );
    }
    check_static(&path)?;
    Ok(path)
}

/// Fails unless `path` is an x86-64 ELF executable with no program interpreter and no
/// `DT_NEEDED` libraries — a binary the kernel can run as `/init` with nothing else present.
pub fn check_static(path: &Path) -> Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF executable", path.display()))?;
    if file.architecture() != object::Architecture::X86_64 {
        bail!("{} is not an x86-64 binary", path.display());
    }
    if file.section_by_name(".interp").is_some() {
        bail!("{} is dynamically linked (it has a program interpreter)", path.display());
    }
    if let Ok(Some(libs)) = needed_libraries(&data) {
        if !libs.is_empty() {
            bail!("{} needs shared libraries ({})", path.display(), libs.join(", "));
        }
    }
    Ok(())
}

/// The `DT_NEEDED` entries of a 64-bit little-endian ELF file.
pub(crate) fn needed_libraries(data: &[u8]) -> Result<Option<Vec<String>>> {
    use object::elf::{FileHeader64, DT_NEEDED};
    use object::read::elf::{Dyn, FileHeader};
    use object::LittleEndian as LE;
    let header = FileHeader64::<LE>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let Some((dynamic, strings_index)) = sections.dynamic(endian, data)? else {
        return Ok(None);
    };
    let strings = sections.strings(endian, data, strings_index)?;
    let mut out = Vec::new();
    for d in dynamic {
        if d.tag32(endian) == Some(DT_NEEDED) {
            let name = d.string(endian, strings)?;
            out.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Some(out))
}
