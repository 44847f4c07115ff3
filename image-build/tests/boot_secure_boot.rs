//! Secure Boot: `berth build --sign-key --sign-cert` signs the UKI (alone and on the disk's EFI
//! system partition, with the disk's boot manager, systemd-boot) with `sbsign`; `berth run --secure-boot` boots Debian's OVMF with its test
//! ("snakeoil") keys enrolled and Secure Boot enforced. The image signed with that key boots and
//! runs its container; the same image unsigned, or signed with another key, is refused by the
//! firmware (seen on the console, and `berth run` says so). Signed builds are reproducible, and
//! `berth inspect` names the signer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The snakeoil key decrypted (the package ships it encrypted, password `snakeoil`), and a
/// second key pair the firmware does not know: ((key, cert), (key, cert)).
fn keys(dir: &Path) -> ((PathBuf, PathBuf), (PathBuf, PathBuf)) {
    let snakeoil = dir.join("snakeoil.key");
    openssl(&["pkey", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out", snakeoil.to_str().unwrap()]);
    let (other_key, other_cert) = (dir.join("other.key"), dir.join("other.pem"));
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=other",
        "-keyout",
        other_key.to_str().unwrap(),
        "-out",
        other_cert.to_str().unwrap(),
    ]);
    ((snakeoil, PathBuf::from(SNAKEOIL_CERT)), (other_key, other_cert))
}

/// Builds the hello example as raw-efi and uki into `dir/NAME`, signed with `key` if given.
fn build(dir: &Path, name: &str, key: Option<&(PathBuf, PathBuf)>) -> PathBuf {
    let config = dir.join("hello.toml");
    if !config.exists() {
        std::fs::copy(common::workspace().join("examples/hello.toml"), &config).unwrap();
    }
    let out = dir.join(name);
    let sign: Vec<String> = key
        .map(|(k, c)| {
            vec!["--sign-key".into(), k.display().to_string(), "--sign-cert".into(), c.display().to_string()]
        })
        .unwrap_or_default();
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    common::build_formats(&config, &out, &["raw-efi", "uki"], &sign);
    out
}

fn run_secure(image: &Path) -> (Output, String) {
    let o = Command::new(common::berth())
        .args(["run", "--secure-boot", "--no-net", "--timeout", "150"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o, text)
}

#[test]
fn a_signed_image_boots_under_secure_boot_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let (snakeoil, other) = keys(dir.path());
    let signed = build(dir.path(), "signed", Some(&snakeoil));

    // Signed with the key the firmware's db holds: the disk and the UKI alone both boot.
    for image in ["disk.raw", "berth.efi"] {
        let (o, text) = run_secure(&signed.join(image));
        assert!(o.status.success(), "{image}: {text}");
        assert!(text.contains("hello | hello from hello"), "{image}: {text}");
        assert!(text.contains("event=shutdown.complete action=poweroff"), "{image}: {text}");
        assert!(!text.contains("Access Denied"), "{image}: {text}");
    }

    // Reproducible: the signature is dated SOURCE_DATE_EPOCH, not the signing time.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = build(dir.path(), "again", Some(&snakeoil));
    for image in ["disk.raw", "berth.efi"] {
        assert!(common::same_bytes(&signed.join(image), &again.join(image)), "{image} differs");
    }

    // Inspect names the signer, on the disk and the UKI.
    for image in ["disk.raw", "berth.efi"] {
        let o = common::run_berth(&["inspect", "--json", signed.join(image).to_str().unwrap()]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let signers = r["signature"].as_array().unwrap();
        assert!(signers.iter().any(|s| s.as_str().unwrap().contains("O=SnakeOil")), "{image}: {r}");
    }
    // The disk's boot manager, systemd-boot, is signed with the same key.
    let o = common::run_berth(&["inspect", "--json", signed.join("disk.raw").to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let signers = r["boot"]["boot_manager_signature"].as_array().unwrap();
    assert!(signers.iter().any(|s| s.as_str().unwrap().contains("O=SnakeOil")), "{r}");

    // Unsigned, and signed with a key the firmware does not trust: refused by the firmware.
    let unsigned = build(dir.path(), "unsigned", None);
    let wrong = build(dir.path(), "wrong", Some(&other));
    let o = common::run_berth(&["inspect", "--json", unsigned.join("disk.raw").to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["signature"], serde_json::json!([]), "{r}");
    for image in [unsigned.join("disk.raw"), wrong.join("disk.raw"), wrong.join("berth.efi")] {
        let (o, text) = run_secure(&image);
        assert!(!o.status.success(), "{}: {text}", image.display());
        assert!(text.contains("Access Denied"), "the firmware's refusal on the console: {text}");
        assert!(text.contains("the firmware refused to start the image"), "{text}");
        assert!(!text.contains("@berth"), "nothing of the image ran: {text}");
    }
}

#[test]
fn signing_needs_a_uki_a_readable_decrypted_key_and_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    common::busybox_image(dir.path());
    let (snakeoil, other) = keys(dir.path());
    let config = dir.path().join("hello.toml");
    std::fs::copy(common::workspace().join("examples/hello.toml"), &config).unwrap();
    let out = dir.path().join("out");
    let try_build = |format: &str, key: &Path, cert: &Path| -> String {
        let o = common::run_berth(&[
            "build",
            config.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            format,
            "--sign-key",
            key.to_str().unwrap(),
            "--sign-cert",
            cert.to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        assert!(!out.exists(), "nothing half-written");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = try_build("iso", &snakeoil.0, &snakeoil.1);
    assert!(err.contains("--format uki, raw-efi"), "{err}");
    let err = try_build("raw-efi", Path::new(SNAKEOIL_KEY), &snakeoil.1);
    assert!(err.contains("encrypted") && err.contains("openssl pkey"), "{err}");
    let err = try_build("raw-efi", &dir.path().join("missing.key"), &snakeoil.1);
    assert!(err.contains("--sign-key") && err.contains("missing.key"), "{err}");
    let err = try_build("raw-efi", &other.0, &snakeoil.1);
    assert!(err.contains("does not match --sign-cert"), "{err}");
    let o = common::run_berth(&[
        "build",
        config.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--sign-key",
        "k",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--sign-cert"));
}
