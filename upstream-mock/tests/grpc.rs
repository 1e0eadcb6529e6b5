//! End-to-end tests of the gRPC echo service over h2c on loopback.
//!
//! Each test serves its own echo service on `127.0.0.1:0` with
//! `serve_grpc_with_shutdown` and calls it with the generated tonic client,
//! as the gateway's tests will through the gateway.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request};
use upstream_mock::grpc::pb::echo_client::EchoClient;
use upstream_mock::grpc::pb::{EchoRequest, Failure};
use upstream_mock::grpc::{ECHO_TRAILER, ECHO_TRAILER_VALUE};
use upstream_mock::{serve_grpc_with_shutdown, GrpcCall, GrpcCalls, MockOptions};

struct GrpcMock {
    addr: SocketAddr,
    calls: GrpcCalls,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl GrpcMock {
    async fn start(options: MockOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = GrpcCalls::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_grpc_with_shutdown(listener, options, calls.clone(), async {
            let _ = stopped.await;
        }));
        Self { addr, calls, stop, task }
    }

    async fn default() -> Self {
        Self::start(MockOptions::default()).await
    }

    async fn client(&self) -> EchoClient<Channel> {
        EchoClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap().unwrap();
    }
}

fn message(text: &str) -> EchoRequest {
    EchoRequest { message: text.to_owned(), ..EchoRequest::default() }
}

/// `request` with the identity headers the gateway would inject.
fn as_user<T>(mut request: Request<T>, user_id: &str, roles: &str) -> Request<T> {
    request.metadata_mut().insert("x-auth-user-id", user_id.parse().unwrap());
    request.metadata_mut().insert("x-auth-roles", roles.parse().unwrap());
    request
}

fn assert_echo_trailer(metadata: &MetadataMap) {
    assert_eq!(metadata.get(ECHO_TRAILER).map(|value| value.to_str().unwrap()), Some(ECHO_TRAILER_VALUE));
}

#[tokio::test]
async fn unary_echoes_path_metadata_identity_and_ends_with_the_trailer() {
    let mock = GrpcMock::default().await;
    let mut client = mock.client().await;
    let mut request = as_user(Request::new(message("hello")), "42", "editor,admin");
    request.metadata_mut().append("x-copy", "a".parse().unwrap());
    request.metadata_mut().append("x-copy", "b".parse().unwrap());
    request.metadata_mut().insert("authorization", "Bearer abc".parse().unwrap());

    let response = client.unary(request).await.unwrap();
    // Tonic merges a unary call's trailers into the response metadata.
    assert_echo_trailer(response.metadata());
    let reply = response.into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.count, 1);
    assert_eq!(reply.method, "Unary");
    assert_eq!(reply.path, "/gatehouse.echo.v1.Echo/Unary");
    assert_eq!(reply.user_id.as_deref(), Some("42"));
    assert_eq!(reply.roles, ["editor", "admin"]);
    assert_eq!(reply.metadata["x-copy"], "a, b");
    assert_eq!(reply.metadata["authorization"], "Bearer abc");
    assert_eq!(reply.metadata["x-auth-user-id"], "42");
    assert_eq!(reply.metadata["te"], "trailers");
    assert_eq!(reply.metadata["content-type"], "application/grpc");

    assert_eq!(mock.calls.all(), [GrpcCall { method: "Unary".to_owned(), user_id: Some("42".to_owned()) }]);
    mock.stop().await;
}

#[tokio::test]
async fn anonymous_calls_have_no_identity_and_are_logged_without_a_user() {
    let mock = GrpcMock::default().await;
    let reply = mock.client().await.unary(message("x")).await.unwrap().into_inner();
    assert_eq!(reply.user_id, None);
    assert!(reply.roles.is_empty());
    assert!(!reply.metadata.contains_key("x-auth-user-id"));
    assert_eq!(mock.calls.all(), [GrpcCall { method: "Unary".to_owned(), user_id: None }]);
    mock.stop().await;
}

#[tokio::test]
async fn identity_headers_follow_the_configured_prefix() {
    let mock =
        GrpcMock::start(MockOptions { identity_prefix: "X-Gw-".to_owned(), ..MockOptions::default() }).await;
    let mut request = as_user(Request::new(message("x")), "7", "admin");
    request.metadata_mut().insert("x-gw-user-id", "8".parse().unwrap());
    let reply = mock.client().await.unary(request).await.unwrap().into_inner();
    assert_eq!(reply.user_id.as_deref(), Some("8"));
    assert!(reply.roles.is_empty(), "x-auth-roles is not the roles header under X-Gw-");
    assert_eq!(mock.calls.all()[0].user_id.as_deref(), Some("8"));
    mock.stop().await;
}

#[tokio::test]
async fn server_stream_sends_count_numbered_replies_then_the_trailer() {
    let mock = GrpcMock::default().await;
    let mut client = mock.client().await;
    let request = EchoRequest { message: "tick".to_owned(), count: 3, ..EchoRequest::default() };
    let mut stream =
        client.server_stream(as_user(Request::new(request), "5", "")).await.unwrap().into_inner();
    let mut numbers = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        assert_eq!((reply.message.as_str(), reply.method.as_str()), ("tick", "ServerStream"));
        assert_eq!(reply.user_id.as_deref(), Some("5"));
        numbers.push(reply.count);
    }
    assert_eq!(numbers, [1, 2, 3]);
    assert_echo_trailer(&stream.trailers().await.unwrap().unwrap());

    // No replies at all still ends with the trailers.
    let request = EchoRequest { count: 0, ..EchoRequest::default() };
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_none());
    assert_echo_trailer(&stream.trailers().await.unwrap().unwrap());

    assert_eq!(mock.calls.count("ServerStream"), 2);
    mock.stop().await;
}

#[tokio::test]
async fn server_stream_pauses_between_replies() {
    let mock = GrpcMock::default().await;
    let request = EchoRequest { count: 3, interval_ms: 150, ..EchoRequest::default() };
    let started = Instant::now();
    let mut stream = mock.client().await.server_stream(request).await.unwrap().into_inner();
    let mut replies = 0;
    while stream.message().await.unwrap().is_some() {
        replies += 1;
    }
    assert_eq!(replies, 3);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    mock.stop().await;
}

#[tokio::test]
async fn client_stream_concatenates_and_counts_messages() {
    let mock = GrpcMock::default().await;
    let messages = tokio_stream::iter(["a", "b", "c"].map(message));
    let response =
        mock.client().await.client_stream(as_user(Request::new(messages), "9", "viewer")).await.unwrap();
    assert_echo_trailer(response.metadata());
    let reply = response.into_inner();
    assert_eq!((reply.message.as_str(), reply.count), ("abc", 3));
    assert_eq!(reply.method, "ClientStream");
    assert_eq!(reply.user_id.as_deref(), Some("9"));
    assert_eq!(reply.roles, ["viewer"]);
    assert_eq!(mock.calls.count("ClientStream"), 1);
    mock.stop().await;
}

#[tokio::test]
async fn bidi_answers_each_message_as_it_arrives() {
    let mock = GrpcMock::default().await;
    let (requests, outbound) = mpsc::channel(1);
    let request = as_user(Request::new(ReceiverStream::new(outbound)), "3", "admin");
    let mut replies = mock.client().await.bidi(request).await.unwrap().into_inner();
    // Each reply is awaited before the next message is sent: nothing is
    // buffered until the client's side ends.
    for (text, number) in [("one", 1), ("two", 2)] {
        requests.send(message(text)).await.unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!((reply.message.as_str(), reply.count), (text, number));
        assert_eq!(reply.method, "Bidi");
        assert_eq!(reply.user_id.as_deref(), Some("3"));
        assert_eq!(reply.roles, ["admin"]);
    }
    drop(requests);
    assert!(replies.message().await.unwrap().is_none());
    assert_echo_trailer(&replies.trailers().await.unwrap().unwrap());
    assert_eq!(mock.calls.all(), [GrpcCall { method: "Bidi".to_owned(), user_id: Some("3".to_owned()) }]);
    mock.stop().await;
}

#[tokio::test]
async fn fail_answers_with_the_status_asked_for() {
    let mock = GrpcMock::default().await;
    let mut client = mock.client().await;

    let failure = Failure { code: Code::PermissionDenied as i32, message: "not yours".to_owned() };
    let status = client.fail(as_user(Request::new(failure), "4", "")).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "not yours"));
    assert_echo_trailer(status.metadata());

    // OK is not a failure.
    let status = client.fail(Failure { code: 0, message: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // The same through a request flag on Unary.
    let failure = Failure { code: Code::NotFound as i32, message: "gone".to_owned() };
    let request = EchoRequest { fail_with: Some(failure), ..message("x") };
    let status = client.unary(request).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "gone"));

    assert_eq!(mock.calls.count("Fail"), 2);
    assert_eq!(mock.calls.count("Unary"), 1);
    assert_eq!(mock.calls.all()[0].user_id.as_deref(), Some("4"));
    mock.stop().await;
}

#[tokio::test]
async fn streams_can_end_with_a_status_after_their_replies() {
    let mock = GrpcMock::default().await;
    let mut client = mock.client().await;

    // ServerStream: the replies, then the status in the trailers.
    let failure = Failure { code: Code::Unavailable as i32, message: "later".to_owned() };
    let request = EchoRequest { count: 2, fail_with: Some(failure), ..EchoRequest::default() };
    let mut stream = client.server_stream(request).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().count, 1);
    assert_eq!(stream.message().await.unwrap().unwrap().count, 2);
    let status = stream.message().await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "later"));
    assert_echo_trailer(status.metadata());

    // Bidi: a reply for the first message, the status for the second.
    let failure = Failure { code: Code::Aborted as i32, message: "stop".to_owned() };
    let messages =
        tokio_stream::iter([message("first"), EchoRequest { fail_with: Some(failure), ..message("") }]);
    let mut replies = client.bidi(messages).await.unwrap().into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap().message, "first");
    let status = replies.message().await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Aborted, "stop"));

    // ClientStream: the status instead of the reply.
    let failure = Failure { code: Code::ResourceExhausted as i32, message: "full".to_owned() };
    let messages =
        tokio_stream::iter([message("a"), EchoRequest { fail_with: Some(failure), ..message("") }]);
    let status = client.client_stream(messages).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::ResourceExhausted, "full"));

    assert_eq!(mock.calls.len(), 3);
    mock.stop().await;
}

/// With `--grpc-listen`, the binary logs both addresses, serves both, and
/// exits 0 on SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn binary_serves_grpc_beside_http() {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_upstream-mock"))
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--identity-prefix", "X-Test-"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let http_addr = logged_addr(&mut lines, "upstream-mock listening on ").await;
    let grpc_addr = logged_addr(&mut lines, "upstream-mock gRPC (h2c) listening on ").await;
    assert_ne!(http_addr, grpc_addr);

    let mut client = EchoClient::connect(format!("http://{grpc_addr}")).await.unwrap();
    let mut request = Request::new(message("hi"));
    request.metadata_mut().insert("x-test-user-id", "11".parse().unwrap());
    let reply = client.unary(request).await.unwrap().into_inner();
    assert_eq!((reply.message.as_str(), reply.user_id.as_deref()), ("hi", Some("11")));
    let health = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = health.get(format!("http://{http_addr}/healthz")).send().await.unwrap().status();
    assert_eq!(status, reqwest::StatusCode::OK);
    drop(client);
    drop(health);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The address in the next line of `lines`, which must start with `prefix`.
#[cfg(unix)]
async fn logged_addr(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    prefix: &str,
) -> SocketAddr {
    let line =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    line.strip_prefix(prefix).unwrap_or_else(|| panic!("unexpected log line {line:?}")).parse().unwrap()
}
