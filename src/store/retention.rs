//! How long a revocation outlives its token. A token is still accepted for
//! the verification leeway past its `exp`, so its revocation must be kept
//! that long too, and not a moment less: the Redis store (entry expiry), the
//! housekeeping purge of sled (its cutoff) and `gatehouse migrate` all ask
//! this one rule.

use std::time::Duration;

/// The verification leeway, as applied to revocation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    leeway: u64,
}

impl Retention {
    pub fn new(leeway: Duration) -> Self {
        Retention { leeway: leeway.as_secs() }
    }

    /// Until when (Unix seconds) the revocation of a token that expires at
    /// `expires_at` must be kept.
    pub fn keep_until(self, expires_at: u64) -> u64 {
        expires_at.saturating_add(self.leeway)
    }

    /// Whether a token that expires at `expires_at` is past its leeway at
    /// `now`, so revoking it would change nothing.
    pub fn outlived(self, expires_at: u64, now: u64) -> bool {
        self.keep_until(expires_at) <= now
    }

    /// The argument for [`super::Store::purge_expired_revocations`] at `now`:
    /// entries whose tokens expired before it fail the expiry check on their
    /// own, leeway included.
    pub fn purge_cutoff(self, now: u64) -> u64 {
        now.saturating_sub(self.leeway)
    }
}
