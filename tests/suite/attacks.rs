//! The attack suite: one named test per bypass a hostile client might try.
//! Each runs against the real gateway binary over loopback and checks both the
//! answer and that the upstream never saw a refused request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::config::file::{HealthCheck, LimitsSection, Word};
use gatehouse::request::UnderscoreHeaders;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::config::{route, spanned, text};
use crate::common::{raw, Gateway, Options, Upstream};

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

fn limited_gateway(limits: LimitsSection) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(move |c| c.limits = limits.clone()));
    (upstream, gw)
}

#[test]
fn login_attempts_per_ip_are_rate_limited_with_retry_after() {
    let (_upstream, gw) =
        limited_gateway(LimitsSection { login_per_ip_per_minute: Some(4), ..LimitsSection::default() });
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
    let (_upstream, gw) = limited_gateway(LimitsSection {
        failures_before_backoff: Some(spanned(2)),
        max_backoff: text("2s"),
        ..LimitsSection::default()
    });
    let wrong = json!({"email": crate::common::ADMIN_EMAIL, "password": "guess-guess"});
    let right = json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD});
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

#[test]
fn failures_before_backoff_0_turns_the_backoff_off() {
    let (_upstream, gw) = limited_gateway(LimitsSection {
        failures_before_backoff: Some(spanned(0)),
        ..LimitsSection::default()
    });
    let wrong = json!({"email": crate::common::ADMIN_EMAIL, "password": "guess-guess"});
    // Past the default of 5, where this IP would wait: every guess is judged.
    for _ in 0..8 {
        let (status, body) = gw.post("/login", None, wrong.clone());
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_credentials")));
    }
    let right = json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD});
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
    let (_upstream, gw) = limited_gateway(LimitsSection {
        client_read_timeout: text("1s"),
        client_idle_timeout: text("1s"),
        ..LimitsSection::default()
    });
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

// ---- Request integrity: what was judged is what arrives ----

#[test]
fn a_token_with_a_crit_header_is_refused() {
    let (upstream, gw) = setup();
    let header = Header { crit: Some(vec!["exp".into()]), ..Header::new(Algorithm::HS256) };
    let key = EncodingKey::from_secret(gw.jwt_secret.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims(1), &key).unwrap();
    assert_refused(&gw, &upstream, "/debug/echo/any/x", &token, 401, "invalid_token");
    // The same token without `crit` is accepted: only `crit` made the difference.
    let plain = sign(&claims(1), Algorithm::HS256, gw.jwt_secret.as_bytes());
    assert_eq!(gw.get("/debug/echo/any/x", Some(&plain)).0, 200);
}

#[test]
fn built_in_paths_are_never_forwarded_in_any_spelling() {
    let (upstream, gw) = setup();
    let body =
        json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD}).to_string();
    // Raw requests: an HTTP client would tidy these paths before sending them.
    for path in ["/login/", "//login", "/x/../login/", "/%6cogin", "/./login"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) = raw(gw.addr, &request);
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(answer.contains("\"access_token\""), "{path}: {answer}");
    }
    assert!(upstream.seen().is_empty(), "a password reached the upstream: {:?}", upstream.seen());
}

#[test]
fn lower_case_methods_and_relative_targets_are_refused_not_forwarded() {
    let (upstream, gw) = setup();
    let send = |line: &str| {
        raw(gw.addr, &format!("{line} HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n"))
    };
    for line in
        ["delete /item/chair", "Delete /item/chair", "dElEtE /item/chair", "get /item/chair", "G3T /items"]
    {
        let (status, body) = send(line);
        assert_eq!((status, error_code(&body).as_str()), (400, "invalid_method"), "{line}: {body}");
    }
    for line in ["DELETE item/chair", "GET admin/secret", "GET ../item/x", "GET */item/x", "GET *"] {
        let (status, body) = send(line);
        assert_eq!((status, error_code(&body).as_str()), (400, "invalid_path"), "{line}: {body}");
    }
    let (status, body) = send("GET /debug/echo/public/x?_method=DELETE");
    assert_eq!((status, error_code(&body).as_str()), (400, "method_override_refused"), "{body}");
    let (status, body) = send("CONNECT /item/chair");
    assert_eq!((status, error_code(&body).as_str()), (405, "method_not_allowed"), "{body}");
    // An authority-form CONNECT is refused by pingora's parser (400, no body).
    let (status, _) = send(&format!("CONNECT {}", gw.addr));
    assert!(matches!(status, 400 | 405), "{status}");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn underscore_spellings_and_forwarding_headers_never_reach_the_upstream() {
    let gw = Gateway::shared();
    let extra = "X_Auth_User_Id: 1\r\nx_auth_admin: true\r\nX-Auth_User-Id: 1\r\nX-Forwarded-For: 6.6.6.6\r\n\
                 X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\
                 Content_Length: 5\r\nConnection: keep-alive, X-Custom\r\nX-Custom: 1\r\n";
    let (status, body) = get_raw(gw, "/debug/echo/public/x", extra);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    let headers = echo["headers"].as_object().unwrap();
    for (name, value) in headers {
        assert!(!name.contains('_'), "{name} reached the upstream");
        assert!(!name.starts_with("x-auth-"), "{name} reached the upstream on a public route");
        assert_ne!(name, "x-custom", "a header named in Connection was forwarded");
        assert!(
            !value.to_string().contains("6.6.6.6") && !value.to_string().contains("evil"),
            "{name}: {value}"
        );
    }
    assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(headers["x-forwarded-proto"], json!(["http"]));
    assert_eq!(headers["x-forwarded-host"], json!(["gatehouse"]));
}

/// `close` in a second `Connection` header (or beside `keep-alive` in one)
/// still closes the connection after the answer: pingora alone reads only the
/// first header and lets `keep-alive` win, and the client would wait.
#[test]
fn close_in_any_connection_header_closes_the_connection() {
    let gw = Gateway::shared();
    for connection in ["Connection: keep-alive\r\nConnection: close\r\n", "Connection: keep-alive, close\r\n"]
    {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = format!("GET /debug/echo/public/x HTTP/1.1\r\nHost: gatehouse\r\n{connection}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        // Kept open, the connection would outlast the read timeout: an error here.
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    }
}

#[test]
fn underscore_headers_can_be_refused_instead() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| c.server.underscore_headers = Some(UnderscoreHeaders::Reject)),
    );
    let (status, body) = get_raw(&gw, "/debug/echo/public/x", "X_Anything: 1\r\n");
    assert_eq!((status, error_code(&body).as_str()), (400, "invalid_header"), "{body}");
    assert!(upstream.seen().is_empty());
}

#[test]
fn framing_and_host_ambiguities_are_refused_or_collapsed() {
    let (upstream, gw) = setup();
    let post = |headers: &str| {
        raw(
            gw.addr,
            &format!("POST /debug/echo/public/x HTTP/1.1\r\n{headers}Connection: close\r\n\r\nhello"),
        )
    };
    let (status, body) = post("Host: g\r\nContent-Length: 5, 5\r\n");
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["content-length"], json!(["5"]), "{echo}");
    let (status, body) = post("Host: g\r\nContent-Length: 5\r\nContent-Length: 5\r\n");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["headers"]["content-length"], json!(["5"]));
    let (status, body) = post("Host: a\r\nHost: b\r\nContent-Length: 5\r\n");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("Host: g\r\nTransfer-Encoding: gzip, chunked\r\n");
    assert_eq!((status, error_code(&body).as_str()), (400, "invalid_header"), "{body}");
    assert_eq!(upstream.seen().len(), 2, "{:?}", upstream.seen());
}

#[test]
fn an_oversized_login_body_gets_its_json_answer_not_a_reset() {
    let (_upstream, gw) = setup();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = vec![b'x'; 64 * 1024];
        let head = format!("POST /login HTTP/1.1\r\nHost: g\r\nContent-Length: {}\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(&body);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("\"body_too_large\""), "{text}");
    }
}

#[test]
fn a_built_in_body_that_trickles_is_cut_off_at_its_deadline() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(|c| c.endpoints.body_timeout = text("1s")));
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"POST /login HTTP/1.1\r\nHost: g\r\nContent-Length: 40\r\n\r\n").unwrap();
    let (text, took) = trickle(&mut stream, 8, Duration::from_millis(300), |_| b"x".to_vec());
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// Writes `count` pieces from `piece(i)`, one every `every`, on a clone of
/// the stream while reading the answer until the gateway closes; returns the
/// answer and how long that took.
fn trickle(
    stream: &mut TcpStream,
    count: usize,
    every: Duration,
    piece: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> (String, Duration) {
    let started = Instant::now();
    let writer = std::thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        move || {
            for i in 0..count {
                std::thread::sleep(every);
                if stream.write_all(&piece(i)).is_err() {
                    return;
                }
            }
        }
    });
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = started.elapsed();
    let _ = writer.join();
    (String::from_utf8_lossy(&answer).into_owned(), took)
}

#[test]
fn behind_trusted_proxies_login_limits_count_real_clients() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| {
            c.server.trusted_proxies = Some(vec![spanned("127.0.0.1".into())]);
            c.server.forwarded_header = Some(true);
            c.limits.login_per_ip_per_minute = Some(2);
        }),
    );
    let login = |client: &str| {
        gw.http
            .post(gw.url("/login"))
            .header("X-Forwarded-For", format!("6.6.6.6, {client}"))
            .json(&json!({"email": "x@y.z", "password": "wrong-password"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((login("198.51.100.1"), login("198.51.100.1")), (401, 401));
    assert_eq!(login("198.51.100.1"), 429, "the third attempt from one client");
    assert_eq!(login("198.51.100.2"), 401, "another client behind the same balancer is not limited");
    // The upstream is told the client the gateway decided on, not what it was sent.
    let echo: Value = gw
        .http
        .get(gw.url("/debug/echo/public/x"))
        .header("X-Forwarded-For", "6.6.6.6, 198.51.100.3")
        .header("X-Forwarded-Proto", "https")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(echo["headers"]["x-forwarded-for"], json!(["198.51.100.3, 127.0.0.1"]), "{echo}");
    assert_eq!(echo["headers"]["x-forwarded-proto"], json!(["https"]), "a trusted proxy's scheme is kept");
    let forwarded = format!("for=198.51.100.3;proto=https;host=\"{}\"", gw.addr);
    assert_eq!(echo["headers"]["forwarded"], json!([forwarded]));
}

#[test]
fn an_untrusted_peer_cannot_choose_its_client_address() {
    let (_upstream, gw) =
        limited_gateway(LimitsSection { login_per_ip_per_minute: Some(2), ..LimitsSection::default() });
    let login = |client: &str| {
        gw.http
            .post(gw.url("/login"))
            .header("X-Forwarded-For", client)
            .json(&json!({"email": "x@y.z", "password": "wrong-password"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((login("198.51.100.1"), login("198.51.100.2")), (401, 401));
    assert_eq!(login("198.51.100.3"), 429, "a forged X-Forwarded-For does not buy a new budget");
}

#[test]
fn an_upstream_cannot_open_a_tunnel_nobody_authorised() {
    use std::net::TcpListener;
    // A backend that answers 101 to anything and then reads on as HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut received = Vec::new();
        listener.set_nonblocking(false).unwrap();
        if let Ok((mut conn, _)) = listener.accept() {
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 4096];
            if let Ok(n) = conn.read(&mut buf) {
                received.extend_from_slice(&buf[..n]);
                let _ = conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    received.extend_from_slice(&buf[..n]);
                }
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options { upstreams: Some(vec![addr.to_string()]), ..Options::default() }
            .config(|c| c.upstream.get_mut().health_check = Some(Word(HealthCheck::None))),
    );
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(
            b"GET /debug/echo/public/x HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
              DELETE /item/chair HTTP/1.1\r\nHost: g\r\nX-Auth-Admin: true\r\nX-Auth-User-Id: 1\r\n\r\n",
        )
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(!answer.contains("101"), "{answer}");
    let received = server.join().unwrap();
    assert!(!received.to_ascii_lowercase().contains("upgrade:"), "the upgrade was forwarded: {received}");
    assert!(!received.contains("X-Auth-Admin: true"), "a forged request went through a tunnel: {received}");
}

#[test]
fn a_header_section_that_trickles_is_cut_off_at_its_deadline() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(|c| c.server.header_timeout = text("1s")));
    // A plain slow head; one after a kept-alive request (the deadline holds
    // for every request on a connection); one behind empty lines, which the
    // parser skips and which must not pass for the end of the head.
    for (keep_alive_first, opening) in [(false, ""), (true, ""), (false, "\r\n\r\n")] {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if keep_alive_first {
            stream.write_all(b"GET /debug/echo/public/first HTTP/1.1\r\nHost: g\r\n\r\n").unwrap();
            let mut first = [0u8; 4096];
            let n = stream.read(&mut first).unwrap();
            assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        }
        stream
            .write_all(format!("{opening}GET /debug/echo/public/x HTTP/1.1\r\nHost: g\r\n").as_bytes())
            .unwrap();
        let (text, took) = trickle(&mut stream, 20, Duration::from_millis(250), |i| {
            format!("X-Slow-{i}: 1\r\n").into_bytes()
        });
        let text = text.rsplit("HTTP/1.1 ").next().unwrap_or_default();
        assert!(text.starts_with("408"), "{opening:?}: {text}");
        assert!(text.contains("\"request_timeout\""), "{text}");
        assert!(took < Duration::from_secs(3), "{opening:?}: took {took:?}");
    }
    assert_eq!(upstream.seen(), vec!["GET /debug/echo/public/first".to_owned()]);
    assert_eq!(gw.get("/items", None).0, 200, "everyone else is still served");
}

/// Sends a request head and then its body in pieces, pausing between them so
/// the gateway reads them as separate chunks; returns the status and body.
fn send_in_pieces(gw: &Gateway, head: &str, pieces: &[&[u8]]) -> (u16, String) {
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for piece in pieces {
        std::thread::sleep(Duration::from_millis(100));
        let _ = stream.write_all(piece);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn method_override_fields_in_form_bodies_are_refused_before_the_upstream() {
    // Anyone may POST a form here, but only admins may DELETE: an override matters.
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default()
            .config(|c| c.routes.push(route("/debug/echo/public/forms/**", &["DELETE"], "admin"))),
    );
    let post = |content_type: &str, pieces: &[&[u8]]| {
        let length: usize = pieces.iter().map(|p| p.len()).sum();
        let head = format!(
            "POST /debug/echo/public/forms/x HTTP/1.1\r\nHost: g\r\nContent-Type: {content_type}\r\n\
             Content-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        send_in_pieces(&gw, &head, pieces)
    };
    let form = "application/x-www-form-urlencoded";
    for (name, pieces) in [
        ("a name split across reads", &[&b"a=1&_met"[..], b"hod=DELETE"][..]),
        ("a percent-encoded name", &[b"a=1&%5Fmethod=DELETE"]),
        ("a PHP spelling", &[b"a=1&.method=DELETE"]),
        ("a Rack 2 separator", &[b"a=1;_method=DELETE"]),
    ] {
        let (status, body) = post(form, pieces);
        assert_eq!((status, error_code(&body).as_str()), (400, "method_override_refused"), "{name}: {body}");
    }
    let multipart = "multipart/form-data; boundary=xyz";
    let field = b"--xyz\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--xyz--\r\n";
    let (status, body) = post(multipart, &[&field[..20], &field[20..]]);
    assert_eq!((status, error_code(&body).as_str()), (400, "method_override_refused"), "{body}");
    assert!(upstream.seen().is_empty(), "a refused request reached the upstream: {:?}", upstream.seen());

    // An uploaded file that merely contains the text is not a field.
    let upload = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.html\"\r\n\r\n\
                   <input name=\"_method\" value=\"DELETE\">\r\n--xyz--\r\n";
    let (status, body) = post(multipart, &[upload]);
    assert_eq!(status, 200, "{body}");
    // A client that waits for 100 Continue is told to go on.
    let head = "POST /debug/echo/public/forms/x HTTP/1.1\r\nHost: g\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 7\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 64];
    let n = stream.read(&mut interim).unwrap();
    assert!(String::from_utf8_lossy(&interim[..n]).starts_with("HTTP/1.1 100"), "no 100 Continue");
    stream.write_all(b"a=1&b=2").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
}

#[test]
fn headers_that_rewrite_the_target_or_the_form_are_removed_or_refused() {
    let (upstream, gw) = setup();
    let extra = "X-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nTrue-Client-IP: 6.6.6.6\r\n\
                 X-Forwarded-Prefix: /admin\r\nCF-Connecting-IP: 6.6.6.6\r\n";
    let (status, body) = get_raw(&gw, "/debug/echo/public/x", extra);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    for name in
        ["x-original-url", "x-rewrite-url", "true-client-ip", "x-forwarded-prefix", "cf-connecting-ip"]
    {
        assert!(echo["headers"].get(name).is_none(), "{name} reached the upstream: {echo}");
    }
    let (status, body) = raw(
        gw.addr,
        "POST /debug/echo/public/x HTTP/1.1\r\nHost: g\r\nContent-Type: text/plain\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\nConnection: close\r\n\r\n_method=DELETE",
    );
    assert_eq!((status, error_code(&body).as_str()), (400, "invalid_header"), "{body}");
    assert_eq!(upstream.seen().len(), 1);
}

#[test]
fn paths_match_routes_in_any_letter_case() {
    let (upstream, gw) = setup();
    // A case-insensitive backend routes these to the admin handler: so must the gateway.
    for (method, target) in
        [("DELETE", "/ITEM/chair"), ("DELETE", "/Item/chair"), ("GET", "/DEBUG/ECHO/ADMIN/x")]
    {
        let (status, body) =
            raw(gw.addr, &format!("{method} {target} HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"));
        assert_eq!((status, error_code(&body).as_str()), (401, "missing_token"), "{method} {target}: {body}");
    }
    // Built-in endpoints too: a password never reaches the upstream.
    let body =
        json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD}).to_string();
    for path in ["/LOGIN", "/Login/"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) = raw(gw.addr, &request);
        assert_eq!(status, 200, "{path}: {answer}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn odd_heads_are_refused_or_kept_from_reuse() {
    let (upstream, gw) = setup();
    // HTTP/1.0 without Host: the upstream request is HTTP/1.1, which needs one.
    let (status, body) = raw(gw.addr, "GET /debug/echo/public/x HTTP/1.0\r\n\r\n");
    assert_eq!((status, error_code(&body).as_str()), (400, "invalid_header"), "{body}");
    // A Content-Type a Unicode-trimming backend would read as a form.
    let (status, body) = raw(
        gw.addr,
        "POST /item/x HTTP/1.1\r\nHost: g\r\nContent-Type: application/x-www-form-urlencoded\u{a0}\r\n\
         Content-Length: 14\r\nConnection: close\r\n\r\n_method=DELETE",
    );
    assert_eq!(status, 400, "{body}");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    // Transfer-Encoding beside Content-Length: pingora drops the length and the
    // connection is not reused, so nothing after the body is read as a request.
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"POST /debug/echo/public/p HTTP/1.1\r\nHost: g\r\nContent-Length: 46\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = stream.write_all(b"GET /debug/echo/public/smuggled HTTP/1.1\r\nHost: g\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!upstream.saw("smuggled"), "{:?}", upstream.seen());
}

#[test]
fn form_bodies_of_any_size_pass_where_every_method_is_judged_alike() {
    let (upstream, gw) = setup();
    // /debug/echo/public/** is public for every method: no override can matter.
    let big = format!("pad={}&_method=DELETE", "x".repeat(100 * 1024));
    let request = format!(
        "POST /debug/echo/public/upload HTTP/1.1\r\nHost: g\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let (status, body) = raw(gw.addr, &request);
    assert_eq!(status, 200, "{body}");
    assert!(upstream.saw("POST /debug/echo/public/upload"));
}
