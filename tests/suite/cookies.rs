//! Tokens in cookies for browsers (`[cookies]`), through the running gateway:
//! the exact `Set-Cookie` lines of a login, a cookie authenticating a request
//! whose upstream sees the identity but never the gateway's cookies or the
//! CSRF header (the other cookies byte for byte), the double-submit CSRF rule
//! on state-changing methods (a cross-site form post included, refused before
//! anything reaches the upstream), two different tokens refused, refresh and
//! logout by cookie, and cookies ignored while the section is off.

use base64::Engine;
use reqwest::blocking::RequestBuilder;
use reqwest::header::SET_COOKIE;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{Gateway, Options, Upstream, ADMIN_EMAIL, ADMIN_PASSWORD};

fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(|c| c.cookies.enabled = Some(true)));
    (upstream, gw)
}

/// An answer: status, JSON body, `Set-Cookie` lines.
struct Answer {
    status: u16,
    body: Value,
    set_cookies: Vec<String>,
}

impl Answer {
    fn error(&self) -> (u16, &str) {
        (self.status, self.body["error"].as_str().unwrap_or("-"))
    }
}

fn send(request: RequestBuilder) -> Answer {
    let resp = request.send().unwrap();
    let status = resp.status().as_u16();
    let set_cookies =
        resp.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let text = resp.text().unwrap();
    Answer { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), set_cookies }
}

/// The gateway's four cookies, as a login or refresh set them.
struct Jar {
    access: String,
    refresh: String,
    csrf_access: String,
    csrf_refresh: String,
}

impl Jar {
    fn from(answer: &Answer) -> Jar {
        let value = |name: &str| {
            let line = answer
                .set_cookies
                .iter()
                .find(|l| l.starts_with(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {:?}", answer.set_cookies));
            line[name.len() + 1..line.find(';').unwrap()].to_owned()
        };
        Jar {
            access: value("access_token_cookie"),
            refresh: value("refresh_token_cookie"),
            csrf_access: value("csrf_access_token"),
            csrf_refresh: value("csrf_refresh_token"),
        }
    }

    /// What a browser sends to every path: the access cookie and both CSRF cookies.
    fn everywhere(&self) -> String {
        format!(
            "access_token_cookie={}; csrf_access_token={}; csrf_refresh_token={}",
            self.access, self.csrf_access, self.csrf_refresh
        )
    }

    /// What a browser sends to the refresh path: everything.
    fn at_refresh(&self) -> String {
        format!("{}; refresh_token_cookie={}", self.everywhere(), self.refresh)
    }
}

fn login_with_cookies(gw: &Gateway, email: &str, password: &str) -> (Answer, Jar) {
    let answer = send(gw.http.post(gw.url("/login")).json(&json!({
        "email": email, "password": password, "set_cookies": true
    })));
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, gw.log());
    let jar = Jar::from(&answer);
    (answer, jar)
}

/// The claims of a token, without checking it (the gateway checked it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

fn echo(gw: &Gateway, method: Method, path: &str) -> RequestBuilder {
    gw.http.request(method, gw.url(path))
}

#[test]
fn login_sets_httponly_token_cookies_and_readable_csrf_cookies() {
    let (_upstream, gw) = start();
    let (answer, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let access_age = 15 * 60;
    let refresh_age = 30 * 86400;
    assert_eq!(
        answer.set_cookies,
        [
            format!("access_token_cookie={}; Max-Age={access_age}; Path=/; Secure; HttpOnly; SameSite=Lax", jar.access),
            format!("csrf_access_token={}; Max-Age={access_age}; Path=/; Secure; SameSite=Lax", jar.csrf_access),
            format!(
                "refresh_token_cookie={}; Max-Age={refresh_age}; Path=/refresh; Secure; HttpOnly; SameSite=Lax",
                jar.refresh
            ),
            format!("csrf_refresh_token={}; Max-Age={refresh_age}; Path=/; Secure; SameSite=Lax", jar.csrf_refresh),
        ]
    );
    // The body carries no token: HttpOnly would be for nothing.
    assert!(
        answer.body.get("access_token").is_none() && answer.body.get("refresh_token").is_none(),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["token_type"], "Cookie");
    assert_eq!(answer.body["expires_in"], access_age);
    assert_eq!(answer.body["csrf_access_token"], jar.csrf_access.as_str());
    // Each token is bound to its own CSRF value, and lives as long as its cookie.
    let (access, refresh) = (claims(&jar.access), claims(&jar.refresh));
    assert_eq!(access["csrf"], jar.csrf_access.as_str());
    assert_eq!(refresh["csrf"], jar.csrf_refresh.as_str());
    assert_ne!(jar.csrf_access, jar.csrf_refresh);
    assert_eq!(access["exp"].as_u64().unwrap() - access["iat"].as_u64().unwrap(), access_age);
    assert_eq!(access["fresh"], true);

    // Not asked (`set_on_login = "when_asked"`): the tokens in the body, no csrf claim, no cookie.
    let plain =
        send(gw.http.post(gw.url("/login")).json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})));
    assert_eq!(plain.status, 200);
    assert!(plain.set_cookies.is_empty(), "{:?}", plain.set_cookies);
    assert!(claims(plain.body["access_token"].as_str().unwrap()).get("csrf").is_none());
}

#[test]
fn a_cookie_authenticates_and_the_upstream_never_sees_the_gateways_cookies() {
    let (_upstream, gw) = start();
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    // Two Cookie fields (HTTP/1.1 clients may send them), odd spacing and
    // quoting in the others, and look-alike names that are not ours.
    let answer = send(
        echo(&gw, Method::GET, "/debug/echo/any/page")
            .header("cookie", format!("theme=\"dark mode\";  {};lang=en-GB", jar.everywhere()))
            .header("cookie", format!("Access_Token_Cookie=x; refresh_token_cookie={}; z=1", jar.refresh))
            .header("x-csrf-token", &jar.csrf_access),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let headers = &answer.body["headers"];
    assert_eq!(headers["x-auth-email"], json!([ADMIN_EMAIL]));
    assert_eq!(headers["x-auth-token-id"], json!([claims(&jar.access)["jti"]]));
    // `Access_Token_Cookie` is not ours, but ASP.NET would read it as ours: dropped too.
    assert_eq!(headers["cookie"], json!(["theme=\"dark mode\"; lang=en-GB; z=1"]));
    assert!(headers.get("x-csrf-token").is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");

    // Only the gateway's cookies: no Cookie header at all.
    let answer = send(echo(&gw, Method::GET, "/debug/echo/any/only").header("cookie", jar.everywhere()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["headers"].get("cookie").is_none(), "{}", answer.body);

    // A public route's upstream doesn't get them either.
    let answer = send(
        echo(&gw, Method::GET, "/debug/echo/public/x").header("cookie", format!("a=1; {}", jar.everywhere())),
    );
    assert_eq!(answer.body["headers"]["cookie"], json!(["a=1"]));
}

#[test]
fn state_changing_cookie_requests_need_the_csrf_header() {
    let (upstream, gw) = start();
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let post = |path: &str| echo(&gw, Method::POST, path).header("cookie", jar.everywhere()).json(&json!({}));

    let missing = send(post("/debug/echo/any/no-csrf"));
    assert_eq!(missing.error(), (403, "csrf_failed"), "{}", missing.body);
    let message = missing.body["message"].as_str().unwrap();
    assert!(message.contains("CSRF header") && !message.contains(&jar.csrf_access), "{message}");
    let wrong = send(post("/debug/echo/any/wrong-csrf").header("x-csrf-token", "0".repeat(32)));
    assert_eq!(wrong.error(), (403, "csrf_failed"));
    // The refresh token's value is not the access token's.
    let other = send(post("/debug/echo/any/other-csrf").header("x-csrf-token", &jar.csrf_refresh));
    assert_eq!(other.error(), (403, "csrf_failed"));
    // A cross-site form post: the browser sends the cookies, nobody can add the header.
    let form = send(
        echo(&gw, Method::POST, "/debug/echo/any/form")
            .header("cookie", jar.everywhere())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("amount=1000&to=mallory"),
    );
    assert_eq!(form.error(), (403, "csrf_failed"));
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let answer =
            send(echo(&gw, method.clone(), "/debug/echo/any/verbs").header("cookie", jar.everywhere()));
        assert_eq!(answer.error(), (403, "csrf_failed"), "{method}");
    }
    let seen = upstream.seen();
    assert!(
        !seen.iter().any(|l| l.contains("csrf") || l.contains("/form") || l.contains("/verbs")),
        "refused requests reached the upstream: {seen:?}"
    );

    let right = send(post("/debug/echo/any/right-csrf").header("x-csrf-token", &jar.csrf_access));
    assert_eq!(right.status, 200, "{}", right.body);
    assert!(right.body["headers"].get("x-csrf-token").is_none(), "{}", right.body);
    assert!(upstream.saw("POST /debug/echo/any/right-csrf"));

    // A bearer header is not sent by the browser on its own: no CSRF rule.
    let (access, _) = gw.admin_login();
    let (status, body) = gw.post("/debug/echo/any/bearer", Some(&access), json!({}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn two_different_tokens_are_refused_and_the_same_one_twice_is_not() {
    let (upstream, gw) = start();
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let (other, _) = gw.admin_login();
    let both = send(
        echo(&gw, Method::GET, "/debug/echo/any/both").bearer_auth(&other).header("cookie", jar.everywhere()),
    );
    assert_eq!(both.error(), (400, "conflicting_credentials"), "{}", both.body);
    let twice = send(
        echo(&gw, Method::GET, "/debug/echo/any/twice")
            .header("cookie", format!("access_token_cookie={}; access_token_cookie={other}", jar.access)),
    );
    assert_eq!(twice.error(), (400, "conflicting_credentials"));
    assert!(!upstream.saw("/both") && !upstream.saw("/twice"));

    let same = send(
        echo(&gw, Method::GET, "/debug/echo/any/same")
            .bearer_auth(&jar.access)
            .header("cookie", jar.everywhere()),
    );
    assert_eq!(same.status, 200, "{}", same.body);
    // An invalid cookie on an optional route is refused, not taken for no token.
    let bad = send(
        echo(&gw, Method::GET, "/debug/echo/optional/bad")
            .header("cookie", "access_token_cookie=not.a.token"),
    );
    assert_eq!(bad.error(), (401, "invalid_token"));
    let none = send(echo(&gw, Method::GET, "/debug/echo/optional/none").header("cookie", "a=1"));
    assert_eq!(none.status, 200);
}

#[test]
fn refresh_by_cookie_is_csrf_checked_rotates_and_sets_new_cookies() {
    let (_upstream, gw) = start();
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let refresh = |cookies: &str, csrf: Option<&str>| {
        let mut request = gw.http.post(gw.url("/refresh")).header("cookie", cookies);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        send(request)
    };
    assert_eq!(refresh(&jar.at_refresh(), None).error(), (403, "csrf_failed"));
    assert_eq!(refresh(&jar.at_refresh(), Some(&jar.csrf_access)).error(), (403, "csrf_failed"));
    // No refresh cookie (its path is /refresh) and no header: nothing to refresh with.
    assert_eq!(refresh(&jar.everywhere(), Some(&jar.csrf_refresh)).error(), (401, "missing_token"));

    let answer = refresh(&jar.at_refresh(), Some(&jar.csrf_refresh));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.set_cookies.len(), 4, "{:?}", answer.set_cookies);
    let next = Jar::from(&answer);
    assert_ne!(next.refresh, jar.refresh);
    assert_ne!(next.csrf_refresh, jar.csrf_refresh);
    assert_eq!(claims(&next.access)["fresh"], false);
    assert_eq!(claims(&next.access)["csrf"], next.csrf_access.as_str());
    let ok = send(
        echo(&gw, Method::POST, "/debug/echo/any/after-refresh")
            .header("cookie", next.everywhere())
            .header("x-csrf-token", &next.csrf_access),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);

    // The new refresh cookie works once more; the old one is a replay.
    let again = refresh(&next.at_refresh(), Some(&next.csrf_refresh));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(refresh(&jar.at_refresh(), Some(&jar.csrf_refresh)).error(), (401, "refresh_token_reused"));
}

#[test]
fn logout_by_cookie_clears_the_cookies_and_revokes_the_token() {
    let (_upstream, gw) = start();
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let logout = |csrf: Option<&str>| {
        let mut request = gw.http.post(gw.url("/logout")).header("cookie", jar.everywhere());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        send(request)
    };
    let forged = logout(None);
    assert_eq!(forged.error(), (403, "csrf_failed"));
    assert!(forged.set_cookies.is_empty());
    assert_eq!(
        send(echo(&gw, Method::GET, "/debug/echo/any/still").header("cookie", jar.everywhere())).status,
        200
    );

    let answer = logout(Some(&jar.csrf_access));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.set_cookies,
        [
            "access_token_cookie=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax",
            "csrf_access_token=; Max-Age=0; Path=/; Secure; SameSite=Lax",
            "refresh_token_cookie=; Max-Age=0; Path=/refresh; Secure; HttpOnly; SameSite=Lax",
            "csrf_refresh_token=; Max-Age=0; Path=/; Secure; SameSite=Lax",
        ]
    );
    let after = send(echo(&gw, Method::GET, "/debug/echo/any/after").header("cookie", jar.everywhere()));
    assert_eq!(after.error(), (401, "token_revoked"));
    // The refresh cookie never reached /logout (its path), yet its login
    // session ended: it refreshes nothing.
    let refresh = send(
        gw.http
            .post(gw.url("/refresh"))
            .header("cookie", jar.at_refresh())
            .header("x-csrf-token", &jar.csrf_refresh),
    );
    assert_eq!(refresh.error(), (401, "token_revoked"), "{}", refresh.body);
}

/// Login CSRF: a cross-site form can post JSON-looking `text/plain`, and the
/// browser would keep the answer's cookies, signing the victim into the
/// attacker's account. A login that sets cookies must be declared JSON (which
/// needs a preflight the built-in endpoints never grant).
#[test]
fn a_cookie_login_must_be_declared_json() {
    let (_upstream, gw) = start();
    let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "set_cookies": true}).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
    {
        let answer =
            send(gw.http.post(gw.url("/login")).header("content-type", content_type).body(body.clone()));
        assert_eq!(answer.error(), (400, "invalid_request"), "{content_type}: {}", answer.body);
        assert!(answer.set_cookies.is_empty(), "{content_type}: {:?}", answer.set_cookies);
    }
    let answer = send(
        gw.http.post(gw.url("/login")).header("content-type", "application/json; charset=utf-8").body(body),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.set_cookies.len(), 4);
}

/// With cookie tokens on, answers the user's cookie authorised are marked
/// `private` for shared caches, and an upstream's own
/// `Access-Control-Allow-Credentials` can't let another site's page read them.
#[test]
fn cookie_authorised_answers_stay_private() {
    let (_upstream, gw) = start();
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let (bearer, _) = gw.admin_login();
    let ask = |request: RequestBuilder| {
        let resp = request
            .header("x-echo-response-header", "Cache-Control: max-age=60")
            .header("x-echo-response-header", "Access-Control-Allow-Credentials: true")
            .send()
            .unwrap();
        let value = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), value("cache-control"), value("access-control-allow-credentials"))
    };
    let by_cookie = ask(echo(&gw, Method::GET, "/debug/echo/any/me").header("cookie", jar.everywhere()));
    assert_eq!(by_cookie, (200, Some("private, max-age=60".to_owned()), None));
    let by_header = ask(echo(&gw, Method::GET, "/debug/echo/any/me").bearer_auth(&bearer));
    assert_eq!(
        by_header,
        (200, Some("max-age=60".to_owned()), None),
        "the upstream's Cache-Control as it was"
    );
}

#[test]
fn built_in_endpoints_hold_cookie_requests_to_the_csrf_rule() {
    let (_upstream, gw) = start();
    let victim = gw.register("victim@example.com", "victim", "victim-password");
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let path = format!("/user/{}", victim["id"]);
    let shown = send(gw.http.get(gw.url(&path)).header("cookie", jar.everywhere()));
    assert_eq!(shown.status, 200, "{}", shown.body);
    let forged = send(gw.http.delete(gw.url(&path)).header("cookie", jar.everywhere()));
    assert_eq!(forged.error(), (403, "csrf_failed"));
    let deleted = send(
        gw.http
            .delete(gw.url(&path))
            .header("cookie", jar.everywhere())
            .header("x-csrf-token", &jar.csrf_access),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
}

#[test]
fn with_cookies_off_cookie_tokens_are_ignored() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default());
    let (access, _) = gw.admin_login();
    let answer = send(
        echo(&gw, Method::GET, "/debug/echo/any/off")
            .header("cookie", format!("access_token_cookie={access}")),
    );
    assert_eq!(answer.error(), (401, "missing_token"));
    // Nothing of the request is changed either: a public route's upstream gets the cookie as sent.
    let public = send(
        echo(&gw, Method::GET, "/debug/echo/public/off")
            .header("cookie", "access_token_cookie=t; a=1")
            .header("x-csrf-token", "c"),
    );
    assert_eq!(public.body["headers"]["cookie"], json!(["access_token_cookie=t; a=1"]));
    assert_eq!(public.body["headers"]["x-csrf-token"], json!(["c"]));
    let asked = send(gw.http.post(gw.url("/login")).json(&json!({
        "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "set_cookies": true
    })));
    assert_eq!(asked.error(), (400, "invalid_request"));
}

#[test]
fn over_http2_split_cookie_fields_are_joined_then_stripped() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| {
            c.cookies.enabled = Some(true);
            c.server.h2c = Some(true);
        }),
    );
    let (_, jar) = login_with_cookies(&gw, ADMIN_EMAIL, ADMIN_PASSWORD);
    let h2 = reqwest::blocking::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    // HTTP/2 clients send each cookie as a field of its own (RFC 9113 section 8.2.3).
    let answer = send(
        h2.post(gw.url("/debug/echo/any/h2"))
            .header("cookie", "a=1")
            .header("cookie", format!("access_token_cookie={}", jar.access))
            .header("cookie", format!("csrf_access_token={}", jar.csrf_access))
            .header("cookie", "b=\"two\"")
            .header("x-csrf-token", &jar.csrf_access),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["http_version"], "HTTP/1.1");
    assert_eq!(answer.body["headers"]["cookie"], json!(["a=1; b=\"two\""]));
    assert!(answer.body["headers"].get("x-csrf-token").is_none());
    let forged = send(
        h2.post(gw.url("/debug/echo/any/h2-forged"))
            .header("cookie", "a=1")
            .header("cookie", format!("access_token_cookie={}", jar.access)),
    );
    assert_eq!(forged.error(), (403, "csrf_failed"));
    assert!(!upstream.saw("h2-forged"));
}
