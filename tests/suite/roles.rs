//! Roles per route, through the running gateway: granted and withdrawn with
//! the CLI and the admin API, demanded by routes (`roles_match` any or all,
//! with `fresh = true`, beside `admin`), decided on the account's current
//! roles at every request, and told to the upstream (`X-Auth-Roles`, the
//! assertion) exactly as decided.

use base64::Engine;
use gatehouse::config::file::{FileConfig, Word};
use gatehouse::roles::RolesMatch;
use serde_json::{json, Value};

use crate::common::config::{route, spanned};
use crate::common::{admin_api, Gateway, Options, Upstream, ADMIN_EMAIL};

/// Routes demanding roles, on upstream-mock's echo.
fn role_routes(c: &mut FileConfig) {
    let with_roles = |path: &str, policy: &str, roles: &[&str], matching: Option<RolesMatch>, fresh: bool| {
        let mut entry = route(path, &[], policy);
        let e = entry.get_mut();
        e.roles = roles.iter().map(|r| spanned((*r).to_owned())).collect();
        e.roles_match = matching.map(|m| spanned(Word(m)));
        e.fresh = fresh;
        entry
    };
    c.routes.extend([
        with_roles("/debug/echo/editors/**", "any", &["editor", "publisher"], None, false),
        with_roles("/debug/echo/both/**", "any", &["editor", "publisher"], Some(RolesMatch::All), false),
        with_roles("/debug/echo/fresh-editors/**", "any", &["editor"], None, true),
        with_roles("/debug/echo/policy-fresh-editors/**", "fresh", &["editor"], None, false),
        with_roles("/debug/echo/admin-editors/**", "admin", &["editor"], None, false),
        with_roles("/debug/echo/role-admin/**", "any", &["admin"], None, false),
    ]);
}

fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(role_routes));
    (upstream, gw)
}

fn error(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or("-"))
}

/// Runs `gatehouse user roles ...`; its JSON answer.
fn roles_cli(gw: &Gateway, args: &[&str]) -> Value {
    let mut all = vec!["user", "roles"];
    all.extend_from_slice(args);
    let out = gw.cli(&all, "");
    assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The claims of a token, without checking it (the gateway checked it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

#[test]
fn an_editor_granted_by_the_cli_passes_at_once_and_is_refused_at_once_when_withdrawn() {
    let (upstream, gw) = start();
    gw.register("eve@example.com", "eve", "eve-password-1");
    let (token, refresh) = gw.login("eve@example.com", "eve-password-1");
    let before = upstream.seen().len();

    // No role yet: refused, without naming the role, and nothing reaches the upstream.
    let refused = gw.get("/debug/echo/editors/x", Some(&token));
    assert_eq!(error(&refused), (403, "role_required"), "{}", refused.1);
    let keys: Vec<&String> = refused.1.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error", "message"], "{}", refused.1);
    assert!(!refused.1["message"].as_str().unwrap().contains("editor"), "{}", refused.1);
    assert_eq!(upstream.seen().len(), before, "a refused request reached the upstream");

    // Granted with the CLI (through the running gateway's admin API): the same token passes.
    let granted = roles_cli(&gw, &["add", "eve@example.com", "editor"]);
    assert_eq!(granted["roles"], json!(["editor"]), "{granted}");
    let (status, echo) = gw.get("/debug/echo/editors/x", Some(&token));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["roles"], json!(["editor"]), "{echo}");
    assert_eq!(echo["headers"]["x-auth-roles"], json!(["editor"]), "{echo}");

    // `all` needs both roles.
    assert_eq!(error(&gw.get("/debug/echo/both/x", Some(&token))), (403, "role_required"));
    roles_cli(&gw, &["add", "eve@example.com", "publisher"]);
    let (status, echo) = gw.get("/debug/echo/both/x", Some(&token));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-auth-roles"], json!(["editor,publisher"]), "sorted: {echo}");
    assert_eq!(roles_cli(&gw, &["list", "eve@example.com"])["roles"], json!(["editor", "publisher"]));

    // Withdrawn: the very next request is refused, on both routes.
    roles_cli(&gw, &["remove", "eve@example.com", "editor"]);
    roles_cli(&gw, &["remove", "eve@example.com", "publisher"]);
    let before = upstream.seen().len();
    assert_eq!(error(&gw.get("/debug/echo/editors/x", Some(&token))), (403, "role_required"));
    assert_eq!(error(&gw.get("/debug/echo/both/x", Some(&token))), (403, "role_required"));
    assert_eq!(upstream.seen().len(), before, "a refused request reached the upstream");
    let (status, echo) = gw.get("/debug/echo/any/x", Some(&token));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-auth-roles"], json!([""]), "identified, no roles: {echo}");

    // The refresh-issued (non-fresh) token carries the roles held at issue.
    roles_cli(&gw, &["add", "eve@example.com", "editor"]);
    let (status, refreshed) = gw.post("/refresh", Some(&refresh), json!({}));
    assert_eq!(status, 200, "{refreshed}");
    let stale = refreshed["access_token"].as_str().unwrap();
    assert_eq!(claims(stale)["roles"], json!(["editor"]));
    assert_eq!(claims(&token).get("roles"), None, "issued before any role");
}

#[test]
fn roles_combine_with_freshness_and_admin_rights_in_a_documented_order() {
    let (_upstream, gw) = start();
    gw.register("fay@example.com", "fay", "fay-password-1");
    let (fresh, refresh) = gw.login("fay@example.com", "fay-password-1");
    let (status, refreshed) = gw.post("/refresh", Some(&refresh), json!({}));
    assert_eq!(status, 200, "{refreshed}");
    let stale = refreshed["access_token"].as_str().unwrap().to_owned();

    // Roles before freshness: a non-editor is not sent to log in again for nothing.
    for path in ["/debug/echo/fresh-editors/x", "/debug/echo/policy-fresh-editors/x"] {
        assert_eq!(error(&gw.get(path, Some(&stale))), (403, "role_required"), "{path}");
    }
    roles_cli(&gw, &["add", "fay@example.com", "editor"]);
    for path in ["/debug/echo/fresh-editors/x", "/debug/echo/policy-fresh-editors/x"] {
        assert_eq!(error(&gw.get(path, Some(&stale))), (401, "fresh_token_required"), "{path}");
        assert_eq!(gw.get(path, Some(&fresh)).0, 200, "{path}");
    }

    // Admin rights first: an editor who isn't an admin gets admin_required.
    assert_eq!(error(&gw.get("/debug/echo/admin-editors/x", Some(&fresh))), (403, "admin_required"));
    assert_eq!(error(&gw.get("/debug/echo/role-admin/x", Some(&fresh))), (403, "role_required"));

    // The seeded admin holds `admin` as a role, and needs `editor` as well.
    let (admin, _) = gw.admin_login();
    assert_eq!(error(&gw.get("/debug/echo/admin-editors/x", Some(&admin))), (403, "role_required"));
    let (status, echo) = gw.get("/debug/echo/role-admin/x", Some(&admin));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["roles"], json!(["admin"]), "{echo}");
    roles_cli(&gw, &["add", ADMIN_EMAIL, "editor"]);
    let (status, echo) = gw.get("/debug/echo/admin-editors/x", Some(&admin));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-auth-roles"], json!(["admin,editor"]), "{echo}");

    // Withdrawing `admin` is withdrawing admin rights, at once.
    roles_cli(&gw, &["remove", ADMIN_EMAIL, "admin"]);
    assert_eq!(error(&gw.get("/debug/echo/admin/x", Some(&admin))), (403, "admin_required"));
    assert_eq!(error(&gw.get("/debug/echo/role-admin/x", Some(&admin))), (403, "role_required"));
    let (status, echo) = gw.get("/debug/echo/editors/x", Some(&admin));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-auth-admin"], json!(["false"]), "{echo}");
    assert_eq!(echo["headers"]["x-auth-roles"], json!(["editor"]), "{echo}");
}

#[test]
fn the_admin_api_lists_grants_and_withdraws_roles_and_refuses_bad_names() {
    let (_upstream, gw) = start();
    let id = gw.register("gus@example.com", "gus", "gus-password-1")["id"].as_u64().unwrap();
    let call = |method: reqwest::Method, path: &str| {
        let resp = gw
            .http
            .request(method, format!("http://{}{path}", gw.admin_addr))
            .bearer_auth(&gw.admin_token)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    let roles = format!("/admin/users/{id}/roles");
    assert_eq!(call(reqwest::Method::GET, &roles), (200, json!({"user_id": id, "roles": []})));
    let put = call(reqwest::Method::PUT, &format!("{roles}/billing:write"));
    assert_eq!(put, (200, json!({"user_id": id, "roles": ["billing:write"]})));
    let admin = call(reqwest::Method::PUT, &format!("{roles}/admin"));
    assert_eq!(admin, (200, json!({"user_id": id, "roles": ["admin", "billing:write"]})));
    let shown = admin_api(&gw, reqwest::Method::GET, &format!("/admin/users/{id}"));
    assert_eq!(
        (shown["is_admin"].clone(), shown["roles"].clone()),
        (json!(true), json!(["admin", "billing:write"]))
    );
    let gone = call(reqwest::Method::DELETE, &format!("{roles}/admin"));
    assert_eq!(gone, (200, json!({"user_id": id, "roles": ["billing:write"]})));

    for bad in ["Editor", "a%2Cb", "has%20space", "-x"] {
        let (status, body) = call(reqwest::Method::PUT, &format!("{roles}/{bad}"));
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{bad}: {body}");
        assert!(body["message"].as_str().unwrap().contains("not a valid role name"), "{body}");
    }
    let (status, body) = call(reqwest::Method::PUT, "/admin/users/999999/roles/editor");
    assert_eq!((status, body["error"].as_str()), (404, Some("user_not_found")), "{body}");

    // Roles aren't patched: a `roles` field is refused, not ignored.
    let resp = gw
        .http
        .patch(format!("http://{}/admin/users/{id}", gw.admin_addr))
        .bearer_auth(&gw.admin_token)
        .json(&json!({"roles": []}))
        .send()
        .unwrap();
    let (status, body) = (resp.status().as_u16(), resp.json::<Value>().unwrap());
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert_eq!(call(reqwest::Method::GET, &roles).1["roles"], json!(["billing:write"]));

    // A full list refuses one more, in words, and keeps what it had.
    for n in 1..gatehouse::roles::MAX_ROLES_PER_USER {
        assert_eq!(call(reqwest::Method::PUT, &format!("{roles}/r{n:02}")).0, 200);
    }
    let (status, body) = call(reqwest::Method::PUT, &format!("{roles}/one-too-many"));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("at most 32 roles"), "{body}");
    let held = call(reqwest::Method::GET, &roles).1;
    assert_eq!(held["roles"].as_array().unwrap().len(), gatehouse::roles::MAX_ROLES_PER_USER, "{held}");

    // The CLI refuses a bad name before calling anything, in words.
    let out = gw.cli(&["user", "roles", "add", "gus@example.com", "Editors"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`Editors` is not a valid role name"), "{stderr}");
}

#[test]
fn the_assertion_carries_the_roles_the_gateway_decided() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(role_routes).config(|c| c.upstream.get_mut().assertion = Some(true)),
    );
    gw.register("hal@example.com", "hal", "hal-password-1");
    roles_cli(&gw, &["add", "hal@example.com", "publisher"]);
    let (token, refresh) = gw.login("hal@example.com", "hal-password-1");
    assert_eq!(claims(&token)["roles"], json!(["publisher"]));
    assert_eq!(claims(&refresh).get("roles"), None, "refresh tokens name no roles");
    // Granted after the token was issued: the assertion says what the
    // gateway decided on (the account now), not what the token says.
    roles_cli(&gw, &["add", "hal@example.com", "editor"]);
    let (status, echo) = gw.get("/debug/echo/editors/x", Some(&token));
    assert_eq!(status, 200, "{echo}");
    let assertion = echo["headers"]["x-auth-assertion"][0].as_str().unwrap();
    assert_eq!(claims(assertion)["roles"], json!(["editor", "publisher"]), "{echo}");
    assert_eq!(claims(&token)["roles"], json!(["publisher"]));
}
