//! `tests/common/lenient_backend.py` as a test upstream: a Python (wsgiref) backend
//! that reads requests the forgiving way many real backends do (lower-case
//! methods, relative targets resolved against `/`, `X_Auth_Admin` read as
//! `X-Auth-Admin`, `_method` and `X-HTTP-Method-Override` overrides, ...)
//! and logs every request it handled, so a test can see what really arrived
//! and which handler it reached. See the script's docstring for the rules.
//!
//! Needs `python3` on the PATH.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How long the script gets to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct LenientBackend {
    pub addr: SocketAddr,
    child: Child,
    log_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LenientBackend {
    /// Starts the backend on a free loopback port and waits until it listens.
    pub fn start() -> LenientBackend {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("requests.jsonl");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("common").join("lenient_backend.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("0")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // A file, not a pipe: wsgiref logs every request to stderr and
            // nobody would drain a pipe.
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the script can never block on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lenient backend did not start in time: {}", read(&stderr_path));
            }
        };
        let addr = match line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok()) {
            Some(addr) => addr,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lenient backend said {line:?} instead of its address: {}", read(&stderr_path));
            }
        };
        LenientBackend { addr, child, log_path, stderr_path, _dir: dir }
    }

    /// Every request the backend handled so far, oldest first. Each record
    /// is logged before its answer is sent, so a request a test got an answer
    /// for is always there.
    pub fn records(&self) -> Vec<Value> {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log_path) {
            file.read_to_string(&mut text).unwrap();
        }
        // Only whole lines: one may be half-written at this instant.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad log line {line:?}: {e}")))
            .collect()
    }

    /// Records of admin handlers that actually ran (`handler == "admin"` and
    /// `allowed == true`).
    pub fn admin_handler_ran(&self) -> Vec<Value> {
        self.ran("admin")
    }

    /// Records of user handlers that actually ran (`handler == "user"` and
    /// `allowed == true`).
    pub fn user_handler_ran(&self) -> Vec<Value> {
        self.ran("user")
    }

    fn ran(&self, handler: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["handler"] == handler && r["allowed"] == Value::Bool(true))
            .collect()
    }

    /// The script's stderr so far (wsgiref's access log, tracebacks).
    pub fn stderr(&self) -> String {
        read(&self.stderr_path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for LenientBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
