//! What the upstream is told about the request, beyond the request itself:
//! who calls (identity headers, a signed assertion) and through what
//! (forwarding headers). Only the gateway may say these things, so every
//! client-sent copy was removed when the request was made canonical.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, HOST};
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{Gateway, Live, RequestCtx};
use crate::auth::Identity;
use crate::clock::now_unix;
use crate::http_io::REQUEST_ID;
use crate::roles;
use crate::tokens::{Assertion, TokenError};

impl Gateway {
    /// A signed statement of who calls, for exactly this method and path.
    pub(super) fn assertion_for(
        &self,
        live: &Live,
        identity: Option<&Identity>,
        request: &RequestHeader,
    ) -> Result<String, TokenError> {
        let tokens = self.auth.tokens();
        let now = now_unix();
        let assertion = Assertion {
            iss: tokens.issuer().to_owned(),
            aud: live.upstream_settings.name.clone(),
            sub: identity.map(|i| i.user_id.to_string()),
            username: identity.map(|i| i.username.clone()),
            email: identity.map(|i| i.email.clone()),
            admin: identity.is_some_and(|i| i.is_admin),
            roles: identity.map(|i| i.roles.clone()).unwrap_or_default(),
            fresh: identity.is_some_and(|i| i.fresh),
            method: request.method.to_string(),
            // The canonical target, set on the request before it was judged.
            path: request.uri.path().to_owned(),
            token_jti: identity.map(|i| i.token_id.clone()),
            iat: now,
            nbf: now,
            exp: now + live.upstream_settings.assertion_ttl.as_secs(),
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        tokens.sign_assertion(&assertion)
    }

    /// `X-Forwarded-For` (the client the gateway decided on, then the trusted
    /// proxies in between), `X-Forwarded-Proto` and `X-Forwarded-Host` (kept
    /// when a trusted proxy sent them), and optionally RFC 7239 `Forwarded`.
    /// Client-sent copies were removed when the request was made canonical.
    pub(super) fn add_forwarding_headers(
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
    if !live.upstream_settings.pass_authorization {
        upstream_request.remove_header(&AUTHORIZATION);
    }
    upstream_request.insert_header(REQUEST_ID, request_id)?;
    if let Some(identity) = identity {
        let [user_id, username, email, admin, fresh, token_id, roles] = &live.identity_headers;
        let mut id_buf = itoa::Buffer::new();
        upstream_request.insert_header(user_id.clone(), id_buf.format(identity.user_id))?;
        upstream_request.insert_header(username.clone(), header_safe(&identity.username).as_ref())?;
        upstream_request.insert_header(email.clone(), header_safe(&identity.email).as_ref())?;
        upstream_request.insert_header(admin.clone(), bool_str(identity.is_admin))?;
        upstream_request.insert_header(fresh.clone(), bool_str(identity.fresh))?;
        upstream_request.insert_header(token_id.clone(), identity.token_id.as_str())?;
        // Always sent to an identified caller's upstream, empty for no roles:
        // the name is reserved to the gateway either way.
        upstream_request.insert_header(roles.clone(), roles::header_value(&identity.roles))?;
    }
    Ok(())
}

fn bool_str(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Header values can't hold control characters; usernames are checked at
/// registration, but stay defensive about what reaches the wire. (A copy only
/// when something must be replaced.)
fn header_safe(value: &str) -> Cow<'_, str> {
    if value.chars().any(char::is_control) {
        Cow::Owned(value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
    } else {
        Cow::Borrowed(value)
    }
}
