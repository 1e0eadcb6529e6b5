//! Moving a single gateway's sled store into Redis, to scale out.
//!
//! Users keep their ids, password hashes and token versions, so tokens
//! already issued stay valid; only revocations still live are copied, since
//! the rest guard tokens that have expired anyway. Records are written with
//! the content they already have, so running it again is harmless.

use std::collections::HashSet;

use crate::identity_text::comparison_key;
use crate::store::{ImportClaims, RedisStore, SledStore, Store, StoreError, UserId};

/// What a migration copied.
#[derive(Debug)]
pub struct Migration {
    pub users: usize,
    /// Revocations still live (expired ones are skipped).
    pub revocations: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Source(StoreError),
    #[error("cannot index the users in redis: {0}")]
    Index(StoreError),
    #[error("user {id} ({email}): the email belongs to another user in redis")]
    EmailTaken { id: UserId, email: String },
    #[error("user {id} ({username}): the username belongs to another user in redis")]
    UsernameTaken { id: UserId, username: String },
    #[error("user {id}: {error}")]
    User { id: UserId, error: StoreError },
    #[error("revocation {id}: {error}")]
    Revocation { id: String, error: StoreError },
}

/// Copies every user and every live revocation from `sled` into `redis`.
/// `note` hears of each account that loses an email or username to an older
/// one (two accounts that only became alike under today's normalisation).
pub async fn sled_to_redis(
    sled: &SledStore,
    redis: &RedisStore,
    mut note: impl FnMut(&str),
) -> Result<Migration, MigrateError> {
    let users = sled.users().await.map_err(MigrateError::Source)?;
    // Users already in redis get their index entries by comparison key first.
    redis.upgrade_indexes().await.map_err(MigrateError::Index)?;
    // Oldest first, as sled's own index: where two accounts share an email
    // or username once normalised, the older one keeps it.
    let (mut emails, mut usernames) = (HashSet::new(), HashSet::new());
    for user in &users {
        let claim = ImportClaims {
            email: emails.insert(comparison_key(&user.email)),
            username: usernames.insert(comparison_key(&user.username)),
        };
        for (what, claimed) in [("email", claim.email), ("username", claim.username)] {
            if !claimed {
                note(&format!(
                    "user {} shares its {what} with an older account once normalised: the older one keeps it",
                    user.id
                ));
            }
        }
        redis.import_user(user, claim).await.map_err(|e| match e {
            StoreError::EmailTaken => MigrateError::EmailTaken { id: user.id, email: user.email.clone() },
            StoreError::UsernameTaken => {
                MigrateError::UsernameTaken { id: user.id, username: user.username.clone() }
            }
            error => MigrateError::User { id: user.id, error },
        })?;
    }
    let mut revocations = 0;
    for entry in sled.revocations().map_err(MigrateError::Source)? {
        let id = entry.id.clone();
        if redis.import_revocation(entry).await.map_err(|error| MigrateError::Revocation { id, error })? {
            revocations += 1;
        }
    }
    Ok(Migration { users: users.len(), revocations })
}
