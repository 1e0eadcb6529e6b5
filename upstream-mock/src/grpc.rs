//! The gRPC echo service (`proto/echo.proto`), for the gateway's HTTP/2 and
//! gRPC tests.
//!
//! A gateway in front of gRPC services has to carry more than HTTP/1 JSON
//! does: HTTP/2 streams in both directions, trailers (where gRPC puts its
//! status), and error statuses that must reach the client unchanged. This
//! service makes each of those observable. Every reply reports what reached
//! the service (the `:path`, every header, the identity the gateway
//! injected); every response ends with the custom trailer
//! [`ECHO_TRAILER`]` = `[`ECHO_TRAILER_VALUE`]; `Fail` and the `fail_with`
//! field answer with the status a test chooses; and [`GrpcCalls`] logs every
//! call that reached a handler, so a test can show that a call the gateway
//! refused never got here.
//!
//! It is served over h2c (cleartext HTTP/2 with prior knowledge), which is
//! what gRPC servers inside a cluster speak: the gateway terminates TLS and
//! talks plain HTTP/2 to them.
//!
//! Tonic has no way for a handler to add trailers to a successful response,
//! so a middleware in front of the generated server reads each request's
//! headers for the handlers (tonic hands them neither the `:path` nor the raw
//! headers) and adds the echo trailer to whatever trailers tonic writes.
//!
//! The generated client ([`pb::echo_client::EchoClient`]) and messages are
//! public, and tonic is re-exported ([`tonic`]), so the gateway's tests call
//! the service with the very tonic this crate builds against.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status, Streaming};

use crate::identity::IdentityHeaders;
use crate::MockOptions;
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest, Failure};

pub use tonic;

/// The messages, server and client generated from `proto/echo.proto`
/// (package `gatehouse.echo.v1`).
pub mod pb {
    tonic::include_proto!("gatehouse.echo.v1");
}

/// The trailer every response of the echo service ends with.
pub const ECHO_TRAILER: &str = "x-echo-trailer";
/// The value of [`ECHO_TRAILER`].
pub const ECHO_TRAILER_VALUE: &str = "done";
/// Most replies `ServerStream` sends, whatever `count` asks.
pub const MAX_STREAM_REPLIES: u32 = 1_000;
/// Longest pause `ServerStream` makes between replies, whatever
/// `interval_ms` asks.
pub const MAX_INTERVAL_MS: u32 = 10_000;

const ECHO_TRAILER_NAME: HeaderName = HeaderName::from_static(ECHO_TRAILER);
/// Replies a stream may hold before the handler waits for the client.
const STREAM_BUFFER: usize = 4;

/// One call that reached the echo service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// The method name, e.g. `"Unary"`.
    pub method: String,
    /// The `<prefix>user-id` header the call carried, if any.
    pub user_id: Option<String>,
}

/// The log of calls the echo service handled, shared by every clone: keep
/// one and pass a clone to [`serve_grpc_with_shutdown`] or [`routes`].
#[derive(Debug, Clone, Default)]
pub struct GrpcCalls {
    log: Arc<Mutex<Vec<GrpcCall>>>,
}

impl GrpcCalls {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, oldest first.
    pub fn all(&self) -> Vec<GrpcCall> {
        self.lock().clone()
    }

    /// How many calls reached the service.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no call reached the service.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many calls of `method` (e.g. `"Unary"`) reached the service.
    pub fn count(&self, method: &str) -> usize {
        self.lock().iter().filter(|call| call.method == method).count()
    }

    fn record(&self, call: GrpcCall) {
        self.lock().push(call);
    }

    /// The log stays usable after a panic elsewhere: every push is whole.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<GrpcCall>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The echo service as tonic routes, with the middleware that feeds it
/// request headers and adds the echo trailer; calls are logged in `calls`.
/// For serving beside other gRPC services; [`serve_grpc_with_shutdown`]
/// serves it alone.
pub fn routes(options: &MockOptions, calls: GrpcCalls) -> Routes {
    let identity = IdentityHeaders::new(&options.identity_prefix);
    let router = Routes::new(EchoServer::new(EchoService { calls }))
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(identity, describe_call));
    Routes::from(router)
}

/// Serves the echo service over h2c on `listener` until `shutdown`
/// completes, then stops accepting, lets open calls finish and returns.
/// Every call handled is logged in `calls`. `options.verify` is not applied:
/// verify mode is the HTTP mock's.
pub async fn serve_grpc_with_shutdown(
    listener: TcpListener,
    options: MockOptions,
    calls: GrpcCalls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tonic::transport::Server::builder()
        .add_routes(routes(&options, calls))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await
        .map_err(std::io::Error::other)
}

/// What the middleware read from a request, for the handler it reaches.
#[derive(Debug, Clone)]
struct ReceivedCall {
    path: String,
    metadata: BTreeMap<String, String>,
    user_id: Option<String>,
    roles: Vec<String>,
}

impl ReceivedCall {
    fn read(identity: &IdentityHeaders, path: &str, headers: &HeaderMap) -> Self {
        let metadata = headers
            .keys()
            .map(|name| {
                let copies: Vec<_> = headers
                    .get_all(name)
                    .iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()))
                    .collect();
                (name.as_str().to_owned(), copies.join(", "))
            })
            .collect();
        Self {
            path: path.to_owned(),
            metadata,
            user_id: identity.user_id(headers),
            roles: identity.roles(headers).unwrap_or_default(),
        }
    }

    /// The method name: the last segment of `/package.Service/Method`.
    fn method(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    fn reply(&self, message: String, count: u32) -> EchoReply {
        EchoReply {
            message,
            count,
            method: self.method().to_owned(),
            path: self.path.clone(),
            metadata: self.metadata.clone(),
            user_id: self.user_id.clone(),
            roles: self.roles.clone(),
        }
    }
}

/// Middleware in front of the generated server: hands the handlers what
/// they cannot see themselves and adds the echo trailer to the response.
async fn describe_call(
    State(identity): State<IdentityHeaders>,
    mut request: Request,
    next: Next,
) -> Response {
    let call = ReceivedCall::read(&identity, request.uri().path(), request.headers());
    request.extensions_mut().insert(call);
    let mut response = next.run(request).await;
    if response.headers().contains_key("grpc-status") {
        // Trailers-only (a call failed before any reply): the headers are
        // the trailers and the body is empty.
        response.headers_mut().insert(ECHO_TRAILER_NAME, HeaderValue::from_static(ECHO_TRAILER_VALUE));
        response
    } else {
        response.map(|body| Body::new(WithEchoTrailer { inner: body }))
    }
}

/// A response body whose trailers frame gains the echo trailer.
struct WithEchoTrailer {
    inner: Body,
}

impl HttpBody for WithEchoTrailer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map_ok(|mut frame| {
            if let Some(trailers) = frame.trailers_mut() {
                trailers.insert(ECHO_TRAILER_NAME, HeaderValue::from_static(ECHO_TRAILER_VALUE));
            }
            frame
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The handlers: every call is logged on arrival, then answered.
struct EchoService {
    calls: GrpcCalls,
}

impl EchoService {
    /// Logs the call and returns what the middleware read from it.
    fn receive<T>(&self, request: &tonic::Request<T>) -> Result<ReceivedCall, Status> {
        let call = request
            .extensions()
            .get::<ReceivedCall>()
            .cloned()
            .ok_or_else(|| Status::internal("the echo service was served without its middleware"))?;
        self.calls.record(GrpcCall { method: call.method().to_owned(), user_id: call.user_id.clone() });
        Ok(call)
    }
}

type ReplyStream = ReceiverStream<Result<EchoReply, Status>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        let call = self.receive(&request)?;
        let request = request.into_inner();
        if let Some(failure) = request.fail_with {
            return Err(failure_status(&failure));
        }
        Ok(tonic::Response::new(call.reply(request.message, 1)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<ReplyStream>, Status> {
        let call = self.receive(&request)?;
        let request = request.into_inner();
        let count = request.count.min(MAX_STREAM_REPLIES);
        let interval = Duration::from_millis(u64::from(request.interval_ms.min(MAX_INTERVAL_MS)));
        let (replies, stream) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            for number in 1..=count {
                if number > 1 {
                    tokio::time::sleep(interval).await;
                }
                if replies.send(Ok(call.reply(request.message.clone(), number))).await.is_err() {
                    return; // the client went away
                }
            }
            if let Some(failure) = request.fail_with {
                let _ = replies.send(Err(failure_status(&failure))).await;
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(stream)))
    }

    async fn client_stream(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        let call = self.receive(&request)?;
        let mut inbound = request.into_inner();
        let mut text = String::new();
        let mut count = 0_u32;
        while let Some(message) = inbound.message().await? {
            if let Some(failure) = message.fail_with {
                return Err(failure_status(&failure));
            }
            count = count.saturating_add(1);
            text.push_str(&message.message);
        }
        Ok(tonic::Response::new(call.reply(text, count)))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<ReplyStream>, Status> {
        let call = self.receive(&request)?;
        let mut inbound = request.into_inner();
        let (replies, stream) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let mut count = 0_u32;
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = replies.send(Err(status)).await;
                        return;
                    }
                };
                if let Some(failure) = message.fail_with {
                    let _ = replies.send(Err(failure_status(&failure))).await;
                    return;
                }
                count = count.saturating_add(1);
                if replies.send(Ok(call.reply(message.message, count))).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(stream)))
    }

    async fn fail(&self, request: tonic::Request<Failure>) -> Result<tonic::Response<EchoReply>, Status> {
        self.receive(&request)?;
        Err(failure_status(request.get_ref()))
    }
}

/// The status a [`Failure`] asks for; `INVALID_ARGUMENT` when its code is OK
/// or not a gRPC status code.
fn failure_status(failure: &Failure) -> Status {
    match failure.code {
        1..=16 => Status::new(Code::from(failure.code), failure.message.clone()),
        other => Status::invalid_argument(format!(
            "fail_with.code must be a gRPC status code from 1 to 16, not {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_status_keeps_code_and_message_and_refuses_ok() {
        let status = failure_status(&Failure { code: 7, message: "no entry".to_owned() });
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "no entry"));
        for code in [0, 17, -1] {
            let status = failure_status(&Failure { code, message: "x".to_owned() });
            assert_eq!(status.code(), Code::InvalidArgument, "code {code}");
        }
    }

    #[test]
    fn received_call_reads_method_metadata_and_identity() {
        let mut headers = HeaderMap::new();
        headers.append("x-auth-user-id", HeaderValue::from_static("42"));
        headers.append("x-auth-roles", HeaderValue::from_static("editor,admin"));
        headers.append("x-copy", HeaderValue::from_static("a"));
        headers.append("x-copy", HeaderValue::from_static("b"));
        let call =
            ReceivedCall::read(&IdentityHeaders::new("X-Auth-"), "/gatehouse.echo.v1.Echo/Bidi", &headers);
        let reply = call.reply("hi".to_owned(), 3);
        assert_eq!(reply.method, "Bidi");
        assert_eq!(reply.path, "/gatehouse.echo.v1.Echo/Bidi");
        assert_eq!(reply.metadata["x-copy"], "a, b");
        assert_eq!(reply.user_id.as_deref(), Some("42"));
        assert_eq!(reply.roles, ["editor", "admin"]);
        assert_eq!((reply.message.as_str(), reply.count), ("hi", 3));
    }
}
