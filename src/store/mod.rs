//! Persistent state: users and revoked tokens, behind the narrow [`Store`]
//! trait so a shared backend (Redis, for several gateways) can stand in for
//! the embedded sled database without the gateway noticing.
//!
//! Every write that the gateway acknowledges to a client (a revocation, a
//! block, a deletion) is durable when the method returns: flushed to disk
//! (sled), or confirmed by Redis and by `wait_replicas` replicas (Redis).
//!
//! [`SledStore`] serves one gateway; [`RedisStore`] lets several share users,
//! revocations and login limits.

#[cfg(feature = "server")]
pub mod migrate;
#[cfg(feature = "server")]
mod redis_store;
mod retention;
mod sled_store;
mod user_cache;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::identity_text;
use crate::roles::{self, Role, MAX_ROLES_PER_USER};

#[cfg(feature = "server")]
pub(crate) use redis_store::{pool::Pool as RedisPool, Keys as RedisKeys};
#[cfg(feature = "server")]
pub use redis_store::{ImportClaims, RedisStore};
pub use retention::Retention;
pub use sled_store::SledStore;

pub type UserId = u64;

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// As registered, in NFKC and lower case (see [`crate::identity_text`]).
    /// Unique by its [`comparison_key`](crate::identity_text::comparison_key):
    /// logins look it up by that key.
    pub email: String,
    /// As registered, in NFKC with its case kept. Unique by its comparison key.
    pub username: String,
    /// Argon2id PHC string. Never logged, never sent to clients.
    pub password_hash: String,
    pub is_admin: bool,
    pub blocked: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Carried in every token as `ver`; bumping it revokes all the user's
    /// tokens at once without listing them.
    pub token_version: u64,
    /// Roles besides `admin` (which is `is_admin`): sorted, no duplicates, at
    /// most [`MAX_ROLES_PER_USER`]. Records written before roles existed have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "roles::deserialize_stored")]
    pub roles: Vec<Role>,
}

impl User {
    /// Every role the account holds, `admin` included when it is one, sorted.
    pub fn held_roles(&self) -> Vec<Role> {
        roles::held(&self.roles, self.is_admin)
    }

    /// Applies a role change to the record: `false` if it can't be applied
    /// because the account already holds [`MAX_ROLES_PER_USER`] roles.
    pub(crate) fn apply_role_change(&mut self, role: &Role, add: bool) -> bool {
        if role.is_admin() {
            self.is_admin = add;
            return true;
        }
        match (self.roles.binary_search(role), add) {
            (Ok(_), true) | (Err(_), false) => {}
            (Err(at), true) if self.roles.len() < MAX_ROLES_PER_USER => self.roles.insert(at, role.clone()),
            (Err(_), true) => return false,
            (Ok(at), false) => {
                self.roles.remove(at);
            }
        }
        true
    }
}

/// Why a token id is on the revocation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Logged out or revoked by an operator.
    Revoked,
    /// A refresh token already exchanged by `/refresh`: seeing it again means
    /// it was copied.
    Retired,
}

/// A revocation entry as stored, for copying between stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEntry {
    pub id: String,
    pub kind: RevocationKind,
    /// The revoked token's (or session's) expiry, unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationKind {
    Token(Revocation),
    Family,
}

/// What a caller supplies to create an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub is_admin: bool,
}

/// A change to an existing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    SetAdmin(bool),
    /// Blocking also revokes every token the user holds.
    SetBlocked(bool),
    RevokeAllTokens,
    /// Adding `admin` sets the admin flag. Refused (the record is left as it
    /// was) when the account already holds [`MAX_ROLES_PER_USER`] roles.
    AddRole(Role),
    /// Removing `admin` clears the admin flag.
    RemoveRole(Role),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("an account with this username already exists")]
    UsernameTaken,
    /// The email or username breaks the rules of [`crate::identity_text`].
    #[error("{0}")]
    InvalidIdentity(String),
    #[error("the store at {path} is in use by another process (is the gateway running?)")]
    Locked { path: String },
    #[error("store failure: {0}")]
    Backend(String),
    /// The store can't be reached right now (a shared store's server is down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Logs a failure that refuses a request, where it is handled. An outage
    /// is logged once where it is noticed (the Redis subscriber), not once
    /// per refused request: here it is only a debug line.
    pub fn log(&self) {
        match self {
            StoreError::Unavailable(_) => tracing::debug!(error = %self, "store unavailable"),
            _ => tracing::error!(error = %self, "store operation failed"),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates an account from identifiers already checked: refused if its
    /// email or username is taken by comparison key ([`StoreError::EmailTaken`],
    /// checked first, then [`StoreError::UsernameTaken`]).
    async fn create_checked(
        &self,
        identifiers: Identifiers,
        password_hash: String,
        is_admin: bool,
    ) -> Result<User, StoreError>;
    /// Checks the email and username ([`StoreError::InvalidIdentity`]), then
    /// [`Store::create_checked`].
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let identifiers = Identifiers::check(&user.email, &user.username)
            .map_err(|e| StoreError::InvalidIdentity(e.to_string()))?;
        self.create_checked(identifiers, user.password_hash, user.is_admin).await
    }
    /// The current record: called on every authenticated request, so backends cache it
    /// and must never serve a record older than an acknowledged change.
    async fn user(&self, id: UserId) -> Result<Option<Arc<User>>, StoreError>;
    /// The account whose email has the lookup's comparison key.
    async fn user_by_email(&self, email: &EmailLookup<'_>) -> Result<Option<Arc<User>>, StoreError>;
    async fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Applies a change durably; `None` if the user does not exist.
    async fn change_user(&self, id: UserId, change: UserChange) -> Result<Option<User>, StoreError>;
    /// Deletes durably; `false` if the user did not exist.
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError>;
    /// Records a revoked token id until `expires_at` (unix seconds), durably.
    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), StoreError>;
    /// Whether (and how) a token id is no longer valid.
    async fn revocation(&self, jti: &str) -> Result<Option<Revocation>, StoreError>;
    /// Marks a refresh token as used by a rotation, durably and atomically:
    /// `false` if it was already retired or revoked (a replay).
    async fn retire(&self, jti: &str, expires_at: u64) -> Result<bool, StoreError>;
    /// Revokes every token of one login session (refresh-token family), durably.
    async fn revoke_family(&self, family: &str, expires_at: u64) -> Result<(), StoreError>;
    async fn is_family_revoked(&self, family: &str) -> Result<bool, StoreError>;
    /// Number of revocation entries (tokens and families) held.
    async fn revoked_count(&self) -> Result<usize, StoreError>;
    /// Drops revocation entries whose tokens expired before `now`; returns how many.
    async fn purge_expired_revocations(&self, now: u64) -> Result<usize, StoreError>;
    /// Whether the store can serve requests now (for `/readyz`).
    async fn health(&self) -> Result<(), StoreError> {
        self.revoked_count().await.map(drop)
    }
    /// Whether the last contact with the store worked, without asking again:
    /// the built-in endpoints answer 503 at once while it is `false`.
    fn is_reachable(&self) -> bool {
        true
    }
}

/// An email given to find an account (a login, an operator's lookup) with
/// the key it is looked up by, [`identity_text::comparison_key`], worked out
/// once: a login counts its attempts under the same key. For an ASCII
/// address the key is the trimmed, lower-cased address, as it always was.
#[derive(Debug, Clone)]
pub struct EmailLookup<'a> {
    given: &'a str,
    key: String,
}

impl<'a> EmailLookup<'a> {
    /// `None` for text longer than [`identity_text::MAX_INPUT_BYTES`] once
    /// trimmed, which is not normalised: no account has such an email.
    pub fn new(email: &'a str) -> Option<EmailLookup<'a>> {
        if email.trim().len() > identity_text::MAX_INPUT_BYTES {
            return None;
        }
        Some(EmailLookup { given: email, key: identity_text::comparison_key(email) })
    }

    /// The comparison key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key stores used before comparison keys: the email trimmed and
    /// lower-cased. Redis indexes may still hold it (see `redis_store`).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn legacy_key(&self) -> String {
        self.given.trim().to_lowercase()
    }
}

/// A new account's email and username, checked by [`identity_text`], in
/// their stored forms and with the keys the indexes use. Only
/// [`Identifiers::check`] makes one, so holding one means the rules were
/// applied: registrations check once, before the password is hashed.
#[derive(Debug, Clone)]
pub struct Identifiers {
    email: String,
    email_key: String,
    username: String,
    username_key: String,
}

impl Identifiers {
    pub fn check(email: &str, username: &str) -> Result<Identifiers, identity_text::Refusal> {
        let email = identity_text::validate_email(email)?;
        let username = identity_text::validate_username(username)?;
        Ok(Identifiers {
            email_key: identity_text::comparison_key(&email),
            username_key: identity_text::comparison_key(&username),
            email,
            username,
        })
    }

    /// The email in its stored form.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The username in its stored form.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The keys of a stored user, whatever rules it was created under.
    pub(crate) fn of(user: &User) -> (String, String) {
        (identity_text::comparison_key(&user.email), identity_text::comparison_key(&user.username))
    }
}
