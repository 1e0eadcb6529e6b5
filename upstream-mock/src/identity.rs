//! Reading the identity headers the gateway injects.
//!
//! The upstream does no authentication of its own: it trusts whatever
//! `<prefix>User-Id`, `<prefix>Username`, ... headers arrive, exactly like a
//! real service sitting behind Gatehouse would. Only the user id matters to
//! the handlers (it decides "identified or anonymous" and fills
//! `created_by`); the other headers are visible through `/debug/echo`.

use axum::http::{HeaderMap, HeaderName};

/// The identity header names derived from the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct IdentityHeaders {
    /// `<prefix>User-Id`, or `None` when the prefix does not make a valid
    /// header name (then no request can ever be identified).
    user_id: Option<HeaderName>,
    /// `<prefix>Roles`: the caller's roles, comma-separated.
    roles: Option<HeaderName>,
}

impl IdentityHeaders {
    pub(crate) fn new(prefix: &str) -> Self {
        // `from_bytes` lower-cases, so the lookup is case-insensitive as HTTP
        // header names are.
        let user_id = HeaderName::from_bytes(format!("{prefix}User-Id").as_bytes()).ok();
        let roles = HeaderName::from_bytes(format!("{prefix}Roles").as_bytes()).ok();
        Self { user_id, roles }
    }

    /// The caller's roles as the gateway sent them (every copy of the header,
    /// split at commas), or `None` without the header.
    pub(crate) fn roles(&self, headers: &HeaderMap) -> Option<Vec<String>> {
        let name = self.roles.as_ref()?;
        let mut copies = headers.get_all(name).iter().peekable();
        copies.peek()?;
        Some(
            copies
                .flat_map(|value| {
                    String::from_utf8_lossy(value.as_bytes())
                        .split(',')
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .filter(|role| !role.is_empty())
                .collect(),
        )
    }

    /// The caller's user id, when the gateway identified one. The header
    /// being present is what counts, even with an empty value.
    pub(crate) fn user_id(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.user_id.as_ref()?;
        let value = headers.get(name)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    }
}

/// Whether `prefix` yields valid header names for every identity header.
pub fn is_valid_prefix(prefix: &str) -> bool {
    ["User-Id", "Username", "Email", "Admin", "Fresh", "Token-Id", "Roles"]
        .iter()
        .all(|suffix| HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes()).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn lookup_is_case_insensitive_and_prefix_driven() {
        let mut headers = HeaderMap::new();
        headers.insert("x-gw-user-id", HeaderValue::from_static("42"));
        assert_eq!(IdentityHeaders::new("X-Gw-").user_id(&headers).as_deref(), Some("42"));
        assert_eq!(IdentityHeaders::new("X-Auth-").user_id(&headers), None);
    }

    #[test]
    fn invalid_prefix_never_identifies() {
        assert!(!is_valid_prefix("X Auth "));
        assert!(is_valid_prefix("X-Auth-"));
        let headers = HeaderMap::new();
        assert_eq!(IdentityHeaders::new("X Auth ").user_id(&headers), None);
    }

    #[test]
    fn roles_are_read_as_a_list_and_absent_without_the_header() {
        let ids = IdentityHeaders::new("X-Auth-");
        let mut headers = HeaderMap::new();
        assert_eq!(ids.roles(&headers), None);
        headers.insert("x-auth-roles", HeaderValue::from_static(""));
        assert_eq!(ids.roles(&headers), Some(Vec::new()));
        headers.insert("x-auth-roles", HeaderValue::from_static("admin,editor"));
        assert_eq!(ids.roles(&headers), Some(vec!["admin".to_owned(), "editor".to_owned()]));
    }
}
