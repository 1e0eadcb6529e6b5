//! What ops teams rely on: metrics, health and readiness, access logs,
//! request ids, upstream failures and load balancing, config reload, TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gatehouse::config::file::{HealthCheck, Word};
use gatehouse::config::LogFormat;
use serde_json::{json, Value};

use crate::common::config::{spanned, text};
use crate::common::{free_port, send_signal, Gateway, Options, Upstream};

fn admin_get(gw: &Gateway, path: &str) -> (u16, String) {
    let resp = gw.http.get(format!("http://{}{}", gw.admin_addr, path)).send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_requests_logins_refreshes_and_revocations() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default());
    let (access, refresh) = gw.admin_login();
    assert_eq!(gw.get("/item/chair", Some(&access)).0, 200);
    assert_eq!(gw.get("/item/chair", None).0, 401);
    let _ =
        gw.post("/login", None, json!({"email": crate::common::ADMIN_EMAIL, "password": "wrong-password"}));
    assert_eq!(gw.post("/refresh", Some(&refresh), Value::Null).0, 200);
    assert_eq!(gw.post("/logout", Some(&access), Value::Null).0, 200);

    let resp = gw.http.get(format!("http://{}/metrics", gw.admin_addr)).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().unwrap();
    for needle in [
        r#"gatehouse_requests_total{outcome="forwarded",policy="any",route="/item/{name}",status="200"} 1"#,
        r#"gatehouse_requests_total{outcome="refused",policy="any",route="/item/{name}",status="401"} 1"#,
        r#"gatehouse_requests_total{outcome="builtin",policy="builtin",route="login",status="200"} 1"#,
        r#"gatehouse_logins_total{result="success"} 1"#,
        r#"gatehouse_logins_total{result="invalid_credentials"} 1"#,
        r#"gatehouse_refreshes_total{result="success"} 1"#,
        r#"gatehouse_revocations_total{kind="token"} 1"#,
        "gatehouse_revocation_entries 2",
        r#"gatehouse_auth_decision_seconds_count{policy="any"} 2"#,
        "gatehouse_upstream_response_seconds_bucket",
        "gatehouse_upstream_healthy",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[test]
fn health_and_readiness_follow_the_upstream() {
    let mut upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| c.upstream.get_mut().health_check_interval = text("100ms")),
    );
    assert_eq!(admin_get(&gw, "/healthz"), (200, r#"{"status":"ok"}"#.to_owned()));
    wait_for("ready", || admin_get(&gw, "/readyz").0 == 200);
    upstream.stop();
    wait_for("not ready", || admin_get(&gw, "/readyz").0 == 503);
    let (_, body) = admin_get(&gw, "/readyz");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["upstreams"][upstream.addr.to_string()], "unhealthy");
    assert_eq!(admin_get(&gw, "/healthz").0, 200, "alive even without upstreams");
}

/// `/readyz` is 503, naming the listener, until the proxy listener accepts
/// in this process: a `serve --upgrade` whose "old process" (this test)
/// hands over only the admin socket, while the proxy port is held by a
/// socket nobody accepts on. A TCP connect to it succeeds all along (the
/// kernel queues it), so only the gateway's own accept counts.
#[test]
fn readiness_waits_until_every_listener_accepts() {
    use std::os::fd::AsRawFd;

    let upstream = Upstream::start();
    let options = Options::default().config(|c| c.upstream.get_mut().health_check_interval = text("100ms"));
    let gw = Gateway::prepare(&upstream, &options);
    let admin = std::net::TcpListener::bind(gw.admin_addr).unwrap();
    // As a gateway's own (tokio) listeners are: the flag is the socket's, not the fd's.
    admin.set_nonblocking(true).unwrap();
    let squatter = std::net::TcpListener::bind(gw.addr).unwrap();
    let log = std::fs::File::create(gw.dir.path().join("gateway.log")).unwrap();
    let child = gw
        .command()
        .args(["serve", "--upgrade"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _stop = KillOnDrop(child);
    let mut fds = pingora::server::Fds::new();
    fds.add(gw.admin_addr.to_string(), admin.as_raw_fd());
    let socket = gw.dir.path().join("gatehouse-upgrade.sock");
    fds.send_to_sock(socket.to_str().unwrap()).unwrap();
    drop(admin);

    let readyz = || -> (u16, Value) {
        let (status, body) = admin_get(&gw, "/readyz");
        (status, serde_json::from_str(&body).unwrap())
    };
    let (proxy, admin) = (gw.addr.to_string(), gw.admin_addr.to_string());
    // Everything else ready: the store answers, the upstream is healthy and
    // the admin listener accepts.
    wait_for("the store, upstream and admin listener", || {
        let (_, body) = readyz();
        body["store"] == "ok"
            && body["upstreams"][upstream.addr.to_string()] == "healthy"
            && body["listeners"][&admin] == "accepting"
    });
    for _ in 0..10 {
        let (status, body) = readyz();
        assert_eq!(status, 503, "ready while the proxy listener is not accepting: {body}");
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["listeners"][&proxy], "not_accepting", "{body}");
        assert_eq!(body["listeners"][&admin], "accepting", "{body}");
        assert!(TcpStream::connect(gw.addr).is_ok(), "the squatter's socket takes connects");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The port is free: pingora binds it on its next try, and the gateway is ready.
    drop(squatter);
    wait_for("ready", || readyz().0 == 200);
    let (_, body) = readyz();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["listeners"], json!({proxy: "accepting", admin: "accepting"}));
    assert_eq!(gw.get("/items", None).0, 200);
    assert!(gw.log().contains("every listener is accepting connections"), "{}", gw.log());
}

/// Kills a gateway process started outside [`Gateway`] when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn access_logs_are_json_lines_without_secrets() {
    let upstream = Upstream::start();
    let gw =
        Gateway::start(&upstream, Options::default().config(|c| c.log.format = Some(Word(LogFormat::Json))));
    let (access, refresh) = gw.admin_login();
    let resp = gw
        .http
        .get(gw.url("/item/chair?x=1"))
        .bearer_auth(&access)
        .header("x-request-id", "trace-42")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = gw.get("/debug/echo/deny/x", None);
    // The access line is written after the response is sent.
    wait_for("the access log lines", || gw.log().contains("access_denied") && gw.log().contains("trace-42"));
    let log = gw.log();
    let lines = access_lines(&log);
    let forwarded = lines.iter().find(|l| l["request_id"] == "trace-42").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(forwarded["method"], "GET");
    assert_eq!(forwarded["path"], "/item/chair");
    assert_eq!(forwarded["route"], "/item/{name}");
    assert_eq!(forwarded["policy"], "any");
    assert_eq!(forwarded["outcome"], "forwarded");
    assert_eq!(forwarded["status"], 200);
    assert_eq!(forwarded["user_id"], 1);
    assert!(forwarded["latency_ms"].as_f64().unwrap() >= 0.0);
    let refused =
        lines.iter().find(|l| l["route"] == "/debug/echo/deny/**").unwrap_or_else(|| panic!("{log}"));
    assert_eq!((refused["outcome"].as_str(), refused["status"].as_u64()), (Some("refused"), Some(403)));
    assert_eq!(refused["error"], "access_denied");
    for secret in
        [&access, &refresh, &gw.jwt_secret, &gw.admin_token, &crate::common::ADMIN_PASSWORD.to_owned()]
    {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
}

/// The JSON access log's lines in a gateway's log.
fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "gatehouse::access")
        .collect()
}

/// The built-in endpoints' refusals carry their error code in the access
/// log, as proxied refusals do.
#[test]
fn access_logs_name_the_error_of_built_in_refusals() {
    let upstream = Upstream::start();
    let gw =
        Gateway::start(&upstream, Options::default().config(|c| c.log.format = Some(Word(LogFormat::Json))));
    let login = |body: &str, id: &str| {
        gw.http
            .post(gw.url("/login"))
            .header("x-request-id", id)
            .body(body.to_owned())
            .send()
            .unwrap()
            .status()
    };
    let wrong = json!({"email": crate::common::ADMIN_EMAIL, "password": "wrong-password"}).to_string();
    assert_eq!(login(&wrong, "wrong-password"), 401);
    assert_eq!(login("{not json", "bad-json"), 400);
    assert_eq!(login(&"x".repeat(4096), "too-large"), 413);
    let taken =
        json!({"email": crate::common::ADMIN_EMAIL, "username": "other", "password": "long-enough-1"});
    let resp = gw.http.post(gw.url("/register")).header("x-request-id", "taken").json(&taken).send().unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(
        login(
            &json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD})
                .to_string(),
            "ok"
        ),
        200
    );

    let expected = [
        ("wrong-password", 401, "invalid_credentials"),
        ("bad-json", 400, "invalid_json"),
        ("too-large", 413, "body_too_large"),
        ("taken", 409, "email_taken"),
        ("ok", 200, ""),
    ];
    wait_for("the access log lines", || gw.log().matches("gatehouse::access").count() >= expected.len());
    let log = gw.log();
    let lines = access_lines(&log);
    for (id, status, error) in expected {
        let line = lines.iter().find(|l| l["request_id"] == id).unwrap_or_else(|| panic!("no {id} in {log}"));
        assert_eq!(
            (line["status"].as_u64(), line["outcome"].as_str()),
            (Some(status), Some("builtin")),
            "{line}"
        );
        assert_eq!(line["error"], error, "{line}");
    }
}

/// Client addresses are logged as addresses (`client=127.0.0.1`), not as
/// Rust's `Some(127.0.0.1)`, in every line that names one.
#[test]
fn logs_name_clients_by_their_bare_address() {
    let upstream = Upstream::start();
    let gw =
        Gateway::start(&upstream, Options::default().config(|c| c.log.format = Some(Word(LogFormat::Text))));
    let wrong = json!({"email": crate::common::ADMIN_EMAIL, "password": "wrong-password"});
    assert_eq!(gw.post("/login", None, wrong).0, 401);
    wait_for("the access log line", || gw.log().contains("gatehouse::access"));
    let log = gw.log();
    let refused = log.lines().find(|l| l.contains("login refused")).unwrap_or_else(|| panic!("{log}"));
    assert!(refused.contains("client=127.0.0.1"), "{refused}");
    let access = log.lines().find(|l| l.contains("gatehouse::access")).unwrap_or_else(|| panic!("{log}"));
    assert!(access.contains("client=127.0.0.1"), "{access}");
    assert!(!log.contains("Some("), "an Option's Debug form in the log:\n{log}");
}

#[test]
fn request_ids_are_kept_or_created_and_passed_both_ways() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default());
    let echo = |id: Option<&str>| {
        let mut req = gw.http.get(gw.url("/debug/echo/public/x"));
        if let Some(id) = id {
            req = req.header("X-Request-Id", id);
        }
        let resp = req.send().unwrap();
        let back = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = resp.json().unwrap();
        (back, body["headers"]["x-request-id"].clone())
    };
    let (back, seen) = echo(Some("abc-123.x"));
    assert_eq!((back.as_str(), seen), ("abc-123.x", json!(["abc-123.x"])));
    let (back, seen) = echo(Some("bad id with spaces"));
    assert_eq!(back.len(), 32, "{back}");
    assert_eq!(seen, json!([back]));
    let (back, _) = echo(None);
    assert!(back.len() == 32 && back.chars().all(|c| c.is_ascii_hexdigit()), "{back}");
    // Refusals carry one too.
    let resp = gw.http.get(gw.url("/item/chair")).header("x-request-id", "refused-1").send().unwrap();
    assert_eq!(resp.headers()["x-request-id"], "refused-1");
}

#[test]
fn a_dead_upstream_gives_502_json_while_login_still_works() {
    let mut upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default());
    upstream.stop();
    let resp = gw.http.get(gw.url("/items")).send().unwrap();
    assert_eq!(
        resp.headers()["connection"],
        "close",
        "the gateway closes after a failed proxy: clients must know"
    );
    let (status, body) = (resp.status().as_u16(), resp.json::<Value>().unwrap());
    assert_eq!((status, body["error"].as_str()), (502, Some("upstream_unavailable")), "{body}");
    assert!(body["message"].as_str().unwrap().len() > 10);
    let (access, _) = gw.admin_login();
    assert_eq!(gw.get(&format!("/user/{}", 1), Some(&access)).0, 200);
}

#[test]
fn a_slow_upstream_gives_504_json() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(|c| c.upstream.get_mut().read_timeout = text("300ms")),
    );
    let (status, body) = gw.get("/debug/slow?ms=3000", None);
    assert_eq!((status, body["error"].as_str()), (504, Some("upstream_timeout")), "{body}");
    let (status, _) = gw.get("/debug/slow?ms=10", None);
    assert_eq!(status, 200);
}

#[test]
fn requests_are_balanced_round_robin_over_upstreams() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let gw = Gateway::start(
        &a,
        Options { upstreams: Some(vec![a.addr.to_string(), b.addr.to_string()]), ..Options::default() },
    );
    for _ in 0..6 {
        assert_eq!(gw.get("/debug/echo/public/x", None).0, 200);
    }
    assert_eq!((a.seen().len(), b.seen().len()), (3, 3));
}

#[test]
fn idempotent_requests_retry_on_another_upstream_when_connect_fails() {
    let live = Upstream::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(
        &live,
        Options { upstreams: Some(vec![dead, live.addr.to_string()]), ..Options::default() }
            .config(|c| c.upstream.get_mut().health_check = Some(Word(HealthCheck::None))),
    );
    for i in 0..8 {
        let (status, body) = gw.get("/debug/echo/public/x", None);
        assert_eq!(status, 200, "request {i}: {body}");
    }
    assert_eq!(live.seen().len(), 8);
}

#[test]
fn sighup_reloads_routes_and_a_broken_file_keeps_the_old_ones() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start(&upstream, Options::default());
    assert_eq!(gw.get("/debug/echo/public/x", None).0, 200);
    // A kept-alive connection opened before the reload.
    let mut kept = TcpStream::connect(gw.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = |stream: &mut TcpStream| {
        stream.write_all(b"GET /debug/echo/public/x HTTP/1.1\r\nHost: g\r\n\r\n").unwrap();
        let mut buf = [0u8; 8192];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).split(' ').nth(1).unwrap_or("").to_owned()
    };
    assert_eq!(ask(&mut kept), "200");

    let config = std::fs::read_to_string(&gw.config_path).unwrap();
    gw.rewrite_config(|c| {
        let public = c.routes.iter_mut().find(|r| r.get_ref().path.get_ref() == "/debug/echo/public/**");
        public.unwrap().get_mut().policy = spanned("deny".into());
    });
    let denied = std::fs::read_to_string(&gw.config_path).unwrap();
    assert_ne!(config, denied);
    send_signal(gw.pid(), "HUP");
    wait_for("the new route", || gw.get("/debug/echo/public/x", None).0 == 403);
    assert_eq!(ask(&mut kept), "403", "the kept-alive connection survives the reload");

    std::fs::write(
        &gw.config_path,
        format!("{denied}\n[[routes]]\npath = \"no-slash\"\npolicy = \"public\"\n"),
    )
    .unwrap();
    send_signal(gw.pid(), "HUP");
    wait_for("the refusal to be logged", || gw.log().contains("config reload refused"));
    assert_eq!(gw.get("/debug/echo/public/x", None).0, 403, "the previous config keeps serving");
    assert!(gw.log().contains("no-slash"), "the log says what is wrong");
    let metrics = admin_get(&gw, "/metrics").1;
    assert!(metrics.contains(r#"gatehouse_config_reloads_total{result="failure"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"gatehouse_config_reloads_total{result="success"} 1"#), "{metrics}");
}

#[test]
fn tls_listener_terminates_tls() {
    let upstream = Upstream::start();
    let cert = crate::common::tls::localhost_cert();
    let tls_port = free_port();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(crate::common::tls::serve_tls(&cert, tls_port, Some(&["http/1.1"]))),
    );
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .resolve("localhost", format!("127.0.0.1:{tls_port}").parse().unwrap())
        .build()
        .unwrap();
    wait_for("the TLS listener", || TcpStream::connect(("127.0.0.1", tls_port)).is_ok());
    let resp = client.get(format!("https://localhost:{tls_port}/items")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["items"], json!(["chair", "desk"]));
    // Login over TLS too.
    let resp = client
        .post(format!("https://localhost:{tls_port}/login"))
        .json(&json!({"email": crate::common::ADMIN_EMAIL, "password": crate::common::ADMIN_PASSWORD}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The TLS listener counts for readiness like the plain one (its probe
    // is seen before any handshake).
    wait_for("the TLS listener in /readyz", || {
        let body: Value = serde_json::from_str(&admin_get(&gw, "/readyz").1).unwrap();
        body["listeners"][format!("127.0.0.1:{tls_port}")] == "accepting"
    });
    drop(gw);
}

/// A second gateway started on a taken address exits at once, non-zero,
/// naming the address, instead of retrying forever while answering ready.
#[test]
fn a_gateway_on_a_taken_address_exits_with_a_clear_error() {
    let upstream = Upstream::start();
    let first = Gateway::start(&upstream, Options::default());
    let started = Instant::now();
    let out = first.command().arg("serve").stdin(std::process::Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "the second gateway started");
    assert!(started.elapsed() < Duration::from_secs(10), "it took {:?} to give up", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.addr)) && stderr.contains("in use"),
        "{stderr}"
    );
    // The first one is untouched.
    assert_eq!(first.get("/items", None).0, 200);
}
