//! The admin listener: health checks and the operator API.
//!
//! sled lets one process open the store at a time, so while the gateway runs
//! the CLI manages users and revocations through this API instead. It listens
//! on its own address (localhost by default) and every `/admin/` call needs
//! the admin token as a bearer token. The operations are typed in
//! [`operations`] so that the router and the CLI cannot drift apart; the
//! router only adds HTTP: authentication, body limits and status codes.

pub mod operations;
mod router;

pub use router::AdminApi;
