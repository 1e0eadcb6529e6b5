//! Why a command failed: the one type every command returns, which `run`
//! prints as `gatehouse: <message>` before exiting with a failure code.
//!
//! Domain errors are wrapped as they are, so their wording is the one the
//! domain chose; the variants of its own are the CLI's: its arguments, its
//! terminal, and how it reaches the store. A refusal by an admin operation is
//! worded by [`ApiError`], as the same refusal over HTTP is.

use crate::config::{ConfigError, RedisUrlError, SecretError};
use crate::error::ApiError;
use crate::passwords::PasswordConfigError;
use crate::startup::StartupError;
use crate::store::migrate::MigrateError;
use crate::store::StoreError;
use crate::tokens::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    RedisUrl(#[from] RedisUrlError),
    #[error(transparent)]
    Passwords(#[from] PasswordConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// An argument out of its allowed form; the message says which.
    #[error("{0}")]
    Usage(&'static str),
    /// An argument's value was refused; the message names it and why.
    #[error(transparent)]
    InvalidRole(#[from] crate::roles::InvalidRole),
    #[error("{path} is in use: stop the gateway first (or migrate a copy)")]
    MigrateLocked { path: String },
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot use the redis store: {0}")]
    Redis(StoreError),
    #[error(
        "the store at {path} is held by a running gateway, and its admin API needs the admin token: {source}"
    )]
    AdminToken { path: String, source: SecretError },
    /// The HTTP client could not be built, or an answer not read.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the store is in use by another process, and no gateway admin API answers at {base}: {source}")]
    NoAdminApi { base: String, source: reqwest::Error },
    #[error("unexpected answer ({status}): {source}")]
    UnexpectedAnswer { status: http::StatusCode, source: serde_json::Error },
    /// An operation's request body could not be encoded.
    #[error(transparent)]
    Body(#[from] serde_json::Error),
    /// An admin operation run in-process refused.
    #[error("{}", .0.message())]
    Refused(ApiError),
    /// The gateway's admin API refused, in these words (or none).
    #[error("{}", .0.as_deref().unwrap_or("the operation failed"))]
    RemoteRefused(Option<String>),
    #[error("no such user")]
    NoSuchUser,
    #[error("the passwords do not match")]
    PasswordMismatch,
    /// The terminal prompt for a password failed.
    #[error(transparent)]
    Prompt(std::io::Error),
    #[error("cannot read the {what} from stdin: {source}")]
    Stdin { what: &'static str, source: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_the_cli_printed_as_strings() {
        let locked = CliError::MigrateLocked { path: "/var/lib/gatehouse".into() };
        assert_eq!(
            locked.to_string(),
            "/var/lib/gatehouse is in use: stop the gateway first (or migrate a copy)"
        );
        // A local refusal reads as the admin API's `message` field would.
        assert_eq!(CliError::Refused(ApiError::UserNotFound).to_string(), "No such user.");
        assert_eq!(CliError::RemoteRefused(None).to_string(), "the operation failed");
        assert_eq!(CliError::RemoteRefused(Some("No such user.".into())).to_string(), "No such user.");
        let keys = StartupError::from(KeyError::NoPrivateKey { kid: "k".into() });
        assert_eq!(CliError::from(keys).to_string(), "token keys: key `k` has no private_key");
        assert_eq!(
            CliError::from(KeyError::NoSigningKey).to_string(),
            "no signing key: set tokens.signing_key or the HS256 secret"
        );
    }
}
