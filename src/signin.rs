//! The sign-in page (`[signin]`): a plain HTML form for browsers, answered by
//! the gateway itself, that signs in through the same code as `/login` and
//! leaves the tokens in the `[cookies]` cookies.
//!
//! Three things make a sign-in page dangerous, and each has one rule here:
//!
//! - **Open redirects.** The page sends the browser on to `rd` afterwards, so
//!   `rd` is a phishing tool unless it is pinned to this site:
//!   [`safe_redirect`] allows a path starting with a single `/` (checked
//!   again after one round of percent-decoding, because some servers and
//!   frameworks decode once more) or an absolute URL whose exact origin is
//!   allow-listed. Anything else quietly becomes `default_redirect`.
//! - **Login CSRF.** Another site could post its own credentials to the page
//!   and sign the victim's browser in as the attacker. The page therefore
//!   sets a random form token in a short-lived `SameSite=Strict` HttpOnly
//!   cookie and embeds the same value in the form; a post whose two copies
//!   differ is refused ([`crate::error::ApiError::SigninFormRefused`]).
//! - **Injection and framing.** Every reflected value is HTML-escaped, the
//!   page needs no script and loads nothing, and its Content-Security-Policy
//!   allows exactly its own inline style (by hash), posting only to itself,
//!   and no framing (clickjacking).
//!
//! Signing out is `{path}/out`: its `GET` only shows a button (a `GET` that
//! signed out would let any page sign the user out with an `<img>`), and the
//! button posts the access token's CSRF value, which the page embeds, to the
//! same place; that post runs `/logout`'s own code with the value as the
//! CSRF header. Scripts can keep using `POST /logout` directly.

use std::sync::OnceLock;

use base64::Engine;
use http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{CookieConfig, SigninConfig};
use crate::error::ApiError;
use crate::http_io::Reply;

/// The cookie that carries the form token between the page and its post.
pub const FORM_COOKIE: &str = "gatehouse_signin";

/// How long a served form may be posted: long enough to type a password
/// manager's answer, short enough that a stolen value soon goes stale.
const FORM_TTL_SECS: u64 = 600;

/// The page's only styling: inline, allowed by its hash in the CSP.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}\
main{max-width:22rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px #0003}\
h1{font-size:1.5rem;margin:0 0 1rem}\
label{display:block;margin:.75rem 0 .25rem;font-weight:600}\
input{box-sizing:border-box;width:100%;padding:.5rem;font-size:1rem;border:1px solid #71717a;border-radius:.25rem}\
button{margin-top:1.25rem;width:100%;padding:.6rem;font-size:1rem;border:0;border-radius:.25rem;background:#1d4ed8;color:#fff}\
[role=alert]:not(:empty){padding:.5rem;border:1px solid #b91c1c;color:#7f1d1d;background:#fef2f2;border-radius:.25rem}";

/// The page's Content-Security-Policy, with the style's hash (computed once).
fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// The `scheme://host[:port]` of an absolute `http`/`https` URL, as browsers
/// spell an origin (lower case, default port left out); `None` for anything
/// else, or a URL with a user name or password in it.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let web = matches!(parsed.scheme(), "http" | "https");
    if !web || !parsed.username().is_empty() || parsed.password().is_some() || parsed.host().is_none() {
        return None;
    }
    Some(parsed.origin().ascii_serialization())
}

/// Where a sign-in may send the browser: `rd` itself when it is a same-site
/// path or a URL on an allow-listed origin (see the module docs), else
/// `None` (the caller uses `default_redirect`). The value returned is safe
/// to put in a `Location` header as it is.
pub fn safe_redirect(rd: &str, allowlist: &[String]) -> Option<String> {
    // Printable ASCII only: no spaces, controls or anything a parser might
    // trim or fold; and no backslash, which browsers read as `/`.
    if rd.is_empty() || !rd.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return None;
    }
    if rd.starts_with('/') {
        let decoded = percent_encoding::percent_decode_str(rd).decode_utf8_lossy();
        return [rd, &decoded].iter().all(|p| is_local_path(p)).then(|| rd.to_owned());
    }
    let origin = origin_of(rd)?;
    allowlist.contains(&origin).then(|| url::Url::parse(rd).ok().map(String::from)).flatten()
}

/// A path on this site: one leading `/` (`//host` is another site), no
/// backslash (`/\host` is too, to a browser), no control characters.
fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
}

/// Text made safe for HTML content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What a posted sign-in form carried.
#[derive(Debug, Default)]
pub struct SigninForm {
    pub email: String,
    pub password: String,
    pub rd: String,
    pub form_token: String,
    /// The sign-out form's CSRF value (the access token's `csrf` claim).
    pub csrf: String,
}

impl SigninForm {
    /// Reads an `application/x-www-form-urlencoded` body (the first of each
    /// field; unknown fields are ignored, as browsers may add the button's).
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<SigninForm, ApiError> {
        let form_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        });
        if !form_type {
            return Err(ApiError::InvalidRequest(
                "the sign-in form is posted as application/x-www-form-urlencoded".into(),
            ));
        }
        let mut form = SigninForm::default();
        let mut seen = [false; 5];
        for (name, value) in form_urlencoded::parse(body) {
            let (slot, field) = match name.as_ref() {
                "email" => (0, &mut form.email),
                "password" => (1, &mut form.password),
                "rd" => (2, &mut form.rd),
                "form_token" => (3, &mut form.form_token),
                "csrf" => (4, &mut form.csrf),
                _ => continue,
            };
            if !seen[slot] {
                seen[slot] = true;
                *field = value.into_owned();
            }
        }
        Ok(form)
    }
}

/// The page and its rules, built once from `[signin]` and `[cookies]`.
#[derive(Debug, Clone)]
pub struct SigninPage {
    config: SigninConfig,
    /// `Secure` on the form cookie, as on the token cookies.
    secure: bool,
}

impl SigninPage {
    pub fn new(config: SigninConfig, cookies: &CookieConfig) -> Self {
        SigninPage { config, secure: cookies.secure }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// Where the sign-out page is: `{path}/out`.
    pub fn signout_path(&self) -> String {
        format!("{}/out", self.config.path)
    }

    /// `GET {path}/out` when signed in: a button that posts `csrf` back.
    pub fn signout_page(&self, csrf: &str, error: Option<&ApiError>) -> Reply {
        let main = format!(
            "<h1>Sign out</h1>\n<div id=\"signin-error\" role=\"alert\">{error}</div>\n\
             <form method=\"post\" action=\"{action}\">\n\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
             <button type=\"submit\">Sign out</button>\n</form>\n",
            error = escape_html(&error.map(ApiError::message).unwrap_or_default()),
            action = escape_html(&self.signout_path()),
            csrf = escape_html(csrf),
        );
        let status = error.map_or(StatusCode::OK, ApiError::status);
        let mut reply = Reply {
            status,
            body: document("Sign out", &main).into_bytes(),
            headers: page_headers(),
            error_code: None,
        };
        reply.error_code = error.map(ApiError::kind);
        reply
    }

    /// After signing out (or when not signed in): 303 to the sign-in page,
    /// with `cookie_lines` (the cleared token cookies).
    pub fn to_signin(&self, cookie_lines: Vec<String>) -> Reply {
        let mut headers =
            vec![(LOCATION, self.config.path.clone()), (CONTENT_TYPE, "text/html; charset=utf-8".to_owned())];
        headers.extend(cookie_lines.into_iter().map(|line| (SET_COOKIE, line)));
        Reply { status: StatusCode::SEE_OTHER, body: Vec::new(), headers, error_code: None }
    }

    /// `rd` if it may be followed, else `default_redirect`.
    pub fn redirect_target(&self, rd: &str) -> String {
        safe_redirect(rd, &self.config.redirect_allowlist)
            .unwrap_or_else(|| self.config.default_redirect.clone())
    }

    /// `GET {path}?rd=...`: the empty form.
    pub fn serve(&self, query: Option<&str>) -> Reply {
        let rd = query
            .into_iter()
            .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
            .find(|(name, _)| name == "rd")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        self.render(StatusCode::OK, &self.redirect_target(&rd), "", None)
    }

    /// Whether the posted form token is the one in the form cookie: both
    /// present, one cookie value only, equal (in constant time).
    pub fn form_token_matches(&self, headers: &HeaderMap, posted: &str) -> bool {
        let mut values = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == FORM_COOKIE)
            .map(|(_, value)| value.trim_matches('"'));
        let (Some(cookie), None) = (values.next(), values.next()) else { return false };
        !posted.is_empty()
            && cookie.len() == posted.len()
            && bool::from(cookie.as_bytes().ct_eq(posted.as_bytes()))
    }

    /// A successful sign-in: 303 See Other to `target`, with the token
    /// cookies (`cookie_lines`) set and the form cookie cleared.
    pub fn signed_in(&self, target: &str, cookie_lines: Vec<String>) -> Reply {
        let mut headers = vec![(LOCATION, target.to_owned()), (SET_COOKIE, self.form_cookie(None))];
        headers.extend(cookie_lines.into_iter().map(|line| (SET_COOKIE, line)));
        headers.push((CONTENT_TYPE, "text/html; charset=utf-8".to_owned()));
        let body =
            format!("<!doctype html><title>Signed in</title><a href=\"{0}\">{0}</a>\n", escape_html(target));
        Reply { status: StatusCode::SEE_OTHER, body: body.into_bytes(), headers, error_code: None }
    }

    /// The form again after a refused post: the error's status and sentence
    /// (from [`ApiError`], the one mapping), the email kept, the password not.
    pub fn refused(&self, error: &ApiError, form: &SigninForm) -> Reply {
        let target = self.redirect_target(&form.rd);
        let mut reply = self.render(error.status(), &target, &form.email, Some(&error.message()));
        if let Some(seconds) = error.retry_after() {
            reply.headers.push((http::header::RETRY_AFTER, seconds.to_string()));
        }
        reply.error_code = Some(error.kind());
        reply
    }

    fn render(&self, status: StatusCode, rd: &str, email: &str, error: Option<&str>) -> Reply {
        let token = crate::cookies::new_csrf_value();
        let title = escape_html(&self.config.title);
        let main = format!(
            "<h1>{title}</h1>\n<div id=\"signin-error\" role=\"alert\">{error}</div>\n\
             <form method=\"post\" action=\"{action}\">\n\
             <input type=\"hidden\" name=\"form_token\" value=\"{token}\">\n\
             <input type=\"hidden\" name=\"rd\" value=\"{rd}\">\n\
             <label for=\"email\">Email</label>\n\
             <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\">\n\
             <label for=\"password\">Password</label>\n\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n\
             <button type=\"submit\">Sign in</button>\n</form>\n",
            error = escape_html(error.unwrap_or("")),
            action = escape_html(&self.config.path),
            rd = escape_html(rd),
            email = escape_html(email),
        );
        let mut headers = page_headers();
        headers.push((SET_COOKIE, self.form_cookie(Some(&token))));
        Reply { status, body: document(&self.config.title, &main).into_bytes(), headers, error_code: None }
    }

    /// The form cookie: only sent back to the page itself, and only from it.
    fn form_cookie(&self, token: Option<&str>) -> String {
        let (value, max_age) = token.map_or(("", 0), |t| (t, FORM_TTL_SECS));
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{FORM_COOKIE}={value}; Max-Age={max_age}; Path={}{secure}; HttpOnly; SameSite=Strict",
            self.config.path
        )
    }
}

/// A whole page around the (already escaped) contents of its `<main>`.
fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{main}</main>\n</body>\n</html>\n",
        title = escape_html(title),
    )
}

/// The headers of every page: HTML, its CSP, and no framing, sniffing or
/// referrer (the `rd` in the address is nobody else's business).
/// `Cache-Control: no-store` is written with every gateway answer.
fn page_headers() -> Vec<(HeaderName, String)> {
    vec![
        (CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
        (http::header::CONTENT_SECURITY_POLICY, content_security_policy().to_owned()),
        (http::header::X_FRAME_OPTIONS, "DENY".to_owned()),
        (http::header::REFERRER_POLICY, "no-referrer".to_owned()),
        (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ]
}

/// The `Location` that sends a browser from a protected page to sign in:
/// `{path}?rd=` and the page's own path and query, percent-encoded.
pub fn signin_location(signin_path: &str, origin_form: &str) -> String {
    let rd: String = form_urlencoded::byte_serialize(origin_form.as_bytes()).collect();
    format!("{signin_path}?rd={rd}")
}

/// Whether a request is a browser navigation that would rather see a page:
/// `GET`/`HEAD` with `text/html` in `Accept`.
pub fn wants_html(method: &http::Method, headers: &HeaderMap) -> bool {
    (*method == http::Method::GET || *method == http::Method::HEAD)
        && headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Vec<String> {
        vec!["https://app.example.com".to_owned(), "http://localhost:3000".to_owned()]
    }

    #[test]
    fn open_redirects_are_refused() {
        for bad in [
            "//evil",
            "https:evil",
            "https://evil.com",
            "/\\evil",
            "\\\\evil",
            "/%2F%2Fevil.com",
            "%2F%2Fevil",
            "/%5Cevil",
            "/%2fevil",
            "javascript:alert(1)",
            " /x",
            "/x\t",
            "/%09/evil",
            "",
            "https://app.example.com.evil.com/",
            "https://user@app.example.com/",
            "https://app.example.com:8443/",
            "http://app.example.com/",
            "http://localhost:3001/",
            "https://localhost:3000/",
            "/é",
        ] {
            assert_eq!(safe_redirect(bad, &allow()), None, "{bad:?}");
        }
    }

    #[test]
    fn own_paths_and_allow_listed_origins_are_followed() {
        for good in ["/", "/ok?x=1", "/a/b#frag", "/a%20b", "/..//x"] {
            assert_eq!(safe_redirect(good, &allow()).as_deref(), Some(good), "{good:?}");
        }
        assert_eq!(
            safe_redirect("https://app.example.com/home?x=1", &allow()).as_deref(),
            Some("https://app.example.com/home?x=1")
        );
        assert_eq!(
            safe_redirect("https://APP.example.com:443", &allow()).as_deref(),
            Some("https://app.example.com/")
        );
        assert_eq!(
            safe_redirect("http://localhost:3000/x", &allow()).as_deref(),
            Some("http://localhost:3000/x")
        );
        assert_eq!(safe_redirect("https://app.example.com/", &[]), None, "nothing allow-listed");
    }

    #[test]
    fn origins_are_spelled_as_browsers_do() {
        assert_eq!(origin_of("https://App.Example.com:443/x").as_deref(), Some("https://app.example.com"));
        assert_eq!(origin_of("http://localhost:3000").as_deref(), Some("http://localhost:3000"));
        assert_eq!(origin_of("ftp://example.com"), None);
        assert_eq!(origin_of("https://u:p@example.com"), None);
        assert_eq!(origin_of("/relative"), None);
    }

    #[test]
    fn reflected_text_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = SigninPage::new(
            SigninConfig { enabled: true, ..SigninConfig::default() },
            &CookieConfig::defaults("/refresh"),
        );
        let reply = page.serve(Some("rd=%2F%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E"));
        let html = String::from_utf8(reply.body).unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("value=\"/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""), "{html}");
    }

    #[test]
    fn the_csp_allows_exactly_the_page_style() {
        let csp = content_security_policy();
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
        assert!(csp.starts_with("default-src 'none';"));
    }

    #[test]
    fn the_form_token_must_match_its_one_cookie() {
        let page = SigninPage::new(SigninConfig::default(), &CookieConfig::defaults("/refresh"));
        let with = |cookies: &[&str]| {
            let mut map = HeaderMap::new();
            for c in cookies {
                map.append(http::header::COOKIE, c.parse().unwrap());
            }
            map
        };
        assert!(page.form_token_matches(&with(&["a=1; gatehouse_signin=abc"]), "abc"));
        assert!(!page.form_token_matches(&with(&["gatehouse_signin=abc"]), "abd"));
        assert!(!page.form_token_matches(&with(&["gatehouse_signin=abc"]), ""));
        assert!(!page.form_token_matches(&with(&[]), "abc"));
        assert!(!page.form_token_matches(&with(&["gatehouse_signin="]), ""));
        assert!(!page.form_token_matches(&with(&["gatehouse_signin=abc", "gatehouse_signin=abc"]), "abc"));
    }

    #[test]
    fn the_signin_location_carries_the_page_encoded() {
        assert_eq!(signin_location("/signin", "/app/x?a=1&b=2"), "/signin?rd=%2Fapp%2Fx%3Fa%3D1%26b%3D2");
    }
}
