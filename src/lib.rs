//! Gatehouse: a reverse-proxy authentication gateway built on pingora.
//!
//! It answers `/register`, `/login`, `/refresh` and `/logout` itself, checks
//! every other request's bearer token against a per-route policy, and forwards
//! allowed requests upstream with identity headers the upstream can trust.
//!
//! One module per concern, in the order a request meets them:
//!
//! - [`config`]: the file model, converted section by section into the
//!   validated model everything else reads; [`startup`] builds every piece
//!   from it before a socket opens (and `check-config` runs the same build).
//! - [`header_deadline`]: reads each HTTP/1 request head within a deadline.
//! - [`request`]: the one canonical request (method, target, header plan,
//!   client address) that is judged and forwarded; [`path`] normalises paths.
//! - [`policy`]: route matching and precedence; [`cors`]: which origins may
//!   read a route's answers, and the preflights the gateway answers itself.
//! - [`tokens`]: JWTs, signing keys and `keygen`; [`clock`]: Unix time.
//! - [`auth`]: the per-request decision (token, revocation, account, CSRF);
//!   [`cookies`]: tokens in cookies for browsers, taken out before the upstream;
//!   [`roles`]: role names and what routes demand of them.
//! - [`accounts`]: registration, login, account changes; [`passwords`]
//!   (argon2id); [`identity_text`] (email and username comparison keys).
//! - [`store`]: users and revocations, in sled or Redis, and `migrate`.
//! - [`limits`]: login and registration limits, local or shared.
//! - [`endpoints`]: `/register`, `/login`, `/refresh`, `/logout` and the key
//!   set; [`admin`]: the operator API, whose typed operations the CLI shares.
//! - [`signin`]: the HTML sign-in page, its redirect and login-CSRF rules.
//! - [`http_io`]: bodies in, JSON answers out, for the gateway's own endpoints.
//! - [`proxy`]: the pingora phases; [`upstreams`]: balancing and health.
//! - [`error`]: every refusal and its one HTTP mapping; [`metrics`].
//! - [`server`]: assembles the pingora server; [`listening`]: whether its
//!   listeners accept yet (for `/readyz`); [`cli`]: the command line.

pub mod accounts;
#[cfg(feature = "server")]
pub mod admin;
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod cors;
pub mod endpoints;
pub mod error;
#[cfg(feature = "server")]
pub mod header_deadline;
pub mod http_io;
pub mod identity_text;
pub mod limits;
#[cfg(feature = "server")]
pub mod listening;
pub mod metrics;
pub mod openapi;
pub mod passwords;
pub mod path;
pub mod policy;
#[cfg(feature = "server")]
pub mod proxy;
pub mod request;
pub mod roles;
#[cfg(feature = "server")]
pub mod server;
pub mod signin;
#[cfg(feature = "server")]
pub mod startup;
pub mod store;
pub mod tokens;
#[cfg(feature = "server")]
pub mod upstreams;
