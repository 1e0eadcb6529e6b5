//! The shared store: Redis, so several gateways behind one load balancer
//! agree on users, revocations and login limits.
//!
//! Layout under the configured prefix `P` (readable with `redis-cli`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P user:<id>` | hash | the user record, with the keys of its index entries (`email_key`, `username_key`) |
//! | `P email:<key>` | string | the user id for an email's comparison key ([`crate::identity_text`]) |
//! | `P username:<key>` | string | the user id for a username's comparison key |
//! | `P users` | set | every user id |
//! | `P last_user_id` | string | the id counter |
//! | `P index_version` | string | `1` once every user has its `email:`/`username:` entries by comparison key |
//! | `P revoked:<jti>` | string | `r <exp>` (revoked) or `t <exp>` (retired refresh token), expiring with the token |
//! | `P family:<id>` | string | `f <exp>`: a revoked login session, expiring with it |
//! | `P limit:...` | | login-limit counters, each with its own expiry |
//! | `P events` | channel | changes every gateway applies to its [`mirror`] |
//!
//! Every write is one Lua script (atomic in Redis) that also publishes its
//! event, and is acknowledged only after Redis answered it (and, with
//! `wait_replicas`, after that many replicas have it). How durable an
//! acknowledged write is on the Redis server itself is Redis's `appendonly`
//! and `appendfsync` setting; the README says what to choose.
//!
//! Users written before the `username:` index existed (no `P index_version`)
//! are indexed by comparison key in the background ([`indexes`]), never on a
//! request's path: each gateway looks when its store starts, again after
//! every reconnect, and when a registration finds the indexes outdated; one
//! run at a time per gateway, logged, indexing every user oldest first and
//! setting the version last. A run that fails is tried again later. Indexing
//! is idempotent, so gateways doing it at once agree. Where two existing
//! accounts share a key, the older keeps the entry and a warning names both;
//! nothing is deleted. `gatehouse migrate` indexes before it imports.
//!
//! Until the version is current:
//! * An email lookup (a login) also tries `P email:<the email trimmed and
//!   lower-cased>`, the key older versions wrote, in the same `MGET`, and
//!   prefers it: it is the entry the account was created with, so a login
//!   finds what it found before the upgrade. Accounts already indexed are
//!   found by comparison key. (For an ASCII email the two keys are the same.)
//! * Registrations are refused by the create script, atomically, since a
//!   duplicate can't be ruled out: the registration waits up to
//!   [`INDEX_WAIT`] for the background run (time enough for a fresh or small
//!   store), then gets `503 store_unavailable` ("the store is being
//!   re-indexed; try again shortly"). A one-off command's store (the CLI)
//!   has no background task: it indexes there and then.
//!
//! Gateways of an older version (during a rolling upgrade) create users
//! without a `username:` entry: once they are all replaced, `DEL P
//! index_version` makes each gateway index again at its next registration
//! (which is refused meanwhile, as above) or reconnect.
//!
//! Lookups on the request path (is this token revoked? the user record) are
//! answered from the local [`mirror`] while it is in step with Redis, and from
//! Redis itself otherwise. When Redis can't be reached either, the
//! `when_unreachable` setting decides: refuse (the default), or answer from
//! what this gateway last knew.

mod indexes;
mod keys;
mod mirror;
pub(crate) mod pool;
mod records;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use self::indexes::{Indexes, INDEX_VERSION};
use self::mirror::{parse_stored_value, stored_value, Event, Mirror};
use self::pool::Pool;
use self::records::{fetch_user, user_from_fields};
use self::scripts::Scripts;
use super::{
    EmailLookup, Identifiers, Retention, Revocation, RevocationEntry, RevocationKind, Store, StoreError,
    User, UserChange, UserId,
};
use crate::clock::now_unix;
use crate::config::{RedisConfig, WhenUnreachable};
use crate::roles::{self, MAX_ROLES_PER_USER};

pub(crate) use self::keys::Keys;

/// How long a registration waits for the indexes to be brought up to date
/// before it is refused (see the module documentation).
const INDEX_WAIT: Duration = Duration::from_secs(3);

/// Which index entries [`RedisStore::import_user`] takes for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportClaims {
    pub email: bool,
    pub username: bool,
}

pub struct RedisStore {
    pool: Arc<Pool>,
    mirror: Arc<Mirror>,
    keys: Arc<Keys>,
    when_unreachable: WhenUnreachable,
    /// How long past a token's expiry its revocation is kept.
    retention: Retention,
    scripts: Scripts,
    indexes: Arc<Indexes>,
    /// Whether a task keeps the indexes current (a gateway's store), or
    /// this store indexes when a registration needs it (a command's).
    indexes_in_background: bool,
    /// Runs the connection drivers and the subscriber. `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl RedisStore {
    /// Sets up the connections and starts following Redis, and keeping its
    /// indexes current, in the background. It does not wait for Redis: a
    /// gateway started while Redis is down answers 503 until Redis is back,
    /// then recovers by itself.
    pub fn start(config: &RedisConfig, grace: Duration) -> Result<RedisStore, StoreError> {
        let store = RedisStore::new(config, grace, true)?;
        if let Some(runtime) = &store.runtime {
            runtime.spawn(mirror::follow(
                Arc::clone(&store.pool),
                Arc::clone(&store.mirror),
                Arc::clone(&store.keys),
            ));
            runtime.spawn(indexes::maintain(Arc::clone(&store.indexes), Arc::clone(&store.mirror)));
        }
        Ok(store)
    }

    /// For a one-off command: no local copy to load (every lookup goes to
    /// Redis), and Redis must answer now.
    pub async fn for_command(config: &RedisConfig, grace: Duration) -> Result<RedisStore, StoreError> {
        let store = RedisStore::new(config, grace, false)?;
        store.pool.query::<redis::Value>(&redis::cmd("PING")).await?;
        Ok(store)
    }

    fn new(
        config: &RedisConfig,
        grace: Duration,
        indexes_in_background: bool,
    ) -> Result<RedisStore, StoreError> {
        let password = match &config.password {
            Some(source) => Some(
                String::from_utf8(
                    source
                        .load_any_length()
                        .map_err(|e| StoreError::Backend(e.to_string()))?
                        .expose()
                        .to_vec(),
                )
                .map_err(|_| StoreError::Backend("the redis password is not UTF-8".into()))?,
            ),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gatehouse-redis")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the redis runtime: {e}")))?;
        let pool = Arc::new(Pool::new(config, password, runtime.handle().clone())?);
        let mirror = Arc::new(Mirror::new());
        let keys = Arc::new(Keys::new(&config.key_prefix));
        let indexes = Arc::new(Indexes::new(Arc::clone(&pool), Arc::clone(&keys)));
        Ok(RedisStore {
            pool,
            mirror,
            keys,
            when_unreachable: config.when_unreachable,
            retention: Retention::new(grace),
            scripts: Scripts::new(),
            indexes,
            indexes_in_background,
            runtime: Some(runtime),
        })
    }

    /// Waits until the local mirror is in step with Redis.
    pub async fn wait_until_synced(&self, patience: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        while !self.mirror.is_synced() {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!("not in step with redis after {patience:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub(crate) fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// Writes a user record as it is, id included (for `gatehouse migrate`),
    /// and gives it the email and username index entries. With `claim` false
    /// for one of them, the record is written without taking that entry (an
    /// account that shares it with an older one in the source store).
    pub async fn import_user(&self, user: &User, claim: ImportClaims) -> Result<(), StoreError> {
        let (email_key, username_key) = Identifiers::of(user);
        let flag = |claim: bool| if claim { "1" } else { "0" };
        let imported: i64 = self
            .pool
            .write(
                self.scripts
                    .import_user
                    .key(self.keys.user(user.id))
                    .key(self.keys.email(&email_key))
                    .key(self.keys.user_ids())
                    .key(self.keys.last_user_id())
                    .key(self.keys.username(&username_key))
                    .arg(user.id)
                    .arg(&user.email)
                    .arg(&user.username)
                    .arg(&user.password_hash)
                    .arg(u8::from(user.is_admin))
                    .arg(u8::from(user.blocked))
                    .arg(user.created_at)
                    .arg(user.token_version)
                    .arg(&self.keys.channel)
                    .arg(self.keys.email_prefix())
                    .arg(&email_key)
                    .arg(self.keys.username_prefix())
                    .arg(&username_key)
                    .arg(flag(claim.email))
                    .arg(flag(claim.username))
                    .arg(roles::header_value(&user.roles)),
            )
            .await?;
        self.mirror.users.forget(user.id);
        match imported {
            0 => Err(StoreError::EmailTaken),
            2 => Err(StoreError::UsernameTaken),
            _ => Ok(()),
        }
    }

    /// Indexes every user by comparison key unless `P index_version` says
    /// that is done (see the module documentation), there and then: for
    /// `gatehouse migrate`. Waits for a run already in progress instead of
    /// starting another.
    pub async fn upgrade_indexes(&self) -> Result<(), StoreError> {
        self.indexes.upgrade().await
    }

    /// Writes a revocation entry as it is (for `gatehouse migrate`); false if
    /// its token had already expired, so there was nothing to keep.
    pub async fn import_revocation(&self, entry: RevocationEntry) -> Result<bool, StoreError> {
        if self.outlived(entry.expires_at) {
            return Ok(false);
        }
        self.store_revocation(entry, false).await?;
        Ok(true)
    }

    /// Whether a token that expires at `expires_at` is past its leeway, so
    /// revoking it would change nothing.
    fn outlived(&self, expires_at: u64) -> bool {
        self.retention.outlived(expires_at, now_unix())
    }

    /// The answer when Redis can't be asked: an error, or with `fail_open`
    /// what this gateway last knew (when it knows anything).
    fn when_unreachable<T>(&self, error: StoreError, last_known: Option<T>) -> Result<T, StoreError> {
        match (self.when_unreachable, error, last_known) {
            (WhenUnreachable::FailOpen, StoreError::Unavailable(_), Some(answer)) => Ok(answer),
            (_, error, _) => Err(error),
        }
    }

    async fn fetch_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        fetch_user(&self.pool, &self.keys, id).await
    }

    /// Stores a revocation entry (with `only_if_new`, only if there is none
    /// yet: false then) and announces it to every gateway.
    async fn store_revocation(&self, entry: RevocationEntry, only_if_new: bool) -> Result<bool, StoreError> {
        if self.outlived(entry.expires_at) {
            // The token is dead by its own expiry; there is nothing to keep.
            return Ok(true);
        }
        let keep_until = self.retention.keep_until(entry.expires_at);
        let key = match entry.kind {
            RevocationKind::Token(_) => self.keys.token(&entry.id),
            RevocationKind::Family => self.keys.family(&entry.id),
        };
        let value = stored_value(entry.kind, entry.expires_at);
        let event = Event::Revoked(entry);
        let written: i64 = self
            .pool
            .write(
                self.scripts
                    .revoke
                    .key(key)
                    .arg(value)
                    .arg(keep_until)
                    .arg(&self.keys.channel)
                    .arg(event.encode())
                    .arg(if only_if_new { "1" } else { "0" }),
            )
            .await?;
        if written == 1 {
            // Our own lookups see it at once, before the event comes back.
            self.mirror.apply(event);
        }
        Ok(written == 1)
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks; this may run inside another runtime's task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create_checked(
        &self,
        identifiers: Identifiers,
        password_hash: String,
        is_admin: bool,
    ) -> Result<User, StoreError> {
        let created_at = now_unix();
        let create = || {
            let mut invocation = self.scripts.create_user.prepare_invoke();
            invocation
                .key(self.keys.email(&identifiers.email_key))
                .key(self.keys.last_user_id())
                .key(self.keys.user_ids())
                .key(self.keys.username(&identifiers.username_key))
                .key(self.keys.index_version())
                .arg(self.keys.user_prefix())
                .arg(&identifiers.email)
                .arg(&identifiers.username)
                .arg(&password_hash)
                .arg(u8::from(is_admin))
                .arg(created_at)
                .arg(&identifiers.email_key)
                .arg(&identifiers.username_key)
                .arg(INDEX_VERSION);
            invocation
        };
        let mut id: i64 = self.pool.write(&create()).await?;
        if id == -1 {
            // The indexes are older than this code: no duplicate can be ruled
            // out until every user is indexed (see the module documentation).
            let indexed = if self.indexes_in_background {
                self.indexes.outdated();
                self.indexes.wait_until_current(INDEX_WAIT).await
            } else {
                self.indexes.upgrade().await?;
                true
            };
            if indexed {
                id = self.pool.write(&create()).await?;
            }
        }
        let id = match id {
            -1 => {
                return Err(StoreError::Unavailable(
                    "the store is being re-indexed; try again shortly".into(),
                ))
            }
            0 => return Err(StoreError::EmailTaken),
            -2 => return Err(StoreError::UsernameTaken),
            id => u64::try_from(id)
                .map_err(|_| StoreError::Backend(format!("the create script answered {id}")))?,
        };
        Ok(User {
            id,
            email: identifiers.email,
            username: identifiers.username,
            password_hash,
            is_admin,
            blocked: false,
            created_at,
            token_version: 0,
            roles: Vec::new(),
        })
    }

    async fn user(&self, id: UserId) -> Result<Option<Arc<User>>, StoreError> {
        if self.mirror.is_synced() {
            if let Some(user) = self.mirror.users.get(id) {
                return Ok(Some(user));
            }
        }
        let epoch = self.mirror.users.epoch();
        match self.fetch_user(id).await {
            Ok(Some(user)) => {
                let user = Arc::new(user);
                self.mirror.fill_user(Arc::clone(&user), epoch);
                Ok(Some(user))
            }
            Ok(None) => Ok(None),
            Err(e) => self.when_unreachable(e, self.mirror.users.get(id).map(Some)),
        }
    }

    async fn user_by_email(&self, email: &EmailLookup<'_>) -> Result<Option<Arc<User>>, StoreError> {
        let key = self.keys.email(email.key());
        // Not indexed yet: the account may still be under the key it was
        // created with (see the module documentation).
        let legacy = (!self.indexes.is_current()).then(|| email.legacy_key()).filter(|l| l != email.key());
        let id: Option<u64> = match legacy {
            None => self.pool.query(redis::cmd("GET").arg(&key)).await?,
            Some(legacy) => {
                let ids: Vec<Option<u64>> =
                    self.pool.query(redis::cmd("MGET").arg(self.keys.email(&legacy)).arg(&key)).await?;
                ids.into_iter().flatten().next()
            }
        };
        match id {
            Some(id) => self.user(id).await,
            None => Ok(None),
        }
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut ids: Vec<u64> = self.pool.query(redis::cmd("SMEMBERS").arg(self.keys.user_ids())).await?;
        ids.sort_unstable();
        let mut pipeline = redis::pipe();
        for id in &ids {
            pipeline.hgetall(self.keys.user(*id));
        }
        let records: Vec<HashMap<String, String>> = self.pool.pipeline(&pipeline).await?;
        // A user deleted between the two reads has an empty record.
        records.iter().filter(|fields| !fields.is_empty()).map(user_from_fields).collect()
    }

    async fn change_user(&self, id: UserId, change: UserChange) -> Result<Option<User>, StoreError> {
        let flag = |set: bool| if set { "1" } else { "0" };
        let (operation, value) = match &change {
            UserChange::SetAdmin(admin) => ("admin", flag(*admin)),
            UserChange::AddRole(role) | UserChange::RemoveRole(role) if role.is_admin() => {
                ("admin", flag(matches!(change, UserChange::AddRole(_))))
            }
            UserChange::AddRole(role) => ("role_add", role.as_str()),
            UserChange::RemoveRole(role) => ("role_remove", role.as_str()),
            UserChange::SetBlocked(blocked) => ("blocked", flag(*blocked)),
            UserChange::RevokeAllTokens => ("revoke_all", "0"),
        };
        let fields: Option<HashMap<String, String>> = self
            .pool
            .write(
                self.scripts
                    .change_user
                    .key(self.keys.user(id))
                    .arg(operation)
                    .arg(value)
                    .arg(&self.keys.channel)
                    .arg(id)
                    .arg(MAX_ROLES_PER_USER),
            )
            .await?;
        self.mirror.users.forget(id);
        fields.as_ref().map(user_from_fields).transpose()
    }

    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        let existed: i64 = self
            .pool
            .write(
                self.scripts
                    .delete_user
                    .key(self.keys.user(id))
                    .key(self.keys.user_ids())
                    .arg(self.keys.email_prefix())
                    .arg(&self.keys.channel)
                    .arg(id)
                    .arg(self.keys.username_prefix()),
            )
            .await?;
        self.mirror.users.forget(id);
        Ok(existed == 1)
    }

    async fn revoke(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        let kind = RevocationKind::Token(Revocation::Revoked);
        self.store_revocation(RevocationEntry { id: jti.to_owned(), kind, expires_at }, false).await.map(drop)
    }

    async fn revocation(&self, jti: &str) -> Result<Option<Revocation>, StoreError> {
        if self.mirror.is_synced() {
            return Ok(self.mirror.revocation(jti));
        }
        match self.pool.query::<Option<String>>(redis::cmd("GET").arg(self.keys.token(jti))).await {
            Ok(value) => Ok(match value.as_deref().and_then(parse_stored_value) {
                Some((RevocationKind::Token(why), _)) => Some(why),
                _ => None,
            }),
            Err(e) => self.when_unreachable(e, Some(self.mirror.revocation(jti))),
        }
    }

    async fn retire(&self, jti: &str, expires_at: u64) -> Result<bool, StoreError> {
        let kind = RevocationKind::Token(Revocation::Retired);
        self.store_revocation(RevocationEntry { id: jti.to_owned(), kind, expires_at }, true).await
    }

    async fn revoke_family(&self, family: &str, expires_at: u64) -> Result<(), StoreError> {
        let kind = RevocationKind::Family;
        self.store_revocation(RevocationEntry { id: family.to_owned(), kind, expires_at }, false)
            .await
            .map(drop)
    }

    async fn is_family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        if self.mirror.is_synced() {
            return Ok(self.mirror.is_family_revoked(family));
        }
        match self.pool.query::<bool>(redis::cmd("EXISTS").arg(self.keys.family(family))).await {
            Ok(revoked) => Ok(revoked),
            Err(e) => self.when_unreachable(e, Some(self.mirror.is_family_revoked(family))),
        }
    }

    async fn revoked_count(&self) -> Result<usize, StoreError> {
        Ok(self.mirror.len())
    }

    async fn purge_expired_revocations(&self, now: u64) -> Result<usize, StoreError> {
        // Redis expires its own entries; this trims the local mirror.
        Ok(self.mirror.purge(now))
    }

    async fn health(&self) -> Result<(), StoreError> {
        if !self.mirror.is_synced() {
            return Err(StoreError::Unavailable(
                "not in step with redis (subscription down or loading)".into(),
            ));
        }
        self.pool.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    fn is_reachable(&self) -> bool {
        self.pool.is_reachable()
    }
}
