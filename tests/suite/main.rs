//! Gatehouse's integration tests, in one test binary: the real gateway binary
//! (and upstream-mock, Redis, a lenient Python backend) over loopback.
//!
//! One binary rather than one per file: the gateway's dependency tree is large,
//! so every extra test binary is another long link, and tests from different
//! files can share the harness's threads. The tests whose subject is the
//! process itself (signals, SIGKILL, socket hand-over) keep binaries of their
//! own: `tests/shutdown.rs` and `tests/durability.rs`.
//!
//! Run one file's tests with its module name as the filter, e.g.
//! `cargo test --test suite attacks::`.

// Tests assert by unwrapping: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod assertion;
mod attacks;
mod budgets;
mod cli;
mod cookies;
mod cors;
mod dashboard;
mod differential;
mod gateway;
mod grpc;
mod grpc_harness;
mod http2;
mod identities;
mod in_process;
mod keys;
mod lenient;
mod openapi;
mod operations;
mod roles;
mod scale_out;
mod signin;
mod store_contract;
mod websocket;
