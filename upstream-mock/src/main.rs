//! upstream-mock binary: the backend stand-in behind Gatehouse, served over
//! HTTP/1.1 on a TCP address, and optionally its gRPC echo service over h2c
//! on another.
//!
//! ```text
//! upstream-mock --listen 127.0.0.1:8000 [--identity-prefix X-Auth-] [--grpc-listen 127.0.0.1:50051]
//! ```
//!
//! Kept thin on purpose: everything testable lives in the library so gateway
//! tests can run the very same service in-process. This file only parses
//! flags, binds, logs one line and waits for SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use upstream_mock::{is_valid_prefix, GrpcCalls, MockOptions, VerifyOptions, DEFAULT_IDENTITY_PREFIX};

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

    /// Also serve the gRPC echo service (`gatehouse.echo.v1.Echo`) over h2c
    /// on this address. It does not check assertions, hence not with
    /// --verify-jwks.
    #[arg(long, conflicts_with = "verify_jwks")]
    grpc_listen: Option<SocketAddr>,
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
    let listener = match bind(args.listen).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let grpc_listener = match args.grpc_listen {
        Some(addr) => match bind(addr).await {
            Ok(listener) => Some(listener),
            Err(code) => return code,
        },
        None => None,
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            eprintln!("upstream-mock: cannot install signal handlers: {err}");
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
    let served = match grpc_listener {
        None => upstream_mock::serve_with_shutdown(listener, options, shutdown).await,
        Some(grpc_listener) => {
            if let Ok(grpc_addr) = grpc_listener.local_addr() {
                eprintln!("upstream-mock gRPC (h2c) listening on {grpc_addr}");
            }
            // One signal stops both servers: dropping the sender wakes every
            // receiver.
            let (stop, stopped) = tokio::sync::watch::channel(());
            tokio::spawn(async move {
                shutdown.await;
                drop(stop);
            });
            let mut http_stopped = stopped.clone();
            let mut grpc_stopped = stopped;
            tokio::try_join!(
                upstream_mock::serve_with_shutdown(listener, options.clone(), async move {
                    let _ = http_stopped.changed().await;
                }),
                upstream_mock::serve_grpc_with_shutdown(
                    grpc_listener,
                    options,
                    GrpcCalls::new(),
                    async move {
                        let _ = grpc_stopped.changed().await;
                    }
                ),
            )
            .map(|_| ())
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("upstream-mock: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `addr`, or says why not and returns the exit code.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ExitCode> {
    tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        eprintln!("upstream-mock: cannot listen on {addr}: {err}");
        ExitCode::FAILURE
    })
}

/// Installs the SIGINT (Ctrl-C) and, on Unix, SIGTERM handlers now, and
/// returns a future that completes when either arrives.
///
/// The handlers are installed before the address is logged: whoever reads
/// that line may signal at once, and a signal that arrives before its
/// handler would kill the process instead of stopping it cleanly.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
