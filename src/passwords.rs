//! Argon2id password hashing, always on tokio's blocking pool.
//!
//! A hash costs tens of milliseconds of CPU by design. Run on the proxy's async
//! workers, a burst of logins would stall every proxied request behind it, so
//! both hashing and verification go through `spawn_blocking`. Unknown emails
//! are verified against a dummy hash made with the same parameters, so a wrong
//! email and a wrong password take comparable time.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;

/// Longest password accepted: bounds the hashing input an attacker controls.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password was refused or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("the password must be at most {max} bytes long")]
    TooLong { max: usize },
    /// Logged where it happened: the gateway's fault, not the password's.
    #[error("password hashing failed")]
    Hashing,
}

/// Why the hasher could not be built from `[passwords]`, or a hash made
/// outside a request failed: start-up and CLI errors, shown as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordConfigError {
    #[error("invalid argon2 parameters: {0}")]
    Params(#[from] argon2::Error),
    #[error(transparent)]
    Hashing(#[from] argon2::password_hash::Error),
}

#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    dummy_hash: String,
    min_length: usize,
    /// Hashes running at once. Each holds `memory_kib` and a whole core: left
    /// unbounded, a login storm takes every core from proxied traffic and
    /// grows memory by one hash per blocking thread.
    hashing: Semaphore,
}

impl Passwords {
    pub fn new(config: &PasswordConfig) -> Result<Self, PasswordConfigError> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon2, "gatehouse dummy password for timing")?;
        let hashing = Semaphore::new(config.max_concurrent_hashes.max(1));
        Ok(Passwords {
            inner: Arc::new(Inner { argon2, dummy_hash, min_length: config.min_length, hashing }),
        })
    }

    /// Checks a new password against the length rules.
    pub fn check_policy(&self, password: &str) -> Result<(), PasswordError> {
        let chars = password.chars().count();
        if chars < self.inner.min_length {
            return Err(PasswordError::TooShort { min: self.inner.min_length });
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong { max: MAX_PASSWORD_BYTES });
        }
        Ok(())
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _permit = self.inner.hashing.acquire().await.map_err(|_| PasswordError::Hashing)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || hash_with(&inner.argon2, &password))
            .await
            .map_err(|_| PasswordError::Hashing)?
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                PasswordError::Hashing
            })
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is no stored hash (unknown user): the answer is then always false.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let Ok(_permit) = self.inner.hashing.acquire().await else { return false };
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let known = stored.is_some();
            let phc = stored.unwrap_or_else(|| inner.dummy_hash.clone());
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return false;
            };
            // Verification uses the parameters recorded in the stored hash.
            let ok = inner.argon2.verify_password(password.as_bytes(), &parsed).is_ok();
            ok && known
        })
        .await
        .unwrap_or(false)
    }

    /// Hashes on the calling thread (the micro-benchmarks time it).
    pub fn hash_blocking(&self, password: &str) -> Result<String, PasswordConfigError> {
        Ok(hash_with(&self.inner.argon2, password)?)
    }
}

fn hash_with(argon2: &Argon2<'static>, password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    argon2.hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords::new(&PasswordConfig {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            min_length: 8,
            max_concurrent_hashes: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let p = passwords();
        let hash = p.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(p.verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!p.verify("wrong horse".into(), Some(hash)).await);
        assert!(!p.verify("gatehouse dummy password for timing".into(), None).await);
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        let p = passwords();
        assert!(p.check_policy("short").is_err());
        assert!(p.check_policy(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(p.check_policy("long enough").is_ok());
    }
}
