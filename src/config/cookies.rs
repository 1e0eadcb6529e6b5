//! `[cookies]`: tokens in HttpOnly cookies for browsers, with double-submit
//! CSRF protection as Flask-JWT-Extended does it.
//!
//! Off by default: a gateway that never sets cookies must not start believing
//! them. Every value that ends up in a `Set-Cookie` line is checked here, so
//! the header the gateway writes is always well-formed, and the defaults are
//! the safe ones (`Secure`, `SameSite=Lax`, host-only). `SameSite=None`
//! without `Secure` is refused outright: browsers drop such cookies, and
//! where they don't, the cookie rides on every cross-site request in clear.

use http::{HeaderName, Method};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::file;
use super::values::Invalid;

/// The `SameSite` attribute of every cookie the gateway sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// When `/login` (and `/refresh` with a bearer refresh token) sets cookies
/// if the request's `set_cookies` field doesn't say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOnLogin {
    /// Never; a request asking for cookies is refused.
    Never,
    /// Only when the request says `"set_cookies": true`.
    WhenAsked,
    /// Unless the request says `"set_cookies": false`.
    Always,
}

#[derive(Debug, Clone)]
pub struct CookieConfig {
    pub enabled: bool,
    pub access_cookie: String,
    pub refresh_cookie: String,
    /// Readable by the page's scripts: the value to send in `csrf_header`.
    pub csrf_access_cookie: String,
    pub csrf_refresh_cookie: String,
    pub secure: bool,
    pub samesite: SameSite,
    /// Path of the access cookie and both CSRF cookies (the CSRF cookies must
    /// be readable by scripts on every page).
    pub path: String,
    /// Path of the refresh cookie: by default the refresh endpoint's, so the
    /// long-lived token is sent nowhere else.
    pub refresh_path: String,
    /// `None`: host-only cookies (the safe default; a `Domain` shares them
    /// with every subdomain).
    pub domain: Option<String>,
    pub csrf_header: HeaderName,
    /// Methods of a cookie-authenticated request that must carry the CSRF header.
    pub csrf_methods: Vec<Method>,
    pub set_on_login: SetOnLogin,
}

impl CookieConfig {
    /// The defaults, with the refresh cookie scoped to `refresh_endpoint`.
    pub fn defaults(refresh_endpoint: &str) -> Self {
        CookieConfig {
            enabled: false,
            access_cookie: "access_token_cookie".to_owned(),
            refresh_cookie: "refresh_token_cookie".to_owned(),
            csrf_access_cookie: "csrf_access_token".to_owned(),
            csrf_refresh_cookie: "csrf_refresh_token".to_owned(),
            secure: true,
            samesite: SameSite::Lax,
            path: "/".to_owned(),
            refresh_path: refresh_endpoint.to_owned(),
            domain: None,
            csrf_header: HeaderName::from_static("x-csrf-token"),
            csrf_methods: vec![Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
            set_on_login: SetOnLogin::WhenAsked,
        }
    }

    pub(super) fn from_file(section: file::CookiesSection, refresh_endpoint: &str) -> Result<Self, Invalid> {
        let defaults = CookieConfig::defaults(refresh_endpoint);
        let names = [
            (section.access_cookie, defaults.access_cookie, "cookies.access_cookie"),
            (section.refresh_cookie, defaults.refresh_cookie, "cookies.refresh_cookie"),
            (section.csrf_access_cookie, defaults.csrf_access_cookie, "cookies.csrf_access_cookie"),
            (section.csrf_refresh_cookie, defaults.csrf_refresh_cookie, "cookies.csrf_refresh_cookie"),
        ];
        let mut chosen: Vec<(Option<Spanned<String>>, String)> = Vec::with_capacity(4);
        for (value, default, key) in names {
            if let Some(v) = &value {
                if !is_cookie_name(v.get_ref()) {
                    return Err(Invalid::at(
                        v,
                        format!(
                            "{key} `{}` is not a cookie name: letters, digits and !#$%&'*+-.^_`|~ only",
                            v.get_ref()
                        ),
                    ));
                }
            }
            let name = value.as_ref().map_or(default, |v| v.get_ref().clone());
            if let Some((earlier, _)) = chosen.iter().find(|(_, n)| *n == name) {
                // Defaults differ from each other: at least one of the two was written.
                let Some(at) = value.as_ref().or(earlier.as_ref()) else { continue };
                return Err(Invalid::at(
                    at,
                    format!("{key}: `{name}` names another of the four cookies too"),
                ));
            }
            chosen.push((value, name));
        }
        let mut names = chosen.into_iter().map(|(_, name)| name);
        let mut next = || names.next().unwrap_or_default();
        let (access_cookie, refresh_cookie, csrf_access_cookie, csrf_refresh_cookie) =
            (next(), next(), next(), next());

        let secure = section.secure.unwrap_or(defaults.secure);
        let samesite = match section.samesite {
            Some(v) if v.get_ref().0 == SameSite::None && !secure => {
                return Err(Invalid::at(
                    &v,
                    "cookies.samesite = \"None\" needs cookies.secure = true (browsers refuse such cookies, and they would travel in clear on every cross-site request)",
                ))
            }
            Some(v) => v.into_inner().0,
            None => defaults.samesite,
        };
        let path = cookie_path(section.path, defaults.path, "cookies.path")?;
        let refresh_path = cookie_path(section.refresh_path, defaults.refresh_path, "cookies.refresh_path")?;
        let domain = match section.domain {
            Some(v) if !is_cookie_domain(v.get_ref()) => {
                return Err(Invalid::at(
                    &v,
                    format!("cookies.domain `{}` is not a host name such as \"example.com\"", v.get_ref()),
                ))
            }
            Some(v) => Some(v.into_inner().trim_start_matches('.').to_ascii_lowercase()),
            None => None,
        };
        let csrf_header = match section.csrf_header {
            Some(v) => csrf_header(&v)?,
            None => defaults.csrf_header,
        };
        let csrf_methods = match section.csrf_methods {
            Some(list) => {
                let mut methods = Vec::with_capacity(list.len());
                for m in &list {
                    let method = m
                        .get_ref()
                        .parse::<Method>()
                        .ok()
                        .filter(|parsed| {
                            m.get_ref().bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
                                && !parsed.as_str().is_empty()
                        })
                        .ok_or_else(|| {
                            Invalid::at(
                                m,
                                format!(
                                    "cookies.csrf_methods: `{}` is not an upper-case method such as \"POST\"",
                                    m.get_ref()
                                ),
                            )
                        })?;
                    if !methods.contains(&method) {
                        methods.push(method);
                    }
                }
                // More methods may be checked, never fewer: a list without
                // POST would let a cross-site form through.
                if let Some(missing) = defaults.csrf_methods.iter().find(|m| !methods.contains(m)) {
                    let message = format!(
                        "cookies.csrf_methods must keep POST, PUT, PATCH and DELETE (it lacks {missing}); \
                         add methods to it, don't remove them"
                    );
                    return Err(match list.first() {
                        Some(first) => Invalid::at(first, message),
                        None => Invalid { span: 0..0, message },
                    });
                }
                methods
            }
            None => defaults.csrf_methods,
        };
        Ok(CookieConfig {
            enabled: section.enabled.unwrap_or(defaults.enabled),
            access_cookie,
            refresh_cookie,
            csrf_access_cookie,
            csrf_refresh_cookie,
            secure,
            samesite,
            path,
            refresh_path,
            domain,
            csrf_header,
            csrf_methods,
            set_on_login: section.set_on_login.map_or(defaults.set_on_login, |w| w.0),
        })
    }

    /// Whether `name` is one of the four cookies the gateway sets (exactly:
    /// cookie names are case-sensitive).
    pub fn is_ours(&self, name: &str) -> bool {
        name == self.access_cookie
            || name == self.refresh_cookie
            || name == self.csrf_access_cookie
            || name == self.csrf_refresh_cookie
    }
}

/// An RFC 6265 cookie name: an RFC 9110 token.
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A cookie `Path`: starts with `/`, visible ASCII without `;`.
fn cookie_path(value: Option<Spanned<String>>, default: String, key: &str) -> Result<String, Invalid> {
    match value {
        Some(v)
            if !v.get_ref().starts_with('/')
                || !v.get_ref().bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',') =>
        {
            Err(Invalid::at(
                &v,
                format!("{key} must be a path starting with `/`, without `;`, `,` or spaces"),
            ))
        }
        Some(v) => Ok(v.into_inner()),
        None => Ok(default),
    }
}

/// A `Domain`: a DNS name of letters, digits, `-` and dots (a leading dot,
/// which browsers ignore, is allowed and dropped).
fn is_cookie_domain(domain: &str) -> bool {
    let domain = domain.strip_prefix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The CSRF header: a header name the gateway doesn't already read or drop
/// for another reason (a name with `_` never reaches the decision).
fn csrf_header(value: &Spanned<String>) -> Result<HeaderName, Invalid> {
    let text = value.get_ref();
    let name =
        HeaderName::from_bytes(text.as_bytes()).ok().filter(|_| !text.contains('_')).ok_or_else(|| {
            Invalid::at(
                value,
                format!("cookies.csrf_header `{text}` is not a header name (letters, digits and `-`)"),
            )
        })?;
    const TAKEN: [&str; 8] = [
        "authorization",
        "cookie",
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-request-id",
    ];
    if TAKEN.contains(&name.as_str()) {
        return Err(Invalid::at(
            value,
            format!(
                "cookies.csrf_header can't be `{text}`: the gateway reads that header for something else"
            ),
        ));
    }
    Ok(name)
}
