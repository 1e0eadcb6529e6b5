//! A real WebSocket echo endpoint, so gateway tests can check what a
//! proxied upgrade carries and that frames flow both ways afterwards.
//!
//! `/ws/echo[/{*rest}]` and `/debug/ws[/{*rest}]` speak WebSocket only
//! (anything else gets a 426 JSON error). `/debug/echo[/{*rest}]` upgrades
//! too when the request is a valid WebSocket handshake, so a test can reach
//! the echo socket under every `/debug/echo/<policy>/...` route the gateway
//! tests configure; without the handshake headers it stays the JSON echo.
//!
//! On upgrade the server first sends one text message describing the
//! upgrade request as it arrived:
//!
//! ```text
//! {"type": "hello", "method": "GET", "path": "/ws/echo?x=1",
//!  "headers": {"x-auth-user-id": "42", "upgrade": "websocket", ...}}
//! ```
//!
//! (every header, lower-case names, several copies of one name joined with
//! `", "` in arrival order), then echoes every text and binary message back
//! unchanged. Pings are answered with a pong carrying the same payload
//! (tungstenite does it), and a close from the client is answered with a
//! close frame before the connection ends. The first subprotocol the client
//! offers in `Sec-WebSocket-Protocol`, if any, is accepted.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::OriginalUri;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Any method on `/ws/echo[/{*rest}]` and `/debug/ws[/{*rest}]`.
pub(crate) async fn echo(
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => upgrade(ws, &method, &uri, &headers),
        Err(rejection) => {
            let mut response = ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "websocket_required",
                format!("This endpoint only speaks WebSocket: {}", rejection.body_text()),
            )
            .into_response();
            response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            response
        }
    }
}

/// Completes the handshake and runs the echo socket, saying hello first.
pub(crate) fn upgrade(ws: WebSocketUpgrade, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let hello = hello(method, uri, headers).to_string();
    let mut ws = ws;
    let first = ws.requested_protocols().next().cloned();
    if let Some(first) = first {
        ws.set_selected_protocol(first);
    }
    ws.on_upgrade(move |socket| echo_socket(socket, hello))
}

/// The hello message: the upgrade request as it reached the mock.
fn hello(method: &Method, uri: &Uri, headers: &HeaderMap) -> Value {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut seen = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        seen.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    json!({
        "type": "hello",
        "method": method.as_str(),
        "path": path,
        "headers": seen,
    })
}

async fn echo_socket(mut socket: WebSocket, hello: String) {
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    // Runs until the stream ends. After a client's close, `recv` returns the
    // `Close` and the next call flushes tungstenite's close reply and then
    // ends the stream, so the loop must not stop at the `Close` itself.
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            // tungstenite queues the pong for a ping itself and writes it on
            // the next read or write; pongs and closes need nothing here.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }
}
