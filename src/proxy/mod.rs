//! The pingora proxy: answers the built-in endpoints, applies route policy to
//! everything else, and forwards allowed requests with identity headers.
//!
//! Phases (pingora `ProxyHttp`): `request_filter` decides and may answer
//! (returning `Ok(true)` once a response is written); `upstream_peer` picks an
//! upstream; `upstream_request_filter` injects the identity headers (every
//! client-sent copy was already removed when the request was canonicalised,
//! see [`crate::request`]), so the upstream can trust them; `logging` writes
//! the access log line and counts the request, for every request.
//!
//! Routes and upstreams live in a [`Live`] snapshot swapped atomically on
//! reload: a request takes the snapshot once and uses it in every phase.

mod canonical;
mod ctx;
mod forward;
mod preflight;
mod tunnel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::{Authenticator, Presented, Source};
use crate::config::{LimitsConfig, RequestRules, Selection, UpstreamConfig};
use crate::cors;
use crate::endpoints::{BuiltIns, Endpoint};
use crate::error::{ApiError, ErrorCode};
use crate::http_io::{is_grpc, read_body, write_grpc_error, write_reply, Reply, REQUEST_ID};
use crate::limits::{Caller, RouteLimiter};
use crate::metrics::Metrics;
use crate::policy::{RouteLabel, RouteTable};
use crate::request::asks_to_close;
use crate::signin;
use crate::upstreams::{UpstreamError, UpstreamPool};

pub use ctx::{Outcome, PolicyLabel, RequestCtx};
pub use forward::rewrite_upstream_headers;

/// Identity header names, without the configured prefix.
const IDENTITY_FIELDS: [&str; 7] = ["user-id", "username", "email", "admin", "fresh", "token-id", "roles"];

/// What a reload replaces: routes, policies and upstreams.
pub struct Live {
    pub routes: RouteTable,
    /// The upstream servers, their balancing and health.
    pub upstreams: UpstreamPool,
    /// `[upstream]`: identity headers, timeouts, the assertion, WebSockets.
    pub upstream_settings: UpstreamConfig,
    /// `{prefix}{field}` for each of [`IDENTITY_FIELDS`], checked once and
    /// kept as the bytes pingora's `insert_header` takes as they are (from an
    /// `http::HeaderName` it would copy the name into new bytes on every call).
    identity_headers: [Bytes; 7],
    /// `{prefix}assertion`.
    assertion_header: http::HeaderName,
}

impl Live {
    pub fn new(routes: RouteTable, upstream: UpstreamConfig) -> Result<Self, UpstreamError> {
        let upstreams = UpstreamPool::new(&upstream)?;
        let header = |field: &str| http::HeaderName::try_from(format!("{}{field}", upstream.identity_prefix));
        let [user_id, username, email, admin, fresh, token_id, roles] = IDENTITY_FIELDS.map(header);
        let identity_headers = [user_id?, username?, email?, admin?, fresh?, token_id?, roles?]
            .map(|name| Bytes::copy_from_slice(name.as_str().as_bytes()));
        let assertion_header = header("assertion")?;
        Ok(Live { routes, upstreams, upstream_settings: upstream, identity_headers, assertion_header })
    }
}

pub struct Gateway {
    live: Arc<ArcSwap<Live>>,
    auth: Arc<Authenticator>,
    builtins: BuiltIns,
    limits: LimitsConfig,
    requests: RequestRules,
    metrics: Arc<Metrics>,
    /// The counters of the routes' request budgets (`[[routes]] rate`).
    budgets: Arc<RouteLimiter>,
}

impl Gateway {
    pub fn new(
        live: Arc<ArcSwap<Live>>,
        auth: Arc<Authenticator>,
        builtins: BuiltIns,
        limits: LimitsConfig,
        requests: RequestRules,
        metrics: Arc<Metrics>,
        budgets: Arc<RouteLimiter>,
    ) -> Self {
        Gateway { live, auth, builtins, limits, requests, metrics, budgets }
    }

    /// Slow or idle clients may not hold a connection for long.
    fn bound_connection(&self, session: &mut Session) {
        session.set_read_timeout(Some(self.limits.client_read_timeout));
        // A `close` in any `Connection` header ends the connection after this
        // answer: pingora reads only the first such header, and lets a
        // `keep-alive` beside `close` win.
        if asks_to_close(&session.req_header().headers) {
            session.set_keepalive(None);
        }
        // Only shorten keep-alive: where pingora turned it off (`Connection:
        // close`, HTTP/1.0, `Transfer-Encoding` beside `Content-Length`), it stays off.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.client_idle_timeout.as_secs().max(1)));
        }
    }

    /// Who the client is, from the peer and, behind trusted proxies only,
    /// X-Forwarded-For: read before canonicalising removes that header.
    /// Returns whether the peer itself is a trusted proxy.
    fn identify_client(&self, session: &Session, ctx: &mut RequestCtx) -> bool {
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let trusted_peer = peer.is_some_and(|ip| self.requests.trusted_proxies.contains(ip));
        ctx.client = peer.map(|ip| {
            let forwarded = session.req_header().headers.get_all("x-forwarded-for");
            // A line that isn't text ends the chain like an entry that isn't an address.
            self.requests.trusted_proxies.client(ip, forwarded.iter().map(|v| v.to_str().unwrap_or("?")))
        });
        trusted_peer
    }

    /// Reads the body of a request to a built-in endpoint and writes its answer.
    async fn answer_builtin(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        endpoint: Endpoint,
        query: Option<&str>,
    ) -> Result<bool> {
        ctx.route = RouteLabel::Fixed(endpoint.label());
        ctx.policy = PolicyLabel::Builtin;
        ctx.outcome = Outcome::Builtin;
        let method = session.req_header().method.clone();
        let client = ctx.client.as_ref().map(|c| c.client);
        let reply =
            match read_body(session, self.builtins.max_body_bytes(), self.builtins.body_timeout()).await {
                Ok(body) => {
                    let request = Presented {
                        headers: &session.req_header().headers,
                        method: &method,
                        credentials: &ctx.credentials,
                    };
                    self.builtins.handle(endpoint, request, query, &body, client).await
                }
                Err(e) => Reply::error(&e),
            };
        if reply.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was left unread: this connection can't carry another request.
            session.set_keepalive(None);
        }
        ctx.refusal = reply.error_code;
        write_reply(session, &reply, &ctx.request_id).await?;
        Ok(true)
    }

    /// Writes the refusal of a proxied request: the one place they are
    /// answered, so the one place they are counted.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, error: &ApiError) -> Result<bool> {
        self.count_refusal(ctx, error);
        write_refusal(session, ctx, error).await?;
        Ok(true)
    }

    /// Marks the request refused for the access log and counts it.
    fn count_refusal(&self, ctx: &mut RequestCtx, error: &ApiError) {
        ctx.outcome = Outcome::Refused;
        ctx.refusal = Some(error.kind());
        self.metrics.refusals.with_label_values(&[ctx.route.as_str(), error.code()]).inc();
    }
}

/// Writes a refusal as the client reads one: a gRPC error to a gRPC call,
/// else the JSON answer with the route's CORS headers.
async fn write_refusal(session: &mut Session, ctx: &RequestCtx, error: &ApiError) -> Result<()> {
    if ctx.grpc {
        write_grpc_error(session, error, &ctx.request_id).await
    } else {
        write_reply(session, &with_cors(Reply::error(error), ctx), &ctx.request_id).await
    }
}

impl Gateway {
    /// A browser refused for want of a valid token on a `signin_redirect`
    /// route: 303 to the sign-in page instead of the 401. Still a refusal
    /// (logged and counted as one); nothing reaches the upstream.
    async fn send_to_signin(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: &ApiError,
        location: String,
    ) -> Result<bool> {
        self.count_refusal(ctx, error);
        let reply = Reply {
            status: StatusCode::SEE_OTHER,
            body: Vec::new(),
            headers: vec![
                (http::header::LOCATION, location),
                (http::header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            ],
            error_code: Some(error.kind()),
        };
        write_reply(session, &with_cors(reply, ctx), &ctx.request_id).await?;
        Ok(true)
    }
}

/// A gateway answer with the route's CORS headers, when it has any.
fn with_cors(mut reply: Reply, ctx: &RequestCtx) -> Reply {
    if let Some(headers) = &ctx.cors {
        reply.headers.extend(headers.iter().cloned());
    }
    reply
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new()
    }

    /// None: pingora's default adds its response compression module, disabled,
    /// which still costs allocations on every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        self.bound_connection(session);
        ctx.request_id = canonical::request_id(session.req_header());
        // gRPC runs over HTTP/2 only: an HTTP/1.1 request is answered in JSON
        // whatever its content type, so no refusal looks like a 200 there.
        ctx.grpc =
            session.req_header().version == http::Version::HTTP_2 && is_grpc(&session.req_header().headers);
        let trusted_peer = self.identify_client(session, ctx);
        let live = self.live.load_full();
        let (target, websocket_asked) = match self.canonicalise(&live, session.req_header_mut(), trusted_peer)
        {
            Ok((target, websocket_asked, credentials)) => {
                ctx.credentials = credentials;
                (target, websocket_asked)
            }
            Err(e) => {
                // What follows on this connection can't be framed with confidence.
                session.set_keepalive(None);
                return self.refuse(session, ctx, &e).await;
            }
        };
        if let Some(endpoint) = self.builtins.route(&target.path) {
            // Boxed: the built-in endpoints' futures nest deep enough to
            // overflow the compiler's layout query depth inline.
            return Box::pin(self.answer_builtin(session, ctx, endpoint, target.query.as_deref())).await;
        }

        let method = session.req_header().method.clone();
        if cors::is_preflight(&method, &session.req_header().headers) {
            if let Some(answered) = self.preflight(session, ctx, &live, &target.path).await? {
                return Ok(answered);
            }
        }
        let matched = live.routes.lookup(&method, &target.path);
        ctx.route = matched.route_label();
        ctx.policy = PolicyLabel::Route(matched.rule.policy);
        // Before the decision: a refusal is an answer the page must be able to read too.
        ctx.cors =
            matched.route.and_then(|r| r.cors.as_ref()).map(|c| c.actual(&session.req_header().headers));
        let decided = Instant::now();
        let request = Presented {
            headers: &session.req_header().headers,
            method: &method,
            credentials: &ctx.credentials,
        };
        let decision = self.auth.decide(request, matched.rule).await;
        self.metrics
            .auth_seconds
            .with_label_values(&[ctx.policy.as_str()])
            .observe(decided.elapsed().as_secs_f64());
        let identity = match decision {
            Ok(identity) => identity,
            Err(e) => {
                let to_signin = matched.route.is_some_and(|r| r.signin_redirect)
                    && e.status() == StatusCode::UNAUTHORIZED
                    && signin::wants_html(&method, &session.req_header().headers);
                if let (true, Some(path)) = (to_signin, self.builtins.signin_path()) {
                    let location = signin::signin_location(path, &target.to_origin_form());
                    return self.send_to_signin(session, ctx, &e, location).await;
                }
                return self.refuse(session, ctx, &e).await;
            }
        };
        // A browser's WebSocket comes with the user's cookies from whichever
        // page opened it: judged on its Origin before it spends anything.
        if websocket_asked && matched.rule.websocket {
            let cors = matched.route.and_then(|r| r.cors.as_deref());
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            if !tunnel::origin_allowed(&session.req_header().headers, cors, tls) {
                return self.refuse(session, ctx, &ApiError::WebSocketOriginRefused).await;
            }
        }
        // Only a request the policy let through spends the budget; a refused
        // one never reaches the upstream, tunnel or not.
        if let Some(budget) = matched.route.and_then(|r| r.budget.as_ref()) {
            let caller =
                Caller::of(identity.as_ref().map(|i| i.user_id), ctx.client.as_ref().map(|c| c.client));
            if let Err(e) = self.budgets.spend(budget, caller).await {
                e.log();
                return self.refuse(session, ctx, &e.into()).await;
            }
        }
        if websocket_asked && matched.rule.websocket {
            tunnel::open(session, ctx, &live, identity.as_ref())?;
        }
        if let Err(e) = self.screen_form_body(session, &live, &target.path).await {
            // The body may be left unread: this connection can't carry another request.
            session.set_keepalive(None);
            return self.refuse(session, ctx, &e).await;
        }
        ctx.identity = identity;
        ctx.assertion = matched.rule.assertion;
        ctx.live = Some(live);
        ctx.outcome = Outcome::Forwarded;
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let live = ctx.live.get_or_insert_with(|| self.live.load_full());
        // Only consistent hashing needs a key: the client's IP address.
        let client_key = match live.upstream_settings.selection {
            Selection::Consistent => ctx.client.as_ref().map(|c| c.client.to_string()),
            _ => None,
        };
        let backend = live
            .upstreams
            .select(client_key.as_deref().unwrap_or("").as_bytes(), &ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream left to try"))?;
        let mut peer = live.upstreams.peer(&backend);
        peer.options.connection_timeout = Some(live.upstream_settings.connect_timeout);
        // pingora can't change the upstream read timeout once the tunnel is
        // open: a WebSocket's upstream may stay quiet until its deadline.
        peer.options.read_timeout = Some(match ctx.tunnel_deadline {
            Some(deadline) => {
                deadline.saturating_duration_since(Instant::now()).max(live.upstream_settings.read_timeout)
            }
            None => live.upstream_settings.read_timeout,
        });
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        ctx.tried.push(backend);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the upstream: an idempotent request may go to the next one.
        let untried = ctx.live.as_ref().is_some_and(|live| ctx.tried.len() < live.upstreams.len());
        if session.req_header().method.is_idempotent() && untried {
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let error = match (e.esource(), e.etype()) {
            // The client went away or sent garbage: nobody to answer. (First:
            // pingora reports some client-side faults as `ConnectError`.)
            (ErrorSource::Downstream, _) => None,
            (_, ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectNoRoute)
            | (_, ErrorType::ConnectError | ErrorType::TLSHandshakeFailure) => {
                Some(ApiError::UpstreamUnavailable)
            }
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Some(ApiError::UpstreamTimeout)
            }
            (ErrorSource::Upstream, _) => Some(ApiError::UpstreamUnavailable),
            _ => Some(ApiError::Internal),
        };
        let Some(error) = error else {
            ctx.outcome = Outcome::ClientError;
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        ctx.outcome = Outcome::UpstreamError;
        ctx.refusal = Some(error.kind());
        tracing::warn!(error = %e, code = error.code(), request_id = %ctx.request_id, "proxying failed");
        // Once the upstream's response has started, a JSON error can't be written.
        // pingora closes the client connection after this: turning keep-alive
        // off makes the answer say `Connection: close`, so clients don't reuse it.
        session.set_keepalive(None);
        if session.response_written().is_none() {
            let _ = write_refusal(session, ctx, &error).await;
        }
        FailToProxy { error_code: error.status().as_u16(), can_reuse_downstream: false }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(live) = ctx.live.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no config snapshot for this request");
        };
        // The target and method are already the canonical ones: pingora built
        // this request from the session's, which `canonicalise` replaced.
        rewrite_upstream_headers(live, upstream_request, ctx.identity.as_ref(), &ctx.request_id)?;
        self.add_forwarding_headers(session, upstream_request, ctx)?;
        if ctx.grpc && live.upstreams.speaks_http2() {
            // gRPC servers require it (C-core refuses a call without it); it
            // was removed with the other hop-by-hop fields when the request
            // was made canonical, and is the one value HTTP/2 allows.
            upstream_request.insert_header(http::header::TE, "trailers")?;
        }
        if ctx.assertion {
            let signed = self.assertion_for(live, ctx.identity.as_ref(), upstream_request).map_err(|_| {
                Error::explain(ErrorType::InternalError, "cannot sign the identity assertion")
            })?;
            upstream_request.insert_header(live.assertion_header.clone(), signed)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if upstream_response.status == StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel opens only where the route allowed a WebSocket and the
            // client asked for one; an upstream's unasked 101 is an error.
            if ctx.tunnel_deadline.is_none() || !session.is_upgrade_req() {
                return Err(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "the upstream switched protocols unasked",
                )
                .into_up());
            }
            ctx.tunnel_open = true;
            tunnel::close_at_deadline(session, ctx)?;
        }
        if let (Some(started), Some(backend)) = (ctx.upstream_started.take(), ctx.tried.last()) {
            let label = ctx.live.as_ref().and_then(|live| live.upstreams.label(backend)).unwrap_or("other");
            self.metrics
                .upstream_seconds
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        if self.auth.cookies().enabled {
            cookie_response_rules(session, upstream_response, ctx)?;
        }
        if let Some(headers) = &ctx.cors {
            // The route's CORS is the gateway's: the upstream can't widen it.
            let upstream_set: Vec<http::HeaderName> = upstream_response
                .headers
                .keys()
                .filter(|n| cors::is_cors_response_header(n))
                .cloned()
                .collect();
            for name in upstream_set {
                upstream_response.remove_header(&name);
            }
            for (name, value) in headers {
                upstream_response.append_header(name.clone(), value.as_str())?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        tunnel::close_at_deadline(session, ctx)
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        tunnel::close_at_deadline(session, ctx)?;
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let mut status_buf = itoa::Buffer::new();
        let status_label = status_buf.format(status);
        let (policy, outcome) = (ctx.policy.as_str(), ctx.outcome.as_str());
        self.metrics.requests.with_label_values(&[ctx.route.as_str(), policy, outcome, status_label]).inc();
        let request = session.req_header();
        tracing::info!(
            target: "gatehouse::access",
            request_id = %ctx.request_id,
            method = %request.method,
            path = %request.uri.path(),
            route = %ctx.route,
            policy,
            outcome,
            error = ctx.refusal.map_or("", ErrorCode::as_str),
            status,
            user_id = ctx.identity.as_ref().map(|i| i.user_id),
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            client = %ctx.client.as_ref().map(|c| c.client.to_string()).unwrap_or_default(),
            peer = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
        );
    }
}

/// With cookie tokens on, the gateway adds a credential the upstream never
/// sees, so two things the upstream may rely on no longer hold:
///
/// - it may answer `Access-Control-Allow-Credentials: true` to any origin it
///   reflects, harmless while callers had to send a bearer header; on routes
///   without the gateway's own CORS, that header is removed, so no other site's
///   page can read an answer that the user's cookie authorised;
/// - shared caches never store answers to requests with `Authorization`
///   (RFC 9111 section 3.5), but nothing stops them storing one to a cookie
///   request, and the upstream no longer sees the cookie to say `Vary` or
///   `private`: such answers are marked `private` unless already `private` or
///   `no-store`.
fn cookie_response_rules(session: &Session, response: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    if ctx.cors.is_none() {
        response.remove_header("access-control-allow-credentials");
    }
    let request = session.req_header();
    let presented =
        Presented { headers: &request.headers, method: &request.method, credentials: &ctx.credentials };
    let by_cookie = ctx.identity.is_some()
        && !ctx.credentials.access.is_absent()
        && presented.access_source() == Some(Source::Cookie);
    if !by_cookie {
        return Ok(());
    }
    let directives: Vec<String> = response
        .headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let private = |d: &String| {
        let name = d.split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("private") || name.eq_ignore_ascii_case("no-store")
    };
    if !directives.iter().any(private) {
        let value = std::iter::once("private".to_owned()).chain(directives).collect::<Vec<_>>().join(", ");
        response.insert_header(http::header::CACHE_CONTROL, value)?;
    }
    Ok(())
}
