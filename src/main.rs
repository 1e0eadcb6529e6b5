//! The `gatehouse` binary: parses arguments and hands over to the library.
//!
//! Run the demo gateway with `bash config/demo.sh`, or
//! `gatehouse --config config/gatehouse.toml serve`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
