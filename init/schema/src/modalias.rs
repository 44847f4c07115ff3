//! Drivers by device: the `modules.alias` table (depmod's format, `alias PATTERN MODULE` per
//! line, in `modules.order` order), and kmod's matching of a device's modalias against it.
//! The builder writes the table for the modules it packs (Debian's packages ship none: depmod
//! runs at install); PID 1 reads it to load what each device needs. Pure: unit tested.
//!
//! Matching is kmod's (`libkmod` `index_searchwild`): every pattern for which `fnmatch(3)` with
//! no flags matches the modalias — `*`, `?` and bracket classes (`[0-2]`, `[!a]`) — all of them,
//! in table order. Both sides are normalised first as kmod's `alias_normalize` does: `-`
//! becomes `_` except inside brackets.

use std::fmt;

/// One `alias` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The pattern, normalised.
    pub pattern: String,
    /// The module's name (`_` form).
    pub module: String,
}

/// A `modules.alias` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasTable {
    /// The aliases, in the order the modules load (`modules.order`).
    pub aliases: Vec<Alias>,
}

/// `-` as `_`, outside bracket classes (kmod's `alias_normalize`).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_class = false;
    for c in text.chars() {
        match c {
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            _ => {}
        }
        out.push(if c == '-' && !in_class { '_' } else { c });
    }
    out
}

/// A module name in its `_` form (`xhci-pci` → `xhci_pci`).
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// `fnmatch(pattern, text, 0)`: `*` any run, `?` any one character, `[...]` a class (ranges,
/// `!` or `^` to negate; a `]` first is literal); no escapes (kmod's aliases have none). An
/// unclosed `[` is a literal `[`.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative glob matching with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p, pi, t[ti]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // Unclosed: a literal `[`.
                None => (t[ti] == '[').then_some(pi + 1),
            },
            Some(&c) => (c == t[ti]).then_some(pi + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((spi, sti))) => {
                // Let the last `*` take one more character.
                pi = spi + 1;
                ti = sti + 1;
                star = Some((spi, sti + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The class starting at `p[at]` (a `[`): whether `c` is in it, and the index after it;
/// `None` when it is not closed.
fn class(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let &lo = p.get(i)?;
        if lo == ']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            found |= lo <= c && c <= hi;
            i += 3;
        } else {
            found |= lo == c;
            i += 1;
        }
    }
}

impl AliasTable {
    /// Reads `modules.alias` text (comments and blank lines skipped; other lines must be
    /// `alias PATTERN MODULE`).
    pub fn parse(text: &str) -> Result<AliasTable, String> {
        let mut aliases = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => {
                    aliases.push(Alias { pattern: normalize(pattern), module: module_name(module) })
                }
                _ => return Err(format!("modules.alias:{}: not `alias PATTERN MODULE`: {line}", n + 1)),
            }
        }
        Ok(AliasTable { aliases })
    }

    /// The modules for a device's `modalias`, in table order, each once.
    pub fn modules_for(&self, modalias: &str) -> Vec<&str> {
        let key = normalize(modalias.trim());
        let mut out: Vec<&str> = Vec::new();
        for a in &self.aliases {
            if fnmatch(&a.pattern, &key) && !out.contains(&a.module.as_str()) {
                out.push(&a.module);
            }
        }
        out
    }
}

impl fmt::Display for AliasTable {
    /// depmod's `modules.alias`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# Aliases extracted from modules themselves.")?;
        for a in &self.aliases {
            writeln!(f, "alias {} {}", a.pattern, a.module)?;
        }
        Ok(())
    }
}

/// A `modules.dep` table: each packed module's file (relative to `/lib/modules/RELEASE/`)
/// and the files it needs, in load order (each before the modules that need it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleDeps {
    /// `(file, its dependencies' files)`, in load order.
    pub entries: Vec<(String, Vec<String>)>,
}

/// A module file's module name (`kernel/drivers/net/vmxnet3/vmxnet3.ko` → `vmxnet3`).
pub fn name_of_file(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    module_name(file.split('.').next().unwrap_or(file))
}

impl ModuleDeps {
    /// Reads `modules.dep` text: `FILE: [DEP ...]` per line.
    pub fn parse(text: &str) -> Result<ModuleDeps, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (file, deps) = line
                .split_once(':')
                .ok_or_else(|| format!("modules.dep:{}: not `FILE: DEPS`: {line}", n + 1))?;
            entries.push((file.trim().to_string(), deps.split_whitespace().map(str::to_string).collect()));
        }
        Ok(ModuleDeps { entries })
    }

    /// The files to load, in order, so that the modules `wanted` (names) are in: each one's
    /// dependencies first, then it; each file once; those in `loaded` (names) left out; a
    /// name that is not packed is skipped.
    pub fn load_order(&self, wanted: &[&str], loaded: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in wanted {
            let name = module_name(name);
            let Some((file, deps)) = self.entries.iter().find(|(f, _)| name_of_file(f) == name) else {
                continue;
            };
            for f in deps.iter().chain([file]) {
                if !out.contains(f) && !loaded.contains(&name_of_file(f)) {
                    out.push(f.clone());
                }
            }
        }
        out
    }
}

impl fmt::Display for ModuleDeps {
    /// `modules.dep`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (file, deps) in &self.entries {
            if deps.is_empty() {
                writeln!(f, "{file}:")?;
            } else {
                writeln!(f, "{file}: {}", deps.join(" "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_fnmatch_does() {
        for (p, t, want) in [
            (
                "pci:v00008086d000010D3sv*sd*bc*sc*i*",
                "pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00",
                true,
            ),
            (
                "pci:v00008086d000010D3sv*sd*bc*sc*i*",
                "pci:v00008086d000010D4sv00001AF4sd00001100bc02sc00i00",
                false,
            ),
            ("pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", true),
            ("usb:v13FDp3940d0[0-2]*dc*", "usb:v13FDp3940d0150dc00", true),
            ("usb:v13FDp3940d0[0-2]*dc*", "usb:v13FDp3940d0350dc00", false),
            ("a[!0-9]c", "abc", true),
            ("a[!0-9]c", "a5c", false),
            ("a[^b]c", "abc", false),
            ("a[]]c", "a]c", true),
            ("a[b", "a[b", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("acpi*:PNP0C0C:*", "acpi:PNP0C0C:", true),
            ("dmi:*:svnVMware*:*", "dmi:bvnPhoenix:bvr6.00:svnVMware,Inc.:pnVMwareVirtualPlatform:", true),
        ] {
            assert_eq!(fnmatch(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn dashes_are_underscores_outside_classes() {
        assert_eq!(normalize("scsi:t-0x00*"), "scsi:t_0x00*");
        assert_eq!(normalize("x[a-c]-y"), "x[a-c]_y");
        assert_eq!(module_name("xhci-pci"), "xhci_pci");
    }

    #[test]
    fn every_matching_module_in_table_order() {
        let table = AliasTable::parse(
            "# Aliases extracted from modules themselves.\n\
             alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139cp\n\
             alias pci:v000010ECd00008139sv*sd*bc*sc*i* 8139too\n\
             alias pci:v*d*sv*sd*bc01sc06i01* ahci\n\
             alias pci:v00008086d00002922sv*sd*bc*sc*i* ahci\n\
             alias scsi:t-0x00* sd_mod\n\
             alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb-storage\n",
        )
        .unwrap();
        assert_eq!(
            table.modules_for("pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00"),
            ["8139cp", "8139too"]
        );
        assert_eq!(
            table.modules_for("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01\n"),
            ["ahci"],
            "once"
        );
        assert_eq!(table.modules_for("scsi:t-0x00"), ["sd_mod"], "normalised on both sides");
        assert_eq!(table.modules_for("usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"), ["usb_storage"]);
        assert!(table.modules_for("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00").is_empty());
        assert_eq!(AliasTable::parse(&table.to_string()).unwrap(), table, "written as read");
        assert_eq!(
            AliasTable::parse("alias only-two\n").unwrap_err(),
            "modules.alias:1: not `alias PATTERN MODULE`: alias only-two"
        );
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let deps = ModuleDeps::parse(
            "kernel/net/core/failover.ko:\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/net/net_failover.ko\n\
             kernel/drivers/net/vmxnet3/vmxnet3.ko:\n",
        )
        .unwrap();
        assert_eq!(
            deps.load_order(&["virtio_net", "vmxnet3", "no_such_module"], &[]),
            [
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/net/vmxnet3/vmxnet3.ko"
            ]
        );
        assert_eq!(
            deps.load_order(&["virtio-net"], &["failover".to_string()]),
            ["kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"],
            "what is loaded is left out"
        );
        assert_eq!(ModuleDeps::parse(&deps.to_string()).unwrap(), deps, "written as read");
        assert_eq!(name_of_file("kernel/drivers/usb/storage/usb-storage.ko"), "usb_storage");
        assert!(ModuleDeps::parse("no colon here\n").unwrap_err().starts_with("modules.dep:1:"));
    }
}
