//! Issuing and checking JWTs.
//!
//! Keys and the validation rules are built once at start-up. The algorithm is
//! pinned to HS256, `exp`, `nbf`, `iss` and `aud` are always checked, and the
//! token `type` claim keeps refresh tokens out of places that need access
//! tokens and the reverse. Revocation and account checks happen in
//! [`crate::auth`], which also consults the store.

pub mod keygen;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::now_unix;
use crate::config::{KeyAlgorithm, Secret, TokenConfig};
use crate::roles::Role;
use crate::store::User;

/// Longest token accepted before any parsing: bounds the work an attacker can
/// cause. Room for an access token naming the most roles an account may hold
/// ([`crate::roles::MAX_ROLES_PER_USER`] of the longest names) signed with RSA 4096.
pub const MAX_TOKEN_BYTES: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

/// Why a token was not accepted or not made. [`crate::error`] says what the
/// client is told for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed, has a bad signature, or was not issued by this gateway")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("a refresh token was sent where an access token is needed")]
    AccessRequired,
    #[error("an access token was sent where a refresh token is needed")]
    RefreshRequired,
    /// Signing failed (logged where it happened): the gateway's fault.
    #[error("signing failed")]
    Signing,
}

/// Why the signing and verifying keys could not be loaded, or a new key pair
/// not made ([`keygen`]): start-up and CLI errors, shown to the operator as
/// they are, never to a client.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key `{kid}`: cannot read {}: {source}", path.display())]
    Read { kid: String, path: PathBuf, source: std::io::Error },
    #[error("key `{kid}`: {source}")]
    Invalid { kid: String, source: jsonwebtoken::errors::Error },
    #[error("key `{kid}` has no private_key")]
    NoPrivateKey { kid: String },
    #[error("no signing key: set tokens.signing_key or the HS256 secret")]
    NoSigningKey,
    #[error(transparent)]
    Jwks(#[from] serde_json::Error),
    #[error("key generation failed: {0}")]
    Generation(Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// The claims of every token Gatehouse issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (RFC 7519).
    pub sub: String,
    /// 128 random bits, base64url: the handle for revoking this one token.
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    #[serde(rename = "type")]
    pub kind: TokenKind,
    pub fresh: bool,
    pub is_admin: bool,
    /// The roles the account held when the access token was issued (`admin`
    /// when `is_admin`), for clients to read: nothing may decide on it, the
    /// gateway decides on the account's current roles. Absent when there are
    /// none, in refresh tokens, and in tokens from before roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// The user's token version at issue; see [`crate::store::User::token_version`].
    pub ver: u64,
    /// The login session this token belongs to: every token minted from one
    /// password login (and its refreshes) shares it, so a replayed refresh
    /// token can revoke the whole family.
    pub fam: String,
    /// The double-submit CSRF value of a token issued as a cookie (see
    /// [`crate::cookies`]): a cookie-authenticated request that changes
    /// state must send it in the CSRF header. Absent in tokens not issued
    /// as cookies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

impl Claims {
    pub fn user_id(&self) -> Result<u64, TokenError> {
        self.sub.parse().map_err(|_| TokenError::Invalid)
    }
}

/// A short-lived statement, signed by the gateway, of who is calling the
/// upstream and for which request (`X-Auth-Assertion`). Upstreams verify it
/// with the published JWK set instead of trusting plain headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assertion {
    pub iss: String,
    /// The upstream's name (`upstream.name`).
    pub aud: String,
    /// The caller; absent for an anonymous request (optional and public routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub admin: bool,
    /// The caller's roles as the gateway decided them (`admin` included), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    pub fresh: bool,
    pub method: String,
    pub path: String,
    /// The `jti` of the caller's access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_jti: Option<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// A signed token and its claims.
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

pub struct TokenService {
    /// Signs new tokens: the configured signing key, else the HS256 secret.
    encoding: EncodingKey,
    header: Header,
    /// Verifies tokens without a `kid`: the HS256 secret, when there is one,
    /// keyed once here rather than for every token ([`verify`]).
    hmac: Option<verify::Hs256Key>,
    /// Verifies tokens with a `kid`, each pinned to its key's algorithm.
    keys: HashMap<String, (DecodingKey, Validation)>,
    /// HS256 validation; also the template for the per-key ones.
    validation: Validation,
    /// The public keys as a JWK set (`/.well-known/jwks.json`).
    jwks: Vec<u8>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    verified_cache_size: usize,
}

impl TokenService {
    /// With `[[tokens.keys]]`: every key verifies tokens carrying its `kid`,
    /// the signing key (if any) signs, and the HS256 secret (if any) still
    /// verifies tokens without a `kid`.
    pub fn with_keys(config: &TokenConfig, secret: Option<&Secret>) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        let mut jwks = Vec::new();
        let mut signer = None;
        for key in &config.keys {
            let read = |path: &Path| {
                std::fs::read(path).map_err(|source| KeyError::Read {
                    kid: key.kid.clone(),
                    path: path.to_owned(),
                    source,
                })
            };
            let public = read(&key.public_key)?;
            let bad = |source| KeyError::Invalid { kid: key.kid.clone(), source };
            let (algorithm, decoding) = match key.algorithm {
                KeyAlgorithm::EdDsa => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&public).map_err(bad)?),
                KeyAlgorithm::Es256 => (Algorithm::ES256, DecodingKey::from_ec_pem(&public).map_err(bad)?),
                KeyAlgorithm::Rs256 => (Algorithm::RS256, DecodingKey::from_rsa_pem(&public).map_err(bad)?),
            };
            let mut jwk = Jwk::from_decoding_key(&decoding, Some(algorithm)).map_err(bad)?;
            jwk.common.key_id = Some(key.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwks.push(jwk);
            if config.signing_key.as_deref() == Some(key.kid.as_str()) {
                let path = key
                    .private_key
                    .as_ref()
                    .ok_or_else(|| KeyError::NoPrivateKey { kid: key.kid.clone() })?;
                let private = read(path)?;
                let encoding = match key.algorithm {
                    KeyAlgorithm::EdDsa => EncodingKey::from_ed_pem(&private),
                    KeyAlgorithm::Es256 => EncodingKey::from_ec_pem(&private),
                    KeyAlgorithm::Rs256 => EncodingKey::from_rsa_pem(&private),
                }
                .map_err(bad)?;
                let mut header = Header::new(algorithm);
                header.kid = Some(key.kid.clone());
                signer = Some((encoding, header));
            }
            keys.insert(key.kid.clone(), (decoding, validation(config, algorithm)));
        }
        let (encoding, header) = match (signer, secret) {
            (Some(signer), _) => signer,
            (None, Some(secret)) => {
                (EncodingKey::from_secret(secret.expose()), Header::new(Algorithm::HS256))
            }
            (None, None) => return Err(KeyError::NoSigningKey),
        };
        let jwks = serde_json::to_vec(&JwkSet { keys: jwks })?;
        Ok(TokenService {
            encoding,
            header,
            hmac: secret.and_then(|s| verify::hs256_key(s.expose())),
            keys,
            validation: validation(config, Algorithm::HS256),
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            access_ttl: config.access_ttl,
            refresh_ttl: config.refresh_ttl,
            verified_cache_size: config.verified_cache_size,
        })
    }

    /// Signs an identity assertion with the active signing key.
    pub fn sign_assertion(&self, assertion: &Assertion) -> Result<String, TokenError> {
        jsonwebtoken::encode(&self.header, assertion, &self.encoding).map_err(|e| {
            tracing::error!(error = %e, "signing an assertion failed");
            TokenError::Signing
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys as a JWK set; never private material.
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    pub fn verified_cache_size(&self) -> usize {
        self.verified_cache_size
    }

    /// The checks that depend on time or on the expected type, for claims
    /// whose signature was verified earlier (the verified-token cache).
    pub fn check_cached(&self, claims: &Claims, expected: TokenKind) -> Result<(), TokenError> {
        let now = now_unix();
        let leeway = self.validation.leeway;
        if claims.exp < now.saturating_sub(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + leeway {
            return Err(TokenError::NotYetValid);
        }
        check_kind(expected, claims.kind)
    }

    pub fn issue(
        &self,
        user: &User,
        kind: TokenKind,
        fresh: bool,
        family: &str,
    ) -> Result<Issued, TokenError> {
        self.issue_with_csrf(user, kind, fresh, family, None)
    }

    /// [`Self::issue`], for a token set as a cookie: `csrf` is its
    /// double-submit value.
    pub fn issue_with_csrf(
        &self,
        user: &User,
        kind: TokenKind,
        fresh: bool,
        family: &str,
        csrf: Option<&str>,
    ) -> Result<Issued, TokenError> {
        let now = now_unix();
        let ttl = match kind {
            TokenKind::Access => self.access_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        };
        let claims = Claims {
            sub: user.id.to_string(),
            jti: new_token_id(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            kind,
            fresh: fresh && kind == TokenKind::Access,
            is_admin: user.is_admin,
            // Only access tokens say it: a refresh token lives for weeks.
            roles: if kind == TokenKind::Access { user.held_roles() } else { Vec::new() },
            ver: user.token_version,
            fam: family.to_owned(),
            csrf: csrf.map(str::to_owned),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.encoding).map_err(|e| {
            tracing::error!(error = %e, "signing a token failed");
            TokenError::Signing
        })?;
        Ok(Issued { token, claims })
    }
}

/// A refresh token can't stand in for an access token, nor the reverse.
fn check_kind(expected: TokenKind, actual: TokenKind) -> Result<(), TokenError> {
    match (expected, actual) {
        (TokenKind::Access, TokenKind::Refresh) => Err(TokenError::AccessRequired),
        (TokenKind::Refresh, TokenKind::Access) => Err(TokenError::RefreshRequired),
        _ => Ok(()),
    }
}

/// The checks every token gets, for one pinned algorithm.
fn validation(config: &TokenConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = config.leeway.as_secs();
    validation
}

/// A new login-session (refresh family) id.
pub fn new_family_id() -> String {
    new_token_id()
}

fn new_token_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use crate::error::ApiError;

    fn service_with(secret: &str, ttl: Duration) -> TokenService {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, secret).unwrap();
        let secret = SecretSource { env: None, file: Some(path), purpose: "test" }.load().unwrap();
        let config = TokenConfig {
            secret: SecretSource { env: None, file: None, purpose: "test" },
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            access_ttl: ttl,
            refresh_ttl: ttl * 10,
            leeway: Duration::ZERO,
            verified_cache_size: 0,
            keys: Vec::new(),
            signing_key: None,
        };
        TokenService::with_keys(&config, Some(&secret)).unwrap()
    }

    fn user() -> User {
        User {
            id: 7,
            email: "a@b.c".into(),
            username: "a".into(),
            password_hash: String::new(),
            is_admin: true,
            roles: Vec::new(),
            blocked: false,
            created_at: 0,
            token_version: 3,
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_keeps_every_claim() {
        let svc = service_with(SECRET, Duration::from_secs(60));
        let issued = svc.issue(&user(), TokenKind::Access, true, "f").unwrap();
        let claims = svc.verify(&issued.token, TokenKind::Access).unwrap();
        assert_eq!(claims, issued.claims);
        assert!(claims.fresh && claims.is_admin);
        assert_eq!((claims.sub.as_str(), claims.ver), ("7", 3));
        assert_eq!(claims.exp - claims.iat, 60);
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&claims.jti).unwrap().len(), 16);
    }

    /// The largest claim set an account can earn (every role, each of the
    /// longest name) fits the token bound with room for RSA 4096's 683-byte
    /// signature, and only access tokens carry it.
    #[test]
    fn a_token_naming_every_role_an_account_may_hold_is_accepted() {
        let svc = service_with(SECRET, Duration::from_secs(60));
        let mut user = user();
        user.roles = (0..crate::roles::MAX_ROLES_PER_USER)
            .map(|n| crate::roles::Role::parse(&format!("{n:02}{}", "x".repeat(62))).unwrap())
            .collect();
        let issued = svc.issue(&user, TokenKind::Access, true, "f").unwrap();
        assert_eq!(issued.claims.roles.len(), crate::roles::MAX_ROLES_PER_USER + 1, "and admin");
        let hs256_signature = 43;
        assert!(issued.token.len() - hs256_signature + 683 <= MAX_TOKEN_BYTES, "{}", issued.token.len());
        assert_eq!(svc.verify(&issued.token, TokenKind::Access).unwrap(), issued.claims);
        let refresh = svc.issue(&user, TokenKind::Refresh, true, "f").unwrap();
        assert!(refresh.claims.roles.is_empty(), "refresh tokens name no roles");
        assert!(!refresh.token.contains("roles"));
    }

    #[test]
    fn token_types_do_not_cross() {
        let svc = service_with(SECRET, Duration::from_secs(60));
        let refresh = svc.issue(&user(), TokenKind::Refresh, true, "f").unwrap();
        assert!(!refresh.claims.fresh, "refresh tokens are never fresh");
        assert_eq!(
            svc.verify(&refresh.token, TokenKind::Access).map_err(ApiError::from),
            Err(ApiError::AccessTokenRequired)
        );
        let access = svc.issue(&user(), TokenKind::Access, false, "f").unwrap();
        assert_eq!(
            svc.verify(&access.token, TokenKind::Refresh).map_err(ApiError::from),
            Err(ApiError::RefreshTokenRequired)
        );
    }

    #[test]
    fn foreign_and_tampered_tokens_are_invalid() {
        let svc = service_with(SECRET, Duration::from_secs(60));
        let other = service_with("another-secret-another-secret-another", Duration::from_secs(60));
        let token = other.issue(&user(), TokenKind::Access, true, "f").unwrap().token;
        assert_eq!(
            svc.verify(&token, TokenKind::Access).map_err(ApiError::from),
            Err(ApiError::InvalidToken)
        );
        let good = svc.issue(&user(), TokenKind::Access, false, "f").unwrap().token;
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"7","fresh":true}"#);
        parts[1] = &forged;
        assert_eq!(
            svc.verify(&parts.join("."), TokenKind::Access).map_err(ApiError::from),
            Err(ApiError::InvalidToken)
        );
        assert_eq!(
            svc.verify("not a token", TokenKind::Access).map_err(ApiError::from),
            Err(ApiError::InvalidToken)
        );
        assert_eq!(
            svc.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), TokenKind::Access).map_err(ApiError::from),
            Err(ApiError::InvalidToken)
        );
    }

    #[test]
    fn expired_tokens_say_so() {
        let svc = service_with(SECRET, Duration::from_secs(60));
        let mut claims = svc.issue(&user(), TokenKind::Access, true, "f").unwrap().claims;
        claims.exp = now_unix() - 10;
        let token = jsonwebtoken::encode(&svc.header, &claims, &svc.encoding).unwrap();
        assert_eq!(
            svc.verify(&token, TokenKind::Access).map_err(ApiError::from),
            Err(ApiError::TokenExpired)
        );
    }
}
