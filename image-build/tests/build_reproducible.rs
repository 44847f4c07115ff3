//! The same inputs give byte-identical outputs.

mod common;

#[test]
fn two_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let a = common::build(dir.path(), "a", &example);
    // A second image import of the same root and a second build.
    let dir2 = tempfile::tempdir().unwrap();
    common::busybox_image(dir2.path());
    let b = common::build(dir2.path(), "a", &example);
    for name in ["vmlinuz", "initrd.img", "cmdline"] {
        let (x, y) = (std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap());
        assert!(!x.is_empty(), "{name} is empty");
        assert!(x == y, "{name} differs between two builds");
    }
    // Building again into an existing directory replaces the files with the same bytes.
    let again = common::build(dir.path(), "a", &example);
    assert_eq!(
        std::fs::read(again.join("initrd.img")).unwrap(),
        std::fs::read(b.join("initrd.img")).unwrap()
    );
}
