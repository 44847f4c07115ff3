//! The filesystem tools a data disk needs at boot (`[storage]`): e2fsprogs' `mke2fs` and
//! `e2fsck`, taken from the build machine with every shared library they load and the dynamic
//! loader, packed under [`TOOLS_DIR`](berth_schema::plan::TOOLS_DIR) in the initramfs.
//!
//! PID 1 runs them as `LOADER --library-path TOOLS_DIR/lib TOOLS_DIR/bin/TOOL`, so they need no
//! `/lib` in the machine and never see a container's files. Why e2fsprogs rather than a format
//! container or an ext4 writer of our own: docs/architecture.md ("The data disk").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::init_binary::needed_libraries;

/// The tools packed, by the name PID 1 runs.
pub const TOOLS: &[&str] = &["mke2fs", "e2fsck"];

/// Where the build machine's executables are looked for.
const BIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Where shared libraries are looked for (Debian's multiarch directories first).
const LIB_DIRS: &[&str] =
    &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/// mke2fs's configuration (the ext4 feature set), packed beside the tools when present.
const MKE2FS_CONF: &str = "/etc/mke2fs.conf";

/// Files to pack: destination (relative to the tools directory) → source on this machine.
#[derive(Debug, Default)]
pub struct ToolSet {
    /// `bin/NAME`, `lib/SONAME`, `etc/mke2fs.conf` → the file to read.
    pub files: BTreeMap<String, PathBuf>,
    /// The dynamic loader's file name in `lib/`, when the tools are dynamically linked.
    pub loader: Option<String>,
}

/// Finds the tools and the closure of their libraries on this machine.
pub fn collect() -> Result<ToolSet> {
    let mut set = ToolSet::default();
    let mut queue: Vec<PathBuf> = Vec::new();
    for tool in TOOLS {
        let path = BIN_DIRS.iter().map(|d| Path::new(d).join(tool)).find(|p| p.is_file()).ok_or_else(|| {
            anyhow!("[storage] needs `{tool}` on this machine to format and check the data disk at boot; install the Debian package e2fsprogs")
        })?;
        set.files.insert(format!("bin/{tool}"), path.clone());
        queue.push(path);
    }
    while let Some(path) = queue.pop() {
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if let Some(interp) = interpreter(&data) {
            let name = Path::new(&interp)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| anyhow!("{}: odd program interpreter {interp}", path.display()))?;
            if set.loader.as_ref().is_some_and(|l| *l != name) {
                bail!("{}: the e2fsprogs tools use two different loaders", path.display());
            }
            set.loader = Some(name.clone());
            set.files.entry(format!("lib/{name}")).or_insert_with(|| PathBuf::from(&interp));
        }
        let libs = needed_libraries(&data)
            .with_context(|| format!("reading the libraries {} needs", path.display()))?
            .unwrap_or_default();
        for lib in libs {
            let key = format!("lib/{lib}");
            if set.files.contains_key(&key) {
                continue;
            }
            let found =
                LIB_DIRS.iter().map(|d| Path::new(d).join(&lib)).find(|p| p.is_file()).ok_or_else(|| {
                    anyhow!("{} needs {lib}, which is not in {}", path.display(), LIB_DIRS.join(", "))
                })?;
            set.files.insert(key, found.clone());
            queue.push(found);
        }
    }
    if Path::new(MKE2FS_CONF).is_file() {
        set.files.insert("etc/mke2fs.conf".to_string(), PathBuf::from(MKE2FS_CONF));
    }
    Ok(set)
}

/// The `PT_INTERP` path of an ELF file, if it has one.
fn interpreter(data: &[u8]) -> Option<String> {
    use object::elf::{FileHeader64, PT_INTERP};
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::LittleEndian as LE;
    let header = FileHeader64::<LE>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    for ph in header.program_headers(endian, data).ok()? {
        if ph.p_type(endian) == PT_INTERP {
            let bytes = ph.data(endian, data).ok()?;
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            return Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_e2fsprogs_with_its_libraries() {
        let set = collect().unwrap();
        assert!(set.files.contains_key("bin/mke2fs"));
        assert!(set.files.contains_key("bin/e2fsck"));
        let loader = set.loader.clone().expect("Debian's e2fsprogs is dynamically linked");
        assert!(set.files.contains_key(&format!("lib/{loader}")));
        assert!(set.files.contains_key("lib/libext2fs.so.2"), "{:?}", set.files.keys());
        assert!(set.files.contains_key("lib/libc.so.6"));
    }
}
