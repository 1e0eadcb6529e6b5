//! The `gatehouse` binary: parses arguments and hands over to the library.
//!
//! Run the demo gateway with `bash config/demo.sh`, or
//! `gatehouse --config config/gatehouse.toml serve`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
