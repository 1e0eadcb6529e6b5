//! Whether every listener (`server.listen`, `server.tls_listen`,
//! `admin.listen`) is accepting connections in this process, for `/readyz`.
//!
//! pingora binds the listeners inside `Server::run`, after the services are
//! added, and tells nobody when it is done: a service is "ready" to pingora
//! before its listeners are built. A process that is up is therefore not yet
//! a process that serves, and during `serve --upgrade` the sockets handed
//! over by the old process answer a TCP connect whether or not this process
//! accepts on them yet (the old one still does). So neither "the process
//! runs" nor "a connect succeeds" says this process's accept loop runs.
//!
//! What does is a connection seen by that accept loop. pingora's
//! connection filter ([`ConnectionFilter`]) is called by the accept loop of
//! each listener, for every connection it accepts, before anything else (TLS
//! included). [`Prober`] connects to each listener from a source address it
//! records first; when the filter of this process sees a connection from a
//! recorded address, that listener is accepting here, and the filter drops
//! the probe (quietly: no half-open request or TLS handshake error is logged).
//! A probe the old process accepted during an upgrade, or one queued on a
//! socket nobody accepts on, is never seen, so the listener stays "not
//! accepting" and is probed again. Once every listener has been seen the
//! answer is cached and the prober stops: pingora never closes a listener
//! while the process serves, and after that the filter costs one atomic load
//! per accepted connection.
//!
//! A wildcard listener (`0.0.0.0`, `[::]`) is probed on loopback; any other
//! is probed from and to its own address, which is this host's. A listener
//! on port 0 gets a port pingora does not report, so it can't be probed and
//! never counts as accepting (a setting for tests, not for a gateway that is
//! asked whether it is ready).
//!
//! While `serve --upgrade` runs beside the old process, a probe the old one
//! accepts is an ordinary connection to it, closed without a request: on a
//! TLS listener the old process logs a handshake error for it. That lasts
//! until the old process is told to stop, and is the price of asking the
//! only question that tells the two processes apart.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::TcpSocket;
use tokio::sync::Notify;

/// How long one probe waits to connect, and then to be seen accepted.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause between rounds of probes while some listener is not accepting.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The listeners of this process and which of them accept connections.
#[derive(Debug)]
pub struct ListenerReadiness {
    listeners: Vec<Listener>,
    /// Every listener has accepted a probe: cached for good.
    all_accepting: AtomicBool,
    /// Probes under way: the source address each connects from, and the
    /// listener it probes.
    probes: Mutex<HashMap<SocketAddr, usize>>,
    /// Woken when a probe is seen.
    seen: Notify,
}

#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    accepting: AtomicBool,
}

impl ListenerReadiness {
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Arc<Self> {
        let listeners: Vec<Listener> =
            addresses.into_iter().map(|addr| Listener { addr, accepting: AtomicBool::new(false) }).collect();
        Arc::new(ListenerReadiness {
            all_accepting: AtomicBool::new(listeners.is_empty()),
            listeners,
            probes: Mutex::new(HashMap::new()),
            seen: Notify::new(),
        })
    }

    /// Whether every listener has accepted a connection in this process.
    pub fn all_accepting(&self) -> bool {
        self.all_accepting.load(Ordering::Acquire)
    }

    /// Each listener's address and whether it accepts connections here.
    pub fn states(&self) -> BTreeMap<SocketAddr, bool> {
        self.listeners.iter().map(|l| (l.addr, l.accepting.load(Ordering::Acquire))).collect()
    }

    /// The filter to set on every listening service: it notices the probes.
    pub fn filter(self: &Arc<Self>) -> Arc<dyn ConnectionFilter> {
        Arc::new(ProbeFilter(Arc::clone(self)))
    }

    /// Records that the accept loop of this process took a connection from
    /// `peer`: `true` if it was a probe (then drop it).
    fn accepted(&self, peer: &SocketAddr) -> bool {
        let Some(index) = self.probes.lock().unwrap_or_else(|p| p.into_inner()).remove(peer) else {
            return false;
        };
        self.listeners[index].accepting.store(true, Ordering::Release);
        if self.listeners.iter().all(|l| l.accepting.load(Ordering::Acquire)) {
            self.all_accepting.store(true, Ordering::Release);
        }
        self.seen.notify_waiters();
        true
    }

    /// Connects to listener `index` once and waits to see the connection
    /// accepted here; whether it is accepting now.
    async fn probe(&self, index: usize) -> bool {
        let target = probe_target(self.listeners[index].addr);
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        };
        // The source is bound (and recorded) before connecting, so the filter
        // can't see the connection before it knows to look for it.
        let Ok(socket) = socket.and_then(|s| s.bind(SocketAddr::new(target.ip(), 0)).map(|()| s)) else {
            return false;
        };
        let Ok(source) = socket.local_addr() else { return false };
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).insert(source, index);
        if let Ok(Ok(_stream)) = tokio::time::timeout(PROBE_TIMEOUT, socket.connect(target)).await {
            let _ = tokio::time::timeout(PROBE_TIMEOUT, async {
                loop {
                    // Created before the check, so a wake-up in between is not missed.
                    let seen = self.seen.notified();
                    if self.listeners[index].accepting.load(Ordering::Acquire) {
                        return;
                    }
                    seen.await;
                }
            })
            .await;
        }
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).remove(&source);
        self.listeners[index].accepting.load(Ordering::Acquire)
    }
}

/// Where to connect to reach a listener on `addr`.
fn probe_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// Lets every connection through, except the prober's own, which it records.
#[derive(Debug)]
struct ProbeFilter(Arc<ListenerReadiness>);

#[async_trait]
impl ConnectionFilter for ProbeFilter {
    async fn should_accept(&self, peer: Option<&SocketAddr>) -> bool {
        if self.0.all_accepting() {
            return true;
        }
        !peer.is_some_and(|peer| self.0.accepted(peer))
    }
}

/// Probes every listener not yet seen accepting, until all are.
pub struct Prober(pub Arc<ListenerReadiness>);

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let readiness = &self.0;
        while !readiness.all_accepting() {
            // All at once: one listener that never answers doesn't hold up the others.
            let mut probes = tokio::task::JoinSet::new();
            for (index, listener) in readiness.listeners.iter().enumerate() {
                if !listener.accepting.load(Ordering::Acquire) {
                    let readiness = Arc::clone(readiness);
                    probes.spawn(async move { readiness.probe(index).await });
                }
            }
            probes.join_all().await;
            if readiness.all_accepting() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
        let addresses: Vec<String> = readiness.listeners.iter().map(|l| l.addr.to_string()).collect();
        tracing::info!(listeners = %addresses.join(", "), "every listener is accepting connections");
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A stand-in for one pingora accept loop: accepts on `listener` and
    /// asks `filter` about each connection, as pingora does.
    fn accept_loop(listener: TcpListener, filter: Arc<dyn ConnectionFilter>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((_stream, peer)) = listener.accept().await {
                filter.should_accept(Some(&peer)).await;
            }
        })
    }

    #[tokio::test]
    async fn a_listener_is_accepting_only_once_its_accept_loop_has_seen_a_probe() {
        // Bound and listening, but nobody accepts yet: a connect succeeds
        // (the kernel queues it), which must not count.
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, b) = (first.local_addr().unwrap(), second.local_addr().unwrap());
        let readiness = ListenerReadiness::new([a, b]);
        assert!(!readiness.probe(0).await, "queued, not accepted");
        assert!(!readiness.all_accepting());

        first.set_nonblocking(true).unwrap();
        let _first = accept_loop(TcpListener::from_std(first).unwrap(), readiness.filter());
        assert!(readiness.probe(0).await);
        assert!(!readiness.all_accepting(), "the second is not accepting yet");
        assert_eq!(readiness.states(), BTreeMap::from([(a, true), (b, false)]));

        second.set_nonblocking(true).unwrap();
        let _second = accept_loop(TcpListener::from_std(second).unwrap(), readiness.filter());
        assert!(readiness.probe(1).await);
        assert!(readiness.all_accepting());
        assert!(readiness.probes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn other_connections_pass_and_a_closed_port_is_not_accepting() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let readiness = ListenerReadiness::new([closed]);
        assert!(!readiness.probe(0).await);
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert!(readiness.filter().should_accept(Some(&client)).await);
        assert!(readiness.filter().should_accept(None).await);
    }

    #[tokio::test]
    async fn the_prober_stops_once_every_listener_accepts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = ListenerReadiness::new([SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port())]);
        let _loop = accept_loop(listener, readiness.filter());
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::time::timeout(Duration::from_secs(5), Prober(Arc::clone(&readiness)).start(rx)).await.unwrap();
        assert!(readiness.all_accepting(), "a wildcard listener is probed on loopback");
    }
}
