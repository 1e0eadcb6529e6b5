//! The seed story end to end: the real gateway binary in front of
//! upstream-mock, driven by a real HTTP client over loopback.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{Gateway, Options, Upstream};

fn setup() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gateway = Gateway::start(&upstream, Options::default());
    (upstream, gateway)
}

#[test]
fn register_then_login_gives_a_fresh_token_that_can_create_items() {
    let (upstream, gw) = setup();
    let user = gw.register("Bob@Example.com", "bob", "bob-password");
    assert_eq!(user["email"], "bob@example.com");
    assert!(user.get("password_hash").is_none(), "{user}");

    // Duplicate email, compared case-insensitively.
    let (status, body) = gw.post(
        "/register",
        None,
        json!({"email": "BOB@example.COM", "username": "b2", "password": "another-pass"}),
    );
    assert_eq!((status, body["error"].as_str()), (409, Some("email_taken")));

    let (status, body) =
        gw.post("/login", None, json!({"email": "bob@example.com", "password": "bob-password"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().unwrap();

    let (status, body) = gw.post("/item/lamp", Some(access), json!({"price": 9.5}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created_by"], user["id"].to_string());
    assert!(upstream.saw("POST /item/lamp"));
    let (status, body) = gw.get("/item/lamp", Some(access));
    assert_eq!((status, body["price"].as_f64()), (200, Some(9.5)));
}

#[test]
fn refreshed_tokens_are_not_fresh_so_they_can_read_but_not_create() {
    let (upstream, gw) = setup();
    gw.register("carol@example.com", "carol", "carol-password");
    let (_, refresh) = gw.login("carol@example.com", "carol-password");

    let (status, body) = gw.post("/refresh", Some(&refresh), json!(null));
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string(), "refresh rotates the refresh token");
    let stale = body["access_token"].as_str().unwrap().to_owned();

    let (status, body) = gw.post("/item/vase", Some(&stale), json!({"price": 3}));
    assert_eq!((status, body["error"].as_str()), (401, Some("fresh_token_required")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("fresh"));
    assert!(!upstream.saw("POST /item/vase"), "refused request reached the upstream");

    let (status, _) = gw.get("/item/chair", Some(&stale));
    assert_eq!(status, 200);

    // A refresh token is not an access token, and an access token can't refresh.
    let (status, body) = gw.get("/item/chair", Some(&refresh));
    assert_eq!((status, body["error"].as_str()), (401, Some("access_token_required")));
    let (status, body) = gw.post("/refresh", Some(&stale), json!(null));
    assert_eq!((status, body["error"].as_str()), (401, Some("refresh_token_required")));
}

#[test]
fn only_admins_delete_items_and_admin_routes_can_demand_freshness() {
    let (upstream, gw) = setup();
    gw.register("dave@example.com", "dave", "dave-password");
    let (dave, _) = gw.login("dave@example.com", "dave-password");
    let (status, body) = gw.send(Method::DELETE, "/item/chair", Some(&dave), None);
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_required")));
    assert!(!upstream.saw("DELETE /item/chair"));

    let (admin, admin_refresh) = gw.admin_login();
    let (status, body) = gw.send(Method::DELETE, "/item/chair", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert!(upstream.saw("DELETE /item/chair"));

    // /product/{name} DELETE is admin + fresh: a refreshed admin token is refused.
    let (_, body) = gw.post("/refresh", Some(&admin_refresh), json!(null));
    let stale_admin = body["access_token"].as_str().unwrap();
    let (status, body) = gw.send(Method::DELETE, "/product/lamp", Some(stale_admin), None);
    assert_eq!((status, body["error"].as_str()), (401, Some("fresh_token_required")));
    let (status, _) = gw.send(Method::DELETE, "/product/lamp", Some(&admin), None);
    assert_eq!(status, 200);
}

#[test]
fn optional_routes_give_more_to_identified_callers_and_never_downgrade() {
    let (upstream, gw) = setup();
    let (status, body) = gw.get("/items", None);
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!(["chair", "desk"]));
    assert!(body["message"].is_string());

    gw.register("erin@example.com", "erin", "erin-password");
    let (erin, _) = gw.login("erin@example.com", "erin-password");
    let (status, body) = gw.get("/items", Some(&erin));
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["name"], "chair");
    assert!(body["items"][0]["price"].is_number());

    let before = upstream.seen().len();
    let mut tampered = erin.clone();
    tampered.pop();
    tampered.push(if erin.ends_with('A') { 'B' } else { 'A' });
    let (status, body) = gw.get("/items", Some(&tampered));
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")));
    assert_eq!(upstream.seen().len(), before, "an invalid token must not be forwarded anonymously");
}

#[test]
fn logout_revokes_the_access_token_and_the_refresh_token() {
    let (_upstream, gw) = setup();
    gw.register("fay@example.com", "fay", "fay-password");
    let (access, refresh) = gw.login("fay@example.com", "fay-password");
    let (status, body) = gw.post("/logout", Some(&access), json!({"refresh_token": refresh}));
    assert_eq!(status, 200, "{body}");

    let (status, body) = gw.get("/item/chair", Some(&access));
    assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")));
    let (status, body) = gw.post("/refresh", Some(&refresh), json!(null));
    assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")));
    let (status, _) = gw.post("/logout", Some(&access), json!(null));
    assert_eq!(status, 401, "a revoked token cannot log out again");

    // Logging out without a body revokes just the access token.
    let (access, refresh) = gw.login("fay@example.com", "fay-password");
    let (status, _) = gw.send(Method::POST, "/logout", Some(&access), None);
    assert_eq!(status, 200);
    let (status, _) = gw.post("/refresh", Some(&refresh), json!(null));
    assert_eq!(status, 200);
}

#[test]
fn blocked_and_deleted_users_lose_every_token_at_once() {
    let (_upstream, gw) = setup();
    let user = gw.register("gus@example.com", "gus", "gus-password");
    let id = user["id"].as_u64().unwrap().to_string();
    let (access, refresh) = gw.login("gus@example.com", "gus-password");

    // Block through the CLI while the gateway holds the store (admin API path).
    let out = gw.cli(&["user", "block", "gus@example.com"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body) = gw.get("/item/chair", Some(&access));
    assert_eq!((status, body["error"].as_str()), (403, Some("account_blocked")));
    let (status, body) =
        gw.post("/login", None, json!({"email": "gus@example.com", "password": "gus-password"}));
    assert_eq!((status, body["error"].as_str()), (403, Some("account_blocked")));

    // Unblocking lets them log in again, but the old tokens stay dead.
    let out = gw.cli(&["user", "unblock", &id], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body) = gw.get("/item/chair", Some(&access));
    assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")));
    let (status, _) = gw.post("/refresh", Some(&refresh), json!(null));
    assert_eq!(status, 401);
    let (access, _) = gw.login("gus@example.com", "gus-password");
    assert_eq!(gw.get("/item/chair", Some(&access)).0, 200);

    // An admin deletes the user with a fresh token: the new token dies too.
    let (admin, _) = gw.admin_login();
    let (status, body) = gw.send(Method::DELETE, &format!("/user/{id}"), Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.get("/item/chair", Some(&access));
    assert_eq!((status, body["error"].as_str()), (401, Some("account_not_found")));
    let (status, body) = gw.send(Method::DELETE, &format!("/user/{id}"), Some(&admin), None);
    assert_eq!((status, body["error"].as_str()), (404, Some("user_not_found")));
}

#[test]
fn revoke_user_logs_out_everywhere() {
    let (_upstream, gw) = setup();
    gw.register("hal@example.com", "hal", "hal-password");
    let (a1, r1) = gw.login("hal@example.com", "hal-password");
    let (a2, _) = gw.login("hal@example.com", "hal-password");
    let out = gw.cli(&["revoke", "user", "hal@example.com"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for token in [&a1, &a2] {
        assert_eq!(gw.get("/item/chair", Some(token)).1["error"], "token_revoked");
    }
    assert_eq!(gw.post("/refresh", Some(&r1), json!(null)).0, 401);
    let (a3, _) = gw.login("hal@example.com", "hal-password");
    assert_eq!(gw.get("/item/chair", Some(&a3)).0, 200);

    // And one token, by value, from stdin.
    let out = gw.cli(&["revoke", "token"], &a3);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(gw.get("/item/chair", Some(&a3)).1["error"], "token_revoked");
}

#[test]
fn user_resource_is_for_admins_or_the_user_themself() {
    let (_upstream, gw) = setup();
    let ivy = gw.register("ivy@example.com", "ivy", "ivy-password");
    let jon = gw.register("jon@example.com", "jon", "jon-password");
    let (ivy_token, _) = gw.login("ivy@example.com", "ivy-password");
    let (status, body) = gw.get(&format!("/user/{}", ivy["id"]), Some(&ivy_token));
    assert_eq!((status, body["username"].as_str()), (200, Some("ivy")));
    let (status, body) = gw.get(&format!("/user/{}", jon["id"]), Some(&ivy_token));
    assert_eq!((status, body["error"].as_str()), (403, Some("not_your_account")));
    let (status, body) = gw.send(Method::DELETE, &format!("/user/{}", jon["id"]), Some(&ivy_token), None);
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_required")));
    let (admin, _) = gw.admin_login();
    let (status, body) = gw.get(&format!("/user/{}", jon["id"]), Some(&admin));
    assert_eq!((status, body["email"].as_str()), (200, Some("jon@example.com")));
    assert_eq!(gw.get("/user/nobody", Some(&admin)).0, 404);
    assert_eq!(gw.get(&format!("/user/{}", jon["id"]), None).0, 401);
}

#[test]
fn spoofed_identity_headers_are_stripped_on_every_policy() {
    let (_upstream, gw) = setup();
    gw.register("kim@example.com", "kim", "kim-password");
    let (kim, _) = gw.login("kim@example.com", "kim-password");
    let (admin, _) = gw.admin_login();
    for (policy, token) in [
        ("public", None),
        ("optional", None),
        ("optional", Some(&kim)),
        ("any", Some(&kim)),
        ("fresh", Some(&kim)),
        ("admin", Some(&admin)),
    ] {
        let mut req = gw.http.get(gw.url(&format!("/debug/echo/{policy}/x")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .header("X-Auth-User-Id", "1")
            .header("x-auth-admin", "true")
            .header("X-AUTH-ADMIN", "true")
            .header("X-Auth-Fresh", "true")
            .header("X-Auth-Email", "evil@example.com")
            .header("x-AuTh-SomethingElse", "forged")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{policy}");
        let echo: Value = resp.json().unwrap();
        let headers = echo["headers"].as_object().unwrap();
        assert!(headers.get("x-auth-somethingelse").is_none(), "{policy}: {echo}");
        assert!(headers.get("authorization").is_none(), "{policy}: Authorization forwarded by default");
        match token {
            None => {
                for name in ["x-auth-user-id", "x-auth-admin", "x-auth-fresh", "x-auth-email"] {
                    assert!(headers.get(name).is_none(), "{policy}: {name} leaked: {echo}");
                }
            }
            Some(_) => {
                let admin_expected = policy == "admin";
                assert_eq!(headers["x-auth-admin"], json!([admin_expected.to_string()]), "{policy}: {echo}");
                assert_eq!(headers["x-auth-fresh"], json!(["true"]), "{policy}");
                assert_eq!(headers["x-auth-user-id"].as_array().unwrap().len(), 1);
                assert_ne!(headers["x-auth-email"], json!(["evil@example.com"]));
                assert!(headers["x-auth-token-id"][0].as_str().unwrap().len() >= 22);
            }
        }
    }
}

#[test]
fn authorization_is_forwarded_only_when_configured() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| c.upstream.get_mut().pass_authorization = Some(true)),
    );
    let (admin, _) = gw.admin_login();
    let (status, echo) = gw.get("/debug/echo/any/x", Some(&admin));
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["authorization"], json!([format!("Bearer {admin}")]));
    assert_eq!(echo["headers"]["x-auth-username"], json!(["admin"]));
}

#[test]
fn denied_and_unmatched_routes_never_reach_the_upstream() {
    let (upstream, gw) = setup();
    let (admin, _) = gw.admin_login();
    let (status, body) = gw.get("/debug/echo/deny/x", Some(&admin));
    assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")));
    let (status, body) = gw.get("/not/configured", Some(&admin));
    assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")));
    let (status, _) = gw.send(Method::PUT, "/items", Some(&admin), None);
    assert_eq!(status, 403, "a method no route lists falls to the default policy");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[test]
fn missing_tokens_get_an_rfc6750_challenge() {
    let gw = Gateway::shared();
    let resp = gw.http.get(gw.url("/item/chair")).send().unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let resp = gw.http.get(gw.url("/item/chair")).bearer_auth("abc.def.ghi").send().unwrap();
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[test]
fn tokens_expire_after_their_ttl() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options { access_ttl: "1s", ..Options::default() });
    let (admin, _) = gw.admin_login();
    assert_eq!(gw.get("/item/chair", Some(&admin)).0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body) = gw.get("/item/chair", Some(&admin));
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")));
}

#[test]
fn wrong_password_and_unknown_email_look_the_same() {
    let gw = Gateway::shared();
    let wrong =
        gw.post("/login", None, json!({"email": crate::common::ADMIN_EMAIL, "password": "not-the-password"}));
    let unknown =
        gw.post("/login", None, json!({"email": "nobody@example.com", "password": "not-the-password"}));
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.1["error"], "invalid_credentials");
}

#[test]
fn bad_input_gets_clear_json_errors_and_the_gateway_keeps_serving() {
    let (_upstream, gw) = setup();
    let raw = |path: &str, body: &str| {
        let resp = gw
            .http
            .post(gw.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap())
    };
    assert_eq!(raw("/login", "{\"email\":").1["error"], "invalid_json");
    assert_eq!(raw("/login", "").1["error"], "invalid_request");
    let (status, body) = raw("/login", r#"{"email": "a@b.c"}"#);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
    assert!(body["message"].as_str().unwrap().contains("password"), "{body}");
    assert_eq!(
        raw("/register", r#"{"email": 5, "username": "x", "password": "longenough"}"#).1["error"],
        "invalid_request"
    );
    assert_eq!(
        raw("/register", r#"{"email": "not-an-email", "username": "x", "password": "longenough"}"#).1
            ["error"],
        "invalid_request"
    );
    assert_eq!(
        raw("/register", r#"{"email": "x@y.z", "username": "x", "password": "short"}"#).1["error"],
        "invalid_request"
    );
    let (status, body) = raw(
        "/register",
        &format!(r#"{{"email": "x@y.z", "username": "x", "password": "{}"}}"#, "p".repeat(4000)),
    );
    assert_eq!((status, body["error"].as_str()), (413, Some("body_too_large")));
    let (status, body) = gw.get("/login", None);
    assert_eq!((status, body["error"].as_str()), (405, Some("method_not_allowed")));

    let with_auth = |values: &[&str]| {
        let mut req = gw.http.get(gw.url("/item/chair"));
        for v in values {
            req = req.header("authorization", *v);
        }
        let resp = req.send().unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap()["error"].as_str().unwrap().to_owned())
    };
    assert_eq!(with_auth(&[""]), (401, "malformed_authorization".into()));
    assert_eq!(with_auth(&["Basic YTpi"]), (401, "malformed_authorization".into()));
    assert_eq!(with_auth(&["Bearer"]), (401, "malformed_authorization".into()));
    assert_eq!(with_auth(&["Bearer a.b.c", "Bearer d.e.f"]), (400, "duplicate_authorization".into()));
    assert_eq!(with_auth(&[&format!("Bearer {}", "x".repeat(5000))]), (401, "invalid_token".into()));

    // Still serving.
    let (admin, _) = gw.admin_login();
    assert_eq!(gw.get("/item/chair", Some(&admin)).0, 200);
}

#[test]
fn registration_can_be_switched_off() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| c.endpoints.allow_registration = Some(false)),
    );
    let (status, body) =
        gw.post("/register", None, json!({"email": "x@y.z", "username": "x", "password": "longenough"}));
    assert_eq!((status, body["error"].as_str()), (403, Some("registration_disabled")));
}

#[test]
fn revocations_survive_a_restart() {
    let (_upstream, mut gw) = setup();
    let (access, _) = gw.admin_login();
    assert_eq!(gw.post("/logout", Some(&access), json!(null)).0, 200);
    gw.kill();
    gw.spawn().unwrap();
    assert_eq!(gw.get("/item/chair", Some(&access)).1["error"], "token_revoked");
}
