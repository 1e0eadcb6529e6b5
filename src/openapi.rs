//! The OpenAPI 3.1 description of what Gatehouse answers itself: the token
//! endpoints on the proxy listener and the operator API, health and metrics
//! on the admin listener (`GET {admin.openapi}` there, `/openapi.json` by
//! default).
//!
//! The document (`src/openapi.json`) is written by hand, for people to read
//! and diff, with the default paths. A gateway serves it with its own: the
//! `[endpoints]` and `[signin]` paths and its listeners' addresses are put in
//! once, when the admin listener is built, and the sign-in operations are
//! left out when `[signin]` is off. The suite's `openapi` tests and
//! schemathesis in CI hold it to what the gateway answers.

use serde_json::{Map, Value};

use crate::config::Config;

/// The document as written, with the default paths.
const DOCUMENT: &str = include_str!("openapi.json");

/// The document for this configuration, as JSON bytes.
pub fn document(config: &Config) -> Vec<u8> {
    let mut doc: Value = match serde_json::from_str(DOCUMENT) {
        Ok(doc) => doc,
        // A unit test parses it: this can't happen in a build that passed them.
        Err(_) => return b"{}".to_vec(),
    };
    let ends = &config.endpoints;
    let signin = &config.signin;
    let users = ends.users.as_str();
    let openapi = config.admin.openapi.as_deref().unwrap_or(DEFAULT_PATH);
    let renames: Vec<(&str, Option<String>)> = vec![
        ("/register", Some(ends.register.clone())),
        ("/login", Some(ends.login.clone())),
        ("/refresh", Some(ends.refresh.clone())),
        ("/logout", Some(ends.logout.clone())),
        ("/user/{id}", Some(format!("{users}/{{id}}"))),
        ("/user/{id}/tokens", Some(format!("{users}/{{id}}/tokens"))),
        ("/.well-known/jwks.json", Some(ends.jwks.clone())),
        ("/signin", signin.enabled.then(|| signin.path.clone())),
        ("/signin/out", signin.enabled.then(|| format!("{}/out", signin.path))),
        (DEFAULT_PATH, Some(openapi.to_owned())),
    ];
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        let mut renamed = Map::new();
        for (path, item) in std::mem::take(paths) {
            match renames.iter().find(|(default, _)| *default == path) {
                Some((_, Some(configured))) => {
                    renamed.insert(configured.clone(), item);
                }
                Some((_, None)) => {}
                None => {
                    renamed.insert(path, item);
                }
            }
        }
        *paths = renamed;
    }
    let proxy = match (config.server.listen.first(), config.server.tls.as_ref()) {
        (Some(addr), _) => format!("http://{}", reachable(*addr)),
        (None, Some(tls)) => {
            tls.listen.first().map_or_else(String::new, |a| format!("https://{}", reachable(*a)))
        }
        (None, None) => String::new(),
    };
    let admin = format!("http://{}", reachable(config.admin.listen));
    set_server_urls(&mut doc, &proxy, &admin);
    serde_json::to_vec_pretty(&doc).unwrap_or_else(|_| b"{}".to_vec())
}

/// Where the document is served unless `admin.openapi` says otherwise.
pub const DEFAULT_PATH: &str = "/openapi.json";

/// A wildcard listen address is reached on loopback.
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => (std::net::Ipv4Addr::LOCALHOST, addr.port()).into(),
        ip if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The document's top-level server is the proxy listener; each admin
/// operation names the admin listener as its own.
fn set_server_urls(doc: &mut Value, proxy: &str, admin: &str) {
    if let Some(url) = doc.pointer_mut("/servers/0/url") {
        *url = Value::String(proxy.to_owned());
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            if let Some(url) = operation.pointer_mut("/servers/0/url") {
                *url = Value::String(admin.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_takes_the_configured_paths() {
        let raw: Value = serde_json::from_str(DOCUMENT).expect("src/openapi.json is JSON");
        assert_eq!(raw["openapi"], "3.1.0");
        let text = "[upstream]\naddresses = [\"127.0.0.1:9\"]\n[endpoints]\nlogin = \"/auth/login\"\n\
                    users = \"/accounts\"\n[admin]\nlisten = \"127.0.0.1:9911\"\nopenapi = \"/api.json\"\n";
        let config = Config::parse(text, std::path::Path::new("test.toml")).expect("valid config");
        let doc: Value = serde_json::from_slice(&document(&config)).expect("served document is JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for path in ["/auth/login", "/accounts/{id}", "/accounts/{id}/tokens", "/api.json", "/admin/users"] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        for path in ["/login", "/user/{id}", "/signin", "/signin/out", "/openapi.json"] {
            assert!(!paths.contains_key(path), "{path} should be gone");
        }
        assert_eq!(doc["paths"]["/admin/stats"]["get"]["servers"][0]["url"], "http://127.0.0.1:9911");
        assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:8080");
    }
}
