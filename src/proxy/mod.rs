//! The pingora proxy: answers the built-in endpoints, applies route policy to
//! everything else, and forwards allowed requests with identity headers.
//!
//! Phases (pingora `ProxyHttp`): `request_filter` decides and may answer
//! (returning `Ok(true)` once a response is written); `upstream_peer` picks an
//! upstream; `upstream_request_filter` strips every client-sent identity header
//! before injecting ours, so the upstream can trust them; `logging` writes the
//! access log line and counts the request, for every request.
//!
//! Routes and upstreams live in a [`Live`] snapshot swapped atomically on
//! reload: a request takes the snapshot once and uses it in every phase.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::{Authenticator, Identity};
use crate::config::{LimitsConfig, RequestRules, Selection, UpstreamConfig};
use crate::endpoints::{BuiltIns, Reply};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::policy::RouteTable;
use crate::request::{self, ClientChain, HeaderRules, MethodOverride, Target};
use crate::tokens::Assertion;
use crate::upstreams::UpstreamPool;

/// Identity header names, without the configured prefix.
const IDENTITY_FIELDS: [&str; 6] = ["user-id", "username", "email", "admin", "fresh", "token-id"];

const REQUEST_ID: &str = "x-request-id";

/// What a reload replaces: routes, policies and upstreams.
pub struct Live {
    pub routes: RouteTable,
    pub upstreams: UpstreamPool,
    pub upstream: UpstreamConfig,
    /// `{prefix}{field}` for each of [`IDENTITY_FIELDS`], built once.
    identity_headers: [http::HeaderName; 6],
    /// `{prefix}assertion`.
    assertion_header: http::HeaderName,
}

impl Live {
    pub fn new(routes: RouteTable, upstream: UpstreamConfig) -> Result<Self, String> {
        let upstreams = UpstreamPool::new(&upstream)?;
        let mut identity_headers = Vec::with_capacity(IDENTITY_FIELDS.len());
        for field in IDENTITY_FIELDS {
            let name = format!("{}{field}", upstream.identity_prefix);
            identity_headers.push(http::HeaderName::try_from(name).map_err(|e| e.to_string())?);
        }
        let identity_headers = identity_headers.try_into().map_err(|_| "identity header names".to_owned())?;
        let assertion_header = http::HeaderName::try_from(format!("{}assertion", upstream.identity_prefix))
            .map_err(|e| e.to_string())?;
        Ok(Live { routes, upstreams, upstream, identity_headers, assertion_header })
    }
}

pub struct Gateway {
    live: Arc<ArcSwap<Live>>,
    auth: Arc<Authenticator>,
    builtins: BuiltIns,
    limits: LimitsConfig,
    requests: RequestRules,
    metrics: Arc<Metrics>,
}

/// Per-request state carried between phases.
pub struct RequestCtx {
    started: Instant,
    live: Option<Arc<Live>>,
    request_id: String,
    identity: Option<Identity>,
    /// The real client (after trusted proxies) and the proxies in between.
    client: Option<ClientChain>,
    /// A WebSocket upgrade the matched route allowed: when its tunnel must close.
    tunnel_deadline: Option<Instant>,
    /// The upstream accepted that upgrade: the deadline now applies.
    tunnel_open: bool,
    /// The matched route pattern or built-in endpoint, for logs and metrics.
    route: Cow<'static, str>,
    policy: &'static str,
    /// What became of the request: forwarded, refused, builtin, upstream_error.
    outcome: &'static str,
    refusal: Option<&'static str>,
    /// Backends tried so far (retries skip them).
    tried: Vec<Backend>,
    /// The matched rule asks for a signed identity assertion.
    assertion: bool,
    upstream_started: Option<Instant>,
}

impl Gateway {
    pub fn new(
        live: Arc<ArcSwap<Live>>,
        auth: Arc<Authenticator>,
        builtins: BuiltIns,
        limits: LimitsConfig,
        requests: RequestRules,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway { live, auth, builtins, limits, requests, metrics }
    }

    /// Replaces the parsed request with its canonical form (see
    /// [`crate::request`]), or says why it has none. Everything after this
    /// reads only the canonical request. Returns the target and whether the
    /// client asked for a WebSocket upgrade (whose headers are removed here and
    /// put back only if the matched route allows it).
    fn canonicalise(
        &self,
        live: &Live,
        request: &mut RequestHeader,
        trusted_peer: bool,
    ) -> Result<(Target, bool), ApiError> {
        let header_bytes: usize = request.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if header_bytes > self.limits.max_header_bytes {
            return Err(ApiError::HeadersTooLarge { limit: self.limits.max_header_bytes });
        }
        request::canonical_method(&request.method)?;
        let target = request::canonical_target(request.raw_path(), self.requests.method_override)?;
        let rules = HeaderRules {
            identity_prefix: &live.upstream.identity_prefix,
            underscores: self.requests.underscore_headers,
            trusted_peer,
        };
        let plan = request::inspect_headers(&request.method, request.version, &request.headers, rules)
            .map_err(ApiError::InvalidHeader)?;
        // The parsed request becomes the canonical one; when the client already
        // sent that, pingora's copy of the target is left as it is.
        let origin = target.to_origin_form();
        if origin.as_bytes() != request.raw_path() {
            let uri =
                origin.parse().map_err(|_| ApiError::InvalidPath(crate::path::PathError::NotOriginForm))?;
            request.set_uri(uri);
        }
        for name in &plan.remove {
            request.remove_header(name);
        }
        if let Some(length) = plan.content_length {
            let mut buf = itoa::Buffer::new();
            request.insert_header(CONTENT_LENGTH, buf.format(length)).map_err(|_| ApiError::Internal)?;
        }
        Ok((target, plan.websocket))
    }

    /// A signed statement of who calls, for exactly this method and path.
    fn assertion_for(
        &self,
        live: &Live,
        identity: Option<&Identity>,
        request: &RequestHeader,
    ) -> Result<String, ApiError> {
        let tokens = self.auth.tokens();
        let now = crate::tokens::now_unix();
        let assertion = Assertion {
            iss: tokens.issuer().to_owned(),
            aud: live.upstream.name.clone(),
            sub: identity.map(|i| i.user_id.to_string()),
            username: identity.map(|i| i.username.clone()),
            email: identity.map(|i| i.email.clone()),
            admin: identity.is_some_and(|i| i.is_admin),
            fresh: identity.is_some_and(|i| i.fresh),
            method: request.method.to_string(),
            // The canonical target, set on the request before it was judged.
            path: request.uri.path().to_owned(),
            token_jti: identity.map(|i| i.token_id.clone()),
            iat: now,
            nbf: now,
            exp: now + live.upstream.assertion_ttl.as_secs(),
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        tokens.sign_assertion(&assertion)
    }

    /// `X-Forwarded-For` (the client the gateway decided on, then the trusted
    /// proxies in between), `X-Forwarded-Proto` and `X-Forwarded-Host` (kept
    /// when a trusted proxy sent them), and optionally RFC 7239 `Forwarded`.
    /// Client-sent copies were removed when the request was made canonical.
    fn add_forwarding_headers(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let Some(chain) = &ctx.client else { return Ok(()) };
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        upstream.insert_header("x-forwarded-for", chain.forwarded_for())?;
        // A trusted proxy's scheme was kept; otherwise it is this listener's.
        let theirs = upstream.headers.get("x-forwarded-proto").map(HeaderValue::as_bytes);
        let proto = match theirs {
            Some(v) if v.eq_ignore_ascii_case(b"https") => "https",
            Some(v) if v.eq_ignore_ascii_case(b"http") => "http",
            _ => {
                let ours = if tls { "https" } else { "http" };
                upstream.insert_header("x-forwarded-proto", ours)?;
                ours
            }
        };
        let host = upstream.headers.get(HOST).cloned();
        if let Some(host) = &host {
            if !upstream.headers.contains_key("x-forwarded-host") {
                upstream.insert_header("x-forwarded-host", host.clone())?;
            }
        }
        if self.requests.forwarded_header {
            let node = match chain.client {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            let mut value = format!("for={node};proto={proto}");
            if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
                // Host was checked when the request was made canonical: no quotes or controls.
                value.push_str(&format!(";host=\"{host}\""));
            }
            upstream.insert_header("forwarded", value)?;
        }
        Ok(())
    }

    /// Looks for a `_method` field in a form body before anything goes
    /// upstream, where it could matter: on a path whose routes judge some
    /// methods differently from others. There the body is read whole and
    /// checked first (pingora then forwards its buffered copy), so a refused
    /// request never reaches the upstream at all. That buffer holds 64 KiB, so
    /// a longer form body there is 413 and one of unknown length (chunked) 411.
    /// Paths where every method is judged alike (uploads under one policy,
    /// say) take form bodies of any size unread: no override changes their
    /// judgement.
    async fn screen_form_body(
        &self,
        session: &mut Session,
        live: &Live,
        path: &str,
        mut scanner: request::FormOverrideScanner,
    ) -> Result<(), ApiError> {
        /// pingora's retry buffer (`BODY_BUF_LIMIT`): what it can replay upstream.
        const BUFFERED: usize = 64 * 1024;
        if live.routes.judged_alike_for_every_method(path) {
            return Ok(());
        }
        let chunked = session.req_header().headers.contains_key(http::header::TRANSFER_ENCODING);
        match declared_length(session.req_header()) {
            // Neither a length nor chunks: an empty body, nothing to check.
            None if !chunked => return Ok(()),
            None => return Err(ApiError::LengthRequired),
            Some(length) if length > BUFFERED => return Err(ApiError::BodyTooLarge { limit: BUFFERED }),
            Some(_) => {}
        }
        session.enable_retry_buffering();
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            // pingora never sends it by itself; without it the client waits.
            session
                .write_continue_response()
                .await
                .map_err(|_| ApiError::InvalidRequest("the client went away".into()))?;
        }
        let until = tokio::time::Instant::now() + self.builtins.body_timeout();
        loop {
            match tokio::time::timeout_at(until, session.read_request_body()).await {
                Ok(Ok(Some(chunk))) if scanner.found_in(&chunk) => break,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) if scanner.found_at_end() => break,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(_)) => {
                    return Err(ApiError::InvalidRequest("the request body could not be read".into()))
                }
                Err(_) => return Err(ApiError::RequestTimeout),
            }
        }
        session.set_keepalive(None);
        Err(ApiError::MethodOverrideRefused)
    }

    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, error: &ApiError) -> Result<bool> {
        ctx.outcome = "refused";
        ctx.refusal = Some(error.code());
        write_reply(session, &Reply::error(error), &ctx.request_id).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            live: None,
            request_id: String::new(),
            identity: None,
            client: None,
            tunnel_deadline: None,
            tunnel_open: false,
            route: Cow::Borrowed("(none)"),
            policy: "none",
            outcome: "refused",
            refusal: None,
            tried: Vec::new(),
            assertion: false,
            upstream_started: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Slow or idle clients may not hold a connection for long.
        session.set_read_timeout(Some(self.limits.client_read_timeout));
        // Only shorten keep-alive: where pingora turned it off (`Connection:
        // close`, HTTP/1.0, `Transfer-Encoding` beside `Content-Length`), it stays off.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.client_idle_timeout.as_secs().max(1)));
        }
        ctx.request_id = request_id(session.req_header());

        // Who the client is, from the peer and, behind trusted proxies only,
        // X-Forwarded-For: read before canonicalising removes that header.
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let trusted_peer = peer.is_some_and(|ip| self.requests.trusted_proxies.contains(ip));
        ctx.client = peer.map(|ip| {
            let forwarded = session.req_header().headers.get_all("x-forwarded-for");
            // A line that isn't text ends the chain like an entry that isn't an address.
            self.requests.trusted_proxies.client(ip, forwarded.iter().map(|v| v.to_str().unwrap_or("?")))
        });
        let live = self.live.load_full();
        let (target, websocket_asked) = match self.canonicalise(&live, session.req_header_mut(), trusted_peer)
        {
            Ok(canonical) => canonical,
            Err(e) => {
                // What follows on this connection can't be framed with confidence.
                session.set_keepalive(None);
                return self.refuse(session, ctx, &e).await;
            }
        };
        let method = session.req_header().method.clone();
        let client = ctx.client.as_ref().map(|c| c.client);

        if let Some(endpoint) = self.builtins.route(&target.path) {
            ctx.route = Cow::Borrowed(endpoint.label());
            ctx.policy = "builtin";
            ctx.outcome = "builtin";
            let reply = match read_body(session, self.builtins.max_body_bytes(), self.builtins.body_timeout())
                .await
            {
                Ok(body) => {
                    self.builtins
                        .handle(endpoint, &method, &session.req_header().headers, &body, client)
                        .await
                }
                Err(e) => Reply::error(&e),
            };
            if reply.status == StatusCode::PAYLOAD_TOO_LARGE {
                // The body was left unread: this connection can't carry another request.
                session.set_keepalive(None);
            }
            ctx.refusal = reply.error_code;
            write_reply(session, &reply, &ctx.request_id).await?;
            return Ok(true);
        }

        let matched = live.routes.lookup(&method, &target.path);
        ctx.route = Cow::Owned(matched.route_label().to_owned());
        ctx.policy = matched.rule.policy.as_str();
        let decided = Instant::now();
        let decision = self.auth.decide(&session.req_header().headers, matched.rule).await;
        self.metrics.auth_seconds.with_label_values(&[ctx.policy]).observe(decided.elapsed().as_secs_f64());
        let identity = match decision {
            Ok(identity) => identity,
            Err(e) => return self.refuse(session, ctx, &e).await,
        };
        if websocket_asked && matched.rule.websocket {
            // The only upgrade that is forwarded: judged as this request, and
            // its tunnel closes when the token that opened it expires.
            let request = session.req_header_mut();
            request.insert_header(UPGRADE, "websocket")?;
            request.insert_header(CONNECTION, "Upgrade")?;
            let mut lifetime = live.upstream.websocket_max_duration;
            if let Some(expires) =
                identity.as_ref().map(|i| i.expires_at).filter(|_| live.upstream.websocket_close_at_expiry)
            {
                lifetime =
                    lifetime.min(Duration::from_secs(expires.saturating_sub(crate::tokens::now_unix())));
            }
            ctx.tunnel_deadline = Some(Instant::now() + lifetime);
        }
        if self.requests.method_override == MethodOverride::Refuse {
            let scanner = session
                .req_header()
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| request::FormOverrideScanner::for_content_type(v.as_bytes()));
            if let Some(scanner) = scanner {
                if let Err(e) = self.screen_form_body(session, &live, &target.path, scanner).await {
                    // The body may be left unread: this connection can't carry another request.
                    session.set_keepalive(None);
                    return self.refuse(session, ctx, &e).await;
                }
            }
        }
        ctx.identity = identity;
        ctx.assertion = matched.rule.assertion;
        ctx.live = Some(live);
        ctx.outcome = "forwarded";
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let live = ctx.live.get_or_insert_with(|| self.live.load_full());
        // Only consistent hashing needs a key: the client's IP address.
        let client_key = match live.upstream.selection {
            Selection::Consistent => ctx.client.as_ref().map(|c| c.client.to_string()),
            _ => None,
        };
        let backend = live
            .upstreams
            .select(client_key.as_deref().unwrap_or("").as_bytes(), &ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream left to try"))?;
        let mut peer = HttpPeer::new(backend.clone(), false, String::new());
        peer.options.connection_timeout = Some(live.upstream.connect_timeout);
        // pingora can't change the upstream read timeout once the tunnel is
        // open: a WebSocket's upstream may stay quiet until its deadline.
        peer.options.read_timeout = Some(match ctx.tunnel_deadline {
            Some(deadline) => {
                deadline.saturating_duration_since(Instant::now()).max(live.upstream.read_timeout)
            }
            None => live.upstream.read_timeout,
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
            ctx.outcome = "client_error";
            return FailToProxy { error_code: 0, can_reuse_downstream: false };
        };
        ctx.outcome = "upstream_error";
        ctx.refusal = Some(error.code());
        tracing::warn!(error = %e, code = error.code(), request_id = %ctx.request_id, "proxying failed");
        // Once the upstream's response has started, a JSON error can't be written.
        // pingora closes the client connection after this: turning keep-alive
        // off makes the answer say `Connection: close`, so clients don't reuse it.
        session.set_keepalive(None);
        if session.response_written().is_none() {
            let _ = write_reply(session, &Reply::error(&error), &ctx.request_id).await;
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
            close_tunnel_at_deadline(session, ctx)?;
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
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        close_tunnel_at_deadline(session, ctx)
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        close_tunnel_at_deadline(session, ctx)?;
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let mut status_buf = itoa::Buffer::new();
        let status_label = status_buf.format(status);
        self.metrics.requests.with_label_values(&[&ctx.route, ctx.policy, ctx.outcome, status_label]).inc();
        let request = session.req_header();
        tracing::info!(
            target: "gatehouse::access",
            request_id = %ctx.request_id,
            method = %request.method,
            path = %request.uri.path(),
            route = %ctx.route,
            policy = ctx.policy,
            outcome = ctx.outcome,
            error = ctx.refusal.unwrap_or(""),
            status,
            user_id = ctx.identity.as_ref().map(|i| i.user_id),
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            client = %ctx.client.as_ref().map(|c| c.client.to_string()).unwrap_or_default(),
            peer = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
        );
    }
}

/// Adds what only the gateway may say about the caller: the request id and,
/// for an identified caller, the identity headers. Every client-sent header
/// they could be confused with was removed when the request was made
/// canonical; `Authorization` goes too unless passed through.
pub fn rewrite_upstream_headers(
    live: &Live,
    upstream_request: &mut RequestHeader,
    identity: Option<&Identity>,
    request_id: &str,
) -> Result<()> {
    if !live.upstream.pass_authorization {
        upstream_request.remove_header(&AUTHORIZATION);
    }
    upstream_request.insert_header(REQUEST_ID, request_id)?;
    if let Some(identity) = identity {
        let [user_id, username, email, admin, fresh, token_id] = &live.identity_headers;
        let mut id_buf = itoa::Buffer::new();
        upstream_request.insert_header(user_id.clone(), id_buf.format(identity.user_id))?;
        upstream_request.insert_header(username.clone(), header_safe(&identity.username))?;
        upstream_request.insert_header(email.clone(), header_safe(&identity.email))?;
        upstream_request.insert_header(admin.clone(), bool_str(identity.is_admin))?;
        upstream_request.insert_header(fresh.clone(), bool_str(identity.fresh))?;
        upstream_request.insert_header(token_id.clone(), identity.token_id.as_str())?;
    }
    Ok(())
}

/// A WebSocket tunnel lives until its deadline (the authorising token's
/// expiry, or `websocket_max_duration`) and not a moment longer. pingora has no
/// total timeout for a tunnel, so every pass through its loop (each chunk,
/// either way) checks the deadline and shortens the client-side read timeout
/// to what is left: an idle tunnel then times out at the deadline too.
fn close_tunnel_at_deadline(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let Some(deadline) = ctx.tunnel_deadline.filter(|_| ctx.tunnel_open) else {
        return Ok(());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Error::e_explain(ErrorType::ReadTimedout, "the token that opened this WebSocket has expired");
    }
    session.set_read_timeout(Some(left));
    Ok(())
}

/// Keeps a sane client `X-Request-Id` (1 to 128 of `A-Z a-z 0-9 - _ . :`),
/// else makes a new one (128 random bits, hex).
fn request_id(request: &RequestHeader) -> String {
    let valid = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let mut values = request.headers.get_all(REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if valid(&v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        _ => format!("{:032x}", rand::random::<u128>()),
    }
}

fn bool_str(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Header values can't hold control characters; usernames are checked at
/// registration, but stay defensive about what reaches the wire.
fn header_safe(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Reads a request body for the gateway's own endpoints (built-in and admin),
/// refusing more than `limit` bytes or a body that takes longer than `deadline`
/// in all. A refused body is read on and thrown away (up to a bound, within
/// the deadline) so the client gets the answer rather than a connection reset
/// (RFC 9112 section 9.6); the caller closes the connection after answering.
pub(crate) async fn read_body(
    session: &mut ServerSession,
    limit: usize,
    deadline: Duration,
) -> Result<Vec<u8>, ApiError> {
    let until = tokio::time::Instant::now() + deadline;
    if declared_length(session.req_header()).is_some_and(|len| len > limit) {
        discard_body(session, until).await;
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(until, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return Ok(body),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reading a request body failed");
                return Err(ApiError::InvalidRequest("the request body could not be read".into()));
            }
            Err(_) => return Err(ApiError::RequestTimeout),
        };
        if body.len() + chunk.len() > limit {
            discard_body(session, until).await;
            return Err(ApiError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
}

/// The body length the request declares, if it declares one.
fn declared_length(request: &RequestHeader) -> Option<usize> {
    request.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// Reads and drops what is left of a refused body: at most this many bytes,
/// and only until `until`.
async fn discard_body(session: &mut ServerSession, until: tokio::time::Instant) {
    const MOST: usize = 1024 * 1024;
    let mut discarded = 0;
    while discarded < MOST {
        match tokio::time::timeout_at(until, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => discarded += chunk.len(),
            _ => return,
        }
    }
}

/// Writes a complete JSON response, keeping the connection reusable.
async fn write_reply(session: &mut Session, reply: &Reply, request_id: &str) -> Result<()> {
    let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
    header.insert_header(CONTENT_TYPE, "application/json")?;
    header.insert_header(CONTENT_LENGTH, reply.body.len().to_string())?;
    header.insert_header(CACHE_CONTROL, "no-store")?;
    header.insert_header(REQUEST_ID, request_id)?;
    for (name, value) in &reply.headers {
        header.insert_header(name.clone(), value.as_str())?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(Bytes::copy_from_slice(&reply.body)), true).await
}
