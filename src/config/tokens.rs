//! `[tokens]` and `[[tokens.keys]]`: how access and refresh tokens are signed
//! and checked. Only paths are validated here; the key files themselves are
//! read when the token service is built at start-up
//! ([`crate::tokens::TokenService::with_keys`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::file;
use super::values::{duration_within, positive_duration, Invalid};
use super::SecretSource;

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub secret: SecretSource,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    /// Verified tokens remembered so repeat requests skip the HMAC; 0 = off.
    pub verified_cache_size: usize,
    /// Asymmetric keys, each named by its `kid`: every one verifies, at most
    /// one signs.
    pub keys: Vec<KeyConfig>,
    /// The `kid` of the key that signs new tokens; `None` signs with HS256.
    pub signing_key: Option<String>,
}

/// Algorithms an asymmetric key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    Rs256,
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    pub public_key: PathBuf,
    /// Only the signing key needs its private half.
    pub private_key: Option<PathBuf>,
}

impl KeyAlgorithm {
    /// The algorithm named as in the config file and JWT headers (`EdDSA`, `ES256`, `RS256`).
    pub fn parse(name: &str) -> Option<Self> {
        let parsed: Result<Self, serde::de::value::Error> = Self::deserialize(name.into_deserializer());
        parsed.ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EdDsa => "EdDSA",
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::Rs256 => "RS256",
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            secret: SecretSource::env("GATEHOUSE_JWT_SECRET", "token signing secret"),
            issuer: "gatehouse".to_owned(),
            audience: "gatehouse".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            leeway: Duration::from_secs(5),
            verified_cache_size: 10_000,
            keys: Vec::new(),
            signing_key: None,
        }
    }
}

impl TokenConfig {
    pub(super) fn from_file(section: file::TokensSection, base: &Path) -> Result<Self, Invalid> {
        const ZERO_TTL: &str = "tokens.access_ttl and tokens.refresh_ttl must be longer than zero";
        let defaults = TokenConfig::default();
        let keys = keys(&section.keys, base)?;
        let signing_key = match &section.signing_key {
            Some(kid) => Some(signing_key(kid, &keys)?),
            None => None,
        };
        Ok(TokenConfig {
            secret: SecretSource::named(
                section.secret_env,
                section.secret_file,
                base,
                defaults.secret.purpose,
            )
            .unwrap_or(defaults.secret),
            issuer: section.issuer.unwrap_or(defaults.issuer),
            audience: section.audience.unwrap_or(defaults.audience),
            access_ttl: positive_duration(section.access_ttl, defaults.access_ttl, ZERO_TTL)?,
            refresh_ttl: positive_duration(section.refresh_ttl, defaults.refresh_ttl, ZERO_TTL)?,
            // Clock skew, not a grace period: a leeway near the Unix time
            // itself would make every token unexpiring.
            leeway: duration_within(
                section.leeway,
                defaults.leeway,
                Duration::ZERO..=Duration::from_secs(300),
                "tokens.leeway",
            )?,
            verified_cache_size: section.verified_cache_size.unwrap_or(defaults.verified_cache_size),
            keys,
            signing_key,
        })
    }
}

fn keys(entries: &[Spanned<file::KeyEntry>], base: &Path) -> Result<Vec<KeyConfig>, Invalid> {
    let mut keys: Vec<KeyConfig> = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = entry.get_ref();
        let kid = key.kid.get_ref();
        if !is_valid_kid(kid) {
            return Err(Invalid::at(&key.kid, "a key's kid must be 1 to 64 visible characters"));
        }
        if keys.iter().any(|k| &k.kid == kid) {
            return Err(Invalid::at(&key.kid, format!("two keys have the kid `{kid}`")));
        }
        keys.push(KeyConfig {
            kid: kid.clone(),
            algorithm: key.algorithm.0,
            public_key: base.join(&key.public_key),
            private_key: key.private_key.as_ref().map(|p| base.join(p)),
        });
    }
    Ok(keys)
}

/// `signing_key` must name a key that has its private half.
fn signing_key(kid: &Spanned<String>, keys: &[KeyConfig]) -> Result<String, Invalid> {
    match keys.iter().find(|k| &k.kid == kid.get_ref()) {
        Some(key) if key.private_key.is_some() => Ok(kid.get_ref().clone()),
        Some(_) => Err(Invalid::at(kid, "the signing key needs a private_key")),
        None => Err(Invalid::at(kid, format!("no [[tokens.keys]] entry has the kid `{}`", kid.get_ref()))),
    }
}

/// The rule for a key id (`kid`): 1 to 64 visible ASCII characters, asked of
/// every `[[tokens.keys]]` entry and by key generation.
pub fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= 64 && kid.bytes().all(|b| b.is_ascii_graphic())
}
