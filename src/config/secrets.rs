//! Secrets: the config names where each comes from (an environment variable
//! or a file), never the secret itself, so the file can be shared, committed
//! and shown in errors. [`SecretSource::load`] reads one at start-up, and a
//! missing or short secret stops start-up with a message that says how to
//! make one.

use std::fmt;
use std::path::{Path, PathBuf};

/// The smallest secret accepted for HS256 signing and for the admin API.
pub const MIN_SECRET_BYTES: usize = 32;

/// Where a secret comes from. The file wins if both are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// What the secret is for, in messages.
    pub purpose: &'static str,
}

/// Secret bytes that never show up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A random secret of the smallest accepted length, for checks that must
    /// build what a secret keys (`check-config` without the real secrets):
    /// nothing signed with it is ever handed out.
    pub fn stand_in() -> Secret {
        Secret(rand::random::<[u8; MIN_SECRET_BYTES]>().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no {purpose} is configured: {how}")]
    Missing { purpose: &'static str, how: String },
    #[error("the {purpose} is too short ({len} bytes); it needs at least {MIN_SECRET_BYTES}: {how}")]
    TooShort { purpose: &'static str, len: usize, how: String },
    #[error("cannot read the {purpose} from {}: {source}", path.display())]
    Unreadable { purpose: &'static str, path: PathBuf, source: std::io::Error },
}

impl SecretSource {
    /// A secret read from the environment variable `var` (a section's default).
    pub(super) fn env(var: &str, purpose: &'static str) -> SecretSource {
        SecretSource { env: Some(var.to_owned()), file: None, purpose }
    }

    /// The secret a section names with its `*_env` and `*_file` keys, if it
    /// names one; the file is relative to the config file's directory.
    pub(super) fn named(
        env: Option<String>,
        file: Option<String>,
        base: &Path,
        purpose: &'static str,
    ) -> Option<SecretSource> {
        (env.is_some() || file.is_some()).then(|| SecretSource {
            env,
            file: file.map(|f| base.join(f)),
            purpose,
        })
    }

    fn how_to_make(&self) -> String {
        let target = match (&self.file, &self.env) {
            (Some(path), _) => format!("`head -c 48 /dev/urandom | base64 > {}`", path.display()),
            (None, Some(var)) => format!("`export {var}=$(head -c 48 /dev/urandom | base64)`"),
            (None, None) => "set the `*_env` or `*_file` key in the config".to_owned(),
        };
        format!("make one with {target}")
    }

    pub fn load(&self) -> Result<Secret, SecretError> {
        let secret = self.load_any_length()?;
        if secret.0.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                purpose: self.purpose,
                len: secret.0.len(),
                how: self.how_to_make(),
            });
        }
        Ok(secret)
    }

    /// Like [`SecretSource::load`], for secrets chosen elsewhere (a Redis
    /// password) whose length is not ours to require.
    pub fn load_any_length(&self) -> Result<Secret, SecretError> {
        let raw = if let Some(path) = &self.file {
            std::fs::read(path).map_err(|source| SecretError::Unreadable {
                purpose: self.purpose,
                path: path.clone(),
                source,
            })?
        } else if let Some(var) = &self.env {
            std::env::var_os(var).map(|v| v.into_encoded_bytes()).unwrap_or_default()
        } else {
            Vec::new()
        };
        // A trailing newline from `echo` or an editor is not part of the secret.
        let trimmed = raw.trim_ascii().to_vec();
        if trimmed.is_empty() {
            return Err(SecretError::Missing { purpose: self.purpose, how: self.how_to_make() });
        }
        Ok(Secret(trimmed))
    }
}
