//! A real `redis-server` per test, on a loopback port of its own, with its
//! data in a temporary directory: tests can stop, kill and restart it.
//!
//! It runs with `appendfsync always`, the setting the README recommends
//! when a revocation must survive a Redis crash, so a SIGKILL loses nothing
//! Redis acknowledged.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse::config::file::{Backend, FileConfig, RedisSection, Word};

use super::config::{spanned, text};
use super::free_port;

/// A config change: the store's backend is Redis, configured by `redis`.
pub fn on_redis(redis: RedisSection) -> impl Fn(&mut FileConfig) + 'static {
    move |c| {
        c.store.backend = Some(spanned(Word(Backend::Redis)));
        c.store.redis = Some(spanned(redis.clone()));
    }
}

pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra `redis-server` arguments.
    args: Vec<String>,
    /// Extra `redis-cli` arguments (TLS) and its password.
    cli_args: Vec<String>,
    password: Option<String>,
    tls: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer::new();
        server.spawn();
        server
    }

    fn new() -> RedisServer {
        RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            args: Vec::new(),
            cli_args: Vec::new(),
            password: None,
            tls: false,
        }
    }

    /// A replica of `master`, ready once its replication link is up.
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let mut server = RedisServer::new();
        server.args = vec!["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()];
        server.spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Synced as both sides see it: the master counts a replica for WAIT
        // only once it is `online`, a little after the replica says `up`.
        while !(server.cli(&["INFO", "replication"]).contains("master_link_status:up")
            && master.cli(&["INFO", "replication"]).contains("state=online"))
        {
            assert!(Instant::now() < deadline, "the replica did not connect to its master");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// TLS only (a certificate for 127.0.0.1, written to `ca.pem` in its
    /// directory) and a password.
    pub fn start_tls_with_password(password: &str) -> RedisServer {
        let mut server = RedisServer::new();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert_path, key_path) = (server.ca_path(), server.dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let (cert_path, key_path) = (cert_path.display().to_string(), key_path.display().to_string());
        server.args = vec![
            "--tls-port".into(),
            server.port.to_string(),
            "--tls-cert-file".into(),
            cert_path.clone(),
            "--tls-key-file".into(),
            key_path,
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            password.into(),
        ];
        server.cli_args = vec!["--tls".into(), "--cacert".into(), cert_path];
        server.password = Some(password.to_owned());
        server.tls = true;
        server.spawn();
        server
    }

    pub fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The Unix socket it also listens on.
    pub fn socket_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// `[store.redis]` for a test gateway on this Redis, with short timeouts
    /// so a stopped server is noticed quickly; give it to [`on_redis`].
    pub fn section(&self) -> RedisSection {
        RedisSection {
            url: text(&self.url()),
            command_timeout: text("300ms"),
            connect_timeout: text("300ms"),
            ..RedisSection::default()
        }
    }

    /// The change that puts a test gateway's store on this Redis.
    pub fn store(&self) -> impl Fn(&mut FileConfig) + 'static {
        on_redis(self.section())
    }

    fn spawn(&mut self) {
        let plain_port = if self.tls { "0".to_owned() } else { self.port.to_string() };
        let child = Command::new("redis-server")
            .args(["--port", &plain_port, "--bind", "127.0.0.1", "--save", ""])
            .args(&self.args)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"])
            // Replicas sync at once rather than after the default 5 s wait for more.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--unixsocket")
            .arg(self.socket_path())
            .args(["--unixsocketperm", "700"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (apt-get install redis-server; .ci/run does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Whether Redis answers a PING now.
    pub fn ping(&self) -> bool {
        self.cli_command().arg("PING").output().is_ok_and(|out| out.stdout.starts_with(b"PONG"))
    }

    fn cli_command(&self) -> Command {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]).args(&self.cli_args);
        if let Some(password) = &self.password {
            command.env("REDISCLI_AUTH", password);
        }
        command
    }

    /// SIGKILL: Redis gets no chance to save anything more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli` against this server; its output, or `None` if it
    /// failed (for polling a server that may be busy or restarting).
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = self.cli_command().args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `redis-cli` against this server; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_command().args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Sentinel watching one master as `gatehouse`, with a quorum of one
/// and a one-second failure detection.
pub struct Sentinel {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Sentinel {
    pub fn start(master: &RedisServer) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor gatehouse 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds gatehouse 1000\nsentinel failover-timeout gatehouse 5000\n",
                dir.path().display(),
                master.port
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sentinel = Sentinel { port, _dir: dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "SENTINEL", "get-master-addr-by-name", "gatehouse"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&master.port.to_string()) {
                return sentinel;
            }
            assert!(Instant::now() < deadline, "sentinel did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port of the master it names now.
    pub fn master_port(&self) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SENTINEL", "get-master-addr-by-name", "gatehouse"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap_or_default().to_owned()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
