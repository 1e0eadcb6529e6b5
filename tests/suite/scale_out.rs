//! Several gateways on one Redis: users, revocations and login limits are
//! shared, a revocation on one gateway is refused on the others within a
//! second, and a Redis outage is handled as documented (fail closed by
//! default, 503 from the built-in endpoints, not ready) and recovered from
//! without losing anything Redis acknowledged.

use std::time::{Duration, Instant};

use gatehouse::config::file::{FileConfig, LimitsSection, RedisSection, Word};
use gatehouse::config::WhenUnreachable;
use serde_json::{json, Value};

use crate::common::config::{spanned, text};
use crate::common::redis::{on_redis, RedisServer, Sentinel};
use crate::common::{Gateway, Options, Upstream, ADMIN_EMAIL, ADMIN_PASSWORD};

/// Two gateways on the Redis `store` describes, sharing one signing secret,
/// with `change` made to both configs. A seeds the admin.
fn pair(
    upstream: &Upstream,
    store: RedisSection,
    change: impl Fn(&mut FileConfig) + 'static,
) -> (Gateway, Gateway) {
    let options = Options::default().config(on_redis(store)).config(change);
    let a = Gateway::start(upstream, options.clone());
    let b = Gateway::start(
        upstream,
        Options { seed_admin: false, jwt_secret: Some(a.jwt_secret.clone()), ..options },
    );
    (a, b)
}

/// Polls `check` every 10 ms until it holds; how long that took, or `None`
/// if it didn't within `limit`.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn metrics(gateway: &Gateway) -> String {
    gateway.http.get(format!("http://{}/metrics", gateway.admin_addr)).send().unwrap().text().unwrap()
}

fn error_of(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["error"].as_str())
}

#[test]
fn a_user_registered_on_one_gateway_logs_in_on_the_other() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |_| {});
    let created = a.register("ann@example.com", "ann", "ann-password-1");
    let (access, refresh) = b.login("ann@example.com", "ann-password-1");
    assert_eq!(a.get("/item/chair", Some(&access)).0, 200, "B's token works on A");
    assert_eq!(b.get("/item/chair", Some(&access)).0, 200);
    // The admin seeded through the CLI on A's config exists for B too.
    let (admin, _) = b.admin_login();
    let (status, shown) = a.get(&format!("/user/{}", created["id"]), Some(&admin));
    assert_eq!((status, shown["email"].as_str()), (200, Some("ann@example.com")));
    // The email is taken on both.
    let (status, body) = b.post(
        "/register",
        None,
        json!({"email": "ANN@example.com", "username": "x", "password": "pw-123456789"}),
    );
    assert_eq!((status, body["error"].as_str()), (409, Some("email_taken")));
    // Refresh rotation is shared: a refresh token used on A is spent on B.
    let (status, _) = a.post("/refresh", Some(&refresh), Value::Null);
    assert_eq!(status, 200);
    let replay = b.post("/refresh", Some(&refresh), Value::Null);
    assert_eq!(error_of(&replay), (401, Some("refresh_token_reused")));
}

#[test]
fn a_logout_on_one_gateway_is_refused_on_the_other_within_a_second() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |_| {});
    a.register("bob@example.com", "bob", "bob-password-1");
    for round in 0..5 {
        let (access, _) = a.login("bob@example.com", "bob-password-1");
        assert_eq!(a.get("/item/chair", Some(&access)).0, 200, "round {round}: A knows the token is good");
        assert_eq!(b.post("/logout", Some(&access), Value::Null).0, 200);
        let took = within(Duration::from_secs(1), || {
            error_of(&a.get("/item/chair", Some(&access))) == (401, Some("token_revoked"))
        });
        assert!(took.is_some(), "round {round}: A still accepts a token B revoked a second ago");
    }

    // Each revocation expires in Redis with its token (15 minutes here, no leeway).
    let keys = redis.cli(&["--scan", "--pattern", "gatehouse:revoked:*"]);
    assert_eq!(keys.lines().count(), 5, "{keys}");
    for key in keys.lines() {
        let ttl: i64 = redis.cli(&["TTL", key]).trim().parse().unwrap();
        assert!((850..=900).contains(&ttl), "{key} expires in {ttl} s");
    }

    // "Log out everywhere" on B bumps the user's token version: A drops its cached record.
    let (first, _) = a.login("bob@example.com", "bob-password-1");
    let (second, _) = b.login("bob@example.com", "bob-password-1");
    assert_eq!(a.get("/item/chair", Some(&first)).0, 200);
    assert_eq!(b.post("/logout", Some(&second), json!({"everywhere": true})).0, 200);
    let took = within(Duration::from_secs(1), || a.get("/item/chair", Some(&first)).0 == 401);
    assert!(took.is_some(), "A still accepts a token after logout-everywhere on B");

    // A block through the CLI (straight to Redis, no gateway involved) reaches both.
    let (access, _) = a.login("bob@example.com", "bob-password-1");
    assert_eq!(b.get("/item/chair", Some(&access)).0, 200);
    let out = a.cli(&["user", "block", "bob@example.com"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for gateway in [&a, &b] {
        let took = within(Duration::from_secs(1), || {
            error_of(&gateway.get("/item/chair", Some(&access))) == (403, Some("account_blocked"))
        });
        assert!(took.is_some(), "a blocked user's token still works on {}", gateway.addr);
    }
}

#[test]
fn a_dropped_subscription_is_resynced_not_trusted() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |_| {});
    let ready = |gateway: &Gateway| {
        gateway
            .http
            .get(format!("http://{}/readyz", gateway.admin_addr))
            .send()
            .is_ok_and(|r| r.status() == 200)
    };
    for round in 0..3 {
        let (access, _) = a.admin_login();
        let (status, body) = a.get("/item/chair", Some(&access));
        assert_eq!(status, 200, "round {round}: {body} {}", a.log());
        // Cut every subscription and keep them from coming back; then revoke.
        // The event is published while A is not listening, so A can only
        // learn of it by asking Redis.
        redis.cli(&["ACL", "SETUSER", "default", "-subscribe"]);
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_eq!(b.post("/logout", Some(&access), Value::Null).0, 200);
        let took = within(Duration::from_secs(1), || {
            error_of(&a.get("/item/chair", Some(&access))) == (401, Some("token_revoked"))
        });
        assert!(took.is_some(), "round {round}: A trusted its copy after losing the subscription");
        assert!(!ready(&a), "round {round}: A says it is in step without a subscription");
        // Subscriptions allowed again: A resubscribes, reloads, and is ready.
        redis.cli(&["ACL", "SETUSER", "default", "+subscribe"]);
        assert!(
            within(Duration::from_secs(5), || ready(&a)).is_some(),
            "round {round}: A did not resubscribe"
        );
        assert_eq!(error_of(&a.get("/item/chair", Some(&access))), (401, Some("token_revoked")));
    }
    assert!(a.log().contains("redis subscription lost"), "{}", a.log());
}

#[test]
fn login_limits_count_across_gateways() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |c| {
        c.limits = LimitsSection {
            login_per_ip_per_minute: Some(6),
            failures_before_backoff: Some(spanned(2)),
            max_backoff: text("30s"),
            ..LimitsSection::default()
        }
    });
    let wrong = json!({"email": ADMIN_EMAIL, "password": "wrong-password"});
    // Two wrong passwords, one on each gateway: backoff starts for this account and IP on both.
    assert_eq!(error_of(&a.post("/login", None, wrong.clone())), (401, Some("invalid_credentials")));
    assert_eq!(error_of(&b.post("/login", None, wrong.clone())), (401, Some("invalid_credentials")));
    for gateway in [&a, &b] {
        let (status, body) = gateway.post("/login", None, json!({"email": ADMIN_EMAIL, "password": "x"}));
        assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "{}", gateway.addr);
    }
    // The per-IP budget (6 a minute) is shared too: 4 attempts used, 2 left in all.
    let other = json!({"email": "nobody@example.com", "password": "x"});
    assert_eq!(a.post("/login", None, other.clone()).0, 401);
    assert_eq!(b.post("/login", None, other.clone()).0, 401);
    let (status, body) = a.post("/login", None, other.clone());
    assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")));
    assert_eq!(b.post("/login", None, other).0, 429);
    // The counters live in Redis with an expiry: nothing grows without bound.
    let keys = redis.cli(&["--scan", "--pattern", "gatehouse:limit:*"]);
    assert!(keys.lines().count() >= 2, "{keys}");
    for key in keys.lines() {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

#[test]
fn failures_before_backoff_0_turns_the_shared_backoff_off() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |c| {
        c.limits = LimitsSection { failures_before_backoff: Some(spanned(0)), ..LimitsSection::default() }
    });
    let wrong = json!({"email": ADMIN_EMAIL, "password": "wrong-password"});
    for gateway in [&a, &b, &a, &b, &a, &b, &a, &b] {
        assert_eq!(
            error_of(&gateway.post("/login", None, wrong.clone())),
            (401, Some("invalid_credentials"))
        );
    }
    assert_eq!(b.post("/login", None, json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})).0, 200);
    // Only the per-account count is kept, no per-IP backoff record.
    let keys = redis.cli(&["--scan", "--pattern", "gatehouse:limit:account:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(!keys.contains(":ip:"), "{keys}");
}

#[test]
fn a_redis_outage_fails_closed_and_recovers_with_nothing_lost() {
    let upstream = Upstream::start();
    let mut redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |_| {});
    a.register("cat@example.com", "cat", "cat-password-1");
    let (revoked, _) = a.login("cat@example.com", "cat-password-1");
    let (good, _) = b.login("cat@example.com", "cat-password-1");
    assert_eq!(b.post("/logout", Some(&revoked), Value::Null).0, 200);
    assert_eq!(a.get("/item/chair", Some(&good)).0, 200);

    redis.kill();
    // Noticed within the ping interval plus the command timeout.
    let noticed = within(Duration::from_secs(2), || {
        error_of(&a.get("/item/chair", Some(&good))) == (503, Some("store_unavailable"))
    });
    assert!(noticed.is_some(), "A kept serving without its store (fail_closed is the default)");
    for gateway in [&a, &b] {
        let (status, body) = gateway.get("/item/chair", Some(&good));
        assert_eq!((status, body["error"].as_str()), (503, Some("store_unavailable")), "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.contains("redis://")), "{body}");
        let login =
            gateway.post("/login", None, json!({"email": "cat@example.com", "password": "cat-password-1"}));
        assert_eq!(error_of(&login), (503, Some("store_unavailable")));
        let register = gateway.post(
            "/register",
            None,
            json!({"email": "d@example.com", "username": "d", "password": "pw-123456789"}),
        );
        assert_eq!(error_of(&register), (503, Some("store_unavailable")));
        let ready = gateway.http.get(format!("http://{}/readyz", gateway.admin_addr)).send().unwrap();
        assert_eq!(ready.status(), 503);
        assert!(metrics(gateway).contains("gatehouse_store_up 0"));
        // Anonymous requests on optional routes need no store.
        assert_eq!(gateway.get("/items", None).0, 200);
    }
    // The CLI says what is wrong, and fails.
    let out = a.cli(&["user", "list"], "");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("cannot use the redis store"), "{said}");

    redis.restart();
    for gateway in [&a, &b] {
        let back = within(Duration::from_secs(10), || gateway.get("/item/chair", Some(&good)).0 == 200);
        assert!(back.is_some(), "{} did not recover: {}", gateway.addr, gateway.log());
        let (status, body) = gateway.get("/item/chair", Some(&revoked));
        assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")), "a revocation was lost");
        let ready = within(Duration::from_secs(5), || {
            gateway
                .http
                .get(format!("http://{}/readyz", gateway.admin_addr))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        assert!(ready.is_some());
        assert!(metrics(gateway).contains("gatehouse_store_up 1"));
    }
    // A gateway that never saw the revocation learns it from Redis alone.
    let c = Gateway::start(
        &upstream,
        Options { seed_admin: false, jwt_secret: Some(a.jwt_secret.clone()), ..Options::default() }
            .config(redis.store()),
    );
    assert_eq!(error_of(&c.get("/item/chair", Some(&revoked))), (401, Some("token_revoked")));
    let (status, body) = c.get("/item/chair", Some(&good));
    assert_eq!(status, 200, "{body}");
    c.login("cat@example.com", "cat-password-1");
}

#[test]
fn fail_open_serves_known_tokens_during_an_outage_but_never_revoked_ones() {
    let upstream = Upstream::start();
    let mut redis = RedisServer::start();
    let fail_open = Some(Word(WhenUnreachable::FailOpen));
    let (a, b) = pair(&upstream, RedisSection { when_unreachable: fail_open, ..redis.section() }, |_| {});
    let (revoked, _) = a.admin_login();
    let (good, _) = a.admin_login();
    assert_eq!(b.post("/logout", Some(&revoked), Value::Null).0, 200);
    assert_eq!(a.get("/item/chair", Some(&good)).0, 200, "A caches the account");
    assert!(within(Duration::from_secs(1), || a.get("/item/chair", Some(&revoked)).0 == 401).is_some());

    redis.kill();
    let noticed = within(Duration::from_secs(2), || {
        a.http.get(format!("http://{}/readyz", a.admin_addr)).send().is_ok_and(|r| r.status() == 503)
    });
    assert!(noticed.is_some(), "A did not notice the outage");
    assert_eq!(a.get("/item/chair", Some(&good)).0, 200, "fail_open: a known, unrevoked token passes");
    assert_eq!(error_of(&a.get("/item/chair", Some(&revoked))), (401, Some("token_revoked")));
    // Built-in endpoints still refuse: they would have to write.
    let login = a.post("/login", None, json!({"email": ADMIN_EMAIL, "password": "whatever"}));
    assert_eq!(error_of(&login), (503, Some("store_unavailable")));
    assert_eq!(error_of(&a.post("/logout", Some(&good), Value::Null)), (503, Some("store_unavailable")));
    redis.restart();
    assert!(
        within(Duration::from_secs(10), || a.post("/logout", Some(&good), Value::Null).0 == 200).is_some()
    );
}

#[test]
fn migrate_copies_users_and_live_revocations_from_sled() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let mut old = Gateway::start(&upstream, Options::default());
    let ann = old.register("ann@example.com", "ann", "ann-password-1");
    let (kept, _) = old.login("ann@example.com", "ann-password-1");
    let (revoked, refresh) = old.login("ann@example.com", "ann-password-1");
    assert_eq!(old.post("/logout", Some(&revoked), json!({"refresh_token": refresh})).0, 200);
    for role in ["editor", "billing:write"] {
        let out = old.cli(&["user", "roles", "add", "ann@example.com", role], "");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    old.terminate();

    let data = old.dir.path().join("data");
    let (from, to) = (format!("sled:{}", data.display()), format!("redis:{}", redis.url()));
    let migrate = || old.cli(&["migrate", "--from", &from, "--to", &to], "");
    let out = migrate();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("migrated 2 users and 2 live revocations"), "{said}");

    // The same secret on Redis: tokens issued before the move behave as before.
    let new = Gateway::start(
        &upstream,
        Options { seed_admin: false, jwt_secret: Some(old.jwt_secret.clone()), ..Options::default() }
            .config(redis.store()),
    );
    assert_eq!(new.get("/item/chair", Some(&kept)).0, 200);
    assert_eq!(error_of(&new.get("/item/chair", Some(&revoked))), (401, Some("token_revoked")));
    new.login("ann@example.com", "ann-password-1");
    let roles = new.cli(&["user", "roles", "list", "ann@example.com"], "");
    let roles: Value = serde_json::from_slice(&roles.stdout).unwrap();
    assert_eq!(roles["roles"], json!(["billing:write", "editor"]), "roles are copied: {roles}");
    new.admin_login();
    // New accounts continue after the migrated ids.
    let next = new.register("bea@example.com", "bea", "bea-password-1");
    assert!(next["id"].as_u64() > ann["id"].as_u64(), "{next}");
    // Running it again changes nothing and fails nothing.
    let again = migrate();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn gateways_reach_redis_over_tls_with_a_password_that_never_shows() {
    let upstream = Upstream::start();
    let password = "s3cret-redis-password";
    let redis = RedisServer::start_tls_with_password(password);
    let password_file = redis.dir.path().join("redis.password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let tls = RedisSection {
        tls_ca_file: Some(redis.ca_path().display().to_string()),
        password_file: Some(password_file.display().to_string()),
        ..redis.section()
    };
    let (a, b) = pair(&upstream, tls.clone(), |_| {});
    a.register("tls@example.com", "tls", "tls-password-1");
    let (access, _) = b.login("tls@example.com", "tls-password-1");
    assert_eq!(b.post("/logout", Some(&access), Value::Null).0, 200);
    assert!(within(Duration::from_secs(1), || a.get("/item/chair", Some(&access)).0 == 401).is_some());

    // A wrong password: not ready, a clear log line, and the password nowhere.
    std::fs::write(&password_file, "not-the-password").unwrap();
    let wrong = Gateway::start(
        &upstream,
        Options {
            seed_admin: false,
            jwt_secret: Some(a.jwt_secret.clone()),
            wait_for_store: false,
            ..Options::default()
        }
        .config(on_redis(tls)),
    );
    let (status, body) = wrong.get("/item/chair", Some(&access));
    assert_eq!((status, body["error"].as_str()), (503, Some("store_unavailable")), "{body}");
    let ready = wrong.http.get(format!("http://{}/readyz", wrong.admin_addr)).send().unwrap();
    assert_eq!(ready.status(), 503);
    let log = wrong.log();
    assert!(log.contains("redis"), "{log}");
    for gateway in [&a, &b, &wrong] {
        assert!(
            !gateway.log().contains(password) && !gateway.log().contains("not-the-password"),
            "{}",
            gateway.log()
        );
    }
}

#[test]
fn sentinel_failover_keeps_every_acknowledged_write() {
    let upstream = Upstream::start();
    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let sentinel = Sentinel::start(&master);
    // wait_replicas = 1: a write is acknowledged only once the replica has it,
    // so promoting the replica loses nothing a client was told succeeded. On a
    // loaded 2-core machine a replica's acknowledgement has taken over 500 ms.
    let store = RedisSection {
        sentinels: Some(vec![spanned(format!("redis://127.0.0.1:{}", sentinel.port))]),
        master_name: text("gatehouse"),
        wait_replicas: Some(1),
        wait_timeout: text("2s"),
        command_timeout: text("3s"),
        connect_timeout: text("300ms"),
        ..RedisSection::default()
    };
    let gw = Gateway::start(&upstream, Options::default().config(on_redis(store)));
    gw.register("sam@example.com", "sam", "sam-password-1");
    let (revoked, _) = gw.login("sam@example.com", "sam-password-1");
    let (good, _) = gw.login("sam@example.com", "sam-password-1");
    assert_eq!(gw.post("/logout", Some(&revoked), Value::Null).0, 200);

    master.kill();
    let promoted = within(Duration::from_secs(30), || sentinel.master_port() == replica.port.to_string());
    assert!(promoted.is_some(), "sentinel did not fail over");
    let back = within(Duration::from_secs(15), || gw.get("/item/chair", Some(&good)).0 == 200);
    assert!(back.is_some(), "the gateway did not follow the failover: {}", gw.log());
    assert_eq!(error_of(&gw.get("/item/chair", Some(&revoked))), (401, Some("token_revoked")));
    gw.login("sam@example.com", "sam-password-1");
    // No replica is left to confirm a write: it is not acknowledged. (Redis
    // has applied it all the same: WAIT confirms, it does not roll back.)
    let (status, body) = gw.post("/logout", Some(&good), Value::Null);
    assert_eq!((status, body["error"].as_str()), (503, Some("store_unavailable")), "{body}");
    // The old master comes back; Sentinel makes it a replica of the new one,
    // and writes are acknowledged again, on the new master.
    master.restart();
    let following = within(Duration::from_secs(40), || {
        let info = master.try_cli(&["INFO", "replication"]).unwrap_or_default();
        info.contains("role:slave") && info.contains("master_link_status:up")
    });
    assert!(following.is_some(), "sentinel did not turn the old master into a replica");
    // The new master counts the returned replica once it has acknowledged the
    // sync: allow it a few seconds (twice a second, within the login limits).
    let login = json!({"email": "sam@example.com", "password": "sam-password-1"});
    let mut last = Value::Null;
    let confirmed = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        let (_, tokens) = gw.post("/login", None, login.clone());
        let answer = gw.post("/logout", tokens["access_token"].as_str(), Value::Null);
        last = answer.1;
        answer.0 == 200
    });
    assert!(confirmed, "writes were not acknowledged again: {last} {}", gw.log());
    assert!(replica.cli(&["--scan", "--pattern", "gatehouse:revoked:*"]).lines().count() >= 3);
}

/// A role granted or withdrawn through one gateway is decided on by the
/// other within a second: the role check reads the shared account.
#[test]
fn a_role_change_on_one_gateway_is_decided_on_by_the_other_within_a_second() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let (a, b) = pair(&upstream, redis.section(), |c| {
        let mut editors = crate::common::config::route("/debug/echo/editors/**", &[], "any");
        editors.get_mut().roles = vec![spanned("editor".to_owned())];
        c.routes.push(editors);
    });
    let id = a.register("ria@example.com", "ria", "ria-password-1")["id"].as_u64().unwrap();
    let (token, _) = b.login("ria@example.com", "ria-password-1");
    let on_b = || b.get("/debug/echo/editors/x", Some(&token));
    assert_eq!(error_of(&on_b()), (403, Some("role_required")));
    let call = |gw: &Gateway, method: reqwest::Method| {
        let url = format!("http://{}/admin/users/{id}/roles/editor", gw.admin_addr);
        let resp = gw.http.request(method, url).bearer_auth(&gw.admin_token).send().unwrap();
        assert_eq!(resp.status(), 200);
    };
    call(&a, reqwest::Method::PUT);
    let took = within(Duration::from_secs(1), || on_b().0 == 200);
    assert!(took.is_some(), "the grant on A was not seen by B within a second: {:?}", on_b());
    let (_, echo) = on_b();
    assert_eq!(echo["headers"]["x-auth-roles"], json!(["editor"]), "{echo}");

    call(&b, reqwest::Method::DELETE);
    let on_a = || a.get("/debug/echo/editors/x", Some(&token));
    let took = within(Duration::from_secs(1), || error_of(&on_a()) == (403, Some("role_required")));
    assert!(took.is_some(), "the withdrawal on B was not seen by A within a second: {:?}", on_a());
}
