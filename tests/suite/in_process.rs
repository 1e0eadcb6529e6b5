//! The gateway as a library, as the harness of a service embedding it would
//! use it: started in this process through `gatehouse::server::run` with the
//! addresses and the shutdown signal the test chooses, its config adjusted
//! through the validated model rather than by editing text, and stopped by
//! the test itself.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatehouse::config::{Config, StoreBackend};
use gatehouse::server::{run, RunOptions};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::common::{free_port, Upstream};

/// Stops the gateway when the test says so.
struct StopWhenTold(Arc<Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopWhenTold {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// The smallest config a gateway serves from; everything test-specific is
/// set on the model below.
const BASE: &str = r#"
[admin]
token_file = "admin-token"

[tokens]
secret_file = "jwt-secret"

[upstream]
addresses = ["127.0.0.1:1"]

[[routes]]
path = "/debug/echo/**"
policy = "any"
"#;

#[test]
fn the_gateway_runs_in_process_on_chosen_addresses_and_stops_on_its_signal() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "an-admin-token-for-the-in-process-test-0123").unwrap();
    std::fs::write(dir.path().join("jwt-secret"), "a-signing-secret-for-the-in-process-test-0123").unwrap();
    let mut config = Config::parse(BASE, &dir.path().join("gatehouse.toml")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.server.listen = vec![listen];
    config.server.grace_period = Duration::ZERO;
    config.admin.listen = admin;
    config.upstream.addresses = vec![upstream.addr];
    config.store.backend = StoreBackend::Sled { path: dir.path().join("data") };

    let stop = Arc::new(Notify::new());
    let gateway = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || run(config, RunOptions::default(), Box::new(StopWhenTold(stop))))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(listen).is_err() || TcpStream::connect(admin).is_err() {
        assert!(!gateway.is_finished(), "the gateway stopped before listening");
        assert!(Instant::now() < deadline, "the gateway did not listen in time");
        std::thread::sleep(Duration::from_millis(10));
    }

    let http =
        reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
    let post =
        |path: &str, body: Value| http.post(format!("http://{listen}{path}")).json(&body).send().unwrap();
    let account = json!({"email": "in@example.com", "username": "in-process", "password": "in-process-pw-1"});
    assert_eq!(post("/register", account).status(), 201);
    let login = post("/login", json!({"email": "in@example.com", "password": "in-process-pw-1"}));
    assert_eq!(login.status(), 200);
    let access = login.json::<Value>().unwrap()["access_token"].as_str().unwrap().to_owned();
    let echo = http.get(format!("http://{listen}/debug/echo/x")).bearer_auth(&access).send().unwrap();
    assert_eq!(echo.status(), 200);
    let echo: Value = echo.json().unwrap();
    assert_eq!(echo["headers"]["x-auth-username"], json!(["in-process"]), "{echo}");
    let anonymous = http.get(format!("http://{listen}/debug/echo/x")).send().unwrap();
    assert_eq!(anonymous.status(), 401);

    stop.notify_one();
    let outcome = gateway.join().unwrap();
    assert!(outcome.is_ok(), "{:?}", outcome.err().map(|e| e.to_string()));
    // pingora drops its runtimes in the background: the listener closes soon after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_ok() {
        assert!(Instant::now() < deadline, "still listening after it returned");
        std::thread::sleep(Duration::from_millis(20));
    }
}
