//! Secure Boot: signing the EFI applications berth builds (the UKI, alone or on a disk's EFI
//! system partition), reading a signature back, and Debian's Secure Boot firmware for
//! `berth run --secure-boot`.
//!
//! Signing is `sbsign` (Debian's `sbsigntool`): an Authenticode signature, PKCS#7 with an RSA
//! key, as UEFI firmware checks it against its `db`. It records the signing time; `berth build`
//! runs it under `faketime` at `SOURCE_DATE_EPOCH` (the images' own timestamp), so a signed
//! image is as reproducible as an unsigned one (RSA PKCS#1 v1.5 signatures are deterministic).
//! Each signature is checked with `sbverify` against the certificate right after it is made: a
//! key that does not match its certificate fails the build, not the boot.
//!
//! The UKI's signature covers its command line, hence the system partition's root hash: the
//! firmware refuses a changed UKI, and dm-verity refuses a changed partition.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The key and certificate `berth build --sign-key --sign-cert` signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The private key (PEM, not encrypted).
    pub key: PathBuf,
    /// Its X.509 certificate (PEM), the one enrolled in the firmware's `db`.
    pub cert: PathBuf,
}

/// A host tool for signing, or an error naming the package.
fn tool(name: &str, package: &str) -> Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/sbin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("`{name}` is needed to sign for Secure Boot and is not installed; install it with: apt-get install {package}")
}

impl SigningKey {
    /// Checks that both files can be read, before anything is built.
    pub fn check(&self) -> Result<()> {
        for (flag, path) in [("--sign-key", &self.key), ("--sign-cert", &self.cert)] {
            std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
        }
        let key = std::fs::read_to_string(&self.key).unwrap_or_default();
        if key.contains("ENCRYPTED") {
            bail!(
                "--sign-key {}: the key is encrypted; give a decrypted copy (openssl pkey -in KEY -out PLAIN.key)",
                self.key.display()
            );
        }
        // A trial signature of the EFI stub every UKI is made from: a key that cannot be
        // loaded or does not match the certificate fails here, before the build's long steps.
        let stub = Path::new(crate::formats::UKI_STUB);
        let trial = tempfile::tempdir().context("a directory for a trial signature")?;
        let copy = trial.path().join("stub.efi");
        std::fs::copy(stub, &copy)
            .with_context(|| format!("{} (apt-get install systemd-boot-efi)", stub.display()))?;
        self.sign(&copy, crate::formats::DEFAULT_EPOCH)
    }

    /// Signs the EFI application `efi` in place, its signature dated `epoch`.
    /// An RSA PKCS#1 v1.5 SHA-256 signature of `data` with the key (`openssl dgst`): what
    /// signs an update bundle's config. Deterministic: the same bytes give the same signature.
    pub fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let input = dir.path().join("data");
        std::fs::write(&input, data)?;
        let out = Command::new(tool("openssl", "openssl")?)
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .arg(&input)
            .stdin(Stdio::null())
            .output()
            .context("running openssl dgst")?;
        if !out.status.success() {
            bail!(
                "signing the update with {}: {}",
                self.key.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// The certificate's public key (PEM, SubjectPublicKeyInfo): what a machine built with
    /// this key trusts its updates by.
    pub fn public_key_pem(&self) -> Result<String> {
        let out = Command::new(tool("openssl", "openssl")?)
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(&self.cert)
            .stdin(Stdio::null())
            .output()
            .context("running openssl x509")?;
        if !out.status.success() {
            bail!("--sign-cert {}: {}", self.cert.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Signs `efi` in place with sbsign, dated `epoch`.
    pub fn sign(&self, efi: &Path, epoch: u64) -> Result<()> {
        let sbsign = tool("sbsign", "sbsigntool")?;
        let faketime = tool("faketime", "faketime")?;
        let signed = efi.with_extension("signed");
        // `-f` with an absolute time freezes the clock there (a start time would let it run, and
        // a signature made a second later would differ).
        let out = Command::new(faketime)
            .arg("-f")
            .arg(utc_timestamp(epoch))
            .env("TZ", "UTC")
            .arg(sbsign)
            .arg("--key")
            .arg(&self.key)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--output")
            .arg(&signed)
            .arg(efi)
            .stdin(Stdio::null())
            .output()
            .context("running sbsign")?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&signed);
            let complaint = String::from_utf8_lossy(&out.stderr);
            if complaint.contains("private key does not match certificate") {
                bail!(self.mismatch());
            }
            bail!(
                "signing {} with --sign-key {} --sign-cert {} failed: {}",
                efi.display(),
                self.key.display(),
                self.cert.display(),
                sbsign_complaint(&complaint)
            );
        }
        if let Err(e) = self.verify(&signed) {
            let _ = std::fs::remove_file(&signed);
            return Err(e);
        }
        std::fs::rename(&signed, efi).with_context(|| format!("renaming into {}", efi.display()))
    }

    /// Checks `efi`'s signature against the certificate.
    fn verify(&self, efi: &Path) -> Result<()> {
        let out = Command::new(tool("sbverify", "sbsigntool")?)
            .arg("--cert")
            .arg(&self.cert)
            .arg(efi)
            .output()
            .context("running sbverify")?;
        if !out.status.success() {
            bail!(self.mismatch());
        }
        Ok(())
    }

    fn mismatch(&self) -> String {
        format!(
            "--sign-key {} does not match --sign-cert {}: give the certificate of that key",
            self.key.display(),
            self.cert.display()
        )
    }
}

/// `epoch` as `YYYY-MM-DD hh:mm:ss` (UTC), the absolute time `faketime -f` freezes the clock at.
fn utc_timestamp(epoch: u64) -> String {
    let (y, mo, d, h, mi, s) = berth_runtime::civil_time::utc_civil(i64::try_from(epoch).unwrap_or(i64::MAX));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// sbsign's own words, without its warning about the stub's trailing symbol table (harmless).
fn sbsign_complaint(stderr: &str) -> String {
    let lines: Vec<&str> =
        stderr.lines().filter(|l| !l.contains("data remaining") && !l.trim().is_empty()).collect();
    lines.join("; ")
}

/// Whether the PE image `pe` carries a certificate table (an Authenticode signature).
pub fn is_signed(pe: &[u8]) -> bool {
    let word = |at: usize| pe.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let Some(header) = word(0x3c).and_then(|h| usize::try_from(h).ok()) else { return false };
    if pe.get(header..header + 4) != Some(b"PE\0\0") {
        return false;
    }
    let optional = header + 24;
    // The data directories follow 96 (PE32) or 112 (PE32+) bytes of the optional header; the
    // certificate table is the fifth.
    let directories = match pe.get(optional..optional + 2) {
        Some([0x0b, 0x01]) => optional + 96,
        Some([0x0b, 0x02]) => optional + 112,
        _ => return false,
    };
    word(directories + 4 * 8 + 4).is_some_and(|size| size > 0)
}

/// The subjects of the certificates in `efi`'s signature (`sbverify --list`); empty when it
/// is not signed.
pub fn signers(efi: &Path) -> Result<Vec<String>> {
    let pe = std::fs::read(efi).with_context(|| format!("reading {}", efi.display()))?;
    if !is_signed(&pe) {
        return Ok(Vec::new());
    }
    let out = Command::new(tool("sbverify", "sbsigntool")?)
        .arg("--list")
        .arg(efi)
        .output()
        .context("running sbverify --list")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let subjects: Vec<String> =
        text.lines().filter_map(|l| l.trim().strip_prefix("- subject: ")).map(str::to_string).collect();
    if subjects.is_empty() {
        bail!(
            "{}: a certificate table sbverify cannot read: {}",
            efi.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(subjects)
}

/// Debian's OVMF built for Secure Boot with the test key pair enrolled (`ovmf`'s snakeoil
/// firmware): (code, variables template).
pub fn snakeoil_firmware() -> Result<(PathBuf, PathBuf)> {
    let code = PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd");
    let vars = PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd");
    for f in [&code, &vars] {
        if !f.is_file() {
            bail!(
                "{} is needed for --secure-boot and is missing; install it with: apt-get install ovmf",
                f.display()
            );
        }
    }
    Ok((code, vars))
}

/// The QEMU arguments of a machine with Secure Boot enforced by [`snakeoil_firmware`]: the
/// firmware's code read-only, a copy of its variables in `scratch` (written by the firmware).
pub fn secure_boot_args(scratch: &Path) -> Result<Vec<String>> {
    let (code, vars) = snakeoil_firmware()?;
    let copy = scratch.join("OVMF_VARS.fd");
    std::fs::copy(&vars, &copy).with_context(|| format!("copying {}", vars.display()))?;
    Ok(vec![
        "-global".into(),
        "driver=cfi.pflash01,property=secure,value=on".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={}", code.display()),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", copy.display()),
    ])
}

/// Whether a console line is UEFI firmware refusing to start an image (Secure Boot: not
/// signed by a key of its `db`).
pub fn is_refusal(line: &str) -> bool {
    line.contains("BdsDxe: failed to load") && line.contains("Access Denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_table_is_found_in_pe32_plus() {
        let mut pe = vec![0u8; 512];
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x98..0x9a].copy_from_slice(&[0x0b, 0x02]);
        assert!(!is_signed(&pe));
        // Data directory 4 of PE32+: optional header (0x98) + 112 + 32; its size 4 bytes on.
        pe[0x98 + 112 + 32 + 4] = 0x10;
        assert!(is_signed(&pe));
        assert!(!is_signed(&pe[..0x90]), "cut short");
        assert!(!is_signed(b"MZ"));
    }

    #[test]
    fn timestamps_for_faketime() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(utc_timestamp(1_704_067_200), "2024-01-01 00:00:00");
        assert_eq!(utc_timestamp(951_782_400 + 3_723), "2000-02-29 01:02:03");
        assert_eq!(utc_timestamp(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn refusals_are_told_from_other_firmware_lines() {
        assert!(is_refusal(
            "BdsDxe: failed to load Boot0002 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x2,0x0): Access Denied\r"
        ));
        assert!(!is_refusal(
            "BdsDxe: failed to load Boot0001 \"UEFI QEMU DVD-ROM QM00005 \" from PciRoot(0x0): Not Found"
        ));
        assert!(!is_refusal("BdsDxe: starting Boot0001 \"UEFI Misc Device\""));
    }
}
