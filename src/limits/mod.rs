//! Login and registration abuse limits, and the request budgets of proxied
//! routes ([`routes`]).
//!
//! Three layers, each bounded so an attacker can't lock a real user out for long:
//!
//! 1. **Per client IP** (`limits.login_per_ip_per_minute`): every `/login` and
//!    `/register` attempt counts; a GCRA limiter (`governor` in process, a Lua
//!    GCRA in Redis).
//! 2. **Per account and client IP**: after `limits.failures_before_backoff`
//!    wrong passwords in a row from one IP, that IP waits 1 s, then 2 s, 4 s...
//!    up to `limits.max_backoff`. Other IPs are not affected, so an attacker
//!    only locks themselves out; a correct password resets the count. 0 turns
//!    this layer off (nothing is counted per IP); the other two still apply.
//! 3. **Per account, all IPs** (`limits.account_failures_per_minute`): a
//!    distributed guessing run pauses that account's logins until the current
//!    one-minute window ends: at most 60 seconds of lockout, ever.
//!
//! With the sled store the counts live in this process ([`LocalLimits`]); with the
//! Redis store they live in Redis ([`SharedLimits`]), so every gateway behind a load
//! balancer counts the same attempts. The client IP is the TCP peer address.

mod local;
pub mod routes;
#[cfg(feature = "server")]
mod shared;

use std::net::IpAddr;
use std::time::Duration;

use crate::config::LimitsConfig;
use crate::store::StoreError;

pub use local::LocalLimits;
pub use routes::{Budget, Caller, Rate, RateError, RouteLimiter};
#[cfg(feature = "server")]
pub use shared::SharedLimits;

/// Why an attempt was not let through.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Too many attempts or requests: wait this many whole seconds.
    #[error("too many requests; try again in {retry_after} second{}", if *retry_after == 1 { "" } else { "s" })]
    Limited { retry_after: u64 },
    /// The shared counts could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LimitError {
    /// Logs a failure to count, where the refusal is answered: a refusal
    /// for too many attempts is the limiter working, not a failure.
    pub fn log(&self) {
        if let LimitError::Store(e) = self {
            e.log();
        }
    }
}

/// The one-minute window of the per-account limit.
const ACCOUNT_WINDOW: Duration = Duration::from_secs(60);

pub enum LoginLimiter {
    Local(LocalLimits),
    #[cfg(feature = "server")]
    Shared(SharedLimits),
}

impl LoginLimiter {
    /// Limits counted in this process.
    pub fn local(settings: &LimitsConfig) -> Self {
        LoginLimiter::Local(LocalLimits::new(settings))
    }

    /// Counts one attempt from `ip`; refuses it past the per-IP rate.
    pub async fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), LimitError> {
        match self {
            LoginLimiter::Local(limits) => limits.check_ip(ip),
            #[cfg(feature = "server")]
            LoginLimiter::Shared(limits) => limits.check_ip(ip).await,
        }
    }

    /// Refuses a login attempt for `account` from `ip` while it is backed off.
    pub async fn check_account(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        match self {
            LoginLimiter::Local(limits) => limits.check_account(account, ip),
            #[cfg(feature = "server")]
            LoginLimiter::Shared(limits) => limits.check_account(account, ip).await,
        }
    }

    pub async fn record_failure(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        match self {
            LoginLimiter::Local(limits) => {
                limits.record_failure(account, ip);
                Ok(())
            }
            #[cfg(feature = "server")]
            LoginLimiter::Shared(limits) => limits.record_failure(account, ip).await,
        }
    }

    pub async fn record_success(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        match self {
            LoginLimiter::Local(limits) => {
                limits.record_success(account, ip);
                Ok(())
            }
            #[cfg(feature = "server")]
            LoginLimiter::Shared(limits) => limits.record_success(account, ip).await,
        }
    }

    /// Forgets what no longer matters; run periodically. (Redis expires its own.)
    pub fn prune(&self) {
        match self {
            LoginLimiter::Local(limits) => limits.prune(),
            #[cfg(feature = "server")]
            LoginLimiter::Shared(_) => {}
        }
    }
}

/// A refusal with the wait rounded up to whole seconds.
fn retry_after(wait: Duration) -> LimitError {
    LimitError::Limited { retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
}
