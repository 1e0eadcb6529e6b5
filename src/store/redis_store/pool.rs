//! Connections to Redis: a few multiplexed connections used in turn, each
//! re-opened when it fails, to one server (`url`) or to whichever server a set
//! of Sentinels names as master (so a failover is followed).
//!
//! redis-rs pipelines every command of a multiplexed connection over one TCP
//! stream, in order; a handful of them keep one slow reply (a big `SCAN`
//! batch while a gateway resyncs) from holding up every request behind it. A connection that failed is
//! not retried for [`RECONNECT_PAUSE`], so an outage costs each request one
//! fast error instead of a connect timeout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, IntoConnectionInfo, RedisError};

use crate::config::{RedisConfig, RedisTarget};
use crate::store::StoreError;

/// How long after a failed connect the pool waits before it tries again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Where connections go.
enum Target {
    Server(Box<Client>),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

pub(crate) struct Pool {
    target: Target,
    slots: Vec<Slot>,
    next: AtomicUsize,
    options: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// The runtime connection drivers run on: the store's own, so they outlive
    /// whichever task happened to open them.
    runtime: tokio::runtime::Handle,
    /// Whether the last command or health ping got an answer.
    reachable: AtomicBool,
    /// When the last connect failed; cleared by the next one that works, so
    /// every slot reconnects at once when Redis is back.
    last_connect_failure: std::sync::Mutex<Option<Instant>>,
    wait_replicas: u32,
    wait_timeout: Duration,
}

#[derive(Default)]
struct Slot {
    connection: ArcSwapOption<MultiplexedConnection>,
    /// Held while (re)connecting, so one slot opens one connection.
    reconnect: tokio::sync::Mutex<()>,
}

impl Pool {
    pub(crate) fn new(
        config: &RedisConfig,
        password: Option<String>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Pool, StoreError> {
        let invalid = |e: RedisError| StoreError::Backend(format!("redis settings: {}", describe(&e)));
        // The URL's own database and user stay unless the config names others.
        let with_credentials = |mut settings: redis::RedisConnectionInfo| {
            if let Some(db) = config.db {
                settings = settings.set_db(db);
            }
            if let Some(username) = &config.username {
                settings = settings.set_username(username);
            }
            if let Some(password) = &password {
                settings = settings.set_password(password);
            }
            settings
        };
        let target = match &config.target {
            RedisTarget::Url(url) => {
                let info = url.as_str().into_connection_info().map_err(invalid)?;
                let settings = with_credentials(info.redis_settings().clone());
                let info = info.set_redis_settings(settings);
                let client = match &config.tls_ca_file {
                    Some(path) => {
                        let root_cert = std::fs::read(path).map_err(|e| {
                            StoreError::Backend(format!(
                                "cannot read store.redis.tls_ca_file {}: {e}",
                                path.display()
                            ))
                        })?;
                        Client::build_with_tls(
                            info,
                            redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
                        )
                    }
                    None => Client::open(info),
                }
                .map_err(invalid)?;
                Target::Server(Box::new(client))
            }
            RedisTarget::Sentinel { sentinels, master_name, tls } => {
                let settings = with_credentials(redis::RedisConnectionInfo::default());
                let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(settings);
                if *tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let client = SentinelClient::build(
                    sentinels.clone(),
                    master_name.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(invalid)?;
                Target::Sentinel(Arc::new(tokio::sync::Mutex::new(client)))
            }
        };
        let options = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        Ok(Pool {
            target,
            slots: (0..config.pool_size).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            options,
            connect_timeout: config.connect_timeout,
            runtime,
            reachable: AtomicBool::new(false),
            last_connect_failure: std::sync::Mutex::new(None),
            wait_replicas: config.wait_replicas,
            wait_timeout: config.wait_timeout,
        })
    }

    pub(crate) fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub(crate) fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    /// A client for the current master: the configured server, or whichever
    /// one the Sentinels name right now.
    pub(crate) async fn client(&self) -> Result<Client, StoreError> {
        match &self.target {
            Target::Server(client) => Ok((**client).clone()),
            Target::Sentinel(sentinel) => {
                let sentinel = Arc::clone(sentinel);
                let lookup = async move { sentinel.lock().await.async_get_client().await };
                match tokio::time::timeout(self.connect_timeout * 2, lookup).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(unreachable(&e)),
                    Err(_) => Err(StoreError::Unavailable("no Sentinel named a master in time".into())),
                }
            }
        }
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The next connection in turn, opened if needed.
    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[index];
        if let Some(connection) = slot.connection.load_full() {
            return Ok((*connection).clone());
        }
        let _connecting = slot.reconnect.lock().await;
        if let Some(connection) = slot.connection.load_full() {
            return Ok((*connection).clone());
        }
        let last_failure = *self.last_connect_failure.lock().unwrap_or_else(|p| p.into_inner());
        if last_failure.is_some_and(|at| at.elapsed() < RECONNECT_PAUSE) {
            return Err(StoreError::Unavailable("redis is unreachable (retrying shortly)".into()));
        }
        let opened = self.open().await;
        *self.last_connect_failure.lock().unwrap_or_else(|p| p.into_inner()) =
            opened.is_err().then(Instant::now);
        match opened {
            Ok(connection) => {
                slot.connection.store(Some(Arc::new(connection.clone())));
                Ok(connection)
            }
            Err(e) => {
                self.set_reachable(false);
                Err(e)
            }
        }
    }

    async fn open(&self) -> Result<MultiplexedConnection, StoreError> {
        let client = self.client().await?;
        let options = self.options.clone();
        // The connection's driver task lives on the store's runtime.
        let opening = self
            .runtime
            .spawn(async move { client.get_multiplexed_async_connection_with_config(&options).await });
        match opening.await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(unreachable(&e)),
            Err(e) => Err(StoreError::Unavailable(format!("redis connection task failed: {e}"))),
        }
    }

    /// Runs `request` on a pooled connection. Reads run once more on a new
    /// connection when the first one was lost; writes never run twice.
    async fn run<T: FromRedisValue>(&self, request: Request<'_>) -> Result<T, StoreError> {
        let mut attempts_left = if matches!(request, Request::Read(_) | Request::Reads(_)) { 2 } else { 1 };
        loop {
            attempts_left -= 1;
            let mut connection = self.connection().await?;
            let error = match self.send(&request, &mut connection).await {
                Ok(value) => {
                    self.set_reachable(true);
                    if matches!(request, Request::Write(_)) {
                        self.confirm_replicas(&mut connection).await?;
                    }
                    return Ok(value);
                }
                Err(e) => e,
            };
            let lost = self.retire_if_lost(&error);
            if !lost || attempts_left == 0 {
                return Err(self.failure(&error, lost));
            }
        }
    }

    async fn send<T: FromRedisValue>(
        &self,
        request: &Request<'_>,
        connection: &mut MultiplexedConnection,
    ) -> Result<T, RedisError> {
        match request {
            Request::Read(command) => command.query_async(connection).await,
            Request::Reads(pipeline) => pipeline.query_async(connection).await,
            Request::Script(invocation) | Request::Write(invocation) => {
                invocation.invoke_async(connection).await
            }
        }
    }

    /// With `wait_replicas`, waits until that many replicas have every write
    /// made so far on `connection`. A shortfall is answered 503, though Redis
    /// keeps the write: `WAIT` confirms, it does not roll back.
    async fn confirm_replicas(&self, connection: &mut MultiplexedConnection) -> Result<(), StoreError> {
        let (wanted, timeout) = (self.wait_replicas, self.wait_timeout);
        if wanted == 0 {
            return Ok(());
        }
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let confirmed: u32 = match redis::cmd("WAIT").arg(wanted).arg(millis).query_async(connection).await {
            Ok(confirmed) => confirmed,
            Err(error) => {
                let lost = self.retire_if_lost(&error);
                return Err(self.failure(&error, lost));
            }
        };
        if confirmed < wanted {
            return Err(StoreError::Unavailable(format!(
                "too few redis replicas confirmed the write: {confirmed} of {wanted} within {timeout:?}"
            )));
        }
        Ok(())
    }

    /// When `error` means the connection is gone (or now points at a replica
    /// after a failover), retires every pooled connection, since they all
    /// went to the same server, and says so.
    fn retire_if_lost(&self, error: &RedisError) -> bool {
        let lost = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_timeout()
            || error.is_connection_refusal()
            || error.code() == Some("READONLY");
        if lost {
            for slot in &self.slots {
                slot.connection.store(None);
            }
        }
        lost
    }

    /// The error to report for a command that failed for good.
    fn failure(&self, error: &RedisError, lost: bool) -> StoreError {
        if lost {
            self.set_reachable(false);
            unreachable(error)
        } else {
            StoreError::Backend(format!("redis: {}", describe(error)))
        }
    }

    /// One command that may run twice (a read, `DEL`).
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, StoreError> {
        self.run(Request::Read(command)).await
    }

    /// Several commands that may run twice, in one round trip.
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run(Request::Reads(pipeline)).await
    }

    /// A Lua script (atomic on the server), run at most once.
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run(Request::Script(invocation)).await
    }

    /// A write that clients will be told succeeded: a script run at most
    /// once, then, when replicas are required, confirmed by that many.
    pub(crate) async fn write<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run(Request::Write(invocation)).await
    }
}

/// What [`Pool::run`] sends.
enum Request<'a> {
    Read(&'a Cmd),
    Reads(&'a redis::Pipeline),
    Script(&'a redis::ScriptInvocation<'a>),
    Write(&'a redis::ScriptInvocation<'a>),
}

/// A redis-rs error as text, without the connection details it may carry.
fn describe(e: &RedisError) -> String {
    let text = e.to_string();
    // redis-rs never puts passwords in errors, but URLs can reach them through
    // parse failures; keep only the first line.
    text.lines().next().unwrap_or("unknown error").to_owned()
}

fn unreachable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("cannot reach redis: {}", describe(e)))
}
