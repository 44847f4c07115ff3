//! A layer that tries to reach PID 1, the plan, the modules or the machine's root — files named
//! like them, symlinks pointing at them and `..` chains up and out — is packed only inside its
//! own directory (`/berth/layers/<digest>/`), so a container of it sees and writes its own
//! root, and PID 1, its plan and the containers after it are untouched. (What the rules refuse
//! at build time is tested without booting in `hostile_layers.rs`.)

mod common;

use std::path::Path;

use berth_qemu::{default_timeout, GuestShutdown};

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[network]
auto = false

[[onboot]]
name = "intruder"
image = "oci:images/busybox:hostile"
command = ["sh", "-c", """
echo "init=$(cat /init) plan=$(cat /berth/plan.json) module=$(cat /lib/modules/evil.ko)"
echo pwned > /initlink; echo pwned > /planlink; echo pwned > /escape/berth/plan.json
echo "escape=$(readlink /escape) sees=$(ls /escape/ | tr '\\n' ' ')"
echo "after=$(cat /init) $(cat /berth/plan.json)"
"""]

[[onboot]]
name = "checker"
image = "oci:images/busybox:latest"
binds = ["/init:/pid1:ro", "/berth/plan.json:/plan.json:ro"]
command = ["sh", "-c", "echo \"pid1=$(wc -c < /pid1) plan=$(head -c 1 /plan.json) $(wc -c < /plan.json)\""]
"#;

/// `images/busybox:hostile`: busybox, then a layer with a fake `/init`, `/berth/plan.json` and
/// module, and symlinks to the machine's `/init`, `/berth/plan.json` and out of its directory.
fn hostile_image(dir: &Path) {
    let root = dir.join("hostile");
    std::fs::create_dir_all(root.join("berth")).unwrap();
    std::fs::create_dir_all(root.join("lib/modules")).unwrap();
    std::fs::write(root.join("init"), "evil-init\n").unwrap();
    std::fs::write(root.join("berth/plan.json"), "evil-plan\n").unwrap();
    std::fs::write(root.join("lib/modules/evil.ko"), "evil-module\n").unwrap();
    std::os::unix::fs::symlink("/init", root.join("initlink")).unwrap();
    std::os::unix::fs::symlink("/berth/plan.json", root.join("planlink")).unwrap();
    std::os::unix::fs::symlink("../../../../../..", root.join("escape")).unwrap();
    let layout = dir.join("images/busybox");
    let args = ["image", "import", root.to_str().unwrap(), "--tag", "hostile", "--base", "latest", "-o"];
    let o = common::run_berth(&[&args[..], &[layout.to_str().unwrap()]].concat());
    assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_hostile_layer_reaches_only_its_own_root() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    hostile_image(dir.path());
    let out = common::build(dir.path(), "hostile", CONFIG);
    let mut vm = common::boot(&out);
    vm.wait_exit(default_timeout()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_tail(40));
    let text = vm.console_text();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no line {prefix:?}:\n{}", vm.console_tail(40)))
    };
    // The container sees its own layer's files where the machine has PID 1 and the plan …
    assert_eq!(line("intruder | init="), "evil-init plan=evil-plan module=evil-module");
    // … its symlinks resolve inside its own root, and writing through them changes only that.
    assert!(
        line("intruder | escape=").starts_with("../../../../../.. sees=berth bin dev escape etc home init "),
        "{text}"
    );
    assert_eq!(line("intruder | after="), "pwned pwned");
    // PID 1 (the 3 MB static binary, not a 10-byte file) and its plan are intact, and the plan
    // went on: the next container ran.
    let checker = line("checker | pid1=");
    let fields: Vec<&str> = checker.split(' ').collect();
    let [pid1, plan_start, plan_size] = fields[..] else { panic!("{checker}") };
    assert!(pid1.parse::<u64>().unwrap() > 1_000_000, "PID 1 is {pid1} bytes: {checker}");
    assert_eq!(plan_start, "plan={", "the plan is berth's JSON: {checker}");
    assert!(plan_size.parse::<u64>().unwrap() > 500, "the plan is {plan_size} bytes: {checker}");
    common::assert_in_order(
        &common::event_names(&vm),
        &["container.exited:intruder", "container.exited:checker", "shutdown.begin"],
    );
    assert!(vm.events().iter().all(|e| e.name != "container.failed"), "{}", vm.console_tail(40));
}
