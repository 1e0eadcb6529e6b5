//! Assembles a running gateway from a validated [`Config`]: loads secrets,
//! opens the store, and hands pingora the proxy, the admin listener and the
//! background revocation purge.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::LoadBalancer;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::accounts::Accounts;
use crate::admin::AdminApi;
use crate::auth::Authenticator;
use crate::config::{Config, SecretError};
use crate::endpoints::BuiltIns;
use crate::limits::LoginLimiter;
use crate::passwords::Passwords;
use crate::proxy::Gateway;
use crate::store::{SledStore, Store, StoreError};
use crate::tokens::{now_unix, TokenService};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Passwords(String),
    #[error("cannot set up the upstreams: {0}")]
    Upstreams(String),
}

/// Options that come from the command line rather than the config file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Take over listening sockets from a running gateway (pingora's zero-downtime upgrade).
    pub upgrade: bool,
}

/// Starts the gateway and blocks until it has shut down (SIGTERM or SIGINT).
pub fn serve(config: Config, options: RunOptions) -> Result<(), StartError> {
    let token_secret = config.tokens.secret.load()?;
    let admin_token = config.admin.token.load()?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store.path)?);
    let passwords = Passwords::new(&config.passwords).map_err(StartError::Passwords)?;
    let accounts = Accounts::new(Arc::clone(&store), passwords);
    let tokens = Arc::new(TokenService::new(&config.tokens, &token_secret));
    let auth = Arc::new(Authenticator::new(Arc::clone(&tokens), Arc::clone(&store)));

    let upstreams = LoadBalancer::try_from_iter(config.upstream.addresses.iter().map(|a| a.to_string()))
        .map_err(|e| StartError::Upstreams(e.to_string()))?;

    let server_conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let limiter = Arc::new(LoginLimiter::new(&config.limits));
    let builtins = BuiltIns::new(
        config.endpoints.clone(),
        Arc::clone(&auth),
        accounts.clone(),
        Arc::clone(&limiter),
    );
    let gateway = Gateway::new(
        config.routes.clone(),
        Arc::clone(&auth),
        builtins,
        Arc::new(upstreams),
        config.upstream.clone(),
        config.limits.clone(),
    );
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "gatehouse proxy");
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }

    let mut admin = Service::new(
        "gatehouse admin".to_owned(),
        AdminApi::new(accounts, Some(tokens), Some(admin_token)),
    );
    admin.add_tcp(&config.admin.listen.to_string());

    let purge = background_service(
        "housekeeping",
        Housekeeping {
            store: Arc::clone(&store),
            limiter,
            interval: config.store.purge_interval,
            leeway: config.tokens.leeway,
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(purge);
    tracing::info!(
        listen = ?config.server.listen,
        admin = %config.admin.listen,
        upstreams = ?config.upstream.addresses,
        routes = config.routes.len(),
        "gatehouse starting"
    );
    server.run(RunArgs::default());
    tracing::info!("gatehouse stopped");
    Ok(())
}

/// Drops revocation entries whose tokens have expired anyway, so the
/// revocation list does not grow without bound, and forgets stale login-limit
/// state.
struct Housekeeping {
    store: Arc<dyn Store>,
    limiter: Arc<LoginLimiter>,
    interval: Duration,
    leeway: Duration,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {
                    // An entry may go only once its token fails the expiry check
                    // on its own, leeway included.
                    let cutoff = now_unix().saturating_sub(self.leeway.as_secs());
                    match self.store.purge_expired_revocations(cutoff).await {
                        Ok(0) => {}
                        Ok(purged) => tracing::info!(purged, "expired revocations purged"),
                        Err(e) => tracing::warn!(error = %e, "revocation purge failed"),
                    }
                    self.limiter.prune();
                }
            }
        }
    }
}
