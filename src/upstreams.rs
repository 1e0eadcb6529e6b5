//! The upstream pool: pingora-load-balancing with a choice of selection
//! policy, active health checks run by the gateway's housekeeping, and
//! selection that skips backends a request already failed to reach.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::tls::CertificateDer;
use pingora::utils::tls::{parse_x509, WrappedX509};

use crate::config::{HealthCheckKind, Selection, UpstreamConfig, UpstreamProtocol};

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
    /// `upstream.tls_ca_file` can't be read or holds no usable certificate.
    #[error("upstream.tls_ca_file {path}: {message}")]
    CaFile { path: String, message: String },
}

/// How far selection searches for an acceptable backend.
const MAX_SELECT_ITERATIONS: usize = 256;

pub struct UpstreamPool {
    balancer: Box<dyn Balance>,
    addresses: Vec<SocketAddr>,
    /// `addresses` as text, made once for metric labels.
    labels: Vec<String>,
    /// How requests and health checks reach every upstream.
    transport: Transport,
}

/// What every connection to an upstream shares: the protocol, and TLS with
/// its server name and CA list (read once, when the config is loaded).
#[derive(Clone)]
struct Transport {
    protocol: UpstreamProtocol,
    tls: Option<(String, Option<Arc<CaType>>)>,
}

impl Transport {
    fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some((tls.server_name.clone(), tls.ca_file.as_deref().map(ca_list).transpose()?)),
        };
        Ok(Transport { protocol: config.protocol, tls })
    }

    /// Sets `peer` up to speak this transport: TLS (server name, CA list)
    /// and the protocol. HTTP/2 either way is the only version offered, so an
    /// upstream that can't speak it fails loudly rather than quietly falling
    /// back to HTTP/1.1.
    fn apply(&self, peer: &mut HttpPeer) {
        if let Some((server_name, ca)) = &self.tls {
            peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
            peer.sni.clone_from(server_name);
            peer.options.ca.clone_from(ca);
        }
        if matches!(self.protocol, UpstreamProtocol::H2 | UpstreamProtocol::H2c) {
            peer.options.set_http_version(2, 2);
        }
    }
}

/// The certificates of `upstream.tls_ca_file` (PEM), each checked to parse
/// as pingora will parse it.
fn ca_list(path: &std::path::Path) -> Result<Arc<CaType>, UpstreamError> {
    use rustls_pki_types::pem::PemObject;
    let refuse = |message: String| UpstreamError::CaFile { path: path.display().to_string(), message };
    let mut list = Vec::new();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| refuse(e.to_string()))? {
        let der = cert.map_err(|e| refuse(e.to_string()))?.to_vec();
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| refuse(format!("a certificate is invalid: {e}")))?;
        list.push(WrappedX509::new(der, parse_x509));
    }
    if list.is_empty() {
        return Err(refuse("no certificate in the file".into()));
    }
    Ok(Arc::from(list))
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

fn build<S>(config: &UpstreamConfig, transport: &Transport) -> Result<LoadBalancer<S>, UpstreamError>
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
            let host = transport.tls.as_ref().map_or("upstream", |(name, _)| name.as_str());
            let mut http = HttpHealthCheck::new(host, false);
            transport.apply(&mut http.peer_template);
            let mut req =
                RequestHeader::build("GET", path.as_bytes(), None).map_err(UpstreamError::HealthCheck)?;
            req.append_header("Host", host).map_err(UpstreamError::HealthCheck)?;
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
        let transport = Transport::new(config)?;
        let balancer: Box<dyn Balance> = match config.selection {
            Selection::RoundRobin => Box::new(build::<RoundRobin>(config, &transport)?),
            Selection::Random => Box::new(build::<Random>(config, &transport)?),
            Selection::Consistent => Box::new(build::<Consistent>(config, &transport)?),
        };
        let labels = config.addresses.iter().map(SocketAddr::to_string).collect();
        Ok(UpstreamPool { balancer, addresses: config.addresses.clone(), labels, transport })
    }

    /// Whether requests go upstream over HTTP/2 (`h2` or `h2c`).
    pub fn speaks_http2(&self) -> bool {
        matches!(self.transport.protocol, UpstreamProtocol::H2 | UpstreamProtocol::H2c)
    }

    /// The peer a request to `backend` goes to: this pool's protocol and TLS.
    pub fn peer(&self, backend: &Backend) -> HttpPeer {
        let mut peer = HttpPeer::new(backend.clone(), false, String::new());
        self.transport.apply(&mut peer);
        peer
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
