//! One contract, two backends: the embedded sled store and the shared Redis
//! store must behave the same behind the `Store` trait.

use std::time::Duration;

use gatehouse::config::RedisConfig;
use gatehouse::store::{
    EmailLookup, NewUser, RedisStore, Revocation, SledStore, Store, StoreError, User, UserChange,
};

use gatehouse::roles::{Role, MAX_ROLES_PER_USER};

use crate::common::redis::RedisServer;

/// A user with this email and a username of its own (usernames are unique).
fn new_user(email: &str) -> NewUser {
    let username = format!("u-{}", email.trim().to_lowercase());
    named(email, &username)
}

fn lookup(email: &str) -> EmailLookup<'_> {
    EmailLookup::new(email).unwrap()
}

fn named(email: &str, username: &str) -> NewUser {
    NewUser { email: email.into(), username: username.into(), password_hash: "h".into(), is_admin: false }
}

/// Far in the future: these entries must not expire during the test.
const LATER: u64 = 4_000_000_000;

async fn keeps_the_contract(store: &dyn Store) {
    // Users are unique by trimmed, case-insensitive email.
    let ann = store.create_user(new_user(" Ann@Example.com ")).await.unwrap();
    assert_eq!(ann.email, "ann@example.com");
    assert!(matches!(store.create_user(new_user("ANN@example.COM")).await, Err(StoreError::EmailTaken)));
    assert_eq!(store.user_by_email(&lookup("ann@EXAMPLE.com")).await.unwrap().unwrap().id, ann.id);
    let bob = store.create_user(new_user("bob@example.com")).await.unwrap();
    assert!(bob.id > ann.id);
    let listed: Vec<u64> = store.users().await.unwrap().iter().map(|u| u.id).collect();
    assert_eq!(listed, vec![ann.id, bob.id]);
    let created = store.users().await.unwrap().len();

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
    keeps_roles(store, bob.id).await;

    // Deleting frees the email.
    assert!(store.delete_user(ann.id).await.unwrap());
    assert!(!store.delete_user(ann.id).await.unwrap());
    assert!(store.user(ann.id).await.unwrap().is_none());
    assert!(store.user_by_email(&lookup("ann@example.com")).await.unwrap().is_none());
    let ann_again = store.create_user(new_user("ann@example.com")).await.unwrap();
    assert_ne!(ann_again.id, ann.id, "ids are never reused");
    assert_eq!(store.users().await.unwrap().len(), created);

    keys_identifiers_by_their_normalised_form(store).await;

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

/// Roles are a sorted set; `admin` is the admin flag; a full list refuses
/// more, leaving the record as it was; every change reads back at once.
async fn keeps_roles(store: &dyn Store, id: u64) {
    let role = |name: &str| Role::parse(name).unwrap();
    let change = |c: UserChange| async move { store.change_user(id, c).await.unwrap().unwrap() };
    let names = |user: &User| user.held_roles().iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert!(store.user(id).await.unwrap().unwrap().roles.is_empty());
    change(UserChange::AddRole(role("publisher"))).await;
    let twice = change(UserChange::AddRole(role("editor"))).await;
    assert_eq!(names(&twice), ["editor", "publisher"]);
    assert_eq!(names(&change(UserChange::AddRole(role("editor"))).await), ["editor", "publisher"]);
    let admin = change(UserChange::AddRole(role("admin"))).await;
    assert!(admin.is_admin);
    assert_eq!(names(&admin), ["admin", "editor", "publisher"]);
    assert_eq!(admin.roles, vec![role("editor"), role("publisher")], "admin is the flag, not a stored role");
    assert_eq!(names(&store.user(id).await.unwrap().unwrap()), ["admin", "editor", "publisher"]);
    assert!(!change(UserChange::RemoveRole(role("admin"))).await.is_admin);
    assert_eq!(names(&change(UserChange::RemoveRole(role("editor"))).await), ["publisher"]);
    assert_eq!(names(&change(UserChange::RemoveRole(role("editor"))).await), ["publisher"]);
    assert_eq!(names(&store.user(id).await.unwrap().unwrap()), ["publisher"]);
    for n in 1..MAX_ROLES_PER_USER {
        change(UserChange::AddRole(role(&format!("r{n:02}")))).await;
    }
    let full = change(UserChange::AddRole(role("one-too-many"))).await;
    assert_eq!(full.roles.len(), MAX_ROLES_PER_USER);
    assert!(!full.roles.contains(&role("one-too-many")));
    let again = change(UserChange::AddRole(role("publisher"))).await;
    assert_eq!(again.roles, full.roles, "a role held already is kept when the list is full");
    assert!(change(UserChange::AddRole(role("admin"))).await.is_admin, "admin is not counted");
    for n in 1..MAX_ROLES_PER_USER {
        change(UserChange::RemoveRole(role(&format!("r{n:02}")))).await;
    }
    change(UserChange::RemoveRole(role("admin"))).await;
    assert!(store.change_user(999, UserChange::AddRole(role("x"))).await.unwrap().is_none());
}

/// Emails and usernames are unique by comparison key (NFKC, case folding,
/// accents dropped), and text that hides or reorders characters is refused.
async fn keys_identifiers_by_their_normalised_form(store: &dyn Store) {
    let taken = |result: Result<User, StoreError>| match result {
        Err(StoreError::EmailTaken) => "email",
        Err(StoreError::UsernameTaken) => "username",
        Err(StoreError::InvalidIdentity(_)) => "invalid",
        Ok(user) => panic!("created {user:?}"),
        Err(e) => panic!("{e}"),
    };
    let admin = store.create_user(named("admin@example.com", "admin")).await.unwrap();
    for email in ["ＡＤＭＩＮ@example.com", "ADMİN@example.com", "admın@example.com", "ádmin@EXAMPLE.com"]
    {
        assert_eq!(taken(store.create_user(named(email, "someone-else")).await), "email", "{email}");
        let found = store.user_by_email(&lookup(email)).await.unwrap();
        assert_eq!(found.map(|u| u.id), Some(admin.id), "logins find the account by any variant: {email}");
    }
    assert_eq!(taken(store.create_user(named("admin\u{200b}@example.com", "zw")).await), "invalid");
    assert_eq!(taken(store.create_user(named("ad\u{202e}min@example.com", "rlo")).await), "invalid");
    assert!(store
        .user_by_email(&lookup("admin\u{200b}@example.com"))
        .await
        .unwrap()
        .is_some_and(|u| u.id == admin.id));

    for username in ["Admin", "ADMIN", "ａｄｍｉｎ", "admın", "ADMİN", "ädmin", " admin "] {
        let result = store.create_user(named("other@example.com", username)).await;
        assert_eq!(taken(result), "username", "{username:?}");
    }
    for username in ["ad\u{202e}nim", "admin\u{200b}", "\u{2066}admin\u{2069}", "аdmin", "ad\tmin", ""] {
        let result = store.create_user(named("other@example.com", username)).await;
        assert_eq!(taken(result), "invalid", "{username:?}");
    }
    assert!(
        store.user_by_email(&lookup("other@example.com")).await.unwrap().is_none(),
        "nothing was created"
    );

    // Stored forms: the email in NFKC and lower case, the username in NFKC with its case.
    let rene = store.create_user(named(" ＲENÉ@Example.com ", "René")).await.unwrap();
    assert_eq!((rene.email.as_str(), rene.username.as_str()), ("rené@example.com", "René"));
    assert_eq!(store.user(rene.id).await.unwrap().unwrap().username, "René");
    assert_eq!(taken(store.create_user(named("rene@example.com", "rene2")).await), "email");
    assert_eq!(taken(store.create_user(named("rene2@example.com", "RENE")).await), "username");

    // Deleting frees both, by key.
    assert!(store.delete_user(admin.id).await.unwrap());
    let again = store.create_user(named("ＡＤＭＩＮ@example.com", "ａｄｍｉｎ")).await.unwrap();
    assert_eq!((again.email.as_str(), again.username.as_str()), ("admin@example.com", "admin"));
    assert!(store.delete_user(again.id).await.unwrap());
    assert!(store.delete_user(rene.id).await.unwrap());
}

/// A legacy account record, as stores before the username index wrote it.
fn legacy_user(id: u64, email: &str, username: &str) -> User {
    User {
        id,
        email: email.into(),
        username: username.into(),
        password_hash: "h".into(),
        is_admin: false,
        blocked: false,
        created_at: 1,
        token_version: 0,
        roles: Vec::new(),
    }
}

/// Users written before usernames were unique: the index is built (oldest
/// first), and registrations and logins then go by comparison key.
async fn indexes_legacy_users(store: &dyn Store) {
    let clash = |result: Result<User, StoreError>| match result {
        Err(StoreError::UsernameTaken) => {}
        other => panic!("{other:?}"),
    };
    // The first registration finds the index built (Redis builds it in the
    // background; a registration waits for it).
    clash(store.create_user(named("new@example.com", "ＡＤＭＩＮ")).await);
    clash(store.create_user(named("new@example.com", "zoe")).await);
    assert_eq!(store.user_by_email(&lookup("ANN@example.com")).await.unwrap().unwrap().id, 1);
    assert_eq!(store.user_by_email(&lookup("RENE@example.com")).await.unwrap().unwrap().id, 2, "re-keyed");
    // User 3 `Admin` lost `admin` to the older user 1, and keeps its email.
    assert_eq!(store.user_by_email(&lookup("admin2@example.com")).await.unwrap().unwrap().id, 3);
    // Deleting the newer `Admin` leaves the older account's entry alone.
    assert!(store.delete_user(3).await.unwrap());
    clash(store.create_user(named("new@example.com", "admin")).await);
    assert!(store.delete_user(1).await.unwrap());
    let user = store.create_user(named("new@example.com", "admin")).await.unwrap();
    assert!(user.id > 3);
    assert!(matches!(store.create_user(named("rené@example.com", "x")).await, Err(StoreError::EmailTaken)));
}

/// The legacy data: ann (username `admin`), rené (`Zoë`) and a second `Admin`.
fn legacy_users() -> Vec<User> {
    vec![
        legacy_user(1, "ann@example.com", "admin"),
        legacy_user(2, "rené@example.com", "Zoë"),
        legacy_user(3, "admin2@example.com", "Admin"),
    ]
}

#[tokio::test]
async fn the_sled_store_indexes_users_from_before_usernames_were_unique() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The layout before: users, emails (trimmed and lower-cased) and the id counter.
        // No background flusher: dropping the database releases its lock at once.
        let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
        let (users, emails, meta) =
            (db.open_tree("users").unwrap(), db.open_tree("emails").unwrap(), db.open_tree("meta").unwrap());
        for user in legacy_users() {
            users.insert(user.id.to_be_bytes(), serde_json::to_vec(&user).unwrap()).unwrap();
            emails.insert(user.email.as_bytes(), &user.id.to_be_bytes()).unwrap();
        }
        meta.insert(b"last_user_id", &3u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    // sled lets go of its file lock from a background thread, a moment after the drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let store = loop {
        match SledStore::open(dir.path()) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    indexes_legacy_users(&store).await;
}

#[tokio::test]
async fn the_redis_store_indexes_users_from_before_usernames_were_unique() {
    let redis = RedisServer::start();
    let write_legacy = |user: &User| {
        let id = user.id.to_string();
        redis.cli(&["-n", "4", "HSET", &format!("gatehouse:user:{id}"), "id", &id, "email", &user.email]);
        redis.cli(&["-n", "4", "HSET", &format!("gatehouse:user:{id}"), "username", &user.username]);
        redis.cli(&[
            "-n",
            "4",
            "HSET",
            &format!("gatehouse:user:{id}"),
            "password_hash",
            "h",
            "is_admin",
            "0",
        ]);
        redis.cli(&["-n", "4", "HSET", &format!("gatehouse:user:{id}"), "blocked", "0", "created_at", "1"]);
        redis.cli(&["-n", "4", "HSET", &format!("gatehouse:user:{id}"), "token_version", "0"]);
        redis.cli(&["-n", "4", "SET", &format!("gatehouse:email:{}", user.email), &id]);
        redis.cli(&["-n", "4", "SADD", "gatehouse:users", &id]);
    };
    legacy_users().iter().for_each(write_legacy);
    redis.cli(&["-n", "4", "SET", "gatehouse:last_user_id", "3"]);
    let config = RedisConfig::for_url(&redis.url().replace("/0", "/4"));
    let store = RedisStore::start(&config, Duration::ZERO).unwrap();
    store.wait_until_synced(Duration::from_secs(5)).await.unwrap();
    indexes_legacy_users(&store).await;
    assert_eq!(redis.cli(&["-n", "4", "GET", "gatehouse:index_version"]).trim(), "1");
    assert_eq!(redis.cli(&["-n", "4", "EXISTS", "gatehouse:email:rené@example.com"]).trim(), "0", "old key");
    assert_eq!(redis.cli(&["-n", "4", "GET", "gatehouse:username:zoe"]).trim(), "2");

    // After a rolling upgrade (`DEL P index_version`), while no gateway has
    // indexed again, a login finds an account under the key it was created
    // with; looking it up indexes nothing (a command's store has no
    // background task to do it either).
    write_legacy(&legacy_user(9, "jürgen@example.com", "Jürgen"));
    redis.cli(&["-n", "4", "DEL", "gatehouse:index_version"]);
    let index_version = || redis.cli(&["-n", "4", "GET", "gatehouse:index_version"]).trim().to_owned();
    let command = RedisStore::for_command(&config, Duration::ZERO).await.unwrap();
    assert_eq!(command.user_by_email(&lookup(" JÜRGEN@example.com")).await.unwrap().unwrap().id, 9);
    assert!(command.user_by_email(&lookup("JURGEN@example.com")).await.unwrap().is_none(), "not indexed yet");
    assert_eq!(command.user_by_email(&lookup("rene@example.com")).await.unwrap().unwrap().id, 2);
    assert!(command.user_by_email(&lookup("NEW@example.com")).await.unwrap().is_some());
    assert_eq!(index_version(), "", "lookups index nothing");

    // A gateway that still takes the indexes as current finds out at its
    // next registration, which waits while they are indexed again.
    assert!(matches!(
        store.create_user(named("j@example.com", "jurgen")).await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(index_version(), "1");
    assert_eq!(store.user_by_email(&lookup("JURGEN@example.com")).await.unwrap().unwrap().id, 9);
    assert_eq!(store.user_by_email(&lookup("rene@example.com")).await.unwrap().unwrap().id, 2);
    assert_eq!(command.user_by_email(&lookup("JURGEN@example.com")).await.unwrap().unwrap().id, 9);

    // A gateway starting on outdated indexes brings them up to date by
    // itself, without a request.
    write_legacy(&legacy_user(10, "åsa@example.com", "Åsa"));
    redis.cli(&["-n", "4", "DEL", "gatehouse:index_version"]);
    let store = RedisStore::start(&config, Duration::ZERO).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while index_version() != "1" {
        assert!(std::time::Instant::now() < deadline, "not indexed in the background");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(redis.cli(&["-n", "4", "GET", "gatehouse:email:asa@example.com"]).trim(), "10");
    assert_eq!(redis.cli(&["-n", "4", "GET", "gatehouse:username:asa"]).trim(), "10");
    store.wait_until_synced(Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.user_by_email(&lookup("ASA@example.com")).await.unwrap().unwrap().id, 10);
    store.create_user(named("new2@example.com", "new2")).await.unwrap();

    // A command's store indexes there and then when a registration needs it.
    write_legacy(&legacy_user(11, "øyvind@example.com", "Øyvind"));
    redis.cli(&["-n", "4", "DEL", "gatehouse:index_version"]);
    let command = RedisStore::for_command(&config, Duration::ZERO).await.unwrap();
    assert!(matches!(
        command.create_user(named("o@example.com", "ØYVIND")).await,
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(index_version(), "1");
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
    assert!(other.user_by_email(&lookup("bob@example.com")).await.unwrap().is_some());
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
