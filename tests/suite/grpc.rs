//! gRPC through the gateway: a tonic client calls upstream-mock's echo service
//! over HTTP/2 (prior knowledge, and TLS with ALPN), the gateway speaks h2c
//! to it (`upstream.protocol = "h2c"`), and routes are gRPC method paths.
//! Refusals are gRPC statuses (UNAUTHENTICATED, PERMISSION_DENIED,
//! RESOURCE_EXHAUSTED) with the gateway's error code beside them, and a
//! refused call never reaches the service; allowed calls stream both ways
//! with their trailers, carrying exactly the identity the gateway decided.

use gatehouse::config::file::{FileConfig, Word};
use gatehouse::config::UpstreamProtocol;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use upstream_mock::grpc::pb::{EchoRequest, Failure};
use upstream_mock::grpc::tonic::{Code, Status};
use upstream_mock::grpc::{ECHO_TRAILER, ECHO_TRAILER_VALUE};

use crate::common::config::{route, spanned, text};
use crate::common::grpc::{echo_request, GrpcClient, GrpcUpstream};
use crate::common::tls::{localhost_cert, serve_tls};
use crate::common::{free_port, Gateway, Options, Upstream};

const SERVICE: &str = "/gatehouse.echo.v1.Echo";

/// The gateway in front of the gRPC service: every method needs a token,
/// `ServerStream` an admin, `ClientStream` has a budget of 2 a minute.
fn grpc_gateway(grpc: &GrpcUpstream, extra: impl Fn(&mut FileConfig) + 'static) -> (Upstream, Gateway) {
    let http = Upstream::start();
    let addr = grpc.addr.to_string();
    let gw = Gateway::start(
        &http,
        Options::default()
            .config(move |c| {
                c.server.h2c = Some(true);
                let u = c.upstream.get_mut();
                u.addresses = vec![spanned(addr.clone())];
                u.protocol = Some(spanned(Word(UpstreamProtocol::H2c)));
                let mut budgeted = route(&format!("{SERVICE}/ClientStream"), &[], "any");
                budgeted.get_mut().rate = text("2/m");
                c.routes.extend([
                    route(&format!("{SERVICE}/**"), &[], "any"),
                    route(&format!("{SERVICE}/ServerStream"), &[], "admin"),
                    budgeted,
                ]);
            })
            .config(extra),
    );
    (http, gw)
}

fn client(gw: &Gateway, token: Option<&str>) -> GrpcClient {
    GrpcClient::connect(&format!("http://{}", gw.addr), token).unwrap()
}

/// The refusal's status code, its readable message and the gateway's code.
fn refusal(status: &Status) -> (Code, String, String) {
    let code =
        status.metadata().get("gatehouse-error").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status.code(), status.message().to_owned(), code)
}

/// An access token for `sub` signed with the gateway's secret, expired an hour ago.
fn expired_token(gw: &Gateway, sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": sub, "jti": "expired-jti-000000000", "iat": now - 7200, "nbf": now - 7200,
        "exp": now - 3600, "iss": "gatehouse", "aud": "gatehouse", "type": "access", "fresh": true,
        "is_admin": false, "ver": 0, "fam": "f"});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(gw.jwt_secret.as_bytes()))
        .unwrap()
}

#[test]
fn refused_calls_are_grpc_errors_and_never_reach_the_service() {
    let grpc = GrpcUpstream::start();
    let (_http, gw) = grpc_gateway(&grpc, |_| {});
    let user = gw.register("gia@example.com", "gia", "gia-password-1")["id"].to_string();
    let (token, _) = gw.login("gia@example.com", "gia-password-1");
    let (revoked, _) = gw.login("gia@example.com", "gia-password-1");
    assert_eq!(gw.post("/logout", Some(&revoked), json!({})).0, 200);

    let cases = [
        (None, Code::Unauthenticated, "missing_token"),
        (Some("not.a.token".to_owned()), Code::Unauthenticated, "invalid_token"),
        (Some(expired_token(&gw, &user)), Code::Unauthenticated, "token_expired"),
        (Some(revoked), Code::Unauthenticated, "token_revoked"),
    ];
    for (bearer, want, code) in cases {
        let status = client(&gw, bearer.as_deref()).unary(echo_request("hi")).unwrap_err();
        let (got, message, got_code) = refusal(&status);
        assert_eq!((got, got_code.as_str()), (want, code), "{status:?}");
        assert!(message.len() > 10 && !message.contains('%'), "a readable message: {message:?}");
    }
    // A user on the admin-only method: PERMISSION_DENIED, the stream never starts.
    let status = client(&gw, Some(&token)).server_stream(echo_request("hi")).unwrap_err();
    assert_eq!(refusal(&status).0, Code::PermissionDenied, "{status:?}");
    assert_eq!(refusal(&status).2, "admin_required");
    // Over its budget: RESOURCE_EXHAUSTED, with gRPC's own retry hint.
    let user_client = client(&gw, Some(&token));
    for _ in 0..2 {
        user_client.client_stream(vec![echo_request("a")]).unwrap();
    }
    let status = user_client.client_stream(vec![echo_request("a")]).unwrap_err();
    assert_eq!((refusal(&status).0, refusal(&status).2.as_str()), (Code::ResourceExhausted, "rate_limited"));
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some(), "{status:?}");

    let reached: Vec<String> = grpc.calls().iter().map(|c| c.method.clone()).collect();
    assert_eq!(reached, ["ClientStream", "ClientStream"], "only the allowed calls reached the service");
}

#[test]
fn allowed_calls_stream_both_ways_with_trailers_and_the_decided_identity() {
    let grpc = GrpcUpstream::start();
    let (_http, gw) = grpc_gateway(&grpc, |_| {});
    let id = gw.register("gus@example.com", "gus", "gus-password-1")["id"].to_string();
    let out = gw.cli(&["user", "roles", "add", "gus@example.com", "editor"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (token, _) = gw.login("gus@example.com", "gus-password-1");
    let user = client(&gw, Some(&token));

    // Unary, with forged identity metadata that must not arrive.
    let mut request = user.request(echo_request("hello"));
    for (name, value) in [("x-auth-user-id", "999"), ("x-auth-roles", "admin"), ("x-auth-admin", "true")] {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    let reply = user.unary_with(request).unwrap().into_inner();
    assert_eq!((reply.message.as_str(), reply.user_id.as_deref()), ("hello", Some(id.as_str())));
    assert_eq!(reply.roles, ["editor"]);
    assert_eq!(reply.metadata.get("x-auth-admin").map(String::as_str), Some("false"), "{:?}", reply.metadata);
    assert_eq!(reply.path, format!("{SERVICE}/Unary"));
    // gRPC servers require `te: trailers` (C-core refuses a call without it).
    assert_eq!(reply.metadata.get("te").map(String::as_str), Some("trailers"), "{:?}", reply.metadata);

    // Client streaming and bidirectional streaming, trailers through.
    let counted = user.client_stream(vec![echo_request("a"), echo_request("b"), echo_request("c")]).unwrap();
    assert_eq!(counted.into_inner().count, 3);
    let bidi = user.bidi(vec![echo_request("x"), echo_request("y")]).unwrap();
    let echoed: Vec<&str> = bidi.replies.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(echoed, ["x", "y"]);
    let trailers = bidi.end.expect("the stream ended OK");
    assert_eq!(trailers.get(ECHO_TRAILER).and_then(|v| v.to_str().ok()), Some(ECHO_TRAILER_VALUE));

    // Server streaming, for an admin.
    let (admin_token, _) = gw.admin_login();
    let admin = client(&gw, Some(&admin_token));
    let streamed = admin.server_stream(EchoRequest { count: 5, ..echo_request("s") }).unwrap();
    assert_eq!(streamed.replies.len(), 5);
    assert!(streamed.replies.iter().all(|r| r.user_id.as_deref() == Some("1")));
    let trailers = streamed.end.expect("the stream ended OK");
    assert_eq!(trailers.get(ECHO_TRAILER).and_then(|v| v.to_str().ok()), Some(ECHO_TRAILER_VALUE));

    // The service's own error status passes through unchanged, with its trailers.
    let status = user.fail(Code::NotFound, "no such order");
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such order"));
    assert!(status.metadata().get("gatehouse-error").is_none(), "not the gateway's refusal: {status:?}");

    // A stream that ends in an error after some replies: the replies, then the status.
    let failing = admin
        .server_stream(EchoRequest {
            count: 2,
            fail_with: Some(Failure { code: Code::Aborted as i32, message: "stop".into() }),
            ..echo_request("f")
        })
        .unwrap();
    assert_eq!(failing.replies.len(), 2);
    assert_eq!(failing.end.unwrap_err().code(), Code::Aborted);
}

#[test]
fn grpc_over_tls_negotiates_http2_by_alpn() {
    let grpc = GrpcUpstream::start();
    let cert = localhost_cert();
    let port = free_port();
    let tls = serve_tls(&cert, port, None);
    let (_http, gw) = grpc_gateway(&grpc, move |c| {
        c.server.h2c = Some(false);
        tls(c);
    });
    let (token, _) = gw.admin_login();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let uri = format!("https://127.0.0.1:{port}");
    let tls = GrpcClient::connect_tls(&uri, cert.pem.as_bytes(), "localhost", Some(&token)).unwrap();
    assert_eq!(tls.unary(echo_request("over tls")).unwrap().into_inner().user_id.as_deref(), Some("1"));
    let anonymous = GrpcClient::connect_tls(&uri, cert.pem.as_bytes(), "localhost", None).unwrap();
    assert_eq!(refusal(&anonymous.unary(echo_request("x")).unwrap_err()).0, Code::Unauthenticated);
}

/// An upstream that can't be reached is a gRPC UNAVAILABLE to a gRPC client
/// (502 `upstream_unavailable` to others), with the gateway's code beside it.
#[test]
fn an_unreachable_service_is_unavailable() {
    let mut grpc = GrpcUpstream::start();
    let (_http, gw) = grpc_gateway(&grpc, |c| {
        c.upstream.get_mut().health_check = Some(Word(gatehouse::config::file::HealthCheck::None));
    });
    grpc.stop();
    let (token, _) = gw.admin_login();
    let status = client(&gw, Some(&token)).unary(echo_request("anyone there?")).unwrap_err();
    assert_eq!(refusal(&status).0, Code::Unavailable, "{status:?}");
    assert_eq!(refusal(&status).2, "upstream_unavailable");
}

/// gRPC is HTTP/2 only: over HTTP/1.1 a refusal is the JSON one with its real
/// status, whatever the content type says, so nothing in front of the
/// gateway counts a refused request as a 200.
#[test]
fn an_http1_request_with_a_grpc_content_type_gets_the_json_refusal() {
    let grpc = GrpcUpstream::start();
    let (_http, gw) = grpc_gateway(&grpc, |_| {});
    let resp = gw
        .http
        .post(gw.url(&format!("{SERVICE}/Unary")))
        .header("content-type", "application/grpc")
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("grpc-status").is_none());
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"], "missing_token");
    assert!(grpc.calls().is_empty());
}
