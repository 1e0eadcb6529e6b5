//! HTTP/2 requests in the HTTP/1.1 shape the rest of the canonical request
//! is built in, so one set of rules judges both protocols.
//!
//! An HTTP/2 request names its host in the `:authority` pseudo-header (pingora
//! puts it in the URI) and usually sends no `Host`; a backend behind an
//! HTTP/1.1 hop gets a `Host` made from it. If both are sent and disagree,
//! which one a backend believes decides which site it serves, so such a
//! request is refused (RFC 9113 section 8.3.1 says it is malformed). With
//! the authority moved into `Host`, the request has one host header, checked
//! as any other, and an origin-form target.
//!
//! HTTP/2 may also split `Cookie` into several fields; an HTTP/1.1 backend
//! expects one, so they are joined with `; ` (RFC 9113 section 8.2.3) before
//! anything reads them.
//!
//! Connection-specific fields (`Connection`, `Transfer-Encoding`, `Upgrade`,
//! `Keep-Alive`, `TE` other than `trailers`) never get this far: the HTTP/2
//! layer refuses such a request as malformed, with a stream reset.

use http::header::{COOKIE, HOST};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Uri};

use super::HeaderError;

/// What makes an HTTP/2 request HTTP/1.1-shaped, for the caller to apply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Http2Plan {
    /// Insert this `Host` (the authority; the request had none).
    pub host: Option<HeaderValue>,
    /// Replace every `Cookie` field with this one.
    pub cookie: Option<HeaderValue>,
    /// Replace the URI with this origin-form one.
    pub origin: Option<Uri>,
}

/// Plans moving an HTTP/2 request's authority into `Host`, its target to
/// origin-form, and its cookies into one field; refuses a `Host` that
/// disagrees with the authority.
pub fn host_from_authority(uri: &Uri, headers: &HeaderMap) -> Result<Http2Plan, HeaderError> {
    let mut plan = Http2Plan { cookie: joined_cookies(headers), ..Http2Plan::default() };
    if let Some(authority) = uri.authority() {
        plan.host = host_for(authority, headers)?;
    }
    if uri.authority().is_some() || uri.scheme().is_some() {
        let origin = uri.path_and_query().map_or("/", |pq| pq.as_str());
        plan.origin = Some(origin.parse().map_err(|_| HeaderError::InvalidHost)?);
    }
    Ok(plan)
}

/// The `Host` to add, if none was sent; an error if the one sent disagrees.
fn host_for(authority: &Authority, headers: &HeaderMap) -> Result<Option<HeaderValue>, HeaderError> {
    if authority.as_str().contains('@') {
        return Err(HeaderError::InvalidHost);
    }
    let agrees = |host: &HeaderValue| host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes());
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => {
            HeaderValue::from_str(authority.as_str()).map(Some).map_err(|_| HeaderError::InvalidHost)
        }
        (Some(host), None) if agrees(host) => Ok(None),
        (Some(_), None) => Err(HeaderError::HostAuthorityMismatch),
        (Some(_), Some(_)) => Err(HeaderError::DuplicateHost),
    }
}

/// Several `Cookie` fields joined with `; `, or `None` for one or none.
fn joined_cookies(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut cookies = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return None };
    let mut joined = first.as_bytes().to_vec();
    for more in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(more.as_bytes());
    }
    // Every part was a valid field value, and so is their join.
    HeaderValue::from_bytes(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_authority_becomes_the_one_host_and_the_target_origin_form() {
        let uri: Uri = "https://api.example.com:8443/items?x=1".parse().unwrap();
        let plan = host_from_authority(&uri, &headers(&[])).unwrap();
        assert_eq!(plan.origin.unwrap(), "/items?x=1");
        assert_eq!(plan.host.unwrap(), "api.example.com:8443");

        let agreeing = host_from_authority(&uri, &headers(&[("host", "API.example.com:8443")])).unwrap();
        assert_eq!(agreeing.host, None, "the one Host sent is kept");

        let other = headers(&[("host", "admin.internal")]);
        assert_eq!(host_from_authority(&uri, &other), Err(HeaderError::HostAuthorityMismatch));
        let two = headers(&[("host", "api.example.com:8443"), ("host", "api.example.com:8443")]);
        assert_eq!(host_from_authority(&uri, &two), Err(HeaderError::DuplicateHost));
        let userinfo: Uri = "https://me@api.example.com/".parse().unwrap();
        assert_eq!(host_from_authority(&userinfo, &headers(&[])), Err(HeaderError::InvalidHost));
    }

    #[test]
    fn without_an_authority_host_is_left_to_the_common_checks() {
        let uri: Uri = "/items".parse().unwrap();
        let plan = host_from_authority(&uri, &headers(&[])).unwrap();
        assert_eq!(plan, Http2Plan::default(), "the header checks refuse a request without Host");
    }

    #[test]
    fn split_cookies_are_joined_into_one_field() {
        let uri: Uri = "/".parse().unwrap();
        let map = headers(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        assert_eq!(host_from_authority(&uri, &map).unwrap().cookie.unwrap(), "a=1; b=2; c=3");
        assert_eq!(host_from_authority(&uri, &headers(&[("cookie", "a=1")])).unwrap().cookie, None);
    }
}
