//! kernel-config/build refuses a fragment option that cannot be enabled in the kernel tree,
//! naming the fragment, the option and what it depends on, before compiling anything.

mod common;

use std::process::Command;

#[test]
fn an_option_that_cannot_be_enabled_fails_the_build_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kernel-config");
    std::fs::create_dir_all(copy.join("fragments")).unwrap();
    let source = common::workspace().join("kernel-config");
    std::fs::copy(source.join("build"), copy.join("build")).unwrap();
    for f in std::fs::read_dir(source.join("fragments")).unwrap().flatten() {
        std::fs::copy(f.path(), copy.join("fragments").join(f.file_name())).unwrap();
    }
    // The virtio GPU without DRM, and an option this tree no longer has.
    std::fs::write(
        copy.join("fragments/zz-extra.config"),
        "CONFIG_DRM_VIRTIO_GPU=y\nCONFIG_NF_CONNTRACK_IPV4=y\n",
    )
    .unwrap();
    let out =
        Command::new(copy.join("build")).env("BERTH_CACHE_DIR", dir.path().join("cache")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("zz-extra.config: CONFIG_DRM_VIRTIO_GPU=y did not survive olddefconfig")
            && err.contains("Kconfig: depends on DRM"),
        "{err}"
    );
    assert!(
        err.contains("zz-extra.config: CONFIG_NF_CONNTRACK_IPV4=y did not survive olddefconfig (this tree has no such option"),
        "{err}"
    );
    assert!(!err.contains("building bzImage"), "it stops before compiling: {err}");
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "no kernel is reported");
}
