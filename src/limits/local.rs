//! The in-process login limits, for a gateway with its own (sled) store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{retry_after, LimitError, ACCOUNT_WINDOW};
use crate::config::LimitsConfig;

/// Accounts tracked at once; beyond it, stale entries are dropped first.
const MAX_TRACKED_ACCOUNTS: usize = 100_000;

pub struct LocalLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    accounts: Mutex<HashMap<String, AccountFailures>>,
    settings: LimitsConfig,
}

#[derive(Default)]
struct AccountFailures {
    window_start: Option<Instant>,
    window_failures: u32,
    by_ip: HashMap<IpAddr, Backoff>,
}

struct Backoff {
    consecutive: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

impl LocalLimits {
    pub fn new(settings: &LimitsConfig) -> Self {
        let per_ip = NonZeroU32::new(settings.login_per_ip_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        LocalLimits { per_ip, accounts: Mutex::new(HashMap::new()), settings: settings.clone() }
    }

    /// Counts one attempt from `ip`; refuses it past the per-IP rate.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), LimitError> {
        let (Some(limiter), Some(ip)) = (&self.per_ip, ip) else {
            return Ok(());
        };
        limiter
            .check_key(&ip)
            .map_err(|not_until| retry_after(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Refuses a login attempt for `account` from `ip` while it is backed off.
    pub fn check_account(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        let now = Instant::now();
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = accounts.get(account) else {
            return Ok(());
        };
        if let Some(start) = state.window_start {
            let limit = self.settings.account_failures_per_minute;
            if limit > 0 && state.window_failures >= limit && now < start + ACCOUNT_WINDOW {
                return Err(retry_after(start + ACCOUNT_WINDOW - now));
            }
        }
        if let Some(until) = ip.and_then(|ip| state.by_ip.get(&ip)).and_then(|b| b.locked_until) {
            if now < until {
                return Err(retry_after(until - now));
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, account: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if accounts.len() >= MAX_TRACKED_ACCOUNTS && !accounts.contains_key(account) {
            Self::prune_locked(&mut accounts, now, self.settings.max_backoff);
            if accounts.len() >= MAX_TRACKED_ACCOUNTS {
                return;
            }
        }
        let state = accounts.entry(account.to_owned()).or_default();
        match state.window_start {
            Some(start) if now < start + ACCOUNT_WINDOW => state.window_failures += 1,
            _ => {
                state.window_start = Some(now);
                state.window_failures = 1;
            }
        }
        let free = self.settings.failures_before_backoff;
        // 0: no backoff, so nothing to count per IP either.
        if let (Some(ip), true) = (ip, free > 0) {
            let backoff = state.by_ip.entry(ip).or_insert(Backoff {
                consecutive: 0,
                locked_until: None,
                last_failure: now,
            });
            backoff.consecutive += 1;
            backoff.last_failure = now;
            if backoff.consecutive >= free {
                let doublings = (backoff.consecutive - free).min(30);
                let wait = Duration::from_secs(1u64 << doublings).min(self.settings.max_backoff);
                backoff.locked_until = Some(now + wait);
            }
        }
    }

    pub fn record_success(&self, account: &str, ip: Option<IpAddr>) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(state), Some(ip)) = (accounts.get_mut(account), ip) {
            state.by_ip.remove(&ip);
        }
    }

    /// Forgets what no longer matters; run periodically.
    pub fn prune(&self) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        Self::prune_locked(&mut accounts, Instant::now(), self.settings.max_backoff);
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
        }
    }

    fn prune_locked(accounts: &mut HashMap<String, AccountFailures>, now: Instant, max_backoff: Duration) {
        let keep_for = max_backoff.max(ACCOUNT_WINDOW) * 2;
        accounts.retain(|_, state| {
            state.by_ip.retain(|_, b| now.duration_since(b.last_failure) < keep_for);
            let window_live = state.window_start.is_some_and(|s| now.duration_since(s) < ACCOUNT_WINDOW);
            window_live || !state.by_ip.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    fn limiter(per_ip: u32, free: u32, per_account: u32) -> LocalLimits {
        LocalLimits::new(&LimitsConfig {
            login_per_ip_per_minute: per_ip,
            failures_before_backoff: free,
            max_backoff: Duration::from_secs(8),
            account_failures_per_minute: per_account,
            ..LimitsConfig::default()
        })
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));

    #[test]
    fn per_ip_rate_is_enforced_with_retry_after() {
        let l = limiter(3, 100, 0);
        for _ in 0..3 {
            l.check_ip(A).unwrap();
        }
        let Err(ApiError::RateLimited { retry_after }) = l.check_ip(A).map_err(ApiError::from) else {
            panic!("not limited")
        };
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        l.check_ip(B).unwrap();
    }

    #[test]
    fn backoff_grows_is_bounded_and_only_hits_the_failing_ip() {
        let l = limiter(0, 2, 0);
        l.record_failure("u", A);
        l.check_account("u", A).unwrap();
        l.record_failure("u", A);
        assert_eq!(
            l.check_account("u", A).map_err(ApiError::from),
            Err(ApiError::RateLimited { retry_after: 1 })
        );
        l.check_account("u", B).unwrap();
        for _ in 0..20 {
            l.record_failure("u", A);
        }
        assert_eq!(
            l.check_account("u", A).map_err(ApiError::from),
            Err(ApiError::RateLimited { retry_after: 8 }),
            "capped at max_backoff"
        );
        l.record_success("u", A);
        l.check_account("u", A).unwrap();
    }

    #[test]
    fn failures_before_backoff_0_means_no_backoff_while_the_account_limit_still_counts() {
        let l = limiter(0, 0, 50);
        for _ in 0..40 {
            l.record_failure("u", A);
            l.check_account("u", A).unwrap();
        }
        assert!(l.accounts.lock().unwrap()["u"].by_ip.is_empty(), "no per-IP records kept");
        for _ in 0..10 {
            l.record_failure("u", A);
        }
        assert!(l.check_account("u", A).is_err(), "account_failures_per_minute still applies");
    }

    #[test]
    fn distributed_guessing_pauses_the_account_for_at_most_a_minute() {
        let l = limiter(0, 100, 3);
        l.record_failure("u", A);
        l.record_failure("u", B);
        l.check_account("u", None).unwrap();
        l.record_failure("u", None);
        let Err(ApiError::RateLimited { retry_after }) = l.check_account("u", A).map_err(ApiError::from)
        else {
            panic!("not limited")
        };
        assert!(retry_after <= 60);
        l.check_account("other", A).unwrap();
    }
}
