//! CORS per route: which other origins' pages may read a route's answers,
//! and the preflight answers the gateway gives for them itself.
//!
//! The gateway, not the upstream, owns CORS on a route that configures it,
//! for two reasons. A preflight carries no token (browsers never send one),
//! so forwarding it would need a policy hole on every protected route; the
//! gateway instead answers it from the route that the *real* request would
//! match (its requested method, the canonical path), so the preflight can't
//! pick a weaker route's answer than the request it clears. And an upstream's
//! own `Access-Control-*` headers are removed on such routes, so a permissive
//! framework default (`Access-Control-Allow-Origin: *`) can't widen what the
//! config allows.
//!
//! Cross-origin requests whose `Origin` is not allowed are still judged and
//! forwarded like any other: CORS decides what a browser lets a page *read*,
//! not who may send. Tokens (and the policy) decide that; refusing by `Origin`
//! would only stop browsers, never a script outside one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The request headers a page may send by default: the bearer token, a JSON
/// body, and the CSRF header of cookie sessions.
pub const DEFAULT_HEADERS: [&str; 3] = ["authorization", "content-type", "x-csrf-token"];

/// The response headers a page may read by default, besides the safelisted ones.
pub const DEFAULT_EXPOSE_HEADERS: [&str; 1] = ["x-request-id"];

/// Methods a route that lists none allows cross-origin by default: the ones
/// browsers send without a preflight anyway, so the default opens nothing new.
pub const DEFAULT_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

/// How long browsers may cache a preflight answer by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// The longest `cors_max_age` (Firefox's own cap; Chromium stops at 2 h).
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What a preflight answer and every answer on a CORS route vary by.
const PREFLIGHT_VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// A route's CORS settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Origins,
    methods: Vec<Method>,
    /// Lower-case names.
    headers: Vec<HeaderName>,
    credentials: bool,
    max_age: Duration,
    expose_headers: Vec<HeaderName>,
    /// The header values, joined once.
    allow_methods: String,
    allow_headers: String,
    expose: String,
}

/// Which origins may read a route's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `"*"`: any origin (only without credentials).
    Any,
    Listed(Vec<Origin>),
}

impl Cors {
    /// `credentials` with [`Origins::Any`] is refused by the config before
    /// this is built; here it would still never answer `*` (origins are echoed).
    pub fn new(
        origins: Origins,
        methods: Vec<Method>,
        headers: Vec<HeaderName>,
        credentials: bool,
        max_age: Duration,
        expose_headers: Vec<HeaderName>,
    ) -> Self {
        let join = |names: &mut dyn Iterator<Item = &str>| names.collect::<Vec<_>>().join(", ");
        let allow_methods = join(&mut methods.iter().map(Method::as_str));
        let allow_headers = join(&mut headers.iter().map(HeaderName::as_str));
        let expose = join(&mut expose_headers.iter().map(HeaderName::as_str));
        Cors {
            origins,
            methods,
            headers,
            credentials,
            max_age,
            expose_headers,
            allow_methods,
            allow_headers,
            expose,
        }
    }

    pub fn credentials(&self) -> bool {
        self.credentials
    }

    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// Whether a page from `origin` may act with the user's credentials:
    /// only a listed origin on a route that allows credentials (`*` never),
    /// as for a WebSocket, which browsers open with the user's cookies.
    pub fn admits_with_credentials(&self, origin: &HeaderValue) -> bool {
        self.credentials && matches!(self.origins, Origins::Listed(_)) && self.allows_origin(origin)
    }

    /// Whether a page from `origin` (an `Origin` header's value) may read.
    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::Listed(listed) => {
                let sent = origin.as_bytes();
                listed.iter().any(|o| o.0.as_bytes().eq_ignore_ascii_case(sent))
            }
        }
    }

    /// `HEAD` goes wherever `GET` may, as route matching has it.
    fn allows_method(&self, method: &Method) -> bool {
        self.methods.contains(method) || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// The answer to a preflight (see [`is_preflight`]) already matched to
    /// this route by its requested method: the headers of a 204, or why not.
    pub fn preflight(&self, request: &HeaderMap) -> Result<Vec<(HeaderName, String)>, CorsRefusal> {
        let origin = single_origin(request).ok_or(CorsRefusal::Origin)?;
        if !self.allows_origin(origin) {
            return Err(CorsRefusal::Origin);
        }
        let method = requested_method(request)?;
        if !self.allows_method(&method) {
            return Err(CorsRefusal::Method(method.to_string()));
        }
        for value in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let text = value.to_str().map_err(|_| CorsRefusal::Header("?".into()))?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !self.headers.iter().any(|h| h.as_str().eq_ignore_ascii_case(name)) {
                    return Err(CorsRefusal::Header(name.chars().take(64).collect()));
                }
            }
        }
        let mut headers = self.allowed(origin);
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone()));
        if !self.allow_headers.is_empty() {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone()));
        }
        headers.push((ACCESS_CONTROL_MAX_AGE, self.max_age.as_secs().to_string()));
        headers.push((VARY, PREFLIGHT_VARY.to_owned()));
        Ok(headers)
    }

    /// The headers every answer to a (non-preflight) request on this route
    /// carries, the gateway's refusals included: `Vary: Origin` always, and
    /// what lets the page read the answer when its origin is allowed.
    pub fn actual(&self, request: &HeaderMap) -> Vec<(HeaderName, String)> {
        let mut headers = match single_origin(request) {
            Some(origin) if self.allows_origin(origin) => {
                let mut headers = self.allowed(origin);
                if !self.expose_headers.is_empty() {
                    headers.push((ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone()));
                }
                headers
            }
            _ => Vec::new(),
        };
        headers.push((VARY, "Origin".to_owned()));
        headers
    }

    /// The origin, echoed (never `*`: one answer shape whether or not
    /// credentials are on), and the credentials flag.
    fn allowed(&self, origin: &HeaderValue) -> Vec<(HeaderName, String)> {
        // An `Origin` that is not text matches no listed origin; under `*` it
        // is not echoed either.
        let Ok(origin) = origin.to_str() else { return Vec::new() };
        let mut headers = vec![(ACCESS_CONTROL_ALLOW_ORIGIN, origin.to_owned())];
        if self.credentials {
            headers.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".to_owned()));
        }
        headers
    }
}

/// An `OPTIONS` request with an `Origin` and an `Access-Control-Request-Method`:
/// a browser asking whether it may send the real request. Any other `OPTIONS`
/// is an ordinary request.
pub fn is_preflight(method: &Method, request: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && request.contains_key(ORIGIN)
        && request.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about: one upper-case method (browsers
/// upper-case the standard ones; a lower-case custom one is not the method a
/// route would be matched by).
pub fn requested_method(request: &HeaderMap) -> Result<Method, CorsRefusal> {
    let mut values = request.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(CorsRefusal::Malformed);
    };
    let method = Method::from_bytes(value.as_bytes()).map_err(|_| CorsRefusal::Malformed)?;
    crate::request::canonical_method(&method).map_err(|_| CorsRefusal::Malformed)?;
    Ok(method)
}

/// The request's one `Origin`; two are none.
fn single_origin(request: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = request.get_all(ORIGIN).iter();
    match (values.next(), values.next()) {
        (Some(origin), None) => Some(origin),
        _ => None,
    }
}

/// Whether an upstream response header is a CORS one, which the gateway
/// removes on routes whose CORS it answers itself.
pub fn is_cors_response_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("access-control-")
}

/// Why a preflight was refused (403 `cors_refused`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsRefusal {
    #[error("this origin may not call this route")]
    Origin,
    #[error("method {0} is not allowed from other origins on this route")]
    Method(String),
    #[error("request header `{0}` is not allowed from other origins on this route")]
    Header(String),
    #[error("Access-Control-Request-Method must be one upper-case method")]
    Malformed,
}

/// A configured origin: `scheme://host[:port]`, lower-case, without a
/// default port, path, query or user, exactly as browsers send `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a configured origin was refused; each message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("origin `{0}` must be scheme://host[:port], e.g. \"https://app.example.com\"")]
    Shape(String),
    #[error("origin `{0}` has a path, query or fragment: an Origin header never does (drop everything after the host and port)")]
    Path(String),
    #[error("origin `{0}` has a user name: an Origin header never does")]
    User(String),
    #[error("origin `{0}`: the host must be ASCII letters, digits, `.` and `-` (write an IDN in its xn-- form) or a [IPv6] address")]
    Host(String),
    #[error("origin `{0}`: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("origin `{origin}`: browsers send it without the default port; write `{without}`")]
    DefaultPort { origin: String, without: String },
}

impl FromStr for Origin {
    type Err = OriginError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = || OriginError::Shape(text.to_owned());
        let (scheme, rest) = text.split_once("://").ok_or_else(shape)?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok || rest.is_empty() {
            return Err(shape());
        }
        if rest.contains(['/', '?', '#']) {
            return Err(OriginError::Path(text.to_owned()));
        }
        if rest.contains('@') {
            return Err(OriginError::User(text.to_owned()));
        }
        let (host, port) = match rest.rfind(':') {
            // `[::1]` alone: the colon is inside the brackets.
            Some(colon) if !rest[colon..].contains(']') => (&rest[..colon], Some(&rest[colon + 1..])),
            _ => (rest, None),
        };
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && !host.starts_with(['.', '-'])
                && !host.ends_with('-')
                && !host.contains("..")
                && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        };
        if !host_ok {
            return Err(OriginError::Host(text.to_owned()));
        }
        let scheme = scheme.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        let Some(port) = port else {
            return Ok(Origin(format!("{scheme}://{host}")));
        };
        let number: u16 = match port.parse() {
            Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(OriginError::Port(text.to_owned())),
        };
        if (scheme == "https" && number == 443) || (scheme == "http" && number == 80) {
            return Err(OriginError::DefaultPort {
                origin: text.to_owned(),
                without: format!("{scheme}://{host}"),
            });
        }
        Ok(Origin(format!("{scheme}://{host}:{number}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> Result<String, OriginError> {
        text.parse::<Origin>().map(|o| o.0)
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        for (written, kept) in [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("https://[2001:db8::1]", "https://[2001:db8::1]"),
            ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
            ("chrome-extension://abcdef", "chrome-extension://abcdef"),
            ("http://example.com:443", "http://example.com:443"),
        ] {
            assert_eq!(origin(written).as_deref(), Ok(kept), "{written}");
        }
    }

    #[test]
    fn anything_an_origin_header_never_is_refused() {
        let shape = |t: &str| OriginError::Shape(t.to_owned());
        let path = |t: &str| OriginError::Path(t.to_owned());
        let host = |t: &str| OriginError::Host(t.to_owned());
        let port = |t: &str| OriginError::Port(t.to_owned());
        for (written, error) in [
            ("app.example.com", shape("app.example.com")),
            ("https://", shape("https://")),
            ("://app.example.com", shape("://app.example.com")),
            ("1http://a.com", shape("1http://a.com")),
            ("*.example.com", shape("*.example.com")),
            ("https://app.example.com/", path("https://app.example.com/")),
            ("https://app.example.com/api", path("https://app.example.com/api")),
            ("https://app.example.com?x", path("https://app.example.com?x")),
            ("https://a.com#f", path("https://a.com#f")),
            ("https://user@a.com", OriginError::User("https://user@a.com".into())),
            ("https://*.example.com", host("https://*.example.com")),
            ("https://bücher.example", host("https://bücher.example")),
            ("https://a..com", host("https://a..com")),
            ("https://-a.com", host("https://-a.com")),
            ("https://a b.com", host("https://a b.com")),
            ("http://[::1", host("http://[::1")),
            ("http://[nope]:80", host("http://[nope]:80")),
            ("https://a.com:", port("https://a.com:")),
            ("https://a.com:0", port("https://a.com:0")),
            ("https://a.com:65536", port("https://a.com:65536")),
            ("https://a.com:+80", port("https://a.com:+80")),
            ("https://a.com:8x", port("https://a.com:8x")),
        ] {
            assert_eq!(origin(written), Err(error), "{written}");
        }
        assert_eq!(
            origin("https://a.com:443"),
            Err(OriginError::DefaultPort {
                origin: "https://a.com:443".into(),
                without: "https://a.com".into()
            })
        );
        assert!(origin("http://a.com:80").unwrap_err().to_string().contains("write `http://a.com`"));
    }

    fn cors(origins: Origins, credentials: bool) -> Cors {
        Cors::new(
            origins,
            vec![Method::GET, Method::PUT],
            DEFAULT_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect(),
            credentials,
            DEFAULT_MAX_AGE,
            vec![HeaderName::from_static("x-request-id")],
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn value<'a>(answer: &'a [(HeaderName, String)], name: &str) -> Option<&'a str> {
        answer.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_preflight_is_answered_only_within_the_route_settings() {
        let app = Origins::Listed(vec!["https://app.example.com".parse().unwrap()]);
        let cors = cors(app, true);
        let asked = |extra: &[(&str, &str)]| {
            let mut pairs =
                vec![("origin", "https://app.example.com"), ("access-control-request-method", "PUT")];
            pairs.extend_from_slice(extra);
            cors.preflight(&headers(&pairs))
        };
        let answer = asked(&[("access-control-request-headers", "authorization, Content-Type")]).unwrap();
        assert_eq!(value(&answer, "access-control-allow-origin"), Some("https://app.example.com"));
        assert_eq!(value(&answer, "access-control-allow-credentials"), Some("true"));
        assert_eq!(value(&answer, "access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            value(&answer, "access-control-allow-headers"),
            Some("authorization, content-type, x-csrf-token")
        );
        assert_eq!(value(&answer, "access-control-max-age"), Some("600"));
        assert_eq!(value(&answer, "vary"), Some(PREFLIGHT_VARY));
        assert_eq!(
            asked(&[("access-control-request-headers", "x-other")]),
            Err(CorsRefusal::Header("x-other".into()))
        );

        let other = headers(&[("origin", "https://evil.example"), ("access-control-request-method", "PUT")]);
        assert_eq!(cors.preflight(&other), Err(CorsRefusal::Origin));
        let two = headers(&[
            ("origin", "https://app.example.com"),
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(cors.preflight(&two), Err(CorsRefusal::Origin));
        let delete =
            headers(&[("origin", "https://app.example.com"), ("access-control-request-method", "DELETE")]);
        assert_eq!(cors.preflight(&delete), Err(CorsRefusal::Method("DELETE".into())));
        let head =
            headers(&[("origin", "https://app.example.com"), ("access-control-request-method", "HEAD")]);
        assert!(cors.preflight(&head).is_ok(), "HEAD follows GET");
        let lower =
            headers(&[("origin", "https://app.example.com"), ("access-control-request-method", "put")]);
        assert_eq!(cors.preflight(&lower), Err(CorsRefusal::Malformed));
    }

    #[test]
    fn actual_answers_echo_an_allowed_origin_and_always_vary() {
        let cors = cors(Origins::Any, false);
        let answer = cors.actual(&headers(&[("origin", "https://anyone.example")]));
        assert_eq!(value(&answer, "access-control-allow-origin"), Some("https://anyone.example"));
        assert_eq!(value(&answer, "access-control-allow-credentials"), None);
        assert_eq!(value(&answer, "access-control-expose-headers"), Some("x-request-id"));
        assert_eq!(value(&answer, "vary"), Some("Origin"));
        let without = cors.actual(&HeaderMap::new());
        assert_eq!(without, vec![(VARY, "Origin".to_owned())]);
    }

    #[test]
    fn preflights_are_told_from_ordinary_options_requests() {
        let both = headers(&[("origin", "https://a.example"), ("access-control-request-method", "GET")]);
        assert!(is_preflight(&Method::OPTIONS, &both));
        assert!(!is_preflight(&Method::GET, &both));
        assert!(!is_preflight(&Method::OPTIONS, &headers(&[("origin", "https://a.example")])));
        assert!(!is_preflight(&Method::OPTIONS, &headers(&[("access-control-request-method", "GET")])));
    }
}
