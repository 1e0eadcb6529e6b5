//! upstream-mock: a stand-in for the backend service behind Gatehouse.
//!
//! It is the in-memory "items, products and categories" resource service
//! from the Flask-JWT-Extended tutorial, rewritten with axum, plus a few
//! `/debug/*` endpoints that let gateway tests see what the upstream
//! received. Run it on its own with
//!
//! ```text
//! cargo run -p upstream-mock -- --listen 127.0.0.1:8000 [--identity-prefix X-Auth-] [--grpc-listen 127.0.0.1:50051]
//! cargo run -p upstream-mock -- --verify-jwks http://127.0.0.1:8080/.well-known/jwks.json --audience items
//! ```
//!
//! The second form is verify mode: every request must carry the gateway's
//! signed identity assertion (`X-Auth-Assertion`), checked against the
//! gateway's published keys (see `verify.rs`).
//!
//! or, from tests, in-process with [`serve_with_shutdown`] on a listener
//! bound to `127.0.0.1:0` (and [`serve_grpc_with_shutdown`] for the gRPC
//! service).
//!
//! The mock performs no authentication at all: it trusts the identity
//! headers the gateway injects (`X-Auth-User-Id`, `X-Auth-Username`,
//! `X-Auth-Email`, `X-Auth-Admin`, `X-Auth-Fresh`, `X-Auth-Token-Id`,
//! `X-Auth-Roles`, with a
//! configurable prefix). A caller is *identified* when `<prefix>User-Id` is
//! present.
//!
//! # Endpoints
//!
//! | Route | Answer |
//! |---|---|
//! | `GET/POST/DELETE /item/{name}` | an item `{name, price, category}` |
//! | `GET /items` | full items when identified, names only when anonymous |
//! | `GET/POST/DELETE /product/{name}`, `GET /products` | same shape as items |
//! | `GET/POST/DELETE /category/{name}`, `GET /categories` | `{name, items}` |
//! | any method `/debug/echo[/{*rest}]` | `{method, path, http_version, headers, roles}` as received (`roles`: the `<prefix>Roles` header as a list, `null` without it); a WebSocket handshake is upgraded to the echo socket below; each `X-Echo-Response-Header: Name: value` sent becomes a `Name: value` header on the answer |
//! | `GET /ws/echo[/{*rest}]`, `GET /debug/ws[/{*rest}]` (WebSocket) | hello `{type: "hello", method, path, headers}`, then echoes every message |
//! | `GET /debug/slow?ms=N` | sleeps up to 60 s, then `{slept_ms}` |
//! | `GET /healthz` | `{status: "ok"}` |
//!
//! Every error is `{"error": "<snake_case_code>", "message": "..."}`.
//!
//! ## gRPC echo service
//!
//! With `--grpc-listen` (or [`serve_grpc_with_shutdown`]) the mock also
//! serves `gatehouse.echo.v1.Echo` (`proto/echo.proto`, see [`grpc`]) over
//! h2c, cleartext HTTP/2 with prior knowledge, on a listener of its own:
//!
//! | Method | Answer |
//! |---|---|
//! | `Unary(EchoRequest) returns (EchoReply)` | one reply echoing `message` |
//! | `ServerStream(EchoRequest) returns (stream EchoReply)` | `count` replies (at most 1000) numbered 1..=count, `interval_ms` apart |
//! | `ClientStream(stream EchoRequest) returns (EchoReply)` | the messages concatenated, and their `count` |
//! | `Bidi(stream EchoRequest) returns (stream EchoReply)` | one reply per message, as it arrives |
//! | `Fail(Failure) returns (EchoReply)` | the status `code` (1 to 16) with its `message` |
//!
//! Every `EchoReply` carries the method name and `:path`, every request
//! header in `metadata` (lower-case names, copies joined with `", "`), and
//! `user_id` and `roles` read from the identity headers as above. A request
//! whose `fail_with` is set ends its call with that status (after the
//! replies due before it). Every response ends with the trailer
//! `x-echo-trailer: done`, on streams too, and every call that reaches a
//! handler is logged in [`GrpcCalls`] with its method and user id.
//!
//! ## WebSocket echo
//!
//! On a WebSocket upgrade (`/ws/echo`, `/debug/ws`, anything below them, or
//! any `/debug/echo` path), the first message the mock sends is a text
//! message describing the upgrade request as it arrived:
//! `{"type": "hello", "method": "GET", "path": "/ws/echo?x=1", "headers":
//! {"x-auth-user-id": "42", ...}}`: every header, lower-case names, copies
//! of one name joined with `", "`. Then every text and binary message is
//! echoed back unchanged, pings get a pong with the same payload, and a
//! client's close is answered with a close frame. The first subprotocol the
//! client offers is accepted. A plain HTTP request to `/ws/echo` or
//! `/debug/ws` gets `426 {"error": "websocket_required", ...}`.

mod debug;
mod error;
pub mod grpc;
mod identity;
mod resources;
mod store;
mod verify;
mod ws;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

pub use debug::MAX_SLOW_MS;
pub use grpc::{serve_grpc_with_shutdown, GrpcCall, GrpcCalls};
pub use identity::is_valid_prefix;

use identity::IdentityHeaders;
use resources::{Items, Products};
use store::SharedStore;

/// The identity header prefix the gateway uses by default.
pub const DEFAULT_IDENTITY_PREFIX: &str = "X-Auth-";

/// How a mock instance behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOptions {
    /// Prefix of the identity headers, e.g. `X-Auth-` for `X-Auth-User-Id`.
    /// Matched case-insensitively. A prefix that does not form valid header
    /// names (see [`is_valid_prefix`]) makes every caller anonymous.
    pub identity_prefix: String,
    /// Verify mode: refuse every request (but `/healthz`) without a valid
    /// identity assertion from the gateway.
    pub verify: Option<VerifyOptions>,
}

/// Where verify mode gets the gateway's keys and what it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The gateway's `/.well-known/jwks.json`.
    pub jwks_url: String,
    /// This service's name: the assertion's `aud`.
    pub audience: String,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self { identity_prefix: DEFAULT_IDENTITY_PREFIX.to_owned(), verify: None }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: SharedStore,
    pub(crate) identity: IdentityHeaders,
}

/// Builds the mock's router with its own freshly seeded in-memory state.
pub fn router(options: MockOptions) -> Router {
    let state =
        AppState { store: SharedStore::seeded(), identity: IdentityHeaders::new(&options.identity_prefix) };
    let router = Router::new()
        .route(
            "/item/{name}",
            get(resources::get_one::<Items>)
                .post(resources::create::<Items>)
                .delete(resources::delete::<Items>),
        )
        .route("/items", get(resources::list_items))
        .route(
            "/product/{name}",
            get(resources::get_one::<Products>)
                .post(resources::create::<Products>)
                .delete(resources::delete::<Products>),
        )
        .route("/products", get(resources::list_products))
        .route(
            "/category/{name}",
            get(resources::get_category).post(resources::create_category).delete(resources::delete_category),
        )
        .route("/categories", get(resources::list_categories))
        .route("/debug/echo", any(debug::echo))
        .route("/debug/echo/", any(debug::echo))
        .route("/debug/echo/{*rest}", any(debug::echo))
        .route("/ws/echo", any(ws::echo))
        .route("/ws/echo/{*rest}", any(ws::echo))
        .route("/debug/ws", any(ws::echo))
        .route("/debug/ws/{*rest}", any(ws::echo))
        .route("/debug/slow", get(debug::slow))
        .route("/healthz", get(debug::healthz))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state);
    match options.verify {
        Some(verify) => {
            let verifier = Arc::new(verify::Verifier::new(verify, &options.identity_prefix));
            router.layer(axum::middleware::from_fn(move |req, next| {
                let verifier = Arc::clone(&verifier);
                async move { verifier.check(req, next).await }
            }))
        }
        None => router,
    }
}

/// Serves the mock on `listener` until the process ends.
pub async fn serve(listener: TcpListener, options: MockOptions) -> std::io::Result<()> {
    axum::serve(listener, router(options)).await
}

/// Serves the mock on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish and returns.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    options: MockOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(options)).with_graceful_shutdown(shutdown).await
}
