//! Emails and usernames through the running gateway: variants of a taken
//! email or username (fullwidth, other case, Turkish İ/ı, accents) are
//! refused as taken, and text that hides or reorders characters (zero-width
//! spaces, bidirectional overrides, mixed scripts) is refused as invalid, on
//! `/register`, on the admin API and on `gatehouse user add`, with sled and
//! with Redis.

use serde_json::{json, Value};

use crate::common::redis::RedisServer;
use crate::common::{Gateway, Options, Upstream, ADMIN_EMAIL, ADMIN_PASSWORD};

/// Registers; the status and the error code (`None` on success).
fn register(gw: &Gateway, email: &str, username: &str) -> (u16, Option<String>, Value) {
    let (status, body) = gw.post(
        "/register",
        None,
        json!({"email": email, "username": username, "password": "long-password"}),
    );
    let code = body["error"].as_str().map(str::to_owned);
    (status, code, body)
}

/// The seeded admin is `admin@example.com`, username `admin`.
fn refuses_lookalikes(gw: &Gateway) {
    let taken = |email: &str, username: &str, code: &str| {
        let (status, error, body) = register(gw, email, username);
        assert_eq!((status, error.as_deref()), (409, Some(code)), "{email:?} {username:?}: {body}");
    };
    let invalid = |email: &str, username: &str, says: &str| {
        let (status, error, body) = register(gw, email, username);
        assert_eq!(
            (status, error.as_deref()),
            (400, Some("invalid_request")),
            "{email:?} {username:?}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{email:?} {username:?}: {message}");
    };

    // Emails: compatibility forms, case and accents are the same address.
    taken("ＡＤＭＩＮ@example.com", "fresh-1", "email_taken");
    taken("ADMİN@example.com", "fresh-2", "email_taken");
    taken("admın@EXAMPLE.com", "fresh-3", "email_taken");
    taken("ádmin@example.com", "fresh-4", "email_taken");
    invalid("admin\u{200b}@example.com", "fresh-5", "invisible");
    invalid("admin@example\u{00ad}.com", "fresh-5", "invisible");
    invalid("ad\u{202e}min@example.com", "fresh-5", "bidirectional");
    invalid("admin@exаmple.com", "fresh-5", "xn--");

    // Usernames are unique by the same key.
    for username in ["admin", "Admin", "ＡＤＭＩＮ", "ａｄｍｉｎ", "admın", "ADMİN", "ädmin"] {
        taken("someone@example.com", username, "username_taken");
    }
    let (_, _, body) = register(gw, "someone@example.com", "Admin");
    assert!(body["message"].as_str().unwrap().contains("username already exists"), "{body}");
    invalid("someone@example.com", "ad\u{202e}nimda", "bidirectional");
    invalid("someone@example.com", "\u{2067}admin\u{2069}", "bidirectional");
    invalid("someone@example.com", "admin\u{200b}", "invisible");
    invalid("someone@example.com", "admin\u{feff}", "invisible");
    invalid("someone@example.com", "аdmin", "scripts");
    invalid("someone@example.com", "ad\u{00a0}min", "whitespace");

    // None of those created anything; the address is still free.
    let (status, _, body) = register(gw, "someone@example.com", "Someone Else");
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["email"].as_str(), body["username"].as_str()),
        (Some("someone@example.com"), Some("Someone Else"))
    );

    // Stored forms: NFKC, the email lower-cased, the username's case kept.
    let (status, _, joe) = register(gw, "ＪＯＥ@Example.com", "Ｊｏｅ");
    assert_eq!(status, 201, "{joe}");
    assert_eq!((joe["email"].as_str(), joe["username"].as_str()), (Some("joe@example.com"), Some("Joe")));

    // Logins find an account whichever variant is typed.
    let padded = |n: usize| format!("{ADMIN_EMAIL}{}", "\u{200b}".repeat(n));
    for email in [ADMIN_EMAIL, "ＡＤＭＩＮ@example.com", "ADMİN@Example.com", &padded(3)] {
        let (status, body) = gw.post("/login", None, json!({"email": email, "password": ADMIN_PASSWORD}));
        assert_eq!(status, 200, "{email}: {body}");
    }
    // But not in a form longer than any stored email (1024 bytes, where
    // no email is over 254): that is not even normalised, and is answered
    // as an unknown email is.
    for email in [padded(400), format!("{}@example.com", "ａ".repeat(400))] {
        let (status, body) = gw.post("/login", None, json!({"email": email, "password": ADMIN_PASSWORD}));
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_credentials")), "{body}");
    }

    // The upstream sees the normalised username.
    let (access, _) = gw.login("joe@example.com", "long-password");
    let (status, echo) = gw.get("/debug/echo/any/x", Some(&access));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-auth-username"], json!(["Joe"]));

    // The admin API and the CLI create users through the same checks.
    let out = gw.cli(
        &["user", "add", "--email", "root@example.com", "--username", "ＡＤＭＩＮ", "--admin"],
        "long-password\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("username already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gw.cli(
        &["user", "add", "--email", "root@example.com", "--username", "ro\u{202e}ot"],
        "long-password\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bidirectional"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        gw.cli(&["user", "add", "--email", "root@example.com", "--username", "root"], "long-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn lookalike_emails_and_usernames_are_refused_with_sled() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default());
    refuses_lookalikes(&gw);
}

#[test]
fn lookalike_emails_and_usernames_are_refused_with_redis() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let gw = Gateway::start(&upstream, Options::default().config(redis.store()));
    refuses_lookalikes(&gw);
}

/// `gatehouse migrate` from a sled store written before usernames were
/// unique, where two accounts share a username once normalised: the older
/// keeps the index entry, the newer is copied all the same, without it.
#[test]
fn migrate_copies_lookalike_accounts_and_the_older_keeps_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        // No background flusher: dropping the database releases its lock at once.
        let db = sled::Config::new().path(&data).flush_every_ms(None).open().unwrap();
        let (users, emails) = (db.open_tree("users").unwrap(), db.open_tree("emails").unwrap());
        for (id, email, username) in [
            (1u64, "ann@example.com", "admin"),
            (2, "rené@example.com", "René"),
            (3, "bob@example.com", "Admin"),
        ] {
            let user = json!({"id": id, "email": email, "username": username, "password_hash": "h",
                "is_admin": false, "blocked": false, "created_at": 1, "token_version": 0});
            users.insert(id.to_be_bytes(), serde_json::to_vec(&user).unwrap()).unwrap();
            emails.insert(email.as_bytes(), &id.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    let redis = RedisServer::start();
    let out = std::process::Command::new(crate::common::binary())
        .args(["--config", &dir.path().join("none.toml").display().to_string(), "migrate"])
        .arg(format!("--from=sled:{}", data.display()))
        .arg(format!("--to=redis:{}", redis.url()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("migrated 3 users"), "{stdout}");
    assert!(stdout.contains("user 3 shares its username with an older account"), "{stdout}");
    let get = |key: &str| redis.cli(&["GET", &format!("gatehouse:{key}")]).trim().to_owned();
    assert_eq!(get("username:admin"), "1");
    assert_eq!(get("email:bob@example.com"), "3");
    assert_eq!(get("email:rene@example.com"), "2", "keyed by comparison key");
    assert_eq!(get("username:rene"), "2");
    assert_eq!(get("index_version"), "1");
    assert_eq!(redis.cli(&["HGET", "gatehouse:user:3", "username"]).trim(), "Admin");
}
