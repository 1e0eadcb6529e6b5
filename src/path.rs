//! Request-path normalisation, done before the route lookup so a path can't be
//! dressed up to match a weaker route than the one the upstream will serve.
//!
//! Percent-encoded unreserved characters are decoded (`%2e` is `.`), dot
//! segments are removed and repeated slashes collapsed (RFC 3986 section 5.2.4).
//! What can't be normalised safely is refused: an encoded `/` or `\`, a
//! backslash, NUL or other control characters, a `;` (path parameters, which
//! some upstreams strip and some don't), and broken percent escapes. The
//! upstream receives the normalised path, the one that was authorised.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be a path starting with `/` (no absolute URL, `*` or relative path)")]
    NotOriginForm,
    #[error("the request target has a broken percent escape")]
    BadEscape,
    #[error("the path has an encoded `/` or `\\`")]
    EncodedSeparator,
    #[error("the path has a backslash, NUL or another control character")]
    ForbiddenCharacter,
    #[error("the path has `;` parameters, which the gateway does not accept")]
    PathParameters,
    #[error("the request target is not valid UTF-8")]
    NotUtf8,
    #[error("the request target has a `#` fragment, which clients must not send")]
    Fragment,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Normalises an origin-form path (no query string). Returns the input
/// unchanged (borrowed) when it is already normal, the common case.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    // Pass 1: validate and decode escapes into `decoded`.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadEscape);
                };
                let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) else {
                    return Err(PathError::BadEscape);
                };
                let value = h * 16 + l;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b';' => return Err(PathError::PathParameters),
                    v if v < 0x20 || v == 0x7f => return Err(PathError::ForbiddenCharacter),
                    v if is_unreserved(v) => decoded.push(v as char),
                    v => {
                        decoded.push('%');
                        decoded.push(
                            char::from_digit(u32::from(v >> 4), 16).map_or('0', |c| c.to_ascii_uppercase()),
                        );
                        decoded.push(
                            char::from_digit(u32::from(v & 0xf), 16).map_or('0', |c| c.to_ascii_uppercase()),
                        );
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::ForbiddenCharacter),
            b';' => return Err(PathError::PathParameters),
            b if b < 0x20 || b == 0x7f => return Err(PathError::ForbiddenCharacter),
            _ => {
                // Copy the run of ordinary bytes up to the next special one.
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b'%' | b'\\' | b';')
                    && bytes[i] >= 0x20
                    && bytes[i] != 0x7f
                {
                    i += 1;
                }
                decoded.push_str(&path[start..i]);
            }
        }
    }
    // Pass 2: remove dot segments and empty segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &segments {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    if normal == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(normal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        normalise(input).unwrap_or_else(|e| panic!("{input}: {e}")).into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in ["/", "/items", "/item/chair", "/a/b/", "/caf%C3%A9", "/a%20b"] {
            assert!(matches!(normalise(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        assert_eq!(ok("/public/../admin/x"), "/admin/x");
        assert_eq!(ok("/public/%2e%2e/admin/x"), "/admin/x");
        assert_eq!(ok("/public/%2E%2E/admin/x"), "/admin/x");
        assert_eq!(ok("//admin/x"), "/admin/x");
        assert_eq!(ok("/./admin/x"), "/admin/x");
        assert_eq!(ok("/../../admin"), "/admin");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a//b///c"), "/a/b/c");
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/a%7e"), "/a~");
        assert_eq!(ok("/a%2a"), "/a%2A");
        assert_eq!(ok("/.."), "/");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(normalise("/admin%2fx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/admin%2Fx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/admin%5cx"), Err(PathError::EncodedSeparator));
        assert_eq!(normalise("/admin\\x"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalise("/admin%00"), Err(PathError::ForbiddenCharacter));
        assert_eq!(normalise("/admin;x"), Err(PathError::PathParameters));
        assert_eq!(normalise("/admin%3bx"), Err(PathError::PathParameters));
        assert_eq!(normalise("/admin%zz"), Err(PathError::BadEscape));
        assert_eq!(normalise("/admin%4"), Err(PathError::BadEscape));
        assert_eq!(normalise("admin"), Err(PathError::NotOriginForm));
        assert_eq!(normalise("*"), Err(PathError::NotOriginForm));
        assert_eq!(normalise(""), Err(PathError::NotOriginForm));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/../b", "/%2e/x//y/", "/caf%c3%a9/..", "/a%2a/./b"] {
            let once = ok(p);
            assert_eq!(ok(&once), once, "{p}");
        }
    }
}
