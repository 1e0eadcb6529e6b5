//! One contract, two backends: the embedded sled store and the shared Redis
//! store must behave the same behind the `Store` trait.

// Tests assert by unwrapping: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use gatehouse::config::RedisConfig;
use gatehouse::store::{NewUser, RedisStore, Revocation, SledStore, Store, StoreError, UserChange};

fn new_user(email: &str) -> NewUser {
    NewUser { email: email.into(), username: "u".into(), password_hash: "h".into(), is_admin: false }
}

/// Far in the future: these entries must not expire during the test.
const LATER: u64 = 4_000_000_000;

async fn keeps_the_contract(store: &dyn Store) {
    // Users are unique by trimmed, case-insensitive email.
    let ann = store.create_user(new_user(" Ann@Example.com ")).await.unwrap();
    assert_eq!(ann.email, "ann@example.com");
    assert!(matches!(store.create_user(new_user("ANN@example.COM")).await, Err(StoreError::EmailTaken)));
    assert_eq!(store.user_by_email("ann@EXAMPLE.com").await.unwrap().unwrap().id, ann.id);
    let bob = store.create_user(new_user("bob@example.com")).await.unwrap();
    assert!(bob.id > ann.id);
    let listed: Vec<u64> = store.users().await.unwrap().iter().map(|u| u.id).collect();
    assert_eq!(listed, vec![ann.id, bob.id]);

    // Changes are applied and read back at once, never from a stale copy.
    let admin = store.change_user(ann.id, UserChange::SetAdmin(true)).await.unwrap().unwrap();
    assert!(admin.is_admin);
    assert!(store.user(ann.id).await.unwrap().unwrap().is_admin);
    let blocked = store.change_user(ann.id, UserChange::SetBlocked(true)).await.unwrap().unwrap();
    assert_eq!((blocked.blocked, blocked.token_version), (true, ann.token_version + 1));
    let again = store.change_user(ann.id, UserChange::SetBlocked(true)).await.unwrap().unwrap();
    assert_eq!(again.token_version, blocked.token_version, "blocking twice bumps the version once");
    store.change_user(ann.id, UserChange::SetBlocked(false)).await.unwrap();
    let bumped = store.change_user(ann.id, UserChange::RevokeAllTokens).await.unwrap().unwrap();
    assert_eq!(bumped.token_version, blocked.token_version + 1);
    assert_eq!(store.user(ann.id).await.unwrap().unwrap().token_version, bumped.token_version);
    assert!(store.change_user(999, UserChange::SetAdmin(true)).await.unwrap().is_none());

    // Deleting frees the email.
    assert!(store.delete_user(ann.id).await.unwrap());
    assert!(!store.delete_user(ann.id).await.unwrap());
    assert!(store.user(ann.id).await.unwrap().is_none());
    assert!(store.user_by_email("ann@example.com").await.unwrap().is_none());
    let ann_again = store.create_user(new_user("ann@example.com")).await.unwrap();
    assert_ne!(ann_again.id, ann.id, "ids are never reused");

    // Revocations; a refresh token retires once, and a revoked one can't be rotated.
    assert_eq!(store.revocation("t1").await.unwrap(), None);
    store.revoke("t1", LATER).await.unwrap();
    assert_eq!(store.revocation("t1").await.unwrap(), Some(Revocation::Revoked));
    assert!(store.retire("r1", LATER).await.unwrap());
    assert!(!store.retire("r1", LATER).await.unwrap());
    assert_eq!(store.revocation("r1").await.unwrap(), Some(Revocation::Retired));
    assert!(!store.retire("t1", LATER).await.unwrap());
    assert!(!store.is_family_revoked("f1").await.unwrap());
    store.revoke_family("f1", LATER).await.unwrap();
    assert!(store.is_family_revoked("f1").await.unwrap());
    assert_eq!(store.revoked_count().await.unwrap(), 3);
    store.health().await.unwrap();
}

#[tokio::test]
async fn the_sled_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    keeps_the_contract(&SledStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    let redis = RedisServer::start();
    // Database 2, from the URL.
    let config = RedisConfig::for_url(&redis.url().replace("/0", "/2"));
    let store = RedisStore::start(&config, Duration::ZERO).unwrap();
    store.wait_until_synced(Duration::from_secs(5)).await.unwrap();
    keeps_the_contract(&store).await;
    // Entries carry their token's expiry as a TTL: Redis drops them itself.
    let ttl: i64 = redis.cli(&["-n", "2", "TTL", "gatehouse:revoked:t1"]).trim().parse().unwrap();
    assert!(ttl > 0, "{ttl}");
    assert_eq!(redis.cli(&["-n", "0", "DBSIZE"]).trim(), "0");
    // A second store on the same Redis (another gateway) sees the same state.
    let other = RedisStore::start(&config, Duration::ZERO).unwrap();
    other.wait_until_synced(Duration::from_secs(5)).await.unwrap();
    assert_eq!(other.revocation("t1").await.unwrap(), Some(Revocation::Revoked));
    assert!(other.user_by_email("bob@example.com").await.unwrap().is_some());
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract_over_a_unix_socket() {
    let redis = RedisServer::start();
    // Database 3, from the URL's query.
    let url = format!("redis+unix://{}?db=3", redis.socket_path().display());
    let store = RedisStore::start(&RedisConfig::for_url(&url), Duration::ZERO).unwrap();
    store.wait_until_synced(Duration::from_secs(5)).await.unwrap();
    keeps_the_contract(&store).await;
    assert_eq!(redis.cli(&["-n", "3", "EXISTS", "gatehouse:revoked:t1"]).trim(), "1");
    assert_eq!(redis.cli(&["-n", "0", "DBSIZE"]).trim(), "0");
}
