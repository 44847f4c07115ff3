//! Shared by the build and boot tests: the berth binary, the static init, a busybox image,
//! building a config, booting the result.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use berth_qemu::{Vm, VmConfig};

pub mod guest;
pub mod metadata;
pub mod redis;
pub mod registry;
pub mod update;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The `berth` binary under test.
pub fn berth() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// The static PID 1 binary: `$BERTH_INIT`, else built once with cargo (with the updater
/// beside it).
pub fn init_binary() -> PathBuf {
    static INIT: OnceLock<PathBuf> = OnceLock::new();
    INIT.get_or_init(|| {
        if let Some(p) = std::env::var_os("BERTH_INIT").filter(|v| !v.is_empty()) {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--release",
                "-p",
                "berth-init",
                "--features",
                "berth-init/test-hooks",
                "-p",
                "berth-updater",
                "-p",
                "berth-metadata",
                "-p",
                "berth-timesync",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the static init failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        target.join("x86_64-unknown-linux-gnu/release/berth-init")
    })
    .clone()
}

/// Whether two files hold the same bytes, read in blocks (disk images are sparse and large:
/// their slots are mostly holes).
#[allow(dead_code)]
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Runs `berth` with the static init and returns its output.
pub fn run_berth(args: &[&str]) -> Output {
    Command::new(berth()).env("BERTH_INIT", init_binary()).args(args).output().expect("run berth")
}

/// Makes the busybox OCI image at `dir/images/busybox` (tag `latest`).
pub fn busybox_image(dir: &Path) {
    make_busybox_image(&dir.join("images/busybox"), false);
}

/// Makes the busybox OCI image with iputils ping at `dir/images/netping` (tag `latest`): a
/// `ping` that works without CAP_NET_RAW (Debian's busybox ping needs raw sockets).
pub fn busybox_ping_image(dir: &Path) {
    make_busybox_image(&dir.join("images/netping"), true);
}

fn make_busybox_image(layout: &Path, ping: bool) {
    let out = Command::new(workspace().join("scripts/busybox-image.sh"))
        .env("BERTH", berth())
        .env("PING", if ping { "1" } else { "" })
        .arg(layout)
        .output()
        .expect("run busybox-image.sh");
    assert!(out.status.success(), "busybox-image.sh: {}", String::from_utf8_lossy(&out.stderr));
}

/// `berth image import ROOTFS --tag latest -o DIR/images/NAME` with `extra` arguments; panics
/// with berth's stderr on failure.
pub fn import_image(dir: &Path, rootfs: &Path, name: &str, extra: &[&str]) {
    let layout = dir.join("images").join(name);
    let mut args =
        vec!["image", "import", rootfs.to_str().unwrap(), "--tag", "latest", "-o", layout.to_str().unwrap()];
    args.extend(extra);
    let o = run_berth(&args);
    assert!(o.status.success(), "berth image import: {}", String::from_utf8_lossy(&o.stderr));
}

/// `berth build CONFIG -o OUT --format F …` with `extra` arguments: its stderr; panics with it on
/// failure.
pub fn build_formats(config: &Path, out: &Path, formats: &[&str], extra: &[&str]) -> String {
    let mut args = vec!["build", config.to_str().unwrap(), "-o", out.to_str().unwrap()];
    for f in formats {
        args.extend(["--format", f]);
    }
    args.extend(extra);
    let o = run_berth(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "berth build failed: {stderr}");
    stderr
}

/// A fresh directory with the busybox image, and `config` built in it (see [`build`]).
pub fn build_fresh(name: &str, config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    busybox_image(dir.path());
    let out = build(dir.path(), name, config);
    (dir, out)
}

/// Writes `config` as `dir/NAME.toml` and builds it into `dir/NAME.out`; panics with berth's
/// stderr on failure.
pub fn build(dir: &Path, name: &str, config: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    let out_dir = dir.join(format!("{name}.out"));
    let out = run_berth(&["build", file.to_str().unwrap(), "-o", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "berth build failed: {}", String::from_utf8_lossy(&out.stderr));
    out_dir
}

/// Boots a build output (kernel command line from its `cmdline` file).
pub fn boot(out_dir: &Path) -> Vm {
    boot_with(out_dir, &[])
}

/// Boots a build output; a guest reboot restarts the machine instead of ending QEMU.
pub fn boot_rebootable(out_dir: &Path) -> Vm {
    boot_rebootable_with(out_dir, &[])
}

/// Boots a build output with extra QEMU arguments; a guest reboot restarts the machine.
pub fn boot_rebootable_with(out_dir: &Path, extra_args: &[&str]) -> Vm {
    start(out_dir, extra_args, true)
}

/// Boots a build output with extra QEMU arguments (disks, devices).
pub fn boot_with(out_dir: &Path, extra_args: &[&str]) -> Vm {
    start(out_dir, extra_args, false)
}

fn start(out_dir: &Path, extra_args: &[&str], allow_reboot: bool) -> Vm {
    let cmdline = std::fs::read_to_string(out_dir.join("cmdline")).unwrap();
    let mut cfg = VmConfig::new(out_dir.join("vmlinuz"), out_dir.join("initrd.img"), cmdline.trim());
    cfg.console_log = Some(out_dir.join("console.log"));
    cfg.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
    cfg.allow_reboot = allow_reboot;
    Vm::start(cfg).expect("start qemu")
}

/// Names of the events seen, in order.
pub fn event_names(vm: &Vm) -> Vec<String> {
    vm.events()
        .iter()
        .map(|e| format!("{}{}", e.name, e.get("name").map(|n| format!(":{n}")).unwrap_or_default()))
        .collect()
}

/// Asserts that `wanted` occur in `seen` in this order (other events may come between).
pub fn assert_in_order(seen: &[String], wanted: &[&str]) {
    let mut it = seen.iter();
    for w in wanted {
        assert!(it.any(|s| s == w), "event {w} missing or out of order in {seen:#?}");
    }
}

/// The median of benchmark figures (the mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A machine with a data disk (a virtio disk with serial `berth-data`) whose service appends
/// numbered records to a named volume, each fsync'd before it reports `synced=N`: `burst`
/// records per boot (`None`: until stopped). On boot it first reports `have=N gap=LINE`: the
/// records on disk and the first line out of sequence (empty when none).
pub fn records_config(burst: Option<u64>) -> String {
    let limit = burst.map(|b| b.to_string()).unwrap_or_else(|| "1000000000".to_string());
    r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[storage]
disk = "serial:berth-data"

[[service]]
name = "records"
image = "oci:images/busybox:latest"
volumes = ["records:/data"]
command = ["sh", "-c", """
touch /data/log
n=$(wc -l < /data/log)
echo "have=$n gap=$(awk 'NR != $1 { print NR; exit }' /data/log)"
i=$n
while [ $i -lt $((n + LIMIT)) ]; do
  i=$((i + 1))
  echo $i >> /data/log && sync /data/log && echo synced=$i
done
trap 'exit 0' TERM; sleep 1000 & wait
"""]
"#
    .replace("LIMIT", &limit)
}

/// The project kernel's bzImage: `kernel-config/build` (built on first use, then cached
/// outside the checkout by its fragments).
pub fn project_kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let out = Command::new(workspace().join("kernel-config/build"))
                .output()
                .expect("run kernel-config/build");
            assert!(out.status.success(), "kernel-config/build: {}", String::from_utf8_lossy(&out.stderr));
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bzImage")
        })
        .clone()
}

/// `config` booting the project kernel: `[kernel] path` set to [`project_kernel`].
pub fn with_project_kernel(config: &str) -> String {
    config.replacen("[kernel]\n", &format!("[kernel]\npath = \"{}\"\n", project_kernel().display()), 1)
}

/// A bzImage as the kernel build makes one (setup header, zstd payload followed by its size),
/// with `config` embedded the way `CONFIG_IKCONFIG` does, if given. It does not boot: the
/// build only reads its header and configuration.
pub fn synthetic_bzimage(config: Option<&str>) -> Vec<u8> {
    use std::io::Write;
    let mut vmlinux = b"\x7fELF synthetic kernel".to_vec();
    if let Some(config) = config {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(config.as_bytes()).unwrap();
        vmlinux.extend_from_slice(b"IKCFG_ST");
        vmlinux.extend_from_slice(&gz.finish().unwrap());
        vmlinux.extend_from_slice(b"IKCFG_ED");
    }
    let mut payload = zstd::encode_all(&vmlinux[..], 3).unwrap();
    payload.extend_from_slice(&u32::try_from(vmlinux.len()).unwrap().to_le_bytes());
    let mut image = vec![0u8; 5 * 512]; // setup_sects = 0 means 4
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x20e..0x210].copy_from_slice(&0x0200u16.to_le_bytes());
    let version = b"6.1.120-berth (builder@host) #1 SMP\0";
    image[0x400..0x400 + version.len()].copy_from_slice(version);
    image[0x24c..0x250].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    image.extend_from_slice(&payload);
    image
}

/// The data of a PAX extended header with these records (`LEN KEY=VALUE\n`, where LEN counts
/// the whole record, its own digits included).
pub fn pax_records(records: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len}{body}").as_bytes());
    }
    data
}

/// Asserts that a failed build left no staging directory (`.berth-build*`) in `dir`.
pub fn assert_no_staging(dir: &Path, what: &str) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".berth-build"))
        .collect();
    assert!(leftovers.is_empty(), "{what}: staging left behind: {leftovers:?}");
}

/// A ustar header for a layer entry of `kind` (mtime 42; the path is set when appended).
pub fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(42);
    h
}

/// Appends a regular file (mode 0644).
pub fn tar_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar_header(tar::EntryType::Regular, 0o644, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// Appends a PAX extended header (`x`) with the given records, for the next entry.
pub fn tar_pax(b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &str)]) {
    let data = pax_records(records);
    let mut h = tar_header(tar::EntryType::XHeader, 0o644, data.len() as u64);
    h.set_path("PaxHeaders/entry").unwrap();
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
}

/// Writes `tar` as an uncompressed layer file in `dir` (its digest is its diff id) and returns
/// its blob.
pub fn layer_blob(dir: &Path, tar: Vec<u8>) -> berth_image_build::source::LayerBlob {
    let digest = berth_image_build::blobs::sha256_bytes(&tar);
    let path = dir.join(digest.replace(':', "-"));
    std::fs::write(&path, &tar).unwrap();
    berth_image_build::source::LayerBlob {
        digest: digest.clone(),
        diff_id: Some(digest),
        compression: berth_image_build::source::Compression::None,
        size: tar.len() as u64,
        path,
    }
}

/// Serves `body` to every HTTP request on 127.0.0.1 (the guest's 10.0.2.2 on QEMU's user
/// network), from a thread that lives as long as the test; returns the port.
pub fn serve_page(body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.read(&mut [0u8; 2048]);
            let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

/// A 64 MiB raw disk image `dir/name` holding an ext4 filesystem labelled `berth-data` (a data
/// disk `[storage] disk = "label:berth-data"` finds).
pub fn labelled_data_disk(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let o = Command::new("mkfs.ext4").args(["-q", "-F", "-L", "berth-data"]).arg(&img).output().unwrap();
    assert!(o.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&o.stderr));
    img
}

/// QEMU arguments for `disk` (raw) as a SATA disk on an AHCI controller.
pub fn ahci_disk_args(disk: &Path) -> Vec<String> {
    [
        "-device".to_string(),
        "ahci,id=ahci0".to_string(),
        "-drive".to_string(),
        format!("file={},format=raw,if=none,id=sata", disk.display()),
        "-device".to_string(),
        "ide-hd,drive=sata,bus=ahci0.0".to_string(),
    ]
    .to_vec()
}
