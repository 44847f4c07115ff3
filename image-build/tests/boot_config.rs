//! Configuration delivered at boot: a TOML fragment from QEMU's fw_cfg and from the kernel
//! command line merged over the image's; a malformed one is reported and ignored.

mod common;

use berth_qemu::default_timeout;

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "from-image"
when_done = "poweroff"

[[onboot]]
name = "probe"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo machine=$(grep 127.0.1.1 /etc/hosts | cut -f2); echo swappiness=$(cat /proc/sys/vm/swappiness)"]
"#;

fn field(console: &str, key: &str) -> String {
    let prefix = format!("probe | {key}=");
    console.lines().find_map(|l| l.trim_end().strip_prefix(&prefix)).unwrap_or_default().to_string()
}

#[test]
fn fw_cfg_fragment_then_command_line() {
    let (dir, out) = common::build_fresh("cfg", CONFIG);
    let fragment = dir.path().join("fragment.toml");
    std::fs::write(&fragment, "[system]\nhostname = \"from-fwcfg\"\nsysctl = { \"vm.swappiness\" = 7 }\n")
        .unwrap();
    let fw_cfg = format!("name=opt/berth/config,file={}", fragment.display());
    let mut vm = common::boot_with(&out, &["-fw_cfg", &fw_cfg]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "machine"), "from-fwcfg", "{c}");
    assert_eq!(field(&c, "swappiness"), "7", "{c}");
    let applied = vm.events().into_iter().find(|e| e.name == "config.applied").expect("config.applied");
    assert_eq!(applied.get("source"), Some("fw_cfg"));
    assert_eq!(applied.get("changed"), Some("system.hostname,system.sysctl"));

    // The kernel command line comes last: its hostname wins over fw_cfg's.
    let mut vm = common::boot_with(
        &out,
        &["-fw_cfg", &fw_cfg, "-append", "console=ttyS0 quiet berth.hostname=from-cmdline"],
    );
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "machine"), "from-cmdline", "{c}");
    assert_eq!(field(&c, "swappiness"), "7", "fw_cfg's sysctl still applies: {c}");
}

#[test]
fn malformed_fragment_is_reported_and_ignored() {
    let (dir, out) = common::build_fresh("cfg-bad", CONFIG);
    let fragment = dir.path().join("bad.toml");
    std::fs::write(&fragment, "[system]\nhostname = 5\n").unwrap();
    let fw_cfg = format!("name=opt/berth/config,file={}", fragment.display());
    let mut vm = common::boot_with(&out, &["-fw_cfg", &fw_cfg]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert!(c.contains("fw_cfg opt/berth/config:2:"), "the error names the source and line: {c}");
    assert!(vm.events().iter().any(|e| e.name == "config.rejected" && e.get("source") == Some("fw_cfg")));
    assert_eq!(field(&c, "machine"), "from-image", "{c}");
    assert_eq!(field(&c, "swappiness"), "60", "{c}");
}
