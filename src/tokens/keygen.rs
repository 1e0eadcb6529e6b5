//! Making the asymmetric signing keys that [`super::TokenService`] loads.
//!
//! Keys are generated with the same RustCrypto crates that verify them, and
//! written as PKCS#8 PEM in the layout `[[tokens.keys]]` expects. The private
//! key file is created with mode 600 from the start, never widened later, and
//! neither file may exist already: a key in use is never overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

use crate::config::KeyAlgorithm;

/// Where a new key pair was written.
pub struct KeyFiles {
    /// `<kid>.key.pem`, readable by its owner only.
    pub private: PathBuf,
    /// `<kid>.pub.pem`.
    pub public: PathBuf,
}

/// Whether keygen can use `kid`: a valid key id ([`super::is_valid_kid`], the
/// one rule the config applies too) that is also safe as the start of a file
/// name, since the files are named after it: letters, digits, `-`, `_` or `.`.
pub fn is_usable_kid(kid: &str) -> bool {
    super::is_valid_kid(kid)
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Generates a key pair and writes it to `out` (created if missing) as
/// `<kid>.key.pem` and `<kid>.pub.pem`.
pub fn write_key_pair(algorithm: KeyAlgorithm, kid: &str, out: &Path) -> Result<KeyFiles, String> {
    let (private, public) = generate(algorithm)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let files =
        KeyFiles { private: out.join(format!("{kid}.key.pem")), public: out.join(format!("{kid}.pub.pem")) };
    write_new(&files.private, private.as_bytes(), 0o600)?;
    write_new(&files.public, public.as_bytes(), 0o644)?;
    Ok(files)
}

/// A new key pair as (private, public) PEM.
fn generate(algorithm: KeyAlgorithm) -> Result<(String, String), String> {
    let failed = |e: &dyn std::fmt::Display| format!("key generation failed: {e}");
    Ok(match algorithm {
        KeyAlgorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e))?;
            (
                private.to_string(),
                key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| failed(&e))?,
            )
        }
        KeyAlgorithm::Es256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e))?;
            (private.to_string(), key.public_key().to_public_key_pem(LineEnding::LF).map_err(|e| failed(&e))?)
        }
        KeyAlgorithm::Rs256 => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| failed(&e))?;
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e))?;
            let public = rsa::RsaPublicKey::from(&key);
            (private.to_string(), public.to_public_key_pem(LineEnding::LF).map_err(|e| failed(&e))?)
        }
    })
}

/// Creates a file that must not exist yet, with `mode` from the start.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
