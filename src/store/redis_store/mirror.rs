//! Each gateway's local copy of the revocation list, and its cache of user
//! records, kept current through Redis pub/sub.
//!
//! Every write publishes an [`Event`] on the prefix's channel in the same
//! atomic step (a Lua script) as the write itself. The subscriber applies
//! events as they come, so a revocation on one gateway is refused on all of
//! them within milliseconds. Pub/sub is fire-and-forget: a message sent while
//! a subscriber is disconnected is simply lost. So the mirror is trusted only
//! while the subscription is up and pinged: when it drops, the mirror is
//! marked stale (every lookup goes to Redis), and after resubscribing the
//! whole revocation list is read again before the mirror is trusted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;

use super::pool::Pool;
use super::Keys;
use crate::store::user_cache::UserCache;
use crate::store::{Revocation, RevocationEntry, RevocationKind, StoreError, User, UserId};

/// How often the subscription is pinged: a dead one is noticed within this
/// plus the command timeout.
const PING_INTERVAL: Duration = Duration::from_millis(250);
/// Keys read per `SCAN` step while loading the revocation list.
const SCAN_BATCH: usize = 1000;

/// A change other gateways must learn of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A token id or a login session is revoked until its expiry.
    Revoked(RevocationEntry),
    /// A user record changed or went away.
    User(UserId),
}

impl Event {
    /// `<stored value> <id>` for a revocation (see [`stored_value`]), or `u <id>`.
    pub(crate) fn encode(&self) -> String {
        match self {
            Event::Revoked(entry) => format!("{} {}", stored_value(entry.kind, entry.expires_at), entry.id),
            Event::User(id) => format!("u {id}"),
        }
    }

    pub(crate) fn decode(text: &str) -> Option<Event> {
        if let Some(id) = text.strip_prefix("u ") {
            return id.parse().ok().map(Event::User);
        }
        let (letter, rest) = text.split_once(' ')?;
        let (until, id) = rest.split_once(' ')?;
        let (kind, expires_at) = parse_stored_value(&text[..letter.len() + 1 + until.len()])?;
        Some(Event::Revoked(RevocationEntry { id: id.to_owned(), kind, expires_at }))
    }
}

/// The value stored under a revocation key: `r <until>` (revoked token),
/// `t <until>` (retired refresh token) or `f <until>` (revoked session).
pub(crate) fn stored_value(kind: RevocationKind, until: u64) -> String {
    let letter = match kind {
        RevocationKind::Token(Revocation::Revoked) => 'r',
        RevocationKind::Token(Revocation::Retired) => 't',
        RevocationKind::Family => 'f',
    };
    format!("{letter} {until}")
}

/// Reads a [`stored_value`] back.
pub(crate) fn parse_stored_value(value: &str) -> Option<(RevocationKind, u64)> {
    let (letter, until) = value.split_once(' ')?;
    let kind = match letter {
        "r" => RevocationKind::Token(Revocation::Revoked),
        "t" => RevocationKind::Token(Revocation::Retired),
        "f" => RevocationKind::Family,
        _ => return None,
    };
    Some((kind, until.parse().ok()?))
}

pub(crate) struct Mirror {
    synced: AtomicBool,
    tokens: RwLock<HashMap<String, (Revocation, u64)>>,
    families: RwLock<HashMap<String, u64>>,
    /// Trusted, like the revocations, only while the mirror is in step.
    pub(crate) users: UserCache,
    /// Told each time the mirror is in step again (after the first
    /// subscription and every resubscription): Redis may have changed
    /// meanwhile. One listener: the task keeping the indexes current.
    pub(crate) resynced: tokio::sync::Notify,
}

impl Mirror {
    pub(crate) fn new() -> Mirror {
        Mirror {
            synced: AtomicBool::new(false),
            tokens: RwLock::default(),
            families: RwLock::default(),
            users: UserCache::new(),
            resynced: tokio::sync::Notify::new(),
        }
    }

    /// Whether the mirror holds every revocation Redis holds.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn set_stale(&self) {
        self.synced.store(false, Ordering::Release);
    }

    pub(crate) fn apply(&self, event: Event) {
        match event {
            Event::Revoked(RevocationEntry { id, kind: RevocationKind::Token(why), expires_at }) => {
                self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(id, (why, expires_at));
            }
            Event::Revoked(RevocationEntry { id, kind: RevocationKind::Family, expires_at }) => {
                self.families.write().unwrap_or_else(|p| p.into_inner()).insert(id, expires_at);
            }
            Event::User(id) => self.users.forget(id),
        }
    }

    pub(crate) fn revocation(&self, jti: &str) -> Option<Revocation> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).get(jti).map(|(why, _)| *why)
    }

    pub(crate) fn is_family_revoked(&self, family: &str) -> bool {
        self.families.read().unwrap_or_else(|p| p.into_inner()).contains_key(family)
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).len()
            + self.families.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Drops entries whose tokens expired before `now` (Redis drops its own by TTL).
    pub(crate) fn purge(&self, now: u64) -> usize {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let before = tokens.len();
        tokens.retain(|_, (_, until)| *until >= now);
        let mut purged = before - tokens.len();
        drop(tokens);
        let mut families = self.families.write().unwrap_or_else(|p| p.into_inner());
        let before = families.len();
        families.retain(|_, until| *until >= now);
        purged += before - families.len();
        purged
    }

    /// Caches a record read from Redis at `epoch`, if the mirror is in step.
    pub(crate) fn fill_user(&self, user: Arc<User>, epoch: u64) {
        if self.is_synced() {
            self.users.fill(user, epoch);
        }
    }

    fn replace(&self, tokens: HashMap<String, (Revocation, u64)>, families: HashMap<String, u64>) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
        *self.families.write().unwrap_or_else(|p| p.into_inner()) = families;
    }
}

/// Keeps the mirror in step with Redis until the process ends: subscribe,
/// load everything, apply events, ping; on any failure mark the mirror stale,
/// pause, and start over.
pub(crate) async fn follow(pool: Arc<Pool>, mirror: Arc<Mirror>, keys: Arc<Keys>) {
    let mut pause = Duration::from_millis(50);
    let mut first = true;
    loop {
        match subscribe_and_follow(&pool, &mirror, &keys).await {
            Ok(()) => {}
            Err(e) => {
                let was_synced = mirror.is_synced();
                mirror.set_stale();
                if was_synced {
                    tracing::warn!(error = %e, "redis subscription lost; every lookup goes to redis until it is back");
                } else if first {
                    tracing::warn!(error = %e, "cannot follow redis yet; retrying (requests needing the store get 503 meanwhile)");
                }
                first = false;
                // Only the subscription, or Redis itself? A command tells
                // (and marks the store unreachable if it fails).
                let _ = pool.query::<redis::Value>(&redis::cmd("PING")).await;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        if mirror.is_synced() {
            pause = Duration::from_millis(50);
        }
    }
}

async fn subscribe_and_follow(pool: &Pool, mirror: &Mirror, keys: &Keys) -> Result<(), StoreError> {
    let timeout = pool.connect_timeout();
    let client = pool.client().await?;
    let lost = |e: redis::RedisError| StoreError::Unavailable(format!("redis subscription: {e}"));
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| StoreError::Unavailable("redis did not accept a subscription in time".into()))?
        .map_err(lost)?;
    pubsub.subscribe(&keys.channel).await.map_err(lost)?;
    let (mut sink, mut messages) = pubsub.split();

    // Subscribed first, then loaded: a write that misses the snapshot arrives as an event.
    let (tokens, families) = load_revocations(pool, keys).await?;
    let entries = tokens.len() + families.len();
    mirror.replace(tokens, families);
    mirror.users.forget_all();
    mirror.synced.store(true, Ordering::Release);
    mirror.resynced.notify_one();
    pool.set_reachable(true);
    tracing::info!(entries, "redis revocation list loaded; following changes");

    let mut ping = tokio::time::interval(PING_INTERVAL);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(StoreError::Unavailable("redis closed the subscription".into()));
                };
                let payload: String = message.get_payload().unwrap_or_default();
                match Event::decode(&payload) {
                    Some(event) => mirror.apply(event),
                    None => tracing::warn!(payload = %payload, "ignoring an unknown message on the gatehouse channel"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => pool.set_reachable(true),
                    Ok(Err(e)) => return Err(lost(e)),
                    Err(_) => return Err(StoreError::Unavailable("redis did not answer a ping in time".into())),
                }
            }
        }
    }
}

type Snapshot = (HashMap<String, (Revocation, u64)>, HashMap<String, u64>);

/// Reads every revocation entry under the prefix.
async fn load_revocations(pool: &Pool, keys: &Keys) -> Result<Snapshot, StoreError> {
    let mut tokens = HashMap::new();
    let mut families = HashMap::new();
    for pattern in [keys.token_pattern(), keys.family_pattern()] {
        let strip = pattern.len() - 1;
        let mut cursor: u64 = 0;
        loop {
            let (next, names): (u64, Vec<String>) = pool
                .query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(SCAN_BATCH))
                .await?;
            if !names.is_empty() {
                let values: Vec<Option<String>> = pool.query(redis::cmd("MGET").arg(&names)).await?;
                for (name, value) in names.iter().zip(values) {
                    // Gone (expired) between SCAN and MGET, or not ours: skip.
                    let Some((kind, until)) = value.as_deref().and_then(parse_stored_value) else { continue };
                    let id = name[strip..].to_owned();
                    match kind {
                        RevocationKind::Token(why) => {
                            tokens.insert(id, (why, until));
                        }
                        RevocationKind::Family => {
                            families.insert(id, until);
                        }
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok((tokens, families))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for event in [
            Event::Revoked(RevocationEntry {
                id: "a b".into(),
                kind: RevocationKind::Token(Revocation::Revoked),
                expires_at: 5,
            }),
            Event::Revoked(RevocationEntry {
                id: "x".into(),
                kind: RevocationKind::Token(Revocation::Retired),
                expires_at: 7,
            }),
            Event::Revoked(RevocationEntry { id: "f1".into(), kind: RevocationKind::Family, expires_at: 9 }),
            Event::User(42),
        ] {
            assert_eq!(Event::decode(&event.encode()), Some(event));
        }
        for bad in ["", "u", "u x", "r 5", "r x id", "z 1 id"] {
            assert_eq!(Event::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_stale_mirror_does_not_cache_users() {
        let mirror = Mirror::new();
        let user = crate::store::user_cache::tests::user(1);
        mirror.fill_user(Arc::clone(&user), mirror.users.epoch());
        assert!(mirror.users.get(1).is_none(), "not synced yet");
        mirror.synced.store(true, Ordering::Release);
        let epoch = mirror.users.epoch();
        mirror.apply(Event::User(1));
        mirror.fill_user(Arc::clone(&user), epoch);
        assert!(mirror.users.get(1).is_none(), "read before an invalidation");
        mirror.fill_user(user, mirror.users.epoch());
        assert!(mirror.users.get(1).is_some());
    }
}
