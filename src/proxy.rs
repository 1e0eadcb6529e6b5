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
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::{Authenticator, Identity};
use crate::config::{LimitsConfig, Selection, UpstreamConfig};
use crate::endpoints::{BuiltIns, Reply};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::path::{self, PathError};
use crate::policy::RouteTable;
use crate::tokens::Assertion;
use crate::upstreams::UpstreamPool;

/// Headers some frameworks read to replace the request method: removed, so
/// the method that was authorised is the one the upstream acts on.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

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
    metrics: Arc<Metrics>,
}

/// Per-request state carried between phases.
pub struct RequestCtx {
    started: Instant,
    live: Option<Arc<Live>>,
    request_id: String,
    identity: Option<Identity>,
    /// Set when normalisation changed the path: the upstream gets this one.
    normalised_path: Option<String>,
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
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway { live, auth, builtins, limits, metrics }
    }

    /// The request's path, normalised, after the checks no route can override:
    /// origin-form target, header size, a path that normalises safely.
    fn checked_path(&self, request: &RequestHeader) -> Result<String, ApiError> {
        if request.uri.scheme().is_some() || request.uri.authority().is_some() {
            return Err(ApiError::InvalidPath(PathError::NotOriginForm));
        }
        let header_bytes: usize = request.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if header_bytes > self.limits.max_header_bytes {
            return Err(ApiError::HeadersTooLarge { limit: self.limits.max_header_bytes });
        }
        path::normalise(request.uri.path()).map(Cow::into_owned).map_err(ApiError::InvalidPath)
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
            path: request.uri.path().to_owned(),
            token_jti: identity.map(|i| i.token_id.clone()),
            iat: now,
            nbf: now,
            exp: now + live.upstream.assertion_ttl.as_secs(),
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        tokens.sign_assertion(&assertion)
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
            normalised_path: None,
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
        session.set_keepalive(Some(self.limits.client_idle_timeout.as_secs().max(1)));
        ctx.request_id = request_id(session.req_header());

        let path = match self.checked_path(session.req_header()) {
            Ok(path) => path,
            Err(e) => return self.refuse(session, ctx, &e).await,
        };
        let method = session.req_header().method.clone();

        if let Some(endpoint) = self.builtins.route(&path) {
            ctx.route = Cow::Borrowed(endpoint.label());
            ctx.policy = "builtin";
            ctx.outcome = "builtin";
            let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            let reply = match read_body(session, self.builtins.max_body_bytes()).await {
                Ok(body) => {
                    self.builtins
                        .handle(endpoint, &method, &session.req_header().headers, &body, client)
                        .await
                }
                Err(e) => Reply::error(&e),
            };
            write_reply(session, &reply, &ctx.request_id).await?;
            return Ok(true);
        }

        let live = self.live.load_full();
        let matched = live.routes.lookup(&method, &path);
        ctx.route = Cow::Owned(matched.route_label().to_owned());
        ctx.policy = matched.rule.policy.as_str();
        let decided = Instant::now();
        let decision = self.auth.decide(&session.req_header().headers, matched.rule).await;
        self.metrics.auth_seconds.with_label_values(&[ctx.policy]).observe(decided.elapsed().as_secs_f64());
        match decision {
            Ok(identity) => {
                ctx.identity = identity;
                if path != session.req_header().uri.path() {
                    ctx.normalised_path = Some(path);
                }
                ctx.assertion = matched.rule.assertion;
                ctx.live = Some(live);
                ctx.outcome = "forwarded";
                Ok(false)
            }
            Err(e) => self.refuse(session, ctx, &e).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let live = ctx.live.get_or_insert_with(|| self.live.load_full());
        // Only consistent hashing needs a key: the client's IP address.
        let client_key = match live.upstream.selection {
            Selection::Consistent => {
                session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string())
            }
            _ => None,
        };
        let backend = live
            .upstreams
            .select(client_key.as_deref().unwrap_or("").as_bytes(), &ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream left to try"))?;
        let mut peer = HttpPeer::new(backend.clone(), false, String::new());
        peer.options.connection_timeout = Some(live.upstream.connect_timeout);
        peer.options.read_timeout = Some(live.upstream.read_timeout);
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
            (_, ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectNoRoute)
            | (_, ErrorType::ConnectError | ErrorType::TLSHandshakeFailure) => {
                Some(ApiError::UpstreamUnavailable)
            }
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                Some(ApiError::UpstreamTimeout)
            }
            (ErrorSource::Upstream, _) => Some(ApiError::UpstreamUnavailable),
            // The client went away or sent garbage: nobody to answer.
            (ErrorSource::Downstream, _) => None,
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
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(live) = ctx.live.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no config snapshot for this request");
        };
        if let Some(path) = ctx.normalised_path.take() {
            let target = match upstream_request.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            let uri = target
                .parse()
                .map_err(|_| Error::explain(ErrorType::InternalError, "normalised path is not a URI"))?;
            upstream_request.set_uri(uri);
        }
        rewrite_upstream_headers(live, upstream_request, ctx.identity.as_ref(), &ctx.request_id)?;
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
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
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
            client = %session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
        );
    }
}

/// Makes the upstream request's headers trustworthy: strips every client-sent
/// identity header and method override (and `Authorization` unless passed
/// through), then adds the request id and, for an identified caller, ours.
pub fn rewrite_upstream_headers(
    live: &Live,
    upstream_request: &mut RequestHeader,
    identity: Option<&Identity>,
    request_id: &str,
) -> Result<()> {
    strip_prefixed(upstream_request, &live.upstream.identity_prefix);
    for name in METHOD_OVERRIDE_HEADERS {
        upstream_request.remove_header(name);
    }
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

/// Removes every header whose name starts with `prefix` (lower-case), every copy.
fn strip_prefixed(request: &mut RequestHeader, prefix: &str) {
    let doomed: Vec<http::HeaderName> =
        request.headers.keys().filter(|name| name.as_str().starts_with(prefix)).cloned().collect();
    for name in doomed {
        request.remove_header(&name);
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
/// refusing more than `limit` bytes.
pub(crate) async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::BodyTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                tracing::debug!(error = %e, "reading a request body failed");
                return Err(ApiError::InvalidRequest("the request body could not be read".into()));
            }
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
