//! The `gatehouse` binary: parses arguments and hands over to the library.
//!
//! Run the demo gateway with `bash config/demo.sh`, or
//! `gatehouse --config config/gatehouse.toml serve`.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: the proxy allocates and frees small
/// buffers on every request, and glibc's per-thread arenas also keep each
/// argon2 hash's memory after a login storm. Its 3.x series, the crate's
/// default: 2.x (the `v2` feature) runs a proxied request in 5-8% fewer
/// instructions but no less CPU time in the load bench, and kept 750 MiB
/// resident after the bench where 3.x went back to 65 MiB (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gatehouse::cli::run(gatehouse::cli::Cli::parse())
}
