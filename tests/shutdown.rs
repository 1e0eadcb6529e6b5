//! Signal handling, in its own test binary: SIGTERM drains in-flight requests
//! and stops within the grace period; `serve --upgrade` plus SIGQUIT hands the
//! listening sockets to a new process without refusing a request.

// Tests assert by unwrapping: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{send_signal, Gateway, Options, Upstream};

#[test]
fn sigterm_stops_the_gateway_promptly() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start(&upstream, Options::default());
    let (admin, _) = gw.admin_login();
    assert_eq!(gw.get("/item/chair", Some(&admin)).0, 200);
    let started = Instant::now();
    let status = gw.terminate();
    assert!(status.code().is_some(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(std::net::TcpStream::connect(gw.addr).is_err(), "still listening after exit");
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start(&upstream, Options { grace_period: "2s", ..Options::default() });
    let url = gw.url("/debug/slow?ms=600");
    let client = gw.http.clone();
    let in_flight = std::thread::spawn(move || {
        let resp = client.get(url).send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    });
    // Let the request reach the upstream, then ask the gateway to stop. It stops
    // accepting at once and gives in-flight requests the grace period (2 s here).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upstream.saw("/debug/slow") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = gw.terminate();
    let (code, body) = in_flight.join().unwrap();
    assert_eq!(code, 200, "in-flight request lost: {body}");
    assert!(body.contains("600"));
    assert!(status.code().is_some());
}

#[test]
fn upgrade_hands_over_sockets_without_refusing_requests() {
    let upstream = Upstream::start();
    // The grace period lets the old process finish connections it accepted
    // just before it stopped accepting.
    let mut old = Gateway::start(&upstream, Options { grace_period: "2s", ..Options::default() });

    // Clients keep calling throughout the handover, each call on a new
    // connection: none may be refused. (An idle kept-alive connection to the
    // old process is closed when it exits, as with nginx or HAProxy reloads;
    // clients reconnect.) One race is pingora's: a connection the old process
    // accepts at the very instant it stops, before the request arrives, looks
    // idle and is closed unanswered. HTTP clients retry an idempotent request
    // closed before any answer, and so does this one, once; it must be rare.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = [(); 3].map(|()| Arc::new(AtomicUsize::new(0)));
    let [ok, retried, failed] = counts.clone();
    let load = {
        let stop = Arc::clone(&stop);
        let [ok, retried, failed] = counts.clone();
        let url = old.url("/items");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let mut outcome = client.get(&url).send();
                if matches!(&outcome, Err(e) if closed_before_answering(e)) {
                    retried.fetch_add(1, Ordering::Relaxed);
                    eprintln!("retrying once after {outcome:?}");
                    outcome = client.get(&url).send();
                }
                match outcome {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed during upgrade: {other:?}");
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // The new process waits on the upgrade socket; SIGQUIT makes the old one hand over.
    let log = std::fs::File::create(old.dir.path().join("new.log")).unwrap();
    let mut new =
        old.command().args(["serve", "--upgrade"]).stdout(Stdio::null()).stderr(log).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send_signal(old.pid(), "QUIT");
    let old_status = old.wait_for_exit(Duration::from_secs(20));
    assert!(old_status.is_some(), "the old gateway did not exit after handing over");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let new_alive = new.try_wait().unwrap().is_none();
    let served = gw_get_status(&old.url("/items"));
    let _ = new.kill();
    let _ = new.wait();
    let new_log = std::fs::read_to_string(old.dir.path().join("new.log")).unwrap_or_default();
    assert!(new_alive, "the new gateway exited: {new_log}");
    assert_eq!(served, 200, "the new gateway does not serve: {new_log}");
    let (ok, retried, failed) =
        (ok.load(Ordering::Relaxed), retried.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 10, "too little traffic to judge");
    assert_eq!(failed, 0, "requests failed during the upgrade ({ok} ok, {retried} retried)");
    assert!(retried * 100 <= ok, "connections closed unanswered are not rare: {retried} of {ok}");
}

/// Whether a request's connection was accepted and then closed (or reset)
/// before any answer: not refused, not timed out.
fn closed_before_answering(error: &reqwest::Error) -> bool {
    if error.is_connect() || error.is_timeout() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe);
        }
        if cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        source = cause.source();
    }
    false
}

fn gw_get_status(url: &str) -> u16 {
    let client =
        reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    client.get(url).send().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[test]
fn only_a_connection_closed_unanswered_is_retried() {
    let client = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closing = listener.local_addr().unwrap();
    let closer = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let closed = client.get(format!("http://{closing}/items")).send().unwrap_err();
    closer.join().unwrap();
    assert!(closed_before_answering(&closed), "{closed:?}");

    let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = client.get(format!("http://{refusing}/items")).send().unwrap_err();
    assert!(!closed_before_answering(&refused), "{refused:?}");
}
