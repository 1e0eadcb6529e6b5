//! WebSocket upgrades through the gateway against upstream-mock's echo:
//! a tunnel opens only on a route with `websocket = true`, only for a caller
//! the route's policy accepts, and closes when the token that opened it expires.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use gatehouse::config::file::FileConfig;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::common::config::route;
use crate::common::{Gateway, Options, Upstream};

fn ws_route(c: &mut FileConfig) {
    let mut ws = route("/ws/**", &[], "any");
    ws.get_mut().websocket = true;
    c.routes.push(ws);
}

fn gateway(access_ttl: &'static str) -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options { access_ttl, ..Options::default() }.config(ws_route));
    (upstream, gw)
}

/// Opens a WebSocket through the gateway; `Err(status)` when the handshake
/// was answered with something other than 101.
fn connect(gw: &Gateway, path: &str, token: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let mut request = format!("ws://{}{path}", gw.addr).into_client_request().unwrap();
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request.headers_mut().insert("x-auth-admin", "true".parse().unwrap());
    let stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    match tungstenite::client(request, stream) {
        Ok((socket, response)) => {
            assert_eq!(response.status(), 101);
            Ok(socket)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn hello(socket: &mut WebSocket<TcpStream>) -> Value {
    match socket.read().unwrap() {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the hello message, got {other:?}"),
    }
}

#[test]
fn a_websocket_opens_only_for_a_valid_token_on_a_route_that_allows_it() {
    let (_upstream, gw) = gateway("15m");
    let (admin, _) = gw.admin_login();
    gw.register("ws@example.com", "ws-user", "ws-password-1");
    let (user, _) = gw.login("ws@example.com", "ws-password-1");

    let mut socket = connect(&gw, "/ws/echo", Some(&user)).unwrap();
    let hello = hello(&mut socket);
    let headers = &hello["headers"];
    assert_eq!(headers["x-auth-admin"], "false", "the gateway's identity, not the client's: {hello}");
    assert!(headers["x-auth-user-id"].as_str().is_some_and(|id| !id.is_empty()), "{hello}");
    socket.send(Message::text("ping through the gateway")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("ping through the gateway"));
    socket.close(None).unwrap();

    assert_eq!(connect(&gw, "/ws/echo", None).err(), Some(401), "no token");
    assert_eq!(connect(&gw, "/ws/echo", Some("not.a.token")).err(), Some(401), "a bad token");
    let (status, body) = gw.post("/logout", Some(&admin), json!(null));
    assert_eq!(status, 200, "{body}");
    assert_eq!(connect(&gw, "/ws/echo", Some(&admin)).err(), Some(401), "a revoked token");

    // A route without `websocket = true`: the upgrade headers are removed, so
    // the echo answers plain JSON and no tunnel ever opens.
    assert_eq!(connect(&gw, "/debug/echo/public/x", Some(&user)).err(), Some(200));
    assert_eq!(connect(&gw, "/debug/echo/any/x", Some(&user)).err(), Some(200));
}

#[test]
fn an_expired_token_opens_no_websocket() {
    let (_upstream, gw) = gateway("1s");
    let (admin, _) = gw.admin_login();
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(connect(&gw, "/ws/echo", Some(&admin)).err(), Some(401));
}

#[test]
fn a_websocket_closes_when_its_token_expires_busy_or_idle() {
    let (_upstream, gw) = gateway("4s");

    // Busy: messages every 200 ms keep flowing until the token expires.
    let (token, _) = gw.admin_login();
    let opened = Instant::now();
    let mut socket = connect(&gw, "/ws/echo", Some(&token)).unwrap();
    hello(&mut socket);
    let closed_after = loop {
        std::thread::sleep(Duration::from_millis(200));
        let alive =
            socket.send(Message::text("tick")).is_ok() && matches!(socket.read(), Ok(Message::Text(_)));
        if !alive {
            break opened.elapsed();
        }
        assert!(opened.elapsed() < Duration::from_secs(12), "the tunnel outlived its token");
    };
    assert!(closed_after >= Duration::from_secs(2), "closed early: {closed_after:?}");

    // Idle: nothing flows, and the tunnel still closes at the expiry.
    let (token, _) = gw.admin_login();
    let opened = Instant::now();
    let mut socket = connect(&gw, "/ws/echo", Some(&token)).unwrap();
    hello(&mut socket);
    let outcome = socket.read();
    let closed_after = opened.elapsed();
    assert!(!matches!(outcome, Ok(Message::Text(_)) | Ok(Message::Binary(_))), "{outcome:?}");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(10)).contains(&closed_after),
        "an idle tunnel closed after {closed_after:?}"
    );
}

/// A browser's WebSocket: opened with the access cookie (no header), and
/// only from the gateway's own origin or one the route's CORS allows, so a
/// page on another site can't ride the user's cookie (cross-site WebSocket
/// hijacking). Clients without an `Origin` are judged by their token alone.
#[test]
fn a_browser_websocket_opens_with_the_cookie_and_only_from_an_allowed_origin() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| {
            c.cookies.enabled = Some(true);
            let mut ws = route("/ws/**", &[], "any");
            ws.get_mut().websocket = true;
            ws.get_mut().cors_origins =
                Some(crate::common::config::spanned(vec![crate::common::config::spanned(
                    "https://app.example.com".to_owned(),
                )]));
            ws.get_mut().cors_credentials = Some(crate::common::config::spanned(true));
            c.routes.push(ws);
            // CORS that lets pages read without credentials (or any page read)
            // lets no other page open a WebSocket with the user's cookie.
            for (path, origin) in [("/ws/echo/anon/**", "https://app.example.com"), ("/ws/echo/any/**", "*")]
            {
                let mut open = route(path, &[], "any");
                open.get_mut().websocket = true;
                open.get_mut().cors_origins =
                    Some(crate::common::config::spanned(vec![crate::common::config::spanned(
                        origin.to_owned(),
                    )]));
                c.routes.push(open);
            }
        }),
    );
    gw.register("wes@example.com", "wes", "wes-password-1");
    let login = gw
        .http
        .post(gw.url("/login"))
        .json(&json!({"email": "wes@example.com", "password": "wes-password-1", "set_cookies": true}))
        .send()
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("access_token_cookie="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let open_at = |path: &str, origin: Option<&str>| {
        let mut request = format!("ws://{}{path}", gw.addr).into_client_request().unwrap();
        request.headers_mut().insert("cookie", format!("{cookie}; theme=dark").parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        let stream = TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        match tungstenite::client(request, stream) {
            Ok((mut socket, _)) => Ok(hello(&mut socket)),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(r.status().as_u16())
            }
            Err(e) => panic!("handshake failed: {e}"),
        }
    };
    let open = |origin: Option<&str>| open_at("/ws/echo", origin);
    let same_origin = format!("http://{}", gw.addr);
    for origin in [Some(same_origin.as_str()), Some("https://app.example.com"), None] {
        let hello = open(origin).unwrap_or_else(|status| panic!("{origin:?}: refused with {status}"));
        let headers = &hello["headers"];
        assert!(headers["x-auth-user-id"].as_str().is_some_and(|id| !id.is_empty()), "{origin:?}: {hello}");
        assert_eq!(headers["cookie"], "theme=dark", "the gateway's cookie never goes upstream: {hello}");
    }
    let before = upstream.seen().len();
    let other_scheme = format!("https://{}", gw.addr);
    for origin in ["https://evil.example", "http://app.example.com", "null", other_scheme.as_str()] {
        assert_eq!(open(Some(origin)).err(), Some(403), "{origin}");
    }
    assert_eq!(upstream.seen().len(), before, "a refused upgrade reached the upstream");
    for path in ["/ws/echo/anon/x", "/ws/echo/any/x"] {
        let before = upstream.seen().len();
        assert_eq!(open_at(path, Some("https://app.example.com")).err(), Some(403), "{path}");
        assert_eq!(upstream.seen().len(), before, "{path}: a refused upgrade reached the upstream");
        assert!(open_at(path, Some(&same_origin)).is_ok(), "{path}: the gateway's own origin");
    }
}
