//! The OpenAPI document the admin listener serves (README "API description"):
//! the configured paths and listeners, and real answers that match what it
//! says. schemathesis (`tests/schemathesis.sh`, in CI) calls every operation
//! with generated requests; these tests check what it can't: the document
//! follows the config, and the operations answer as described with real data.

use serde_json::Value;

use crate::common::config::text;
use crate::common::{Gateway, Options, Upstream, ADMIN_EMAIL, ADMIN_PASSWORD};

fn document(gw: &Gateway, path: &str) -> (u16, Option<String>, String) {
    let resp = gw.http.get(format!("http://{}{path}", gw.admin_addr)).send().unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    (status, content_type, resp.text().unwrap())
}

/// The `required` fields of a schema in the document's components.
fn required(doc: &Value, schema: &str) -> Vec<String> {
    doc["components"]["schemas"][schema]["required"]
        .as_array()
        .unwrap_or_else(|| panic!("no schema {schema}"))
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_document_names_this_gateways_paths_and_listeners_and_its_answers_hold() {
    let upstream = Upstream::start();
    let gw =
        Gateway::start(&upstream, Options::default().config(|c| c.endpoints.login = text("/auth/login")));
    let (status, content_type, body) = document(&gw, "/openapi.json");
    assert_eq!((status, content_type.as_deref()), (200, Some("application/json")));
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], format!("http://{}", gw.addr));
    assert_eq!(doc["paths"]["/admin/stats"]["get"]["servers"][0]["url"], format!("http://{}", gw.admin_addr));
    assert!(doc["paths"]["/auth/login"]["post"].is_object(), "the configured login path");
    assert!(doc["paths"].get("/login").is_none());
    assert!(doc["paths"].get("/signin").is_none(), "[signin] is off");

    // A real login answers with what the document requires of it.
    let (status, tokens) =
        gw.post("/auth/login", None, serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}));
    assert_eq!(status, 200);
    assert!(doc["paths"]["/auth/login"]["post"]["responses"]["200"].is_object());
    for field in required(&doc, "TokenPair") {
        assert!(tokens.get(&field).is_some(), "login answer lacks {field}: {tokens}");
    }
    // So do the admin API's answers, and its refusals are the documented error.
    let admin = |path: &str, token: &str| {
        let resp = gw.http.get(format!("http://{}{path}", gw.admin_addr)).bearer_auth(token).send().unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    let (status, user) = admin("/admin/users/1", &gw.admin_token);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/admin/users/{id}"]["get"]["responses"]["200"].is_object());
    for field in required(&doc, "User") {
        assert!(user.get(&field).is_some(), "user answer lacks {field}: {user}");
    }
    let (status, stats) = admin("/admin/stats", &gw.admin_token);
    assert_eq!(status, 200);
    for field in required(&doc, "StoreStats") {
        assert!(stats.get(&field).is_some(), "stats answer lacks {field}: {stats}");
    }
    let (status, refusal) = admin("/admin/stats", "not-the-admin-token-not-the-admin-token");
    assert_eq!(status, 401);
    assert!(doc["paths"]["/admin/stats"]["get"]["responses"]["401"].is_object());
    for field in required(&doc, "Error") {
        assert!(refusal.get(&field).is_some(), "refusal lacks {field}: {refusal}");
    }
}

#[test]
fn the_document_moves_or_goes_with_admin_openapi() {
    let upstream = Upstream::start();
    let moved = Gateway::start(
        &upstream,
        Options::default().config(|c| c.admin.openapi = text("/api/description.json")),
    );
    assert_eq!(document(&moved, "/api/description.json").0, 200);
    // Elsewhere is an unknown admin path, which needs the admin token first.
    assert_eq!(document(&moved, "/openapi.json").0, 401);
    let off = Gateway::start(&upstream, Options::default().config(|c| c.admin.openapi = text("off")));
    assert_eq!(document(&off, "/openapi.json").0, 401);
    let resp = off
        .http
        .get(format!("http://{}/openapi.json", off.admin_addr))
        .bearer_auth(&off.admin_token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
}
