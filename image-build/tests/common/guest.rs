//! Pieces of hand-made initramfs images for guests that run host programs: a program with the
//! shared libraries `ldd` lists, and static busybox with its applets. Shared by the tests and
//! the benches (`#[path]`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_image_build::cpio::CpioWriter;

/// The shared objects `ldd` lists for `bin` (absolute paths, the loader included).
pub fn libraries(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("running ldd");
    if !out.status.success() {
        return Vec::new(); // "not a dynamic executable"
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Adds the host file `src` (symlinks followed) at `dest` (relative path).
pub fn add_file<W: Write>(cpio: &mut CpioWriter<W>, dest: &str, src: &Path, mode: u32) {
    let f = fs::File::open(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let len = f.metadata().unwrap().len();
    cpio.file(dest, mode, 0, 0, len, f).unwrap();
}

/// Adds each library of `bins` once, at the path `ldd` names.
pub fn add_libraries<W: Write>(cpio: &mut CpioWriter<W>, bins: &[&Path]) {
    let libs: std::collections::BTreeSet<PathBuf> = bins.iter().flat_map(|b| libraries(b)).collect();
    for lib in &libs {
        add_file(cpio, lib.to_str().unwrap().trim_start_matches('/'), lib, 0o755);
    }
}

/// Adds Debian's static busybox at `PREFIX/bin/busybox` with a link per applet.
pub fn add_busybox<W: Write>(cpio: &mut CpioWriter<W>, prefix: &str) {
    let busybox = Path::new("/bin/busybox");
    add_file(cpio, &format!("{prefix}bin/busybox"), busybox, 0o755);
    let list = Command::new(busybox).arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        cpio.symlink(&format!("{prefix}bin/{applet}"), "busybox", 0, 0).unwrap();
    }
}
