//! Request budgets on proxied routes (`[[routes]] rate` and `burst`): per
//! user for identified callers, per real client address for anonymous ones,
//! refused with 429 before the upstream, and shared by every gateway on one
//! Redis. Every budget here is "3/m", slow enough that nothing refills
//! during a test, so no assertion depends on timing.

use std::process::Command;

use gatehouse::config::file::{FileConfig, RouteEntry};
use serde_json::Value;
use toml::Spanned;

use crate::common::config::{route, spanned, text};
use crate::common::redis::{on_redis, RedisServer};
use crate::common::{binary, Gateway, Options, Upstream};

/// A route on `path` (every method) with `policy` and a budget of `rate`.
fn budgeted(path: &str, policy: &str, rate: &str) -> Spanned<RouteEntry> {
    let mut entry = route(path, &[], policy);
    entry.get_mut().rate = text(rate);
    entry
}

/// The test gateway's routes plus a budget of 3 a minute on
/// `/debug/echo/budget/**` (policy `any`) and `/debug/echo/anon/**` (`optional`).
fn with_budgets(c: &mut FileConfig) {
    c.routes.push(budgeted("/debug/echo/budget/**", "any", "3/m"));
    c.routes.push(budgeted("/debug/echo/anon/**", "optional", "3/m"));
}

/// Sends `GET path` with `token` through `client`; the status, the
/// `Retry-After` header and the JSON body.
fn get(
    gw: &Gateway,
    client: &reqwest::blocking::Client,
    path: &str,
    token: Option<&str>,
    forwarded_for: Option<&str>,
) -> (u16, Option<u64>, Value) {
    let mut request = client.get(gw.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(client) = forwarded_for {
        request = request.header("X-Forwarded-For", client);
    }
    let resp = request.send().unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    let text = resp.text().unwrap();
    (status, retry_after, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn refusals(gw: &Gateway, route: &str, reason: &str) -> Option<String> {
    let text = gw.http.get(format!("http://{}/metrics", gw.admin_addr)).send().unwrap().text().unwrap();
    let (route, reason) = (format!("route=\"{route}\""), format!("reason=\"{reason}\""));
    text.lines()
        .find(|l| l.starts_with("gatehouse_refusals_total{") && l.contains(&route) && l.contains(&reason))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

#[test]
fn a_user_over_budget_gets_429_and_the_upstream_never_sees_the_request() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default().config(with_budgets));
    gw.register("ann@example.com", "ann", "ann-password-1");
    gw.register("bob@example.com", "bob", "bob-password-1");
    let (ann, _) = gw.login("ann@example.com", "ann-password-1");
    let (bob, _) = gw.login("bob@example.com", "bob-password-1");

    // A request its policy refuses spends nothing.
    assert_eq!(get(&gw, &gw.http, "/debug/echo/budget/nobody", None, None).0, 401);
    for n in 1..=3 {
        let (status, retry_after, _) =
            get(&gw, &gw.http, &format!("/debug/echo/budget/ann-{n}"), Some(&ann), None);
        assert_eq!((status, retry_after), (200, None), "request {n} is within the budget");
    }
    let (status, retry_after, body) = get(&gw, &gw.http, "/debug/echo/budget/ann-4", Some(&ann), None);
    assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "{body}");
    let retry_after = retry_after.expect("a 429 says when to try again");
    assert!((1..=20).contains(&retry_after), "one request comes back every 20 s: {retry_after}");
    assert_eq!(
        body["message"].as_str(),
        Some(format!("Too many requests; try again in {retry_after} seconds.").as_str())
    );
    assert!(upstream.saw("/debug/echo/budget/ann-3"));
    assert!(!upstream.saw("/debug/echo/budget/ann-4"), "{:?}", upstream.seen());

    // The budget is Ann's: Bob still has all of his, and routes without a
    // budget don't count against anyone.
    for n in 1..=3 {
        assert_eq!(get(&gw, &gw.http, &format!("/debug/echo/budget/bob-{n}"), Some(&bob), None).0, 200);
    }
    assert_eq!(get(&gw, &gw.http, "/debug/echo/budget/bob-4", Some(&bob), None).0, 429);
    assert_eq!(get(&gw, &gw.http, "/debug/echo/any/ann", Some(&ann), None).0, 200);

    assert_eq!(refusals(&gw, "/debug/echo/budget/**", "rate_limited").as_deref(), Some("2"));
    assert_eq!(refusals(&gw, "/debug/echo/budget/**", "missing_token").as_deref(), Some("1"));
}

#[test]
fn anonymous_budgets_are_per_real_client_address() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(with_budgets).config(|c| {
            c.server.trusted_proxies = Some(vec![spanned("127.0.0.1".into())]);
        }),
    );
    let path = "/debug/echo/anon/x";
    // Behind the trusted proxy (the test client, from 127.0.0.1), each client
    // in X-Forwarded-For has a budget of its own. A bad token is refused
    // before it spends anything.
    assert_eq!(get(&gw, &gw.http, path, Some("not-a-token"), Some("198.51.100.1")).0, 401);
    for _ in 0..3 {
        assert_eq!(get(&gw, &gw.http, path, None, Some("198.51.100.1")).0, 200);
    }
    let (status, retry_after, body) = get(&gw, &gw.http, path, None, Some("198.51.100.1"));
    assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(retry_after.is_some());
    assert_eq!(get(&gw, &gw.http, path, None, Some("198.51.100.2")).0, 200, "another client");
    assert_eq!(get(&gw, &gw.http, path, None, Some("6.6.6.6, 198.51.100.2")).0, 200, "the real one counts");

    // An untrusted peer (127.0.0.2) is the client whatever it claims: a new
    // X-Forwarded-For does not buy a fresh budget.
    let untrusted = reqwest::blocking::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for n in 1..=3 {
        let forged = format!("203.0.113.{n}");
        assert_eq!(get(&gw, &untrusted, path, None, Some(&forged)).0, 200);
    }
    assert_eq!(get(&gw, &untrusted, path, None, Some("203.0.113.4")).0, 429);
    assert_eq!(get(&gw, &untrusted, path, None, None).0, 429);
}

#[test]
fn two_gateways_on_one_redis_share_a_users_budget() {
    let upstream = Upstream::start();
    let redis = RedisServer::start();
    let options = Options::default().config(on_redis(redis.section())).config(with_budgets);
    let a = Gateway::start(&upstream, options.clone());
    let b = Gateway::start(
        &upstream,
        Options { seed_admin: false, jwt_secret: Some(a.jwt_secret.clone()), ..options },
    );
    a.register("ann@example.com", "ann", "ann-password-1");
    b.register("bob@example.com", "bob", "bob-password-1");
    let (ann, _) = a.login("ann@example.com", "ann-password-1");
    let (bob, _) = b.login("bob@example.com", "bob-password-1");

    // Ann alternates between the gateways: her fourth request is over the
    // budget of three, whichever gateway it reaches.
    let mut answers = Vec::new();
    for (n, gw) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        answers.push(get(gw, &gw.http, &format!("/debug/echo/budget/ann-{n}"), Some(&ann), None).0);
    }
    assert_eq!(answers, [200, 200, 200, 429, 429]);
    assert!(!upstream.saw("/debug/echo/budget/ann-3") && !upstream.saw("/debug/echo/budget/ann-4"));
    assert_eq!(refusals(&b, "/debug/echo/budget/**", "rate_limited").as_deref(), Some("1"));
    assert_eq!(refusals(&a, "/debug/echo/budget/**", "rate_limited").as_deref(), Some("1"));

    // Bob's budget is his own, on either gateway.
    for gw in [&b, &a, &b] {
        assert_eq!(get(gw, &gw.http, "/debug/echo/budget/bob", Some(&bob), None).0, 200);
    }
    assert_eq!(get(&a, &a.http, "/debug/echo/budget/bob", Some(&bob), None).0, 429);
    // The counters are Redis keys under the store's prefix, with an expiry.
    let keys = redis.cli(&["--scan", "--pattern", "*limit:route:*"]);
    assert_eq!(keys.lines().count(), 2, "one per user and route: {keys}");
}

#[test]
fn check_config_refuses_a_bad_budget_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (route, line, column, complaint) in [
        ("rate = \"10/d\"", 7, 8, "rate `10/d`: unknown unit `d`; expected s, m or h"),
        ("rate = \"0/m\"", 7, 8, "rate `0/m`: the count must be at least 1"),
        ("rate = \"ten/m\"", 7, 8, "rate `ten/m`: `ten` is not a whole number"),
        ("rate = \"3/m\"\nburst = 0", 8, 9, "`burst` must be at least 1"),
        ("burst = 3", 7, 9, "`burst` needs a `rate` on the same route"),
    ] {
        let path = dir.path().join("budget.toml");
        std::fs::write(
            &path,
            format!("[upstream]\naddresses = [\"127.0.0.1:1\"]\n\n[[routes]]\npath = \"/a\"\npolicy = \"any\"\n{route}\n"),
        )
        .unwrap();
        let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route}: {stderr}");
        let located = format!("{}:{line}:{column}: {complaint}", path.display());
        assert!(stderr.contains(&located), "{route}: expected {located}\n{stderr}");
    }
}
