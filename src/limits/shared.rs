//! The login limits kept in Redis, so every gateway sharing a Redis store
//! counts the same attempts. Each check is one Lua script, timed by Redis's
//! own clock (`TIME`), so gateways with skewed clocks still agree, and every
//! key carries an expiry: nothing needs pruning.
//!
//! Accounts appear in keys only as a SHA-256 prefix of the normalised email.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use sha2::{Digest, Sha256};

use super::{retry_after, LimitError, ACCOUNT_WINDOW};
use crate::config::LimitsConfig;
use crate::store::{RedisKeys, RedisPool, RedisStore};

/// GCRA: KEYS[1] holds the theoretical arrival time (ms). ARGV[1] is the
/// emission interval, ARGV[2] the burst tolerance (both ms). Returns 0, or the
/// milliseconds to wait. Shared by the per-IP login limit and the route
/// budgets ([`super::routes`]) through [`gcra`].
pub(super) const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + tonumber(ARGV[1])
local wait = next_tat - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now)
return 0
";

/// KEYS[1]: the account's failures this window; KEYS[2]: this IP's backoff
/// (hash: failures, until). ARGV[1]: the per-account limit (0 = off). Returns
/// 0, or the milliseconds to wait.
const CHECK_ACCOUNT: &str = r"
local limit = tonumber(ARGV[1])
if limit > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then return ttl end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = tonumber(redis.call('HGET', KEYS[2], 'until') or '0')
if until_ms > now then return until_ms - now end
return 0
";

/// Counts a wrong password. ARGV: failures before backoff (0 = no backoff:
/// the IP's record is not kept), longest backoff (ms), how long the IP's
/// record is kept (ms), window length (ms).
const RECORD_FAILURE: &str = r"
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
local free = tonumber(ARGV[1])
if free == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
if failures >= free then
  local doublings = math.min(failures - free, 30)
  local wait = math.min(1000 * (2 ^ doublings), tonumber(ARGV[2]))
  redis.call('HSET', KEYS[2], 'until', now + wait)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
";

pub struct SharedLimits {
    pool: Arc<RedisPool>,
    keys: Arc<RedisKeys>,
    settings: LimitsConfig,
    per_ip: Script,
    check_account: Script,
    record_failure: Script,
}

/// Counts one request against the GCRA state at `key`: refused with the
/// wait once more than `tolerance_ms / interval_ms` arrive at once.
pub(super) async fn gcra(
    pool: &RedisPool,
    script: &Script,
    key: String,
    interval_ms: u64,
    tolerance_ms: u64,
) -> Result<(), LimitError> {
    let wait: u64 = pool.script(script.key(key).arg(interval_ms).arg(tolerance_ms)).await?;
    refused(wait)
}

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn refused(wait_ms: u64) -> Result<(), LimitError> {
    if wait_ms == 0 {
        Ok(())
    } else {
        Err(retry_after(Duration::from_millis(wait_ms)))
    }
}

impl SharedLimits {
    pub fn new(settings: &LimitsConfig, store: &RedisStore) -> Self {
        SharedLimits {
            pool: Arc::clone(store.pool()),
            keys: Arc::clone(store.keys()),
            settings: settings.clone(),
            per_ip: Script::new(GCRA),
            check_account: Script::new(CHECK_ACCOUNT),
            record_failure: Script::new(RECORD_FAILURE),
        }
    }

    fn account_key(&self, account: &str) -> String {
        let digest = Sha256::digest(account.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.keys.limit(&format!("account:{hex}"))
    }

    /// The per-account-and-IP backoff key (one shared entry when the IP is unknown).
    fn backoff_key(&self, account_key: &str, ip: Option<IpAddr>) -> String {
        match ip {
            Some(ip) => format!("{account_key}:ip:{ip}"),
            None => format!("{account_key}:ip:unknown"),
        }
    }

    pub async fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), LimitError> {
        let (Some(ip), per_minute) = (ip, self.settings.login_per_ip_per_minute) else {
            return Ok(());
        };
        if per_minute == 0 {
            return Ok(());
        }
        let window = millis(ACCOUNT_WINDOW);
        let interval = window / u64::from(per_minute);
        gcra(&self.pool, &self.per_ip, self.keys.limit(&format!("ip:{ip}")), interval, window).await
    }

    pub async fn check_account(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        let account_key = self.account_key(account);
        let wait: u64 = self
            .pool
            .script(
                self.check_account
                    .key(&account_key)
                    .key(self.backoff_key(&account_key, ip))
                    .arg(self.settings.account_failures_per_minute),
            )
            .await?;
        refused(wait)
    }

    pub async fn record_failure(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        let account_key = self.account_key(account);
        let keep_for = self.settings.max_backoff.max(ACCOUNT_WINDOW) * 2;
        let _: u64 = self
            .pool
            .script(
                self.record_failure
                    .key(&account_key)
                    .key(self.backoff_key(&account_key, ip))
                    .arg(self.settings.failures_before_backoff)
                    .arg(millis(self.settings.max_backoff))
                    .arg(millis(keep_for))
                    .arg(millis(ACCOUNT_WINDOW)),
            )
            .await?;
        Ok(())
    }

    pub async fn record_success(&self, account: &str, ip: Option<IpAddr>) -> Result<(), LimitError> {
        let account_key = self.account_key(account);
        let _: u64 = self.pool.query(redis::cmd("DEL").arg(self.backoff_key(&account_key, ip))).await?;
        Ok(())
    }
}
