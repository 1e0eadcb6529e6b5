//! CORS per route, through the running gateway: preflights answered by the
//! gateway without a token (never forwarded), judged by the route of the
//! requested method on the canonical path; the real request still judged in
//! full, with the CORS headers on the gateway's refusals too; the upstream's
//! own `Access-Control-*` headers replaced; `check-config` refusing what a
//! browser would never honour, at its line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use gatehouse::config::file::FileConfig;
use reqwest::blocking::Response;
use reqwest::Method;

use crate::common::config::{route, spanned, text};
use crate::common::{binary, Gateway, Options, Upstream};

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";

/// CORS on three of the standard echo routes: `admin` and `any` for the app
/// with credentials, `public` for any origin without.
fn cors_routes(c: &mut FileConfig) {
    for entry in &mut c.routes {
        let e = entry.get_mut();
        match e.path.get_ref().as_str() {
            "/debug/echo/admin/**" | "/debug/echo/any/**" => {
                e.cors_origins =
                    Some(spanned(vec![spanned(APP.to_owned()), spanned("http://localhost:3000".to_owned())]));
                e.cors_methods =
                    Some(spanned(["GET", "PUT", "POST"].map(|m| spanned(m.to_owned())).to_vec()));
                e.cors_credentials = Some(spanned(true));
                e.cors_max_age = text("1h");
            }
            "/debug/echo/public/**" => e.cors_origins = Some(spanned(vec![spanned("*".to_owned())])),
            _ => {}
        }
    }
    // PUT under the public area is for admins, and for the app only.
    let mut put = route("/debug/echo/public/**", &["PUT"], "admin");
    put.get_mut().cors_origins = Some(spanned(vec![spanned(APP.to_owned())]));
    c.routes.push(put);
}

fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(cors_routes));
    (upstream, gw)
}

fn send(gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = gw.http.request(method, gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap()
}

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str, headers: Option<&str>) -> Response {
    let mut sent = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(h) = headers {
        sent.push(("access-control-request-headers", h));
    }
    send(gw, Method::OPTIONS, path, &sent)
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn all(response: &Response, name: &str) -> Vec<String> {
    response.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// Every `Access-Control-*` header of an answer.
fn cors_headers(response: &Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|n| n.as_str().to_owned())
        .filter(|n| n.starts_with("access-control-"))
        .collect()
}

fn error_code(response: Response) -> String {
    let body: serde_json::Value = response.json().unwrap();
    body["error"].as_str().unwrap_or("-").to_owned()
}

/// What reached the upstream with `method`.
fn arrived(upstream: &Upstream, method: &str) -> Vec<String> {
    upstream.seen().into_iter().filter(|l| l.starts_with(method)).collect()
}

#[test]
fn preflights_are_answered_by_the_gateway_without_a_token_and_never_forwarded() {
    let (upstream, gw) = start();
    let path = "/debug/echo/admin/items/7";

    let allowed = preflight(&gw, path, APP, "PUT", Some("authorization, content-type"));
    assert_eq!(allowed.status(), 204, "{}", gw.log());
    assert_eq!(header(&allowed, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&allowed, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&allowed, "access-control-allow-methods"), Some("GET, PUT, POST"));
    assert_eq!(
        header(&allowed, "access-control-allow-headers"),
        Some("authorization, content-type, x-csrf-token")
    );
    assert_eq!(header(&allowed, "access-control-max-age"), Some("3600"));
    assert_eq!(
        header(&allowed, "vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert!(header(&allowed, "x-request-id").is_some());
    // The second listed origin is echoed as exactly itself.
    let local = preflight(&gw, path, "http://localhost:3000", "GET", None);
    assert_eq!(local.status(), 204);
    assert_eq!(header(&local, "access-control-allow-origin"), Some("http://localhost:3000"));

    let refusals = [
        preflight(&gw, path, EVIL, "PUT", None),
        // Same host, other scheme or port: another origin.
        preflight(&gw, path, "http://app.example.com", "PUT", None),
        preflight(&gw, path, "https://app.example.com:8443", "PUT", None),
        preflight(&gw, path, "null", "GET", None),
        // A header the route doesn't allow, and a method it doesn't.
        preflight(&gw, path, APP, "PUT", Some("authorization, x-debug")),
        preflight(&gw, path, APP, "DELETE", None),
        preflight(&gw, path, APP, "put", None),
    ];
    for refused in refusals {
        assert_eq!(refused.status(), 403);
        assert_eq!(cors_headers(&refused), Vec::<String>::new(), "a refusal allows nothing");
        assert_eq!(error_code(refused), "cors_refused");
    }
    assert_eq!(arrived(&upstream, "OPTIONS"), Vec::<String>::new(), "no preflight reaches the upstream");

    // Counted under their own outcome; refused ones as refusals.
    let metrics = gw.http.get(format!("http://{}/metrics", gw.admin_addr)).send().unwrap().text().unwrap();
    let line = |needle: &str| {
        metrics.lines().any(|l| l.starts_with("gatehouse_requests_total") && l.contains(needle))
    };
    assert!(line("outcome=\"preflight\"") && line("status=\"204\""), "{metrics}");
    assert!(metrics.lines().any(|l| l.contains("cors_refused")), "{metrics}");
}

#[test]
fn a_preflight_is_judged_by_the_route_its_canonical_path_and_method_match() {
    let (upstream, gw) = start();
    // `public` allows any origin; `admin` only the app. A path that normalises
    // into the admin area gets the admin route's answer however it is spelt.
    for path in ["/debug/echo/public/../admin/x", "/debug/echo/public/%2e%2e/admin/x", "/debug/echo//admin/x"]
    {
        let (status, head) = raw_options(&gw, path, EVIL, "GET");
        assert_eq!(status, 403, "{path}: {head}");
        assert!(!head.to_ascii_lowercase().contains("access-control-allow"), "{path}: {head}");
        let (status, head) = raw_options(&gw, path, APP, "GET");
        assert_eq!(status, 204, "{path}: {head}");
        assert!(head.contains(&format!("access-control-allow-origin: {APP}")), "{path}: {head}");
    }
    let upper = preflight(&gw, "/DEBUG/ECHO/ADMIN/x", EVIL, "GET", None);
    assert_eq!(upper.status(), 403);
    // The public route itself allows any origin, echoed, without credentials.
    let public = preflight(&gw, "/debug/echo/public/x", EVIL, "GET", None);
    assert_eq!(public.status(), 204);
    assert_eq!(header(&public, "access-control-allow-origin"), Some(EVIL));
    assert_eq!(header(&public, "access-control-allow-credentials"), None);
    assert_eq!(
        header(&public, "access-control-allow-methods"),
        Some("GET, HEAD, POST"),
        "the default methods"
    );
    assert_eq!(header(&public, "access-control-max-age"), Some("600"), "the default max age");
    // Judged by the route of the method asked about, not OPTIONS's.
    assert_eq!(preflight(&gw, "/debug/echo/public/x", EVIL, "PUT", None).status(), 403);
    let put = preflight(&gw, "/debug/echo/public/x", APP, "PUT", None);
    assert_eq!(put.status(), 204);
    assert_eq!(header(&put, "access-control-allow-methods"), Some("PUT"));
    assert_eq!(arrived(&upstream, "OPTIONS"), Vec::<String>::new());

    // On a route without CORS a preflight is an ordinary OPTIONS request:
    // judged by the policy (here `any`, so 401) as before.
    let plain = preflight(&gw, "/debug/echo/fresh/x", APP, "GET", None);
    assert_eq!(plain.status(), 401);
    let forwarded = preflight(&gw, "/debug/echo/optional/x", APP, "GET", None);
    assert_eq!(forwarded.status(), 200);
    assert_eq!(arrived(&upstream, "OPTIONS"), vec!["OPTIONS /debug/echo/optional/x".to_owned()]);
}

#[test]
fn the_real_request_is_judged_in_full_and_its_refusal_is_readable() {
    let (_upstream, gw) = start();
    let path = "/debug/echo/admin/x";
    // No token: 401, with what lets the app's page read it.
    let refused = send(&gw, Method::GET, path, &[("origin", APP)]);
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&refused, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&refused, "access-control-expose-headers"), Some("x-request-id"));
    assert_eq!(all(&refused, "vary"), vec!["Origin".to_owned()]);
    assert_eq!(all(&refused, "access-control-allow-origin").len(), 1);
    assert_eq!(error_code(refused), "missing_token");
    // An OPTIONS without Access-Control-Request-Method is no preflight: the policy judges it.
    let options = send(&gw, Method::OPTIONS, "/debug/echo/any/x", &[("origin", APP)]);
    assert_eq!(options.status(), 401);
    assert_eq!(header(&options, "access-control-allow-origin"), Some(APP));

    let (admin, _) = gw.admin_login();
    let bearer = format!("Bearer {admin}");
    let passed = send(&gw, Method::PUT, path, &[("origin", APP), ("authorization", &bearer)]);
    assert_eq!(passed.status(), 200);
    assert_eq!(header(&passed, "access-control-allow-origin"), Some(APP));
    // Another origin is not refused (CORS binds browsers; the token decides),
    // but gets nothing that would let its page read the answer.
    let other = send(&gw, Method::GET, path, &[("origin", EVIL), ("authorization", &bearer)]);
    assert_eq!(other.status(), 200);
    assert_eq!(cors_headers(&other), Vec::<String>::new());
    assert_eq!(all(&other, "vary"), vec!["Origin".to_owned()]);
}

#[test]
fn the_upstream_cannot_widen_a_routes_cors() {
    let (_upstream, gw) = start();
    let (admin, _) = gw.admin_login();
    let bearer = format!("Bearer {admin}");
    let widening = [
        ("x-echo-response-header", "Access-Control-Allow-Origin: *"),
        ("x-echo-response-header", "Access-Control-Allow-Credentials: true"),
        ("x-echo-response-header", "Access-Control-Allow-Methods: DELETE"),
        ("x-echo-response-header", "Vary: Accept-Encoding"),
    ];
    let with = |origin: &'static str| {
        let mut headers = widening.to_vec();
        headers.push(("origin", origin));
        headers.push(("authorization", bearer.as_str()));
        headers
    };
    // Credentials on: the exact origin, never `*`, and only the gateway's.
    let app = send(&gw, Method::GET, "/debug/echo/admin/x", &with(APP));
    assert_eq!(app.status(), 200);
    assert_eq!(all(&app, "access-control-allow-origin"), vec![APP.to_owned()]);
    assert_eq!(all(&app, "access-control-allow-credentials"), vec!["true".to_owned()]);
    assert_eq!(header(&app, "access-control-allow-methods"), None);
    assert_eq!(all(&app, "vary"), vec!["Accept-Encoding".to_owned(), "Origin".to_owned()]);
    // An origin the route doesn't allow gets none of the upstream's.
    let evil = send(&gw, Method::GET, "/debug/echo/admin/x", &with(EVIL));
    assert_eq!(evil.status(), 200);
    assert_eq!(cors_headers(&evil), Vec::<String>::new());
    // `*` routes echo the origin too, without credentials whatever the upstream says.
    let public = send(&gw, Method::GET, "/debug/echo/public/x", &with(EVIL));
    assert_eq!(all(&public, "access-control-allow-origin"), vec![EVIL.to_owned()]);
    assert_eq!(header(&public, "access-control-allow-credentials"), None);
    // A route without CORS leaves CORS to the upstream, as before.
    let plain = send(&gw, Method::GET, "/debug/echo/optional/x", &with(EVIL));
    assert_eq!(header(&plain, "access-control-allow-origin"), Some("*"));
}

#[test]
fn preflights_and_cors_headers_over_http2_too() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| {
            cors_routes(c);
            c.server.h2c = Some(true);
        }),
    );
    let h2 = reqwest::blocking::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let url = gw.url("/debug/echo/admin/x");
    let asked = h2
        .request(Method::OPTIONS, &url)
        .header("origin", APP)
        .header("access-control-request-method", "PUT")
        .send()
        .unwrap();
    assert_eq!(asked.version(), reqwest::Version::HTTP_2);
    assert_eq!(asked.status(), 204);
    assert_eq!(header(&asked, "access-control-allow-origin"), Some(APP));
    let refused = h2
        .request(Method::OPTIONS, &url)
        .header("origin", EVIL)
        .header("access-control-request-method", "PUT")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(cors_headers(&refused), Vec::<String>::new());
    let real = h2.get(&url).header("origin", APP).send().unwrap();
    assert_eq!(real.status(), 401);
    assert_eq!(header(&real, "access-control-allow-origin"), Some(APP));
    assert_eq!(arrived(&upstream, "OPTIONS"), Vec::<String>::new());
}

#[test]
fn check_config_refuses_cors_a_browser_would_not_honour_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (keys, line, column, complaint) in [
        (
            "cors_origins = [\"*\"]\ncors_credentials = true",
            7,
            17,
            "`\"*\"` can't be used with `cors_credentials = true`",
        ),
        (
            "cors_origins = [\"https://a.example\", \"https://a.example/app\"]",
            7,
            38,
            "origin `https://a.example/app` has a path",
        ),
        ("cors_origins = [\"a.example\"]", 7, 17, "origin `a.example` must be scheme://host[:port]"),
        ("cors_origins = [\"https://a.example:443\"]", 7, 17, "write `https://a.example`"),
        ("cors_methods = [\"GET\"]", 7, 16, "the `cors_*` keys need origins"),
        (
            "cors_origins = [\"*\"]\ncors_methods = [\"GET\", \"DELETE\"]",
            8,
            24,
            "lists DELETE, which this route",
        ),
        ("cors_origins = [\"*\"]\ncors_max_age = \"2d\"", 8, 16, "cors_max_age must be between 0s and 1day"),
        ("cors_origins = [\"*\"]\ncors_headers = [\"x a\"]", 8, 17, "`x a` is not a header name"),
    ] {
        let path = dir.path().join("cors.toml");
        std::fs::write(
            &path,
            format!(
                "[upstream]\naddresses = [\"127.0.0.1:1\"]\n\n[[routes]]\npath = \"/a\"\nmethods = [\"GET\", \"PUT\"]\n{keys}\npolicy = \"any\"\n"
            ),
        )
        .unwrap();
        let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{keys}: {stderr}");
        let located = format!("{}:{line}:{column}: ", path.display());
        assert!(
            stderr.contains(&located) && stderr.contains(complaint),
            "{keys}: expected {located}{complaint}\n{stderr}"
        );
    }
}

/// A preflight written by hand, so its target reaches the gateway unnormalised.
/// Returns the status and the header section, names lower-cased.
fn raw_options(gw: &Gateway, path: &str, origin: &str, method: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let request = format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: gw\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    let head = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (status, head)
}
