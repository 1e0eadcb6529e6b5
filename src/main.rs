//! The `gatehouse` binary: parses arguments and hands over to the library.
//!
//! Run the demo gateway with `bash config/demo.sh`, or
//! `gatehouse --config config/gatehouse.toml serve`.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: the proxy allocates and frees small
/// buffers on every request, and glibc's per-thread arenas also keep each
/// argon2 hash's memory after a login storm. Its 2.x series (the crate's
/// `v2` feature): about 5% fewer instructions per proxied request than 3.x
/// (`bash benches/load.sh --instructions`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
