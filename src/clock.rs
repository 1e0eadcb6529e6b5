//! Wall-clock time in Unix seconds: the unit of token claims and of every
//! expiry the stores keep. One definition, so tokens and stores can't
//! disagree about "now" and neither depends on the other for it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 on a clock set before it.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
