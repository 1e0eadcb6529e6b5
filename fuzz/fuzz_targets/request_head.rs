//! Fuzzes request-head canonicalisation (src/request/): raw head bytes in,
//! parsed by httparse as pingora parses them, then either a refusal or a
//! canonical request out. No panic; the canonical request is plain ASCII in
//! origin form, keeps no header the gateway must set or remove itself, and is
//! a fixed point: rendered and read again, it is accepted unchanged with
//! nothing left to remove.
//!
//! Run: `cargo +nightly fuzz run request_head` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run request_head`).
#![no_main]

use gatehouse::request::{
    canonical_method, canonical_target, inspect_headers, HeaderRules, MethodOverride, UnderscoreHeaders,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use libfuzzer_sys::fuzz_target;

const RULES: HeaderRules<'static> =
    HeaderRules { identity_prefix: "x-auth-", underscores: UnderscoreHeaders::Drop, trusted_peer: false };

struct Head {
    method: Method,
    target: Vec<u8>,
    version: Version,
    headers: HeaderMap,
}

fn parse(data: &[u8]) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut slots);
    if !matches!(request.parse(data), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let version = if request.version? == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut headers = HeaderMap::new();
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        headers.append(name, value);
    }
    Some(Head { method, target: request.path?.as_bytes().to_vec(), version, headers })
}

/// The canonical head, or `None` for a refusal.
fn canonicalise(head: &Head) -> Option<(String, HeaderMap, Vec<HeaderName>)> {
    canonical_method(&head.method).ok()?;
    let target = canonical_target(&head.target, MethodOverride::Refuse).ok()?.to_origin_form();
    let plan = inspect_headers(&head.method, head.version, &head.headers, RULES).ok()?;
    let mut headers = head.headers.clone();
    for name in &plan.remove {
        headers.remove(name);
    }
    if let Some(length) = plan.content_length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Some((target, headers, plan.remove))
}

fn render(method: &Method, target: &str, version: Version, headers: &HeaderMap) -> Vec<u8> {
    let version = if version == Version::HTTP_11 { "HTTP/1.1" } else { "HTTP/1.0" };
    let mut out = format!("{method} {target} {version}\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(head) = parse(data) else { return };
    let Some((target, headers, _)) = canonicalise(&head) else { return };
    assert!(target.starts_with('/') && target.is_ascii(), "{target:?}");
    assert!(!target.bytes().any(|b| b <= b' ' || b == b'#' || b == 0x7f), "{target:?}");
    for name in headers.keys() {
        let name = name.as_str();
        assert!(!name.contains('_') && !name.starts_with("x-auth-"), "{name} survived");
        assert!(!["connection", "upgrade", "x-forwarded-for", "forwarded", "x-http-method-override"].contains(&name));
    }
    let again = parse(&render(&head.method, &target, head.version, &headers)).expect("canonical head parses");
    let (target2, headers2, removed2) = canonicalise(&again).expect("canonical head is accepted");
    assert_eq!(target2, target, "target not a fixed point");
    assert_eq!(headers2, headers, "headers not a fixed point");
    assert!(removed2.is_empty(), "left to remove on the second pass: {removed2:?}");
});
