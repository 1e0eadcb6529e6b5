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

use super::KeyError;
use crate::config::KeyAlgorithm;

/// Where a new key pair was written.
pub struct KeyFiles {
    /// `<kid>.key.pem`, readable by its owner only.
    pub private: PathBuf,
    /// `<kid>.pub.pem`.
    pub public: PathBuf,
}

/// Whether keygen can use `kid`: a valid key id ([`crate::config::is_valid_kid`], the
/// one rule the config applies too) that is also safe as the start of a file
/// name, since the files are named after it: letters, digits, `-`, `_` or `.`.
pub fn is_usable_kid(kid: &str) -> bool {
    crate::config::is_valid_kid(kid)
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Generates a key pair and writes it to `out` (created if missing) as
/// `<kid>.key.pem` and `<kid>.pub.pem`.
pub fn write_key_pair(algorithm: KeyAlgorithm, kid: &str, out: &Path) -> Result<KeyFiles, KeyError> {
    let (private, public) = generate(algorithm)?;
    std::fs::create_dir_all(out).map_err(|source| KeyError::Create { path: out.to_owned(), source })?;
    let files =
        KeyFiles { private: out.join(format!("{kid}.key.pem")), public: out.join(format!("{kid}.pub.pem")) };
    write_new(&files.private, private.as_bytes(), 0o600)?;
    write_new(&files.public, public.as_bytes(), 0o644)?;
    Ok(files)
}

/// A new key pair as (private, public) PEM.
fn generate(algorithm: KeyAlgorithm) -> Result<(String, String), KeyError> {
    fn failed(e: impl std::error::Error + Send + Sync + 'static) -> KeyError {
        KeyError::Generation(Box::new(e))
    }
    Ok(match algorithm {
        KeyAlgorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(failed)?;
            (private.to_string(), key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(failed)?)
        }
        KeyAlgorithm::Es256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(failed)?;
            (private.to_string(), key.public_key().to_public_key_pem(LineEnding::LF).map_err(failed)?)
        }
        KeyAlgorithm::Rs256 => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(failed)?;
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(failed)?;
            let public = rsa::RsaPublicKey::from(&key);
            (private.to_string(), public.to_public_key_pem(LineEnding::LF).map_err(failed)?)
        }
    })
}

/// Creates a file that must not exist yet, with `mode` from the start.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| KeyError::Create { path: path.to_owned(), source })?;
    file.write_all(contents).map_err(|source| KeyError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_in_place_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_key_pair(KeyAlgorithm::EdDsa, "k", dir.path()).unwrap();
        let before = std::fs::read(&files.private).unwrap();
        let err = write_key_pair(KeyAlgorithm::EdDsa, "k", dir.path()).err().unwrap();
        let prefix = format!("cannot create {}: ", files.private.display());
        assert!(matches!(err, KeyError::Create { .. }) && err.to_string().starts_with(&prefix), "{err}");
        assert_eq!(std::fs::read(&files.private).unwrap(), before);
    }
}
