//! Generates the gRPC echo service's messages, server and client from
//! `proto/echo.proto`.
//!
//! `protox` parses the proto in pure Rust, so building needs no `protoc` on
//! the machine; `tonic-prost-build` generates the code from its descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    let descriptors = protox::compile(["proto/echo.proto"], ["proto"])?;
    // Ordered maps: the echoed metadata prints in a stable order.
    tonic_prost_build::configure().btree_map(".").compile_fds(descriptors)?;
    Ok(())
}
