//! The canonical request: the one request the gateway judges, logs and forwards.
//!
//! Backends trust the gateway, and many read requests leniently: they
//! upper-case the method, resolve a target without a leading `/` against the
//! root, read `_` as `-` in header names, honour `X-Forwarded-For` and
//! `_method` overrides, and keep reading after a `101`. Any difference between
//! what the route policy judged and what such a backend acts on is a way past
//! the policy. So right after pingora parses a request, Gatehouse builds its
//! canonical form here and replaces the parsed request with it; route
//! matching, the decision, the access log, the metrics and the upstream
//! request all read that one value. Whatever has no canonical form is refused
//! with a JSON 400 rather than guessed at.
//!
//! The rules, each applied in exactly one place:
//! - **Method**: upper-case letters and `-` only (`invalid_method`); `CONNECT`
//!   is refused (a gateway is not a tunnel).
//! - **Target**: origin-form only, i.e. starting with `/` and valid UTF-8
//!   (`invalid_path`). The path is normalised ([`crate::path`]); raw non-ASCII
//!   and characters URIs don't allow are percent-encoded, so `/café` and
//!   `/caf%C3%A9` are one path. The query is kept, with the same encoding, but a
//!   `_method` parameter (Rails, Laravel and Symfony read it as the method) is
//!   refused (`method_override_refused`) unless configured otherwise.
//! - **Headers** ([`inspect_headers`]): exactly one valid `Host`;
//!   `Content-Length` copies collapse to one value when they agree and are
//!   refused when they don't; `Transfer-Encoding` must be exactly `chunked`
//!   and never beside `Content-Length`; header names containing `_` are dropped
//!   (or refused), because CGI-style backends read `X_Auth_Admin` as
//!   `X-Auth-Admin`; a second `Content-Type` is refused (which one would the
//!   backend parse?); and every header the gateway sets itself or that
//!   rewrites the request (identity, client address, forwarding, the
//!   `X-Original-URL` family, hop-by-hop, `Upgrade`, method overrides) is
//!   removed from what the client sent.
//! - **Form bodies** ([`FormOverrideScanner`]): a `_method` field, in any
//!   spelling a framework reads as one, is refused as in the query.
//! - **HTTP/2** ([`host_from_authority`]): `:authority` becomes the one
//!   `Host` (refused if a `Host` names another) and the target origin-form,
//!   so the same rules then judge it as an HTTP/1.1 request.
//! - **Cookies** ([`crate::cookies`], with `[cookies]` on): the gateway's own
//!   cookies and the CSRF header are taken out of the request (after
//!   HTTP/2's split `Cookie` fields are joined) into the credentials the
//!   decision reads, so no phase and no upstream sees them; other cookies
//!   stay byte for byte.

mod client;
mod headers;
mod http2;
mod method_field;
mod target;

pub use client::{ClientChain, TrustedProxies};
pub use headers::{asks_to_close, inspect_headers, HeaderPlan, HeaderRules};
pub use http2::{host_from_authority, Http2Plan};
pub use method_field::{is_method_field, FormOverrideScanner, MultipartNames, UrlEncodedNames};
pub use target::{canonical_method, canonical_target, Target};

use crate::path::PathError;

/// Why a request has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the method must be an upper-case HTTP method such as GET or POST")]
    InvalidMethod,
    #[error("CONNECT is not accepted: the gateway is not a tunnel")]
    Connect,
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("the `_method` query parameter would change the method the gateway checked")]
    MethodOverride,
    #[error("{0}")]
    Header(#[from] HeaderError),
}

/// A header section the gateway can't forward as it was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("a request needs exactly one Host header")]
    MissingHost,
    #[error("more than one Host header was sent")]
    DuplicateHost,
    #[error("the Host header is not a valid host name or address")]
    InvalidHost,
    #[error("the Host header and the HTTP/2 :authority name different hosts")]
    HostAuthorityMismatch,
    #[error("the Content-Length headers are invalid or disagree")]
    InvalidContentLength,
    #[error("Transfer-Encoding must be exactly `chunked`, on HTTP/1.1, without Content-Length")]
    InvalidTransferEncoding,
    #[error("header names containing `_` are not accepted")]
    Underscore,
    #[error("more than one Content-Type header was sent")]
    DuplicateContentType,
    #[error("the Content-Type header is not a valid media type")]
    InvalidContentType,
}
/// What the `_method` query parameter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodOverride {
    /// A request carrying it is refused with 400 `method_override_refused`.
    #[default]
    Refuse,
    /// Passed on: only for backends that ignore `_method`.
    Allow,
}

/// What header names containing `_` get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Removed before the request is judged (nginx's default).
    #[default]
    Drop,
    /// The request is refused with 400 `invalid_header`.
    Reject,
}

#[cfg(test)]
mod tests;
