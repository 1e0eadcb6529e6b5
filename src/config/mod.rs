//! Configuration: the file model ([`file`]) is parsed, then converted once into
//! the validated [`Config`] the gateway runs on.
//!
//! Every problem is reported as a [`ConfigError`] with the file, line and
//! column, so `gatehouse check-config` and a refused reload point at the fix.
//! Secrets are not part of the file: it names where they come from (an
//! environment variable or a file), and [`SecretSource::load`] reads them.

mod file;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::policy::{PathPattern, Policy, Route, RouteTable, Rule};
pub use file::FileConfig;

/// The smallest secret accepted for HS256 signing and for the admin API.
pub const MIN_SECRET_BYTES: usize = 32;

/// A config problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub tokens: TokenConfig,
    pub store: StoreConfig,
    pub passwords: PasswordConfig,
    pub endpoints: EndpointConfig,
    pub limits: LimitsConfig,
    pub routes: RouteTable,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsConfig>,
    /// Where a running gateway hands its sockets to its replacement (`serve --upgrade`).
    pub upgrade_socket: PathBuf,
    /// How client requests are made canonical before they are judged.
    pub requests: RequestRules,
}

/// The request-integrity settings of `[server]` (see [`crate::request`]).
#[derive(Debug, Clone, Default)]
pub struct RequestRules {
    /// Peers whose `X-Forwarded-For` (and `-Proto`, `-Host`) are believed.
    pub trusted_proxies: crate::request::TrustedProxies,
    /// Also send an RFC 7239 `Forwarded` header upstream.
    pub forwarded_header: bool,
    pub underscore_headers: crate::request::UnderscoreHeaders,
    pub method_override: crate::request::MethodOverride,
    /// Longest a client may take to send a whole request header section.
    pub header_timeout: Duration,
}

/// TLS termination: extra listeners with a certificate chain and key (PEM).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,gatehouse=debug`; `GATEHOUSE_LOG` overrides it.
    pub level: String,
}

/// How requests are spread over the upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    RoundRobin,
    Random,
    /// Ketama consistent hashing on the client address: a client sticks to one upstream.
    Consistent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    None,
    /// A TCP connect.
    Tcp,
    /// `GET path` answered with 200.
    Http {
        path: String,
    },
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretSource,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub addresses: Vec<SocketAddr>,
    pub pass_authorization: bool,
    /// Lower-case, e.g. `x-auth-`.
    pub identity_prefix: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub selection: Selection,
    pub health_check: HealthCheckKind,
    pub health_check_interval: Duration,
    /// The upstream's name: the `aud` of identity assertions.
    pub name: String,
    /// Send identity assertions on every route (routes may override).
    pub assertion: bool,
    /// Lifetime of an identity assertion (at most 60 s).
    pub assertion_ttl: Duration,
    /// A WebSocket tunnel closes when the token that opened it expires.
    pub websocket_close_at_expiry: bool,
    /// The longest any WebSocket tunnel stays open.
    pub websocket_max_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub secret: SecretSource,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    /// Verified tokens remembered so repeat requests skip the HMAC; 0 = off.
    pub verified_cache_size: usize,
    /// Asymmetric keys, each named by its `kid`: every one verifies, at most
    /// one signs.
    pub keys: Vec<KeyConfig>,
    /// The `kid` of the key that signs new tokens; `None` signs with HS256.
    pub signing_key: Option<String>,
}

/// Algorithms an asymmetric key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EdDsa,
    Es256,
    Rs256,
}

impl KeyAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(KeyAlgorithm::EdDsa),
            "ES256" => Some(KeyAlgorithm::Es256),
            "RS256" => Some(KeyAlgorithm::Rs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EdDsa => "EdDSA",
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::Rs256 => "RS256",
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    pub public_key: PathBuf,
    /// Only the signing key needs its private half.
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// How often expired revocation entries are dropped.
    pub purge_interval: Duration,
}

/// Where users, revocations and (for Redis) login limits live.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// The embedded database: one gateway per data directory.
    Sled { path: PathBuf },
    /// Shared by every gateway that names the same Redis and key prefix.
    Redis(Box<RedisConfig>),
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub target: RedisTarget,
    /// Overrides the URL's database number (Sentinel: defaults to 0).
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// Extra CA certificate (PEM) to trust for `rediss://`.
    pub tls_ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub when_unreachable: WhenUnreachable,
    /// Replicas that must confirm each write before it is acknowledged (`WAIT`).
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
}

impl RedisConfig {
    /// The defaults for one Redis server at `url`.
    pub fn for_url(url: &str) -> RedisConfig {
        RedisConfig {
            target: RedisTarget::Url(url.to_owned()),
            db: None,
            username: None,
            password: None,
            tls_ca_file: None,
            key_prefix: "gatehouse:".to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(500),
            when_unreachable: WhenUnreachable::FailClosed,
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://`.
    Url(String),
    /// Ask these Sentinels for the current master of `master_name`.
    Sentinel { sentinels: Vec<String>, master_name: String, tls: bool },
}

/// What proxied requests get while Redis can't be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnreachable {
    /// 503 `store_unavailable`: nothing is allowed that might have been revoked.
    FailClosed,
    /// Tokens are checked against this gateway's last copy of the revocation
    /// list and its cached accounts; anything it can't check is refused.
    FailOpen,
}

/// Abuse and resource limits; see [`crate::limits`] for the login limits.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `/login` and `/register` attempts per client IP per minute; 0 = off.
    pub login_per_ip_per_minute: u32,
    /// Wrong passwords in a row (per account and IP) before backoff starts.
    pub failures_before_backoff: u32,
    /// The longest backoff for one account and IP.
    pub max_backoff: Duration,
    /// Failed logins per account per minute, over all IPs; 0 = off.
    pub account_failures_per_minute: u32,
    /// Total size of a request's header block.
    pub max_header_bytes: usize,
    /// Longest wait for the next chunk of a request body.
    pub client_read_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub client_idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            login_per_ip_per_minute: 60,
            failures_before_backoff: 5,
            max_backoff: Duration::from_secs(15 * 60),
            account_failures_per_minute: 30,
            max_header_bytes: 32 * 1024,
            client_read_timeout: Duration::from_secs(15),
            client_idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub min_length: usize,
    /// Password hashes computed at once (each takes a core and `memory_kib`).
    pub max_concurrent_hashes: usize,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub register: String,
    pub login: String,
    pub refresh: String,
    pub logout: String,
    /// Prefix of `GET/DELETE {users}/{id}`.
    pub users: String,
    /// The public key set (`GET`).
    pub jwks: String,
    pub allow_registration: bool,
    pub max_body_bytes: usize,
    /// The longest a client may take to send a built-in endpoint's whole body.
    pub body_timeout: Duration,
}

/// Where a secret comes from. The file wins if both are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// What the secret is for, in messages.
    pub purpose: &'static str,
}

/// Secret bytes that never show up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no {purpose} is configured: {how}")]
    Missing { purpose: &'static str, how: String },
    #[error("the {purpose} is too short ({len} bytes); it needs at least {MIN_SECRET_BYTES}: {how}")]
    TooShort { purpose: &'static str, len: usize, how: String },
    #[error("cannot read the {purpose} from {}: {source}", path.display())]
    Unreadable { purpose: &'static str, path: PathBuf, source: std::io::Error },
}

impl SecretSource {
    fn how_to_make(&self) -> String {
        let target = match (&self.file, &self.env) {
            (Some(path), _) => format!("`head -c 48 /dev/urandom | base64 > {}`", path.display()),
            (None, Some(var)) => format!("`export {var}=$(head -c 48 /dev/urandom | base64)`"),
            (None, None) => "set the `*_env` or `*_file` key in the config".to_owned(),
        };
        format!("make one with {target}")
    }

    pub fn load(&self) -> Result<Secret, SecretError> {
        let secret = self.load_any_length()?;
        if secret.0.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                purpose: self.purpose,
                len: secret.0.len(),
                how: self.how_to_make(),
            });
        }
        Ok(secret)
    }

    /// Like [`SecretSource::load`], for secrets chosen elsewhere (a Redis
    /// password) whose length is not ours to require.
    pub fn load_any_length(&self) -> Result<Secret, SecretError> {
        let raw = if let Some(path) = &self.file {
            std::fs::read(path).map_err(|source| SecretError::Unreadable {
                purpose: self.purpose,
                path: path.clone(),
                source,
            })?
        } else if let Some(var) = &self.env {
            std::env::var_os(var).map(|v| v.into_encoded_bytes()).unwrap_or_default()
        } else {
            Vec::new()
        };
        // A trailing newline from `echo` or an editor is not part of the secret.
        let trimmed = raw.trim_ascii().to_vec();
        if trimmed.is_empty() {
            return Err(SecretError::Missing { purpose: self.purpose, how: self.how_to_make() });
        }
        Ok(Secret(trimmed))
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_and_column(text, s.start));
            ConfigError { file: path.to_owned(), line, column, message }
        };
        let model: FileConfig = toml::from_str(text).map_err(|e| locate(e.span(), e.message().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_file_model(model, path, base)
            .map_err(|Invalid { span, message }| locate(Some(span), message))
    }

    fn from_file_model(model: FileConfig, path: &Path, base: &Path) -> Result<Config, Invalid> {
        let FileConfig {
            server,
            log,
            admin,
            upstream,
            tokens,
            store,
            passwords,
            endpoints,
            limits,
            policy,
            routes,
        } = model;

        let listen = match server.listen {
            Some(list) if list.is_empty() => {
                return Err(Invalid {
                    span: 0..0,
                    message: "server.listen must name at least one address".into(),
                })
            }
            Some(list) => list.iter().map(socket_addr).collect::<Result<_, _>>()?,
            None => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
        };
        let threads = match server.threads {
            Some(t) if *t.get_ref() == 0 => return Err(Invalid::at(&t, "server.threads must be at least 1")),
            Some(t) => t.into_inner(),
            None => 1,
        };
        let tls = match (server.tls_listen, server.tls_cert, server.tls_key) {
            (None, None, None) => None,
            (Some(list), Some(cert), Some(key)) if !list.is_empty() => Some(TlsConfig {
                listen: list.iter().map(socket_addr).collect::<Result<_, _>>()?,
                cert: base.join(cert),
                key: base.join(key),
            }),
            _ => {
                return Err(Invalid {
                    span: 0..0,
                    message: "TLS needs all of server.tls_listen, server.tls_cert and server.tls_key".into(),
                })
            }
        };
        let server = ServerConfig {
            listen,
            threads,
            grace_period: duration_or(server.grace_period, Duration::from_secs(5))?,
            shutdown_timeout: duration_or(server.shutdown_timeout, Duration::from_secs(10))?,
            tls,
            upgrade_socket: base.join(server.upgrade_socket.as_deref().unwrap_or("gatehouse-upgrade.sock")),
            requests: RequestRules {
                trusted_proxies: trusted_proxies(server.trusted_proxies.unwrap_or_default())?,
                forwarded_header: server.forwarded_header.unwrap_or(false),
                underscore_headers: server.underscore_headers.unwrap_or_default(),
                method_override: server.method_override.unwrap_or_default(),
                header_timeout: duration_within(
                    server.header_timeout,
                    Duration::from_secs(10),
                    Duration::from_millis(100)..=Duration::from_secs(300),
                    "server.header_timeout",
                )?,
            },
        };
        let log = LogConfig {
            format: match log.format {
                None => LogFormat::Text,
                Some(f) => match f.get_ref().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(Invalid::at(
                            &f,
                            format!("log.format `{other}`: expected \"text\" or \"json\""),
                        ))
                    }
                },
            },
            level: log.level.unwrap_or_else(|| "info".to_owned()),
        };

        let admin = AdminConfig {
            listen: match &admin.listen {
                Some(addr) => socket_addr(addr)?,
                None => SocketAddr::from(([127, 0, 0, 1], 9090)),
            },
            token: secret_source(
                admin.token_env,
                admin.token_file,
                "GATEHOUSE_ADMIN_TOKEN",
                base,
                "admin API token",
            ),
        };

        let upstream_span = upstream.span();
        let upstream = upstream.into_inner();
        if upstream.addresses.is_empty() {
            return Err(Invalid {
                span: upstream_span,
                message: "upstream.addresses must name at least one upstream".into(),
            });
        }
        let identity_prefix = match upstream.identity_header_prefix {
            Some(p) => {
                let value = p.get_ref();
                if value.len() < 2 || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(Invalid::at(
                        &p,
                        "upstream.identity_header_prefix must be letters, digits and `-`, e.g. \"X-Auth-\"",
                    ));
                }
                value.to_ascii_lowercase()
            }
            None => "x-auth-".to_owned(),
        };
        let upstream = UpstreamConfig {
            addresses: upstream.addresses.iter().map(socket_addr).collect::<Result<_, _>>()?,
            pass_authorization: upstream.pass_authorization.unwrap_or(false),
            identity_prefix,
            connect_timeout: duration_or(upstream.connect_timeout, Duration::from_secs(2))?,
            read_timeout: duration_or(upstream.read_timeout, Duration::from_secs(30))?,
            selection: match upstream.selection {
                None => Selection::RoundRobin,
                Some(s) => match s.get_ref().as_str() {
                    "round_robin" => Selection::RoundRobin,
                    "random" => Selection::Random,
                    "consistent" => Selection::Consistent,
                    other => {
                        return Err(Invalid::at(
                            &s,
                            format!(
                                "upstream.selection `{other}`: expected round_robin, random or consistent"
                            ),
                        ))
                    }
                },
            },
            health_check: match upstream.health_check {
                None => HealthCheckKind::Tcp,
                Some(h) => match h.get_ref().as_str() {
                    "none" => HealthCheckKind::None,
                    "tcp" => HealthCheckKind::Tcp,
                    "http" => HealthCheckKind::Http {
                        path: upstream.health_check_path.unwrap_or_else(|| "/healthz".to_owned()),
                    },
                    other => {
                        return Err(Invalid::at(
                            &h,
                            format!("upstream.health_check `{other}`: expected none, tcp or http"),
                        ))
                    }
                },
            },
            health_check_interval: duration_or(upstream.health_check_interval, Duration::from_secs(5))?,
            name: upstream.name.unwrap_or_else(|| "upstream".to_owned()),
            assertion: upstream.assertion.unwrap_or(false),
            assertion_ttl: match upstream.assertion_ttl {
                Some(t) => {
                    let ttl = duration_or(Some(t.clone()), Duration::ZERO)?;
                    if ttl.is_zero() || ttl > Duration::from_secs(60) {
                        return Err(Invalid::at(&t, "upstream.assertion_ttl must be between 1s and 60s"));
                    }
                    ttl
                }
                None => Duration::from_secs(30),
            },
            websocket_close_at_expiry: upstream.websocket_close_at_expiry.unwrap_or(true),
            websocket_max_duration: duration_within(
                upstream.websocket_max_duration,
                Duration::from_secs(24 * 3600),
                Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600),
                "upstream.websocket_max_duration",
            )?,
        };

        let tokens_signing_key = tokens.signing_key.clone();
        let tokens = TokenConfig {
            secret: secret_source(
                tokens.secret_env,
                tokens.secret_file,
                "GATEHOUSE_JWT_SECRET",
                base,
                "token signing secret",
            ),
            issuer: tokens.issuer.unwrap_or_else(|| "gatehouse".to_owned()),
            audience: tokens.audience.unwrap_or_else(|| "gatehouse".to_owned()),
            access_ttl: duration_or(tokens.access_ttl, Duration::from_secs(15 * 60))?,
            refresh_ttl: duration_or(tokens.refresh_ttl, Duration::from_secs(30 * 24 * 3600))?,
            leeway: duration_or(tokens.leeway, Duration::from_secs(5))?,
            verified_cache_size: tokens.verified_cache_size.unwrap_or(10_000),
            keys: {
                let mut keys: Vec<KeyConfig> = Vec::new();
                for entry in &tokens.keys {
                    let key = entry.get_ref();
                    let kid = key.kid.get_ref();
                    if kid.is_empty() || kid.len() > 64 || !kid.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(Invalid::at(&key.kid, "a key's kid must be 1 to 64 visible characters"));
                    }
                    if keys.iter().any(|k| &k.kid == kid) {
                        return Err(Invalid::at(&key.kid, format!("two keys have the kid `{kid}`")));
                    }
                    let algorithm = KeyAlgorithm::parse(key.algorithm.get_ref()).ok_or_else(|| {
                        Invalid::at(&key.algorithm, "a key's algorithm must be EdDSA, ES256 or RS256")
                    })?;
                    keys.push(KeyConfig {
                        kid: kid.clone(),
                        algorithm,
                        public_key: base.join(&key.public_key),
                        private_key: key.private_key.as_ref().map(|p| base.join(p)),
                    });
                }
                keys
            },
            signing_key: None,
        };
        let mut tokens = tokens;
        if let Some(kid) = &tokens_signing_key {
            match tokens.keys.iter().find(|k| &k.kid == kid.get_ref()) {
                Some(key) if key.private_key.is_some() => tokens.signing_key = Some(kid.get_ref().clone()),
                Some(_) => return Err(Invalid::at(kid, "the signing key needs a private_key")),
                None => {
                    return Err(Invalid::at(
                        kid,
                        format!("no [[tokens.keys]] entry has the kid `{}`", kid.get_ref()),
                    ))
                }
            }
        }
        if tokens.access_ttl.is_zero() || tokens.refresh_ttl.is_zero() {
            return Err(Invalid {
                span: 0..0,
                message: "tokens.access_ttl and tokens.refresh_ttl must be longer than zero".into(),
            });
        }

        let store = StoreConfig {
            purge_interval: duration_or(store.purge_interval, Duration::from_secs(600))?,
            backend: store_backend(store.backend, store.path, store.redis, base)?,
        };
        if store.purge_interval.is_zero() {
            return Err(Invalid {
                span: 0..0,
                message: "store.purge_interval must be longer than zero".into(),
            });
        }

        let defaults = LimitsConfig::default();
        let failures_before_backoff = match limits.failures_before_backoff {
            Some(v) if *v.get_ref() == 0 => {
                return Err(Invalid::at(&v, "limits.failures_before_backoff must be at least 1"))
            }
            Some(v) => v.into_inner(),
            None => defaults.failures_before_backoff,
        };
        let max_header_bytes = match limits.max_header_bytes {
            Some(v) if !(1024..=1024 * 1024).contains(v.get_ref()) => {
                return Err(Invalid::at(&v, "limits.max_header_bytes must be between 1024 and 1048576"))
            }
            Some(v) => v.into_inner(),
            None => defaults.max_header_bytes,
        };
        let limits = LimitsConfig {
            login_per_ip_per_minute: limits
                .login_per_ip_per_minute
                .unwrap_or(defaults.login_per_ip_per_minute),
            failures_before_backoff,
            max_backoff: duration_or(limits.max_backoff, defaults.max_backoff)?,
            account_failures_per_minute: limits
                .account_failures_per_minute
                .unwrap_or(defaults.account_failures_per_minute),
            max_header_bytes,
            client_read_timeout: duration_or(limits.client_read_timeout, defaults.client_read_timeout)?,
            client_idle_timeout: duration_or(limits.client_idle_timeout, defaults.client_idle_timeout)?,
        };

        let passwords = PasswordConfig {
            memory_kib: bounded(
                passwords.memory_kib,
                19 * 1024,
                8..=4 * 1024 * 1024,
                "passwords.memory_kib",
            )?,
            iterations: bounded(passwords.iterations, 2, 1..=100, "passwords.iterations")?,
            parallelism: bounded(passwords.parallelism, 1, 1..=64, "passwords.parallelism")?,
            min_length: passwords.min_length.unwrap_or(8),
            max_concurrent_hashes: passwords.max_concurrent_hashes.unwrap_or_else(|| {
                // Leave a core for proxied traffic.
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }),
        };

        let endpoint = |value: Option<Spanned<String>>, default: &str| -> Result<String, Invalid> {
            match value {
                Some(v)
                    if !v.get_ref().starts_with('/')
                        || v.get_ref().len() < 2
                        || v.get_ref().ends_with('/') =>
                {
                    Err(Invalid::at(
                        &v,
                        "endpoint paths start with `/` and do not end with one, e.g. \"/login\"",
                    ))
                }
                Some(v) => Ok(v.into_inner()),
                None => Ok(default.to_owned()),
            }
        };
        let max_body_bytes = match endpoints.max_body_bytes {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > 1024 * 1024 => {
                return Err(Invalid::at(&v, "endpoints.max_body_bytes must be between 1 and 1048576"))
            }
            Some(v) => v.into_inner(),
            None => 16 * 1024,
        };
        let endpoints = EndpointConfig {
            register: endpoint(endpoints.register, "/register")?,
            login: endpoint(endpoints.login, "/login")?,
            refresh: endpoint(endpoints.refresh, "/refresh")?,
            logout: endpoint(endpoints.logout, "/logout")?,
            users: endpoint(endpoints.users, "/user")?,
            jwks: endpoint(endpoints.jwks, "/.well-known/jwks.json")?,
            allow_registration: endpoints.allow_registration.unwrap_or(true),
            max_body_bytes,
            body_timeout: duration_within(
                endpoints.body_timeout,
                Duration::from_secs(10),
                Duration::from_millis(100)..=Duration::from_secs(300),
                "endpoints.body_timeout",
            )?,
        };

        let default_rule = match policy.default {
            Some(p) => Rule {
                policy: p.get_ref().parse().map_err(|m| Invalid::at(&p, m))?,
                require_fresh: false,
                assertion: upstream.assertion,
                websocket: false,
            },
            None => Rule {
                policy: Policy::Deny,
                require_fresh: false,
                assertion: upstream.assertion,
                websocket: false,
            },
        };
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, entry) in routes.into_iter().enumerate() {
            let entry_span = entry.span();
            let entry = entry.into_inner();
            let pattern =
                PathPattern::parse(entry.path.get_ref()).map_err(|m| Invalid::at(&entry.path, m))?;
            let policy: Policy = entry.policy.get_ref().parse().map_err(|m| Invalid::at(&entry.policy, m))?;
            if entry.fresh && policy != Policy::Admin {
                return Err(Invalid {
                    span: entry_span,
                    message: "`fresh = true` only applies to admin routes; use `policy = \"fresh\"` instead"
                        .into(),
                });
            }
            let mut methods = Vec::new();
            for m in &entry.methods {
                let upper = m.get_ref().to_ascii_uppercase();
                let known = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
                if !known.contains(&upper.as_str()) {
                    return Err(Invalid::at(
                        m,
                        format!("unknown method `{}`: expected one of {}", m.get_ref(), known.join(", ")),
                    ));
                }
                methods.push(upper.parse().map_err(|_| Invalid::at(m, "invalid method"))?);
            }
            if entry.websocket
                && (policy == Policy::Deny || !(methods.is_empty() || methods.contains(&http::Method::GET)))
            {
                return Err(Invalid {
                    span: entry_span,
                    message: "`websocket = true` needs a route that allows GET and is not `deny`".into(),
                });
            }
            compiled.push(Route {
                pattern,
                methods,
                rule: Rule {
                    policy,
                    require_fresh: entry.fresh,
                    assertion: entry.assertion.unwrap_or(upstream.assertion),
                    websocket: entry.websocket,
                },
                index,
            });
        }

        Ok(Config {
            source: path.to_owned(),
            server,
            log,
            admin,
            upstream,
            tokens,
            store,
            passwords,
            endpoints,
            limits,
            routes: RouteTable::new(compiled, default_rule),
        })
    }
}

/// A validation failure before it is located in the file.
struct Invalid {
    span: Range<usize>,
    message: String,
}

impl Invalid {
    fn at<T>(value: &Spanned<T>, message: impl Into<String>) -> Self {
        Invalid { span: value.span(), message: message.into() }
    }
}

/// CIDR blocks (`10.0.0.0/8`) or single addresses (`127.0.0.1`, `::1`).
fn trusted_proxies(entries: Vec<Spanned<String>>) -> Result<crate::request::TrustedProxies, Invalid> {
    let mut networks = Vec::with_capacity(entries.len());
    for entry in &entries {
        let text = entry.get_ref().trim();
        let network = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                Invalid::at(
                    entry,
                    format!("server.trusted_proxies: `{text}` is not an address or CIDR block, e.g. \"10.0.0.0/8\""),
                )
            })?;
        networks.push(network.trunc());
    }
    Ok(crate::request::TrustedProxies::new(networks))
}

fn socket_addr(value: &Spanned<String>) -> Result<SocketAddr, Invalid> {
    value.get_ref().parse().map_err(|_| {
        Invalid::at(
            value,
            format!("`{}` is not an IP:port address, e.g. \"127.0.0.1:8080\"", value.get_ref()),
        )
    })
}

fn duration_or(value: Option<Spanned<String>>, default: Duration) -> Result<Duration, Invalid> {
    match value {
        Some(v) => humantime::parse_duration(v.get_ref()).map_err(|e| {
            Invalid::at(&v, format!("`{}` is not a duration like \"15m\" or \"30d\": {e}", v.get_ref()))
        }),
        None => Ok(default),
    }
}

/// A duration with a default that must lie in `range`.
fn duration_within(
    value: Option<Spanned<String>>,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
    key: &str,
) -> Result<Duration, Invalid> {
    let span = value.as_ref().map(Spanned::span);
    let duration = duration_or(value, default)?;
    if !range.contains(&duration) {
        return Err(Invalid {
            span: span.unwrap_or(0..0),
            message: format!(
                "{key} must be between {} and {}",
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end())
            ),
        });
    }
    Ok(duration)
}

fn bounded(
    value: Option<Spanned<u32>>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    key: &str,
) -> Result<u32, Invalid> {
    match value {
        Some(v) if !range.contains(v.get_ref()) => {
            Err(Invalid::at(&v, format!("{key} must be between {} and {}", range.start(), range.end())))
        }
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}

fn store_backend(
    backend: Option<Spanned<String>>,
    path: Option<String>,
    redis: Option<Spanned<file::RedisSection>>,
    base: &Path,
) -> Result<StoreBackend, Invalid> {
    let name = backend.as_ref().map_or("sled", |b| b.get_ref().as_str());
    match (name, redis) {
        ("sled", None) => {
            Ok(StoreBackend::Sled { path: base.join(path.as_deref().unwrap_or("gatehouse-data")) })
        }
        ("sled", Some(section)) => {
            Err(Invalid::at(&section, "[store.redis] is set but store.backend is not \"redis\""))
        }
        ("redis", None) => Err(Invalid {
            span: backend.as_ref().map_or(0..0, Spanned::span),
            message: "store.backend = \"redis\" needs a [store.redis] section with `url` or `sentinels`"
                .into(),
        }),
        ("redis", Some(section)) => redis_config(section, base).map(|c| StoreBackend::Redis(Box::new(c))),
        (other, _) => Err(Invalid {
            span: backend.as_ref().map_or(0..0, Spanned::span),
            message: format!("store.backend `{other}`: expected \"sled\" or \"redis\""),
        }),
    }
}

fn redis_config(section: Spanned<file::RedisSection>, base: &Path) -> Result<RedisConfig, Invalid> {
    let span = section.span();
    let section = section.into_inner();
    let target =
        match (section.url, section.sentinels, section.master_name) {
            (Some(url), None, None) => {
                check_redis_url(url.get_ref()).map_err(|message| Invalid::at(&url, message))?;
                RedisTarget::Url(url.into_inner())
            }
            (None, Some(sentinels), Some(master_name)) if !sentinels.is_empty() => {
                for url in &sentinels {
                    check_redis_url(url.get_ref()).map_err(|message| Invalid::at(url, message))?;
                }
                RedisTarget::Sentinel {
                    sentinels: sentinels.into_iter().map(Spanned::into_inner).collect(),
                    master_name: master_name.into_inner(),
                    tls: section.sentinel_tls.unwrap_or(false),
                }
            }
            _ => return Err(Invalid {
                span,
                message:
                    "[store.redis] needs either `url`, or `sentinels` (a non-empty list) with `master_name`"
                        .into(),
            }),
        };
    let key_prefix = match section.key_prefix {
        None => "gatehouse:".to_owned(),
        Some(prefix) => {
            let valid = !prefix.get_ref().is_empty()
                && prefix.get_ref().len() <= 64
                && prefix.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b":_-.{}/".contains(&b));
            if !valid {
                return Err(Invalid::at(
                    &prefix,
                    "store.redis.key_prefix must be 1 to 64 letters, digits or `:_-.{}/`",
                ));
            }
            prefix.into_inner()
        }
    };
    let pool_size = match section.pool_size {
        Some(size) if !(1..=64).contains(size.get_ref()) => {
            return Err(Invalid::at(&size, "store.redis.pool_size must be between 1 and 64"))
        }
        Some(size) => size.into_inner(),
        None => 4,
    };
    if let Some(db) = section.db.as_ref().filter(|db| *db.get_ref() < 0) {
        return Err(Invalid::at(db, "store.redis.db must be 0 or more"));
    }
    let db = section.db.map(Spanned::into_inner);
    let when_unreachable = match section.when_unreachable {
        None => WhenUnreachable::FailClosed,
        Some(choice) => match choice.get_ref().as_str() {
            "fail_closed" => WhenUnreachable::FailClosed,
            "fail_open" => WhenUnreachable::FailOpen,
            other => {
                return Err(Invalid::at(
                    &choice,
                    format!(
                        "store.redis.when_unreachable `{other}`: expected \"fail_closed\" or \"fail_open\""
                    ),
                ))
            }
        },
    };
    let positive = |value: Option<Spanned<String>>, default: Duration, key: &str| {
        let span = value.as_ref().map_or(0..0, Spanned::span);
        let duration = duration_or(value, default)?;
        if duration.is_zero() {
            return Err(Invalid { span, message: format!("store.redis.{key} must be longer than zero") });
        }
        Ok(duration)
    };
    let password = match (section.password_env, section.password_file) {
        (None, None) => None,
        (env, file) => Some(secret_source(env, file, "", base, "redis password")),
    };
    let command_timeout = positive(section.command_timeout, Duration::from_millis(500), "command_timeout")?;
    let wait_span = section.wait_timeout.as_ref().map_or(span.clone(), Spanned::span);
    let wait_timeout = positive(section.wait_timeout, Duration::from_millis(250), "wait_timeout")?;
    let wait_replicas = section.wait_replicas.unwrap_or(0);
    if wait_replicas > 0 && wait_timeout >= command_timeout {
        return Err(Invalid {
            span: wait_span,
            message: "store.redis.wait_timeout must be shorter than command_timeout: WAIT is one command"
                .into(),
        });
    }
    Ok(RedisConfig {
        target,
        db,
        username: section.username,
        password,
        tls_ca_file: section.tls_ca_file.map(|f| base.join(f)),
        key_prefix,
        pool_size,
        connect_timeout: positive(section.connect_timeout, Duration::from_secs(1), "connect_timeout")?,
        command_timeout,
        when_unreachable,
        wait_replicas,
        wait_timeout,
    })
}

/// Why a Redis address can't be used, if it can't: it must be a URL with a
/// scheme redis-rs speaks, and must not carry a password (before the host,
/// or `?pass=` on a socket URL): it would end up in logs, `ps` output and
/// error messages. The address itself is never echoed, for the same reason.
pub fn check_redis_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text)
        .map_err(|e| format!("the redis address is not a URL like redis://127.0.0.1:6379/0 ({e})"))?;
    let scheme = url.scheme();
    if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
        return Err(format!(
            "redis URL scheme `{scheme}`: expected redis://, rediss:// (TLS) or redis+unix://"
        ));
    }
    if url.password().is_some() || url.query_pairs().any(|(name, _)| name == "pass") {
        return Err(
            "put the redis password in store.redis.password_env or password_file, not in the URL".into()
        );
    }
    Ok(())
}

fn secret_source(
    env: Option<String>,
    file: Option<String>,
    default_env: &str,
    base: &Path,
    purpose: &'static str,
) -> SecretSource {
    let file = file.map(|f| base.join(f));
    let env = match (&env, &file) {
        (None, None) => Some(default_env.to_owned()),
        _ => env,
    };
    SecretSource { env, file, purpose }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[upstream]
addresses = ["127.0.0.1:8000"]

[tokens]
access_ttl = "15m"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/gatehouse/test.toml"))
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.tokens.secret.env.as_deref(), Some("GATEHOUSE_JWT_SECRET"));
        assert!(!c.upstream.pass_authorization);
        assert_eq!(c.upstream.identity_prefix, "x-auth-");
        assert!(
            matches!(&c.store.backend, StoreBackend::Sled { path } if path == Path::new("/etc/gatehouse/gatehouse-data"))
        );
        assert_eq!(c.routes.lookup(&http::Method::GET, "/x").rule.policy, Policy::Deny);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a\"\npolicy = \"anyone\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!((err.line, err.column), (10, 10), "{err}");
        assert!(err.message.contains("unknown policy `anyone`"), "{err}");

        let err = parse("[upstream]\naddresses = [\"localhost\"]\n[tokens]\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 14), "{err}");

        let err = parse("[upstream]\naddresses = [\"127.0.0.1:1\"]\n[tokens]\nbogus = 1\n").unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert!(err.to_string().starts_with("/etc/gatehouse/test.toml:4:"), "{err}");
    }

    #[test]
    fn bad_durations_and_patterns_are_refused() {
        assert!(parse(&MINIMAL.replace("15m", "fifteen")).is_err());
        let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a/**/b\"\npolicy = \"any\"\n");
        assert!(parse(&text).unwrap_err().message.contains("**"));
        let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a\"\npolicy = \"any\"\nfresh = true\n");
        assert!(parse(&text).unwrap_err().message.contains("only applies to admin"));
    }

    #[test]
    fn secrets_are_checked_for_length_and_hidden_from_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let source = SecretSource { env: None, file: Some(path.clone()), purpose: "token signing secret" };
        assert!(matches!(source.load(), Err(SecretError::Unreadable { .. })));
        std::fs::write(&path, "short\n").unwrap();
        let err = source.load().unwrap_err().to_string();
        assert!(err.contains("at least 32") && err.contains("/dev/urandom"), "{err}");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let secret = source.load().unwrap();
        assert_eq!(secret.expose().len(), 32);
        assert!(!format!("{secret:?}").contains("0123"));
    }

    #[test]
    fn the_redis_store_is_validated() {
        let with = |store: &str| parse(&format!("{MINIMAL}\n[store]\n{store}\n"));
        let c = with("backend = \"redis\"\n[store.redis]\nurl = \"redis://127.0.0.1:6379/0\"").unwrap();
        let StoreBackend::Redis(redis) = &c.store.backend else { panic!("not redis") };
        assert_eq!(redis.target, RedisTarget::Url("redis://127.0.0.1:6379/0".into()));
        assert_eq!((redis.key_prefix.as_str(), redis.pool_size), ("gatehouse:", 4));
        assert_eq!(redis.when_unreachable, WhenUnreachable::FailClosed);
        assert!(redis.password.is_none());

        let sentinel = "backend = \"redis\"\n[store.redis]\nsentinels = [\"redis://10.0.0.1:26379\"]\nmaster_name = \"gh\"";
        let c = with(sentinel).unwrap();
        let StoreBackend::Redis(redis) = &c.store.backend else { panic!("not redis") };
        assert!(matches!(&redis.target, RedisTarget::Sentinel { master_name, .. } if master_name == "gh"));

        for (store, complaint) in [
            ("backend = \"redis\"", "needs a [store.redis] section"),
            ("backend = \"etcd\"", "expected \"sled\" or \"redis\""),
            ("[store.redis]\nurl = \"redis://h:1\"", "store.backend is not \"redis\""),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://:hunter2@h:1/0\"", "not in the URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://u:hunter2@h:1/0\"", "not in the URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis+unix:///r.sock?pass=hunter2\"", "not in the URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"hunter2@h:1\"", "not a URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"http://h:1\"", "expected redis://"),
            ("backend = \"redis\"\n[store.redis]\nsentinels = [\"redis://h:1\"]", "`master_name`"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\nkey_prefix = \"a*\"", "key_prefix"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\nwhen_unreachable = \"open\"", "fail_open"),
            (
                "backend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\nwait_replicas = 1\nwait_timeout = \"1s\"",
                "shorter than command_timeout",
            ),
        ] {
            let err = with(store).unwrap_err();
            assert!(err.message.contains(complaint), "{store}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
