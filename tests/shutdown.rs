//! Signal handling, in its own test binary: SIGTERM stops the gateway cleanly
//! within its configured grace period.

// Tests assert by unwrapping: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, Options, Upstream};

#[test]
fn sigterm_stops_the_gateway_promptly() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start(&upstream, Options::default());
    let (admin, _) = gw.admin_login();
    assert_eq!(gw.get("/item/chair", Some(&admin)).0, 200);
    let started = Instant::now();
    let status = gw.terminate();
    assert!(status.success() || status.code().is_some(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(std::net::TcpStream::connect(gw.addr).is_err(), "still listening after exit");
}
