//! Gatehouse: a reverse-proxy authentication gateway built on pingora.
//!
//! It answers `/register`, `/login`, `/refresh` and `/logout` itself, checks
//! every other request's bearer token against a per-route policy, and forwards
//! allowed requests upstream with identity headers the upstream can trust.
//!
//! One module per concern: [`config`] (file model -> validated model),
//! [`policy`] (route matching), [`tokens`] (JWTs), [`store`] (users and
//! revocations), [`auth`] (the per-request decision), [`endpoints`] (built-in
//! endpoints), [`http_io`] (bodies in, JSON answers out, for the gateway's own
//! endpoints), [`clock`] (Unix time), [`proxy`] (pingora glue), [`admin`]
//! (operator API), [`error`] (every refusal and its HTTP mapping), [`server`]
//! (assembly) and [`cli`].

pub mod accounts;
#[cfg(feature = "server")]
pub mod admin;
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod endpoints;
pub mod error;
#[cfg(feature = "server")]
pub mod header_deadline;
pub mod http_io;
pub mod identity_text;
pub mod limits;
pub mod metrics;
pub mod passwords;
pub mod path;
pub mod policy;
#[cfg(feature = "server")]
pub mod proxy;
pub mod request;
#[cfg(feature = "server")]
pub mod server;
pub mod store;
pub mod tokens;
#[cfg(feature = "server")]
pub mod upstreams;
