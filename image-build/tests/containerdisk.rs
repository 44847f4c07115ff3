//! `berth build --format containerdisk` and `berth push`: a KubeVirt containerDisk pushed to a
//! real registry on 127.0.0.1, pulled back with skopeo and checked as KubeVirt's
//! `container-disk` does (one file under `/disk/`, owned by 107:107, qcow2 without a backing
//! file); the qcow2 taken out of it boots. The layout is the same on a rebuild.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_qemu::{default_timeout, Vm, VmConfig};
use common::registry::Registry;
use serde_json::Value;

const CONFIG: &str = r#"
[kernel]
cmdline = "console=ttyS0 quiet"

[system]
when_done = "poweroff"

[[onboot]]
name = "hello"
image = "oci:images/busybox:latest"
command = ["sh", "-c", "echo hello from the containerdisk"]
"#;

/// One entry of a layer: path, uid, gid, mode, bytes.
type LayerEntry = (String, u64, u64, u32, Vec<u8>);

/// The layers of the image `reference` in the OCI layout `dir` (skopeo's copy), as entries.
fn layers(dir: &Path, reference: &str) -> Vec<Vec<LayerEntry>> {
    let blob = |digest: &str| dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("no {reference} in {index}"))
        .clone();
    let manifest: Value =
        serde_json::from_slice(&fs::read(blob(entry["digest"].as_str().unwrap())).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = fs::File::open(blob(l["digest"].as_str().unwrap())).unwrap();
            let reader: Box<dyn Read> = if l["mediaType"].as_str().unwrap().ends_with("gzip") {
                Box::new(flate2::read::GzDecoder::new(file))
            } else {
                Box::new(file)
            };
            let mut tar = tar::Archive::new(reader);
            tar.entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let path = e.path().unwrap().display().to_string();
                    let h = e.header().clone();
                    let mut bytes = Vec::new();
                    e.read_to_end(&mut bytes).unwrap();
                    (path, h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap(), bytes)
                })
                .collect()
        })
        .collect()
}

fn skopeo_copy(from: &str, to: &Path, tag: &str) {
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", from])
        .arg(format!("oci:{}:{tag}", to.display()))
        .output()
        .expect("run skopeo");
    assert!(o.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&o.stderr));
}

fn build(dir: &Path, name: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    fs::write(&file, CONFIG).unwrap();
    let out = dir.join(format!("{name}.out"));
    common::build_formats(&file, &out, &["containerdisk"], &[]);
    out
}

#[test]
fn a_containerdisk_is_pushed_pulled_back_checked_and_boots() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let out = build(dir.path(), "cd");
    let registry = Registry::start(dir.path(), None);
    let host = format!("127.0.0.1:{}", registry.port);
    for (tag, extra) in [("v1", None), ("v1-kernel", Some("--kernel-boot"))] {
        let target = format!("{host}/berth/app:{tag}");
        let mut args = vec!["push", out.to_str().unwrap(), &target, "--insecure-registry", &host];
        args.extend(extra);
        let o = common::run_berth(&args);
        assert!(o.status.success(), "berth push: {}", String::from_utf8_lossy(&o.stderr));
    }

    // Pulled back by another client, as KubeVirt's node would.
    let pulled = dir.path().join("pulled");
    skopeo_copy(&format!("docker://{host}/berth/app:v1"), &pulled, "v1");
    skopeo_copy(&format!("docker://{host}/berth/app:v1-kernel"), &pulled, "v1-kernel");
    let disk_layers = layers(&pulled, "v1");
    assert_eq!(disk_layers.len(), 1, "one layer");
    let entries = &disk_layers[0];
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["disk/", "disk/disk.qcow2"], "exactly one file under /disk/");
    for (path, uid, gid, _, _) in entries {
        assert_eq!((*uid, *gid), (107, 107), "{path} must be owned by KubeVirt's qemu (107)");
    }
    assert_eq!(entries[1].3 & 0o777, 0o440);
    let qcow2 = dir.path().join("taken-out.qcow2");
    fs::write(&qcow2, &entries[1].4).unwrap();
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&qcow2).output().unwrap();
    assert!(info.status.success());
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert!(info.get("backing-filename").is_none(), "no backing file: {info}");
    assert!(fs::read(out.join("disk.qcow2")).is_err(), "only the asked format is written");

    let kernel_layers = layers(&pulled, "v1-kernel");
    let names: Vec<&str> = kernel_layers[0].iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["boot/", "boot/vmlinuz", "boot/initrd.img"]);
    assert!(kernel_layers[0].iter().all(|e| (e.1, e.2) == (107, 107)), "KubeVirt reads them as qemu (107)");
    assert_eq!(kernel_layers[0][1].4, fs::read(out.join("vmlinuz")).unwrap());
    assert_eq!(kernel_layers[0][2].4, fs::read(out.join("initrd.img")).unwrap());

    // The disk taken out of the image boots (UEFI, as KubeVirt's default firmware is not).
    let log = dir.path().join("console.log");
    let cfg = VmConfig {
        memory_mib: 512,
        console_log: Some(log),
        extra_args: vec![
            "-bios".into(),
            berth_image_build::formats::ovmf().unwrap().display().to_string(),
            "-drive".into(),
            format!("file={},format=qcow2,if=virtio", qcow2.display()),
        ],
        ..VmConfig::default()
    };
    let mut vm = Vm::start(cfg).unwrap();
    vm.wait_for_line(|l| l.contains("hello | hello from the containerdisk"), default_timeout())
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.console_text()));
    vm.wait_exit(default_timeout()).unwrap();

    // A rebuild gives the same layout.
    let again = build(dir.path(), "cd2");
    for name in ["index.json", "oci-layout"] {
        assert_eq!(
            fs::read(out.join("containerdisk").join(name)).unwrap(),
            fs::read(again.join("containerdisk").join(name)).unwrap(),
            "{name} differs on a rebuild"
        );
    }
}
