//! `[endpoints]`: the paths and body limits of the endpoints the gateway
//! answers itself. Their paths must be plain so they can't overlap routes in
//! surprising ways.

use std::time::Duration;

use toml::Spanned;

use super::file;
use super::values::{bounded, duration_within, Invalid};

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

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            register: "/register".to_owned(),
            login: "/login".to_owned(),
            refresh: "/refresh".to_owned(),
            logout: "/logout".to_owned(),
            users: "/user".to_owned(),
            jwks: "/.well-known/jwks.json".to_owned(),
            allow_registration: true,
            max_body_bytes: 16 * 1024,
            body_timeout: Duration::from_secs(10),
        }
    }
}

impl EndpointConfig {
    pub(super) fn from_file(section: file::EndpointsSection) -> Result<Self, Invalid> {
        let defaults = EndpointConfig::default();
        Ok(EndpointConfig {
            register: endpoint(section.register, defaults.register)?,
            login: endpoint(section.login, defaults.login)?,
            refresh: endpoint(section.refresh, defaults.refresh)?,
            logout: endpoint(section.logout, defaults.logout)?,
            users: endpoint(section.users, defaults.users)?,
            jwks: endpoint(section.jwks, defaults.jwks)?,
            allow_registration: section.allow_registration.unwrap_or(defaults.allow_registration),
            max_body_bytes: bounded(
                section.max_body_bytes,
                defaults.max_body_bytes,
                1..=1024 * 1024,
                "endpoints.max_body_bytes",
            )?,
            body_timeout: duration_within(
                section.body_timeout,
                defaults.body_timeout,
                Duration::from_millis(100)..=Duration::from_secs(300),
                "endpoints.body_timeout",
            )?,
        })
    }
}

fn endpoint(value: Option<Spanned<String>>, default: String) -> Result<String, Invalid> {
    match value {
        Some(v) if !v.get_ref().starts_with('/') || v.get_ref().len() < 2 || v.get_ref().ends_with('/') => {
            Err(Invalid::at(&v, "endpoint paths start with `/` and do not end with one, e.g. \"/login\""))
        }
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}
