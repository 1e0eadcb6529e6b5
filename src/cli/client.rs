//! How user and revocation commands reach the store.
//!
//! sled allows one process: when no gateway holds the store the CLI opens it
//! and runs the operation in-process; when the running gateway does, the same
//! operation goes over its admin API. A Redis store is always changed
//! directly: it is shared, and every gateway learns of the change through
//! pub/sub. Either way the caller gets the operation's typed answer.

use std::path::Path;
use std::sync::Arc;

use super::{command_runtime, connect_redis, CliError};
use crate::accounts::Accounts;
use crate::admin::operations::{FindUser, Operation, Operator};
use crate::config::{Config, Secret, StoreBackend};
use crate::error::ErrorBody;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::store::{SledStore, Store, StoreError, UserId};
use crate::tokens::TokenService;

/// Runs admin operations in-process on the store, or over HTTP against the
/// gateway that holds it.
pub(super) enum AdminClient {
    Local { operator: Operator, runtime: tokio::runtime::Runtime },
    Remote { base: String, token: Secret, http: reqwest::blocking::Client },
}

impl AdminClient {
    pub(super) fn connect(config_path: &Path) -> Result<Self, CliError> {
        let config = Config::load(config_path)?;
        let local = |store: Arc<dyn Store>, runtime: tokio::runtime::Runtime| {
            let passwords = Passwords::new(&config.passwords)?;
            let secret = config.tokens.secret.load().ok();
            let tokens = TokenService::with_keys(&config.tokens, secret.as_ref()).ok().map(Arc::new);
            let accounts = Accounts::new(store, passwords, Arc::new(Metrics::new()));
            Ok::<_, CliError>(AdminClient::Local { operator: Operator::new(accounts, tokens), runtime })
        };
        let path = match &config.store.backend {
            // Redis is shared: change it directly, and every gateway hears of it.
            StoreBackend::Redis(redis) => {
                let runtime = command_runtime()?;
                let store = connect_redis(redis, config.tokens.leeway, &runtime)?;
                return local(Arc::new(store), runtime);
            }
            StoreBackend::Sled { path } => path,
        };
        match SledStore::open(path) {
            Ok(store) => local(Arc::new(store), command_runtime()?),
            Err(StoreError::Locked { path }) => {
                let token =
                    config.admin.token.load().map_err(|source| CliError::AdminToken { path, source })?;
                let http = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .timeout(std::time::Duration::from_secs(30))
                    .build()?;
                Ok(AdminClient::Remote { base: format!("http://{}", config.admin.listen), token, http })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The id of a user given by id or by email.
    pub(super) fn user_id(&self, user: &str) -> Result<UserId, CliError> {
        if let Ok(id) = user.parse() {
            return Ok(id);
        }
        let found = self.call(&FindUser { email: user.to_owned() })?;
        found.first().map(|u| u.id).ok_or(CliError::NoSuchUser)
    }

    /// Runs `op`; a refusal becomes its message.
    pub(super) fn call<O: Operation>(&self, op: &O) -> Result<O::Answer, CliError> {
        match self {
            AdminClient::Local { operator, runtime } => {
                runtime.block_on(op.run(operator)).map_err(CliError::Refused)
            }
            AdminClient::Remote { base, token, http } => {
                let (method, target) = op.target();
                let body = op.body()?;
                let bearer = String::from_utf8_lossy(token.expose()).into_owned();
                let response = http
                    .request(method, format!("{base}{target}"))
                    .bearer_auth(bearer)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .map_err(|source| CliError::NoAdminApi { base: base.clone(), source })?;
                let status = response.status();
                let bytes = response.bytes()?;
                let unexpected = |source| CliError::UnexpectedAnswer { status, source };
                if status.is_success() {
                    serde_json::from_slice(&bytes).map_err(unexpected)
                } else {
                    let refusal: ErrorBody = serde_json::from_slice(&bytes).map_err(unexpected)?;
                    Err(CliError::RemoteRefused(Some(refusal.message)))
                }
            }
        }
    }
}
