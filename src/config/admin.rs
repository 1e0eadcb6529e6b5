//! `[admin]`: the operator API's listener and the token that guards it. The
//! token itself is never in the file (see [`super::SecretSource`]).

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::file;
use super::values::{socket_addr, Invalid};
use super::SecretSource;

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretSource,
    /// Where the admin listener serves the OpenAPI document
    /// ([`crate::openapi`]); `None` when `admin.openapi = "off"`.
    pub openapi: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: SecretSource::env("GATEHOUSE_ADMIN_TOKEN", "admin API token"),
            openapi: Some(crate::openapi::DEFAULT_PATH.to_owned()),
        }
    }
}

impl AdminConfig {
    pub(super) fn from_file(section: file::AdminSection, base: &Path) -> Result<Self, Invalid> {
        let defaults = AdminConfig::default();
        Ok(AdminConfig {
            listen: match &section.listen {
                Some(addr) => socket_addr(addr)?,
                None => defaults.listen,
            },
            token: SecretSource::named(section.token_env, section.token_file, base, defaults.token.purpose)
                .unwrap_or(defaults.token),
            openapi: match section.openapi {
                None => defaults.openapi,
                Some(path) => openapi_path(path)?,
            },
        })
    }
}

/// `admin.openapi`: a plain path of its own on the admin listener, or `"off"`.
fn openapi_path(value: Spanned<String>) -> Result<Option<String>, Invalid> {
    let path = value.get_ref();
    if path == "off" {
        return Ok(None);
    }
    let plain = path.len() > 1
        && path.starts_with('/')
        && !path.ends_with('/')
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    let taken = ["/healthz", "/readyz", "/metrics", "/admin"].iter().any(|p| path == p)
        || path.starts_with("/admin/");
    if !plain || taken {
        return Err(Invalid::at(
            &value,
            "admin.openapi is a path such as \"/openapi.json\" (not /healthz, /readyz, /metrics or under /admin/), or \"off\"",
        ));
    }
    Ok(Some(value.into_inner()))
}
