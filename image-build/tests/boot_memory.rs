//! Memory in a booted machine: zram swap (`[system] zram`) appears in `/proc/swaps`, a
//! container over its RAM share (`memory`, with swap allowed by `memory_swap`) survives by
//! swapping instead of being killed, and its memory pressure is reported (`container.pressure`,
//! PSI) and then said to have eased.

mod common;

use berth_qemu::default_timeout;

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
zram = "50%"
pressure_warning = "5%"
when_done = "poweroff"

[[onboot]]
name = "swaps"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "tail -n +2 /proc/swaps | while read dev type size used prio; do echo swap=$dev:$type:$size:$prio; done"]

[[service]]
name = "hog"
image = "oci:images/busybox:latest"
memory = "48m"
memory_swap = "-1"
command = ["sh", "-c", """
sleep 3
dd if=/dev/zero of=/fill bs=1M count=96 2>&1 | tail -1; echo filled=$(( $(stat -c %s /fill) >> 20 ))
for i in 1 2 3; do cat /fill > /dev/null; done
echo swapped-kb=$(( $(cat /sys/fs/cgroup/memory.swap.current) >> 10 ))
echo oom-kills=$(grep oom_kill /sys/fs/cgroup/memory.events | cut -d' ' -f2)
rm /fill
sleep 12
echo done
"""]
"#;

fn value<'a>(console: &'a str, key: &str) -> &'a str {
    console
        .lines()
        .find_map(|l| l.trim_end().split_once(key).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{console}"))
}

#[test]
fn zram_swap_keeps_a_container_over_its_memory_alive_and_its_pressure_is_reported() {
    let (_dir, out) = common::build_fresh("memory", CONFIG);
    let mut vm = common::boot(&out);
    let t = default_timeout();
    vm.wait_exit(t * 3).unwrap_or_else(|e| panic!("{e}\n{}", vm.console_tail(40)));
    let c = vm.console_text();
    eprintln!(
        "{}",
        c.lines().filter(|l| l.contains("hog") || l.contains("zram")).collect::<Vec<_>>().join("\n")
    );

    // 50% of the guest's 512 MiB (less what the kernel keeps), at priority 100.
    let ready = vm.events().into_iter().find(|e| e.name == "zram.ready").unwrap_or_else(|| panic!("{c}"));
    let mb: u64 = ready.get("size_mb").unwrap().parse().unwrap();
    assert!((200..=256).contains(&mb), "{ready:?}");
    let swap = value(&c, "swap=");
    let fields: Vec<&str> = swap.split(':').collect();
    assert_eq!((fields[0], fields[1], fields[3]), ("/dev/zram0", "partition", "100"), "{swap}");
    let kb: u64 = fields[2].parse().unwrap();
    assert!(
        kb >= mb * 1024 - 4 && kb < (mb + 1) * 1024,
        "the whole device but its header page: {swap}, {ready:?}"
    );

    // 96 MiB in a 48 MiB container: written, read back, never killed.
    assert_eq!(value(&c, "hog | filled="), "96", "{c}");
    let swapped: u64 = value(&c, "hog | swapped-kb=").parse().unwrap();
    assert!(swapped > 40 << 10, "at least the 48 MiB over the limit went to swap: {swapped} KiB");
    assert_eq!(value(&c, "hog | oom-kills="), "0", "{c}");
    assert!(c.contains("hog | done"), "{c}");

    let events = vm.events();
    let rose = events.iter().find(|e| e.name == "container.pressure").unwrap_or_else(|| panic!("{c}"));
    assert_eq!(
        (rose.get("name"), rose.get("resource"), rose.get("threshold")),
        (Some("hog"), Some("memory"), Some("5%"))
    );
    let eased =
        events.iter().position(|e| e.name == "container.pressure_eased" && e.get("name") == Some("hog"));
    let rose_at = events.iter().position(|e| e.name == "container.pressure").unwrap();
    assert!(eased.is_some_and(|i| i > rose_at), "the pressure eases once the container sleeps: {c}");
    assert!(!events.iter().any(|e| e.name == "container.pressure" && e.get("name") == Some("swaps")));
}
