//! Storage inside containers: tmpfs mounts with a size limit (Docker's `--tmpfs`).

mod common;

use berth_qemu::default_timeout;

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "tmp"
image = "oci:images/busybox:latest"
read_only = true
tmpfs = ["/cache:size=8m", "/fast:size=4m,exec"]
command = ["sh", "-c", """
echo cache-kb=$(df -k /cache | tail -1 | awk '{print $2}')
dd if=/dev/zero of=/cache/big bs=1M count=9 2>/dev/null && echo over-limit-written || echo over-limit-refused
rm -f /cache/big
cp /bin/busybox /cache/true && /cache/true && echo cache-exec=yes || echo cache-exec=no
cp /bin/busybox /fast/true && /fast/true && echo fast-exec=yes || echo fast-exec=no
touch /root-file 2>/dev/null && echo root=writable || echo root=read-only
"""]
"#;

fn field<'a>(console: &'a str, key: &str) -> &'a str {
    let prefix = format!("tmp | {key}=");
    console.lines().find_map(|l| l.trim_end().strip_prefix(prefix.as_str())).unwrap_or("")
}

#[test]
fn tmpfs_mounts_have_their_size_and_options() {
    let (_dir, out) = common::build_fresh("tmpfs", CONFIG);
    let mut vm = common::boot(&out);
    vm.wait_exit(default_timeout()).unwrap();
    let c = vm.console_text();
    assert_eq!(field(&c, "cache-kb"), "8192", "{c}");
    assert!(c.contains("tmp | over-limit-refused"), "{c}");
    assert_eq!(field(&c, "cache-exec"), "no", "noexec by default: {c}");
    assert_eq!(field(&c, "fast-exec"), "yes", "{c}");
    assert_eq!(field(&c, "root"), "read-only", "{c}");
}
