//! The config file exactly as written: serde types that mirror the TOML.
//!
//! Nothing here is trusted. [`super::Config::from_file_model`] turns this into
//! the validated internal model; values that can be wrong in ways serde can't
//! see are kept [`Spanned`] so errors point at the line and column.

use serde::Deserialize;
use toml::Spanned;

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
    pub listen: Option<Vec<Spanned<String>>>,
    pub threads: Option<Spanned<usize>>,
    pub grace_period: Option<Spanned<String>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub tls_listen: Option<Vec<Spanned<String>>>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
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
    pub format: Option<Spanned<String>>,
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
    pub selection: Option<Spanned<String>>,
    pub health_check: Option<Spanned<String>>,
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
    pub algorithm: Spanned<String>,
    pub public_key: String,
    pub private_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub backend: Option<Spanned<String>>,
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
    pub when_unreachable: Option<Spanned<String>>,
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
