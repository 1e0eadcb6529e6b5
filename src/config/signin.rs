//! `[signin]`: the gateway's own HTML sign-in page (see [`crate::signin`]).
//!
//! Off by default, and only with `[cookies]` on: the page signs a browser in
//! by setting the token cookies, so without them it could do nothing. The
//! redirect rules are checked here once: every allow-listed origin is kept in
//! the one spelling [`crate::signin::safe_redirect`] compares with, and
//! `default_redirect`, where every refused `rd` ends, must itself pass them.

use toml::Spanned;

use super::file;
use super::values::Invalid;
use super::{CookieConfig, EndpointConfig};
use crate::signin::{origin_of, safe_redirect};

#[derive(Debug, Clone)]
pub struct SigninConfig {
    pub enabled: bool,
    /// Where the page is served (`GET`) and posted to (`POST`).
    pub path: String,
    /// The page's `<title>` and heading.
    pub title: String,
    /// Origins (`scheme://host[:port]`, as [`origin_of`] spells them) an
    /// absolute `rd` may lead to. Same-origin paths are always allowed.
    pub redirect_allowlist: Vec<String>,
    /// Where a sign-in without a usable `rd` ends.
    pub default_redirect: String,
}

impl Default for SigninConfig {
    fn default() -> Self {
        SigninConfig {
            enabled: false,
            path: "/signin".to_owned(),
            title: "Sign in".to_owned(),
            redirect_allowlist: Vec::new(),
            default_redirect: "/".to_owned(),
        }
    }
}

impl SigninConfig {
    pub(super) fn from_file(
        section: file::SigninSection,
        cookies: &CookieConfig,
        endpoints: &EndpointConfig,
    ) -> Result<Self, Invalid> {
        let defaults = SigninConfig::default();
        if let Some(enabled) = &section.enabled {
            if *enabled.get_ref() && !cookies.enabled {
                return Err(Invalid::at(
                    enabled,
                    "signin.enabled = true needs [cookies] enabled = true: the sign-in page signs browsers in with the token cookies",
                ));
            }
        }
        let path = match section.path {
            Some(v) => page_path(v, endpoints)?,
            None => defaults.path,
        };
        let title = match section.title {
            Some(v) if v.get_ref().trim().is_empty() || v.get_ref().chars().count() > 200 => {
                return Err(Invalid::at(&v, "signin.title must be between 1 and 200 characters"))
            }
            Some(v) if v.get_ref().chars().any(char::is_control) => {
                return Err(Invalid::at(&v, "signin.title can't contain control characters"))
            }
            Some(v) => v.into_inner(),
            None => defaults.title,
        };
        let mut redirect_allowlist = Vec::new();
        for entry in section.redirect_allowlist.unwrap_or_default() {
            let origin = origin_of(entry.get_ref()).filter(|o| o == entry.get_ref().trim_end_matches('/'));
            let Some(origin) = origin else {
                return Err(Invalid::at(
                    &entry,
                    format!(
                        "signin.redirect_allowlist: `{}` is not an origin such as \"https://app.example.com\" or \"http://localhost:3000\" (scheme, host and port only, lower case)",
                        entry.get_ref()
                    ),
                ));
            };
            if !redirect_allowlist.contains(&origin) {
                redirect_allowlist.push(origin);
            }
        }
        let default_redirect = match section.default_redirect {
            Some(v) => match safe_redirect(v.get_ref(), &redirect_allowlist) {
                Some(target) => target,
                None => {
                    return Err(Invalid::at(
                        &v,
                        "signin.default_redirect must be a path starting with a single `/`, or a URL whose origin is in signin.redirect_allowlist",
                    ))
                }
            },
            None => defaults.default_redirect,
        };
        Ok(SigninConfig {
            enabled: section.enabled.is_some_and(|e| e.into_inner()),
            path,
            title,
            redirect_allowlist,
            default_redirect,
        })
    }
}

/// The page's path: plain like the built-in endpoints', and none of theirs.
fn page_path(value: Spanned<String>, endpoints: &EndpointConfig) -> Result<String, Invalid> {
    let text = value.get_ref();
    let plain = text.len() >= 2
        && text.starts_with('/')
        && !text.ends_with('/')
        && !text.contains("//")
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if !plain {
        return Err(Invalid::at(
            &value,
            "signin.path is a plain path such as \"/signin\": starts with `/`, doesn't end with one, letters, digits and -._~ only",
        ));
    }
    let taken = [
        &endpoints.login,
        &endpoints.refresh,
        &endpoints.logout,
        &endpoints.register,
        &endpoints.jwks,
        &endpoints.users,
    ];
    if taken.iter().any(|p| p.eq_ignore_ascii_case(text)) {
        return Err(Invalid::at(
            &value,
            format!("signin.path `{text}` is already a built-in endpoint's path"),
        ));
    }
    Ok(value.into_inner())
}
