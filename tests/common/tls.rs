//! A certificate for `localhost` and the config change that serves TLS with
//! it, for the tests of TLS listeners, HTTP/2 over TLS and gRPC over TLS.

use gatehouse::config::file::FileConfig;

use super::config::{spanned, text};

/// A self-signed certificate for `localhost`, written to a directory that
/// lives as long as this value.
pub struct LocalhostCert {
    pub pem: String,
    pub cert_path: String,
    pub key_path: String,
    _dir: tempfile::TempDir,
}

pub fn localhost_cert() -> LocalhostCert {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    LocalhostCert {
        pem: cert.cert.pem(),
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
        _dir: dir,
    }
}

/// Serves TLS on `port` with `cert`; `alpn` sets `server.tls_alpn`.
pub fn serve_tls(
    cert: &LocalhostCert,
    port: u16,
    alpn: Option<&[&str]>,
) -> impl Fn(&mut FileConfig) + 'static {
    let (cert_path, key_path) = (cert.cert_path.clone(), cert.key_path.clone());
    let alpn: Option<Vec<String>> = alpn.map(|a| a.iter().map(|s| (*s).to_owned()).collect());
    move |c: &mut FileConfig| {
        c.server.tls_listen = Some(spanned(vec![spanned(format!("127.0.0.1:{port}"))]));
        c.server.tls_cert = text(&cert_path);
        c.server.tls_key = text(&key_path);
        c.server.tls_alpn = alpn.as_ref().map(|a| spanned(a.iter().map(|s| spanned(s.clone())).collect()));
    }
}
