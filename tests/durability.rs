//! Durability and growth: a revocation acknowledged with a 2xx survives
//! SIGKILL, and expired revocation entries are purged so the store doesn't grow
//! without bound.

// Tests assert by unwrapping: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::config::text;
use common::{admin_api, Gateway, Options, Upstream};
use reqwest::Method;
use serde_json::{json, Value};

#[test]
fn a_revocation_survives_sigkill_right_after_its_acknowledgement() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start(&upstream, Options::default());
    for round in 0..10 {
        let (access, refresh) = gw.admin_login();
        let (status, _) = gw.post("/logout", Some(&access), json!({"refresh_token": refresh}));
        assert_eq!(status, 200);
        gw.kill(); // SIGKILL the moment the 2xx arrived: no chance to flush later
        gw.spawn().unwrap_or_else(|e| panic!("restart {round}: {e}"));
        let (status, body) = gw.get("/item/chair", Some(&access));
        assert_eq!((status, body["error"].as_str()), (401, Some("token_revoked")), "round {round}");
        let (status, _) = gw.post("/refresh", Some(&refresh), Value::Null);
        assert_eq!(status, 401, "round {round}: refresh token revived");
    }
}

#[test]
fn expired_revocations_are_purged_in_the_background() {
    let upstream = Upstream::start();
    let gw = Gateway::start(
        &upstream,
        Options { access_ttl: "1s", ..Options::default() }.config(|c| c.store.purge_interval = text("1s")),
    );
    for _ in 0..5 {
        let (access, _) = gw.admin_login();
        assert_eq!(gw.post("/logout", Some(&access), Value::Null).0, 200);
    }
    let count = || admin_api(&gw, Method::GET, "/admin/stats")["revocations"].as_u64().unwrap();
    assert!(count() >= 1, "revocations were not recorded");
    let deadline = Instant::now() + Duration::from_secs(15);
    while count() > 0 {
        assert!(Instant::now() < deadline, "{} revocations still held after their tokens expired", count());
        std::thread::sleep(Duration::from_millis(200));
    }
}
