//! The update's signature: an image built with `--sign-key` and `[update]` carries the key's
//! public half (`berth_schema::update::TRUSTED_KEY`) and installs only bundles whose config is
//! signed with it (RSA PKCS#1 v1.5, SHA-256; the config names the UKI's and the index's digests,
//! the index every piece's). Checked before anything is fetched past the config. An image
//! without the key takes bundles by their digests and root hash alone.

use std::path::Path;

use base64::Engine as _;
use berth_schema::update::{Bundle, SIGNATURE_ANNOTATION};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;

/// Checks `bundle`'s signature of `config` against the key at `key_path`, when there is one.
pub fn check(bundle: &Bundle, config: &[u8], key_path: &Path) -> Result<(), String> {
    let pem = match std::fs::read_to_string(key_path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", key_path.display())),
    };
    let key = RsaPublicKey::from_public_key_pem(&pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
    verify(&key, bundle.signature.as_deref(), config)
}

/// Verifies the base64 `signature` of `config` with `key`.
fn verify(key: &RsaPublicKey, signature: Option<&str>, config: &[u8]) -> Result<(), String> {
    let Some(signature) = signature else {
        return Err(format!(
            "the update is not signed ({SIGNATURE_ANNOTATION}), and this machine installs only updates signed with its key: refused"
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|e| format!("the update's signature is not base64 ({e}): refused"))?;
    let signature =
        Signature::try_from(bytes.as_slice()).map_err(|e| format!("the update's signature: {e}: refused"))?;
    VerifyingKey::<rsa::sha2::Sha256>::new(key.clone())
        .verify(config, &signature)
        .map_err(|_| "the update's signature does not verify with this machine's key: refused".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A key pair made by the openssl CLI (as `berth build --sign-key` takes), the public half
    /// as PEM, and openssl's signature of `data` with it.
    fn openssl_signed(dir: &Path, data: &[u8]) -> (RsaPublicKey, String) {
        let key = dir.join("k.pem");
        let run = |args: &[&str]| {
            let o = Command::new("openssl").args(args).output().expect("run openssl");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            o.stdout
        };
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key.to_str().unwrap(),
        ]);
        let pem = String::from_utf8(run(&["pkey", "-in", key.to_str().unwrap(), "-pubout"])).unwrap();
        let data_file = dir.join("data");
        std::fs::write(&data_file, data).unwrap();
        let sig = run(&["dgst", "-sha256", "-sign", key.to_str().unwrap(), data_file.to_str().unwrap()]);
        (
            RsaPublicKey::from_public_key_pem(&pem).unwrap(),
            base64::engine::general_purpose::STANDARD.encode(sig),
        )
    }

    #[test]
    fn an_openssl_signature_verifies_and_anything_else_is_refused() {
        let dir = tempfile_dir();
        let config = br#"{"verity":"8:aa:bb"}"#;
        let (key, sig) = openssl_signed(&dir, config);
        verify(&key, Some(&sig), config).unwrap();
        assert!(verify(&key, Some(&sig), br#"{"verity":"8:aa:bc"}"#)
            .unwrap_err()
            .contains("does not verify"));
        assert!(verify(&key, None, config).unwrap_err().contains("not signed"));
        assert!(verify(&key, Some("%%%"), config).unwrap_err().contains("base64"));
        let (other, _) = openssl_signed(&dir, config);
        assert!(verify(&other, Some(&sig), config).unwrap_err().contains("does not verify"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-updater-sig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
