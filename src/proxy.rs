//! The pingora proxy: answers the built-in endpoints, applies route policy to
//! everything else, and forwards allowed requests with identity headers.
//!
//! Phases (pingora `ProxyHttp`): `request_filter` decides and may answer
//! (returning `Ok(true)` once a response is written); `upstream_peer` picks an
//! upstream; `upstream_request_filter` strips every client-sent identity header
//! before injecting ours, so the upstream can trust them.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::{Authenticator, Identity};
use crate::config::{LimitsConfig, UpstreamConfig};
use crate::endpoints::{BuiltIns, Reply};
use crate::error::ApiError;
use crate::path::{self, PathError};
use crate::policy::RouteTable;

/// Headers some frameworks read to replace the request method: removed, so
/// the method that was authorised is the one the upstream acts on.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Identity header names, without the configured prefix.
const IDENTITY_FIELDS: [&str; 6] = ["user-id", "username", "email", "admin", "fresh", "token-id"];

pub struct Gateway {
    pub routes: RouteTable,
    pub auth: Arc<Authenticator>,
    pub builtins: BuiltIns,
    pub upstreams: Arc<LoadBalancer<RoundRobin>>,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    /// `{prefix}{field}` for each of [`IDENTITY_FIELDS`], built once.
    identity_headers: [String; 6],
}

impl Gateway {
    /// The request's path, normalised, after the checks no route can override:
    /// origin-form target, header size, a path that normalises safely.
    fn checked_path(&self, request: &RequestHeader) -> Result<String, ApiError> {
        if request.uri.scheme().is_some() || request.uri.authority().is_some() {
            return Err(ApiError::InvalidPath(PathError::NotOriginForm));
        }
        let header_bytes: usize = request
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.limits.max_header_bytes {
            return Err(ApiError::HeadersTooLarge {
                limit: self.limits.max_header_bytes,
            });
        }
        path::normalise(request.uri.path())
            .map(Cow::into_owned)
            .map_err(ApiError::InvalidPath)
    }

    pub fn new(
        routes: RouteTable,
        auth: Arc<Authenticator>,
        builtins: BuiltIns,
        upstreams: Arc<LoadBalancer<RoundRobin>>,
        upstream: UpstreamConfig,
        limits: LimitsConfig,
    ) -> Self {
        let identity_headers = IDENTITY_FIELDS.map(|f| format!("{}{f}", upstream.identity_prefix));
        Gateway {
            routes,
            auth,
            builtins,
            upstreams,
            upstream,
            limits,
            identity_headers,
        }
    }
}

/// Per-request state carried between phases.
#[derive(Default)]
pub struct RequestCtx {
    identity: Option<Identity>,
    /// Set when normalisation changed the path: the upstream gets this one.
    normalised_path: Option<String>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Slow or idle clients may not hold a connection for long.
        session.set_read_timeout(Some(self.limits.client_read_timeout));
        session.set_keepalive(Some(self.limits.client_idle_timeout.as_secs().max(1)));

        let path = match self.checked_path(session.req_header()) {
            Ok(path) => path,
            Err(e) => {
                write_reply(session, &Reply::error(&e)).await?;
                return Ok(true);
            }
        };
        let method = session.req_header().method.clone();

        if let Some(endpoint) = self.builtins.route(&path) {
            let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
            let reply = match read_body(session, self.builtins.max_body_bytes()).await {
                Ok(body) => {
                    self.builtins
                        .handle(endpoint, &method, &session.req_header().headers, &body, client)
                        .await
                }
                Err(e) => Reply::error(&e),
            };
            write_reply(session, &reply).await?;
            return Ok(true);
        }

        let matched = self.routes.lookup(&method, &path);
        match self
            .auth
            .decide(&session.req_header().headers, matched.rule)
            .await
        {
            Ok(identity) => {
                ctx.identity = identity;
                if path != session.req_header().uri.path() {
                    ctx.normalised_path = Some(path);
                }
                Ok(false)
            }
            Err(e) => {
                tracing::debug!(%method, %path, route = matched.route_label(), code = e.code(), "request refused");
                write_reply(session, &Reply::error(&e)).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let backend = self
            .upstreams
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream"))?;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(self.upstream.connect_timeout);
        peer.options.read_timeout = Some(self.upstream.read_timeout);
        Ok(Box::new(peer))
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Self::CTX) -> FailToProxy {
        let error = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                Some(ApiError::UpstreamTimeout)
            }
            _ if e.esource() == &ErrorSource::Upstream => Some(ApiError::UpstreamUnavailable),
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError => Some(ApiError::UpstreamUnavailable),
            // The client went away or sent garbage: nobody to answer.
            _ if e.esource() == &ErrorSource::Downstream => None,
            _ => Some(ApiError::Internal),
        };
        let Some(error) = error else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        tracing::warn!(error = %e, code = error.code(), "proxying failed");
        // Once the upstream's response has started, a JSON error can't be written.
        if session.response_written().is_none() {
            let _ = write_reply(session, &Reply::error(&error)).await;
        }
        FailToProxy {
            error_code: error.status().as_u16(),
            can_reuse_downstream: false,
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
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
        strip_prefixed(upstream_request, &self.upstream.identity_prefix);
        for name in METHOD_OVERRIDE_HEADERS {
            upstream_request.remove_header(name);
        }
        if !self.upstream.pass_authorization {
            upstream_request.remove_header(&AUTHORIZATION);
        }
        if let Some(identity) = &ctx.identity {
            let [user_id, username, email, admin, fresh, token_id] = &self.identity_headers;
            upstream_request.insert_header(user_id.clone(), identity.user_id.to_string())?;
            upstream_request.insert_header(username.clone(), header_safe(&identity.username))?;
            upstream_request.insert_header(email.clone(), header_safe(&identity.email))?;
            upstream_request.insert_header(admin.clone(), bool_str(identity.is_admin))?;
            upstream_request.insert_header(fresh.clone(), bool_str(identity.fresh))?;
            upstream_request.insert_header(token_id.clone(), identity.token_id.clone())?;
        }
        Ok(())
    }
}

/// Removes every header whose name starts with `prefix` (lower-case), every copy.
fn strip_prefixed(request: &mut RequestHeader, prefix: &str) {
    let doomed: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with(prefix))
        .cloned()
        .collect();
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
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Reads a built-in endpoint's body, refusing more than `limit` bytes.
async fn read_body(session: &mut Session, limit: usize) -> Result<Vec<u8>, ApiError> {
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
                return Err(ApiError::InvalidRequest(
                    "the request body could not be read".into(),
                ));
            }
        }
    }
}

/// Writes a complete JSON response, keeping the connection reusable.
pub async fn write_reply(session: &mut Session, reply: &Reply) -> Result<()> {
    let mut header = ResponseHeader::build(reply.status, Some(4))?;
    header.insert_header(CONTENT_TYPE, "application/json")?;
    header.insert_header(CONTENT_LENGTH, reply.body.len().to_string())?;
    header.insert_header(CACHE_CONTROL, "no-store")?;
    for (name, value) in &reply.headers {
        header.insert_header(name.clone(), value.as_str())?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session
        .write_response_body(Some(Bytes::copy_from_slice(&reply.body)), true)
        .await
}
