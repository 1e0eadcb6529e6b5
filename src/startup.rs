//! Everything `serve` builds from a [`Config`] before pingora binds a socket
//! or starts a thread: the secrets, the token service (with its key files),
//! the password hasher, the route table and upstream pool, the TLS
//! certificates and pingora's own settings.
//!
//! It is one function so that `gatehouse check-config` can run exactly what
//! `serve` runs and never pass a config that `serve` refuses. The store is
//! not opened here: a running gateway holds sled's lock, and the Redis store
//! starts its own runtime.

use std::net::SocketAddr;

use pingora::listeners::tls::TlsSettings;
use pingora::protocols::ALPN;
use pingora::server::configuration::ServerConf;

use crate::config::{Alpn, Config, Secret, SecretError, StoreBackend, TlsConfig};
use crate::passwords::{PasswordConfigError, Passwords};
use crate::proxy::Live;
use crate::store::StoreError;
use crate::tokens::{KeyError, TokenService};
use crate::upstreams::UpstreamError;

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Passwords(#[from] PasswordConfigError),
    #[error(transparent)]
    Upstreams(#[from] UpstreamError),
    #[error("token keys: {0}")]
    Keys(#[from] KeyError),
    #[error("cannot set up TLS on {addr}: {message}")]
    Tls { addr: SocketAddr, message: String },
    /// A listen address can't be bound (another process has it, or it isn't
    /// this host's): pingora would retry it forever while answering ready.
    #[error("cannot listen on {addr}: {source} (is another gateway or program using it?)")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Binds every address the gateway will listen on for a moment, and lets go:
/// a taken one is a start-up error with its address, where pingora would log
/// "will try again" every second forever. (std sets `SO_REUSEADDR`, so a
/// port left in TIME_WAIT by a previous run is not mistaken for a taken one.)
/// Not during `--upgrade`, whose listeners come from the running gateway.
pub fn check_listen_addresses(config: &Config) -> Result<(), StartupError> {
    for addr in listen_addresses(config) {
        std::net::TcpListener::bind(addr).map_err(|source| StartupError::Listen { addr, source })?;
    }
    Ok(())
}

/// Every address the gateway listens on: the plain and TLS proxy listeners,
/// then the admin listener.
pub fn listen_addresses(config: &Config) -> Vec<SocketAddr> {
    let tls = config.server.tls.iter().flat_map(|tls| tls.listen.iter());
    config.server.listen.iter().chain(tls).chain(std::iter::once(&config.admin.listen)).copied().collect()
}

/// The secrets the config names, loaded.
pub struct Secrets {
    /// `None` only with an asymmetric signing key, which makes the HS256
    /// secret optional (it then only verifies older tokens without a `kid`).
    pub token: Option<Secret>,
    pub admin: Secret,
    /// Loaded to check it; the Redis store reads it again when it connects.
    pub redis_password: Option<Secret>,
}

impl Secrets {
    /// Every secret, or the first that is missing, too short or unreadable.
    pub fn load(config: &Config) -> Result<Secrets, StartupError> {
        let (secrets, problems) = Secrets::load_or_stand_in(config);
        match problems.into_iter().next() {
            Some((_, first)) => Err(first.into()),
            None => Ok(secrets),
        }
    }

    /// Every secret that loads, and a random stand-in for each one that does
    /// not, with the reasons, each named by its config section: a check run
    /// where the real secrets are not (`check-config` on a build machine) can
    /// still build everything else. Crate-private: only the check may go on
    /// with stand-ins; [`Secrets::load`] refuses them.
    pub(crate) fn load_or_stand_in(config: &Config) -> (Secrets, Vec<(&'static str, SecretError)>) {
        let mut problems = Vec::new();
        let mut or_stand_in = |section: &'static str, loaded: Result<Secret, SecretError>| {
            loaded.unwrap_or_else(|e| {
                problems.push((section, e));
                Secret::stand_in()
            })
        };
        let token = match config.tokens.secret.load() {
            Err(SecretError::Missing { .. }) if config.tokens.signing_key.is_some() => None,
            loaded => Some(or_stand_in("tokens", loaded)),
        };
        let admin = or_stand_in("admin", config.admin.token.load());
        let redis_password = match &config.store.backend {
            StoreBackend::Redis(redis) => {
                redis.password.as_ref().map(|p| or_stand_in("store.redis", p.load_any_length()))
            }
            StoreBackend::Sled { .. } => None,
        };
        (Secrets { token, admin, redis_password }, problems)
    }
}

/// What [`prepare`] built, ready for `serve` to wire into pingora.
pub struct Prepared {
    pub admin_token: Secret,
    pub passwords: Passwords,
    /// The route table and upstream pool (replaced on SIGHUP).
    pub live: Live,
    pub tokens: TokenService,
    /// One TLS listener per `server.tls_listen` address, certificate checked.
    pub tls: Vec<(SocketAddr, TlsSettings)>,
    pub server_conf: ServerConf,
}

/// Loads the secrets, then builds everything as [`prepare_with`] does.
pub fn prepare(config: &Config) -> Result<Prepared, StartupError> {
    // Secrets first: a missing secret should stop start-up before anything else.
    prepare_with(config, Secrets::load(config)?)
}

/// Builds every piece `serve` builds from `config` without binding a socket
/// or starting a thread: reads the key files and TLS certificates,
/// constructs the token service, the password hasher, the route table and
/// the upstream pool.
pub fn prepare_with(config: &Config, secrets: Secrets) -> Result<Prepared, StartupError> {
    let passwords = Passwords::new(&config.passwords)?;
    let live = Live::new(config.routes.clone(), config.upstream.clone())?;
    let tokens = TokenService::with_keys(&config.tokens, secrets.token.as_ref())?;
    let tls = match &config.server.tls {
        Some(tls) => tls_settings(tls)?,
        None => Vec::new(),
    };
    Ok(Prepared {
        admin_token: secrets.admin,
        passwords,
        live,
        tokens,
        tls,
        server_conf: config.server.pingora_server_conf(),
    })
}

/// Reads the certificate chain and key once here, because pingora reads them
/// only when the listener starts, and panics there if they are unusable.
fn tls_settings(tls: &TlsConfig) -> Result<Vec<(SocketAddr, TlsSettings)>, StartupError> {
    let (cert, key) = (tls.cert.display().to_string(), tls.key.display().to_string());
    let refuse = |addr: SocketAddr, message: String| StartupError::Tls { addr, message };
    let Some(&first) = tls.listen.first() else { return Ok(Vec::new()) };
    for path in [&tls.cert, &tls.key] {
        std::fs::File::open(path)
            .map_err(|e| refuse(first, format!("cannot read {}: {e}", path.display())))?;
    }
    let (chain, private_key) = pingora::tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| refuse(first, e.to_string()))?
        .ok_or_else(|| refuse(first, format!("no certificate in {cert} or no private key in {key}")))?;
    pingora::tls::install_default_crypto_provider();
    pingora::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| refuse(first, e.to_string()))?;
    tls.listen
        .iter()
        .map(|&addr| {
            let mut settings =
                TlsSettings::intermediate(&cert, &key).map_err(|e| refuse(addr, e.to_string()))?;
            settings.set_alpn(match tls.alpn {
                Alpn::H2AndHttp1 => ALPN::H2H1,
                Alpn::Http1Only => ALPN::H1,
                Alpn::H2Only => ALPN::H2,
            });
            Ok((addr, settings))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// A config in `dir` whose secrets are files there; `extra` is appended.
    fn config(dir: &Path, extra: &str) -> Config {
        std::fs::write(dir.join("jwt"), SECRET).unwrap();
        std::fs::write(dir.join("admin"), SECRET).unwrap();
        let text = format!(
            "[upstream]\naddresses = [\"127.0.0.1:1\"]\n[admin]\ntoken_file = \"admin\"\n\
             [tokens]\nsecret_file = \"jwt\"\n{extra}"
        );
        Config::parse(&text, &dir.join("gatehouse.toml")).unwrap()
    }

    #[test]
    fn prepare_builds_what_serve_needs_and_reads_the_files_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepare(&config(dir.path(), "")).unwrap();
        assert!(prepared.tls.is_empty());
        assert_eq!(prepared.admin_token.expose(), SECRET.as_bytes());

        let keys = "signing_key = \"k\"\n[[tokens.keys]]\nkid = \"k\"\nalgorithm = \"EdDSA\"\n\
                    public_key = \"k.pub\"\nprivate_key = \"k.key\"\n";
        let err = prepare(&config(dir.path(), keys)).err().unwrap();
        assert!(matches!(err, StartupError::Keys(_)), "{err}");

        let tls = "[server]\ntls_listen = [\"127.0.0.1:2\"]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let err = prepare(&config(dir.path(), tls)).err().unwrap();
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::write(dir.path().join("c.pem"), "not a certificate").unwrap();
        std::fs::write(dir.path().join("k.pem"), "not a key").unwrap();
        let err = prepare(&config(dir.path(), tls)).err().unwrap();
        assert!(matches!(err, StartupError::Tls { .. }), "{err}");
    }

    #[test]
    fn a_check_without_the_secrets_still_builds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), "");
        config.tokens.secret.file = Some(dir.path().join("missing"));
        config.admin.token.file = Some(dir.path().join("missing"));
        assert!(matches!(prepare(&config), Err(StartupError::Secret(_))));
        let (secrets, problems) = Secrets::load_or_stand_in(&config);
        assert_eq!(problems.len(), 2);
        assert!(prepare_with(&config, secrets).is_ok());
    }
}
