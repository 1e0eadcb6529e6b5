//! The gateway's own HTTP exchanges, shared by the built-in endpoints, the
//! proxy and the admin API: a request body read within a size and time bound,
//! a JSON body parsed with one error vocabulary, and a complete JSON answer.
//! They live apart from all three so none has to import another for them.

use std::borrow::Cow;

use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

#[cfg(feature = "server")]
pub(crate) use io::{declared_length, read_body, write_grpc_error, write_no_content, write_reply};

/// The header that carries a request's id to the upstream and back to the client.
pub const REQUEST_ID: &str = "x-request-id";

/// Where a gRPC refusal carries the error's stable code (`invalid_token`...),
/// beside `grpc-status` and `grpc-message`.
pub const GRPC_ERROR_CODE: &str = "gatehouse-error";

/// Whether a request is a gRPC call (`content-type: application/grpc`, with
/// or without a `+proto`/`+json` suffix): its refusals are gRPC errors.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2): controls, `%` and
/// anything outside ASCII.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// The response headers of a gRPC refusal: a "Trailers-Only" answer, HTTP
/// 200 with the status in `grpc-status`, the sentence in `grpc-message`, the
/// stable code in [`GRPC_ERROR_CODE`], and when to retry in
/// `grpc-retry-pushback-ms` (gRPC's own name for `Retry-After`).
pub fn grpc_error_headers(error: &ApiError) -> Vec<(&'static str, String)> {
    let message = percent_encoding::utf8_percent_encode(&error.message(), GRPC_MESSAGE).to_string();
    let mut headers = vec![
        ("content-type", "application/grpc".to_owned()),
        ("grpc-status", error.grpc_status().as_str().to_owned()),
        ("grpc-message", message),
        (GRPC_ERROR_CODE, error.code().to_owned()),
    ];
    if let Some(seconds) = error.retry_after() {
        headers.push(("grpc-retry-pushback-ms", (seconds * 1000).to_string()));
    }
    headers
}

/// A plain confirmation, `{"message": "..."}` (a logout, a deletion), from
/// the built-in endpoints and the admin API alike.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub message: Cow<'static, str>,
}

impl Message {
    pub const fn new(message: &'static str) -> Self {
        Message { message: Cow::Borrowed(message) }
    }
}

/// A complete JSON response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// Headers beyond the JSON content type (`WWW-Authenticate`,
    /// `Retry-After`, `Set-Cookie`), each line written as it is (so one name
    /// may come several times).
    pub headers: Vec<(http::HeaderName, String)>,
    /// The error code of a refusal, for the access log.
    pub error_code: Option<ErrorCode>,
}

impl Reply {
    pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status, body, headers: Vec::new(), error_code: None },
            Err(_) => Reply::error(&ApiError::Internal),
        }
    }

    pub fn error(error: &ApiError) -> Reply {
        let mut headers = Vec::new();
        if let Some(challenge) = error.www_authenticate() {
            headers.push((http::header::WWW_AUTHENTICATE, challenge));
        }
        if let Some(seconds) = error.retry_after() {
            headers.push((http::header::RETRY_AFTER, seconds.to_string()));
        }
        Reply { status: error.status(), body: error.body(), headers, error_code: Some(error.kind()) }
    }

    pub fn from_result<T: Serialize>(status: StatusCode, result: Result<T, ApiError>) -> Reply {
        match result {
            Ok(value) => Reply::json(status, &value),
            Err(e) => Reply::error(&e),
        }
    }
}

/// Parses a JSON body, telling syntax errors apart from wrong or missing fields.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest("a JSON body is required".into()));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidRequest(e.to_string()),
        _ => ApiError::InvalidJson(e.to_string()),
    })
}

#[cfg(feature = "server")]
mod io {
    use std::time::Duration;

    use bytes::Bytes;
    use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
    use pingora::http::{RequestHeader, ResponseHeader};
    use pingora::protocols::http::ServerSession;
    use pingora::proxy::Session;
    use pingora::Result;

    use super::{Reply, REQUEST_ID};
    use crate::error::ApiError;

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
    pub(crate) fn declared_length(request: &RequestHeader) -> Option<usize> {
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

    /// Writes a gRPC client's refusal ([`super::grpc_error_headers`]): one
    /// header block that ends the stream, as gRPC's Trailers-Only answer is.
    pub(crate) async fn write_grpc_error(
        session: &mut Session,
        error: &ApiError,
        request_id: &str,
    ) -> Result<()> {
        let fields = super::grpc_error_headers(error);
        let mut header = ResponseHeader::build(http::StatusCode::OK, Some(fields.len() + 2))?;
        for (name, value) in fields {
            header.insert_header(name, value)?;
        }
        header.insert_header(CACHE_CONTROL, "no-store")?;
        header.insert_header(REQUEST_ID, request_id)?;
        session.write_response_header(Box::new(header), true).await
    }

    /// Writes a bodiless 204 with `headers` (a CORS preflight's answer),
    /// keeping the connection reusable.
    pub(crate) async fn write_no_content(
        session: &mut Session,
        headers: &[(http::HeaderName, String)],
        request_id: &str,
    ) -> Result<()> {
        let mut header = ResponseHeader::build(http::StatusCode::NO_CONTENT, Some(1 + headers.len()))?;
        header.insert_header(REQUEST_ID, request_id)?;
        for (name, value) in headers {
            header.append_header(name.clone(), value.as_str())?;
        }
        session.write_response_header(Box::new(header), true).await
    }

    /// Writes a complete response (JSON unless its headers name another
    /// content type), keeping the connection reusable.
    pub(crate) async fn write_reply(session: &mut Session, reply: &Reply, request_id: &str) -> Result<()> {
        let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
        // JSON unless the reply names its own (the sign-in page's HTML).
        if !reply.headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
            header.insert_header(CONTENT_TYPE, "application/json")?;
        }
        header.insert_header(CONTENT_LENGTH, reply.body.len().to_string())?;
        header.insert_header(CACHE_CONTROL, "no-store")?;
        header.insert_header(REQUEST_ID, request_id)?;
        // Appended: a login answers with several `Set-Cookie` lines.
        for (name, value) in &reply.headers {
            header.append_header(name.clone(), value.as_str())?;
        }
        session.write_response_header(Box::new(header), false).await?;
        session.write_response_body(Some(Bytes::copy_from_slice(&reply.body)), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, value.parse().unwrap());
            is_grpc(&headers)
        };
        for grpc in
            ["application/grpc", "application/grpc+proto", "Application/GRPC+json", "application/grpc;x=1"]
        {
            assert!(with(grpc), "{grpc}");
        }
        for other in ["application/json", "application/grpc-web", "application/grpcx", "text/plain"] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_grpc(&http::HeaderMap::new()));
    }

    #[test]
    fn grpc_refusals_carry_status_message_and_code() {
        let field = |error: &ApiError, name: &str| {
            grpc_error_headers(error).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
        };
        let cases = [
            (ApiError::MissingToken, "16", "missing_token"),
            (ApiError::TokenExpired, "16", "token_expired"),
            (ApiError::TokenRevoked, "16", "token_revoked"),
            (ApiError::AdminRequired, "7", "admin_required"),
            (ApiError::RoleRequired, "7", "role_required"),
            (ApiError::FreshTokenRequired, "7", "fresh_token_required"),
            (ApiError::RateLimited { retry_after: 3 }, "8", "rate_limited"),
            (ApiError::UpstreamUnavailable, "14", "upstream_unavailable"),
            (ApiError::UpstreamTimeout, "4", "upstream_timeout"),
            (ApiError::InvalidMethod, "3", "invalid_method"),
            (ApiError::CsrfFailed, "7", "csrf_failed"),
            (ApiError::ConflictingCredentials, "16", "conflicting_credentials"),
        ];
        for (error, status, code) in cases {
            assert_eq!(field(&error, "grpc-status").as_deref(), Some(status), "{error:?}");
            assert_eq!(field(&error, GRPC_ERROR_CODE).as_deref(), Some(code), "{error:?}");
            assert_eq!(field(&error, "content-type").as_deref(), Some("application/grpc"));
        }
        let limited = ApiError::RateLimited { retry_after: 3 };
        assert_eq!(field(&limited, "grpc-retry-pushback-ms").as_deref(), Some("3000"));
        // Percent-encoded: `%` itself and anything outside printable ASCII.
        let odd = ApiError::InvalidRequest("100% ünïcode\n".into());
        let message = field(&odd, "grpc-message").unwrap();
        assert!(
            message.contains("100%25") && message.contains("%C3%BC") && message.contains("%0A"),
            "{message}"
        );
    }
}
