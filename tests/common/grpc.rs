//! The gRPC side of the harness: upstream-mock's gRPC echo service
//! in-process, and a blocking tonic client for calling it, directly or
//! through a gateway.
//!
//! The tests here are synchronous; tonic is async. `GrpcUpstream` runs the
//! service on its own runtime thread, as `Upstream` runs the HTTP mock, and
//! `GrpcClient` owns a current-thread runtime and drives every call to its
//! end, so a test reads as a sequence of calls. For what the helpers do not
//! cover (a bidi exchange step by step, say), `GrpcClient::block_on` runs any
//! future on the client's runtime with `GrpcClient::echo`.
//!
//! tonic comes from upstream-mock's re-export, so its client and the mock's
//! server are always the same version.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use upstream_mock::grpc::pb::echo_client::EchoClient;
use upstream_mock::grpc::pb::{EchoReply, EchoRequest, Failure};
use upstream_mock::grpc::tonic;
use upstream_mock::{GrpcCall, GrpcCalls, MockOptions};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

/// upstream-mock's gRPC echo service running in-process over h2c, with the
/// log of the calls that reached it. Stops on drop.
pub struct GrpcUpstream {
    pub addr: SocketAddr,
    tls: bool,
    calls: GrpcCalls,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcUpstream {
    pub fn start() -> GrpcUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        GrpcUpstream::start_on(listener, MockOptions::default())
    }

    /// Serves on a listener bound beforehand (so its address can go into a
    /// gateway config first), with the given mock options.
    pub fn start_on(listener: TcpListener, options: MockOptions) -> GrpcUpstream {
        GrpcUpstream::serve(listener, options, None)
    }

    /// Serves over TLS (HTTP/2 through ALPN) with the PEM certificate chain
    /// and key, for a gateway that reaches its upstream over TLS.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> GrpcUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        GrpcUpstream::serve(listener, MockOptions::default(), Some(Identity::from_pem(cert_pem, key_pem)))
    }

    fn serve(listener: TcpListener, options: MockOptions, tls: Option<Identity>) -> GrpcUpstream {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let tls_served = tls.is_some();
        let calls = GrpcCalls::new();
        let served_calls = calls.clone();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let stopped = async move {
                    let _ = shutdown_rx.await;
                };
                match tls {
                    // What the binary serves.
                    None => upstream_mock::serve_grpc_with_shutdown(listener, options, served_calls, stopped)
                        .await
                        .unwrap(),
                    Some(identity) => Server::builder()
                        .tls_config(ServerTlsConfig::new().identity(identity))
                        .unwrap()
                        .add_routes(upstream_mock::grpc::routes(&options, served_calls))
                        .serve_with_incoming_shutdown(TcpIncoming::from(listener), stopped)
                        .await
                        .unwrap(),
                }
            });
        });
        GrpcUpstream { addr, tls: tls_served, calls, shutdown: Some(shutdown), thread: Some(thread) }
    }

    /// Every call that reached the service so far, oldest first.
    pub fn calls(&self) -> Vec<GrpcCall> {
        self.calls.all()
    }

    /// How many calls of `method` (e.g. `"Unary"`) reached the service.
    pub fn call_count(&self, method: &str) -> usize {
        self.calls.count(method)
    }

    /// `http://IP:PORT`, for `GrpcClient::connect` (`https://IP:PORT` for
    /// one started with `start_tls`, for `GrpcClient::connect_tls`).
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a streamed response went: the replies that arrived, then either the
/// trailers (the call ended OK) or the status it ended with.
#[derive(Debug)]
pub struct Streamed {
    /// The response headers.
    pub metadata: MetadataMap,
    pub replies: Vec<EchoReply>,
    /// `Ok(trailers)`, or the error status the stream ended with (its
    /// `metadata()` holds the trailers then).
    pub end: Result<MetadataMap, Status>,
}

/// A blocking client of the echo service at one address, over h2c or TLS,
/// sending `authorization: Bearer <token>` on every call when it has one.
pub struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    echo: EchoClient<Channel>,
    authorization: Option<AsciiMetadataValue>,
}

impl GrpcClient {
    /// Connects over h2c (HTTP/2 with prior knowledge) to `uri`, e.g.
    /// `http://127.0.0.1:8080`.
    pub fn connect(uri: &str, bearer: Option<&str>) -> Result<GrpcClient, tonic::transport::Error> {
        GrpcClient::connect_endpoint(Endpoint::from_shared(uri.to_owned())?, bearer)
    }

    /// Connects over TLS (HTTP/2 through ALPN) to `uri`, e.g.
    /// `https://127.0.0.1:8443`, trusting only `ca_pem` and expecting a
    /// certificate for `domain`.
    pub fn connect_tls(
        uri: &str,
        ca_pem: &[u8],
        domain: &str,
        bearer: Option<&str>,
    ) -> Result<GrpcClient, tonic::transport::Error> {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(domain);
        GrpcClient::connect_endpoint(Endpoint::from_shared(uri.to_owned())?.tls_config(tls)?, bearer)
    }

    fn connect_endpoint(
        endpoint: Endpoint,
        bearer: Option<&str>,
    ) -> Result<GrpcClient, tonic::transport::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let endpoint = endpoint.connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(20));
        let channel = runtime.block_on(endpoint.connect())?;
        let authorization = bearer.map(|token| format!("Bearer {token}").parse().unwrap());
        Ok(GrpcClient { runtime, echo: EchoClient::new(channel), authorization })
    }

    /// `message` as a request carrying the client's bearer token, if any.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }

    /// Runs `future` on the client's runtime, for calls the helpers below
    /// do not make (use `echo()` and `request()` inside it).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The generated client, sharing this client's connection.
    pub fn echo(&self) -> EchoClient<Channel> {
        self.echo.clone()
    }

    pub fn unary(&self, message: EchoRequest) -> Result<Response<EchoReply>, Status> {
        self.unary_with(self.request(message))
    }

    /// `Unary` with a request the test built (extra metadata, say).
    pub fn unary_with(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let mut echo = self.echo();
        self.block_on(async move { echo.unary(request).await })
    }

    /// `ServerStream`; `Err` when the call failed before its response began.
    pub fn server_stream(&self, message: EchoRequest) -> Result<Streamed, Status> {
        let mut echo = self.echo();
        let request = self.request(message);
        self.block_on(async move { collect(echo.server_stream(request).await?).await })
    }

    pub fn client_stream(&self, messages: Vec<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let mut echo = self.echo();
        let request = self.request(request_stream(messages));
        self.block_on(async move { echo.client_stream(request).await })
    }

    /// `Bidi` with every message sent up front; `Err` when the call failed
    /// before its response began.
    pub fn bidi(&self, messages: Vec<EchoRequest>) -> Result<Streamed, Status> {
        let mut echo = self.echo();
        let request = self.request(request_stream(messages));
        self.block_on(async move { collect(echo.bidi(request).await?).await })
    }

    /// `Fail`, asking for `code` and `message`: the status that came back.
    pub fn fail(&self, code: Code, message: &str) -> Status {
        let mut echo = self.echo();
        let request = self.request(Failure { code: code as i32, message: message.to_owned() });
        match self.block_on(async move { echo.fail(request).await }) {
            Ok(response) => panic!("Fail answered OK: {response:?}"),
            Err(status) => status,
        }
    }
}

/// An `EchoRequest` with just a message.
pub fn echo_request(message: &str) -> EchoRequest {
    EchoRequest { message: message.to_owned(), ..EchoRequest::default() }
}

/// Reads a streamed response to its end.
async fn collect(response: Response<tonic::Streaming<EchoReply>>) -> Result<Streamed, Status> {
    let (metadata, mut stream, _) = response.into_parts();
    let mut replies = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => break stream.trailers().await.map(Option::unwrap_or_default),
            Err(status) => break Err(status),
        }
    };
    Ok(Streamed { metadata, replies, end })
}

/// `messages` as a client-side request stream.
fn request_stream(
    messages: Vec<EchoRequest>,
) -> impl futures_util::Stream<Item = EchoRequest> + Send + 'static {
    futures_util::stream::iter(messages)
}
