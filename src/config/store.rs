//! `[store]` and `[store.redis]`: where users, revocations and (with Redis)
//! login limits live. The Redis defaults are written once, in
//! `RedisConfig::with_target`, and shared by the config file and by
//! `gatehouse migrate`, which may run without one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::file::{self, Backend};
use super::values::{bounded, positive_duration, Invalid};
use super::SecretSource;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://`.
    Url(String),
    /// Ask these Sentinels for the current master of `master_name`.
    Sentinel { sentinels: Vec<String>, master_name: String, tls: bool },
}

/// What proxied requests get while Redis can't be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnreachable {
    /// 503 `store_unavailable`: nothing is allowed that might have been revoked.
    FailClosed,
    /// Tokens are checked against this gateway's last copy of the revocation
    /// list and its cached accounts; anything it can't check is refused.
    FailOpen,
}

/// The sled data directory when `store.path` is not given (relative to the config file).
const SLED_PATH: &str = "gatehouse-data";

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled { path: PathBuf::from(SLED_PATH) },
            purge_interval: Duration::from_secs(600),
        }
    }
}

impl StoreConfig {
    pub(super) fn from_file(section: file::StoreSection, base: &Path) -> Result<Self, Invalid> {
        let defaults = StoreConfig::default();
        let purge_interval = positive_duration(
            section.purge_interval,
            defaults.purge_interval,
            "store.purge_interval must be longer than zero",
        )?;
        let backend = match (&section.backend, section.redis) {
            (Some(backend), None) if backend.get_ref().0 == Backend::Redis => Err(Invalid::at(
                backend,
                "store.backend = \"redis\" needs a [store.redis] section with `url` or `sentinels`",
            )),
            (Some(backend), Some(redis)) if backend.get_ref().0 == Backend::Redis => {
                RedisConfig::from_file(redis, base).map(|c| StoreBackend::Redis(Box::new(c)))
            }
            (_, Some(redis)) => {
                Err(Invalid::at(&redis, "[store.redis] is set but store.backend is not \"redis\""))
            }
            (_, None) => {
                Ok(StoreBackend::Sled { path: base.join(section.path.as_deref().unwrap_or(SLED_PATH)) })
            }
        }?;
        Ok(StoreConfig { backend, purge_interval })
    }
}

impl RedisConfig {
    /// The defaults for one Redis server at `url`.
    pub fn for_url(url: &str) -> RedisConfig {
        RedisConfig::with_target(RedisTarget::Url(url.to_owned()))
    }

    /// The defaults of every `[store.redis]` key but the address.
    fn with_target(target: RedisTarget) -> RedisConfig {
        RedisConfig {
            target,
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

    fn from_file(section: Spanned<file::RedisSection>, base: &Path) -> Result<Self, Invalid> {
        let span = section.span();
        let section = section.into_inner();
        let target = redis_target(section.url, section.sentinels, section.master_name, section.sentinel_tls)
            .ok_or_else(|| Invalid {
                span: span.clone(),
                message:
                    "[store.redis] needs either `url`, or `sentinels` (a non-empty list) with `master_name`"
                        .into(),
            })??;
        let defaults = RedisConfig::with_target(target);
        let key_prefix = match section.key_prefix {
            Some(prefix) => key_prefix(prefix)?,
            None => defaults.key_prefix,
        };
        let pool_size = bounded(section.pool_size, defaults.pool_size, 1..=64, "store.redis.pool_size")?;
        if let Some(db) = section.db.as_ref().filter(|db| *db.get_ref() < 0) {
            return Err(Invalid::at(db, "store.redis.db must be 0 or more"));
        }
        let positive = |value: Option<Spanned<String>>, default: Duration, key: &str| {
            positive_duration(value, default, &format!("store.redis.{key} must be longer than zero"))
        };
        let connect_timeout = positive(section.connect_timeout, defaults.connect_timeout, "connect_timeout")?;
        let command_timeout = positive(section.command_timeout, defaults.command_timeout, "command_timeout")?;
        let wait_span = section.wait_timeout.as_ref().map_or(span, Spanned::span);
        let wait_timeout = positive(section.wait_timeout, defaults.wait_timeout, "wait_timeout")?;
        let wait_replicas = section.wait_replicas.unwrap_or(defaults.wait_replicas);
        if wait_replicas > 0 && wait_timeout >= command_timeout {
            return Err(Invalid {
                span: wait_span,
                message: "store.redis.wait_timeout must be shorter than command_timeout: WAIT is one command"
                    .into(),
            });
        }
        Ok(RedisConfig {
            target: defaults.target,
            db: section.db.map(Spanned::into_inner),
            username: section.username,
            password: SecretSource::named(
                section.password_env,
                section.password_file,
                base,
                "redis password",
            ),
            tls_ca_file: section.tls_ca_file.map(|f| base.join(f)),
            key_prefix,
            pool_size,
            connect_timeout,
            command_timeout,
            when_unreachable: section.when_unreachable.map_or(defaults.when_unreachable, |word| word.0),
            wait_replicas,
            wait_timeout,
        })
    }
}

/// One Redis server, or Sentinels and the master they watch; `None` if the
/// section names neither (or both).
fn redis_target(
    url: Option<Spanned<String>>,
    sentinels: Option<Vec<Spanned<String>>>,
    master_name: Option<Spanned<String>>,
    sentinel_tls: Option<bool>,
) -> Option<Result<RedisTarget, Invalid>> {
    let checked =
        |url: &Spanned<String>| check_redis_url(url.get_ref()).map_err(|e| Invalid::at(url, e.to_string()));
    match (url, sentinels, master_name) {
        (Some(url), None, None) => Some(checked(&url).map(|()| RedisTarget::Url(url.into_inner()))),
        (None, Some(sentinels), Some(master_name)) if !sentinels.is_empty() => {
            Some(sentinels.iter().try_for_each(checked).map(|()| RedisTarget::Sentinel {
                sentinels: sentinels.into_iter().map(Spanned::into_inner).collect(),
                master_name: master_name.into_inner(),
                tls: sentinel_tls.unwrap_or(false),
            }))
        }
        _ => None,
    }
}

fn key_prefix(prefix: Spanned<String>) -> Result<String, Invalid> {
    let text = prefix.get_ref();
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b":_-.{}/".contains(&b));
    if !valid {
        return Err(Invalid::at(
            &prefix,
            "store.redis.key_prefix must be 1 to 64 letters, digits or `:_-.{}/`",
        ));
    }
    Ok(prefix.into_inner())
}

/// Why a Redis address can't be used. The address itself is never echoed:
/// it could carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    #[error("the redis address is not a URL like redis://127.0.0.1:6379/0 ({0})")]
    NotUrl(#[from] url::ParseError),
    #[error("redis URL scheme `{0}`: expected redis://, rediss:// (TLS) or redis+unix://")]
    Scheme(String),
    #[error("put the redis password in store.redis.password_env or password_file, not in the URL")]
    Password,
}

/// Why a Redis address can't be used, if it can't: it must be a URL with a
/// scheme redis-rs speaks, and must not carry a password (before the host,
/// or `?pass=` on a socket URL): it would end up in logs, `ps` output and
/// error messages.
pub fn check_redis_url(text: &str) -> Result<(), RedisUrlError> {
    let url = url::Url::parse(text)?;
    let scheme = url.scheme();
    if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
        return Err(RedisUrlError::Scheme(scheme.to_owned()));
    }
    if url.password().is_some() || url.query_pairs().any(|(name, _)| name == "pass") {
        return Err(RedisUrlError::Password);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_errors_never_echo_the_address() {
        let message = |url: &str| check_redis_url(url).unwrap_err().to_string();
        assert_eq!(
            message("not a url"),
            "the redis address is not a URL like redis://127.0.0.1:6379/0 (relative URL without a base)"
        );
        assert_eq!(
            message("http://127.0.0.1:6379"),
            "redis URL scheme `http`: expected redis://, rediss:// (TLS) or redis+unix://"
        );
        for url in ["redis://:hunter2@127.0.0.1:6379", "redis+unix:///tmp/redis.sock?pass=hunter2"] {
            assert_eq!(
                message(url),
                "put the redis password in store.redis.password_env or password_file, not in the URL"
            );
        }
        assert!(check_redis_url("redis://127.0.0.1:6379/0").is_ok());
    }
}
