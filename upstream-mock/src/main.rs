//! upstream-mock binary: the backend stand-in behind Gatehouse, served over
//! HTTP/1.1 on a TCP address.
//!
//! ```text
//! upstream-mock --listen 127.0.0.1:8000 [--identity-prefix X-Auth-]
//! ```
//!
//! Kept thin on purpose: everything testable lives in the library so gateway
//! tests can run the very same service in-process. This file only parses
//! flags, binds, logs one line and waits for SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use upstream_mock::{is_valid_prefix, MockOptions, VerifyOptions, DEFAULT_IDENTITY_PREFIX};

/// A mock items/products/categories service that trusts the gateway's
/// identity headers.
#[derive(Debug, Parser)]
#[command(name = "upstream-mock", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the log line says which).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// Prefix of the identity headers the gateway injects.
    #[arg(long, default_value = DEFAULT_IDENTITY_PREFIX, value_parser = parse_prefix)]
    identity_prefix: String,

    /// Verify mode: demand the gateway's signed identity assertion on every
    /// request, checked with the keys at this URL (the gateway's
    /// `/.well-known/jwks.json`).
    #[arg(long, requires = "audience")]
    verify_jwks: Option<String>,

    /// With --verify-jwks: this service's name, the assertion's `aud`.
    #[arg(long)]
    audience: Option<String>,
}

fn parse_prefix(prefix: &str) -> Result<String, String> {
    if is_valid_prefix(prefix) {
        Ok(prefix.to_owned())
    } else {
        Err(format!("{prefix:?} does not form valid HTTP header names"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("upstream-mock: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    eprintln!("upstream-mock listening on {addr}");
    let verify = match (args.verify_jwks, args.audience) {
        (Some(jwks_url), Some(audience)) => Some(VerifyOptions { jwks_url, audience }),
        _ => None,
    };
    let options = MockOptions { identity_prefix: args.identity_prefix, verify };
    match upstream_mock::serve_with_shutdown(listener, options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("upstream-mock: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No SIGINT handler could be installed: rely on SIGTERM alone.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
