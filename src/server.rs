//! Assembles a running gateway from a validated [`Config`]: takes what
//! [`crate::startup::prepare`] built, opens the store, and hands pingora the
//! proxy, the admin listener and the background services (housekeeping,
//! upstream health checks, SIGHUP reload).
//!
//! [`run`] takes the shutdown signal as an input so a gateway can be started
//! and stopped in-process; [`serve`] passes the Unix signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch, ShutdownWatch, UnixShutdownSignalWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::accounts::Accounts;
use crate::admin::AdminApi;
use crate::auth::Authenticator;
use crate::clock::now_unix;
use crate::config::{Config, ConfigError, StoreBackend};
use crate::endpoints::BuiltIns;
use crate::header_deadline::HeaderDeadline;
use crate::limits::routes::SharedBudgets;
use crate::limits::{LoginLimiter, RouteLimiter, SharedLimits};
use crate::listening::{ListenerReadiness, Prober};
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Live};
use crate::signin::SigninPage;
use crate::startup::{prepare, Prepared, StartupError};
use crate::store::{RedisStore, Retention, SledStore, Store, StoreError};
use crate::upstreams::UpstreamError;

/// Options that come from the command line rather than the config file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Take over listening sockets from a running gateway (pingora's zero-downtime upgrade).
    pub upgrade: bool,
}

/// Starts the gateway and blocks until it has shut down (SIGTERM or SIGINT).
pub fn serve(config: Config, options: RunOptions) -> Result<(), StartupError> {
    run(config, options, Box::new(UnixShutdownSignalWatch))
}

/// Starts the gateway and blocks until `shutdown` asks it to stop: `serve`
/// passes the Unix signals, a test can pass its own watch.
pub fn run(
    config: Config,
    options: RunOptions,
    shutdown: Box<dyn ShutdownSignalWatch>,
) -> Result<(), StartupError> {
    let Prepared { admin_token, passwords, live, tokens, tls, server_conf } = prepare(&config)?;
    if !options.upgrade {
        crate::startup::check_listen_addresses(&config)?;
    }
    let opt = Opt { upgrade: options.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    // With --upgrade this receives the listening sockets from the old process.
    server.bootstrap();

    let (store, limiter, budgets) = open_store(&config, options.upgrade)?;
    let metrics = Arc::new(Metrics::new());
    let accounts = Accounts::new(Arc::clone(&store), passwords, Arc::clone(&metrics));
    let tokens = Arc::new(tokens);
    let auth = Arc::new(Authenticator::new(Arc::clone(&tokens), Arc::clone(&store), config.cookies.clone()));
    let limiter = Arc::new(limiter);
    let budgets = Arc::new(budgets);
    let live = Arc::new(ArcSwap::from_pointee(live));

    let builtins = BuiltIns::new(
        config.endpoints.clone(),
        Arc::clone(&auth),
        accounts.clone(),
        Arc::clone(&limiter),
        Arc::clone(&metrics),
        SigninPage::new(config.signin.clone(), &config.cookies),
    );
    let gateway = Gateway::new(
        Arc::clone(&live),
        Arc::clone(&auth),
        builtins,
        config.limits.clone(),
        config.server.requests.clone(),
        Arc::clone(&metrics),
        Arc::clone(&budgets),
    );
    // Which listeners accept connections in this process yet, for /readyz.
    let listening = ListenerReadiness::new(crate::startup::listen_addresses(&config));
    let mut proxy = proxy_service(gateway, &server, &config, tls, &metrics);
    proxy.set_connection_filter(listening.filter());
    server.add_service(proxy);

    let mut admin_api = AdminApi::new(accounts, Some(tokens), Some(admin_token))
        .with_operations(Arc::clone(&metrics), Arc::clone(&live))
        .with_listeners(Arc::clone(&listening));
    if let Some(path) = &config.admin.openapi {
        admin_api = admin_api.with_openapi(path.clone(), crate::openapi::document(&config));
    }
    let mut admin = Service::new("gatehouse admin".to_owned(), admin_api);
    admin.add_tcp(&config.admin.listen.to_string());
    admin.set_connection_filter(listening.filter());
    server.add_service(admin);
    server.add_service(background_service("listener probe", Prober(listening)));

    let housekeeping = Housekeeping {
        store,
        limiter,
        budgets,
        metrics: Arc::clone(&metrics),
        interval: config.store.purge_interval,
        leeway: config.tokens.leeway,
    };
    let health = HealthChecks {
        live: Arc::clone(&live),
        metrics: Arc::clone(&metrics),
        interval: config.upstream.health_check_interval,
    };
    let reload = Reloader { live, metrics, source: config.source.clone() };
    server.add_service(background_service("housekeeping", housekeeping));
    server.add_service(background_service("upstream health", health));
    server.add_service(background_service("reload on SIGHUP", reload));
    tracing::info!(
        listen = ?config.server.listen,
        tls = ?config.server.tls.as_ref().map_or(&[][..], |t| &t.listen[..]),
        admin = %config.admin.listen,
        upstreams = ?config.upstream.addresses,
        routes = config.routes.len(),
        "gatehouse starting"
    );
    server.run(RunArgs { shutdown_signal: shutdown });
    tracing::info!("gatehouse stopped");
    Ok(())
}

/// The proxy service: pingora's HTTP proxy around the [`Gateway`], behind the
/// header deadline, on every plain and TLS listener.
fn proxy_service(
    gateway: Gateway,
    server: &Server,
    config: &Config,
    tls: Vec<(SocketAddr, TlsSettings)>,
    metrics: &Arc<Metrics>,
) -> Service<HeaderDeadline<HttpProxy<Gateway>>> {
    let mut proxy = HttpProxy::new(gateway, Arc::clone(&server.configuration));
    proxy.handle_init_modules();
    // Let CONNECT reach the gateway, which refuses it with a JSON 405
    // instead of pingora's empty one; nothing is ever tunnelled.
    let mut options = proxy.server_options.take().unwrap_or_default();
    options.allow_connect_method_proxying = true;
    options.h2c = config.server.h2c;
    // HTTP/2 connections ignore the per-request keep-alive setting: bound
    // their idle time (a stream whose headers are still arriving counts as
    // idle) by the same limit.
    options.h2_idle_timeout = Some(config.limits.client_idle_timeout);
    proxy.server_options = Some(options);
    // HTTP/2 header blocks are bounded like HTTP/1 ones (plus room for the
    // pseudo-headers); the other limits stay pingora's bounded defaults.
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(u32::try_from(config.limits.max_header_bytes + 8 * 1024).unwrap_or(u32::MAX));
    proxy.h2_options = Some(h2);
    let proxy = HeaderDeadline::new(
        proxy,
        config.server.requests.header_timeout,
        config.limits.max_header_bytes,
        Arc::clone(metrics),
    );
    let mut service = Service::new("gatehouse proxy".to_owned(), proxy);
    for addr in &config.server.listen {
        service.add_tcp(&addr.to_string());
    }
    for (addr, settings) in tls {
        service.add_tls_with_settings(&addr.to_string(), None, settings);
    }
    service
}

/// The configured store, and the login limiter and route budgets that go
/// with it (local counters with sled, shared ones in Redis).
fn open_store(
    config: &Config,
    upgrading: bool,
) -> Result<(Arc<dyn Store>, LoginLimiter, RouteLimiter), StartupError> {
    Ok(match &config.store.backend {
        StoreBackend::Sled { path } => (
            Arc::new(open_sled(path, config, upgrading)?),
            LoginLimiter::local(&config.limits),
            RouteLimiter::local(),
        ),
        StoreBackend::Redis(redis) => {
            let store = RedisStore::start(redis, config.tokens.leeway)?;
            let limits = LoginLimiter::Shared(SharedLimits::new(&config.limits, &store));
            let budgets = RouteLimiter::Shared(SharedBudgets::new(&store));
            (Arc::new(store), limits, budgets)
        }
    })
}

/// Opens the sled store. During an upgrade the old process still holds sled's
/// lock while it drains; wait for it (new connections queue in the shared
/// listen backlog meanwhile, none are refused).
fn open_sled(path: &Path, config: &Config, upgrading: bool) -> Result<SledStore, StoreError> {
    let patience = config.server.grace_period + config.server.shutdown_timeout + Duration::from_secs(10);
    let deadline = Instant::now() + patience;
    loop {
        match SledStore::open(path) {
            Err(StoreError::Locked { .. }) if upgrading && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Drops revocation entries whose tokens have expired anyway, so the
/// revocation list does not grow without bound, forgets stale login-limit
/// and route-budget state, and keeps the revocation gauge current.
struct Housekeeping {
    store: Arc<dyn Store>,
    limiter: Arc<LoginLimiter>,
    budgets: Arc<RouteLimiter>,
    metrics: Arc<Metrics>,
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
                    let cutoff = Retention::new(self.leeway).purge_cutoff(now_unix());
                    match self.store.purge_expired_revocations(cutoff).await {
                        Ok(0) => {}
                        Ok(purged) => tracing::info!(purged, "expired revocations purged"),
                        Err(e) => tracing::warn!(error = %e, "revocation purge failed"),
                    }
                    if let Ok(count) = self.store.revoked_count().await {
                        self.metrics.revocation_entries.set(i64::try_from(count).unwrap_or(i64::MAX));
                    }
                    self.limiter.prune();
                    self.budgets.prune();
                }
            }
        }
    }
}

/// Active upstream health checks on whichever upstream pool is live.
struct HealthChecks {
    live: Arc<ArcSwap<Live>>,
    metrics: Arc<Metrics>,
    interval: Duration,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(self.interval.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {
                    let live = self.live.load_full();
                    live.upstreams.check_health().await;
                    self.metrics.upstream_healthy.reset();
                    for (addr, healthy) in live.upstreams.health() {
                        self.metrics.upstream_healthy.with_label_values(&[&addr.to_string()]).set(i64::from(healthy));
                    }
                }
            }
        }
    }
}

/// Reloads routes, policies and upstreams from the config file on SIGHUP. A
/// file that fails validation is logged and the running config stays.
struct Reloader {
    live: Arc<ArcSwap<Live>>,
    metrics: Arc<Metrics>,
    source: PathBuf,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Upstreams(#[from] UpstreamError),
}

impl Reloader {
    fn reload(&self) -> Result<(), ReloadError> {
        let config = Config::load(&self.source)?;
        let live = Live::new(config.routes, config.upstream)?;
        self.live.store(Arc::new(live));
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; config reload is off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = hangups.recv() => match self.reload() {
                    Ok(()) => {
                        self.metrics.config_reloads.with_label_values(&["success"]).inc();
                        tracing::info!(file = %self.source.display(), "config reloaded: routes, policies and upstreams");
                    }
                    Err(e) => {
                        self.metrics.config_reloads.with_label_values(&["failure"]).inc();
                        tracing::error!(error = %e, "config reload refused; the previous config keeps serving");
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pingora::server::ShutdownSignal;

    use super::*;

    /// Stops the gateway shortly after it starts.
    struct StopAtOnce;

    #[async_trait]
    impl ShutdownSignalWatch for StopAtOnce {
        async fn recv(&self) -> ShutdownSignal {
            tokio::time::sleep(Duration::from_millis(200)).await;
            ShutdownSignal::FastShutdown
        }
    }

    #[test]
    fn run_returns_when_its_shutdown_signal_fires() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "0123456789abcdef0123456789abcdef";
        std::fs::write(dir.path().join("secret"), secret).unwrap();
        // Any free ports; the two addresses differ because pingora keys its
        // listening sockets by address text, and two `127.0.0.1:0` collide.
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.2:0\"\n\
                    token_file = \"secret\"\n[upstream]\naddresses = [\"127.0.0.1:1\"]\n\
                    [tokens]\nsecret_file = \"secret\"\n";
        let config = Config::parse(text, &dir.path().join("gatehouse.toml")).unwrap();
        run(config, RunOptions::default(), Box::new(StopAtOnce)).unwrap();
    }
}
