//! The `gatehouse` command line: serve, check a config, manage users and
//! revoke tokens.
//!
//! User and revocation commands open the store directly when no gateway holds
//! it; when the running gateway does (sled allows one process), they go
//! through its admin API instead. Either way the same [`AdminApi`] operation
//! runs, so both paths behave alike.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use http::Method;
use serde_json::{json, Value};

use crate::accounts::{Accounts, UserView};
use crate::admin::AdminApi;
use crate::config::{Config, LogFormat};
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::server::{serve, RunOptions};
use crate::store::{SledStore, StoreError};
use crate::tokens::TokenService;
use tracing_subscriber::EnvFilter;

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
        Command::Serve { upgrade } => {
            Config::load(&cli.config).map_err(|e| e.to_string()).and_then(|config| {
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
    println!(
        "{}: ok ({} routes, default policy {}, upstreams {:?})",
        path.display(),
        config.routes.len(),
        config.routes.default_rule().policy,
        config.upstream.addresses
    );
    for (what, source) in [("tokens", &config.tokens.secret), ("admin", &config.admin.token)] {
        if let Err(e) = source.load() {
            println!("note: {what}: {e} (needed by `gatehouse serve`)");
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
        println!("{:>6}  {:<32} {:<20} {:<5} {:<7}", "ID", "EMAIL", "USERNAME", "ADMIN", "BLOCKED");
        for u in users {
            println!("{:>6}  {:<32} {:<20} {:<5} {:<7}", u.id, u.email, u.username, u.is_admin, u.blocked);
        }
    } else {
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
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
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
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

/// Runs admin operations in-process on the store, or over HTTP against the
/// gateway that holds it.
enum AdminClient {
    Local { api: AdminApi, runtime: tokio::runtime::Runtime },
    Remote { base: String, token: crate::config::Secret, http: reqwest::blocking::Client },
}

impl AdminClient {
    fn connect(config_path: &Path) -> Result<Self, String> {
        let config = Config::load(config_path).map_err(|e| e.to_string())?;
        match SledStore::open(&config.store.path) {
            Ok(store) => {
                let passwords = Passwords::new(&config.passwords)?;
                let tokens =
                    config.tokens.secret.load().ok().map(|s| Arc::new(TokenService::new(&config.tokens, &s)));
                let accounts = Accounts::new(Arc::new(store), passwords, Arc::new(Metrics::new()));
                let api = AdminApi::new(accounts, tokens, None);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                Ok(AdminClient::Local { api, runtime })
            }
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
