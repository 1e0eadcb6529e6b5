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

use std::net::IpAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Method, Version};

use crate::path::{self, PathError};

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

/// The canonical request target: a normalised path and an optional query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Normalised, ASCII, starts with `/`.
    pub path: String,
    /// Without the `?`; `None` when absent or empty.
    pub query: Option<String>,
}

impl Target {
    /// The origin-form target the upstream receives.
    pub fn to_origin_form(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// What the `_method` query parameter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodOverride {
    /// A request carrying it is refused with 400 `method_override_refused`.
    #[default]
    Refuse,
    /// Passed on: only for backends that ignore `_method`.
    Allow,
}

/// What header names containing `_` get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Removed before the request is judged (nginx's default).
    #[default]
    Drop,
    /// The request is refused with 400 `invalid_header`.
    Reject,
}

/// Checks a method: upper-case ASCII letters and `-`, at most 32 bytes.
pub fn canonical_method(method: &Method) -> Result<(), RequestError> {
    let bytes = method.as_str().as_bytes();
    let well_formed = bytes.first().is_some_and(u8::is_ascii_uppercase)
        && bytes.len() <= 32
        && bytes.iter().all(|&b| b.is_ascii_uppercase() || b == b'-');
    if !well_formed {
        return Err(RequestError::InvalidMethod);
    }
    if *method == Method::CONNECT {
        return Err(RequestError::Connect);
    }
    Ok(())
}

/// Builds the canonical target from the request-target bytes as received.
pub fn canonical_target(raw: &[u8], overrides: MethodOverride) -> Result<Target, RequestError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm.into());
    }
    let raw = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    if raw.contains('#') {
        return Err(PathError::Fragment.into());
    }
    let (raw_path, raw_query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    let encoded = encode_unsafe(raw_path);
    let path = path::normalise(&encoded)?.into_owned();
    let query = match raw_query.filter(|q| !q.is_empty()) {
        None => None,
        Some(query) => {
            let query = encode_unsafe(query).into_owned();
            check_escapes(&query)?;
            if overrides == MethodOverride::Refuse && has_method_field(&query) {
                return Err(RequestError::MethodOverride);
            }
            Some(query)
        }
    };
    Ok(Target { path, query })
}

/// Percent-encodes what a URI may not hold as it is: non-ASCII bytes and
/// `" < > ^ ` { | }`, which parsers accept but backends decode differently.
fn encode_unsafe(text: &str) -> std::borrow::Cow<'_, str> {
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'"')
        .add(b'<')
        .add(b'>')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'|')
        .add(b'}');
    percent_encoding::utf8_percent_encode(text, UNSAFE).into()
}

/// Every `%` must start a two-digit hex escape.
fn check_escapes(text: &str) -> Result<(), PathError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let hex = |b: Option<&u8>| b.is_some_and(u8::is_ascii_hexdigit);
        if !hex(bytes.get(at + 1)) || !hex(bytes.get(at + 2)) {
            return Err(PathError::BadEscape);
        }
        i = at + 3;
    }
    Ok(())
}

/// Whether a decoded form field name is read as `_method` by some framework:
/// PHP drops leading spaces and turns ` ` and `.` into `_` (so `.method` and
/// ` _method` count), Rack and PHP read `_method[...]` as the same key, and
/// letter case is ignored to be safe.
pub fn is_method_field(name: &[u8]) -> bool {
    reads_as_method(name, name.contains(&b']'))
}

/// [`is_method_field`] for a name of which only a prefix was kept:
/// `closes_bracket` says whether the whole name has a `]`.
fn reads_as_method(name: &[u8], closes_bracket: bool) -> bool {
    let start = name.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(name.len());
    let name = &name[start..];
    // PHP reads an unmatched `[` as `_` (`[method` is `_method`); a matched
    // one starts an array key (`_method[]` is `_method`).
    let unmatched = name.contains(&b'[') && !closes_bracket;
    let name: Vec<u8> = name.iter().map(|&b| if unmatched && b == b'[' { b'_' } else { b }).collect();
    let name = name.split(|&b| b == b'[').next().unwrap_or_default();
    name.len() == 7
        && name.iter().zip(b"_method").all(|(&b, &want)| {
            let b = if b == b' ' || b == b'.' { b'_' } else { b.to_ascii_lowercase() };
            b == want
        })
}

/// Whether a query string (or urlencoded body) has a `_method` field: fields
/// split on `&` or `;` (Rack 2 accepts both), names percent- and `+`-decoded.
fn has_method_field(query: &str) -> bool {
    query.split(['&', ';']).any(|field| {
        let name = field.split('=').next().unwrap_or_default();
        let decoded: Vec<u8> = percent_encoding::percent_decode(name.replace('+', " ").as_bytes()).collect();
        is_method_field(&decoded)
    })
}

/// Finds a `_method` field in a form body as it streams past, so a request
/// whose framework would read it as another method never completes upstream.
///
/// pingora sends a body upstream chunk by chunk; the gateway checks each chunk
/// before it goes. A body refused here is cut off before its end, so the
/// upstream holds an incomplete request that no framework acts on. The scanner
/// keeps a little state between chunks, so a name split across chunks or
/// percent-encoded (`%5Fmethod`) is still found.
#[derive(Debug, Clone)]
pub enum FormOverrideScanner {
    /// `application/x-www-form-urlencoded`: field names, decoded.
    UrlEncoded(UrlEncodedNames),
    /// `multipart/form-data`: the `name` of each part's `Content-Disposition`.
    Multipart(MultipartNames),
}

impl FormOverrideScanner {
    /// A scanner for a request with this `Content-Type`, if it is a form.
    pub fn for_content_type(content_type: &[u8]) -> Option<Self> {
        let mut parts = content_type.split(|&b| b == b';');
        let essence = parts.next().unwrap_or_default().trim_ascii();
        if essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            return Some(FormOverrideScanner::UrlEncoded(UrlEncodedNames::default()));
        }
        if !essence.eq_ignore_ascii_case(b"multipart/form-data") {
            return None;
        }
        // Without a boundary no backend can read the parts at all.
        let boundary = parts.find_map(|param| {
            let (key, value) = split_param(param)?;
            key.eq_ignore_ascii_case(b"boundary").then(|| unquote(value).to_vec())
        })?;
        Some(FormOverrideScanner::Multipart(MultipartNames::new(&boundary)))
    }

    /// Feeds the next chunk; `true` once a `_method` field has been seen.
    pub fn found_in(&mut self, chunk: &[u8]) -> bool {
        match self {
            FormOverrideScanner::UrlEncoded(names) => chunk.iter().any(|&b| names.step(b)),
            FormOverrideScanner::Multipart(names) => names.feed(chunk),
        }
    }

    /// The body ended: a last field name without `=` counts too.
    pub fn found_at_end(&mut self) -> bool {
        match self {
            FormOverrideScanner::UrlEncoded(names) => names.in_name && names.reads_as_method(),
            FormOverrideScanner::Multipart(_) => false,
        }
    }
}

/// Streaming state of a urlencoded body: the current field name, decoded.
#[derive(Debug, Clone)]
pub struct UrlEncodedNames {
    in_name: bool,
    /// Enough of the decoded name to tell `_method` (longer names can't be,
    /// but for a bracket key, `_method[...]`)...
    name: Vec<u8>,
    /// ...so whether the whole name has a `]` is kept apart.
    closes_bracket: bool,
    /// Hex digits of a `%` escape in progress.
    escape: Option<[u8; 2]>,
    escape_len: usize,
}

impl Default for UrlEncodedNames {
    fn default() -> Self {
        UrlEncodedNames {
            in_name: true,
            name: Vec::new(),
            closes_bracket: false,
            escape: None,
            escape_len: 0,
        }
    }
}

impl UrlEncodedNames {
    fn reads_as_method(&self) -> bool {
        reads_as_method(&self.name, self.closes_bracket)
    }

    /// One byte; `true` when a field name read as `_method` just ended.
    fn step(&mut self, b: u8) -> bool {
        match b {
            b'&' | b';' => {
                let found = self.in_name && self.reads_as_method();
                *self = UrlEncodedNames::default();
                found
            }
            b'=' if self.in_name => {
                self.in_name = false;
                self.reads_as_method()
            }
            _ if !self.in_name => false,
            b'%' => {
                self.escape = Some([0; 2]);
                self.escape_len = 0;
                false
            }
            _ => {
                let decoded = match self.escape.as_mut() {
                    Some(digits) => {
                        digits[self.escape_len] = b;
                        self.escape_len += 1;
                        if self.escape_len < 2 {
                            return false;
                        }
                        let value =
                            std::str::from_utf8(digits).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                        self.escape = None;
                        value.unwrap_or(0)
                    }
                    None if b == b'+' => b' ',
                    None => b,
                };
                // Leading spaces don't count (PHP drops them); past 32 bytes
                // of name nothing can be `_method` (brackets aside).
                self.closes_bracket |= decoded == b']';
                if (!self.name.is_empty() || decoded != b' ') && self.name.len() < 32 {
                    self.name.push(decoded);
                }
                false
            }
        }
    }
}

/// Streaming state of a multipart body: looks for each part's header section
/// (after a `--boundary` line) and reads the `name` of its
/// `Content-Disposition`, so a `name="_method"` inside a part's content (an
/// uploaded HTML form, say) is not mistaken for a field.
#[derive(Debug, Clone)]
pub struct MultipartNames {
    /// `\n--boundary`.
    delimiter: Vec<u8>,
    /// Unmatched bytes that may still begin a delimiter, or a part's headers.
    pending: Vec<u8>,
    in_headers: bool,
}

/// A part's header section longer than this is read no further.
const MAX_PART_HEADERS: usize = 16 * 1024;

impl MultipartNames {
    fn new(boundary: &[u8]) -> Self {
        let mut delimiter = b"\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        // The body may open with the delimiter itself: read it as after a newline.
        MultipartNames { delimiter, pending: b"\n".to_vec(), in_headers: false }
    }

    fn feed(&mut self, chunk: &[u8]) -> bool {
        self.pending.extend_from_slice(chunk);
        loop {
            if self.in_headers {
                let end = find(&self.pending, b"\r\n\r\n")
                    .map(|at| at + 4)
                    .or_else(|| find(&self.pending, b"\n\n").map(|at| at + 2));
                let Some(end) = end.or((self.pending.len() > MAX_PART_HEADERS).then_some(self.pending.len()))
                else {
                    return false;
                };
                if part_is_method_field(&self.pending[..end]) {
                    return true;
                }
                self.pending.drain(..end);
                self.in_headers = false;
            } else {
                match find(&self.pending, &self.delimiter) {
                    Some(at) => {
                        self.pending.drain(..at + self.delimiter.len());
                        self.in_headers = true;
                    }
                    None => {
                        let keep = self.pending.len().min(self.delimiter.len());
                        self.pending.drain(..self.pending.len() - keep);
                        return false;
                    }
                }
            }
        }
    }
}

/// The header section of one part (after its delimiter line): is it named `_method`?
fn part_is_method_field(section: &[u8]) -> bool {
    section.split(|&b| b == b'\n').any(|line| {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
        if !line[..colon].trim_ascii().eq_ignore_ascii_case(b"content-disposition") {
            return false;
        }
        line[colon + 1..].split(|&b| b == b';').skip(1).any(|param| {
            let Some((key, value)) = split_param(param) else { return false };
            let value = unquote(value);
            if key.eq_ignore_ascii_case(b"name") {
                is_method_field(value)
            } else if key.eq_ignore_ascii_case(b"name*") {
                // RFC 2231: charset'language'percent-encoded
                let encoded = value.rsplit(|&b| b == b'\'').next().unwrap_or_default();
                is_method_field(&percent_encoding::percent_decode(encoded).collect::<Vec<u8>>())
            } else {
                false
            }
        })
    })
}

/// `key = value` of a header parameter, both trimmed.
fn split_param(param: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = param.iter().position(|&b| b == b'=')?;
    Some((param[..eq].trim_ascii(), param[eq + 1..].trim_ascii()))
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] | [b'\'', inner @ .., b'\''] => inner,
        other => other,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

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

/// The configured trusted proxies (`server.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<ipnet::IpNet>) -> Self {
        TrustedProxies(networks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The real client behind `peer`: the peer itself unless it is trusted;
    /// then `X-Forwarded-For` read right to left, skipping trusted addresses
    /// (nginx's `real_ip_recursive`). Also returns the part of the chain from
    /// that client on, which is all the upstream should be told.
    pub fn client<'h>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'h str>) -> ClientChain {
        let peer = canonical_ip(peer);
        if !self.contains(peer) {
            return ClientChain { client: peer, hops: Vec::new() };
        }
        let entries: Vec<&str> =
            forwarded_for.flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty()).collect();
        let mut client = peer;
        let mut hops = Vec::new();
        for entry in entries.iter().rev() {
            // An entry that isn't an address ends what can be believed.
            let Some(ip) = parse_forwarded_ip(entry) else { break };
            hops.push(client);
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        hops.reverse();
        ClientChain { client, hops }
    }
}

/// Who the gateway decided the client is, and the trusted proxies between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChain {
    pub client: IpAddr,
    /// Trusted proxies after the client, nearest the client first, the
    /// gateway's peer last (empty when the peer is the client).
    pub hops: Vec<IpAddr>,
}

impl ClientChain {
    /// The `X-Forwarded-For` value the upstream receives: the client, then every hop.
    pub fn forwarded_for(&self) -> String {
        let mut value = self.client.to_string();
        for hop in &self.hops {
            value.push_str(", ");
            value.push_str(&hop.to_string());
        }
        value
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An `X-Forwarded-For` entry: an address, optionally `[v6]` or with a port.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|a| canonical_ip(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(raw: &str) -> Result<Target, RequestError> {
        canonical_target(raw.as_bytes(), MethodOverride::Refuse)
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn rules() -> HeaderRules<'static> {
        HeaderRules { identity_prefix: "x-auth-", underscores: UnderscoreHeaders::Drop, trusted_peer: false }
    }

    #[test]
    fn methods_must_be_upper_case_tokens() {
        for good in ["GET", "DELETE", "M-SEARCH", "PROPFIND"] {
            assert_eq!(canonical_method(&good.parse().unwrap()), Ok(()), "{good}");
        }
        for bad in ["get", "Delete", "dElEtE", "G3T", "-GET", "GET_"] {
            assert_eq!(canonical_method(&bad.parse().unwrap()), Err(RequestError::InvalidMethod), "{bad}");
        }
        assert_eq!(canonical_method(&Method::CONNECT), Err(RequestError::Connect));
    }

    #[test]
    fn only_origin_form_targets_have_a_canonical_form() {
        for bad in ["item/x", "../admin/x", "*/admin/x", "*", "http://host/admin", "host:443", ""] {
            assert_eq!(target(bad), Err(RequestError::Path(PathError::NotOriginForm)), "{bad}");
        }
        assert_eq!(canonical_target(b"/caf\xff", MethodOverride::Refuse), Err(PathError::NotUtf8.into()));
        assert_eq!(target("/a#frag"), Err(PathError::Fragment.into()));
    }

    #[test]
    fn targets_are_normalised_and_encoded_once() {
        let t = target("/a/../item/x?b=1&c=%2e").unwrap();
        assert_eq!(t.to_origin_form(), "/item/x?b=1&c=%2e");
        assert_eq!(target("/café?q=é").unwrap().to_origin_form(), "/caf%C3%A9?q=%C3%A9");
        assert_eq!(target("/caf%c3%a9").unwrap().path, "/caf%C3%A9");
        assert_eq!(target("/a{b}|c").unwrap().path, "/a%7Bb%7D%7Cc");
        assert_eq!(target("/x?").unwrap().query, None);
        for raw in ["/a/../item/x?b=1", "/café?q=é", "/a{b}|c", "//x/./y/?%41=1"] {
            let once = target(raw).unwrap().to_origin_form();
            assert_eq!(target(&once).unwrap().to_origin_form(), once, "{raw}");
        }
        assert_eq!(target("/x?q=100%"), Err(PathError::BadEscape.into()));
    }

    #[test]
    fn method_override_parameters_are_refused_unless_allowed() {
        for raw in [
            "/x?_method=DELETE",
            "/x?a=1&%5Fmethod=delete",
            "/x?_METHOD=put",
            "/x?_method",
            "/x?a=1;_method=DELETE",
            "/x?.method=DELETE",
            "/x?%2Emethod=DELETE",
            "/x?+_method=DELETE",
            "/x?_method[]=DELETE",
            "/x?[method=DELETE",
        ] {
            assert_eq!(target(raw), Err(RequestError::MethodOverride), "{raw}");
        }
        assert!(canonical_target(b"/x?_method=DELETE", MethodOverride::Allow).is_ok());
        assert!(target("/x?my_method=1&method=2").is_ok());
    }

    #[test]
    fn host_and_framing_rules() {
        let get = Method::GET;
        let v11 = Version::HTTP_11;
        let check = |lines: &[(&str, &str)]| inspect_headers(&get, v11, &headers(lines), rules());
        assert_eq!(check(&[]), Err(HeaderError::MissingHost));
        assert_eq!(
            inspect_headers(&get, Version::HTTP_10, &headers(&[]), rules()),
            Err(HeaderError::MissingHost)
        );
        assert_eq!(check(&[("host", "a"), ("host", "b")]), Err(HeaderError::DuplicateHost));
        for bad in ["a/b", "user@h", "h:x", "[::1", "h:123456", "", "a b"] {
            assert_eq!(check(&[("host", bad)]), Err(HeaderError::InvalidHost), "{bad}");
        }
        for good in ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80", "[::1]"] {
            assert!(check(&[("host", good)]).is_ok(), "{good}");
        }
        let h = ("host", "h");
        assert_eq!(check(&[h, ("content-length", "5, 5")]).unwrap().content_length, Some(5));
        assert_eq!(
            check(&[h, ("content-length", "5"), ("content-length", "5")]).unwrap().content_length,
            Some(5)
        );
        assert_eq!(check(&[h, ("content-length", "5")]).unwrap().content_length, None);
        for bad in [
            &[h, ("content-length", "5, 6")][..],
            &[h, ("content-length", "+5")],
            &[h, ("content-length", "")],
        ] {
            assert_eq!(check(bad), Err(HeaderError::InvalidContentLength));
        }
        assert!(check(&[h, ("transfer-encoding", "chunked")]).is_ok());
        for bad in ["gzip, chunked", "chunked, identity", "xchunked"] {
            assert_eq!(check(&[h, ("transfer-encoding", bad)]), Err(HeaderError::InvalidTransferEncoding));
        }
        let both = [h, ("transfer-encoding", "chunked"), ("content-length", "3")];
        assert_eq!(check(&both), Err(HeaderError::InvalidTransferEncoding));
    }

    #[test]
    fn spoofable_headers_are_listed_for_removal() {
        let map = headers(&[
            ("host", "h"),
            ("x_auth_user_id", "1"),
            ("x-auth_admin", "true"),
            ("X-Auth-Email", "a@b"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        let plan = inspect_headers(&Method::GET, Version::HTTP_11, &map, rules()).unwrap();
        let mut removed: Vec<&str> = plan.remove.iter().map(HeaderName::as_str).collect();
        removed.sort_unstable();
        let expected = [
            "connection",
            "forwarded",
            "upgrade",
            "x-auth-email",
            "x-auth_admin",
            "x-custom",
            "x-forwarded-for",
            "x-http-method-override",
            "x-real-ip",
            "x_auth_user_id",
        ];
        assert_eq!(removed, expected);
        assert!(!plan.websocket, "no `Connection: upgrade`");
        let more = headers(&[
            ("host", "h"),
            ("x-original-url", "/admin"),
            ("true-client-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/admin"),
        ]);
        let plan = inspect_headers(&Method::GET, Version::HTTP_11, &more, rules()).unwrap();
        assert_eq!(plan.remove.len(), 3, "{:?}", plan.remove);
        let trusted = HeaderRules { trusted_peer: true, ..rules() };
        let plan = inspect_headers(&Method::GET, Version::HTTP_11, &more, trusted).unwrap();
        assert_eq!(plan.remove.len(), 2, "a trusted proxy's X-Forwarded-Prefix is kept: {:?}", plan.remove);
        let nbsp = http::HeaderValue::from_bytes(b"application/x-www-form-urlencoded\xa0").unwrap();
        let mut odd = headers(&[("host", "h")]);
        odd.insert(CONTENT_TYPE, nbsp);
        assert_eq!(
            inspect_headers(&Method::POST, Version::HTTP_11, &odd, rules()),
            Err(HeaderError::InvalidContentType)
        );
        let types = headers(&[("host", "h"), ("content-type", "text/plain"), ("content-type", "a/b")]);
        assert_eq!(
            inspect_headers(&Method::POST, Version::HTTP_11, &types, rules()),
            Err(HeaderError::DuplicateContentType)
        );
        let reject = HeaderRules { underscores: UnderscoreHeaders::Reject, ..rules() };
        assert_eq!(
            inspect_headers(&Method::GET, Version::HTTP_11, &map, reject),
            Err(HeaderError::Underscore)
        );
    }

    #[test]
    fn websocket_upgrades_are_recognised_only_when_well_formed() {
        let ws = |method: Method, version, lines: &[(&str, &str)]| {
            let mut all = vec![("host", "h")];
            all.extend_from_slice(lines);
            inspect_headers(&method, version, &headers(&all), rules()).unwrap().websocket
        };
        let good = [("connection", "Upgrade"), ("upgrade", "websocket")];
        assert!(ws(Method::GET, Version::HTTP_11, &good));
        assert!(!ws(Method::POST, Version::HTTP_11, &good));
        assert!(!ws(Method::GET, Version::HTTP_10, &good));
        assert!(!ws(Method::GET, Version::HTTP_11, &[("upgrade", "websocket")]));
        assert!(!ws(Method::GET, Version::HTTP_11, &[("connection", "upgrade"), ("upgrade", "h2c")]));
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let trusted =
            TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let chain = trusted.client(ip("192.0.2.9"), ["1.2.3.4"].into_iter());
        assert_eq!(chain.client, ip("192.0.2.9"), "an untrusted peer is the client");
        assert_eq!(chain.forwarded_for(), "192.0.2.9");
        let chain = trusted.client(ip("127.0.0.1"), ["6.6.6.6, 198.51.100.7", "10.1.1.1"].into_iter());
        assert_eq!(chain.client, ip("198.51.100.7"), "right to left, skipping trusted hops");
        assert_eq!(chain.forwarded_for(), "198.51.100.7, 10.1.1.1, 127.0.0.1");
        let chain = trusted.client(ip("127.0.0.1"), ["garbage, 10.0.0.2"].into_iter());
        assert_eq!(chain.client, ip("10.0.0.2"), "what can't be parsed ends the chain");
        let chain = trusted.client(ip("::ffff:127.0.0.1"), std::iter::empty());
        assert_eq!(chain.client, ip("127.0.0.1"));
        assert!(trusted.contains(ip("::ffff:10.2.3.4")));
    }
    #[test]
    fn method_fields_in_form_bodies_are_found_across_chunks() {
        let found = |content_type: &str, chunks: &[&str]| {
            let mut scanner = FormOverrideScanner::for_content_type(content_type.as_bytes()).unwrap();
            chunks.iter().any(|c| scanner.found_in(c.as_bytes())) || scanner.found_at_end()
        };
        let form = "application/x-www-form-urlencoded; charset=utf-8";
        for chunks in [
            &["_method=DELETE"][..],
            &["a=1&_met", "hod=delete"],
            &["a=1&%5F", "method=put"],
            &["a=1&_%6Dethod=put"],
            &["a=1&_METHOD"],
            &["a=1;_method=DELETE"],
            &["a=1&+_method=DELETE"],
            &["a=1&%20_method=DELETE"],
            &[".method=DELETE"],
            &["%2Emethod=DELETE"],
            &["_method[]=DELETE"],
            &["_method[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]=DELETE"],
            &["[method=DELETE"],
        ] {
            assert!(found(form, chunks), "{chunks:?}");
        }
        assert!(!found(form, &["a=_method&b=1&my_method=2&_methods=3&x=.method"]));
        let multipart = "multipart/form-data; boundary=\"xyz\"";
        let part = |headers: &str| format!("--xyz\r\n{headers}\r\n\r\nDELETE\r\n--xyz--\r\n");
        for headers in [
            "Content-Disposition: form-data; name=\"_method\"",
            "content-disposition: form-data; NAME=_method",
            "Content-Disposition: form-data; name = '_method'",
            "Content-Disposition: form-data; name*=UTF-8''%5Fmethod",
            "Content-Disposition: form-data; name=\".method\"",
        ] {
            let body = part(headers);
            let (first, second) = body.split_at(body.len() / 2);
            assert!(found(multipart, &[first, second]), "{headers}");
            assert!(found(multipart, &[&body]), "{headers}");
        }
        let upload = "--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.html\"\r\n\r\n\
                      <input name=\"_method\" value=\"DELETE\">\r\n--xyz--\r\n";
        assert!(!found(multipart, &[upload]), "a part's content is not a field name");
        assert!(!found(multipart, &[&part("Content-Disposition: form-data; name=\"_methods\"")]));
        assert!(FormOverrideScanner::for_content_type(b"multipart/form-data").is_none(), "no boundary");
        assert!(FormOverrideScanner::for_content_type(b"application/json").is_none());
    }
}
