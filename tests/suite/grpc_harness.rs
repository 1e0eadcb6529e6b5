//! The gRPC harness itself (`tests/common/grpc.rs`), against upstream-mock's
//! echo service directly: what the gateway's gRPC tests build on must work
//! without a gateway before it can tell anything about one.

use upstream_mock::grpc::pb::EchoRequest;
use upstream_mock::grpc::tonic::Code;
use upstream_mock::grpc::{ECHO_TRAILER, ECHO_TRAILER_VALUE};

use crate::common::grpc::{echo_request, GrpcClient, GrpcUpstream};

#[test]
fn client_calls_the_echo_service_with_its_bearer_token() {
    let upstream = GrpcUpstream::start();
    let client = GrpcClient::connect(&upstream.uri(), Some("t0ken")).unwrap();

    let response = client.unary(echo_request("hi")).unwrap();
    let trailer = response.metadata().get(ECHO_TRAILER).unwrap();
    assert_eq!(trailer.to_str().unwrap(), ECHO_TRAILER_VALUE);
    let reply = response.into_inner();
    assert_eq!((reply.message.as_str(), reply.method.as_str()), ("hi", "Unary"));
    assert_eq!(reply.metadata["authorization"], "Bearer t0ken");
    assert_eq!(reply.user_id, None);

    let streamed = client.server_stream(EchoRequest { count: 2, ..echo_request("s") }).unwrap();
    assert_eq!(streamed.replies.iter().map(|r| r.count).collect::<Vec<_>>(), [1, 2]);
    let trailers = streamed.end.unwrap();
    assert_eq!(trailers.get(ECHO_TRAILER).unwrap().to_str().unwrap(), ECHO_TRAILER_VALUE);

    let reply = client.client_stream(vec![echo_request("a"), echo_request("b")]).unwrap().into_inner();
    assert_eq!((reply.message.as_str(), reply.count), ("ab", 2));

    let streamed = client.bidi(vec![echo_request("x"), echo_request("y")]).unwrap();
    let echoed: Vec<_> = streamed.replies.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(echoed, ["x", "y"]);
    assert!(streamed.end.is_ok());

    let status = client.fail(Code::Unauthenticated, "who?");
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "who?"));

    let methods: Vec<_> = upstream.calls().into_iter().map(|call| call.method).collect();
    assert_eq!(methods, ["Unary", "ServerStream", "ClientStream", "Bidi", "Fail"]);
    assert_eq!(upstream.call_count("Unary"), 1);
}

#[test]
fn upstream_stops_on_drop() {
    let upstream = GrpcUpstream::start();
    let uri = upstream.uri();
    drop(upstream);
    assert!(GrpcClient::connect(&uri, None).is_err());
}

#[test]
fn tls_client_reaches_a_tls_upstream_trusting_only_its_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let upstream = GrpcUpstream::start_tls(&cert_pem, &key_pem);
    let uri = upstream.uri();
    assert!(uri.starts_with("https://"), "{uri}");

    let client = GrpcClient::connect_tls(&uri, cert_pem.as_bytes(), "localhost", Some("t")).unwrap();
    let reply = client.unary(echo_request("over tls")).unwrap().into_inner();
    assert_eq!(reply.message, "over tls");
    assert_eq!(reply.metadata["authorization"], "Bearer t");

    // Another CA's certificate is not trusted.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    assert!(GrpcClient::connect_tls(&uri, other.cert.pem().as_bytes(), "localhost", None).is_err());
    assert_eq!(upstream.call_count("Unary"), 1);
}
