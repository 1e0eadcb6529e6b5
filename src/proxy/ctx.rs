//! What one request carries from phase to phase. The labels the access log and
//! the request counter read are closed sets, so they are values here rather
//! than strings that could drift between the phases that set them.

use std::sync::Arc;
use std::time::Instant;

use pingora::lb::Backend;

use super::Live;
use crate::auth::Identity;
use crate::cookies::Credentials;
use crate::error::ErrorCode;
use crate::policy::{Policy, RouteLabel};
use crate::request::ClientChain;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Refused,
    /// Answered by a built-in endpoint.
    Builtin,
    /// A CORS preflight the gateway allowed itself (a refused one is `Refused`).
    Preflight,
    UpstreamError,
    /// The client went away or sent garbage mid-proxying.
    ClientError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Refused => "refused",
            Outcome::Builtin => "builtin",
            Outcome::Preflight => "preflight",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientError => "client_error",
        }
    }
}

/// Which policy judged a request, as logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyLabel {
    /// Refused before any route matched.
    None,
    /// A built-in endpoint, which applies its own rules.
    Builtin,
    Route(Policy),
}

impl PolicyLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyLabel::None => "none",
            PolicyLabel::Builtin => "builtin",
            PolicyLabel::Route(policy) => policy.as_str(),
        }
    }
}

/// Per-request state carried between phases.
pub struct RequestCtx {
    pub(super) started: Instant,
    pub(super) live: Option<Arc<Live>>,
    pub(super) request_id: String,
    pub(super) identity: Option<Identity>,
    /// The tokens and CSRF header taken out of the request's cookies.
    pub(super) credentials: Credentials,
    /// The real client (after trusted proxies) and the proxies in between.
    pub(super) client: Option<ClientChain>,
    /// A WebSocket upgrade the matched route allowed: when its tunnel must close.
    pub(super) tunnel_deadline: Option<Instant>,
    /// The upstream accepted that upgrade: the deadline now applies.
    pub(super) tunnel_open: bool,
    /// The matched route pattern or built-in endpoint, for logs and metrics.
    pub(super) route: RouteLabel,
    pub(super) policy: PolicyLabel,
    pub(super) outcome: Outcome,
    pub(super) refusal: Option<ErrorCode>,
    /// Backends tried so far (retries skip them).
    pub(super) tried: Vec<Backend>,
    /// The matched rule asks for a signed identity assertion.
    pub(super) assertion: bool,
    pub(super) upstream_started: Option<Instant>,
    /// A gRPC call: refusals are gRPC errors, not JSON.
    pub(super) grpc: bool,
    /// The matched route answers CORS itself: the headers every answer to
    /// this request carries (see [`crate::cors::Cors::actual`]), the
    /// upstream's own `Access-Control-*` removed first. `None` elsewhere.
    pub(super) cors: Option<Vec<(http::HeaderName, String)>>,
}

impl RequestCtx {
    pub(super) fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            live: None,
            request_id: String::new(),
            identity: None,
            credentials: Credentials::default(),
            client: None,
            tunnel_deadline: None,
            tunnel_open: false,
            route: RouteLabel::Fixed("(none)"),
            policy: PolicyLabel::None,
            outcome: Outcome::Refused,
            refusal: None,
            tried: Vec::new(),
            assertion: false,
            upstream_started: None,
            grpc: false,
            cors: None,
        }
    }
}
