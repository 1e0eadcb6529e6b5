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
    // clients reconnect.)
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let url = old.url("/items");
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send() {
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
    assert!(ok.load(Ordering::Relaxed) > 10, "too little traffic to judge");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrade ({} ok)",
        ok.load(Ordering::Relaxed)
    );
}

fn gw_get_status(url: &str) -> u16 {
    let client =
        reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    client.get(url).send().map(|r| r.status().as_u16()).unwrap_or(0)
}
