//! `[server]`: the proxy's listeners, TLS, process lifecycle and the rules
//! that make client requests canonical. It is also the one place pingora's
//! own [`ServerConf`] is derived from, so the gateway's threads, grace
//! periods and upgrade socket can only be set through this file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "server")]
use pingora::server::configuration::ServerConf;
use toml::Spanned;

use super::file;
use super::values::{at_least_one, duration_or, duration_within, socket_addrs, Invalid};
use crate::request::{MethodOverride, TrustedProxies, UnderscoreHeaders};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsConfig>,
    /// The plain listeners also accept cleartext HTTP/2 with prior knowledge
    /// (told apart from HTTP/1.1 by its connection preface).
    pub h2c: bool,
    /// Where a running gateway hands its sockets to its replacement (`serve --upgrade`).
    pub upgrade_socket: PathBuf,
    /// How client requests are made canonical before they are judged.
    pub requests: RequestRules,
}

/// The request-integrity settings of `[server]` (see [`crate::request`]).
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Peers whose `X-Forwarded-For` (and `-Proto`, `-Host`) are believed.
    pub trusted_proxies: TrustedProxies,
    /// Also send an RFC 7239 `Forwarded` header upstream.
    pub forwarded_header: bool,
    pub underscore_headers: UnderscoreHeaders,
    pub method_override: MethodOverride,
    /// Longest a client may take to send a whole request header section.
    pub header_timeout: Duration,
}

/// TLS termination: extra listeners with a certificate chain and key (PEM).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The protocols ALPN offers, in order of preference.
    pub alpn: Alpn,
}

/// `server.tls_alpn`: what TLS clients may negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `["h2", "http/1.1"]`: HTTP/2 preferred, HTTP/1.1 for clients without it.
    H2AndHttp1,
    /// `["http/1.1"]`.
    Http1Only,
    /// `["h2"]`: clients that can't speak HTTP/2 fail the handshake.
    H2Only,
}

impl Alpn {
    fn from_file(list: &Spanned<Vec<Spanned<String>>>) -> Result<Alpn, Invalid> {
        let names: Vec<&str> = list.get_ref().iter().map(|n| n.get_ref().as_str()).collect();
        match names.as_slice() {
            ["h2", "http/1.1"] => Ok(Alpn::H2AndHttp1),
            ["http/1.1"] => Ok(Alpn::Http1Only),
            ["h2"] => Ok(Alpn::H2Only),
            _ => Err(Invalid::at(
                list,
                "server.tls_alpn must be [\"h2\", \"http/1.1\"], [\"http/1.1\"] or [\"h2\"]",
            )),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            threads: 1,
            grace_period: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            tls: None,
            h2c: false,
            upgrade_socket: PathBuf::from("gatehouse-upgrade.sock"),
            requests: RequestRules::default(),
        }
    }
}

impl Default for RequestRules {
    fn default() -> Self {
        RequestRules {
            trusted_proxies: TrustedProxies::default(),
            forwarded_header: false,
            underscore_headers: UnderscoreHeaders::default(),
            method_override: MethodOverride::default(),
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Validates `[server]`; relative paths are relative to `base`.
    pub(super) fn from_file(section: file::ServerSection, base: &Path) -> Result<Self, Invalid> {
        let defaults = ServerConfig::default();
        let listen = match section.listen {
            Some(list) if list.get_ref().is_empty() => {
                return Err(Invalid::at(&list, "server.listen must name at least one address"))
            }
            Some(list) => socket_addrs(list.get_ref())?,
            None => defaults.listen,
        };
        let threads = at_least_one(section.threads, defaults.threads, "server.threads")?;
        let mut tls = TlsConfig::from_file(section.tls_listen, section.tls_cert, section.tls_key, base)?;
        if let Some(list) = &section.tls_alpn {
            match tls.as_mut() {
                Some(tls) => tls.alpn = Alpn::from_file(list)?,
                None => {
                    return Err(Invalid::at(list, "server.tls_alpn needs TLS listeners (server.tls_listen)"))
                }
            }
        }
        let upgrade_socket = section.upgrade_socket.map_or(defaults.upgrade_socket, PathBuf::from);
        Ok(ServerConfig {
            listen,
            threads,
            grace_period: whole_seconds(section.grace_period, defaults.grace_period, "server.grace_period")?,
            shutdown_timeout: whole_seconds(
                section.shutdown_timeout,
                defaults.shutdown_timeout,
                "server.shutdown_timeout",
            )?,
            tls,
            h2c: section.h2c.unwrap_or(defaults.h2c),
            upgrade_socket: base.join(upgrade_socket),
            requests: RequestRules::from_file(
                section.trusted_proxies,
                section.forwarded_header,
                section.underscore_headers,
                section.method_override,
                section.header_timeout,
            )?,
        })
    }

    /// Pingora's own server settings, derived from this section alone.
    #[cfg(feature = "server")]
    pub fn pingora_server_conf(&self) -> ServerConf {
        ServerConf {
            threads: self.threads,
            grace_period_seconds: Some(self.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(self.shutdown_timeout.as_secs()),
            upgrade_sock: self.upgrade_socket.display().to_string(),
            ..ServerConf::default()
        }
    }
}

impl TlsConfig {
    /// TLS is off, or all three keys are given.
    fn from_file(
        listen: Option<Spanned<Vec<Spanned<String>>>>,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
        base: &Path,
    ) -> Result<Option<TlsConfig>, Invalid> {
        const INCOMPLETE: &str = "TLS needs all of server.tls_listen, server.tls_cert and server.tls_key";
        match (listen, cert, key) {
            (None, None, None) => Ok(None),
            (Some(list), Some(cert), Some(key)) if !list.get_ref().is_empty() => Ok(Some(TlsConfig {
                listen: socket_addrs(list.get_ref())?,
                cert: base.join(cert.get_ref()),
                key: base.join(key.get_ref()),
                alpn: Alpn::H2AndHttp1,
            })),
            // Point at the first TLS key the file does have.
            (Some(list), _, _) => Err(Invalid::at(&list, INCOMPLETE)),
            (None, Some(cert), _) => Err(Invalid::at(&cert, INCOMPLETE)),
            (None, None, Some(key)) => Err(Invalid::at(&key, INCOMPLETE)),
        }
    }
}

impl RequestRules {
    fn from_file(
        trusted_proxies: Option<Vec<Spanned<String>>>,
        forwarded_header: Option<bool>,
        underscore_headers: Option<UnderscoreHeaders>,
        method_override: Option<MethodOverride>,
        header_timeout: Option<Spanned<String>>,
    ) -> Result<Self, Invalid> {
        let defaults = RequestRules::default();
        Ok(RequestRules {
            trusted_proxies: match trusted_proxies {
                Some(entries) => trusted_proxy_list(&entries)?,
                None => defaults.trusted_proxies,
            },
            forwarded_header: forwarded_header.unwrap_or(defaults.forwarded_header),
            underscore_headers: underscore_headers.unwrap_or(defaults.underscore_headers),
            method_override: method_override.unwrap_or(defaults.method_override),
            header_timeout: duration_within(
                header_timeout,
                defaults.header_timeout,
                Duration::from_millis(100)..=Duration::from_secs(300),
                "server.header_timeout",
            )?,
        })
    }
}

/// A duration pingora counts in whole seconds: `"100ms"` would silently be
/// 0 s, so it is refused at its line instead.
fn whole_seconds(value: Option<Spanned<String>>, default: Duration, key: &str) -> Result<Duration, Invalid> {
    let duration = duration_or(value.clone(), default)?;
    match value {
        Some(v) if duration.subsec_nanos() != 0 => Err(Invalid::at(
            &v,
            format!(
                "{key} must be whole seconds (pingora counts seconds), e.g. \"1s\" rather than \"{}\"",
                v.get_ref()
            ),
        )),
        _ => Ok(duration),
    }
}

/// CIDR blocks (`10.0.0.0/8`) or single addresses (`127.0.0.1`, `::1`).
fn trusted_proxy_list(entries: &[Spanned<String>]) -> Result<TrustedProxies, Invalid> {
    let mut networks = Vec::with_capacity(entries.len());
    for entry in entries {
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
    Ok(TrustedProxies::new(networks))
}
