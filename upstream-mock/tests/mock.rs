//! End-to-end tests of upstream-mock over real loopback sockets.
//!
//! Each test serves its own mock on `127.0.0.1:0` with
//! `serve_with_shutdown`, talks to it with reqwest (or a raw `TcpStream`
//! where the exact bytes on the wire matter) and shuts it down again.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upstream_mock::{serve_with_shutdown, MockOptions};

struct Mock {
    addr: SocketAddr,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Mock {
    async fn start(options: MockOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_shutdown(listener, options, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self { addr, client, stop, task }
    }

    async fn default() -> Self {
        Self::start(MockOptions::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "application/json");
        (status, response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    async fn get_as(&self, path: &str, header: &str, user: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)).header(header, user)).await
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).body(body.to_owned())).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path))).await
    }

    /// Writes `request` verbatim and returns the status and JSON body.
    async fn raw(&self, request: &str) -> (u16, Value) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap())
    }

    async fn stop(self) {
        drop(self.client);
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("mock did not shut down")
            .unwrap()
            .unwrap();
    }
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let mock = Mock::default().await;
    assert_eq!(mock.get("/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(
        mock.get("/nope/at/all").await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "message": "No such resource on the upstream."})
        )
    );
    let (status, body) = mock.send(mock.client.put(mock.url("/item/chair"))).await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    mock.stop().await;
}

#[tokio::test]
async fn items_anonymous_get_names_identified_get_everything() {
    let mock = Mock::default().await;
    assert_eq!(
        mock.get("/items").await,
        (
            StatusCode::OK,
            json!({"items": ["chair", "desk"], "message": "More data available if you log in."})
        )
    );
    assert_eq!(
        mock.get_as("/items", "X-Auth-User-Id", "7").await,
        (
            StatusCode::OK,
            json!({"items": [
                {"name": "chair", "price": 15.99, "category": "furniture"},
                {"name": "desk", "price": 89.5, "category": "furniture"},
            ]})
        )
    );
    // Header names are case-insensitive; other identity headers alone do not
    // identify anybody.
    let (_, body) = mock.get_as("/items", "x-auth-user-id", "7").await;
    assert!(body.get("message").is_none());
    let (_, body) = mock.get_as("/items", "X-Auth-Username", "alice").await;
    assert_eq!(body["items"], json!(["chair", "desk"]));
    mock.stop().await;
}

#[tokio::test]
async fn post_then_get_item() {
    let mock = Mock::default().await;
    let (status, body) = mock
        .send(
            mock.client
                .post(mock.url("/item/stool"))
                .header("X-Auth-User-Id", "42")
                .json(&json!({"price": 12, "category": "furniture"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"name": "stool", "price": 12.0, "category": "furniture", "created_by": "42"}));
    assert_eq!(
        mock.get("/item/stool").await,
        (StatusCode::OK, json!({"name": "stool", "price": 12.0, "category": "furniture"}))
    );
    assert_eq!(
        mock.get("/category/furniture").await.1,
        json!({"name": "furniture", "items": ["chair", "desk", "stool"]})
    );

    // Anonymous create, no category, percent-encoded name.
    let (status, body) = mock.post("/item/tea%20cup", r#"{"price": 3.5}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"name": "tea cup", "price": 3.5, "category": null, "created_by": null}));
    assert_eq!(mock.get("/item/tea%20cup").await.1["name"], "tea cup");
    mock.stop().await;
}

#[tokio::test]
async fn duplicate_and_invalid_items() {
    let mock = Mock::default().await;
    let (status, body) = mock.post("/item/chair", r#"{"price": 1}"#).await;
    assert_error(status, &body, StatusCode::CONFLICT, "item_exists");
    // The original is untouched.
    assert_eq!(mock.get("/item/chair").await.1["price"], 15.99);

    for bad in ["", "not json", "{}", r#"{"price": "cheap"}"#, "[1]"] {
        let (status, body) = mock.post("/item/new", bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_body");
    }
    let (status, body) = mock.get("/item/new").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "item_not_found");
    mock.stop().await;
}

#[tokio::test]
async fn delete_item() {
    let mock = Mock::default().await;
    assert_eq!(mock.delete("/item/chair").await, (StatusCode::OK, json!({"message": "Item deleted."})));
    let (status, body) = mock.get("/item/chair").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "item_not_found");
    let (status, body) = mock.delete("/item/chair").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "item_not_found");
    assert_eq!(mock.get("/items").await.1["items"], json!(["desk"]));
    mock.stop().await;
}

#[tokio::test]
async fn products() {
    let mock = Mock::default().await;
    let (status, body) = mock.get("/products").await;
    assert_eq!(status, StatusCode::OK);
    let seeded = body["products"].as_array().unwrap().len();
    assert!(seeded >= 2);
    for product in body["products"].as_array().unwrap() {
        assert!(product["name"].is_string() && product["price"].is_number());
        assert!(product["category"].is_string());
    }

    let (status, body) = mock.post("/product/widget", r#"{"price": 9.99, "category": "gadgets"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["created_by"], Value::Null);
    assert_eq!(
        mock.get("/product/widget").await.1,
        json!({"name": "widget", "price": 9.99, "category": "gadgets"})
    );
    let (status, body) = mock.post("/product/widget", r#"{"price": 1}"#).await;
    assert_error(status, &body, StatusCode::CONFLICT, "product_exists");
    assert_eq!(mock.get("/products").await.1["products"].as_array().unwrap().len(), seeded + 1);
    assert_eq!(
        mock.delete("/product/widget").await,
        (StatusCode::OK, json!({"message": "Product deleted."}))
    );
    let (status, body) = mock.get("/product/widget").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "product_not_found");
    mock.stop().await;
}

#[tokio::test]
async fn categories() {
    let mock = Mock::default().await;
    assert_eq!(
        mock.get("/categories").await,
        (StatusCode::OK, json!({"categories": [{"name": "furniture", "items": ["chair", "desk"]}]}))
    );
    let (status, body) = mock.post("/category/lighting", "").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"name": "lighting", "items": []}));
    let (status, body) = mock.post("/category/furniture", "").await;
    assert_error(status, &body, StatusCode::CONFLICT, "category_exists");

    mock.post("/item/lamp", r#"{"price": 20, "category": "lighting"}"#).await;
    assert_eq!(mock.get("/category/lighting").await.1, json!({"name": "lighting", "items": ["lamp"]}));
    assert_eq!(
        mock.delete("/category/lighting").await,
        (StatusCode::OK, json!({"message": "Category deleted."}))
    );
    let (status, body) = mock.get("/category/lighting").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "category_not_found");
    mock.stop().await;
}

#[tokio::test]
async fn echo_reports_every_header_copy_and_the_raw_path() {
    let mock = Mock::default().await;
    let request = "GET /debug/echo/a/../b//c?x=1&y=%20&x=2 HTTP/1.1\r\n\
                   Host: upstream.test\r\n\
                   X-Dup: first\r\n\
                   X-Auth-User-Id: 5\r\n\
                   x-dup: second\r\n\
                   X-DUP: third\r\n\
                   Connection: close\r\n\r\n";
    let (status, body) = mock.raw(request).await;
    assert_eq!(status, 200);
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/debug/echo/a/../b//c?x=1&y=%20&x=2");
    assert_eq!(body["headers"]["x-dup"], json!(["first", "second", "third"]));
    assert_eq!(body["headers"]["host"], json!(["upstream.test"]));
    assert_eq!(body["headers"]["x-auth-user-id"], json!(["5"]));
    assert_eq!(body["headers"]["connection"], json!(["close"]));
    assert_eq!(body["headers"].as_object().unwrap().len(), 4);

    // Any method, bare path, no query.
    let (status, body) = mock
        .send(
            mock.client
                .request(reqwest::Method::PATCH, mock.url("/debug/echo"))
                .header("X-Forwarded-For", "10.0.0.1")
                .header("X-Forwarded-For", "10.0.0.2")
                .body("ignored"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "PATCH");
    assert_eq!(body["path"], "/debug/echo");
    assert_eq!(body["headers"]["x-forwarded-for"], json!(["10.0.0.1", "10.0.0.2"]));

    let (status, body) = mock.send(mock.client.delete(mock.url("/debug/echo/?q"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["path"], "/debug/echo/?q");
    mock.stop().await;
}

#[tokio::test]
async fn custom_identity_prefix() {
    let mock = Mock::start(MockOptions { identity_prefix: "X-Gw-".to_owned(), verify: None }).await;
    let (_, body) = mock.get_as("/items", "X-Auth-User-Id", "1").await;
    assert_eq!(body["items"], json!(["chair", "desk"]));
    let (_, body) = mock.get_as("/items", "X-Gw-User-Id", "1").await;
    assert_eq!(body["items"][0]["name"], "chair");
    assert!(body.get("message").is_none());

    let (status, body) = mock
        .send(
            mock.client
                .post(mock.url("/item/rug"))
                .header("X-Auth-User-Id", "wrong")
                .header("x-gw-user-id", "right")
                .body(r#"{"price": 40}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["created_by"], "right");
    mock.stop().await;
}

#[tokio::test]
async fn each_router_has_its_own_state() {
    let one = Mock::default().await;
    let two = Mock::default().await;
    assert_eq!(one.delete("/item/chair").await.0, StatusCode::OK);
    assert_eq!(two.get("/item/chair").await.0, StatusCode::OK);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn slow_sleeps_then_answers() {
    let mock = Mock::default().await;
    let started = Instant::now();
    assert_eq!(mock.get("/debug/slow?ms=150").await, (StatusCode::OK, json!({"slept_ms": 150})));
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(mock.get("/debug/slow").await.1, json!({"slept_ms": 0}));
    let (status, body) = mock.get("/debug/slow?ms=soon").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    mock.stop().await;
}

/// The binary logs its address, serves, and exits 0 on SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn binary_logs_address_and_stops_on_sigterm() {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_upstream-mock"))
        .args(["--listen", "127.0.0.1:0", "--identity-prefix", "X-Test-"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let addr = line
        .strip_prefix("upstream-mock listening on ")
        .unwrap_or_else(|| panic!("unexpected log line {line:?}"));
    let addr: SocketAddr = addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let body: Value = client
        .get(format!("http://{addr}/items"))
        .header("X-Test-User-Id", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"][0]["name"], "chair");
    drop(client);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(lines.next_line().await.unwrap(), None);
}

type WsClient = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket client connected to `path` on `mock`, with `headers` on the
/// upgrade request; returns the socket, the hello message and the
/// subprotocol the server chose.
async fn ws_connect(mock: &Mock, path: &str, headers: &[(&str, &str)]) -> (WsClient, Value, Option<String>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

    let mut request = format!("ws://{}{path}", mock.addr).into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let (mut socket, response) =
        tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), 101);
    let protocol =
        response.headers().get("sec-websocket-protocol").map(|value| value.to_str().unwrap().to_owned());
    let hello = ws_next(&mut socket).await;
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    (socket, hello, protocol)
}

async fn ws_next(socket: &mut WsClient) -> tokio_tungstenite::tungstenite::Message {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap()
}

#[tokio::test]
async fn websocket_echo_says_hello_then_echoes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    let mock = Mock::default().await;
    let (mut socket, hello, protocol) = ws_connect(
        &mock,
        "/ws/echo?room=1",
        &[("X-Auth-User-Id", "42"), ("X-Dup", "a"), ("x-dup", "b"), ("Sec-WebSocket-Protocol", "chat, v2")],
    )
    .await;
    // The first subprotocol offered is accepted.
    assert_eq!(protocol.as_deref(), Some("chat"));
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["method"], "GET");
    assert_eq!(hello["path"], "/ws/echo?room=1");
    let headers = &hello["headers"];
    assert_eq!(headers["x-auth-user-id"], "42");
    assert_eq!(headers["x-dup"], "a, b");
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["sec-websocket-version"], "13");
    assert!(headers["host"].as_str().unwrap().starts_with("127.0.0.1:"));

    socket.send(Message::text("héllo")).await.unwrap();
    assert_eq!(ws_next(&mut socket).await, Message::text("héllo"));
    socket.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(ws_next(&mut socket).await, Message::binary(vec![0u8, 1, 2, 255]));
    socket.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    assert_eq!(ws_next(&mut socket).await, Message::Pong(b"are you there".to_vec().into()));
    socket.send(Message::text("after ping")).await.unwrap();
    assert_eq!(ws_next(&mut socket).await, Message::text("after ping"));

    // The client closes; the server answers with a close frame and the
    // stream ends.
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    socket.send(Message::Close(Some(bye))).await.unwrap();
    match ws_next(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
    mock.stop().await;
}

#[tokio::test]
async fn websocket_under_debug_paths_and_plain_http_refused() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let mock = Mock::default().await;
    // Every /debug/echo/<policy>/... path the gateway tests route upgrades
    // too, as do /debug/ws and anything below /ws/echo.
    let paths = ["/debug/echo/admin/ws?t=1", "/debug/echo", "/debug/ws", "/debug/ws/x/y", "/ws/echo/deep/er"];
    for path in paths {
        let (mut socket, hello, protocol) = ws_connect(&mock, path, &[("X-Auth-Admin", "true")]).await;
        assert_eq!(protocol, None);
        assert_eq!(hello["path"], path, "{hello}");
        assert_eq!(hello["headers"]["x-auth-admin"], "true");
        socket.send(Message::text(path)).await.unwrap();
        assert_eq!(ws_next(&mut socket).await, Message::text(path));
        socket.close(None).await.unwrap();
    }

    // Plain HTTP: /ws/echo refuses with 426, /debug/echo stays the JSON echo.
    let (status, body) = mock.get("/ws/echo").await;
    assert_error(status, &body, StatusCode::UPGRADE_REQUIRED, "websocket_required");
    let response = mock.client.get(mock.url("/debug/ws")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let (status, body) = mock.get("/debug/echo/admin/ws").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["path"], "/debug/echo/admin/ws");
    // A half-hearted handshake (no key) is not upgraded either.
    let (status, body) = mock
        .send(
            mock.client
                .get(mock.url("/debug/echo/x"))
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["headers"]["upgrade"], json!(["websocket"]));
    mock.stop().await;
}
