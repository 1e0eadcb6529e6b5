//! The attack suite: one named test per bypass a hostile client might try.
//! Each runs against the real gateway binary over loopback and checks both the
//! answer and that the upstream never saw a refused request.

// Tests assert by unwrapping: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{raw, Gateway, Options, Upstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn setup() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream, Options::default());
    (upstream, gateway)
}

fn get_raw(gw: &Gateway, target: &str, extra_headers: &str) -> (u16, String) {
    raw(
        gw.addr,
        &format!("GET {target} HTTP/1.1\r\nHost: gatehouse\r\n{extra_headers}Connection: close\r\n\r\n"),
    )
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| v["error"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// Valid claims for `user_id`, as the gateway would issue them, for forging.
fn claims(user_id: u64) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"sub": user_id.to_string(), "jti": "forged-jti-0000000000", "iat": now, "nbf": now, "exp": now + 600,
           "iss": "gatehouse", "aud": "gatehouse", "type": "access", "fresh": true, "is_admin": true, "ver": 0, "fam": "f"})
}

fn sign(claims: &Value, alg: Algorithm, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn assert_refused(
    gw: &Gateway,
    upstream: &Upstream,
    path: &str,
    token: &str,
    want_status: u16,
    want_code: &str,
) {
    let before = upstream.seen().len();
    let (status, body) = gw.get(path, Some(token));
    assert_eq!((status, body["error"].as_str().unwrap_or("")), (want_status, want_code), "{body}");
    assert_eq!(upstream.seen().len(), before, "a refused request reached the upstream");
}

// ---- Route matching ----

#[test]
fn dot_dot_segments_cannot_walk_from_public_to_admin() {
    let (upstream, gw) = setup();
    for target in [
        "/debug/echo/public/../admin/x",
        "/debug/echo/public/%2e%2e/admin/x",
        "/debug/echo/public/%2E%2e/admin/x",
        "/debug/echo/public/./../admin/x",
    ] {
        let (status, body) = get_raw(&gw, target, "");
        assert_eq!((status, error_code(&body).as_str()), (401, "missing_token"), "{target}: {body}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn repeated_and_dot_slashes_match_the_route_they_resolve_to() {
    let (upstream, gw) = setup();
    for target in
        ["//debug/echo/admin/x", "/debug//echo/admin/x", "/./debug/echo/admin/x", "/debug/echo/admin/./x"]
    {
        let (status, body) = get_raw(&gw, target, "");
        assert_eq!((status, error_code(&body).as_str()), (401, "missing_token"), "{target}: {body}");
    }
    assert!(upstream.seen().is_empty());
}

#[test]
fn encoded_slashes_backslashes_nul_and_bad_escapes_are_rejected() {
    let (upstream, gw) = setup();
    for target in [
        "/debug/echo/admin%2fx",
        "/debug/echo/public%2F..%2Fadmin/x",
        "/debug/echo/public/..%5cadmin/x",
        "/debug/echo/public/%00/x",
        "/debug/echo/public/%zz",
        "/debug/echo/public/%4",
    ] {
        let (status, body) = get_raw(&gw, target, "");
        assert_eq!((status, error_code(&body).as_str()), (400, "invalid_path"), "{target}: {body}");
    }
    // A raw backslash may already be refused by the HTTP parser; either way, 400 and nothing forwarded.
    let (status, _) = get_raw(&gw, "/debug/echo/public/..\\admin/x", "");
    assert_eq!(status, 400);
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn path_parameters_are_rejected() {
    let (upstream, gw) = setup();
    for target in ["/debug/echo/admin;x/y", "/debug/echo/public;/../admin/x", "/debug/echo/admin%3bx"] {
        let (status, body) = get_raw(&gw, target, "");
        assert_eq!((status, error_code(&body).as_str()), (400, "invalid_path"), "{target}: {body}");
    }
    assert!(upstream.seen().is_empty());
}

#[test]
fn absolute_form_and_asterisk_targets_are_rejected() {
    let (upstream, gw) = setup();
    let target = format!("http://{}/debug/echo/public/x", gw.addr);
    // pingora's parser may refuse it before the gateway sees it; either way a 400.
    let (status, body) = get_raw(&gw, &target, "");
    assert_eq!(status, 400, "{body}");
    assert!(body.is_empty() || error_code(&body) == "invalid_path", "{body}");
    let (status, _) = raw(gw.addr, "OPTIONS * HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 400);
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn query_strings_never_change_the_matched_route() {
    let (upstream, gw) = setup();
    for target in ["/debug/echo/admin/x?/debug/echo/public/", "/debug/echo/admin/x?path=/public/../x#frag"] {
        let (status, body) = get_raw(&gw, target, "");
        assert_eq!((status, error_code(&body).as_str()), (401, "missing_token"), "{target}: {body}");
    }
    assert!(upstream.seen().is_empty());
}

#[test]
fn upstream_receives_the_normalised_path_that_was_authorised() {
    let (upstream, gw) = setup();
    let (status, body) = get_raw(&gw, "/debug/echo/public/a/../b//c/%7euser?q=%2e%2e&x=1", "");
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/debug/echo/public/b/c/~user?q=%2e%2e&x=1");
    assert_eq!(upstream.seen(), vec!["GET /debug/echo/public/b/c/~user?q=%2e%2e&x=1".to_owned()]);
}

#[test]
fn method_override_headers_are_removed() {
    let (_upstream, gw) = setup();
    let (admin, _) = gw.admin_login();
    let resp = gw
        .http
        .get(gw.url("/debug/echo/public/x"))
        .bearer_auth(&admin)
        .header("X-HTTP-Method-Override", "DELETE")
        .header("X-HTTP-Method", "DELETE")
        .header("X-Method-Override", "DELETE")
        .send()
        .unwrap();
    let echo: Value = resp.json().unwrap();
    assert_eq!(echo["method"], "GET");
    let headers = echo["headers"].as_object().unwrap();
    for name in ["x-http-method-override", "x-http-method", "x-method-override"] {
        assert!(headers.get(name).is_none(), "{name} reached the upstream: {echo}");
    }
}

// ---- Tokens ----

#[test]
fn alg_none_in_any_casing_is_refused() {
    let (upstream, gw) = setup();
    let payload = URL_SAFE_NO_PAD.encode(claims(1).to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
            assert_refused(&gw, &upstream, "/debug/echo/admin/x", &token, 401, "invalid_token");
        }
    }
}

#[test]
fn a_token_signed_with_another_key_is_refused() {
    let (upstream, gw) = setup();
    let token = sign(&claims(1), Algorithm::HS256, b"some-other-secret-some-other-secret-0000");
    assert_refused(&gw, &upstream, "/debug/echo/admin/x", &token, 401, "invalid_token");
}

#[test]
fn stripped_or_truncated_signatures_are_refused() {
    let (upstream, gw) = setup();
    let (admin, _) = gw.admin_login();
    let (head, _sig) = admin.rsplit_once('.').unwrap();
    assert_refused(&gw, &upstream, "/debug/echo/admin/x", &format!("{head}."), 401, "invalid_token");
    assert_refused(&gw, &upstream, "/debug/echo/admin/x", head, 401, "invalid_token");
    assert_refused(&gw, &upstream, "/debug/echo/admin/x", &admin[..admin.len() - 5], 401, "invalid_token");
}

#[test]
fn a_tampered_payload_is_refused() {
    let (upstream, gw) = setup();
    gw.register("mal@example.com", "mal", "mal-password");
    let (token, _) = gw.login("mal@example.com", "mal-password");
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["is_admin"] = json!(true);
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload.to_string()), parts[2]);
    assert_refused(&gw, &upstream, "/debug/echo/admin/x", &forged, 401, "invalid_token");
}

#[test]
fn key_confusion_with_another_algorithm_is_refused() {
    let (upstream, gw) = setup();
    let secret = gw.jwt_secret.as_bytes();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(&claims(1), alg, secret);
        assert_refused(&gw, &upstream, "/debug/echo/admin/x", &token, 401, "invalid_token");
    }
    // An RS256 header over an HMAC made with the shared secret (the classic confusion).
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let valid = sign(&claims(1), Algorithm::HS256, secret);
    let mut parts = valid.splitn(3, '.');
    let (_, payload, sig) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    assert_refused(
        &gw,
        &upstream,
        "/debug/echo/admin/x",
        &format!("{header}.{payload}.{sig}"),
        401,
        "invalid_token",
    );
}

#[test]
fn tokens_without_exp_or_with_wrong_time_issuer_or_audience_are_refused() {
    let (upstream, gw) = setup();
    let secret = gw.jwt_secret.as_bytes();
    // Sanity: our forging helper makes tokens the gateway accepts for user 1 (the admin).
    let good = sign(&claims(1), Algorithm::HS256, secret);
    assert_eq!(gw.get("/debug/echo/admin/x", Some(&good)).0, 200);

    let mut no_exp = claims(1);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_refused(
        &gw,
        &upstream,
        "/debug/echo/admin/x",
        &sign(&no_exp, Algorithm::HS256, secret),
        401,
        "invalid_token",
    );
    let mut future = claims(1);
    future["nbf"] = json!(jsonwebtoken::get_current_timestamp() + 3600);
    assert_refused(
        &gw,
        &upstream,
        "/debug/echo/admin/x",
        &sign(&future, Algorithm::HS256, secret),
        401,
        "token_not_yet_valid",
    );
    let mut expired = claims(1);
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 10);
    assert_refused(
        &gw,
        &upstream,
        "/debug/echo/admin/x",
        &sign(&expired, Algorithm::HS256, secret),
        401,
        "token_expired",
    );
    for (key, value) in [("iss", "someone-else"), ("aud", "another-service")] {
        let mut wrong = claims(1);
        wrong[key] = json!(value);
        assert_refused(
            &gw,
            &upstream,
            "/debug/echo/admin/x",
            &sign(&wrong, Algorithm::HS256, secret),
            401,
            "invalid_token",
        );
    }
}

#[test]
fn oversized_tokens_and_doubled_authorization_headers_are_refused() {
    let (upstream, gw) = setup();
    assert_refused(&gw, &upstream, "/debug/echo/any/x", &"a".repeat(5000), 401, "invalid_token");
    let (admin, _) = gw.admin_login();
    let auth = format!("Authorization: Bearer {admin}\r\n");
    let (status, body) = get_raw(&gw, "/debug/echo/any/x", &format!("{auth}{auth}"));
    assert_eq!((status, error_code(&body).as_str()), (400, "duplicate_authorization"));
    assert!(upstream.seen().is_empty());
}

#[test]
fn a_replayed_refresh_token_revokes_its_whole_login_session() {
    let (_upstream, gw) = setup();
    gw.register("nia@example.com", "nia", "nia-password");
    let (access, stolen) = gw.login("nia@example.com", "nia-password");

    // The owner refreshes: the old refresh token is retired and a new one issued.
    let (status, body) = gw.post("/refresh", Some(&stolen), Value::Null);
    assert_eq!(status, 200);
    let (new_access, new_refresh) = (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    );
    assert_ne!(new_refresh, stolen);
    assert_eq!(gw.get("/item/chair", Some(&new_access)).0, 200);

    // The thief replays the old one.
    let (status, body) = gw.post("/refresh", Some(&stolen), Value::Null);
    assert_eq!((status, body["error"].as_str()), (401, Some("refresh_token_reused")), "{body}");
    // Every token of that session is now dead; another session is not.
    for token in [&access, &new_access] {
        assert_eq!(gw.get("/item/chair", Some(token)).1["error"], "token_revoked");
    }
    assert_eq!(gw.post("/refresh", Some(&new_refresh), Value::Null).1["error"], "token_revoked");
    assert!(gw.log().contains("refresh token reuse detected"), "the reuse must be logged");
    let (other, _) = gw.login("nia@example.com", "nia-password");
    assert_eq!(gw.get("/item/chair", Some(&other)).0, 200);
}

#[test]
fn logout_everywhere_revokes_every_token_of_the_user() {
    let (_upstream, gw) = setup();
    let user = gw.register("oli@example.com", "oli", "oli-password");
    let (phone, phone_refresh) = gw.login("oli@example.com", "oli-password");
    let (laptop, _) = gw.login("oli@example.com", "oli-password");
    assert_eq!(gw.post("/logout", Some(&laptop), json!({"everywhere": true})).0, 200);
    assert_eq!(gw.get("/item/chair", Some(&phone)).1["error"], "token_revoked");
    assert_eq!(gw.post("/refresh", Some(&phone_refresh), Value::Null).0, 401);

    // An admin can do the same for a user.
    let (again, _) = gw.login("oli@example.com", "oli-password");
    let (admin, _) = gw.admin_login();
    let (status, _) =
        gw.send(reqwest::Method::DELETE, &format!("/user/{}/tokens", user["id"]), Some(&admin), None);
    assert_eq!(status, 200);
    assert_eq!(gw.get("/item/chair", Some(&again)).1["error"], "token_revoked");
    assert_eq!(gw.get("/item/chair", Some(&admin)).0, 200, "the admin's own tokens are untouched");
}

// ---- Login abuse ----

fn limited_gateway(limits: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw =
        Gateway::start(&upstream, Options { extra: format!("[limits]\n{limits}\n"), ..Options::default() });
    (upstream, gw)
}

#[test]
fn login_attempts_per_ip_are_rate_limited_with_retry_after() {
    let (_upstream, gw) = limited_gateway("login_per_ip_per_minute = 4");
    let attempt = || {
        gw.http
            .post(gw.url("/login"))
            .json(&json!({"email": "x@y.z", "password": "wrong-password"}))
            .send()
            .unwrap()
    };
    for _ in 0..4 {
        assert_eq!(attempt().status(), 401);
    }
    let resp = attempt();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(resp.json::<Value>().unwrap()["error"], "rate_limited");
    // Registration shares the per-IP budget.
    let (status, _) =
        gw.post("/register", None, json!({"email": "r@y.z", "username": "r", "password": "long-enough"}));
    assert_eq!(status, 429);
}

#[test]
fn password_guessing_backs_off_per_ip_but_cannot_lock_the_owner_out() {
    let (_upstream, gw) = limited_gateway("failures_before_backoff = 2\nmax_backoff = \"2s\"");
    let wrong = json!({"email": common::ADMIN_EMAIL, "password": "guess-guess"});
    let right = json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD});
    assert_eq!(gw.post("/login", None, wrong.clone()).0, 401);
    assert_eq!(gw.post("/login", None, wrong.clone()).0, 401);
    // Now this IP waits, even with the right password...
    let resp = gw.http.post(gw.url("/login")).json(&right).send().unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // ...but the owner on another address is not affected.
    let other = reqwest::blocking::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    assert_eq!(other.post(gw.url("/login")).json(&right).send().unwrap().status(), 200);
    // And the lockout is bounded by max_backoff.
    for _ in 0..5 {
        let _ = gw.post("/login", None, wrong.clone());
    }
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(gw.post("/login", None, right).0, 200);
}

// ---- Limits and slow clients ----

#[test]
fn oversized_headers_are_refused_with_431() {
    let (upstream, gw) = setup();
    let big = format!("X-Padding: {}\r\n", "p".repeat(40 * 1024));
    let (status, body) = get_raw(&gw, "/debug/echo/public/x", &big);
    assert_eq!((status, error_code(&body).as_str()), (431, "headers_too_large"), "{body}");
    assert!(upstream.seen().is_empty());
}

#[test]
fn slow_bodies_and_idle_connections_are_cut_off() {
    let (_upstream, gw) = limited_gateway("client_read_timeout = \"1s\"\nclient_idle_timeout = \"1s\"");
    // A body that never arrives: the gateway gives up instead of waiting forever.
    let mut slow = TcpStream::connect(gw.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    slow.write_all(b"POST /login HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n{\"email\":").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "slow client held the connection for {:?}",
        started.elapsed()
    );

    // An idle kept-alive connection is closed after the idle timeout.
    let mut idle = TcpStream::connect(gw.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    idle.write_all(b"GET /debug/echo/public/x HTTP/1.1\r\nHost: g\r\n\r\n").unwrap();
    let mut first = [0u8; 4096];
    let n = idle.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(10), "idle connection kept for {:?}", started.elapsed());

    // The gateway still serves everyone else.
    assert_eq!(gw.get("/items", None).0, 200);
}
