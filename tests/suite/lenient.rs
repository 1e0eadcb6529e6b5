//! The gateway in front of a REAL lenient backend (`tests/common/lenient_backend.py`,
//! see its docstring), configured the dangerous common way: a public
//! catch-all `/**`, an admin-only `/admin/**`, and the harness routes
//! (`DELETE /item/{name}` admin-only, `GET /item/{name}` any identified user,
//! `POST /item/{name}` fresh).
//!
//! The backend reads every request the forgiving way (upper-cased methods,
//! relative targets resolved against `/`, percent-decoding before dot
//! segments, `_` read as `-` in header names, `X-Forwarded-For`, `_method`
//! and `X-HTTP-Method-Override` honoured) and logs which handler each request
//! reached. So for every attack the test can see not just what the gateway
//! answered but what a real backend would have done with what got through:
//!
//! - refused by the gateway: the backend logged nothing;
//! - forwarded: the backend read it as the public request the gateway judged
//!   (same method, same path, public handler), with no client-made identity;
//! - always: no admin handler ran and no user handler ran without a real
//!   identity. Two controls make those negative checks mean something: an
//!   admin's request visibly runs the admin handler, and the same attacks sent
//!   straight to the backend (no gateway) do reach its privileged handlers.
//!
//! `_method` in a form body: a body of known length up to 64 KiB is refused
//! before anything reaches the backend; a chunked or longer one is cut off
//! before its end, so the backend never reads the override (checked below).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gatehouse::config::file::FileConfig;
use serde_json::{json, Value};

use crate::common::config::route;
use crate::common::lenient::LenientBackend;
use crate::common::{raw, Gateway, Options, Upstream};

/// The dangerous common setup: everything public unless a route says otherwise.
fn catch_all(c: &mut FileConfig) {
    c.routes.extend([route("/**", &[], "public"), route("/admin/**", &[], "admin")]);
}

/// What an attacker adds to make every attack its worst case: if the trick
/// got a request to an admin or user handler AND these survived, the handler
/// would run.
const FORGED_IDENTITY: &str = "X-Auth-Admin: true\r\nX-Auth-User-Id: 1\r\n";

struct Rig {
    gw: Gateway,
    backend: LenientBackend,
    /// Unused: the harness wants an upstream-mock even when `upstreams` is replaced.
    _mock: Upstream,
}

fn rig() -> Rig {
    let backend = LenientBackend::start();
    let mock = Upstream::start();
    // The default TCP health check connects and closes: wsgiref logs nothing
    // for that. Cleartext HTTP/2 is on too, for the same attacks over HTTP/2.
    let gw = Gateway::start(
        &mock,
        Options { upstreams: Some(vec![backend.addr.to_string()]), ..Options::default() }
            .config(catch_all)
            .config(|c| c.server.h2c = Some(true)),
    );
    Rig { gw, backend, _mock: mock }
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| v["error"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// A raw HTTP/1.1 request, closing the connection after the answer.
fn request(line: &str, headers: &str, body: &str) -> String {
    format!("{line} HTTP/1.1\r\nHost: gatehouse\r\n{headers}Connection: close\r\n\r\n{body}")
}

/// Every response on one connection (each must have a Content-Length).
fn responses(bytes: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or(rest.len() - end - 4);
        let body_end = (end + 4 + length).min(rest.len());
        out.push((status, String::from_utf8_lossy(&rest[end + 4..body_end]).into_owned()));
        rest = &rest[body_end..];
    }
    out
}

/// Sends bytes on one connection and reads until the gateway closes it.
fn exchange(gw: &Gateway, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// `assert!` that reports instead of panicking, so one run lists every failing attack.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `assert_eq!` that reports instead of panicking.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        // A `match`, like `assert_eq!`, so temporaries live through the comparison.
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err(format!("{}\n  left: {left:?}\n right: {right:?}", format!($($fmt)+)));
                }
            }
        }
    };
}

fn must(result: Result<(), String>) {
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Neither an admin handler nor a user handler ever ran: every request of the
/// test so far was anonymous or forged, never a real identity.
fn no_privileged_handler_ran(backend: &LenientBackend, context: &str) -> Result<(), String> {
    let admin = backend.admin_handler_ran();
    ensure!(admin.is_empty(), "{context}: an admin handler ran for an unauthorised request: {admin:#?}");
    let user = backend.user_handler_ran();
    ensure!(user.is_empty(), "{context}: a user handler ran without a real identity: {user:#?}");
    Ok(())
}

/// What a forwarded anonymous request must look like to the backend: the
/// public request the gateway judged, nothing the client made up.
fn clean_public_record(record: &Value, method: &str, path: &str, context: &str) -> Result<(), String> {
    ensure_eq!(record["handler"], "public", "{context}: the backend routed it elsewhere: {record:#}");
    ensure_eq!(record["allowed"], true, "{context}: {record:#}");
    ensure_eq!(record["method"], method, "{context}: the backend read another method: {record:#}");
    ensure_eq!(record["path"], path, "{context}: the backend read another path: {record:#}");
    ensure_eq!(record["user_id"], Value::Null, "{context}: a forged user id arrived: {record:#}");
    ensure_eq!(record["admin"], Value::Null, "{context}: a forged admin flag arrived: {record:#}");
    ensure_eq!(record["is_admin"], false, "{context}: {record:#}");
    ensure_eq!(record["method_override"], Value::Null, "{context}: an override arrived: {record:#}");
    ensure_eq!(record["upgrade"], Value::Null, "{context}: an Upgrade arrived: {record:#}");
    ensure_eq!(record["client_ip"], "127.0.0.1", "{context}: a forged client address arrived: {record:#}");
    let forged: Vec<&String> = record
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("HTTP_X_AUTH") || k.as_str() == "HTTP_X_HTTP_METHOD_OVERRIDE")
        .collect();
    ensure!(forged.is_empty(), "{context}: client-made headers arrived: {forged:?} in {record:#}");
    Ok(())
}

/// What the gateway must do with one attack.
enum Outcome {
    /// Answered by the gateway with this status and JSON error code; the backend saw nothing.
    Refused(u16, &'static str),
    /// Refused with a 400 by pingora's own parser, before any gateway code
    /// runs: pingora writes no body (the gateway's JSON, with this code, is
    /// also accepted should it ever answer first). The backend saw nothing.
    RefusedByPingora(&'static str),
    /// Answered by the gateway's own endpoint with this status and a body
    /// holding this field; the backend saw nothing.
    BuiltIn(u16, &'static str),
    /// Forwarded as the public request it is: the backend reads exactly this
    /// method and path, then `check` looks at the record.
    Forwarded { method: &'static str, path: &'static str, check: fn(&Value) -> Result<(), String> },
}

struct Attack {
    name: &'static str,
    line: &'static str,
    host: &'static str,
    headers: String,
    body: String,
    outcome: Outcome,
}

fn attack(name: &'static str, line: &'static str, headers: &str, outcome: Outcome) -> Attack {
    Attack { name, line, host: "gatehouse", headers: headers.to_owned(), body: String::new(), outcome }
}

fn no_check(_: &Value) -> Result<(), String> {
    Ok(())
}

fn the_tracker() -> Vec<Attack> {
    use Outcome::{BuiltIn, Forwarded, Refused, RefusedByPingora};
    let login_body =
        json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD}).to_string();
    vec![
        // Targets a lenient backend resolves against `/`.
        attack("relative target", "DELETE item/x", "", Refused(400, "invalid_path")),
        attack("relative admin target", "GET admin/secret", "", Refused(400, "invalid_path")),
        attack("dot-dot relative target", "GET ../admin/x", "", Refused(400, "invalid_path")),
        attack("asterisk prefix", "GET */admin/x", "", Refused(400, "invalid_path")),
        // pingora refuses an absolute-form target whose authority differs from Host...
        attack("absolute-form target", "GET http://host/admin/x", "", RefusedByPingora("invalid_path")),
        // ...and passes one that agrees with Host on to the gateway, which refuses it.
        Attack {
            host: "host",
            ..attack(
                "absolute-form target agreeing with Host",
                "GET http://host/admin/x",
                "",
                Refused(400, "invalid_path"),
            )
        },
        // Methods a lenient backend upper-cases.
        attack("lower-case delete", "delete /item/x", "", Refused(400, "invalid_method")),
        attack("capitalised delete", "Delete /item/x", "", Refused(400, "invalid_method")),
        attack("mixed-case delete", "dElEtE /item/x", "", Refused(400, "invalid_method")),
        attack("lower-case get", "get /item/x", "", Refused(400, "invalid_method")),
        // Upgrade without Connection: forwarded as a plain GET.
        attack(
            "bare Upgrade",
            "GET /",
            "Upgrade: websocket\r\n",
            Forwarded { method: "GET", path: "/", check: no_check },
        ),
        // Header names a CGI-style backend reads with `_` as `-`.
        attack(
            "X_Auth_User_Id on a public path",
            "GET /x",
            "X_Auth_User_Id: 1\r\n",
            Forwarded { method: "GET", path: "/x", check: no_check },
        ),
        attack(
            "x_auth_admin on a public path",
            "GET /x",
            "x_auth_admin: true\r\n",
            Forwarded { method: "GET", path: "/x", check: no_check },
        ),
        attack(
            "X-Auth_User-Id on a public path",
            "GET /x",
            "X-Auth_User-Id: 1\r\n",
            Forwarded { method: "GET", path: "/x", check: no_check },
        ),
        attack(
            "X_Auth_User_Id on the user route",
            "GET /item/x",
            "X_Auth_User_Id: 1\r\n",
            Refused(401, "missing_token"),
        ),
        attack(
            "x_auth_admin on an admin path",
            "GET /admin/x",
            "x_auth_admin: true\r\n",
            Refused(401, "missing_token"),
        ),
        attack(
            "X-Auth_User-Id on the user route",
            "GET /item/x",
            "X-Auth_User-Id: 1\r\n",
            Refused(401, "missing_token"),
        ),
        // Identity headers sent by the client.
        attack(
            "X-Auth-Admin on a public path",
            "GET /x",
            "X-Auth-Admin: true\r\n",
            Forwarded { method: "GET", path: "/x", check: no_check },
        ),
        attack(
            "X-Auth-Admin on an admin path",
            "GET /admin/x",
            "X-Auth-Admin: true\r\n",
            Refused(401, "missing_token"),
        ),
        attack(
            "X-Auth-Admin on the admin DELETE",
            "DELETE /item/x",
            "X-Auth-Admin: true\r\n",
            Refused(401, "missing_token"),
        ),
        // A client choosing its own address.
        attack(
            "X-Forwarded-For",
            "GET /x",
            "X-Forwarded-For: 1.2.3.4\r\n",
            Forwarded {
                method: "GET",
                path: "/x",
                check: |r| {
                    ensure_eq!(r["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "X-Forwarded-For: {r:#}");
                    Ok(())
                },
            },
        ),
        // The gateway's own endpoint, with a password in the body.
        Attack {
            headers: format!("Content-Type: application/json\r\nContent-Length: {}\r\n", login_body.len()),
            body: login_body,
            ..attack(
                "POST /login/ (built-in, trailing slash)",
                "POST /login/",
                "",
                BuiltIn(200, "access_token"),
            )
        },
        // Method overrides.
        attack(
            "_method query parameter",
            "GET /x?_method=DELETE",
            "",
            Refused(400, "method_override_refused"),
        ),
        attack(
            "_method query parameter on the item",
            "GET /item/x?_method=DELETE",
            "",
            Refused(400, "method_override_refused"),
        ),
        attack(
            "X-HTTP-Method-Override on POST /item/x",
            "POST /item/x",
            "X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n",
            Refused(401, "missing_token"),
        ),
        // The catch-all makes `PUT /item/x` public: the override must not make it a DELETE.
        attack(
            "X-HTTP-Method-Override on a public PUT /item/x",
            "PUT /item/x",
            "X-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n",
            Forwarded { method: "PUT", path: "/item/x", check: no_check },
        ),
        // Framing.
        Attack {
            headers: "Content-Length: 5, 5\r\n".into(),
            body: "hello".into(),
            ..attack(
                "Content-Length: 5, 5",
                "POST /x",
                "",
                Forwarded {
                    method: "POST",
                    path: "/x",
                    check: |r| {
                        ensure_eq!(r["CONTENT_LENGTH"], "5", "Content-Length collapsed: {r:#}");
                        ensure_eq!(r["body"], "hello", "the body as sent: {r:#}");
                        Ok(())
                    },
                },
            )
        },
        Attack {
            headers: "Content-Length: 5, 6\r\n".into(),
            body: "hello".into(),
            ..attack("Content-Length: 5, 6", "POST /x", "", RefusedByPingora("invalid_header"))
        },
        Attack {
            headers: "Transfer-Encoding: gzip, chunked\r\n".into(),
            body: "5\r\nhello\r\n0\r\n\r\n".into(),
            ..attack("Transfer-Encoding: gzip, chunked", "POST /x", "", Refused(400, "invalid_header"))
        },
        // Paths that normalise into /admin, or can't be normalised.
        attack("encoded dot-dot", "GET /%2e%2e/admin/x", "", Refused(401, "missing_token")),
        attack("public prefix and dot-dot", "GET /x/../admin/x", "", Refused(401, "missing_token")),
        attack("double slash", "GET //admin/x", "", Refused(401, "missing_token")),
        attack("encoded slash", "GET /admin%2fx", "", Refused(400, "invalid_path")),
        attack("encoded letters", "GET /%61dmin/x", "", Refused(401, "missing_token")),
    ]
}

/// Sanity: the backend is really behind the gateway and the catch-all is
/// public, so "forwarded" outcomes below are real forwards.
fn assert_catch_all_reaches_the_backend(rig: &Rig) {
    let (status, body) = rig.gw.get("/anything", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["handler"], "public", "the lenient backend did not answer: {body}");
    let records = rig.backend.records();
    assert_eq!(records.len(), 1, "{records:#?}");
    must(clean_public_record(&records[0], "GET", "/anything", "sanity"));
}

/// Sends one attack and checks everything about it.
fn judge(rig: &Rig, attack: &Attack, extra_headers: &str, context: &str) -> Result<(), String> {
    let before = rig.backend.records().len();
    let sent = format!(
        "{} HTTP/1.1\r\nHost: {}\r\n{}{extra_headers}Connection: close\r\n\r\n{}",
        attack.line, attack.host, attack.headers, attack.body
    );
    let (status, body) = raw(rig.gw.addr, &sent);
    let new: Vec<Value> = rig.backend.records().into_iter().skip(before).collect();
    eprintln!("{context} -> {status} {}", body.trim().chars().take(120).collect::<String>());
    match &attack.outcome {
        Outcome::Refused(want_status, want_code) => {
            ensure_eq!((status, error_code(&body).as_str()), (*want_status, *want_code), "{context}: {body}");
            ensure!(new.is_empty(), "{context}: refused, yet the backend logged {new:#?}");
        }
        Outcome::RefusedByPingora(code) => {
            ensure_eq!(status, 400, "{context}: {body}");
            ensure!(body.is_empty() || error_code(&body) == *code, "{context}: {body}");
            ensure!(new.is_empty(), "{context}: refused, yet the backend logged {new:#?}");
        }
        Outcome::BuiltIn(want_status, field) => {
            ensure_eq!(status, *want_status, "{context}: {body}");
            let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            ensure!(answer[field].is_string(), "{context}: not the gateway's own answer: {body}");
            ensure!(new.is_empty(), "{context}: the backend saw a built-in request: {new:#?}");
        }
        Outcome::Forwarded { method, path, check } => {
            ensure_eq!(status, 200, "{context}: {body}");
            ensure_eq!(new.len(), 1, "{context}: expected one backend record: {new:#?}");
            clean_public_record(&new[0], method, path, context)?;
            check(&new[0]).map_err(|e| format!("{context}: {e}"))?;
        }
    }
    // Whatever the outcome, the backend never even routed an anonymous
    // request to a privileged handler (allowed or not).
    for record in &new {
        ensure_eq!(record["handler"], "public", "{context}: routed to {record:#}");
    }
    no_privileged_handler_ran(&rig.backend, context)
}

#[test]
fn no_attack_from_the_tracker_reaches_a_handler_it_was_not_authorised_for() {
    let rig = rig();
    assert_catch_all_reaches_the_backend(&rig);
    let mut failures = Vec::new();
    let mut sent = 0;
    for attack in the_tracker() {
        // Each as listed, then armed with a forged identity (the worst case).
        for (variant, extra) in [("as listed", ""), ("armed", FORGED_IDENTITY)] {
            let context = format!("{} ({variant}): {}", attack.name, attack.line);
            if let Err(failure) = judge(&rig, &attack, extra, &context) {
                failures.push(failure);
            }
            sent += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {sent} attacks failed:\n\n{}", failures.len(), failures.join("\n\n"));
    must(no_privileged_handler_ran(&rig.backend, "after the tracker"));
}

/// Headers HTTP/2 forbids (RFC 9113 section 8.2.2), which its client
/// library won't send: attacks built on them have no HTTP/2 form.
const CONNECTION_SPECIFIC: [&str; 7] =
    ["connection", "upgrade", "transfer-encoding", "keep-alive", "proxy-connection", "te", "host"];

/// An attack's HTTP/2 form: method, absolute URI (`:authority` from its
/// Host), header fields and body; `None` when it has none (a target that
/// isn't a path, a field HTTP/2 forbids, framing that is HTTP/1's own).
/// A request as HTTP/2 carries it: method, absolute URI, header fields.
type Http2Request = (String, String, Vec<(String, String)>);

fn as_http2(attack: &Attack, extra_headers: &str, addr: std::net::SocketAddr) -> Option<Http2Request> {
    let (method, target) = attack.line.split_once(' ')?;
    let uri = match target.strip_prefix("http://") {
        Some(rest) => format!("http://{addr}/{}", rest.split_once('/')?.1),
        None if target.starts_with('/') => format!("http://{addr}{target}"),
        None => return None,
    };
    let mut fields = Vec::new();
    for line in format!("{}{extra_headers}", attack.headers).split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        if CONNECTION_SPECIFIC.contains(&name.as_str()) || name.is_empty() {
            return None;
        }
        fields.push((name, value.trim().to_owned()));
    }
    Some((method.to_owned(), uri, fields))
}

/// The tracker over HTTP/2: an attack the gateway refused over HTTP/1.1
/// never reaches the backend over HTTP/2 either (its refusal may differ:
/// pingora's HTTP/2 layer refuses some requests before the gateway sees them,
/// and an absolute target is ordinary there), and one it forwarded arrives as
/// the same public request or not at all. No privileged handler ever runs.
fn judge_over_http2(rig: &Rig, attack: &Attack, extra_headers: &str, context: &str) -> Result<bool, String> {
    let Some((method, uri, fields)) = as_http2(attack, extra_headers, rig.gw.addr) else { return Ok(false) };
    let before = rig.backend.records().len();
    let answer = crate::common::raw_h2::request(rig.gw.addr, &method, &uri, &fields, attack.body.as_bytes());
    if let Err(why) = &answer {
        if why.starts_with("not expressible") || why.starts_with("not sent") {
            return Ok(false);
        }
    }
    let new: Vec<Value> = rig.backend.records().into_iter().skip(before).collect();
    eprintln!("{context} over HTTP/2 -> {answer:?}");
    match &attack.outcome {
        Outcome::Refused(..) | Outcome::RefusedByPingora(_) | Outcome::BuiltIn(..) => {
            ensure!(new.is_empty(), "{context} over HTTP/2: {answer:?}, yet the backend logged {new:#?}");
        }
        Outcome::Forwarded { method, path, check } => {
            if let Ok((200, _)) = answer {
                ensure_eq!(new.len(), 1, "{context} over HTTP/2: expected one backend record: {new:#?}");
                clean_public_record(&new[0], method, path, context)?;
                check(&new[0]).map_err(|e| format!("{context} over HTTP/2: {e}"))?;
            } else {
                ensure!(new.is_empty(), "{context} over HTTP/2: {answer:?}, yet the backend logged {new:#?}");
            }
        }
    }
    for record in &new {
        ensure_eq!(record["handler"], "public", "{context} over HTTP/2: routed to {record:#}");
    }
    no_privileged_handler_ran(&rig.backend, context)?;
    Ok(true)
}

#[test]
fn no_attack_from_the_tracker_reaches_a_handler_it_was_not_authorised_for_over_http2() {
    let rig = rig();
    assert_catch_all_reaches_the_backend(&rig);
    let (mut failures, mut sent, mut skipped) = (Vec::new(), 0, 0);
    for attack in the_tracker() {
        for (variant, extra) in [("as listed", ""), ("armed", FORGED_IDENTITY)] {
            let context = format!("{} ({variant}): {}", attack.name, attack.line);
            match judge_over_http2(&rig, &attack, extra, &context) {
                Ok(true) => sent += 1,
                Ok(false) => skipped += 1,
                Err(failure) => failures.push(failure),
            }
        }
    }
    eprintln!("over HTTP/2: {sent} sent, {skipped} with no HTTP/2 form");
    assert!(sent >= 20, "too few attacks have an HTTP/2 form: {sent} (skipped {skipped})");
    assert!(
        failures.is_empty(),
        "{} attacks failed over HTTP/2:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    must(no_privileged_handler_ran(&rig.backend, "after the tracker over HTTP/2"));
}

const UPGRADE_GET: &[u8] =
    b"GET / HTTP/1.1\r\nHost: gatehouse\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
const FORGED_DELETE: &[u8] = b"DELETE /item/x HTTP/1.1\r\nHost: gatehouse\r\nX-Auth-Admin: true\r\n\
      X-Auth-User-Id: 1\r\nConnection: close\r\n\r\n";

/// What the backend saw of an upgrade attempt: one plain `GET /`, nothing of
/// the DELETE (not as a request, not as a body, not in wsgiref's access log).
fn only_the_plain_get_arrived(backend: &LenientBackend, before: usize, context: &str) {
    let new: Vec<Value> = backend.records().into_iter().skip(before).collect();
    assert_eq!(new.len(), 1, "{context}: the backend saw more than the GET: {new:#?}");
    must(clean_public_record(&new[0], "GET", "/", context));
    assert_eq!(new[0]["request_line"], "GET / HTTP/1.1", "{context}: {:#}", new[0]);
    assert_eq!(new[0]["body"], "", "{context}: something rode along as a body: {:#}", new[0]);
    let access_log = backend.stderr();
    assert!(!access_log.contains("DELETE"), "{context}: the backend parsed the DELETE: {access_log}");
    must(no_privileged_handler_ran(backend, context));
}

#[test]
fn an_upgrade_cannot_carry_a_pipelined_forged_admin_request() {
    let rig = rig();
    assert_catch_all_reaches_the_backend(&rig);
    let before = rig.backend.records().len();
    let answer = exchange(&rig.gw, &[UPGRADE_GET, FORGED_DELETE].concat());
    let text = String::from_utf8_lossy(&answer).into_owned();
    eprintln!("pipelined upgrade -> {text}");
    let answers = responses(&answer);
    // The GET goes through as a plain GET: the catch-all allows no WebSocket.
    assert!(!text.contains(" 101 "), "a tunnel was opened: {text}");
    assert!(!answers.is_empty(), "no answer at all: {text:?}");
    assert_eq!(answers[0].0, 200, "{text}");
    // The DELETE is either judged on its own (anonymous: 401) or never
    // answered: pingora (pipelining off) closes a connection on which bytes
    // arrived past the request it answered. Either way it reaches nobody.
    match &answers[1..] {
        [] => {}
        [(status, body)] => {
            assert_eq!((*status, error_code(body).as_str()), (401, "missing_token"), "{text}")
        }
        more => panic!("more answers than requests: {more:?}"),
    }
    only_the_plain_get_arrived(&rig.backend, before, "pipelined upgrade");
}

#[test]
fn after_an_upgrade_request_the_connection_is_still_judged_request_by_request() {
    let rig = rig();
    assert_catch_all_reaches_the_backend(&rig);
    let before = rig.backend.records().len();
    let mut stream = TcpStream::connect(rig.gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(UPGRADE_GET).unwrap();
    // Read exactly the first answer (it has a Content-Length).
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !first.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-header: {first:?}");
        first.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&first).into_owned();
    assert!(head.split(' ').nth(1) == Some("200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((&echo["handler"], &echo["upgrade"]), (&json!("public"), &Value::Null), "{echo}");
    // Not a tunnel: the next request on the connection is judged like any other.
    stream.write_all(FORGED_DELETE).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let answers = responses(&rest);
    assert_eq!(answers.len(), 1, "{}", String::from_utf8_lossy(&rest));
    assert_eq!((answers[0].0, error_code(&answers[0].1).as_str()), (401, "missing_token"), "{answers:?}");
    only_the_plain_get_arrived(&rig.backend, before, "upgrade, then DELETE");
}

#[test]
fn control_without_the_gateway_the_same_attacks_do_reach_privileged_handlers() {
    // Sent straight to the backend, the tracker's tricks work: the negative
    // checks above fail if the gateway ever lets one through.
    let backend = LenientBackend::start();
    let cases: [(&str, &str, &str); 10] = [
        ("delete /item/x", "X_Auth_Admin: true\r\n", "admin"),
        ("DELETE item/x", "x_auth_admin: true\r\n", "admin"),
        ("GET ../admin/x", "X-Auth-Admin: true\r\n", "admin"),
        ("GET http://host/admin/x", "X-Auth-Admin: true\r\n", "admin"),
        ("GET /%2e%2e/admin/x", "X-Auth-Admin: true\r\n", "admin"),
        ("GET /admin%2fx", "X-Auth-Admin: true\r\n", "admin"),
        ("GET /item/x?_method=DELETE", "X-Auth-Admin: true\r\n", "admin"),
        (
            "PUT /item/x",
            "X-HTTP-Method-Override: DELETE\r\nX-Auth-Admin: true\r\nContent-Length: 0\r\n",
            "admin",
        ),
        ("get /item/x", "X-Auth_User-Id: 1\r\n", "user"),
        ("GET /item/x", "X_Auth_User_Id: 1\r\n", "user"),
    ];
    for (i, (line, headers, handler)) in cases.iter().enumerate() {
        let (status, body) = raw(backend.addr, &request(line, headers, ""));
        assert_eq!(status, 200, "{line}: {body}");
        let records = backend.records();
        assert_eq!(records.len(), i + 1, "{records:#?}");
        let record = &records[i];
        assert_eq!(
            (&record["handler"], &record["allowed"]),
            (&json!(handler), &json!(true)),
            "{line}: {record:#}"
        );
    }
    assert_eq!(backend.admin_handler_ran().len(), 8);
    assert_eq!(backend.user_handler_ran().len(), 2);
    let (_, body) = raw(backend.addr, &request("GET /x", "X-Forwarded-For: 1.2.3.4\r\n", ""));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["client_ip"], "1.2.3.4", "{body}");
}

#[test]
fn positive_control_admins_reach_admin_handlers_and_users_only_theirs() {
    let rig = rig();
    let (gw, backend) = (&rig.gw, &rig.backend);

    // An admin's DELETE reaches the admin handler: the test can see one run.
    let (admin, _) = gw.admin_login();
    let (status, body) = gw.send(reqwest::Method::DELETE, "/item/x", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["handler"], &body["allowed"]), (&json!("admin"), &json!(true)), "{body}");
    let ran = backend.admin_handler_ran();
    assert_eq!(ran.len(), 1, "{ran:#?}");
    assert_eq!((&ran[0]["method"], &ran[0]["path"]), (&json!("DELETE"), &json!("/item/x")), "{:#}", ran[0]);
    assert_eq!(ran[0]["admin"], "true", "{:#}", ran[0]);
    let admin_id = ran[0]["user_id"].as_str().expect("the admin's id arrived").to_owned();
    // And an admin path behind the catch-all.
    let (status, body) = gw.get("/admin/x", Some(&admin));
    assert_eq!((status, &body["handler"], &body["allowed"]), (200, &json!("admin"), &json!(true)), "{body}");
    assert_eq!(backend.admin_handler_ran().len(), 2);

    // A normal user: refused by the gateway on admin routes, the handler never runs.
    let user = gw.register("ulla@example.com", "ulla", "ulla-password");
    let user_id = user["id"].as_u64().expect("a numeric user id").to_string();
    assert_ne!(user_id, admin_id);
    let (token, _) = gw.login("ulla@example.com", "ulla-password");
    let before = backend.records().len();
    let (status, body) = gw.send(reqwest::Method::DELETE, "/item/x", Some(&token), None);
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_required")), "{body}");
    let (status, body) = gw.get("/admin/x", Some(&token));
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_required")), "{body}");
    assert_eq!(backend.records().len(), before, "a refused request reached the backend");
    assert_eq!(backend.admin_handler_ran().len(), 2, "{:#?}", backend.admin_handler_ran());

    // The user's own GET reaches the user handler, as that user.
    let (status, body) = gw.get("/item/x", Some(&token));
    assert_eq!(status, 200, "{body}");
    let ran = backend.user_handler_ran();
    assert_eq!(ran.len(), 1, "{ran:#?}");
    assert_eq!((&ran[0]["method"], &ran[0]["path"]), (&json!("GET"), &json!("/item/x")), "{:#}", ran[0]);
    assert_eq!(ran[0]["user_id"], user_id.as_str(), "{:#}", ran[0]);
    assert_eq!((&ran[0]["admin"], &ran[0]["is_admin"]), (&json!("false"), &json!(false)), "{:#}", ran[0]);

    // Without a token, the user route is refused before the backend.
    let (status, body) = gw.get("/item/x", None);
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_token")), "{body}");
    assert_eq!(backend.user_handler_ran().len(), 1);
    assert_eq!(backend.admin_handler_ran().len(), 2);
}

#[test]
fn the_backend_sees_exactly_the_real_identity_and_nothing_forged() {
    let rig = rig();
    let (gw, backend) = (&rig.gw, &rig.backend);
    let user = gw.register("vera@example.com", "vera", "vera-password");
    let user_id = user["id"].as_u64().unwrap().to_string();
    assert_ne!(user_id, "999");
    let (token, _) = gw.login("vera@example.com", "vera-password");

    // A real user on the user route, with forged admin and user id headers in
    // every spelling a lenient backend would merge into its own.
    let (status, body) = raw(
        gw.addr,
        &request(
            "GET /item/x",
            &format!(
                "Authorization: Bearer {token}\r\nX_Auth_Admin: true\r\nX-Auth-User-Id: 999\r\n\
                 X-Auth-Admin: true\r\nx_auth_user_id: 999\r\n"
            ),
            "",
        ),
    );
    assert_eq!(status, 200, "{body}");
    let ran = backend.user_handler_ran();
    assert_eq!(ran.len(), 1, "{ran:#?}");
    let record = &ran[0];
    assert_eq!(record["user_id"], user_id.as_str(), "not exactly the real user id: {record:#}");
    assert_eq!(record["HTTP_X_AUTH_USER_ID"], user_id.as_str(), "{record:#}");
    assert_eq!(record["is_admin"], false, "a forged admin flag was believed: {record:#}");
    assert_eq!(record["admin"], "false", "{record:#}");
    assert_eq!(record["HTTP_X_AUTH_ADMIN"], "false", "{record:#}");
    assert!(backend.admin_handler_ran().is_empty(), "{:#?}", backend.admin_handler_ran());

    // The same user's fresh POST with a method override stays a POST.
    let before = backend.records().len();
    let (status, body) = raw(
        gw.addr,
        &request(
            "POST /item/x",
            &format!(
                "Authorization: Bearer {token}\r\nX-HTTP-Method-Override: DELETE\r\n\
                 X-Auth-Admin: true\r\nContent-Length: 0\r\n"
            ),
            "",
        ),
    );
    assert_eq!(status, 200, "{body}");
    let new: Vec<Value> = backend.records().into_iter().skip(before).collect();
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!((&new[0]["method"], &new[0]["handler"]), (&json!("POST"), &json!("public")), "{:#}", new[0]);
    assert_eq!(new[0]["method_override"], Value::Null, "{:#}", new[0]);
    assert_eq!((&new[0]["user_id"], &new[0]["is_admin"]), (&json!(user_id), &json!(false)), "{:#}", new[0]);
    assert!(backend.admin_handler_ran().is_empty(), "{:#?}", backend.admin_handler_ran());
}

/// Roles reach a lenient backend only as the gateway decided them: every
/// client spelling of the roles header is gone, for an identified caller
/// (who gets the gateway's value) and for an anonymous one (who gets none).
#[test]
fn the_backend_sees_only_the_roles_the_gateway_decided() {
    let rig = rig();
    let (gw, backend) = (&rig.gw, &rig.backend);
    gw.register("rho@example.com", "rho", "rho-password");
    let out = gw.cli(&["user", "roles", "add", "rho@example.com", "editor"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (token, _) = gw.login("rho@example.com", "rho-password");
    let forged = "X-Auth-Roles: admin\r\nX_Auth_Roles: admin,billing\r\nx_auth_roles: root\r\n";
    for (line, auth, expected) in [
        ("GET /item/x", format!("Authorization: Bearer {token}\r\n"), json!("editor")),
        ("GET /public/x", String::new(), Value::Null),
    ] {
        let before = backend.records().len();
        let (status, body) = raw(gw.addr, &request(line, &format!("{auth}{forged}"), ""));
        assert_eq!(status, 200, "{line}: {body}");
        let new: Vec<Value> = backend.records().into_iter().skip(before).collect();
        assert_eq!(new.len(), 1, "{line}: {new:#?}");
        assert_eq!(new[0]["HTTP_X_AUTH_ROLES"], expected, "{line}: {:#}", new[0]);
    }
    assert!(backend.admin_handler_ran().is_empty(), "{:#?}", backend.admin_handler_ran());
}

/// The gateway judges `PUT`/`POST /item/x`, but a backend that honours a
/// `_method` form field would run `DELETE /item/x`, a route the gateway keeps
/// for admins: such a body is refused before the backend sees the request.
#[test]
fn a_method_override_in_a_form_body_is_refused() {
    let rig = rig();
    let (gw, backend) = (&rig.gw, &rig.backend);
    gw.register("wes@example.com", "wes", "wes-password");
    let (token, _) = gw.login("wes@example.com", "wes-password");
    let form = "_method=DELETE";
    let cases = [
        // Public by the catch-all: anyone may PUT /item/x.
        ("anonymous PUT /item/x", "PUT /item/x", String::new()),
        // A user's fresh token may POST /item/x, not DELETE it.
        ("a user's fresh POST /item/x", "POST /item/x", format!("Authorization: Bearer {token}\r\n")),
    ];
    let mut failures = Vec::new();
    for (name, line, auth) in cases {
        let before = backend.records().len();
        let headers = format!(
            "{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        );
        let (status, body) = raw(gw.addr, &request(line, &headers, form));
        let new: Vec<Value> = backend.records().into_iter().skip(before).collect();
        let read_as: Vec<String> = new
            .iter()
            .map(|r| {
                let text = |key: &str| r[key].as_str().unwrap_or("?").to_owned();
                format!(
                    "{} {} -> {} handler, allowed {}",
                    text("method"),
                    text("path"),
                    text("handler"),
                    r["allowed"]
                )
            })
            .collect();
        if (status, error_code(&body).as_str()) != (400, "method_override_refused") || !new.is_empty() {
            failures.push(format!(
                "{name} with body {form:?}: the client got {status} {body}; the backend read it as {read_as:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "a `_method` form field must be refused (400 method_override_refused) before the backend:\n{}",
        failures.join("\n")
    );
    assert!(backend.admin_handler_ran().is_empty(), "{:#?}", backend.admin_handler_ran());
}

/// A form body the gateway can't hold whole (chunked, or over 64 KiB) on a
/// path where an override would change the judgement is refused before the
/// backend sees anything: 411 without a length, 413 over 64 KiB.
#[test]
fn a_form_body_too_big_to_check_never_reaches_the_backend() {
    let rig = rig();
    let (gw, backend) = (&rig.gw, &rig.backend);
    let form_head = |framing: &str| {
        format!(
            "PUT /item/x HTTP/1.1\r\nHost: gatehouse\r\nContent-Type: application/x-www-form-urlencoded\r\n{framing}\r\n"
        )
    };
    let big = format!("pad={}&_method=DELETE", "x".repeat(70 * 1024));
    // (name, head, body pieces, expected status and code)
    type Case<'a> = (&'a str, String, Vec<Vec<u8>>, (u16, &'a str));
    let cases: Vec<Case> = vec![
        (
            "chunked",
            form_head("Transfer-Encoding: chunked\r\n"),
            vec![b"8\r\na=1&_met\r\n".to_vec(), b"a\r\nhod=DELETE\r\n".to_vec(), b"0\r\n\r\n".to_vec()],
            (411, "length_required"),
        ),
        (
            "70 KiB",
            form_head(&format!("Content-Length: {}\r\n", big.len())),
            vec![big.into_bytes()],
            (413, "body_too_large"),
        ),
    ];
    let before = backend.records().len();
    for (name, head, pieces, want) in cases {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        for piece in &pieces {
            std::thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(piece);
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        assert_eq!((status, error_code(body).as_str()), want, "{name}: {text}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let new: Vec<Value> = backend.records().into_iter().skip(before).collect();
    assert!(new.is_empty(), "the backend saw a refused request: {new:#?}");
}
