//! The `gatehouse` command line: serve, check a config, manage users and
//! revoke tokens, make signing keys, migrate a store.
//!
//! Parsing and dispatch live here; each command's work lives with its
//! concern (the admin operations, the token keys, the store), so the CLI
//! only turns arguments into a call and the result into text and an exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, KeyAlgorithm, LogFormat, RedisConfig, RedisTarget, StoreBackend, TokenConfig};
use crate::server::{serve, RunOptions};
use crate::store::migrate::sled_to_redis;
use crate::store::{RedisStore, SledStore, StoreError};
use crate::tokens::keygen::{is_usable_kid, write_key_pair};

/// Prints a line to stdout. Unlike `println!` it doesn't panic when stdout is
/// a closed pipe (`gatehouse user list | head -1`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod check;
mod client;
mod error;
mod users;

pub use error::CliError;

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
    /// List, grant or withdraw a user's roles (`admin` is the admin flag).
    #[command(subcommand)]
    Roles(RolesCommand),
}

#[derive(Debug, Subcommand)]
enum RolesCommand {
    /// Grant a role; routes that demand it let the user through at the next request
    /// (`admin` also needs a new login or refresh, as `set-admin` does).
    Add { user: String, role: String },
    /// Withdraw a role; the user's next request is judged without it.
    Remove { user: String, role: String },
    /// List a user's roles.
    List { user: String },
}

#[derive(Debug, Subcommand)]
enum RevokeCommand {
    /// Revoke one access or refresh token, read from stdin.
    Token,
    /// Revoke every token issued to a user (by id or email) before now.
    User { user: String },
}

pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve { .. }) {
        // Commands print their own results; logs only for trouble.
        init_logging(LogFormat::Text, "warn");
    }
    let result = match cli.command {
        Command::Serve { upgrade, listen, admin_listen } => {
            Config::load(&cli.config).map_err(CliError::from).and_then(|mut config| {
                if !listen.is_empty() {
                    config.server.listen = listen;
                }
                if let Some(addr) = admin_listen {
                    config.admin.listen = addr;
                }
                init_logging(config.log.format, &config.log.level);
                Ok(serve(config, RunOptions { upgrade })?)
            })
        }
        Command::CheckConfig { file } => check::check_config(file.as_deref().unwrap_or(&cli.config)),
        Command::User(command) => users::user_command(&cli.config, command),
        Command::Revoke(command) => users::revoke_command(&cli.config, command),
        Command::Keygen { algorithm, kid, out } => keygen(&algorithm, &kid, &out),
        Command::Migrate { from, to } => migrate(&cli.config, &from, &to),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gatehouse: {message}");
            ExitCode::FAILURE
        }
    }
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

/// `gatehouse keygen`: writes the key pair and says how to configure it.
fn keygen(algorithm: &str, kid: &str, out: &Path) -> Result<(), CliError> {
    let algorithm =
        KeyAlgorithm::parse(algorithm).ok_or(CliError::Usage("--algorithm must be EdDSA, ES256 or RS256"))?;
    if !is_usable_kid(kid) {
        return Err(CliError::Usage("--kid must be 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    let files = write_key_pair(algorithm, kid, out)?;
    let (private, public) = (files.private.display(), files.public.display());
    say!("wrote {private} (private, mode 600) and {public}");
    say!("\nAdd to the config:\n\n[[tokens.keys]]\nkid = \"{kid}\"\nalgorithm = \"{}\"", algorithm.as_str());
    say!("public_key = \"{public}\"\nprivate_key = \"{private}\"");
    say!("\nand make it the signer with `signing_key = \"{kid}\"` under [tokens].");
    Ok(())
}

/// `gatehouse migrate --from sled:PATH --to redis:URL`: see [`crate::store::migrate`].
fn migrate(config_path: &Path, from: &str, to: &str) -> Result<(), CliError> {
    let source = from
        .strip_prefix("sled:")
        .ok_or(CliError::Usage("--from must be sled:PATH (the data directory of a stopped gateway)"))?;
    let target = to
        .strip_prefix("redis:")
        .ok_or(CliError::Usage("--to must be redis:URL, e.g. redis:redis://127.0.0.1:6379/0"))?;
    crate::config::check_redis_url(target)?;
    // Prefix, timeouts, password and leeway come from the config (when there
    // is one) and its [store.redis] section; the URL on the command line wins.
    let config = if config_path.exists() { Some(Config::load(config_path)?) } else { None };
    let leeway = config.as_ref().map_or(TokenConfig::default().leeway, |c| c.tokens.leeway);
    let mut redis = match config.map(|c| c.store.backend) {
        Some(StoreBackend::Redis(redis)) => *redis,
        _ => RedisConfig::for_url(target),
    };
    redis.target = RedisTarget::Url(target.to_owned());
    let sled = SledStore::open(Path::new(source)).map_err(|e| match e {
        StoreError::Locked { path } => CliError::MigrateLocked { path },
        other => other.into(),
    })?;
    let runtime = command_runtime()?;
    let store = connect_redis(&redis, leeway, &runtime)?;
    let migrated = runtime.block_on(sled_to_redis(&sled, &store, |note| say!("note: {note}")))?;
    say!(
        "migrated {} users and {} live revocations from {source} to redis",
        migrated.users,
        migrated.revocations
    );
    Ok(())
}

fn command_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CliError::Runtime)
}

/// A Redis store for a one-off command: it must answer now.
fn connect_redis(
    config: &RedisConfig,
    leeway: std::time::Duration,
    runtime: &tokio::runtime::Runtime,
) -> Result<RedisStore, CliError> {
    runtime.block_on(RedisStore::for_command(config, leeway)).map_err(CliError::Redis)
}
