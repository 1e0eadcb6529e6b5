//! The config file exactly as written: serde types that mirror the TOML.
//!
//! Nothing here is trusted. Each section's module (`super::server`,
//! `super::tokens`, ...) turns its section into the validated internal model;
//! values that can be wrong in ways serde can't see are kept [`Spanned`] so
//! errors point at the line and column.
//!
//! The types also serialise, so a config can be built as a value and written
//! out as TOML (the integration tests build theirs this way); what they write
//! parses back to the same model.
//!
//! Enumerated values are serde enums (their words spelled by `rename_all`)
//! read through [`Word`], so a wrong word is refused by the parser itself, at
//! its own line and column, with a message that names the key and the choices.

use serde::de::{Error as _, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use super::{KeyAlgorithm, LogFormat, SameSite, Selection, SetOnLogin, UpstreamProtocol, WhenUnreachable};
use crate::roles::RolesMatch;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub admin: AdminSection,
    pub upstream: Spanned<UpstreamSection>,
    #[serde(default)]
    pub tokens: TokensSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub passwords: PasswordsSection,
    #[serde(default)]
    pub endpoints: EndpointsSection,
    #[serde(default)]
    pub cookies: CookiesSection,
    /// The gateway's own HTML sign-in page (see [`crate::signin`]).
    #[serde(default)]
    pub signin: SigninSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub policy: PolicySection,
    /// Defaults for every route's `cors_*` keys.
    #[serde(default)]
    pub cors: CorsSection,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Spanned<RouteEntry>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<Spanned<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_header: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub underscore_headers: Option<crate::request::UnderscoreHeaders>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method_override: Option<crate::request::MethodOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_alpn: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2c: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Word<LogFormat>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openapi: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub addresses: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_authorization: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_header_prefix: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<Word<Selection>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Word<HealthCheck>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_interval: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_ttl: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket_close_at_expiry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket_max_duration: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Spanned<Word<UpstreamProtocol>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_ttl: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ttl: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_cache_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<Spanned<KeyEntry>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: Spanned<String>,
    pub algorithm: Word<KeyAlgorithm>,
    pub public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Spanned<Word<Backend>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_interval: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Spanned<RedisSection>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinels: Option<Vec<Spanned<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<Spanned<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when_unreachable: Option<Word<WhenUnreachable>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_per_ip_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures_before_backoff: Option<Spanned<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_failures_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<Spanned<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_read_timeout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<Spanned<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<Spanned<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<Spanned<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_hashes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logout: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_registration: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<Spanned<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CookiesSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_cookie: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_cookie: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_access_cookie: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_refresh_cookie: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samesite: Option<Spanned<Word<SameSite>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_path: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_header: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_methods: Option<Vec<Spanned<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_on_login: Option<Word<SetOnLogin>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigninSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<Spanned<String>>,
    /// Origins (`"https://app.example.com"`) an absolute `rd` may go to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_allowlist: Option<Vec<Spanned<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_redirect: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub path: Spanned<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Spanned<String>>,
    pub policy: Spanned<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub websocket: bool,
    /// A request budget per caller: `"100/m"` (see [`crate::limits::routes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_match: Option<Spanned<Word<RolesMatch>>>,
    /// Origins whose pages may call this route (`"https://app.example.com"`,
    /// or `"*"`), else `[cors] origins`; `[]` turns CORS off on this route
    /// (see [`crate::cors`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_headers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_credentials: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_max_age: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_expose_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// A browser (GET/HEAD asking for `text/html`) without a valid token is
    /// sent to the sign-in page instead of getting the 401 JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signin_redirect: Option<Spanned<bool>>,
}

/// `[cors]`: what every route's `cors_*` keys default to. With `origins`
/// set, every route but `deny` ones (and those with `cors_origins = []`)
/// answers CORS. Methods stay per route: they depend on the route's own.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origins: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `upstream.health_check`: the kind of check, before `health_check_path`
/// gives the `http` kind its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    None,
    Tcp,
    Http,
}

/// `store.backend`, before `path` or `[store.redis]` says where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sled,
    Redis,
}

/// An enumerated value written as a word. The enum's own serde derive maps
/// the word both ways; [`Choice::unknown`] says what is wrong with any other
/// word.
#[derive(Debug, Clone, Copy)]
pub struct Word<T>(pub T);

/// An enum a config key chooses from.
pub trait Choice: serde::de::DeserializeOwned {
    /// The refusal of a word that names no variant.
    fn unknown(word: &str) -> String;
}

impl<'de, T: Choice> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let word = String::deserialize(deserializer)?;
        let parsed: Result<T, serde::de::value::Error> = T::deserialize(word.as_str().into_deserializer());
        parsed.map(Word).map_err(|_| D::Error::custom(T::unknown(&word)))
    }
}

/// Written as the enum writes itself, so a model built in code (the test
/// harness's configs) serialises to the words the parser reads back.
impl<T: Serialize> Serialize for Word<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Choice for UpstreamProtocol {
    fn unknown(word: &str) -> String {
        format!("upstream.protocol `{word}`: expected \"http1\", \"h2\" or \"h2c\"")
    }
}

impl Choice for RolesMatch {
    fn unknown(word: &str) -> String {
        format!("roles_match `{word}`: expected \"any\" or \"all\"")
    }
}

impl Choice for LogFormat {
    fn unknown(word: &str) -> String {
        format!("log.format `{word}`: expected \"text\" or \"json\"")
    }
}

impl Choice for Selection {
    fn unknown(word: &str) -> String {
        format!("upstream.selection `{word}`: expected round_robin, random or consistent")
    }
}

impl Choice for HealthCheck {
    fn unknown(word: &str) -> String {
        format!("upstream.health_check `{word}`: expected none, tcp or http")
    }
}

impl Choice for KeyAlgorithm {
    fn unknown(_: &str) -> String {
        "a key's algorithm must be EdDSA, ES256 or RS256".to_owned()
    }
}

impl Choice for Backend {
    fn unknown(word: &str) -> String {
        format!("store.backend `{word}`: expected \"sled\" or \"redis\"")
    }
}

impl Choice for SameSite {
    fn unknown(word: &str) -> String {
        format!("cookies.samesite `{word}`: expected \"Lax\", \"Strict\" or \"None\"")
    }
}

impl Choice for SetOnLogin {
    fn unknown(word: &str) -> String {
        format!("cookies.set_on_login `{word}`: expected \"never\", \"when_asked\" or \"always\"")
    }
}

impl Choice for WhenUnreachable {
    fn unknown(word: &str) -> String {
        format!("store.redis.when_unreachable `{word}`: expected \"fail_closed\" or \"fail_open\"")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::FileConfig;
    use crate::config::Config;

    /// Every shipped config, written back out from its file model, validates
    /// to the same `Config`: serialising loses and changes nothing.
    #[test]
    fn shipped_configs_round_trip_through_the_model() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let model: FileConfig = toml::from_str(&text).unwrap();
            let written = toml::to_string(&model).unwrap();
            let original = Config::parse(&text, &path).unwrap();
            let again = Config::parse(&written, &path).unwrap_or_else(|e| panic!("{e}\n{written}"));
            assert_eq!(stable_debug(&original), stable_debug(&again), "{}:\n{written}", path.display());
            checked += 1;
        }
        assert!(checked >= 2, "found only {checked} configs in {}", dir.display());
    }

    /// `{config:?}` without the route table's index by first segment: a
    /// `HashMap`, so its order differs between two builds of the same table,
    /// and it is derived from the routes, which are compared in order.
    fn stable_debug(config: &Config) -> String {
        let text = format!("{config:?}");
        let start = text.find("by_first_segment: {").expect("the route table has its index");
        let end = start + text[start..].find('}').expect("the index ends");
        format!("{}{}", &text[..start], &text[end + 1..])
    }
}
