//! PID 1 stays small and never talks HTTP or TLS itself: the updater (`berth-updater`, a child
//! process) and the metadata helper (`berth-metadata`) have the HTTP client; `berth-init`'s own
//! tree must not.

use std::process::Command;

#[test]
fn pid1_has_no_http_tls_or_async_runtime() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "berth-init", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"nix"), "{tree}");
    for forbidden in [
        "ureq",
        "rustls",
        "ring",
        "tokio",
        "hyper",
        "berth-updater",
        "berth-metadata",
        "berth-timesync",
        "yaml-rust2",
        "roxmltree",
    ] {
        assert!(!crates.contains(&forbidden), "berth-init depends on {forbidden}:\n{tree}");
    }
}
