//! The method and the request target: what route matching and the policy
//! read, so each has exactly one spelling.

use http::Method;

use super::method_field::has_method_field;
use super::{MethodOverride, RequestError};
use crate::path::{self, PathError};

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
