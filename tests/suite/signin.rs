//! The sign-in page (`[signin]`) through the running gateway: its headers
//! (the CSP's style hash checked against the page's own style) and form; a
//! browser's whole round trip from a protected page to the sign-in page and
//! back with the token cookies; a wrong password answered with the form and
//! a readable error; login CSRF (a post without the page's form token)
//! refused; every open-redirect trick in `rd` ending at `default_redirect`;
//! and a JSON client on the same route still getting its 401. Last, a real
//! browser (headless Chromium driven by `tests/common/browser_signin.py`)
//! through the whole round trip and the sign-out button.

use base64::Engine;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::config::spanned;
use crate::common::{Gateway, Options, Upstream, ADMIN_EMAIL, ADMIN_PASSWORD};

const ALLOWED_ORIGIN: &str = "https://app.example.com";

/// Cookies and the page on; `/debug/echo/any/**` sends browsers to sign in.
fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| {
            c.cookies.enabled = Some(true);
            c.signin.enabled = Some(spanned(true));
            c.signin.redirect_allowlist = Some(vec![spanned(ALLOWED_ORIGIN.to_owned())]);
            for route in &mut c.routes {
                if route.get_ref().path.get_ref() == "/debug/echo/any/**" {
                    route.get_mut().signin_redirect = Some(spanned(true));
                }
            }
        }),
    );
    (upstream, gw)
}

/// A browser that follows nothing by itself, so every hop can be checked.
fn browser() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn header(resp: &Response, name: impl reqwest::header::AsHeaderName) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

fn set_cookies(resp: &Response) -> Vec<String> {
    resp.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// `name=value` of the `Set-Cookie` line for `name`, if any.
fn cookie_pair(lines: &[String], name: &str) -> Option<String> {
    lines.iter().find(|l| l.starts_with(&format!("{name}="))).map(|l| l[..l.find(';').unwrap()].to_owned())
}

/// The `value` of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
    // As a browser reads the attribute: the page escaped it.
    page[start..start + page[start..].find('"').unwrap()]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The served form: its page, and the form cookie as a browser sends it back.
fn open_form(gw: &Gateway, client: &Client, query: &str) -> (String, String) {
    let resp = client.get(gw.url(&format!("/signin{query}"))).header("accept", HTML).send().unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.log());
    let form_cookie = cookie_pair(&set_cookies(&resp), "gatehouse_signin").expect("a form cookie");
    (resp.text().unwrap(), form_cookie)
}

fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

fn post_form(gw: &Gateway, client: &Client, cookie: Option<&str>, fields: &[(&str, &str)]) -> Response {
    let mut request = client
        .post(gw.url("/signin"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("accept", HTML)
        .body(form_body(fields));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().unwrap()
}

/// Signs in through the form with `rd`; returns where it sent the browser.
fn sign_in_to(gw: &Gateway, client: &Client, rd: &str) -> String {
    let (page, form_cookie) = open_form(gw, client, "");
    let token = hidden(&page, "form_token");
    let resp = post_form(
        gw,
        client,
        Some(&form_cookie),
        &[("form_token", &token), ("rd", rd), ("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
    );
    assert_eq!(resp.status(), 303, "rd {rd:?}: {}", gw.log());
    header(&resp, LOCATION)
}

#[test]
fn the_page_is_a_plain_accessible_form_under_a_strict_csp() {
    let (_upstream, gw) = start();
    let resp = browser().get(gw.url("/signin?rd=%2Fdebug%2Fecho%2Fany%2Fx%3Fa%3D1")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&resp, "x-frame-options"), "DENY");
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert_eq!(header(&resp, "referrer-policy"), "no-referrer");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    let csp = header(&resp, "content-security-policy");
    let form_cookie = set_cookies(&resp).into_iter().find(|l| l.starts_with("gatehouse_signin=")).unwrap();
    assert!(
        form_cookie.ends_with("; Max-Age=600; Path=/signin; Secure; HttpOnly; SameSite=Strict"),
        "{form_cookie}"
    );
    let page = resp.text().unwrap();

    // The CSP allows the page's one inline style by its hash, and nothing else.
    let style = &page[page.find("<style>").unwrap() + 7..page.find("</style>").unwrap()];
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style.as_bytes()));
    assert_eq!(
        csp,
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    );
    for needed in [
        "<main>",
        "<form method=\"post\" action=\"/signin\">",
        "<label for=\"email\">",
        "autocomplete=\"username\"",
        "<label for=\"password\">",
        "type=\"password\" autocomplete=\"current-password\"",
        "role=\"alert\"></div>",
        "<button type=\"submit\">",
        "<title>Sign in</title>",
    ] {
        assert!(page.contains(needed), "no {needed} in {page}");
    }
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("http"), "{page}");
    assert_eq!(hidden(&page, "rd"), "/debug/echo/any/x?a=1");
    assert_eq!(
        hidden(&page, "form_token"),
        form_cookie["gatehouse_signin=".len()..form_cookie.find(';').unwrap()]
    );

    // A hostile `rd` is neither reflected nor kept.
    let (page, _) = open_form(&gw, &browser(), "?rd=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert!(!page.contains("<script"), "{page}");
    assert_eq!(hidden(&page, "rd"), "/");
}

#[test]
fn a_browser_signs_in_and_comes_back_to_its_page() {
    let (upstream, gw) = start();
    let client = browser();
    // A protected page, asked for as a browser does: off to the sign-in page.
    let resp =
        client.get(gw.url("/debug/echo/any/report?year=2024&q=a%20b")).header("accept", HTML).send().unwrap();
    assert_eq!(resp.status(), 303);
    let to_signin = header(&resp, LOCATION);
    assert_eq!(to_signin, "/signin?rd=%2Fdebug%2Fecho%2Fany%2Freport%3Fyear%3D2024%26q%3Da%2520b");
    assert!(set_cookies(&resp).is_empty());
    assert!(!upstream.saw("/debug/echo/any/report"), "nothing reaches the upstream");

    // The form, with the page to come back to.
    let (page, form_cookie) = open_form(&gw, &client, &to_signin["/signin".len()..]);
    let rd = hidden(&page, "rd");
    assert_eq!(rd, "/debug/echo/any/report?year=2024&q=a%20b");
    let token = hidden(&page, "form_token");
    let resp = post_form(
        &gw,
        &client,
        Some(&form_cookie),
        &[("form_token", &token), ("rd", &rd), ("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
    );
    assert_eq!(resp.status(), 303, "{}", gw.log());
    assert_eq!(header(&resp, LOCATION), rd);
    let lines = set_cookies(&resp);
    assert!(lines.iter().any(|l| l.starts_with("gatehouse_signin=; Max-Age=0;")), "{lines:?}");
    let access = cookie_pair(&lines, "access_token_cookie").expect("an access cookie");
    assert!(
        lines.iter().any(|l| l.starts_with("access_token_cookie=") && l.contains("HttpOnly")),
        "{lines:?}"
    );
    let csrf = cookie_pair(&lines, "csrf_access_token").expect("a CSRF cookie");
    assert!(cookie_pair(&lines, "refresh_token_cookie").is_some(), "{lines:?}");

    // Back on the page, with the cookies: the upstream answers, knowing who.
    let resp = client
        .get(gw.url(&rd))
        .header("accept", HTML)
        .header("cookie", format!("{access}; {csrf}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.log());
    let body: Value = resp.json().unwrap();
    assert_eq!(body["headers"]["x-auth-email"], json!([ADMIN_EMAIL]), "{body}");
    assert!(body["headers"].get("cookie").is_none(), "{body}");

    // Signing out: the page only shows a button carrying the token's CSRF value...
    let signed_in = format!("{access}; {csrf}");
    let resp = client.get(gw.url("/signin/out")).header("cookie", &signed_in).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-security-policy").starts_with("default-src 'none'"));
    let page = resp.text().unwrap();
    assert!(page.contains("<form method=\"post\" action=\"/signin/out\">"), "{page}");
    let posted_csrf = hidden(&page, "csrf");
    assert_eq!(format!("csrf_access_token={posted_csrf}"), csrf);
    // ...which a post from elsewhere doesn't have: nothing changes.
    let out = |value: &str| {
        client
            .post(gw.url("/signin/out"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("cookie", &signed_in)
            .body(form_body(&[("csrf", value)]))
            .send()
            .unwrap()
    };
    let resp = out("0123456789abcdef0123456789abcdef");
    assert_eq!(resp.status(), 403);
    assert!(set_cookies(&resp).is_empty());
    let resp = client.get(gw.url(&rd)).header("cookie", &signed_in).send().unwrap();
    assert_eq!(resp.status(), 200, "still signed in");
    // The page's own post signs out: cookies cleared, the token revoked.
    let resp = out(&posted_csrf);
    assert_eq!(resp.status(), 303);
    assert_eq!(header(&resp, LOCATION), "/signin");
    let lines = set_cookies(&resp);
    assert!(lines.iter().any(|l| l.starts_with("access_token_cookie=; Max-Age=0;")), "{lines:?}");
    let resp = client.get(gw.url(&rd)).header("accept", HTML).header("cookie", &signed_in).send().unwrap();
    assert_eq!(resp.status(), 303, "the old cookie is revoked: back to the sign-in page");
    // Not signed in, the sign-out page sends the browser to sign in.
    let resp = client.get(gw.url("/signin/out")).send().unwrap();
    assert_eq!((resp.status().as_u16(), header(&resp, LOCATION)), (303, "/signin".to_owned()));
}

#[test]
fn a_wrong_password_shows_the_form_again_with_a_readable_error() {
    let (_upstream, gw) = start();
    let client = browser();
    for (email, password) in [(ADMIN_EMAIL, "not-the-password"), ("nobody@example.com", ADMIN_PASSWORD)] {
        let (page, form_cookie) = open_form(&gw, &client, "?rd=%2Fdebug%2Fecho%2Fany%2Fx");
        let token = hidden(&page, "form_token");
        let resp = post_form(
            &gw,
            &client,
            Some(&form_cookie),
            &[("form_token", &token), ("rd", "/debug/echo/any/x"), ("email", email), ("password", password)],
        );
        assert_eq!(resp.status(), 401);
        assert_eq!(header(&resp, LOCATION), "");
        assert_eq!(header(&resp, CONTENT_TYPE), "text/html; charset=utf-8");
        assert!(header(&resp, "content-security-policy").starts_with("default-src 'none'"));
        let lines = set_cookies(&resp);
        assert!(cookie_pair(&lines, "access_token_cookie").is_none(), "{lines:?}");
        assert!(cookie_pair(&lines, "gatehouse_signin").is_some(), "a fresh form token: {lines:?}");
        let page = resp.text().unwrap();
        // The same sentence for both: no hint which of the two was wrong.
        assert!(page.contains("role=\"alert\">The email or password is wrong.</div>"), "{page}");
        assert_eq!(hidden(&page, "rd"), "/debug/echo/any/x");
        assert!(!page.contains(password), "the password is never echoed");
    }
}

#[test]
fn a_post_without_the_pages_form_token_is_refused() {
    let (_upstream, gw) = start();
    let client = browser();
    let (page, form_cookie) = open_form(&gw, &client, "");
    let token = hidden(&page, "form_token");
    let credentials = [("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD), ("rd", "/")];
    fn with<'a>(token: &'a str, credentials: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut fields = vec![("form_token", token)];
        fields.extend_from_slice(credentials);
        fields
    }
    let other_cookie = "gatehouse_signin=0123456789abcdef0123456789abcdef".to_owned();
    for (cookie, posted, case) in [
        (None, token.as_str(), "another site's post: no form cookie"),
        (Some(form_cookie.as_str()), "", "no form token"),
        (Some(other_cookie.as_str()), token.as_str(), "a different form cookie"),
        (Some(form_cookie.as_str()), "0123456789abcdef0123456789abcdef", "a different form token"),
    ] {
        let resp = post_form(&gw, &client, cookie, &with(posted, &credentials));
        assert_eq!(resp.status(), 403, "{case}");
        let lines = set_cookies(&resp);
        assert!(cookie_pair(&lines, "access_token_cookie").is_none(), "{case}: {lines:?}");
        let page = resp.text().unwrap();
        assert!(
            page.contains("This sign-in form has expired or was not sent from this site"),
            "{case}: {page}"
        );
    }
    // The same form with its own cookie goes through.
    let resp = post_form(&gw, &client, Some(&form_cookie), &with(&token, &credentials));
    assert_eq!(resp.status(), 303, "{}", gw.log());
}

#[test]
fn every_open_redirect_ends_at_the_default() {
    let (_upstream, gw) = start();
    let client = browser();
    for bad in [
        "//evil",
        "https:evil",
        "https://evil.com",
        "/\\evil",
        "\\\\evil",
        "/%2F%2Fevil.com",
        "%2F%2Fevil",
        "/%5Cevil",
        "javascript:alert(1)",
        " /x",
        "https://app.example.com:8443/x",
        "http://app.example.com/x",
    ] {
        assert_eq!(sign_in_to(&gw, &client, bad), "/", "{bad:?}");
    }
    assert_eq!(sign_in_to(&gw, &client, "/ok?x=1"), "/ok?x=1");
    assert_eq!(sign_in_to(&gw, &client, "https://app.example.com/home"), "https://app.example.com/home");
}

#[test]
fn clients_that_want_json_still_get_the_401() {
    let (upstream, gw) = start();
    let client = browser();
    for (method, accept) in [
        (reqwest::Method::GET, "application/json"),
        (reqwest::Method::GET, "*/*"),
        (reqwest::Method::POST, HTML),
        (reqwest::Method::DELETE, HTML),
    ] {
        let resp = client
            .request(method.clone(), gw.url("/debug/echo/any/api"))
            .header("accept", accept)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 401, "{method} {accept}");
        assert_eq!(header(&resp, CONTENT_TYPE), "application/json");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"], "missing_token", "{method} {accept}");
    }
    // A bad token from a browser: still to the sign-in page.
    let resp = client
        .get(gw.url("/debug/echo/any/page"))
        .header("accept", HTML)
        .header("cookie", "access_token_cookie=not.a.token")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(header(&resp, LOCATION), "/signin?rd=%2Fdebug%2Fecho%2Fany%2Fpage");
    // A route without `signin_redirect`: the browser gets the 401.
    let resp = client.get(gw.url("/debug/echo/admin/page")).header("accept", HTML).send().unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!upstream.saw("/debug/echo/any/"), "nothing reached the upstream");
}

#[test]
fn a_real_browser_signs_in_and_out() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| {
            c.cookies.enabled = Some(true);
            // Plain HTTP on loopback: a browser keeps no `Secure` cookie from it.
            c.cookies.secure = Some(false);
            c.signin.enabled = Some(spanned(true));
            for route in &mut c.routes {
                if route.get_ref().path.get_ref() == "/debug/echo/any/**" {
                    route.get_mut().signin_redirect = Some(spanned(true));
                }
            }
        }),
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/browser_signin.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .args([&gw.url(""), ADMIN_EMAIL, ADMIN_PASSWORD])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    // The script's own waits are 30 s each; this only stops a hung browser.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "the browser test failed ({}); needs chromium, chromium-driver and selenium (.ci/run installs them)\n\
         stdout: {stdout}\nstderr: {stderr}\ngateway log:\n{}",
        output.status,
        gw.log()
    );
}
