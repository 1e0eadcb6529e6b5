//! The config file exactly as written: serde types that mirror the TOML.
//!
//! Nothing here is trusted. Each section's module (`super::server`,
//! `super::tokens`, ...) turns its section into the validated internal model;
//! values that can be wrong in ways serde can't see are kept [`Spanned`] so
//! errors point at the line and column.
//!
//! Enumerated values are serde enums (their words spelled by `rename_all`)
//! read through [`Word`], so a wrong word is refused by the parser itself, at
//! its own line and column, with a message that names the key and the choices.

use serde::de::{Error as _, IntoDeserializer};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{KeyAlgorithm, LogFormat, Selection, WhenUnreachable};

#[derive(Debug, Deserialize)]
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
    pub limits: LimitsSection,
    #[serde(default)]
    pub policy: PolicySection,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub threads: Option<Spanned<usize>>,
    pub grace_period: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub tls_listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    pub upgrade_socket: Option<String>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub forwarded_header: Option<bool>,
    pub underscore_headers: Option<crate::request::UnderscoreHeaders>,
    pub method_override: Option<crate::request::MethodOverride>,
    pub header_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<Word<LogFormat>>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<Spanned<String>>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub addresses: Vec<Spanned<String>>,
    pub pass_authorization: Option<bool>,
    pub identity_header_prefix: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub selection: Option<Word<Selection>>,
    pub health_check: Option<Word<HealthCheck>>,
    pub health_check_path: Option<String>,
    pub health_check_interval: Option<Spanned<String>>,
    pub name: Option<String>,
    pub assertion: Option<bool>,
    pub assertion_ttl: Option<Spanned<String>>,
    pub websocket_close_at_expiry: Option<bool>,
    pub websocket_max_duration: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub access_ttl: Option<Spanned<String>>,
    pub refresh_ttl: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    pub verified_cache_size: Option<usize>,
    pub signing_key: Option<Spanned<String>>,
    #[serde(default)]
    pub keys: Vec<Spanned<KeyEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub kid: Spanned<String>,
    pub algorithm: Word<KeyAlgorithm>,
    pub public_key: String,
    pub private_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub backend: Option<Spanned<Word<Backend>>>,
    pub path: Option<String>,
    pub purge_interval: Option<Spanned<String>>,
    pub redis: Option<Spanned<RedisSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    pub url: Option<Spanned<String>>,
    pub sentinels: Option<Vec<Spanned<String>>>,
    pub master_name: Option<Spanned<String>>,
    pub sentinel_tls: Option<bool>,
    pub db: Option<Spanned<i64>>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub tls_ca_file: Option<String>,
    pub key_prefix: Option<Spanned<String>>,
    pub pool_size: Option<Spanned<usize>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub command_timeout: Option<Spanned<String>>,
    pub when_unreachable: Option<Word<WhenUnreachable>>,
    pub wait_replicas: Option<u32>,
    pub wait_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub login_per_ip_per_minute: Option<u32>,
    pub failures_before_backoff: Option<Spanned<u32>>,
    pub max_backoff: Option<Spanned<String>>,
    pub account_failures_per_minute: Option<u32>,
    pub max_header_bytes: Option<Spanned<usize>>,
    pub client_read_timeout: Option<Spanned<String>>,
    pub client_idle_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordsSection {
    pub memory_kib: Option<Spanned<u32>>,
    pub iterations: Option<Spanned<u32>>,
    pub parallelism: Option<Spanned<u32>>,
    pub min_length: Option<usize>,
    pub max_concurrent_hashes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSection {
    pub register: Option<Spanned<String>>,
    pub login: Option<Spanned<String>>,
    pub refresh: Option<Spanned<String>>,
    pub logout: Option<Spanned<String>>,
    pub users: Option<Spanned<String>>,
    pub jwks: Option<Spanned<String>>,
    pub allow_registration: Option<bool>,
    pub max_body_bytes: Option<Spanned<usize>>,
    pub body_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub default: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub path: Spanned<String>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    pub policy: Spanned<String>,
    #[serde(default)]
    pub fresh: bool,
    pub assertion: Option<bool>,
    #[serde(default)]
    pub websocket: bool,
}

/// `upstream.health_check`: the kind of check, before `health_check_path`
/// gives the `http` kind its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    None,
    Tcp,
    Http,
}

/// `store.backend`, before `path` or `[store.redis]` says where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sled,
    Redis,
}

/// An enumerated value written as a word. The enum's own serde derive maps
/// the word; [`Choice::unknown`] says what is wrong with any other word.
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

impl Choice for WhenUnreachable {
    fn unknown(word: &str) -> String {
        format!("store.redis.when_unreachable `{word}`: expected \"fail_closed\" or \"fail_open\"")
    }
}
