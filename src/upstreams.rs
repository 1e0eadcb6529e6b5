//! The upstream pool: pingora-load-balancing with a choice of selection
//! policy, active health checks run by the gateway's housekeeping, and
//! selection that skips backends a request already failed to reach.

use std::net::SocketAddr;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};

use crate::config::{HealthCheckKind, Selection, UpstreamConfig};

/// Why `[upstream]` could not be turned into a pool and its headers: a
/// start-up (or reload) error, shown to the operator as it is.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot set up the upstreams: {0}")]
    Balancer(std::io::Error),
    /// The health check's request could not be built from its path.
    #[error("{0}")]
    HealthCheck(Box<pingora::Error>),
    /// `identity_header_prefix` makes an invalid header name.
    #[error(transparent)]
    IdentityHeader(#[from] http::header::InvalidHeaderName),
}

/// How far selection searches for an acceptable backend.
const MAX_SELECT_ITERATIONS: usize = 256;

pub struct UpstreamPool {
    balancer: Box<dyn Balance>,
    addresses: Vec<SocketAddr>,
    /// `addresses` as text, made once for metric labels.
    labels: Vec<String>,
}

/// What the pool needs of a load balancer, whatever its selection policy: the
/// policy is chosen once, in [`UpstreamPool::new`], and nowhere else.
trait Balance: Send + Sync {
    fn select_with(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend>;
    fn backends(&self) -> &Backends;
}

impl<S> Balance for LoadBalancer<S>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    fn select_with(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend> {
        LoadBalancer::select_with(self, key, MAX_SELECT_ITERATIONS, accept)
    }

    fn backends(&self) -> &Backends {
        LoadBalancer::backends(self)
    }
}

fn build<S>(config: &UpstreamConfig) -> Result<LoadBalancer<S>, UpstreamError>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let mut lb = LoadBalancer::<S>::try_from_iter(config.addresses.iter().map(SocketAddr::to_string))
        .map_err(UpstreamError::Balancer)?;
    let check: Option<Box<dyn HealthCheck + Send + Sync>> = match &config.health_check {
        HealthCheckKind::None => None,
        HealthCheckKind::Tcp => {
            let mut tcp = TcpHealthCheck::new();
            tcp.peer_template.options.connection_timeout = Some(config.connect_timeout);
            Some(tcp)
        }
        HealthCheckKind::Http { path } => {
            let mut http = HttpHealthCheck::new("upstream", false);
            let mut req =
                RequestHeader::build("GET", path.as_bytes(), None).map_err(UpstreamError::HealthCheck)?;
            req.append_header("Host", "upstream").map_err(UpstreamError::HealthCheck)?;
            http.req = req;
            http.peer_template.options.connection_timeout = Some(config.connect_timeout);
            http.peer_template.options.read_timeout =
                Some(config.connect_timeout.max(Duration::from_secs(1)));
            Some(Box::new(http))
        }
    };
    if let Some(check) = check {
        lb.set_health_check(check);
    }
    Ok(lb)
}

impl UpstreamPool {
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let balancer: Box<dyn Balance> = match config.selection {
            Selection::RoundRobin => Box::new(build::<RoundRobin>(config)?),
            Selection::Random => Box::new(build::<Random>(config)?),
            Selection::Consistent => Box::new(build::<Consistent>(config)?),
        };
        let labels = config.addresses.iter().map(SocketAddr::to_string).collect();
        Ok(UpstreamPool { balancer, addresses: config.addresses.clone(), labels })
    }

    /// Picks a backend for a request: a healthy one not in `tried` if there
    /// is one, else any not in `tried` (health checks can lag), else none.
    /// `key` drives consistent hashing (the client address).
    pub fn select(&self, key: &[u8], tried: &[Backend]) -> Option<Backend> {
        let pick = |accept: &dyn Fn(&Backend, bool) -> bool| self.balancer.select_with(key, accept);
        pick(&|b, healthy| healthy && !tried.contains(b)).or_else(|| pick(&|b, _| !tried.contains(b)))
    }

    /// The metric label of a backend from this pool.
    pub fn label(&self, backend: &Backend) -> Option<&str> {
        let addr = backend.addr.as_inet()?;
        self.addresses.iter().position(|a| a == addr).map(|i| self.labels[i].as_str())
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Runs one round of active health checks.
    pub async fn check_health(&self) {
        self.balancer.backends().run_health_check(true).await;
    }

    /// Each upstream and whether it currently passes its health check.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|addr| (*addr, backends.ready(b))))
            .collect()
    }
}
