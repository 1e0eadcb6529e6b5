//! `[admin]`: the operator API's listener and the token that guards it. The
//! token itself is never in the file (see [`super::SecretSource`]).

use std::net::SocketAddr;
use std::path::Path;

use super::file;
use super::values::{socket_addr, Invalid};
use super::SecretSource;

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretSource,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: SecretSource::env("GATEHOUSE_ADMIN_TOKEN", "admin API token"),
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
        })
    }
}
