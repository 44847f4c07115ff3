//! The fetch pipeline of `debian_cloud_kernel` against a fake `apt-get` (on `PATH`) serving
//! packages built here with `dpkg-deb -b`: no network, a fresh cache directory.
//!
//! One test per binary: it changes `PATH` for the whole process.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_image_build::kernel::{cached_debian_kernel, debian_cloud_kernel, DebianFlavor, COMPLETE_MARKER};

const VERSION: &str = "6.1.0-99-cloud-amd64";

fn build_deb(out_dir: &Path, package: &str, version: &str, depends: Option<&str>, files: &[(&str, &[u8])]) {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("DEBIAN")).unwrap();
    let mut control = format!(
        "Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: test <t@example.org>\nDescription: test\n"
    );
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    fs::write(root.path().join("DEBIAN/control"), control).unwrap();
    for (path, data) in files {
        let p = root.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let deb = out_dir.join(format!("{package}_{version}_amd64.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-b"])
        .arg(root.path())
        .arg(&deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn fetches_extracts_caches_and_reports_apt_errors() {
    if let Err(e) = Command::new("dpkg-deb").arg("--version").output() {
        panic!("dpkg-deb: {e} (a Debian host has it)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&repo).unwrap();
    fs::create_dir_all(&bin).unwrap();
    let log = tmp.path().join("apt.log");

    build_deb(
        &repo,
        "linux-image-cloud-amd64",
        "6.1.999-1",
        Some(&format!("linux-image-{VERSION} (= 6.1.999-1)")),
        &[],
    );
    let mut image = vec![0u8; 0x300];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    build_deb(
        &repo,
        &format!("linux-image-{VERSION}"),
        "6.1.999-1",
        None,
        &[
            (&format!("boot/vmlinuz-{VERSION}"), &image),
            (&format!("lib/modules/{VERSION}/modules.builtin"), b"kernel/fs/ext4/ext4.ko\n"),
        ],
    );
    // `apt-get download PKG[=VER]`: copy PKG_VER_amd64.deb here, or fail like apt-get does.
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\n\
         pkg=\"${{2%%=*}}\"; ver=\"${{2#*=}}\"\n\
         if [ \"$pkg\" = \"$ver\" ]; then ver='*'; fi\n\
         for f in '{repo}'/\"$pkg\"_$ver\"_amd64.deb\"; do\n\
           if [ -f \"$f\" ]; then cp \"$f\" .; exit 0; fi\n\
         done\n\
         echo \"E: Unable to locate package $pkg\" >&2; exit 100\n",
        log = log.display(),
        repo = repo.display()
    );
    let apt = bin.join("apt-get");
    fs::write(&apt, script).unwrap();
    fs::set_permissions(&apt, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    std::env::set_var("PATH", path);

    // A fresh cache: downloads the meta package, then the versioned one (pinned), extracts.
    let cache = tmp.path().join("cache");
    let kernel = debian_cloud_kernel(&cache, &|l| eprintln!("kernel: {l}")).unwrap();
    assert_eq!(kernel.version, VERSION);
    assert_eq!(kernel.vmlinuz, cache.join(format!("kernels/{VERSION}/boot/vmlinuz-{VERSION}")));
    assert_eq!(kernel.modules_dir, cache.join(format!("kernels/{VERSION}/lib/modules/{VERSION}")));
    let marker = fs::read_to_string(cache.join("kernels").join(VERSION).join(COMPLETE_MARKER)).unwrap();
    assert!(marker.contains("version=6.1.999-1"), "{marker}");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!("download linux-image-cloud-amd64\ndownload linux-image-{VERSION}=6.1.999-1\n")
    );
    // No temporary directories are left behind.
    let left: Vec<_> = fs::read_dir(cache.join("kernels")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [VERSION]);

    // Cached: no apt-get at all.
    fs::remove_file(&log).unwrap();
    assert_eq!(debian_cloud_kernel(&cache, &|_| {}).unwrap(), kernel);
    assert!(!log.exists(), "apt-get ran on a cache hit");

    // An incomplete directory (no marker) is not used; a newer complete one wins.
    let newer = cache.join("kernels/6.1.0-100-cloud-amd64");
    fs::create_dir_all(newer.join("boot")).unwrap();
    fs::create_dir_all(newer.join("lib/modules/6.1.0-100-cloud-amd64")).unwrap();
    fs::write(newer.join("boot/vmlinuz-6.1.0-100-cloud-amd64"), &image).unwrap();
    assert_eq!(debian_cloud_kernel(&cache, &|_| {}).unwrap().version, VERSION);
    fs::write(newer.join(COMPLETE_MARKER), "").unwrap();
    assert_eq!(debian_cloud_kernel(&cache, &|_| {}).unwrap().version, "6.1.0-100-cloud-amd64");

    // Flavors never stand in for each other: a newer generic kernel in the cache is not the
    // cloud kernel, and the cloud kernels are not the generic one.
    let generic = cache.join("kernels/6.1.0-200-amd64");
    fs::create_dir_all(generic.join("boot")).unwrap();
    fs::create_dir_all(generic.join("lib/modules/6.1.0-200-amd64")).unwrap();
    fs::write(generic.join("boot/vmlinuz-6.1.0-200-amd64"), &image).unwrap();
    fs::write(generic.join(COMPLETE_MARKER), "").unwrap();
    assert_eq!(debian_cloud_kernel(&cache, &|_| {}).unwrap().version, "6.1.0-100-cloud-amd64");
    let found = cached_debian_kernel(DebianFlavor::Generic, &cache).unwrap().unwrap();
    assert_eq!(found.version, "6.1.0-200-amd64");
    assert!(found.boot_kernel().description.starts_with("the Debian generic kernel in "));
    fs::remove_dir_all(&generic).unwrap();
    assert_eq!(cached_debian_kernel(DebianFlavor::Generic, &cache).unwrap(), None);

    // apt-get cannot find the package: the error names the command, its stderr and the fix.
    fs::remove_file(repo.join("linux-image-cloud-amd64_6.1.999-1_amd64.deb")).unwrap();
    let err = debian_cloud_kernel(&tmp.path().join("empty-cache"), &|_| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("`apt-get download linux-image-cloud-amd64` failed"), "{msg}");
    assert!(msg.contains("E: Unable to locate package linux-image-cloud-amd64"), "{msg}");
    assert!(msg.contains("run `apt-get update`"), "{msg}");
}
