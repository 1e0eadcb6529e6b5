//! Request budgets on proxied routes: `[[routes]] rate = "100/m"` and `burst`.
//!
//! A budget is a GCRA, the same algorithm as the login limit per IP: requests
//! refill evenly at the rate, and up to `burst` may be spent at once. It is
//! counted per user for identified callers and per client address (the real
//! one, after trusted proxies) for anonymous ones, and only for requests that
//! passed the route's policy, so a caller refused with 401 spends nothing and
//! can't spend someone else's budget.
//!
//! With the sled store the counters live in this process (`governor`, pruned
//! by the housekeeping task so idle callers cost no memory); with the Redis
//! store they live in Redis, in the login limits' Lua GCRA, so every gateway
//! with the same config draws on one budget. A budget is named by a hash of
//! its route's pattern and methods, not by anything in this process, so the
//! gateways agree on it, and a reload that keeps the route keeps its counts.
//!
//! A route without a budget pays nothing: the proxy only branches on
//! [`crate::policy::Route::budget`] being `None`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::{retry_after, LimitError};
use crate::store::UserId;

/// The unit of a [`Rate`]: `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn length(self) -> Duration {
        Duration::from_secs(match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "m",
            Per::Hour => "h",
        }
    }
}

/// `N/s`, `N/m` or `N/h`: N requests per second, minute or hour, N ≥ 1, and
/// at most one a millisecond (the unit Redis counts in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Per,
}

/// Why a `rate` was refused; each message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("rate `{0}` is not a rate like \"100/m\": a whole number, `/`, then s, m or h")]
    Shape(String),
    #[error("rate `{rate}`: `{count}` is not a whole number")]
    Count { rate: String, count: String },
    #[error("rate `{0}`: the count must be at least 1 (leave `rate` out for no budget)")]
    Zero(String),
    #[error("rate `{rate}`: unknown unit `{unit}`; expected s, m or h")]
    Unit { rate: String, unit: String },
    #[error("rate `{0}`: more than one request a millisecond can't be counted (at most 1000/s, 60000/m, 3600000/h)")]
    TooFast(String),
}

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let owned = || text.to_owned();
        let (count, unit) = text.split_once('/').ok_or_else(|| RateError::Shape(owned()))?;
        let (count, unit) = (count.trim(), unit.trim());
        if count.is_empty() || unit.is_empty() {
            return Err(RateError::Shape(owned()));
        }
        let per = match unit {
            "s" => Per::Second,
            "m" => Per::Minute,
            "h" => Per::Hour,
            _ => return Err(RateError::Unit { rate: owned(), unit: unit.to_owned() }),
        };
        // Digits only: `u32::from_str` would also take a leading `+`.
        let count: u32 = if count.bytes().all(|b| b.is_ascii_digit()) { count.parse().ok() } else { None }
            .ok_or_else(|| RateError::Count { rate: owned(), count: count.to_owned() })?;
        let count = NonZeroU32::new(count).ok_or_else(|| RateError::Zero(owned()))?;
        if u128::from(count.get()) > per.length().as_millis() {
            return Err(RateError::TooFast(owned()));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.suffix())
    }
}

/// One route's budget, as compiled from the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Names the route's counters: a hash of its pattern and methods.
    id: Arc<str>,
    pub rate: Rate,
    /// How many requests may be spent at once; the rate's count by default.
    pub burst: NonZeroU32,
}

impl Budget {
    /// The budget of the route `pattern` with `methods` (empty: every method).
    pub fn new(rate: Rate, burst: Option<NonZeroU32>, pattern: &str, methods: &[http::Method]) -> Budget {
        let mut names: Vec<&str> = methods.iter().map(http::Method::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let digest = Sha256::digest(format!("{pattern}\n{}", names.join(",")).as_bytes());
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Budget { id: Arc::from(id), rate, burst: burst.unwrap_or(rate.count) }
    }

    /// The route's name in counter keys, the same on every gateway.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The time one request's share of the budget takes to come back.
    pub fn interval(&self) -> Duration {
        self.rate.per.length() / self.rate.count.get()
    }

    fn quota(&self) -> Quota {
        let per = match self.rate.per {
            Per::Second => Quota::per_second(self.rate.count),
            Per::Minute => Quota::per_minute(self.rate.count),
            Per::Hour => Quota::per_hour(self.rate.count),
        };
        per.allow_burst(self.burst)
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    User(UserId),
    Client(IpAddr),
    /// No identity and no IP address (not on a TCP listener): all such
    /// callers share one budget rather than escape it.
    Unknown,
}

impl Caller {
    /// The user when the request carried an identity, else the client address.
    pub fn of(user: Option<UserId>, client: Option<IpAddr>) -> Caller {
        match (user, client) {
            (Some(user), _) => Caller::User(user),
            (None, Some(ip)) => Caller::Client(ip),
            (None, None) => Caller::Unknown,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::User(id) => write!(f, "user:{id}"),
            Caller::Client(ip) => write!(f, "ip:{ip}"),
            Caller::Unknown => f.write_str("unknown"),
        }
    }
}

/// The route budgets' counters, beside the store they go with.
pub enum RouteLimiter {
    Local(LocalBudgets),
    #[cfg(feature = "server")]
    Shared(SharedBudgets),
}

impl RouteLimiter {
    /// Counters in this process.
    pub fn local() -> Self {
        RouteLimiter::Local(LocalBudgets::default())
    }

    /// Spends one request of `caller`'s share of `budget`, or refuses it with
    /// the wait until one is back.
    pub async fn spend(&self, budget: &Budget, caller: Caller) -> Result<(), LimitError> {
        match self {
            RouteLimiter::Local(budgets) => budgets.spend(budget, caller),
            #[cfg(feature = "server")]
            RouteLimiter::Shared(budgets) => budgets.spend(budget, caller).await,
        }
    }

    /// Forgets callers whose budget is whole again; run periodically. (Redis
    /// expires its own keys.)
    pub fn prune(&self) {
        match self {
            RouteLimiter::Local(budgets) => budgets.prune(),
            #[cfg(feature = "server")]
            RouteLimiter::Shared(_) => {}
        }
    }
}

/// One keyed `governor` limiter per budget (a limiter has one quota).
#[derive(Default)]
pub struct LocalBudgets {
    limiters: RwLock<HashMap<Budget, DefaultKeyedRateLimiter<Caller>>>,
}

impl LocalBudgets {
    pub fn spend(&self, budget: &Budget, caller: Caller) -> Result<(), LimitError> {
        let checked = {
            let limiters = self.limiters.read().unwrap_or_else(|p| p.into_inner());
            limiters.get(budget).map(|limiter| limiter.check_key(&caller))
        };
        let checked = match checked {
            Some(checked) => checked,
            // The first request on this budget since start, a reload that
            // changed it, or a prune that dropped it.
            None => {
                let mut limiters = self.limiters.write().unwrap_or_else(|p| p.into_inner());
                limiters
                    .entry(budget.clone())
                    .or_insert_with(|| RateLimiter::keyed(budget.quota()))
                    .check_key(&caller)
            }
        };
        checked.map_err(|not_until| retry_after(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Drops every caller whose budget has refilled, then every budget with
    /// no caller left (a route a reload removed ends here).
    pub fn prune(&self) {
        let mut limiters = self.limiters.write().unwrap_or_else(|p| p.into_inner());
        limiters.retain(|_, limiter| {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            !limiter.is_empty()
        });
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        let limiters = self.limiters.read().unwrap_or_else(|p| p.into_inner());
        limiters.values().map(|l| l.len()).sum()
    }
}

#[cfg(feature = "server")]
pub use shared::SharedBudgets;

#[cfg(feature = "server")]
mod shared {
    use std::sync::Arc;

    use redis::Script;

    use super::{Budget, Caller};
    use crate::limits::shared::{gcra, millis, GCRA};
    use crate::limits::LimitError;
    use crate::store::{RedisKeys, RedisPool, RedisStore};

    /// The budgets in Redis: one key per route and caller, expiring when
    /// the caller's budget is whole again.
    pub struct SharedBudgets {
        pool: Arc<RedisPool>,
        keys: Arc<RedisKeys>,
        script: Script,
    }

    impl SharedBudgets {
        pub fn new(store: &RedisStore) -> Self {
            SharedBudgets {
                pool: Arc::clone(store.pool()),
                keys: Arc::clone(store.keys()),
                script: Script::new(GCRA),
            }
        }

        pub async fn spend(&self, budget: &Budget, caller: Caller) -> Result<(), LimitError> {
            let interval = millis(budget.interval()).max(1);
            let tolerance = interval.saturating_mul(u64::from(budget.burst.get()));
            let key = self.keys.limit(&format!("route:{}:{caller}", budget.id()));
            gcra(&self.pool, &self.script, key, interval, tolerance).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http::Method;

    use super::*;
    use crate::error::ApiError;

    fn rate(text: &str) -> Result<Rate, String> {
        text.parse::<Rate>().map_err(|e| e.to_string())
    }

    #[test]
    fn rates_parse_in_three_units_and_refuse_everything_else() {
        let parsed = rate("100/m").unwrap();
        assert_eq!((parsed.count.get(), parsed.per), (100, Per::Minute));
        assert_eq!(rate("1/s").unwrap().per, Per::Second);
        assert_eq!(rate("3600000/h").unwrap().to_string(), "3600000/h");
        assert_eq!(rate(" 5 / h ").unwrap().to_string(), "5/h");
        assert_eq!(rate("100/d").unwrap_err(), "rate `100/d`: unknown unit `d`; expected s, m or h");
        assert_eq!(rate("100/min").unwrap_err(), "rate `100/min`: unknown unit `min`; expected s, m or h");
        assert_eq!(
            rate("0/m").unwrap_err(),
            "rate `0/m`: the count must be at least 1 (leave `rate` out for no budget)"
        );
        assert_eq!(rate("ten/m").unwrap_err(), "rate `ten/m`: `ten` is not a whole number");
        for bad in ["-1/m", "+1/m", "1.5/m", "99999999999/h"] {
            assert!(rate(bad).unwrap_err().contains("is not a whole number"), "{bad}");
        }
        for bad in ["100", "/m", "100/", ""] {
            assert!(rate(bad).unwrap_err().contains("is not a rate like"), "{bad}");
        }
        assert!(rate("1001/s").unwrap_err().contains("more than one request a millisecond"));
        assert!(rate("1000/s").is_ok());
    }

    #[test]
    fn burst_defaults_to_the_count_and_the_id_names_the_route_not_the_budget() {
        let r = rate("3/m").unwrap();
        let get = [Method::GET];
        let a = Budget::new(r, None, "/api/**", &get);
        assert_eq!(a.burst.get(), 3);
        assert_eq!(a.interval(), Duration::from_secs(20));
        assert_eq!(a.id().len(), 16);
        let again = Budget::new(r, NonZeroU32::new(1), "/api/**", &get);
        assert_eq!(a.id(), again.id(), "the same route keeps its Redis counters when its rate changes");
        assert_eq!(
            Budget::new(r, None, "/a", &[Method::POST, Method::GET]).id(),
            Budget::new(r, None, "/a", &[Method::GET, Method::POST, Method::GET]).id(),
            "method order does not matter"
        );
        assert_ne!(a.id(), Budget::new(r, None, "/api/**", &[]).id());
        assert_ne!(a.id(), Budget::new(r, None, "/other/**", &get).id());
    }

    #[test]
    fn local_budgets_are_per_caller_and_pruned() {
        let budgets = LocalBudgets::default();
        let budget = Budget::new(rate("3/m").unwrap(), None, "/a", &[]);
        let ann = Caller::of(Some(1), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        for _ in 0..3 {
            budgets.spend(&budget, ann).unwrap();
        }
        let Err(ApiError::RateLimited { retry_after }) = budgets.spend(&budget, ann).map_err(ApiError::from)
        else {
            panic!("not limited")
        };
        assert!((1..=20).contains(&retry_after), "{retry_after}");
        budgets.spend(&budget, Caller::User(2)).unwrap();
        budgets.spend(&budget, Caller::Client(IpAddr::V4(Ipv4Addr::LOCALHOST))).unwrap();
        let other_route = Budget::new(rate("3/m").unwrap(), None, "/b", &[]);
        budgets.spend(&other_route, ann).unwrap();
        assert_eq!(budgets.tracked(), 4);
        budgets.prune();
        assert_eq!(budgets.tracked(), 4, "nobody's budget has refilled yet");

        let fast = Budget::new(rate("1000/s").unwrap(), NonZeroU32::new(1), "/c", &[]);
        budgets.spend(&fast, ann).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        budgets.prune();
        assert_eq!(budgets.tracked(), 4, "a refilled caller and its empty budget are forgotten");
    }
}
