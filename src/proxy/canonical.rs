//! Turning what pingora parsed into the canonical request ([`crate::request`])
//! before anything judges it, and screening a form body for a method override
//! before anything goes upstream.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::{Gateway, Live};
use crate::cookies::{self, Credentials};
use crate::error::ApiError;
use crate::http_io::{declared_length, REQUEST_ID};
use crate::request::{self, HeaderRules, MethodOverride, Target};

impl Gateway {
    /// Replaces the parsed request with its canonical form (see
    /// [`crate::request`]), or says why it has none. Everything after this
    /// reads only the canonical request. Returns the target and whether the
    /// client asked for a WebSocket upgrade (whose headers are removed here and
    /// put back only if the matched route allows it), and the credentials
    /// taken out of its cookies and CSRF header (with `[cookies]` on: the
    /// upstream gets neither, see [`crate::cookies`]).
    pub(super) fn canonicalise(
        &self,
        live: &Live,
        request: &mut RequestHeader,
        trusted_peer: bool,
    ) -> Result<(Target, bool, Credentials), ApiError> {
        let header_bytes: usize = request.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if header_bytes > self.limits.max_header_bytes {
            return Err(ApiError::HeadersTooLarge { limit: self.limits.max_header_bytes });
        }
        request::canonical_method(&request.method)?;
        if request.version == http::Version::HTTP_2 {
            let plan = request::host_from_authority(&request.uri, &request.headers)
                .map_err(ApiError::InvalidHeader)?;
            if let Some(host) = plan.host {
                request.insert_header(http::header::HOST, host).map_err(|_| ApiError::Internal)?;
            }
            if let Some(cookie) = plan.cookie {
                request.insert_header(http::header::COOKIE, cookie).map_err(|_| ApiError::Internal)?;
            }
            if let Some(origin) = plan.origin {
                request.set_uri(origin);
            }
        }
        let target = request::canonical_target(request.raw_path(), self.requests.method_override)?;
        let rules = HeaderRules {
            identity_prefix: &live.upstream_settings.identity_prefix,
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
        // After HTTP/2's cookies were joined, before anything judges the request.
        let taken = cookies::take_credentials(self.auth.cookies(), &request.headers);
        if let Some(rest) = taken.rewrite {
            request.remove_header(&http::header::COOKIE);
            if let Some(rest) = rest {
                request.insert_header(http::header::COOKIE, rest).map_err(|_| ApiError::Internal)?;
            }
        }
        if taken.remove_csrf_header {
            request.remove_header(&self.auth.cookies().csrf_header);
        }
        for name in &plan.remove {
            request.remove_header(name);
        }
        if let Some(length) = plan.content_length {
            let mut buf = itoa::Buffer::new();
            request.insert_header(CONTENT_LENGTH, buf.format(length)).map_err(|_| ApiError::Internal)?;
        }
        Ok((target, plan.websocket, taken.credentials))
    }

    /// Where `_method` overrides are refused, looks for a `_method` field in
    /// a form body before anything goes
    /// upstream, where it could matter: on a path whose routes judge some
    /// methods differently from others. There the body is read whole and
    /// checked first (pingora then forwards its buffered copy), so a refused
    /// request never reaches the upstream at all. That buffer holds 64 KiB, so
    /// a longer form body there is 413 and one of unknown length (chunked) 411.
    /// Paths where every method is judged alike (uploads under one policy,
    /// say) take form bodies of any size unread: no override changes their
    /// judgement.
    pub(super) async fn screen_form_body(
        &self,
        session: &mut Session,
        live: &Live,
        path: &str,
    ) -> Result<(), ApiError> {
        /// pingora's retry buffer (`BODY_BUF_LIMIT`): what it can replay upstream.
        const BUFFERED: usize = 64 * 1024;
        if self.requests.method_override != MethodOverride::Refuse {
            return Ok(());
        }
        let scanner = session
            .req_header()
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| request::FormOverrideScanner::for_content_type(v.as_bytes()));
        let Some(mut scanner) = scanner else { return Ok(()) };
        if live.routes.judged_alike_for_every_method(path) {
            return Ok(());
        }
        match declared_length(session.req_header()) {
            // No length, and the protocol says there is no body (HTTP/1.1
            // without chunks, HTTP/2 headers that end the stream): nothing to check.
            None if session.is_body_empty() => return Ok(()),
            // A body of unknown length: chunked, or HTTP/2 DATA frames without
            // a Content-Length (HTTP/2 needs none).
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
}

/// Keeps a sane client `X-Request-Id` (1 to 128 of `A-Z a-z 0-9 - _ . :`),
/// else makes a new one (128 random bits, hex).
pub(super) fn request_id(request: &RequestHeader) -> String {
    let valid = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let mut values = request.headers.get_all(REQUEST_ID).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if valid(&v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        _ => new_request_id(rand::random::<u128>()),
    }
}

/// 128 bits as 32 lower-case hex digits (what `format!("{:032x}")` writes,
/// without the formatting machinery on every request).
fn new_request_id(bits: u128) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits: Vec<u8> = (0..32).rev().map(|i| HEX[((bits >> (i * 4)) & 0xf) as usize]).collect();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_request_id_is_the_bits_in_hex() {
        for bits in [0, 1, 0xdead_beef, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(super::new_request_id(bits), format!("{bits:032x}"));
        }
    }
}
