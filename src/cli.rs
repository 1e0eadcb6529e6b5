//! The `gatehouse` command line: serve, check a config, manage users and
//! revoke tokens.
//!
//! User and revocation commands open the store directly when no gateway holds
//! it; when the running gateway does (sled allows one process), they go
//! through its admin API instead. Either way the same [`AdminApi`] operation
//! runs, so both paths behave alike. A Redis store is always changed directly:
//! it is shared, and every gateway learns of the change through pub/sub.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use http::Method;
use serde_json::{json, Value};

use crate::accounts::{Accounts, UserView};
use crate::admin::AdminApi;
use crate::config::{Config, KeyAlgorithm, LogFormat, RedisConfig, RedisTarget, StoreBackend};
use crate::identity_text::comparison_key;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::server::{serve, RunOptions};
use crate::store::{ImportClaims, RedisStore, SledStore, Store, StoreError};
use crate::tokens::TokenService;
use tracing_subscriber::EnvFilter;

/// Prints a line to stdout. Unlike `println!` it doesn't panic when stdout is
/// a closed pipe (`gatehouse user list | head -1`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about = "An authentication gateway built on pingora")]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        short,
        global = true,
        env = "GATEHOUSE_CONFIG",
        default_value = "/etc/gatehouse/gatehouse.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM (graceful) or SIGINT (fast).
    Serve {
        /// Take over the listening sockets of a running gateway (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
        /// Listen here instead of `server.listen` (repeatable): several
        /// gateways on one host can share a config file.
        #[arg(long, value_name = "IP:PORT")]
        listen: Vec<std::net::SocketAddr>,
        /// Serve the admin API here instead of `admin.listen`.
        #[arg(long, value_name = "IP:PORT")]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Validate a config file; prints the file, line and column of the first error.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Revoke tokens.
    #[command(subcommand)]
    Revoke(RevokeCommand),
    /// Copy users and live revocations from a sled store into Redis (to scale out).
    Migrate {
        /// `sled:PATH`: the data directory of a stopped gateway.
        #[arg(long)]
        from: String,
        /// `redis:URL`, e.g. `redis:redis://127.0.0.1:6379/0`. Key prefix,
        /// password and timeouts come from the config's [store.redis], if any.
        #[arg(long)]
        to: String,
    },
    /// Write a new signing key pair (PKCS#8 PEM; the private key readable by its owner only).
    Keygen {
        /// EdDSA (Ed25519), ES256 (P-256) or RS256 (RSA 2048).
        #[arg(long, default_value = "EdDSA")]
        algorithm: String,
        /// The key id tokens will name in their header, e.g. `2026-11`.
        #[arg(long)]
        kid: String,
        /// Directory for `<kid>.key.pem` and `<kid>.pub.pem`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user. The password is read from stdin, or prompted for on a terminal.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List all users.
    List,
    /// Show one user, by id or email.
    Show { user: String },
    /// Grant or withdraw administrator rights.
    SetAdmin {
        user: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
    /// Block a user: logins are refused and every token they hold stops working.
    Block { user: String },
    /// Unblock a user. Tokens revoked by the block stay revoked.
    Unblock { user: String },
    /// Delete a user; their tokens stop working at once.
    Delete { user: String },
}

#[derive(Debug, Subcommand)]
enum RevokeCommand {
    /// Revoke one access or refresh token, read from stdin.
    Token,
    /// Revoke every token issued to a user (by id or email) before now.
    User { user: String },
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { upgrade, listen, admin_listen } => {
            Config::load(&cli.config).map_err(|e| e.to_string()).and_then(|mut config| {
                if !listen.is_empty() {
                    config.server.listen = listen;
                }
                if let Some(addr) = admin_listen {
                    config.admin.listen = addr;
                }
                init_logging(config.log.format, &config.log.level);
                serve(config, RunOptions { upgrade }).map_err(|e| e.to_string())
            })
        }
        command => {
            // Commands print their own results; logs only for trouble.
            init_logging(LogFormat::Text, "warn");
            match command {
                Command::CheckConfig { file } => check_config(file.as_deref().unwrap_or(&cli.config)),
                Command::User(command) => user_command(&cli.config, command),
                Command::Revoke(command) => revoke_command(&cli.config, command),
                Command::Keygen { algorithm, kid, out } => keygen(&algorithm, &kid, &out),
                Command::Migrate { from, to } => migrate(&cli.config, &from, &to),
                Command::Serve { .. } => Ok(()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gatehouse: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    say!(
        "{}: ok ({} routes, default policy {}, upstreams {:?})",
        path.display(),
        config.routes.len(),
        config.routes.default_rule().policy,
        config.upstream.addresses
    );
    match &config.store.backend {
        StoreBackend::Sled { path } => say!("store: sled at {}", path.display()),
        StoreBackend::Redis(redis) => {
            match &redis.target {
                RedisTarget::Url(url) => say!("store: redis at {url}, key prefix {:?}", redis.key_prefix),
                RedisTarget::Sentinel { sentinels, master_name, .. } => say!(
                    "store: redis master {master_name:?} via Sentinels {sentinels:?}, key prefix {:?}",
                    redis.key_prefix
                ),
            }
            if let Some(Err(e)) = redis.password.as_ref().map(|p| p.load_any_length()) {
                say!("note: store.redis: {e} (needed by `gatehouse serve`)");
            }
        }
    }
    for (what, source) in [("tokens", &config.tokens.secret), ("admin", &config.admin.token)] {
        // With an asymmetric signing key the HS256 secret is optional.
        let optional = what == "tokens" && config.tokens.signing_key.is_some();
        if let (Err(e), false) = (source.load(), optional) {
            say!("note: {what}: {e} (needed by `gatehouse serve`)");
        }
    }
    Ok(())
}

fn user_command(config_path: &Path, command: UserCommand) -> Result<(), String> {
    let admin = AdminClient::connect(config_path)?;
    let (method, path, body) = match &command {
        UserCommand::Add { email, username, admin: is_admin } => {
            let password = read_password()?;
            (
                Method::POST,
                "/admin/users".to_owned(),
                json!({"email": email, "username": username, "password": password, "is_admin": is_admin}),
            )
        }
        UserCommand::List => (Method::GET, "/admin/users".to_owned(), Value::Null),
        UserCommand::Show { user } => (Method::GET, admin.user_path(user)?, Value::Null),
        UserCommand::SetAdmin { user, admin: flag } => {
            (Method::PATCH, admin.user_path(user)?, json!({"is_admin": flag}))
        }
        UserCommand::Block { user } => (Method::PATCH, admin.user_path(user)?, json!({"blocked": true})),
        UserCommand::Unblock { user } => (Method::PATCH, admin.user_path(user)?, json!({"blocked": false})),
        UserCommand::Delete { user } => (Method::DELETE, admin.user_path(user)?, Value::Null),
    };
    let answer = admin.call(method, &path, &body)?;
    if matches!(command, UserCommand::List) {
        let users: Vec<UserView> = serde_json::from_value(answer).map_err(|e| e.to_string())?;
        say!("{:>6}  {:<32} {:<20} {:<5} {:<7}", "ID", "EMAIL", "USERNAME", "ADMIN", "BLOCKED");
        for u in users {
            say!("{:>6}  {:<32} {:<20} {:<5} {:<7}", u.id, u.email, u.username, u.is_admin, u.blocked);
        }
    } else {
        say!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    }
    Ok(())
}

fn revoke_command(config_path: &Path, command: RevokeCommand) -> Result<(), String> {
    let admin = AdminClient::connect(config_path)?;
    let answer = match command {
        RevokeCommand::Token => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
            admin.call(Method::POST, "/admin/revoke", &json!({"token": token.trim()}))?
        }
        RevokeCommand::User { user } => {
            let path = format!("{}/revoke-tokens", admin.user_path(&user)?);
            admin.call(Method::POST, &path, &Value::Null)?
        }
    };
    say!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
}

fn keygen(algorithm: &str, kid: &str, out: &Path) -> Result<(), String> {
    use argon2::password_hash::rand_core::OsRng;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

    let algorithm = KeyAlgorithm::parse(algorithm).ok_or("--algorithm must be EdDSA, ES256 or RS256")?;
    if kid.is_empty() || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("--kid must be letters, digits, `-`, `_` or `.`".into());
    }
    let failed = |e: &dyn std::fmt::Display| format!("key generation failed: {e}");
    let (private, public) = match algorithm {
        KeyAlgorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e))?;
            (
                private.to_string(),
                key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| failed(&e))?,
            )
        }
        KeyAlgorithm::Es256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e))?;
            (private.to_string(), key.public_key().to_public_key_pem(LineEnding::LF).map_err(|e| failed(&e))?)
        }
        KeyAlgorithm::Rs256 => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| failed(&e))?;
            let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| failed(&e))?;
            let public = rsa::RsaPublicKey::from(&key);
            (private.to_string(), public.to_public_key_pem(LineEnding::LF).map_err(|e| failed(&e))?)
        }
    };
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let private_path = out.join(format!("{kid}.key.pem"));
    let public_path = out.join(format!("{kid}.pub.pem"));
    write_new(&private_path, private.as_bytes(), 0o600)?;
    write_new(&public_path, public.as_bytes(), 0o644)?;
    say!("wrote {} (private, mode 600) and {}", private_path.display(), public_path.display());
    say!("\nAdd to the config:\n\n[[tokens.keys]]\nkid = \"{kid}\"\nalgorithm = \"{}\"", algorithm.as_str());
    say!("public_key = \"{}\"\nprivate_key = \"{}\"", public_path.display(), private_path.display());
    say!("\nand make it the signer with `signing_key = \"{kid}\"` under [tokens].");
    Ok(())
}

/// Creates a file that must not exist yet, with `mode` from the start.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Logs to stderr, as text or JSON lines; `GATEHOUSE_LOG` overrides the level.
fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Reads a new password: prompted twice on a terminal, else one line of stdin.
fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let second = rpassword::prompt_password("Repeat password: ").map_err(|e| e.to_string())?;
        if first != second {
            return Err("the passwords do not match".into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn command_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// A Redis store for a one-off command: it must answer now.
fn connect_redis(
    config: &RedisConfig,
    leeway: std::time::Duration,
    runtime: &tokio::runtime::Runtime,
) -> Result<RedisStore, String> {
    runtime
        .block_on(RedisStore::for_command(config, leeway))
        .map_err(|e| format!("cannot use the redis store: {e}"))
}

/// `gatehouse migrate --from sled:PATH --to redis:URL`: copies every user
/// (ids, password hashes and token versions kept, so issued tokens stay
/// valid) and every live revocation. Safe to run again: records are
/// overwritten with the same content.
fn migrate(config_path: &Path, from: &str, to: &str) -> Result<(), String> {
    let source = from
        .strip_prefix("sled:")
        .ok_or("--from must be sled:PATH (the data directory of a stopped gateway)")?;
    let target =
        to.strip_prefix("redis:").ok_or("--to must be redis:URL, e.g. redis:redis://127.0.0.1:6379/0")?;
    crate::config::check_redis_url(target)?;
    // Prefix, timeouts, password and leeway come from the config (when there
    // is one) and its [store.redis] section; the URL on the command line wins.
    let config =
        if config_path.exists() { Some(Config::load(config_path).map_err(|e| e.to_string())?) } else { None };
    let leeway = config.as_ref().map_or(std::time::Duration::from_secs(5), |c| c.tokens.leeway);
    let mut redis = match config.map(|c| c.store.backend) {
        Some(StoreBackend::Redis(redis)) => *redis,
        _ => RedisConfig::for_url(target),
    };
    redis.target = RedisTarget::Url(target.to_owned());
    let sled = SledStore::open(Path::new(source)).map_err(|e| match e {
        StoreError::Locked { path } => {
            format!("{path} is in use: stop the gateway first (or migrate a copy)")
        }
        other => other.to_string(),
    })?;
    let runtime = command_runtime()?;
    let store = connect_redis(&redis, leeway, &runtime)?;
    let (users, revocations) = runtime.block_on(async {
        let users = sled.users().await.map_err(|e| e.to_string())?;
        // Users already in redis get their index entries by comparison key first.
        store.upgrade_indexes().await.map_err(|e| format!("cannot index the users in redis: {e}"))?;
        // Oldest first, as sled's own index: where two accounts share an email
        // or username once normalised, the older one keeps it.
        let (mut emails, mut usernames) = (HashSet::new(), HashSet::new());
        for user in &users {
            let claim = ImportClaims {
                email: emails.insert(comparison_key(&user.email)),
                username: usernames.insert(comparison_key(&user.username)),
            };
            for (what, claimed) in [("email", claim.email), ("username", claim.username)] {
                if !claimed {
                    say!("note: user {} shares its {what} with an older account once normalised: the older one keeps it", user.id);
                }
            }
            store.import_user(user, claim).await.map_err(|e| match e {
                StoreError::EmailTaken => {
                    format!("user {} ({}): the email belongs to another user in redis", user.id, user.email)
                }
                StoreError::UsernameTaken => {
                    format!("user {} ({}): the username belongs to another user in redis", user.id, user.username)
                }
                other => format!("user {}: {other}", user.id),
            })?;
        }
        let mut revocations = 0;
        for entry in sled.revocations().map_err(|e| e.to_string())? {
            let id = entry.id.clone();
            if store.import_revocation(entry).await.map_err(|e| format!("revocation {id}: {e}"))? {
                revocations += 1;
            }
        }
        Ok::<_, String>((users.len(), revocations))
    })?;
    say!("migrated {users} users and {revocations} live revocations from {source} to redis");
    Ok(())
}

/// Runs admin operations in-process on the store, or over HTTP against the
/// gateway that holds it.
enum AdminClient {
    Local { api: AdminApi, runtime: tokio::runtime::Runtime },
    Remote { base: String, token: crate::config::Secret, http: reqwest::blocking::Client },
}

impl AdminClient {
    fn connect(config_path: &Path) -> Result<Self, String> {
        let config = Config::load(config_path).map_err(|e| e.to_string())?;
        let local = |store: Arc<dyn Store>, runtime: tokio::runtime::Runtime| {
            let passwords = Passwords::new(&config.passwords)?;
            let secret = config.tokens.secret.load().ok();
            let tokens = TokenService::with_keys(&config.tokens, secret.as_ref()).ok().map(Arc::new);
            let accounts = Accounts::new(store, passwords, Arc::new(Metrics::new()));
            let api = AdminApi::new(accounts, tokens, None);
            Ok::<_, String>(AdminClient::Local { api, runtime })
        };
        let path = match &config.store.backend {
            // Redis is shared: change it directly, and every gateway hears of it.
            StoreBackend::Redis(redis) => {
                let runtime = command_runtime()?;
                let store = connect_redis(redis, config.tokens.leeway, &runtime)?;
                return local(Arc::new(store), runtime);
            }
            StoreBackend::Sled { path } => path,
        };
        match SledStore::open(path) {
            Ok(store) => local(Arc::new(store), command_runtime()?),
            Err(StoreError::Locked { path }) => {
                let token = config.admin.token.load().map_err(|e| {
                    format!("the store at {path} is held by a running gateway, and its admin API needs the admin token: {e}")
                })?;
                let http = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .timeout(std::time::Duration::from_secs(30))
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(AdminClient::Remote { base: format!("http://{}", config.admin.listen), token, http })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// `/admin/users/{id}` for an id or an email.
    fn user_path(&self, user: &str) -> Result<String, String> {
        if user.parse::<u64>().is_ok() {
            return Ok(format!("/admin/users/{user}"));
        }
        let query: String =
            form_urlencoded::Serializer::new(String::new()).append_pair("email", user).finish();
        let found = self.call(Method::GET, &format!("/admin/users?{query}"), &Value::Null)?;
        let id = found.get(0).and_then(|u| u.get("id")).and_then(Value::as_u64).ok_or("no such user")?;
        Ok(format!("/admin/users/{id}"))
    }

    fn call(&self, method: Method, path_and_query: &str, body: &Value) -> Result<Value, String> {
        let body_bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let (status, bytes) = match self {
            AdminClient::Local { api, runtime } => {
                let (path, query) = match path_and_query.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (path_and_query, None),
                };
                let reply = runtime.block_on(api.call(&method, path, query, &body_bytes));
                (reply.status, reply.body)
            }
            AdminClient::Remote { base, token, http } => {
                let url = format!("{base}{path_and_query}");
                let bearer = String::from_utf8_lossy(token.expose()).into_owned();
                let response = http
                    .request(method, &url)
                    .bearer_auth(bearer)
                    .header("content-type", "application/json")
                    .body(body_bytes)
                    .send()
                    .map_err(|e| format!("the store is in use by another process, and no gateway admin API answers at {base}: {e}"))?;
                (response.status(), response.bytes().map_err(|e| e.to_string())?.to_vec())
            }
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer ({status}): {e}"))?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(value.get("message").and_then(Value::as_str).unwrap_or("the operation failed").to_owned())
        }
    }
}
