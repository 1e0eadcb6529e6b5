//! The standard test gateway's config, built as the config file model
//! (`gatehouse::config::file`) and written out with `toml::to_string`.
//!
//! Tests change it through [`Options::config`](super::Options::config) with
//! typed edits rather than TOML text spliced into a template, so a misspelt
//! key or a wrong word fails to compile instead of failing the gateway.

use std::net::SocketAddr;

use gatehouse::config::file::{
    AdminSection, EndpointsSection, FileConfig, PasswordsSection, RouteEntry, ServerSection, StoreSection,
    TokensSection, UpstreamSection,
};
use toml::Spanned;

/// A value as the model holds it. The span is only read when the parsed file
/// has an error to locate; a written config is parsed again from its text.
pub fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// A set string value: `text("1s")` for `Some(spanned("1s".into()))`.
pub fn text(value: &str) -> Option<Spanned<String>> {
    Some(spanned(value.to_owned()))
}

/// A `[[routes]]` entry; `methods` empty for every method.
pub fn route(path: &str, methods: &[&str], policy: &str) -> Spanned<RouteEntry> {
    spanned(RouteEntry {
        path: spanned(path.to_owned()),
        methods: methods.iter().map(|m| spanned((*m).to_owned())).collect(),
        policy: spanned(policy.to_owned()),
        fresh: false,
        assertion: None,
        websocket: false,
        rate: None,
        burst: None,
        roles: Vec::new(),
        roles_match: None,
        cors_origins: None,
        cors_methods: None,
        cors_headers: None,
        cors_credentials: None,
        cors_max_age: None,
        cors_expose_headers: None,
        signin_redirect: None,
    })
}

/// The routes every test gateway has: the demo's, plus echo routes per policy.
fn routes() -> Vec<Spanned<RouteEntry>> {
    let mut admin_fresh = route("/product/{name}", &["DELETE"], "admin");
    admin_fresh.get_mut().fresh = true;
    vec![
        route("/item/{name}", &["GET"], "any"),
        route("/item/{name}", &["POST"], "fresh"),
        route("/item/{name}", &["DELETE"], "admin"),
        route("/items", &["GET"], "optional"),
        admin_fresh,
        route("/debug/echo/public/**", &[], "public"),
        route("/debug/echo/optional/**", &[], "optional"),
        route("/debug/echo/any/**", &[], "any"),
        route("/debug/echo/fresh/**", &[], "fresh"),
        route("/debug/echo/admin/**", &[], "admin"),
        route("/debug/echo/deny/**", &[], "deny"),
        route("/debug/slow", &[], "public"),
    ]
}

/// The standard config: one thread, a sled store in the gateway's directory,
/// cheap password hashing, no token leeway, and the standard routes.
pub fn standard(
    addr: SocketAddr,
    admin_addr: SocketAddr,
    upstreams: &[String],
    access_ttl: &str,
    grace_period: &str,
) -> FileConfig {
    FileConfig {
        server: ServerSection {
            listen: Some(spanned(vec![spanned(addr.to_string())])),
            threads: Some(spanned(1)),
            grace_period: text(grace_period),
            shutdown_timeout: text("1s"),
            ..ServerSection::default()
        },
        log: Default::default(),
        admin: AdminSection { listen: text(&admin_addr.to_string()), ..AdminSection::default() },
        upstream: spanned(UpstreamSection {
            addresses: upstreams.iter().map(|a| spanned(a.clone())).collect(),
            ..UpstreamSection::default()
        }),
        tokens: TokensSection {
            access_ttl: text(access_ttl),
            leeway: text("0s"),
            ..TokensSection::default()
        },
        store: StoreSection { path: Some("data".into()), ..StoreSection::default() },
        passwords: PasswordsSection {
            memory_kib: Some(spanned(1024)),
            iterations: Some(spanned(1)),
            ..PasswordsSection::default()
        },
        endpoints: EndpointsSection { max_body_bytes: Some(spanned(2048)), ..EndpointsSection::default() },
        cookies: Default::default(),
        signin: Default::default(),
        limits: Default::default(),
        policy: Default::default(),
        cors: Default::default(),
        routes: routes(),
    }
}
