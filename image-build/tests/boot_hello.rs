//! examples/hello.toml boots in QEMU: its container reports hostname, PID 1, memory limit and
//! overlay root; the machine powers off by itself; the events come in order.

mod common;

use berth_qemu::{default_timeout, GuestShutdown};

#[test]
fn hello_example_boots_runs_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let example = std::fs::read_to_string(common::workspace().join("examples/hello.toml")).unwrap();
    let out = common::build(dir.path(), "hello", &example);
    let mut vm = common::boot(&out);

    let exited =
        vm.wait_for_event("container.exited", |e| e.get("name") == Some("hello"), default_timeout()).unwrap();
    assert_eq!(exited.get("code"), Some("0"), "{}", vm.console_text());
    let console = vm.console_text();
    for line in [
        "hello | hello from hello",
        "hello | pid in my namespace: 1",
        "hello | memory limit: 67108864",
        "hello | root filesystem: overlay",
    ] {
        assert!(console.lines().any(|l| l.trim_end() == line), "missing `{line}` in:\n{console}");
    }

    let status = vm.wait_exit(default_timeout()).unwrap();
    assert!(status.success(), "qemu: {status:?}");
    assert_eq!(vm.guest_shutdown(), Some(GuestShutdown::PowerOff), "{}", vm.console_text());
    let seen = common::event_names(&vm);
    common::assert_in_order(
        &seen,
        &[
            "boot.stage",
            "container.started:hello",
            "container.exited:hello",
            "system.done",
            "shutdown.begin",
            "shutdown.complete",
        ],
    );
    let stages: Vec<String> = vm
        .events()
        .iter()
        .filter(|e| e.name == "boot.stage")
        .filter_map(|e| e.get("stage").map(String::from))
        .collect();
    assert_eq!(stages, ["init", "mounts", "modules", "system", "network", "containers", "services"]);
    let times: Vec<u64> = vm.events().iter().map(|e| e.ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "event times go backwards: {times:?}");
    assert!(!vm.console_text().contains("Kernel panic"));
}
