//! Tokens in cookies, for browsers: reading the gateway's cookies out of a
//! request, stripping them before the upstream, and writing `Set-Cookie`.
//!
//! Why the cookies are taken out of the request rather than merely read: the
//! upstream should see the request the gateway judged, with the identity the
//! gateway decided in its headers, and never the credentials themselves (an
//! upstream that logs cookies would log bearer tokens). So when the request is
//! made canonical, the gateway's four cookies and the CSRF header move from
//! the headers into [`Credentials`], which the decision reads; the other
//! cookies stay byte for byte.
//!
//! Double-submit CSRF as Flask-JWT-Extended does it: each token set as a
//! cookie carries a random `csrf` claim, and the same value goes into a
//! cookie the page's scripts can read (not HttpOnly). A cookie-authenticated
//! request with a state-changing method must send that value in the CSRF
//! header; another site can make the browser send the cookies, but can't read
//! them to fill in the header. The value is checked against the token's claim,
//! never against the CSRF cookie, so a CSRF cookie planted by a sibling
//! subdomain matches nothing.
//!
//! Cookie names are case-sensitive (RFC 6265): only the exact configured
//! names are the gateway's.

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::config::CookieConfig;

/// One `name=value` pair of a `Cookie` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The name, without surrounding spaces; empty for a pair without `=`.
    pub name: &'a [u8],
    /// The value, without surrounding spaces or one pair of double quotes.
    pub value: &'a [u8],
    /// The pair exactly as sent, without the spaces around it.
    pub raw: &'a [u8],
}

/// The pairs of one `Cookie` field, split on `;` as browsers and servers do
/// (RFC 6265 section 5.4; a pair without `=` is a value with an empty name).
pub fn pairs(field: &[u8]) -> impl Iterator<Item = Pair<'_>> {
    field.split(|&b| b == b';').map(trim).filter(|raw| !raw.is_empty()).map(|raw| {
        match raw.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let value = trim(&raw[eq + 1..]);
                let value = match value {
                    [b'"', inner @ .., b'"'] => inner,
                    other => other,
                };
                Pair { name: trim(&raw[..eq]), value, raw }
            }
            None => Pair { name: b"", value: raw, raw },
        }
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A gateway cookie as the request carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sent {
    #[default]
    Absent,
    One(String),
    /// Sent more than once with different values (a cookie planted for a
    /// parent domain or a longer path beside the real one): which is the
    /// caller's? The request is refused rather than guessed at.
    Conflicting,
}

impl Sent {
    fn add(&mut self, value: &[u8]) {
        let value = String::from_utf8_lossy(value);
        *self = match std::mem::take(self) {
            Sent::Absent => Sent::One(value.into_owned()),
            Sent::One(first) if first == value => Sent::One(first),
            _ => Sent::Conflicting,
        };
    }

    pub fn is_absent(&self) -> bool {
        *self == Sent::Absent
    }
}

/// The credentials a request carries besides `Authorization`, taken out of
/// its headers when it was made canonical. Empty when cookies are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub access: Sent,
    pub refresh: Sent,
    /// The CSRF header's value; `None` when it was not sent, or sent twice.
    pub csrf: Option<String>,
}

/// What [`take_credentials`] found, for the caller to apply to the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookiePlan {
    pub credentials: Credentials,
    /// The gateway's cookies were present: replace every `Cookie` field with
    /// this one (`None`: no other cookie was sent, so remove them all).
    pub rewrite: Option<Option<HeaderValue>>,
    /// The CSRF header was sent: remove it.
    pub remove_csrf_header: bool,
}

/// Takes the gateway's cookies and the CSRF header out of `headers` (with
/// cookies on). Several `Cookie` fields (HTTP/1.1 clients may send them) are
/// read alike, and what remains of them is joined into one with `; `, as
/// HTTP/2 does.
pub fn take_credentials(config: &CookieConfig, headers: &HeaderMap) -> CookiePlan {
    let mut plan = CookiePlan::default();
    if !config.enabled {
        return plan;
    }
    let mut kept: Vec<u8> = Vec::new();
    let mut ours = false;
    for field in headers.get_all(COOKIE) {
        for pair in pairs(field.as_bytes()) {
            let name = std::str::from_utf8(pair.name).unwrap_or("");
            if !config.is_ours(name) {
                if looks_like_ours(config, pair.raw) {
                    // Not ours to read, but a lenient backend would read it
                    // as ours: it never goes upstream.
                    ours = true;
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair.raw);
                continue;
            }
            ours = true;
            if name == config.access_cookie {
                plan.credentials.access.add(pair.value);
            } else if name == config.refresh_cookie {
                plan.credentials.refresh.add(pair.value);
            }
            // The CSRF cookies are only for the page's scripts: the header is
            // checked against the token's claim, never against them.
        }
    }
    if ours {
        // Every byte came from valid field values, joined with "; ".
        plan.rewrite = Some((!kept.is_empty()).then(|| HeaderValue::from_bytes(&kept).ok()).flatten());
    }
    let mut csrf = headers.get_all(&config.csrf_header).iter();
    if let Some(first) = csrf.next() {
        plan.remove_csrf_header = true;
        if csrf.next().is_none() {
            plan.credentials.csrf = first.to_str().ok().map(|v| v.trim().to_owned());
        }
    }
    plan
}

/// Whether a backend that reads cookie names leniently could take this pair
/// (or, split at commas as old parsers do, a part of it) for one of the
/// gateway's cookies: PHP percent-decodes names and reads ` `, `.` and `[` as
/// `_`; ASP.NET compares names ignoring case; Tomcat's legacy parser splits
/// on `,`.
fn looks_like_ours(config: &CookieConfig, raw: &[u8]) -> bool {
    let ours = [
        &config.access_cookie,
        &config.refresh_cookie,
        &config.csrf_access_cookie,
        &config.csrf_refresh_cookie,
    ]
    .map(|name| lenient_name(name.as_bytes()));
    raw.split(|&b| b == b',').any(|part| {
        let name = part.iter().position(|&b| b == b'=').map_or(part, |eq| &part[..eq]);
        let name = lenient_name(trim(name));
        !name.is_empty() && ours.contains(&name)
    })
}

/// A cookie name as the most lenient backends read it.
fn lenient_name(name: &[u8]) -> Vec<u8> {
    let decoded: Vec<u8> = percent_encoding::percent_decode(name).collect();
    decoded
        .iter()
        .map(|&b| match b {
            b' ' | b'.' | b'[' => b'_',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// A fresh double-submit value: 128 random bits, hex.
pub fn new_csrf_value() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Which of the gateway's cookies a `Set-Cookie` line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Access,
    Refresh,
    CsrfAccess,
    CsrfRefresh,
}

/// A `Set-Cookie` value: `value` for `max_age` seconds, or cleared
/// (`Max-Age=0`) when `value` is `None`. The token cookies are HttpOnly; the
/// CSRF cookies can't be, since the page's scripts read them.
pub fn set_cookie(config: &CookieConfig, which: Which, value: Option<&str>, max_age: u64) -> String {
    let (name, path, http_only) = match which {
        Which::Access => (&config.access_cookie, &config.path, true),
        Which::Refresh => (&config.refresh_cookie, &config.refresh_path, true),
        Which::CsrfAccess => (&config.csrf_access_cookie, &config.path, false),
        Which::CsrfRefresh => (&config.csrf_refresh_cookie, &config.path, false),
    };
    let max_age = if value.is_some() { max_age } else { 0 };
    let mut line = format!("{name}={}; Max-Age={max_age}; Path={path}", value.unwrap_or(""));
    if let Some(domain) = &config.domain {
        line.push_str("; Domain=");
        line.push_str(domain);
    }
    if config.secure {
        line.push_str("; Secure");
    }
    if http_only {
        line.push_str("; HttpOnly");
    }
    line.push_str("; SameSite=");
    line.push_str(config.samesite.as_str());
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;

    fn config() -> CookieConfig {
        CookieConfig { enabled: true, ..CookieConfig::defaults("/refresh") }
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for c in cookies {
            map.append(COOKIE, HeaderValue::from_bytes(c.as_bytes()).unwrap());
        }
        map
    }

    fn kept(plan: &CookiePlan) -> Option<String> {
        plan.rewrite
            .clone()
            .map(|v| v.map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap()).unwrap_or_default())
    }

    #[test]
    fn pairs_are_split_and_trimmed_with_quotes_removed_from_values() {
        let all: Vec<_> = pairs(b" a=1;b = \"two words\" ;;  flag ; c=x=y;d=\"").collect();
        let names: Vec<&[u8]> = all.iter().map(|p| p.name).collect();
        let values: Vec<&[u8]> = all.iter().map(|p| p.value).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"", b"c", b"d"]);
        assert_eq!(values, [&b"1"[..], b"two words", b"flag", b"x=y", b"\""]);
        assert_eq!(all[1].raw, b"b = \"two words\"");
    }

    #[test]
    fn ours_are_taken_out_and_the_rest_kept_byte_for_byte() {
        let plan = take_credentials(
            &config(),
            &headers(&[
                "theme=\"dark mode\";  access_token_cookie=tok.en.1; csrf_access_token=abc ;lang=en-GB",
            ]),
        );
        assert_eq!(plan.credentials.access, Sent::One("tok.en.1".into()));
        assert_eq!(plan.credentials.refresh, Sent::Absent);
        assert_eq!(kept(&plan).as_deref(), Some("theme=\"dark mode\"; lang=en-GB"));

        // Only ours: the header goes.
        let plan =
            take_credentials(&config(), &headers(&["access_token_cookie=\"t\"; csrf_refresh_token=x"]));
        assert_eq!(plan.credentials.access, Sent::One("t".into()), "quotes are not part of the value");
        assert_eq!(plan.rewrite, Some(None));

        // None of ours: the request is left alone, however it is spelled.
        let plan = take_credentials(&config(), &headers(&["a=1;b=2", "c=3"]));
        assert_eq!(plan, CookiePlan::default());
    }

    #[test]
    fn names_are_case_sensitive_and_exact() {
        let plan = take_credentials(&config(), &headers(&["access_token_cookie2=c; theme=dark"]));
        assert_eq!(plan.credentials, Credentials::default());
        assert_eq!(plan.rewrite, None, "nothing of ours, nothing changed");
    }

    /// Names only a lenient backend reads as ours are not credentials here,
    /// and never reach the upstream either.
    #[test]
    fn look_alikes_of_our_names_are_dropped_not_read() {
        let look_alikes = [
            "Access_Token_Cookie=a",
            "ACCESS_TOKEN_COOKIE=b",
            "access.token.cookie=c",
            "access%5Ftoken_cookie=d",
            "access[token_cookie=e",
            "access token_cookie=f",
            "Csrf_Access_Token=g",
            "theme=dark,access_token_cookie=h",
        ];
        for look_alike in look_alikes {
            let plan = take_credentials(&config(), &headers(&[&format!("a=1; {look_alike}; b=2")]));
            assert_eq!(plan.credentials, Credentials::default(), "{look_alike}");
            assert_eq!(kept(&plan).as_deref(), Some("a=1; b=2"), "{look_alike}");
        }
    }

    #[test]
    fn several_cookie_fields_are_read_alike_and_joined() {
        let plan = take_credentials(
            &config(),
            &headers(&["a=1; access_token_cookie=t", "refresh_token_cookie=r; b=2", "csrf_access_token=z"]),
        );
        assert_eq!(plan.credentials.access, Sent::One("t".into()));
        assert_eq!(plan.credentials.refresh, Sent::One("r".into()));
        assert_eq!(kept(&plan).as_deref(), Some("a=1; b=2"));
    }

    #[test]
    fn duplicate_names_agree_or_conflict() {
        let same =
            take_credentials(&config(), &headers(&["access_token_cookie=t; access_token_cookie=\"t\""]));
        assert_eq!(same.credentials.access, Sent::One("t".into()));
        let differ =
            take_credentials(&config(), &headers(&["access_token_cookie=t", "access_token_cookie=u"]));
        assert_eq!(differ.credentials.access, Sent::Conflicting);
        let thrice = take_credentials(
            &config(),
            &headers(&["access_token_cookie=t;access_token_cookie=u;access_token_cookie=t"]),
        );
        assert_eq!(thrice.credentials.access, Sent::Conflicting);
    }

    #[test]
    fn the_csrf_header_is_taken_once() {
        let mut map = headers(&[]);
        map.append("x-csrf-token", HeaderValue::from_static(" abc "));
        let plan = take_credentials(&config(), &map);
        assert_eq!((plan.credentials.csrf.as_deref(), plan.remove_csrf_header), (Some("abc"), true));
        map.append("X-CSRF-Token", HeaderValue::from_static("abc"));
        let plan = take_credentials(&config(), &map);
        assert_eq!((plan.credentials.csrf, plan.remove_csrf_header), (None, true));
    }

    #[test]
    fn with_cookies_off_nothing_is_read_or_changed() {
        let mut map = headers(&["access_token_cookie=t"]);
        map.append("x-csrf-token", HeaderValue::from_static("abc"));
        let plan = take_credentials(&CookieConfig::defaults("/refresh"), &map);
        assert_eq!(plan, CookiePlan::default());
    }

    #[test]
    fn set_cookie_lines_carry_every_attribute() {
        let mut c = config();
        assert_eq!(
            set_cookie(&c, Which::Access, Some("t"), 900),
            "access_token_cookie=t; Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie(&c, Which::Refresh, Some("r"), 60),
            "refresh_token_cookie=r; Max-Age=60; Path=/refresh; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie(&c, Which::CsrfRefresh, Some("x"), 60),
            "csrf_refresh_token=x; Max-Age=60; Path=/; Secure; SameSite=Lax"
        );
        c.secure = false;
        c.samesite = SameSite::Strict;
        c.domain = Some("example.com".into());
        assert_eq!(
            set_cookie(&c, Which::CsrfAccess, None, 900),
            "csrf_access_token=; Max-Age=0; Path=/; Domain=example.com; SameSite=Strict"
        );
    }
}
