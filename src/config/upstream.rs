//! `[upstream]`: where allowed requests go, how they are spread and checked,
//! and what the gateway tells the upstream about the caller. Reloaded on
//! SIGHUP together with the routes, so it must validate on its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// What the gateway speaks to the upstream.
    pub protocol: UpstreamProtocol,
    /// TLS to the upstream, if on.
    pub tls: Option<UpstreamTls>,
}

/// `upstream.protocol`: HTTP/1.1, HTTP/2 over TLS, or cleartext HTTP/2 with
/// prior knowledge (what gRPC servers inside a cluster speak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    Http1,
    H2,
    H2c,
}

/// `upstream.tls`: the name the upstream's certificate must carry (also
/// sent as SNI; the addresses are IPs) and, optionally, the CA bundle that
/// signs it instead of the system's roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub server_name: String,
    pub ca_file: Option<PathBuf>,
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
            protocol: UpstreamProtocol::Http1,
            tls: None,
        }
    }
}

impl UpstreamConfig {
    pub(super) fn from_file(section: Spanned<file::UpstreamSection>, base: &Path) -> Result<Self, Invalid> {
        let defaults = UpstreamConfig::default();
        if section.get_ref().addresses.is_empty() {
            return Err(Invalid::at(&section, "upstream.addresses must name at least one upstream"));
        }
        let span = section.span();
        let section = section.into_inner();
        let (protocol, tls) = transport(&section, span, base)?;
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
            protocol,
            tls,
        })
    }
}

/// `protocol` with `tls`, `tls_server_name` and `tls_ca_file`: `h2` is
/// HTTP/2 as negotiated over TLS, so it needs `tls = true`; `h2c` is
/// cleartext, so it refuses it; TLS needs the name to verify.
fn transport(
    section: &file::UpstreamSection,
    span: std::ops::Range<usize>,
    base: &Path,
) -> Result<(UpstreamProtocol, Option<UpstreamTls>), Invalid> {
    let protocol = section.protocol.as_ref().map_or(UpstreamProtocol::Http1, |p| p.get_ref().0);
    let tls = section.tls.unwrap_or(false);
    let refuse = |message: &str| match &section.protocol {
        Some(p) => Invalid::at(p, message),
        None => Invalid { span: span.clone(), message: message.to_owned() },
    };
    match protocol {
        UpstreamProtocol::H2 if !tls => {
            return Err(refuse("upstream.protocol = \"h2\" is HTTP/2 over TLS: set upstream.tls = true (or use \"h2c\" for cleartext)"))
        }
        UpstreamProtocol::H2c if tls => {
            return Err(refuse("upstream.protocol = \"h2c\" is cleartext HTTP/2: with upstream.tls = true use \"h2\""))
        }
        _ => {}
    }
    if !tls {
        if let Some(name) = section.tls_server_name.as_ref().or(section.tls_ca_file.as_ref()) {
            return Err(Invalid::at(
                name,
                "upstream.tls_server_name and tls_ca_file need upstream.tls = true",
            ));
        }
        return Ok((protocol, None));
    }
    let server_name = match &section.tls_server_name {
        // What rustls will parse on every connection: a DNS name or an IP
        // address, no port or userinfo, refused here rather than as 502s.
        Some(name) if rustls_pki_types::ServerName::try_from(name.get_ref().as_str()).is_ok() => {
            name.get_ref().clone()
        }
        Some(name) => return Err(Invalid::at(name, "upstream.tls_server_name must be a host name, e.g. \"api.internal\"")),
        None => {
            return Err(Invalid {
                span,
                message: "upstream.tls = true needs upstream.tls_server_name: the name the upstream's certificate carries".into(),
            })
        }
    };
    let ca_file = section.tls_ca_file.as_ref().map(|file| base.join(file.get_ref()));
    Ok((protocol, Some(UpstreamTls { server_name, ca_file })))
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
