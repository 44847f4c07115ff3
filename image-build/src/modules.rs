//! Choose the kernel modules an image needs: the wanted modules plus everything they depend
//! on, in load order.
//!
//! Dependencies come from each module's ELF `.modinfo` section (`depends=a,b`), the same data
//! `depmod` reads, because the Debian kernel package ships no `modules.dep`. Modules built into
//! the kernel (listed in `modules.builtin`) need nothing and are skipped. Soft dependencies
//! (`softdep=`) are not followed: they name aliases as often as modules.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

/// One module file to put into an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    /// The module name as the kernel knows it (`-` written as `_`), e.g. `virtio_net`.
    pub name: String,
    /// The `.ko` file on the host.
    pub path: PathBuf,
    /// `path` relative to the modules directory, with `/` separators, e.g.
    /// `kernel/fs/overlayfs/overlay.ko`; the same place it goes under `lib/modules/<version>/`.
    pub rel_path: String,
}

/// Errors from [`resolve_modules`].
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Neither a module file nor in `modules.builtin`.
    #[error(
        "kernel module `{name}` is neither built into kernel {version} nor shipped as a module{}",
        needed_by.as_ref().map(|m| format!(" (needed by `{m}`)")).unwrap_or_default()
    )]
    NotFound {
        /// The missing module.
        name: String,
        /// The kernel release (the modules directory's name).
        version: String,
        /// The module that depends on it, if it is not one of the wanted ones.
        needed_by: Option<String>,
    },
    /// The module is only available compressed.
    #[error("kernel module `{name}` is compressed ({}); compressed modules are not supported yet", path.display())]
    Compressed {
        /// The module name.
        name: String,
        /// The compressed file.
        path: PathBuf,
    },
    /// Modules depend on each other in a cycle.
    #[error("kernel modules depend on each other in a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The modules in the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A file or directory could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A module file is not an ELF object with a readable `.modinfo` section.
    #[error("kernel module {}: {reason}", path.display())]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Resolve `wanted` module names (`-` and `_` are equal) against the modules directory
/// `modules_dir` (`…/lib/modules/<version>`), returning the module files to install in load
/// order: each module after all its dependencies, in a deterministic order, without duplicates.
///
/// A wanted module built into the kernel (listed in `modules_dir/modules.builtin`) is skipped
/// silently; a missing `modules.builtin` means nothing is built in. A module that is neither a
/// file under `modules_dir/kernel` nor built in is an error ([`ModuleError::NotFound`]).
pub fn resolve_modules(modules_dir: &Path, wanted: &[String]) -> Result<Vec<ModuleFile>, ModuleError> {
    let version = modules_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| modules_dir.display().to_string());
    let index = index_modules(modules_dir)?;
    let builtin = read_builtin(modules_dir)?;
    let mut resolver = Resolver {
        version,
        index,
        builtin,
        done: HashSet::new(),
        in_progress: Vec::new(),
        order: Vec::new(),
    };
    for name in wanted {
        resolver.visit(&module_name(name), None)?;
    }
    Ok(resolver.order)
}

/// A module name in its `_` form, as the kernel knows it (`virtio-net` → `virtio_net`).
pub use berth_schema::modalias::module_name;

/// Depth-first resolution state.
struct Resolver {
    version: String,
    index: BTreeMap<String, ModuleFile>,
    builtin: HashSet<String>,
    done: HashSet<String>,
    in_progress: Vec<String>,
    order: Vec<ModuleFile>,
}

impl Resolver {
    fn visit(&mut self, name: &str, needed_by: Option<&str>) -> Result<(), ModuleError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = self.in_progress.iter().position(|n| n == name) {
            let mut cycle = self.in_progress[pos..].to_vec();
            cycle.push(name.to_string());
            return Err(ModuleError::Cycle { cycle });
        }
        if self.builtin.contains(name) {
            self.done.insert(name.to_string());
            return Ok(());
        }
        let Some(module) = self.index.get(name).cloned() else {
            return Err(ModuleError::NotFound {
                name: name.to_string(),
                version: self.version.clone(),
                needed_by: needed_by.map(str::to_string),
            });
        };
        if !module.rel_path.ends_with(".ko") {
            return Err(ModuleError::Compressed { name: name.to_string(), path: module.path });
        }
        self.in_progress.push(name.to_string());
        let (depends, soft) = module_prerequisites(&module.path)?;
        for dep in depends {
            self.visit(&dep, Some(name))?;
        }
        // A soft dependency is optional: one this kernel has neither as a module nor built in
        // is left out.
        for pre in soft {
            let target = soft_target(&pre, |n| self.index.contains_key(n) || self.builtin.contains(n));
            // (a soft cycle is no error: the one being resolved comes first)
            if let Some(target) = target.filter(|t| !self.in_progress.contains(t)) {
                self.visit(&target, Some(name))?;
            }
        }
        self.in_progress.pop();
        self.done.insert(name.to_string());
        self.order.push(module);
        Ok(())
    }
}

/// The `key=value` fields of a module's `.modinfo` section, in order.
fn modinfo(path: &Path) -> Result<Vec<(String, String)>, ModuleError> {
    let data = fs::read(path).map_err(|source| ModuleError::Io { path: path.to_path_buf(), source })?;
    let bad = |reason: String| ModuleError::BadModule { path: path.to_path_buf(), reason };
    let file = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let section = file.section_by_name(".modinfo").ok_or_else(|| bad("no .modinfo section".to_string()))?;
    let modinfo = section.data().map_err(|e| bad(format!("unreadable .modinfo section: {e}")))?;
    Ok(modinfo
        .split(|&b| b == 0)
        .filter_map(|field| {
            let field = String::from_utf8_lossy(field);
            field.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

/// The module names in the `depends=` field of a module's `.modinfo` section, in the order
/// written there, normalized with [`module_name`].
pub fn module_depends(path: &Path) -> Result<Vec<String>, ModuleError> {
    Ok(modinfo(path)?
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',').map(str::trim).filter(|d| !d.is_empty()).map(module_name).collect::<Vec<_>>()
        })
        .collect())
}

/// What a module needs loaded before it: its `depends=` module names, and the names of its
/// soft `pre:` dependencies (`softdep=pre: crc32c`), both normalized with [`module_name`]. A
/// soft dependency may name a crypto algorithm rather than a module: [`soft_target`].
pub fn module_prerequisites(path: &Path) -> Result<(Vec<String>, Vec<String>), ModuleError> {
    let info = modinfo(path)?;
    let depends = info
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|d| !d.is_empty()).map(module_name))
        .collect();
    let mut soft = Vec::new();
    for (_, v) in info.iter().filter(|(k, _)| k == "softdep") {
        let mut pre = false;
        for token in v.split_whitespace() {
            match token.strip_suffix(':') {
                Some(kind) => pre = kind == "pre",
                None if pre => soft.push(module_name(token)),
                None => {}
            }
        }
    }
    Ok((depends, soft))
}

/// The module that meets a soft dependency `name`: a module of that name, else the crypto
/// API's generic implementation of the algorithm it names (`crc32c` → `crc32c_generic`), as
/// `exists` tells; `None` when the kernel has neither.
pub fn soft_target(name: &str, exists: impl Fn(&str) -> bool) -> Option<String> {
    [name.to_string(), format!("{name}_generic")].into_iter().find(|n| exists(n))
}

/// The device aliases (`alias=` fields) of a module, in the order written there.
pub fn module_aliases(path: &Path) -> Result<Vec<String>, ModuleError> {
    Ok(modinfo(path)?.into_iter().filter(|(k, _)| k == "alias").map(|(_, v)| v).collect())
}

/// depmod's `modules.alias` for `files` (in their load order): every alias of every module,
/// so PID 1 can find the driver a device needs among the packed ones.
pub fn alias_table<'a>(
    files: impl IntoIterator<Item = &'a ModuleFile>,
) -> Result<berth_schema::modalias::AliasTable, ModuleError> {
    use berth_schema::modalias::{normalize, Alias, AliasTable};
    let mut aliases = Vec::new();
    for f in files {
        for pattern in module_aliases(&f.path)? {
            aliases.push(Alias { pattern: normalize(&pattern), module: f.name.clone() });
        }
    }
    Ok(AliasTable { aliases })
}

/// depmod's `modules.dep` for `files` (in their load order): each file and every file it needs,
/// directly or not, in load order. Dependencies outside `files` are not listed (built in).
pub fn dep_table<'a>(
    files: impl IntoIterator<Item = &'a ModuleFile>,
) -> Result<berth_schema::modalias::ModuleDeps, ModuleError> {
    let files: Vec<&ModuleFile> = files.into_iter().collect();
    let index = |name: &str| files.iter().position(|f| f.name == name);
    let mut direct: Vec<Vec<usize>> = Vec::with_capacity(files.len());
    for f in &files {
        let (depends, soft) = module_prerequisites(&f.path)?;
        let soft = soft.iter().filter_map(|s| soft_target(s, |n| index(n).is_some()));
        direct.push(depends.into_iter().chain(soft).filter_map(|d| index(&d)).collect());
    }
    let mut entries = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let mut needed: Vec<usize> = Vec::new();
        let mut stack = direct[i].clone();
        while let Some(d) = stack.pop() {
            if !needed.contains(&d) {
                needed.push(d);
                stack.extend(direct[d].iter().copied());
            }
        }
        // Load order is the files' order: a dependency always comes before what needs it.
        needed.sort_unstable();
        entries.push((f.rel_path.clone(), needed.into_iter().map(|d| files[d].rel_path.clone()).collect()));
    }
    Ok(berth_schema::modalias::ModuleDeps { entries })
}

/// Suffixes of module files, uncompressed first.
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// Every module file under `modules_dir/kernel`, by normalized name. If a name occurs twice,
/// an uncompressed file wins, then the first relative path in byte order.
fn index_modules(modules_dir: &Path) -> Result<BTreeMap<String, ModuleFile>, ModuleError> {
    let mut found: Vec<(String, ModuleFile, usize)> = Vec::new();
    let root = modules_dir.join("kernel");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A modules directory without `kernel/` has only built-in modules.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => break,
            Err(source) => return Err(ModuleError::Io { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| ModuleError::Io { path: dir.clone(), source })?;
            let path = entry.path();
            let file_type =
                entry.file_type().map_err(|source| ModuleError::Io { path: path.clone(), source })?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Some((rank, stem)) = MODULE_SUFFIXES
                .iter()
                .enumerate()
                .find_map(|(i, s)| file_name.strip_suffix(s).map(|stem| (i, stem)))
            else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(modules_dir) else {
                continue;
            };
            let rel_path =
                rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let name = module_name(stem);
            found.push((name.clone(), ModuleFile { name, path, rel_path }, rank));
        }
    }
    found.sort_by(|a, b| {
        (a.0.as_str(), a.2, a.1.rel_path.as_str()).cmp(&(b.0.as_str(), b.2, b.1.rel_path.as_str()))
    });
    let mut index = BTreeMap::new();
    for (name, module, _) in found {
        index.entry(name).or_insert(module);
    }
    Ok(index)
}

/// The normalized names listed in `modules_dir/modules.builtin` (lines like
/// `kernel/fs/ext4/ext4.ko`); empty if the file does not exist.
fn read_builtin(modules_dir: &Path) -> Result<HashSet<String>, ModuleError> {
    let path = modules_dir.join("modules.builtin");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(source) => return Err(ModuleError::Io { path, source }),
    };
    let mut names = HashSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file_name = line.rsplit('/').next().unwrap_or(line);
        let stem = MODULE_SUFFIXES.iter().find_map(|s| file_name.strip_suffix(s)).unwrap_or(file_name);
        names.insert(module_name(stem));
    }
    Ok(names)
}
