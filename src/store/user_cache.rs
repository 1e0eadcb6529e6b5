//! Decoded user records kept in memory, so the per-request account check
//! costs a hash lookup. Shared by both stores.
//!
//! The one hazard is a fill racing a change: a request reads the record,
//! the record changes (and its cache entry is forgotten), then the request
//! puts the old record back. Every invalidation bumps an epoch; a fill
//! carries the epoch from before its read and is dropped if any invalidation
//! came since, so no lock is held around the read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;

use super::{User, UserId};

/// Users whose records are kept.
const CAPACITY: usize = 100_000;

pub(crate) struct UserCache {
    users: Cache<UserId, Arc<User>>,
    epoch: AtomicU64,
}

impl UserCache {
    pub(crate) fn new() -> UserCache {
        UserCache { users: Cache::new(CAPACITY), epoch: AtomicU64::new(0) }
    }

    pub(crate) fn get(&self, id: UserId) -> Option<Arc<User>> {
        self.users.get(&id)
    }

    /// Read before reading the store; pass it to [`UserCache::fill`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches a record read at `epoch`, unless an invalidation came since.
    pub(crate) fn fill(&self, user: Arc<User>, epoch: u64) {
        if self.epoch() != epoch {
            return;
        }
        let id = user.id;
        self.users.insert(id, user);
        // An invalidation may have landed between the check and the insert.
        if self.epoch() != epoch {
            self.users.remove(&id);
        }
    }

    /// After a change to the user: the next read goes to the store.
    pub(crate) fn forget(&self, id: UserId) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.users.remove(&id);
    }

    // Only the Redis store (the `server` feature) resyncs a whole cache.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.users.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plain user record for cache tests.
    pub(crate) fn user(id: UserId) -> Arc<User> {
        Arc::new(User {
            id,
            email: format!("user{id}@example.com"),
            username: format!("user{id}"),
            password_hash: String::new(),
            is_admin: false,
            blocked: false,
            created_at: 0,
            token_version: 0,
            roles: Vec::new(),
        })
    }

    #[test]
    fn a_record_read_before_an_invalidation_is_not_cached() {
        let cache = UserCache::new();
        let user = user(1);
        let epoch = cache.epoch();
        cache.forget(1);
        cache.fill(Arc::clone(&user), epoch);
        assert!(cache.get(1).is_none(), "read before an invalidation");
        cache.fill(Arc::clone(&user), cache.epoch());
        assert!(cache.get(1).is_some());
        cache.forget_all();
        assert!(cache.get(1).is_none());
    }
}
