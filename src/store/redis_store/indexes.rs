//! The `email:` and `username:` indexes by comparison key, and bringing the
//! users written before them up to date (see the parent module's
//! documentation): in the background, one run at a time per process, never
//! on a request's path.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::sync::{watch, Mutex, Notify};

use super::mirror::Mirror;
use super::pool::Pool;
use super::{fetch_user, Keys};
use crate::store::{Identifiers, StoreError};

/// Version of the indexes this code writes.
pub(super) const INDEX_VERSION: u64 = 1;

/// First pause before trying a failed run again; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Gives an existing user its index entries by comparison key (ARGV[3],
/// ARGV[4]) where no other user holds them, drops its entry under an older
/// email key, and records the keys. Returns -1 if the user is gone, else 1
/// if another user holds the email key plus 2 if another holds the username key.
const INDEX_USER: &str = r"
local old = redis.call('HMGET', KEYS[1], 'email', 'email_key')
if not old[1] then return -1 end
local clashes = 0
local owner = redis.call('GET', KEYS[2])
if not owner then redis.call('SET', KEYS[2], ARGV[1]) elseif owner ~= ARGV[1] then clashes = clashes + 1 end
local old_key = old[2] or old[1]
if old_key ~= ARGV[3] and redis.call('GET', ARGV[2] .. old_key) == ARGV[1] then redis.call('DEL', ARGV[2] .. old_key) end
owner = redis.call('GET', KEYS[3])
if not owner then redis.call('SET', KEYS[3], ARGV[1]) elseif owner ~= ARGV[1] then clashes = clashes + 2 end
redis.call('HSET', KEYS[1], 'email_key', ARGV[3], 'username_key', ARGV[4])
return clashes
";

/// Records the index version once every user is indexed.
const SET_INDEX_VERSION: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

pub(crate) struct Indexes {
    pool: Arc<Pool>,
    keys: Arc<Keys>,
    index_user: Script,
    set_index_version: Script,
    /// Whether `P index_version` was last seen current. Until it is, email
    /// lookups also try the key older versions wrote.
    current: watch::Sender<bool>,
    /// Held by the one run in progress: others wait for it, then find the
    /// version current and return.
    running: Mutex<()>,
    /// Asks the background task to look again (a registration found the
    /// indexes outdated).
    wanted: Notify,
}

impl Indexes {
    pub(super) fn new(pool: Arc<Pool>, keys: Arc<Keys>) -> Indexes {
        Indexes {
            pool,
            keys,
            index_user: Script::new(INDEX_USER),
            set_index_version: Script::new(SET_INDEX_VERSION),
            current: watch::Sender::new(false),
            running: Mutex::new(()),
            wanted: Notify::new(),
        }
    }

    pub(super) fn is_current(&self) -> bool {
        *self.current.borrow()
    }

    /// A registration was refused because the indexes are older than this
    /// code: stop trusting them and have the background task index again.
    pub(super) fn outdated(&self) {
        self.current.send_replace(false);
        self.wanted.notify_one();
    }

    /// Waits at most `patience` for the indexes to be current; whether they are.
    pub(super) async fn wait_until_current(&self, patience: Duration) -> bool {
        let mut current = self.current.subscribe();
        let became = tokio::time::timeout(patience, current.wait_for(|current| *current)).await;
        matches!(became, Ok(Ok(_)))
    }

    /// Indexes every user by comparison key unless `P index_version` says
    /// that is done. Oldest first, so the oldest account keeps a key two
    /// share. One run at a time: a caller arriving during a run waits for it.
    pub(super) async fn upgrade(&self) -> Result<(), StoreError> {
        let _running = self.running.lock().await;
        let version: Option<u64> = self.pool.query(redis::cmd("GET").arg(self.keys.index_version())).await?;
        if version.is_some_and(|v| v >= INDEX_VERSION) {
            self.current.send_replace(true);
            return Ok(());
        }
        self.current.send_replace(false);
        let mut ids: Vec<u64> = self.pool.query(redis::cmd("SMEMBERS").arg(self.keys.user_ids())).await?;
        ids.sort_unstable();
        if !ids.is_empty() {
            tracing::info!(
                users = ids.len(),
                "indexing the users' emails and usernames by comparison key; registrations wait until it is done"
            );
        }
        for id in &ids {
            let user = match fetch_user(&self.pool, &self.keys, *id).await {
                Ok(Some(user)) => user,
                Ok(None) => continue,
                Err(StoreError::Corrupt(e)) => {
                    tracing::error!(user_id = id, error = %e, "skipping a corrupt user record while indexing");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (email_key, username_key) = Identifiers::of(&user);
            let clashes: i64 = self
                .pool
                .write(
                    self.index_user
                        .key(self.keys.user(user.id))
                        .key(self.keys.email(&email_key))
                        .key(self.keys.username(&username_key))
                        .arg(user.id)
                        .arg(self.keys.email_prefix())
                        .arg(&email_key)
                        .arg(&username_key),
                )
                .await?;
            for (bit, what) in [(1, "email"), (2, "username")] {
                if clashes > 0 && clashes & bit != 0 {
                    tracing::warn!(
                        user_id = user.id,
                        index = what,
                        "two accounts have the same {what} once normalised: the older account keeps it"
                    );
                }
            }
        }
        let _: i64 =
            self.pool.write(self.set_index_version.key(self.keys.index_version()).arg(INDEX_VERSION)).await?;
        self.current.send_replace(true);
        if !ids.is_empty() {
            tracing::info!(users = ids.len(), "indexed the users' emails and usernames");
        }
        Ok(())
    }
}

/// Keeps the indexes current for a gateway's store until the process ends:
/// looks once at start, again after every resubscription to Redis (a
/// reconnect, perhaps to a server restored from an older copy) and whenever
/// a registration found them outdated; a failed run is tried again after a
/// growing pause.
pub(super) async fn maintain(indexes: Arc<Indexes>, mirror: Arc<Mirror>) {
    let mut pause = RETRY_MIN;
    loop {
        let failed = match indexes.upgrade().await {
            Ok(()) => {
                pause = RETRY_MIN;
                false
            }
            Err(e) => {
                match e {
                    // The subscriber reports an outage; the resubscription brings us back.
                    StoreError::Unavailable(_) => {
                        tracing::debug!(error = %e, "cannot check the user indexes now")
                    }
                    _ => tracing::warn!(error = %e, retry_in = ?pause, "indexing the users failed"),
                }
                true
            }
        };
        let retry = async {
            if failed {
                tokio::time::sleep(pause).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = mirror.resynced.notified() => {}
            () = indexes.wanted.notified() => {}
            () = retry => pause = (pause * 2).min(RETRY_MAX),
        }
    }
}
