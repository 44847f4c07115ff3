//! Configuration delivered at boot: a TOML fragment from QEMU's fw_cfg, the kernel command line
//! and a NoCloud config drive merged over the image's — settings and extra containers (on an
//! image already packed); a malformed one is reported and ignored.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
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

/// A fragment's extra service: it prints the machine's hostname and its own environment.
fn extra_service(greeting: &str) -> String {
    format!(
        r#"
[[service]]
name = "extra"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo ran machine=$(grep 127.0.1.1 /etc/hosts | cut -f2) greeting=$GREETING"]
env = {{ GREETING = "{greeting}" }}
"#
    )
}

/// What the extra service printed (empty when it did not run).
fn extra_line(console: &str) -> String {
    console.lines().find_map(|l| l.trim_end().strip_prefix("extra | ran ")).unwrap_or_default().to_string()
}

#[test]
fn fw_cfg_fragment_then_command_line() {
    let (dir, out) = common::build_fresh("cfg", CONFIG);
    let fragment = dir.path().join("fragment.toml");
    let settings = "[system]\nhostname = \"from-fwcfg\"\nsysctl = { \"vm.swappiness\" = 7 }\n";
    // An [[onshutdown]] container too: it runs when the machine powers off (when_done).
    let farewell = "\n[[onshutdown]]\nname = \"farewell\"\nimage = \"oci:images/busybox:latest\"\ncommand = [\"echo\", \"bye from fw_cfg\"]\n";
    std::fs::write(&fragment, format!("{settings}{}{farewell}", extra_service("hello-from-fwcfg"))).unwrap();
    let fw_cfg = format!("name=opt/berth/config,file={}", fragment.display());
    let mut vm = common::boot_with(&out, &["-fw_cfg", &fw_cfg]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "machine"), "from-fwcfg", "{c}");
    assert_eq!(field(&c, "swappiness"), "7", "{c}");
    let applied = vm.events().into_iter().find(|e| e.name == "config.applied").expect("config.applied");
    assert_eq!(applied.get("source"), Some("fw_cfg"));
    assert_eq!(
        applied.get("changed"),
        Some("system.hostname,system.sysctl,service.extra,onshutdown.farewell")
    );
    assert_eq!(extra_line(&c), "machine=from-fwcfg greeting=hello-from-fwcfg", "{c}");
    let (begin, bye) = (c.find("event=shutdown.begin"), c.find("farewell | bye from fw_cfg"));
    assert!(begin.is_some() && bye > begin, "the fragment's onshutdown container runs at shutdown: {c}");
    assert!(vm.events().iter().any(|e| e.name == "container.started"
        && e.get("name") == Some("extra")
        && e.get("kind") == Some("service")));

    // The kernel command line comes last: its hostname wins over fw_cfg's.
    let mut vm = common::boot_with(
        &out,
        &["-fw_cfg", &fw_cfg, "-append", "console=ttyS0 quiet berth.hostname=from-cmdline"],
    );
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "machine"), "from-cmdline", "{c}");
    assert_eq!(field(&c, "swappiness"), "7", "fw_cfg's sysctl still applies: {c}");
    assert_eq!(extra_line(&c), "machine=from-cmdline greeting=hello-from-fwcfg", "{c}");
}

#[test]
fn malformed_fragment_is_reported_and_ignored() {
    let (dir, out) = common::build_fresh("cfg-bad", CONFIG);
    let fragment = dir.path().join("bad.toml");
    std::fs::write(&fragment, "[system]\nhostname = 5\n").unwrap();
    let fw_cfg = format!("name=opt/berth/config,file={}", fragment.display());
    // And on the command line, a service on an image the machine does not have.
    let unknown = "[system]\nhostname = \"from-cmdline\"\n\n[[service]]\nname = \"ghost\"\nimage = \"oci:images/nginx:latest\"\n";
    let append = format!("console=ttyS0 quiet berth.config={}", STANDARD.encode(unknown));
    let mut vm = common::boot_with(&out, &["-fw_cfg", &fw_cfg, "-append", &append]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert!(c.contains("fw_cfg opt/berth/config:2:"), "the error names the source and line: {c}");
    assert!(vm.events().iter().any(|e| e.name == "config.rejected" && e.get("source") == Some("fw_cfg")));
    let error = "kernel command line berth.config:6:9: container `ghost`: image `oci:images/nginx:latest` is not packed in this image (PID 1 cannot pull images); packed images: oci:images/busybox:latest";
    assert!(c.contains(error), "the error names the images there are: {c}");
    assert!(vm.events().iter().any(|e| e.name == "config.rejected" && e.get("source") == Some("cmdline")));
    assert!(!vm.events().iter().any(|e| e.get("name") == Some("ghost")), "{c}");
    assert_eq!(field(&c, "machine"), "from-image", "the rejected fragment's hostname is ignored too: {c}");
    assert_eq!(field(&c, "swappiness"), "60", "{c}");
}

const DRIVE_CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
hostname = "from-image"
when_done = "poweroff"
config_drive = true

[[onboot]]
name = "probe"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo machine=$(grep 127.0.1.1 /etc/hosts | cut -f2); echo swappiness=$(cat /proc/sys/vm/swappiness)"]
"#;

/// A seed directory with NoCloud `meta-data` and `user-data`.
fn seed(dir: &std::path::Path, user_data: &str) -> std::path::PathBuf {
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: iid-berth-01\nlocal-hostname: from-meta\n").unwrap();
    std::fs::write(seed.join("user-data"), user_data).unwrap();
    seed
}

fn run(cmd: &mut std::process::Command) {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn nocloud_iso_config_drive() {
    let (dir, out) = common::build_fresh("drive-iso", DRIVE_CONFIG);
    let seed = seed(dir.path(), "[system]\nsysctl = { \"vm.swappiness\" = 9 }\n");
    let iso = dir.path().join("seed.iso");
    run(std::process::Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "CIDATA", "-J", "-R", "-o"])
        .arg(&iso)
        .arg(&seed));
    let drive = format!("file={},media=cdrom,readonly=on", iso.display());
    let mut vm = common::boot_with(&out, &["-drive", &drive]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "machine"), "from-meta", "meta-data's local-hostname: {c}");
    assert_eq!(field(&c, "swappiness"), "9", "user-data's sysctl: {c}");
    let found = vm.events().into_iter().find(|e| e.name == "config.drive").expect("config.drive");
    assert_eq!(found.get("fs"), Some("iso9660"));
}

#[test]
fn nocloud_fat_config_drive_and_a_bad_user_data() {
    let (dir, out) = common::build_fresh("drive-fat", DRIVE_CONFIG);
    let make = |name: &str, user_data: &str| {
        let d = dir.path().join(name);
        let seed = seed(&d, user_data);
        let img = d.join("seed.img");
        run(std::process::Command::new("mkfs.vfat").args(["-n", "CIDATA", "-C"]).arg(&img).arg("2048"));
        for f in ["meta-data", "user-data"] {
            run(std::process::Command::new("mcopy")
                .arg("-i")
                .arg(&img)
                .arg(seed.join(f))
                .arg(format!("::/{f}")));
        }
        format!("file={},format=raw,if=virtio,readonly=on", img.display())
    };
    // user-data's hostname comes after meta-data's; it adds a service.
    let good = make(
        "good",
        &format!("[system]\nhostname = \"from-user-data\"\n{}", extra_service("hello-from-drive")),
    );
    let mut vm = common::boot_with(&out, &["-drive", &good]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "machine"), "from-user-data", "{c}");
    assert!(vm.events().iter().any(|e| e.name == "config.drive" && e.get("fs") == Some("vfat")));
    assert_eq!(extra_line(&c), "machine=from-user-data greeting=hello-from-drive", "{c}");

    // A malformed user-data is reported; meta-data still applies; the boot goes on.
    let bad = make("bad", "[system]\nsysctl = \"no\"\n");
    let mut vm = common::boot_with(&out, &["-drive", &bad]);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert!(c.contains("config drive user-data:2:"), "{c}");
    assert_eq!(field(&c, "machine"), "from-meta", "{c}");
    assert_eq!(field(&c, "swappiness"), "60", "{c}");
}
