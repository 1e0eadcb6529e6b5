//! Introspection endpoints for gateway tests.
//!
//! `/debug/echo` reports exactly what reached the upstream (method, raw
//! path with query, every header copy in order), which is how gateway tests
//! check header injection and stripping; a valid WebSocket handshake on it
//! is upgraded to the echo socket of `ws.rs` instead. `/debug/slow` holds a request open
//! for gateway timeout tests. `/healthz` is the liveness probe.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::AppState;

/// Longest `/debug/slow` will sleep, whatever it is asked.
pub const MAX_SLOW_MS: u64 = 60_000;

/// Any method on `/debug/echo` and `/debug/echo/{*rest}`: a WebSocket
/// handshake becomes the echo socket (see `ws.rs`), anything else gets the
/// JSON report.
pub(crate) async fn echo(
    State(state): State<AppState>,
    method: Method,
    version: Version,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Ok(ws) = ws {
        return crate::ws::upgrade(ws, &method, &uri, &headers);
    }
    // The request target as hyper parsed it, not normalised in any way.
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut seen = Map::new();
    for name in headers.keys() {
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|value| Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        seen.insert(name.as_str().to_owned(), Value::Array(values));
    }
    let mut response = Json(json!({
        "method": method.as_str(),
        "path": path,
        // How the request reached the mock: "HTTP/1.1" or "HTTP/2.0".
        "http_version": format!("{version:?}"),
        "headers": seen,
        // The roles header read as a list, `null` when none arrived.
        "roles": state.identity.roles(&headers),
    }))
    .into_response();
    // `X-Echo-Response-Header: Name: value` asks for that header on the answer,
    // so tests can see what the gateway does with an upstream's headers.
    for asked in headers.get_all(ECHO_RESPONSE_HEADER) {
        let Some((name, value)) = asked.to_str().ok().and_then(|a| a.split_once(':')) else { continue };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// The request header whose values `/debug/echo` copies onto its answer.
pub const ECHO_RESPONSE_HEADER: &str = "x-echo-response-header";

#[derive(Debug, Deserialize)]
pub(crate) struct SlowQuery {
    ms: Option<u64>,
}

/// `GET /debug/slow?ms=N`: sleep `min(N, MAX_SLOW_MS)` ms, then answer.
pub(crate) async fn slow(query: Result<Query<SlowQuery>, QueryRejection>) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("Expected ?ms=<non-negative integer>: {}", rejection.body_text()),
        )
    })?;
    let ms = query.ms.unwrap_or(0).min(MAX_SLOW_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(Json(json!({ "slept_ms": ms })))
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
