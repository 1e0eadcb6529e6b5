//! Test harness: the real `gatehouse` binary and upstream-mock, on loopback.
//!
//! Each test starts its own upstream (in-process, recording what it receives)
//! and its own gateway process with a fresh store and fresh secrets, waits for
//! readiness by polling TCP connects, and kills everything on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatehouse::config::file::FileConfig;
use gatehouse::config::{Config, SecretSource};
use gatehouse::server::{run, RunOptions};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use serde_json::{json, Value};

pub mod config;
pub mod grpc;
pub mod lenient;
pub mod raw_h2;
pub mod redis;
pub mod tls;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// upstream-mock running in-process, with a log of every request it received.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Upstream::start_on(listener, upstream_mock::MockOptions::default())
    }

    /// Serves on a listener bound beforehand (so its address can go into a
    /// gateway config first), with the given mock options.
    pub fn start_on(listener: std::net::TcpListener, options: upstream_mock::MockOptions) -> Upstream {
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let log = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = upstream_mock::router(options).layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let log = Arc::clone(&log);
                        async move {
                            let line = format!("{} {}", req.method(), req.uri());
                            log.lock().unwrap().push(line);
                            next.run(req).await
                        }
                    },
                ));
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = shutdown_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Upstream { addr, seen, shutdown: Some(shutdown), thread: Some(thread) }
    }

    /// "METHOD /path?query" for every request received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    pub fn saw(&self, needle: &str) -> bool {
        self.seen().iter().any(|l| l.contains(needle))
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port for a gateway listener, below the kernel's ephemeral range
/// (32768 and up): upstreams bound to port 0 land in that range, so one can
/// never take a port picked here between picking and binding.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1_000) as u16 * 12,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (port - 20_000) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn random_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 36]>())
}

/// A change to a test gateway's config model.
pub type Change = Rc<dyn Fn(&mut FileConfig)>;

/// How to configure a test gateway; `Clone` to start several alike.
#[derive(Clone)]
pub struct Options {
    pub access_ttl: &'static str,
    /// After SIGTERM, how long in-flight requests get.
    pub grace_period: &'static str,
    /// Upstream addresses instead of the one test upstream.
    pub upstreams: Option<Vec<String>>,
    pub seed_admin: bool,
    /// The HS256 secret, to share one between gateways; random if `None`.
    pub jwt_secret: Option<String>,
    /// Whether `start` waits until `/readyz` reports the store working (the
    /// Redis store connects in the background). `false` for a gateway whose
    /// store is meant to fail.
    pub wait_for_store: bool,
    /// Changes to the standard config (`config::standard`), in order.
    pub changes: Vec<Change>,
}

impl Options {
    /// Adds a change to the standard config, e.g.
    /// `.config(|c| c.endpoints.allow_registration = Some(false))`.
    pub fn config(mut self, change: impl Fn(&mut FileConfig) + 'static) -> Self {
        self.changes.push(Rc::new(change));
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access_ttl: "15m",
            grace_period: "0s",
            upstreams: None,
            seed_admin: true,
            jwt_secret: None,
            wait_for_store: true,
            changes: Vec::new(),
        }
    }
}

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The config as last written to `config_path`.
    pub config: FileConfig,
    pub jwt_secret: String,
    pub admin_token: String,
    pub http: reqwest::blocking::Client,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    /// A gateway not yet running: its directory, secrets and config file,
    /// and (unless `seed_admin` is off) the admin account in its store.
    pub fn prepare(upstream: &Upstream, options: &Options) -> Gateway {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut gateway = Gateway {
            child: None,
            addr,
            admin_addr: addr,
            config_path: PathBuf::new(),
            // Replaced by `write_config` below, with ports and options.
            config: config::standard(addr, addr, &[], "", ""),
            jwt_secret: options.jwt_secret.clone().unwrap_or_else(random_secret),
            admin_token: random_secret(),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        gateway.write_config(upstream, options);
        if options.seed_admin {
            let out = gateway.cli(
                &["user", "add", "--email", ADMIN_EMAIL, "--username", "admin", "--admin"],
                ADMIN_PASSWORD,
            );
            assert!(
                out.status.success(),
                "seeding the admin failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        gateway
    }

    pub fn start(upstream: &Upstream, options: Options) -> Gateway {
        let mut gateway = Gateway::prepare(upstream, &options);
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match gateway.spawn() {
                Ok(()) => {
                    if options.wait_for_store {
                        gateway.wait_for_store();
                    }
                    return gateway;
                }
                Err(e) => {
                    // Most likely a port taken between picking and binding: new ports.
                    last_error = e;
                    gateway.write_config(upstream, &options);
                }
            }
        }
        panic!("gateway did not start: {last_error}");
    }

    /// One gateway for the whole test binary, for the tests that need no
    /// fresh one: they forge their own tokens or send anonymous requests, and
    /// read neither the upstream's record nor the log. It runs in this process
    /// (`gatehouse::server::run`, no child to start per test), from the
    /// standard test config loaded into the config model; what differs from
    /// a child process is set on the model: the secrets, which this process's
    /// environment does not carry.
    pub fn shared() -> &'static Gateway {
        static SHARED: OnceLock<(Upstream, Gateway)> = OnceLock::new();
        &SHARED
            .get_or_init(|| {
                let upstream = Upstream::start();
                let gateway = Gateway::start_in_process(&upstream, Options::default());
                (upstream, gateway)
            })
            .1
    }

    fn start_in_process(upstream: &Upstream, options: Options) -> Gateway {
        let gateway = Gateway::prepare(upstream, &options);
        let mut config = Config::load(&gateway.config_path).unwrap();
        let secret_file = |name: &str, secret: &str| {
            let path = gateway.dir.path().join(name);
            std::fs::write(&path, secret).unwrap();
            Some(path)
        };
        config.tokens.secret = SecretSource {
            env: None,
            file: secret_file("jwt-secret", &gateway.jwt_secret),
            ..config.tokens.secret
        };
        config.admin.token = SecretSource {
            env: None,
            file: secret_file("admin-token", &gateway.admin_token),
            ..config.admin.token
        };
        std::thread::spawn(move || run(config, RunOptions::default(), Box::new(NeverStop)));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(gateway.addr).is_err() || TcpStream::connect(gateway.admin_addr).is_err() {
            assert!(Instant::now() < deadline, "the shared gateway did not listen in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        gateway.wait_for_store();
        gateway
    }

    /// Waits until `/readyz` says the store works: a Redis store connects in
    /// the background, and until it has, built-in endpoints answer 503.
    fn wait_for_store(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("http://{}/readyz", self.admin_addr);
        while Instant::now() < deadline {
            let store_ok = self
                .http
                .get(&url)
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|body| body["store"] == "ok");
            if store_ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the gateway's store did not become ready: {}", self.log());
    }

    /// Writes the config with freshly picked ports.
    fn write_config(&mut self, upstream: &Upstream, options: &Options) {
        self.addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.admin_addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let upstreams = options.upstreams.clone().unwrap_or_else(|| vec![upstream.addr.to_string()]);
        self.config = config::standard(
            self.addr,
            self.admin_addr,
            &upstreams,
            options.access_ttl,
            options.grace_period,
        );
        for change in &options.changes {
            change(&mut self.config);
        }
        self.config_path = self.dir.path().join("gatehouse.toml");
        self.rewrite_config(|_| {});
    }

    /// Changes the config and writes it to `config_path` (for a reload or a
    /// restart to pick up).
    pub fn rewrite_config(&mut self, change: impl FnOnce(&mut FileConfig)) {
        change(&mut self.config);
        std::fs::write(&self.config_path, toml::to_string(&self.config).unwrap()).unwrap();
    }

    /// Starts (or restarts) the gateway process and waits for both listeners.
    pub fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let child = self
            .command()
            .arg("serve")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("gateway exited with {status}: {}", self.log()));
            }
            if TcpStream::connect(self.addr).is_ok() && TcpStream::connect(self.admin_addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("gateway not ready in time: {}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// A `gatehouse` command with this gateway's config and secrets.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("GATEHOUSE_JWT_SECRET", &self.jwt_secret)
            .env("GATEHOUSE_ADMIN_TOKEN", &self.admin_token)
            .env("GATEHOUSE_LOG", std::env::var("GATEHOUSE_TEST_LOG").unwrap_or_else(|_| "info".into()));
        cmd
    }

    /// Runs a CLI command with `stdin` as its input.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
    }

    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn register(&self, email: &str, username: &str, password: &str) -> Value {
        let (status, body) =
            self.post("/register", None, json!({"email": email, "username": username, "password": password}));
        assert_eq!(status, 201, "{body}\n{}", self.log());
        body
    }

    /// Logs in; returns (access, refresh).
    pub fn login(&self, email: &str, password: &str) -> (String, String) {
        let (status, body) = self.post("/login", None, json!({"email": email, "password": password}));
        assert_eq!(status, 200, "{body}\n{}", self.log());
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    pub fn admin_login(&self) -> (String, String) {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway running");
        send_signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shared gateway's shutdown signal: it runs until the test binary exits.
struct NeverStop;

#[async_trait]
impl ShutdownSignalWatch for NeverStop {
    async fn recv(&self) -> ShutdownSignal {
        std::future::pending().await
    }
}

/// Sends raw bytes on a new connection and reads until the gateway closes it
/// (send `Connection: close`). Returns the status code and the body.
pub fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Calls the admin API with the admin token.
pub fn admin_api(gw: &Gateway, method: reqwest::Method, path: &str) -> Value {
    let resp = gw
        .http
        .request(method, format!("http://{}{}", gw.admin_addr, path))
        .bearer_auth(&gw.admin_token)
        .send()
        .unwrap();
    resp.json().unwrap()
}

/// Sends a signal with kill(1): the crate forbids `unsafe`, so no libc call.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}
