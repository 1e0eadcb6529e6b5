//! `[limits]`: abuse and resource limits on clients — login attempts, header
//! sizes and client timeouts. [`crate::limits`] enforces the login limits.

use std::time::Duration;

use super::file;
use super::values::{bounded, duration_or, Invalid};

/// Abuse and resource limits; see [`crate::limits`] for the login limits.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `/login` and `/register` attempts per client IP per minute; 0 = off.
    pub login_per_ip_per_minute: u32,
    /// Wrong passwords in a row (per account and IP) before backoff starts;
    /// 0 = off (no backoff; the per-IP and per-account limits still apply).
    pub failures_before_backoff: u32,
    /// The longest backoff for one account and IP.
    pub max_backoff: Duration,
    /// Failed logins per account per minute, over all IPs; 0 = off.
    pub account_failures_per_minute: u32,
    /// Total size of a request's header block.
    pub max_header_bytes: usize,
    /// Longest wait for the next chunk of a request body.
    pub client_read_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub client_idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            login_per_ip_per_minute: 60,
            failures_before_backoff: 5,
            max_backoff: Duration::from_secs(15 * 60),
            account_failures_per_minute: 30,
            max_header_bytes: 32 * 1024,
            client_read_timeout: Duration::from_secs(15),
            client_idle_timeout: Duration::from_secs(60),
        }
    }
}

impl LimitsConfig {
    pub(super) fn from_file(section: file::LimitsSection) -> Result<Self, Invalid> {
        let defaults = LimitsConfig::default();
        Ok(LimitsConfig {
            login_per_ip_per_minute: section
                .login_per_ip_per_minute
                .unwrap_or(defaults.login_per_ip_per_minute),
            failures_before_backoff: section
                .failures_before_backoff
                .map_or(defaults.failures_before_backoff, |v| v.into_inner()),
            max_backoff: duration_or(section.max_backoff, defaults.max_backoff)?,
            account_failures_per_minute: section
                .account_failures_per_minute
                .unwrap_or(defaults.account_failures_per_minute),
            max_header_bytes: bounded(
                section.max_header_bytes,
                defaults.max_header_bytes,
                1024..=1024 * 1024,
                "limits.max_header_bytes",
            )?,
            client_read_timeout: duration_or(section.client_read_timeout, defaults.client_read_timeout)?,
            client_idle_timeout: duration_or(section.client_idle_timeout, defaults.client_idle_timeout)?,
        })
    }
}
