//! `berth build` refuses bad configs with file:line:column (or the missing path) and writes
//! nothing.

mod common;

use std::path::Path;

fn build_fails(dir: &Path, config: &str) -> String {
    let file = dir.join("bad.toml");
    std::fs::write(&file, config).unwrap();
    let out_dir = dir.join("out");
    let out = common::run_berth(&["build", file.to_str().unwrap(), "-o", out_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "build succeeded: {stderr}");
    assert!(!out_dir.exists(), "output written despite the error");
    common::assert_no_staging(dir, "the build");
    stderr
}

#[test]
fn unknown_key_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let err = build_fails(
        dir.path(),
        "[[service]]\nname = \"a\"\nimage = \"oci:images/busybox\"\nmemroy = \"1g\"\n",
    );
    assert!(err.contains(&format!("{}:4:1:", file.display())), "{err}");
    assert!(err.contains("memroy"), "{err}");
}

#[test]
fn wrong_type_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let err = build_fails(dir.path(), "[system]\nhostname = \"x\"\n\n[[onboot]]\nname = \"a\"\nimage = \"oci:images/busybox\"\ncommand = \"echo\"\n");
    assert!(err.contains(&format!("{}:7:11:", file.display())), "{err}");
}

#[test]
fn missing_image_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let err = build_fails(dir.path(), "[[onboot]]\nname = \"a\"\nimage = \"oci:images/nothere:latest\"\n");
    assert!(err.contains(&format!("{}:3:9:", file.display())), "{err}");
    assert!(err.contains(&dir.path().join("images/nothere").display().to_string()), "{err}");
    let err = build_fails(dir.path(), "[[onboot]]\nname = \"a\"\nimage = \"docker-archive:nothere.tar\"\n");
    assert!(err.contains("nothere.tar"), "{err}");
}

#[test]
fn bad_user_and_missing_tag_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let err = build_fails(
        dir.path(),
        "[[onboot]]\nname = \"a\"\nimage = \"oci:images/busybox:latest\"\nuser = \"ghost\"\n",
    );
    assert!(err.contains("ghost"), "{err}");
    let err = build_fails(dir.path(), "[[onboot]]\nname = \"a\"\nimage = \"oci:images/busybox:v9\"\n");
    assert!(err.contains("v9") && err.contains("latest"), "should list the available tags: {err}");
}
