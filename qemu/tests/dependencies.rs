//! The QEMU harness reads consoles; it must not link PID 1's schema, networking or TOML crates
//! (issue 14): whatever boots a berth image in CI builds only what parsing events needs.

use std::process::Command;

#[test]
fn the_harness_does_not_depend_on_pid1_or_its_networking_crates() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "berth-qemu", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"berth-events"), "the event type comes from berth-events: {tree}");
    for forbidden in [
        "berth-init",
        "berth-schema",
        "berth-runtime",
        "toml",
        "dhcproto",
        "netlink-sys",
        "netlink-packet-route",
        "nix",
    ] {
        assert!(!crates.contains(&forbidden), "berth-qemu depends on {forbidden}:\n{tree}");
    }
}
