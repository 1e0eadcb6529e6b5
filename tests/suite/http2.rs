//! HTTP/2 on both sides of the gateway: TLS clients negotiate it with ALPN,
//! cleartext clients use prior knowledge where `server.h2c` allows it, and the
//! gateway speaks it to upstreams (`upstream.protocol = "h2c"`, or `"h2"` over
//! TLS). Whatever the protocol, the upstream receives the request that was
//! judged: the `:authority` becomes the one `Host`, and client-sent identity
//! headers never arrive.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gatehouse::config::file::Word;
use gatehouse::config::UpstreamProtocol;
use serde_json::{json, Value};

use crate::common::config::{spanned, text};
use crate::common::tls::{localhost_cert, serve_tls, LocalhostCert};
use crate::common::{free_port, Gateway, Options, Upstream};

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that trusts `cert` and finds `localhost` at `port`.
fn tls_client(cert: &LocalhostCert, port: u16, http1_only: bool) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn send(request: reqwest::blocking::RequestBuilder) -> (reqwest::Version, u16, Value) {
    let resp = request.send().unwrap();
    let (version, status) = (resp.version(), resp.status().as_u16());
    let text = resp.text().unwrap();
    (version, status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Forged identity in every spelling: none of it may reach the upstream.
fn forged(request: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
    request
        .header("x-auth-user-id", "999")
        .header("x-auth-admin", "true")
        .header("x-auth-roles", "admin")
        .header("x_auth_admin", "true")
        .header("x-forwarded-for", "10.9.9.9")
}

/// The identity headers the echo saw: exactly the gateway's.
fn assert_real_identity(echo: &Value, user_id: &str) {
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-auth-user-id"], json!([user_id]), "{echo:#}");
    assert_eq!(headers["x-auth-admin"], json!(["false"]), "{echo:#}");
    assert_eq!(headers["x-auth-roles"], json!([""]), "{echo:#}");
    assert!(!headers.contains_key("x_auth_admin"), "{echo:#}");
    assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]), "{echo:#}");
}

#[test]
fn tls_clients_negotiate_http2_and_the_upstream_gets_exactly_the_judged_request() {
    let upstream = Upstream::start();
    let cert = localhost_cert();
    let port = free_port();
    let gw = Gateway::start(&upstream, Options::default().config(serve_tls(&cert, port, None)));
    wait_for_port(port);
    let id = gw.register("hana@example.com", "hana", "hana-password-1")["id"].to_string();
    let (token, _) = gw.login("hana@example.com", "hana-password-1");
    let client = tls_client(&cert, port, false);
    let url = |path: &str| format!("https://localhost:{port}{path}");

    let (version, status, echo) = send(forged(client.get(url("/debug/echo/any/x?q=1")).bearer_auth(&token)));
    assert_eq!((version, status), (reqwest::Version::HTTP_2, 200), "{echo}");
    assert_eq!((&echo["method"], &echo["path"]), (&json!("GET"), &json!("/debug/echo/any/x?q=1")));
    assert_eq!(
        echo["headers"]["host"],
        json!([format!("localhost:{port}")]),
        "the authority, as Host: {echo:#}"
    );
    assert_real_identity(&echo, &id);

    // Refusals are the same JSON as over HTTP/1.1, and nothing goes upstream.
    let before = upstream.seen().len();
    let (version, status, body) = send(forged(client.get(url("/debug/echo/any/x"))));
    assert_eq!(
        (version, status, body["error"].as_str()),
        (reqwest::Version::HTTP_2, 401, Some("missing_token"))
    );
    let (_, status, body) = send(client.get(url("/debug/echo/any/../admin/x")).bearer_auth(&token));
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin_required")),
        "normalised, then judged: {body}"
    );
    assert_eq!(upstream.seen().len(), before, "a refused request reached the upstream");

    // The built-in endpoints answer over HTTP/2 too.
    let login =
        client.post(url("/login")).json(&json!({"email": "hana@example.com", "password": "hana-password-1"}));
    let (version, status, body) = send(login);
    assert_eq!((version, status), (reqwest::Version::HTTP_2, 200), "{body}");

    // A client without HTTP/2 still gets HTTP/1.1 on the same listener.
    let h1 = tls_client(&cert, port, true);
    let (version, status, _) = send(h1.get(url("/debug/echo/any/x")).bearer_auth(&token));
    assert_eq!((version, status), (reqwest::Version::HTTP_11, 200));
}

#[test]
fn tls_alpn_can_keep_clients_on_http1() {
    let upstream = Upstream::start();
    let cert = localhost_cert();
    let port = free_port();
    let _gw =
        Gateway::start(&upstream, Options::default().config(serve_tls(&cert, port, Some(&["http/1.1"]))));
    wait_for_port(port);
    let (version, status, _) =
        send(tls_client(&cert, port, false).get(format!("https://localhost:{port}/items")));
    assert_eq!((version, status), (reqwest::Version::HTTP_11, 200));
}

#[test]
fn cleartext_http2_with_prior_knowledge_only_where_asked() {
    let upstream = Upstream::start();
    let prior_knowledge =
        reqwest::blocking::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let plain = Gateway::start(&upstream, Options::default().config(|c| c.server.h2c = Some(true)));
    let id = plain.register("hugo@example.com", "hugo", "hugo-password-1")["id"].to_string();
    let (token, _) = plain.login("hugo@example.com", "hugo-password-1");
    let (version, status, echo) =
        send(forged(prior_knowledge.get(plain.url("/debug/echo/any/x"))).bearer_auth(&token));
    assert_eq!((version, status), (reqwest::Version::HTTP_2, 200), "{echo}");
    assert_eq!(echo["headers"]["host"], json!([plain.addr.to_string()]), "{echo:#}");
    assert_real_identity(&echo, &id);
    // HTTP/1.1 clients share the listener.
    assert_eq!(plain.get("/items", None).0, 200);

    // Off by default: a prior-knowledge client gets no HTTP/2 answer.
    let default = Gateway::start(&upstream, Options { seed_admin: false, ..Options::default() });
    assert!(prior_knowledge.get(default.url("/items")).send().is_err());
}

/// One raw HTTP/2 GET with exactly these extra header fields.
fn raw_h2(addr: SocketAddr, uri: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let fields: Vec<(String, String)> =
        fields.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    let (status, body) = crate::common::raw_h2::request(addr, "GET", uri, &fields, b"").unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_host_that_names_another_site_than_the_authority_is_refused() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options { seed_admin: false, ..Options::default() }.config(|c| c.server.h2c = Some(true)),
    );
    let uri = format!("http://{}/debug/echo/public/x", gw.addr);
    let before = upstream.seen().len();
    // pingora's HTTP/2 layer refuses it first (an empty 400); the gateway's
    // own check (`invalid_header`, unit-tested) stands behind it.
    let (status, body) = raw_h2(gw.addr, &uri, &[("host", "admin.internal")]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(upstream.seen().len(), before);
    // The same Host as the authority is one host, and passes.
    let (status, echo) =
        raw_h2(gw.addr, &uri, &[("host", &gw.addr.to_string()), ("cookie", "a=1"), ("cookie", "b=2")]);
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["host"], json!([gw.addr.to_string()]), "{echo:#}");
    assert_eq!(echo["headers"]["cookie"], json!(["a=1; b=2"]), "one cookie field upstream: {echo:#}");
}

#[test]
fn upstreams_can_be_reached_over_h2c_and_over_h2_with_tls() {
    // The mock speaks cleartext HTTP/2 with prior knowledge as well as HTTP/1.1.
    let upstream = Upstream::start();
    let h2c = Gateway::start(
        &upstream,
        Options::default()
            .config(|c| c.upstream.get_mut().protocol = Some(spanned(Word(UpstreamProtocol::H2c)))),
    );
    let id = h2c.register("ines@example.com", "ines", "ines-password-1")["id"].to_string();
    let (token, _) = h2c.login("ines@example.com", "ines-password-1");
    let (status, echo) = h2c.get("/debug/echo/any/y", Some(&token));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["http_version"], json!("HTTP/2.0"), "{echo:#}");
    assert_eq!(echo["headers"]["x-auth-user-id"], json!([id]), "{echo:#}");

    // HTTP/2 over TLS to an upstream whose certificate only a configured CA
    // vouches for: here a second gateway terminating TLS in front of the mock
    // (its own identity prefix, so it passes the first one's headers on).
    let cert = localhost_cert();
    let port = free_port();
    let tls_front = Gateway::start(
        &upstream,
        Options { seed_admin: false, ..Options::default() }.config(serve_tls(&cert, port, None)).config(
            |c| {
                c.upstream.get_mut().identity_header_prefix = Some(spanned("x-front-".to_owned()));
                c.routes.insert(0, crate::common::config::route("/debug/echo/any/**", &[], "public"));
            },
        ),
    );
    wait_for_port(port);
    let ca_file = cert.cert_path.clone();
    let h2 = Gateway::start(
        &upstream,
        Options::default().config(move |c| {
            let u = c.upstream.get_mut();
            u.addresses = vec![spanned(format!("127.0.0.1:{port}"))];
            u.protocol = Some(spanned(Word(UpstreamProtocol::H2)));
            u.tls = Some(true);
            u.tls_server_name = text("localhost");
            u.tls_ca_file = text(&ca_file);
        }),
    );
    let id = h2.register("jon@example.com", "jon", "jon-password-1")["id"].to_string();
    let (token, _) = h2.login("jon@example.com", "jon-password-1");
    let (status, echo) = h2.get("/debug/echo/any/z", Some(&token));
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-auth-user-id"], json!([id]), "{echo:#}");

    // Without the CA the upstream's certificate is not trusted: 502, not a silent downgrade.
    let untrusted = Gateway::start(
        &upstream,
        Options { seed_admin: false, ..Options::default() }.config(move |c| {
            let u = c.upstream.get_mut();
            u.addresses = vec![spanned(format!("127.0.0.1:{port}"))];
            u.protocol = Some(spanned(Word(UpstreamProtocol::H2)));
            u.tls = Some(true);
            u.tls_server_name = text("localhost");
        }),
    );
    let (status, body) = untrusted.get("/debug/echo/public/z", None);
    assert_eq!((status, body["error"].as_str()), (502, Some("upstream_unavailable")), "{body}");
    drop(tls_front);
}

/// One generated request, sent the same over HTTP/1.1 and HTTP/2.
#[derive(Debug)]
struct Case {
    method: &'static str,
    path: String,
    fields: Vec<(String, String)>,
    body: &'static str,
}

/// Paths that exercise every policy, bent the ways clients bend them.
fn generate(rng: &mut impl rand::Rng, tokens: &[Option<String>]) -> Case {
    use rand::seq::IndexedRandom;
    const METHODS: [&str; 7] = ["GET", "GET", "POST", "DELETE", "PUT", "get", "Delete"];
    const BASES: [&str; 8] = [
        "/debug/echo/public/a",
        "/debug/echo/optional/a",
        "/debug/echo/any/a",
        "/debug/echo/fresh/a",
        "/debug/echo/admin/a",
        "/debug/echo/deny/a",
        "/item/chair",
        "/items",
    ];
    const FORGED: [(&str, &str); 8] = [
        ("x-auth-user-id", "999"),
        ("x-auth-admin", "true"),
        ("x_auth_admin", "true"),
        ("x-auth-roles", "admin"),
        ("x-forwarded-for", "10.1.1.1"),
        ("x-original-url", "/debug/echo/admin/a"),
        ("x-http-method-override", "DELETE"),
        ("forwarded", "for=1.2.3.4"),
    ];
    let method = *METHODS.choose(rng).unwrap();
    let mut path = (*BASES.choose(rng).unwrap()).to_owned();
    match rng.random_range(0..9) {
        0 => path = path.to_ascii_uppercase(),
        1 => path = path.replacen("/echo/", "/echo/./", 1),
        2 => path = format!("/debug/echo/public/..{}", &path[path.rfind('/').unwrap_or(0)..]),
        3 => path = path.replacen("/echo/", "/echo/public/%2e%2e/", 1),
        4 => path = path.replacen("/echo/", "/echo%2F", 1),
        5 => path = path.replacen("/echo/", "//echo/", 1),
        6 => path.push_str("?_method=DELETE"),
        7 => path = path.replacen("/debug", "/%64ebug", 1),
        _ => path.push_str("?q=1"),
    }
    let mut fields: Vec<(String, String)> = FORGED
        .iter()
        .filter(|_| rng.random_bool(0.3))
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(Some(token)) = tokens.choose(rng) {
        fields.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    let body = match (method, rng.random_range(0..3)) {
        ("POST" | "PUT", 0) => {
            fields.push(("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()));
            "_method=DELETE"
        }
        ("POST" | "PUT", 1) => {
            fields.push(("content-type".to_owned(), "application/json".to_owned()));
            "{}"
        }
        _ => "",
    };
    Case { method, path, fields, body }
}

/// What a client and the upstream saw of one request, protocol aside: the
/// status, the error code, and for the echo the method, target and every
/// header the gateway writes or must remove (not `x-request-id`, unique per request).
fn observed(status: u16, body: &str) -> Value {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let Some(headers) = body["headers"].as_object() else {
        return json!({"status": status, "error": body["error"], "body": body});
    };
    let kept: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| {
            name.starts_with("x-auth-")
                || name.starts_with("x-forwarded-")
                || name.contains('_')
                || [
                    "forwarded",
                    "x-original-url",
                    "x-http-method-override",
                    "host",
                    "authorization",
                    "content-type",
                ]
                .contains(&name.as_str())
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    json!({"status": status, "method": body["method"], "path": body["path"], "headers": kept})
}

/// Differential between the protocols: seeded requests over HTTP/1.1 to one
/// gateway and over HTTP/2 to a twin (same secret, same accounts, each with
/// its own upstream-mock, so state-changing requests meet the same state)
/// get the same answers, and what reaches the upstreams is the same request
/// with the same identity. (The HTTP/1.1 side is held to the spec by
/// `differential::`; this holds HTTP/2 to it.)
#[test]
fn http2_requests_are_judged_and_forwarded_exactly_as_http1_ones() {
    use rand::SeedableRng;
    let (upstream_one, upstream_two) = (Upstream::start(), Upstream::start());
    let options = Options::default().config(|c| c.server.h2c = Some(true));
    let one = Gateway::start(&upstream_one, options.clone());
    let two = Gateway::start(&upstream_two, Options { jwt_secret: Some(one.jwt_secret.clone()), ..options });
    for gw in [&one, &two] {
        gw.register("kai@example.com", "kai", "kai-password-1");
    }
    let (fresh, refresh) = one.login("kai@example.com", "kai-password-1");
    let (_, refreshed) = one.post("/refresh", Some(&refresh), json!({}));
    let stale = refreshed["access_token"].as_str().unwrap().to_owned();
    let (admin, _) = one.admin_login();
    let tokens = [None, Some(fresh), Some(stale), Some(admin), Some("not.a.token".to_owned())];
    let cases: usize = std::env::var("DIFFERENTIAL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a7e_0002);
    let (mut failures, mut forwarded) = (Vec::new(), 0);
    // Each gateway's own address is the request's host: compare them as one.
    let seen = |gw: &Gateway, (status, body): (u16, String)| {
        observed(status, &body.replace(&gw.addr.to_string(), "GATEWAY"))
    };
    for _ in 0..cases {
        let case = generate(&mut rng, &tokens);
        let headers: String = case.fields.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        let http1 = crate::common::raw(
            one.addr,
            &format!(
                "{} {} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                case.method,
                case.path,
                one.addr,
                case.body.len(),
                case.body
            ),
        );
        let uri = format!("http://{}{}", two.addr, case.path);
        // With its length, as browsers send a form (without one, see the next test).
        let mut fields = case.fields.clone();
        if !case.body.is_empty() {
            fields.push(("content-length".to_owned(), case.body.len().to_string()));
        }
        let http2 =
            crate::common::raw_h2::request(two.addr, case.method, &uri, &fields, case.body.as_bytes());
        let (by_http1, by_http2) = (seen(&one, http1), http2.map(|answer| seen(&two, answer)));
        if by_http1["path"].is_string() {
            forwarded += 1;
        }
        if by_http2.as_ref() != Ok(&by_http1) {
            failures.push(format!("{case:?}\n  HTTP/1.1: {by_http1}\n  HTTP/2:   {by_http2:?}"));
        }
    }
    eprintln!("{cases} cases, {forwarded} forwarded, {} differ", failures.len());
    assert!(forwarded >= cases / 10, "too few cases reached the upstream: {forwarded} of {cases}");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases differ:\n\n{}",
        failures.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n\n")
    );
}

/// HTTP/2 needs no `Content-Length`: a form body without one, on a path where
/// a `_method` field would change the judgement, is of unknown length like a
/// chunked one, so 411, and the upstream never sees it. With its length it is
/// read and refused for the field itself.
#[test]
fn an_http2_form_body_without_a_length_is_not_taken_for_an_empty_one() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(|c| c.server.h2c = Some(true)));
    let (admin, _) = gw.admin_login();
    let uri = format!("http://{}/item/chair", gw.addr);
    let form = vec![
        ("authorization".to_owned(), format!("Bearer {admin}")),
        ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
    ];
    let before = upstream.seen().len();
    let (status, body) =
        crate::common::raw_h2::request(gw.addr, "POST", &uri, &form, b"_method=DELETE").unwrap();
    assert_eq!((status, error_of(&body)), (411, "length_required".to_owned()), "{body}");
    let mut with_length = form.clone();
    with_length.push(("content-length".to_owned(), "14".to_owned()));
    let (status, body) =
        crate::common::raw_h2::request(gw.addr, "POST", &uri, &with_length, b"_method=DELETE").unwrap();
    assert_eq!((status, error_of(&body)), (400, "method_override_refused".to_owned()), "{body}");
    assert_eq!(upstream.seen().len(), before, "a refused form reached the upstream: {:?}", upstream.seen());
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Sends one HTTP/2 request as raw frames, so fields no HTTP/2 library will
/// send can be sent: the header block is HPACK literals without Huffman
/// coding. Returns the types of the frames answered on stream 1, in order.
fn raw_frames(addr: SocketAddr, fields: &[(&str, &str)]) -> Vec<u8> {
    use std::io::{Read, Write};
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut bytes = vec![length[1], length[2], length[3], kind, flags];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }
    let mut block = Vec::new();
    for (name, value) in fields {
        // Literal header field without indexing, new name (RFC 7541 section 6.2.2).
        block.push(0x00);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    stream.write_all(&frame(0x4, 0, 0, &[])).unwrap();
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    stream.write_all(&frame(0x1, 0x5, 1, &block)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut answered = Vec::new();
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        let mut at = 0;
        answered.clear();
        while received.len() >= at + 9 {
            let length = usize::from(received[at]) << 16
                | usize::from(received[at + 1]) << 8
                | usize::from(received[at + 2]);
            let (kind, id) = (
                received[at + 3],
                u32::from_be_bytes(received[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff,
            );
            if id == 1 {
                answered.push(kind);
            }
            at += 9 + length;
        }
        // A response's HEADERS (1) or a RST_STREAM (3) settles stream 1.
        if answered.iter().any(|k| *k == 0x1 || *k == 0x3) {
            break;
        }
    }
    answered
}

/// Connection-specific fields make an HTTP/2 request malformed (RFC 9113
/// section 8.2.2): the stream is reset and nothing reaches the upstream,
/// where a lenient backend might have honoured them.
#[test]
fn connection_specific_fields_over_http2_are_refused_with_a_stream_reset() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options { seed_admin: false, ..Options::default() }.config(|c| c.server.h2c = Some(true)),
    );
    let authority = gw.addr.to_string();
    let request = |extra: Option<(&str, &str)>| {
        let mut fields = vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/debug/echo/public/x"),
            (":authority", authority.as_str()),
        ];
        fields.extend(extra);
        raw_frames(gw.addr, &fields)
    };
    // The raw frames are a request the gateway answers...
    let before = upstream.seen().len();
    assert!(request(None).contains(&0x1), "no response to a plain raw request");
    assert_eq!(upstream.seen().len(), before + 1);
    // ...until they carry a field HTTP/2 forbids.
    for field in [
        ("connection", "close"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
    ] {
        let answered = request(Some(field));
        assert_eq!(answered, [0x3], "{field:?}: expected a stream reset, got frame types {answered:?}");
    }
    assert_eq!(upstream.seen().len(), before + 1, "{:?}", upstream.seen());
}

/// HTTP/2 connections ignore the per-request keep-alive setting, so the idle
/// limit is pingora's HTTP/2 idle timeout, set from `limits.client_idle_timeout`:
/// a connection with no stream open is closed.
#[test]
fn an_idle_http2_connection_is_closed_after_the_idle_limit() {
    use std::io::{Read, Write};
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options { seed_admin: false, ..Options::default() }.config(|c| {
            c.server.h2c = Some(true);
            c.limits.client_idle_timeout = text("1s");
        }),
    );
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "closed too late: {:?}", started.elapsed());
}
