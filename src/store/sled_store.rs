//! The embedded store: sled 0.34 (stable line).
//!
//! Trees: `users` (id -> JSON user), `emails` and `usernames` (comparison
//! key, see [`crate::identity_text`] -> id), `revoked` (jti -> expiry,
//! big-endian u64, and why), `families` (revoked login sessions -> expiry)
//! and `meta` (the user id counter and the index version). sled holds an
//! exclusive file lock, so only one process opens a store at a time; the CLI
//! falls back to the running gateway's admin API when it finds the lock taken.
//!
//! A store written before the `usernames` index existed (its `meta` has no
//! `index_version`) gets both indexes rebuilt from `users` when it is opened:
//! every email and username keyed by its comparison key, in id order. ASCII
//! emails keep the keys they had. Where two existing accounts now share a
//! key, the older one (lower id) keeps the index entry and a warning names
//! both: nothing is deleted and the gateway starts; the newer account can no
//! longer log in by that email (an operator can change or delete it).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::user_cache::UserCache;
use super::{
    EmailLookup, Identifiers, Revocation, RevocationEntry, RevocationKind, Store, StoreError, User,
    UserChange, UserId,
};
use crate::clock::now_unix;

/// The `meta` key for the version of the `emails`/`usernames` indexes.
const INDEX_VERSION_KEY: &[u8] = b"index_version";
/// 1: both indexes keyed by [`crate::identity_text::comparison_key`].
const INDEX_VERSION: u64 = 1;

pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    emails: sled::Tree,
    usernames: sled::Tree,
    revoked: sled::Tree,
    families: sled::Tree,
    meta: sled::Tree,
    /// Decoded user records, so the per-request account check skips JSON.
    user_cache: UserCache,
}

/// A revocation entry: the token's expiry (big-endian) and why it is listed.
fn entry(expires_at: u64, why: Revocation) -> [u8; 9] {
    let mut bytes = [0; 9];
    bytes[..8].copy_from_slice(&expires_at.to_be_bytes());
    bytes[8] = match why {
        Revocation::Revoked => 0,
        Revocation::Retired => 1,
    };
    bytes
}

fn entry_expiry(value: &[u8]) -> u64 {
    value.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes)
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).open().map_err(|e| {
            let text = e.to_string();
            if text.contains("could not acquire lock") {
                StoreError::Locked { path: path.display().to_string() }
            } else {
                StoreError::Backend(format!("cannot open {}: {text}", path.display()))
            }
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        let store = SledStore {
            users: tree("users")?,
            emails: tree("emails")?,
            usernames: tree("usernames")?,
            revoked: tree("revoked")?,
            families: tree("families")?,
            meta: tree("meta")?,
            user_cache: UserCache::new(),
            db,
        };
        store.upgrade_indexes()?;
        Ok(store)
    }

    /// Rebuilds the `emails` and `usernames` indexes from `users` unless
    /// `meta` says they are current (see the module documentation). The
    /// version is written last, so an interrupted rebuild runs again.
    fn upgrade_indexes(&self) -> Result<(), StoreError> {
        let current = self
            .meta
            .get(INDEX_VERSION_KEY)
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes);
        if current.is_some_and(|v| v >= INDEX_VERSION) {
            return Ok(());
        }
        let mut emails: std::collections::HashMap<String, UserId> = std::collections::HashMap::new();
        let mut usernames: std::collections::HashMap<String, UserId> = std::collections::HashMap::new();
        // Big-endian ids: the tree iterates oldest first, so the oldest account keeps a shared key.
        for item in self.users.iter() {
            let (id, record) = item.map_err(backend)?;
            let user = match Self::decode(&record) {
                Ok(user) => user,
                Err(e) => {
                    // Not a reason to keep the gateway down: the record is unusable either way.
                    tracing::error!(key = ?id, error = %e, "skipping a corrupt user record while indexing");
                    continue;
                }
            };
            let (email_key, username_key) = Identifiers::of(&user);
            for (index, key, what) in
                [(&mut emails, email_key, "email"), (&mut usernames, username_key, "username")]
            {
                match index.get(&key) {
                    Some(&first) => tracing::warn!(
                        user_id = user.id,
                        kept_by = first,
                        index = what,
                        "two accounts have the same {what} once normalised: the older account keeps it"
                    ),
                    None => {
                        index.insert(key, user.id);
                    }
                }
            }
        }
        for (tree, index) in [(&self.emails, &emails), (&self.usernames, &usernames)] {
            tree.clear().map_err(backend)?;
            let mut batch = sled::Batch::default();
            for (key, id) in index {
                batch.insert(key.as_bytes(), &id.to_be_bytes());
            }
            tree.apply_batch(batch).map_err(backend)?;
        }
        self.meta.insert(INDEX_VERSION_KEY, &INDEX_VERSION.to_be_bytes()).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        if !emails.is_empty() {
            tracing::info!(users = emails.len(), "rebuilt the email and username indexes");
        }
        Ok(())
    }

    /// Loads many revocations in one batch with one flush at the end: for
    /// migrations and for benchmarks that need a large revocation list.
    pub fn import_revocations(
        &self,
        entries: impl IntoIterator<Item = (String, u64)>,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut batch = sled::Batch::default();
        for (jti, expires_at) in entries {
            batch.insert(jti.as_bytes(), &entry(expires_at, Revocation::Revoked));
            count += 1;
            if count % 10_000 == 0 {
                self.revoked.apply_batch(std::mem::take(&mut batch)).map_err(backend)?;
            }
        }
        self.revoked.apply_batch(batch).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        Ok(count)
    }

    /// Every revocation entry, expired or not (for `gatehouse migrate`).
    pub fn revocations(&self) -> Result<Vec<RevocationEntry>, StoreError> {
        let mut entries = Vec::new();
        for (tree, family) in [(&self.revoked, false), (&self.families, true)] {
            for item in tree.iter() {
                let (key, value) = item.map_err(backend)?;
                let kind = match (family, value.get(8)) {
                    (true, _) => RevocationKind::Family,
                    (false, Some(1)) => RevocationKind::Token(Revocation::Retired),
                    (false, _) => RevocationKind::Token(Revocation::Revoked),
                };
                let id = String::from_utf8(key.to_vec())
                    .map_err(|_| StoreError::Corrupt("a revocation key is not UTF-8".into()))?;
                entries.push(RevocationEntry { id, kind, expires_at: entry_expiry(&value) });
            }
        }
        Ok(entries)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(|_| ()).map_err(backend)
    }

    fn decode(bytes: &[u8]) -> Result<User, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("user record: {e}")))
    }

    fn encode(user: &User) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(user).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[async_trait]
impl Store for SledStore {
    async fn create_checked(
        &self,
        identifiers: Identifiers,
        password_hash: String,
        is_admin: bool,
    ) -> Result<User, StoreError> {
        // Dense ids (1, 2, 3...), unlike sled's generate_id which leaps after a restart.
        let id = self
            .meta
            .update_and_fetch(b"last_user_id", |old| {
                let last = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
                Some((last + 1).to_be_bytes().to_vec())
            })
            .map_err(backend)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt("user id counter".into()))?;
        let user = User {
            id,
            email: identifiers.email,
            username: identifiers.username,
            password_hash,
            is_admin,
            blocked: false,
            created_at: now_unix(),
            token_version: 0,
            roles: Vec::new(),
        };
        let record = Self::encode(&user)?;
        let (email_key, username_key) =
            (identifiers.email_key.as_bytes(), identifiers.username_key.as_bytes());
        let result =
            (&self.users, &self.emails, &self.usernames).transaction(|(users, emails, usernames)| {
                if emails.get(email_key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::EmailTaken));
                }
                if usernames.get(username_key)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(StoreError::UsernameTaken));
                }
                emails.insert(email_key, &id.to_be_bytes())?;
                usernames.insert(username_key, &id.to_be_bytes())?;
                users.insert(&id.to_be_bytes(), record.as_slice())?;
                Ok(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(backend(e)),
        }
        self.flush().await?;
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<Arc<User>>, StoreError> {
        if let Some(user) = self.user_cache.get(id) {
            return Ok(Some(user));
        }
        let epoch = self.user_cache.epoch();
        let Some(bytes) = self.users.get(id.to_be_bytes()).map_err(backend)? else { return Ok(None) };
        let user = Arc::new(Self::decode(&bytes)?);
        self.user_cache.fill(Arc::clone(&user), epoch);
        Ok(Some(user))
    }

    async fn user_by_email(&self, email: &EmailLookup<'_>) -> Result<Option<Arc<User>>, StoreError> {
        let Some(id) = self.emails.get(email.key().as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        let id =
            <[u8; 8]>::try_from(id.as_ref()).map_err(|_| StoreError::Corrupt("email index entry".into()))?;
        self.user(u64::from_be_bytes(id)).await
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.users.iter().values().map(|v| Self::decode(&v.map_err(backend)?)).collect()
    }

    async fn change_user(&self, id: UserId, change: UserChange) -> Result<Option<User>, StoreError> {
        let key = id.to_be_bytes();
        let mut updated = None;
        let mut failure = None;
        self.users
            .fetch_and_update(key, |old| {
                let mut user = Self::decode(old?).map_err(|e| failure = Some(e)).ok()?;
                match &change {
                    UserChange::SetAdmin(admin) => user.is_admin = *admin,
                    UserChange::SetBlocked(blocked) => {
                        if *blocked && !user.blocked {
                            user.token_version += 1;
                        }
                        user.blocked = *blocked;
                    }
                    UserChange::RevokeAllTokens => user.token_version += 1,
                    // A full role list leaves the record as it was; the caller sees the role missing.
                    UserChange::AddRole(role) => _ = user.apply_role_change(role, true),
                    UserChange::RemoveRole(role) => _ = user.apply_role_change(role, false),
                }
                let bytes = Self::encode(&user).map_err(|e| failure = Some(e)).ok();
                updated = Some(user);
                bytes
            })
            .map_err(backend)?;
        self.user_cache.forget(id);
        if let Some(e) = failure {
            return Err(e);
        }
        self.flush().await?;
        Ok(updated)
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let result =
            (&self.users, &self.emails, &self.usernames).transaction(|(users, emails, usernames)| {
                let Some(old) = users.remove(&id.to_be_bytes())? else {
                    return Ok(false);
                };
                let user = Self::decode(&old).map_err(ConflictableTransactionError::Abort)?;
                let (email_key, username_key) = Identifiers::of(&user);
                // Only this user's entries: an older account may hold a shared key.
                for (index, key) in [(emails, email_key), (usernames, username_key)] {
                    if index.get(key.as_bytes())?.is_some_and(|owner| owner.as_ref() == id.to_be_bytes()) {
                        index.remove(key.as_bytes())?;
                    }
                }
                Ok(true)
            });
        let existed = match result {
            Ok(existed) => existed,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(backend(e)),
        };
        self.user_cache.forget(id);
        self.flush().await?;
        Ok(existed)
    }

    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        self.revoked.insert(jti.as_bytes(), &entry(expires_at, Revocation::Revoked)).map_err(backend)?;
        self.flush().await
    }

    async fn revocation(&self, jti: &str) -> Result<Option<Revocation>, StoreError> {
        Ok(self.revoked.get(jti.as_bytes()).map_err(backend)?.map(|v| match v.get(8) {
            Some(1) => Revocation::Retired,
            _ => Revocation::Revoked,
        }))
    }

    async fn retire(&self, jti: &str, expires_at: u64) -> Result<bool, StoreError> {
        let swapped = self
            .revoked
            .compare_and_swap(
                jti.as_bytes(),
                None as Option<&[u8]>,
                Some(&entry(expires_at, Revocation::Retired)[..]),
            )
            .map_err(backend)?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    async fn revoke_family(&self, family: &str, expires_at: u64) -> Result<(), StoreError> {
        self.families.insert(family.as_bytes(), &expires_at.to_be_bytes()).map_err(backend)?;
        self.flush().await
    }

    async fn is_family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        self.families.contains_key(family.as_bytes()).map_err(backend)
    }

    async fn revoked_count(&self) -> Result<usize, StoreError> {
        Ok(self.revoked.len() + self.families.len())
    }

    async fn purge_expired_revocations(&self, now: u64) -> Result<usize, StoreError> {
        let mut purged = 0;
        for tree in [&self.revoked, &self.families] {
            for item in tree.iter() {
                let (key, value) = item.map_err(backend)?;
                if entry_expiry(&value) < now {
                    tree.remove(key).map_err(backend)?;
                    purged += 1;
                }
            }
        }
        if purged > 0 {
            self.flush().await?;
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        assert!(matches!(SledStore::open(dir.path()), Err(StoreError::Locked { .. })));
    }

    #[tokio::test]
    async fn revocations_expire_and_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.revoke("old", 100).await.unwrap();
        store.revoke("new", 10_000).await.unwrap();
        store.revoke_family("fam-old", 100).await.unwrap();
        assert_eq!(store.revocation("old").await.unwrap(), Some(Revocation::Revoked));
        assert_eq!(store.revoked_count().await.unwrap(), 3);
        assert_eq!(store.purge_expired_revocations(5_000).await.unwrap(), 2);
        assert_eq!(store.revocation("old").await.unwrap(), None);
        assert!(!store.is_family_revoked("fam-old").await.unwrap());
        assert_eq!(store.revocation("new").await.unwrap(), Some(Revocation::Revoked));
        assert_eq!(store.revoked_count().await.unwrap(), 1);
    }
}
