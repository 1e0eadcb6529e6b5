//! The header section: what is kept, collapsed, refused or removed so the
//! upstream reads the headers the gateway judged and none it sets itself.

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Method, Version};

use super::{HeaderError, UnderscoreHeaders};

/// How the header section is read: the rules that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct HeaderRules<'a> {
    /// Lower-case identity header prefix, e.g. `x-auth-`.
    pub identity_prefix: &'a str,
    pub underscores: UnderscoreHeaders,
    /// The peer is a trusted proxy: keep its `X-Forwarded-Proto`/`-Host`.
    pub trusted_peer: bool,
}

/// What [`inspect_headers`] found, for the caller to apply to the request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderPlan {
    /// Client headers that must not reach the upstream (every copy).
    pub remove: Vec<HeaderName>,
    /// Several agreeing `Content-Length` values: replace them with this one.
    pub content_length: Option<u64>,
    /// The client asked for a WebSocket upgrade (GET, HTTP/1.1,
    /// `Upgrade: websocket`, `Connection: upgrade`). Forwarded only on routes
    /// that allow it; otherwise the upgrade headers are already in `remove`.
    pub websocket: bool,
}

/// Whether any `Connection` header holds the `close` option (RFC 9112
/// section 9.6), whatever else it or another `Connection` header says.
pub fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and the HTTP/2 upgrade's
/// settings: never forwarded as the client sent them.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "http2-settings",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Headers that state who the client is or which URL it asked for. The
/// gateway states the client itself (`X-Forwarded-For`, optionally
/// `Forwarded`), so every other client-address header goes; the
/// `X-Original-URL` family (IIS, Zend, older Symfony route on it) would replace
/// the judged target outright.
const ALWAYS_REMOVED: [&str; 10] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

/// What the original URL looked like before the proxies in front: believed
/// from a trusted proxy only.
const FORWARDED_URL: [&str; 5] =
    ["x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server"];

/// Headers some frameworks read to replace the request method.
const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Checks the header section and lists what must change before forwarding.
pub fn inspect_headers(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    rules: HeaderRules<'_>,
) -> Result<HeaderPlan, HeaderError> {
    let mut plan = HeaderPlan::default();
    check_host(headers)?;
    plan.content_length = check_framing(version, headers)?;
    // Which one would the backend read? Its form parsing depends on it.
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    if let Some(content_type) = types.next() {
        if types.next().is_some() {
            return Err(HeaderError::DuplicateContentType);
        }
        // Visible ASCII only (RFC 9110 media types): a backend that trims
        // Unicode spaces (U+00A0, U+0085) would read a form the gateway didn't.
        if !content_type.as_bytes().iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
            return Err(HeaderError::InvalidContentType);
        }
    }

    // Tokens of every Connection header: they name more hop-by-hop headers.
    let mut connection_upgrade = false;
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("upgrade") {
                connection_upgrade = true;
            }
            // Only headers that are present need removing; never let a client
            // make the gateway drop what it needs to read.
            let named = headers.keys().find(|name| name.as_str().eq_ignore_ascii_case(token));
            if let Some(name) =
                named.filter(|n| **n != HOST && **n != CONTENT_LENGTH && **n != TRANSFER_ENCODING)
            {
                plan.remove.push(name.clone());
            }
        }
    }
    let mut upgrades = headers.get_all(UPGRADE).iter();
    plan.websocket = *method == Method::GET
        && version == Version::HTTP_11
        && connection_upgrade
        && matches!((upgrades.next(), upgrades.next()), (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"websocket"));

    for name in headers.keys() {
        let text = name.as_str();
        let doomed = if text.contains('_') {
            if rules.underscores == UnderscoreHeaders::Reject {
                return Err(HeaderError::Underscore);
            }
            true
        } else {
            text.starts_with(rules.identity_prefix)
                || HOP_BY_HOP.contains(&text)
                || METHOD_OVERRIDES.contains(&text)
                || ALWAYS_REMOVED.contains(&text)
                || (!rules.trusted_peer && FORWARDED_URL.contains(&text))
        };
        if doomed && !plan.remove.contains(name) {
            plan.remove.push(name.clone());
        }
    }
    Ok(plan)
}

fn check_host(headers: &HeaderMap) -> Result<(), HeaderError> {
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(HeaderError::DuplicateHost),
        // HTTP/1.0 too: the upstream request is HTTP/1.1, which needs one.
        (None, _) => Err(HeaderError::MissingHost),
        (Some(host), None) if valid_host(host.as_bytes()) => Ok(()),
        (Some(_), None) => Err(HeaderError::InvalidHost),
    }
}

/// `host[:port]`: a registered name or IPv4 address, or a bracketed IPv6 literal.
fn valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else { return false };
            let inside = &rest[..end];
            let literal = std::str::from_utf8(inside).ok().and_then(|s| s.parse::<std::net::Ipv6Addr>().ok());
            if literal.is_none() {
                return false;
            }
            (&b""[..], &rest[end + 1..])
        }
        None => match host.iter().rposition(|&b| b == b':') {
            Some(colon) => (&host[..colon], &host[colon..]),
            None => (host, &b""[..]),
        },
    };
    let name_ok = name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    (host.first() == Some(&b'[') || !name.is_empty()) && name_ok && port_ok
}

/// Body framing the upstream can only read one way (RFC 9112 section 6).
fn check_framing(version: Version, headers: &HeaderMap) -> Result<Option<u64>, HeaderError> {
    let mut encodings = headers.get_all(TRANSFER_ENCODING).iter();
    match (encodings.next(), encodings.next()) {
        (None, _) => {}
        (Some(te), None)
            if version == Version::HTTP_11
                && te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")
                && !headers.contains_key(CONTENT_LENGTH) =>
        {
            return Ok(None)
        }
        _ => return Err(HeaderError::InvalidTransferEncoding),
    }
    let mut length = None;
    let mut copies = 0;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 18 || !item.iter().all(u8::is_ascii_digit) {
                return Err(HeaderError::InvalidContentLength);
            }
            let n: u64 = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(HeaderError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeaderError::InvalidContentLength);
            }
            length = Some(n);
            copies += 1;
        }
    }
    Ok(if copies > 1 { length } else { None })
}
