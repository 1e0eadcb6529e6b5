//! `[upstream]`: where allowed requests go, how they are spread and checked,
//! and what the gateway tells the upstream about the caller. Reloaded on
//! SIGHUP together with the routes, so it must validate on its own.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::file::{self, HealthCheck};
use super::values::{duration_or, duration_within, socket_addrs, Invalid};

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

/// How requests are spread over the upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
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

/// The path of `health_check = "http"` when `health_check_path` is not given.
const HEALTH_CHECK_PATH: &str = "/healthz";

/// Everything but `addresses`, which the file must give.
impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            addresses: Vec::new(),
            pass_authorization: false,
            identity_prefix: "x-auth-".to_owned(),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            selection: Selection::RoundRobin,
            health_check: HealthCheckKind::Tcp,
            health_check_interval: Duration::from_secs(5),
            name: "upstream".to_owned(),
            assertion: false,
            assertion_ttl: Duration::from_secs(30),
            websocket_close_at_expiry: true,
            websocket_max_duration: Duration::from_secs(24 * 3600),
        }
    }
}

impl UpstreamConfig {
    pub(super) fn from_file(section: Spanned<file::UpstreamSection>) -> Result<Self, Invalid> {
        let defaults = UpstreamConfig::default();
        if section.get_ref().addresses.is_empty() {
            return Err(Invalid::at(&section, "upstream.addresses must name at least one upstream"));
        }
        let section = section.into_inner();
        let identity_prefix = match section.identity_header_prefix {
            Some(prefix) => identity_prefix(&prefix)?,
            None => defaults.identity_prefix,
        };
        let health_check = match section.health_check.map(|word| word.0) {
            None => defaults.health_check,
            Some(HealthCheck::None) => HealthCheckKind::None,
            Some(HealthCheck::Tcp) => HealthCheckKind::Tcp,
            Some(HealthCheck::Http) => HealthCheckKind::Http {
                path: section.health_check_path.unwrap_or_else(|| HEALTH_CHECK_PATH.to_owned()),
            },
        };
        let assertion_ttl = match section.assertion_ttl {
            Some(ttl) => assertion_ttl(ttl)?,
            None => defaults.assertion_ttl,
        };
        Ok(UpstreamConfig {
            addresses: socket_addrs(&section.addresses)?,
            pass_authorization: section.pass_authorization.unwrap_or(defaults.pass_authorization),
            identity_prefix,
            connect_timeout: duration_or(section.connect_timeout, defaults.connect_timeout)?,
            read_timeout: duration_or(section.read_timeout, defaults.read_timeout)?,
            selection: section.selection.map_or(defaults.selection, |word| word.0),
            health_check,
            health_check_interval: duration_or(
                section.health_check_interval,
                defaults.health_check_interval,
            )?,
            name: section.name.unwrap_or(defaults.name),
            assertion: section.assertion.unwrap_or(defaults.assertion),
            assertion_ttl,
            websocket_close_at_expiry: section
                .websocket_close_at_expiry
                .unwrap_or(defaults.websocket_close_at_expiry),
            websocket_max_duration: duration_within(
                section.websocket_max_duration,
                defaults.websocket_max_duration,
                Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600),
                "upstream.websocket_max_duration",
            )?,
        })
    }
}

/// Header names are case-insensitive; the prefix is kept lower-case.
fn identity_prefix(prefix: &Spanned<String>) -> Result<String, Invalid> {
    let value = prefix.get_ref();
    if value.len() < 2 || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Invalid::at(
            prefix,
            "upstream.identity_header_prefix must be letters, digits and `-`, e.g. \"X-Auth-\"",
        ));
    }
    Ok(value.to_ascii_lowercase())
}

fn assertion_ttl(value: Spanned<String>) -> Result<Duration, Invalid> {
    let ttl = duration_or(Some(value.clone()), Duration::ZERO)?;
    if ttl.is_zero() || ttl > Duration::from_secs(60) {
        return Err(Invalid::at(&value, "upstream.assertion_ttl must be between 1s and 60s"));
    }
    Ok(ttl)
}
