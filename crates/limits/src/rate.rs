//! Keyed token-bucket rate limits on [`governor`]: one GCRA state per key (client IP, session) in
//! a bounded map.
//!
//! governor keeps a key until it is dropped explicitly, so memory is bounded here: when a new key
//! finds the map at `max_keys`, idle keys (whose bucket has refilled: forgetting them changes
//! nothing) are dropped with governor's `retain_recent`, then arbitrary keys until an eighth of the
//! map is free, so the next inserts are cheap. A dropped key starts again with a full bucket.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::Quota;
use x402pp_protocol::ErrorCode;

use crate::LimitError;

/// A token-bucket rate: `per_second` requests sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second sustained (tokens added per second); at least 1.
    pub per_second: u32,
    /// Largest burst (bucket capacity); at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` sustained with bursts of `burst`, or `None` (no limit) when `per_second` is 0.
    /// A burst of 0 is taken as `per_second`.
    pub fn per_second(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then_some(Self {
            per_second,
            burst: if burst == 0 { per_second } else { burst },
        })
    }

    /// The governor quota: a token every `1 / per_second` s, at most `burst` at once (each at
    /// least 1).
    fn quota(self) -> Quota {
        Quota::per_second(NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN))
    }
}

/// A request refused by a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {retry_after_secs} s")]
pub struct RateLimited {
    /// Whole seconds until a token is available (the `Retry-After` value), at least 1.
    pub retry_after_secs: u64,
}

impl RateLimited {
    /// The `429 rate_limited` answer with `Retry-After`; `what` completes "too many requests …"
    /// (e.g. "from this address").
    pub fn into_limit_error(self, what: &str) -> LimitError {
        LimitError {
            code: ErrorCode::RateLimited,
            message: format!(
                "too many requests {what}; retry after {} s",
                self.retry_after_secs
            ),
            retry_after_secs: Some(self.retry_after_secs),
        }
    }

    /// Whole seconds of `wait`, rounded up, at least 1.
    fn after(wait: Duration) -> Self {
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        Self {
            retry_after_secs: secs.max(1),
        }
    }
}

/// governor's DashMap store behind an `Arc`, so the limiter can drop arbitrary keys (governor's
/// own housekeeping only drops idle ones).
#[derive(Debug)]
struct SharedStore<K: Hash + Eq + Clone>(Arc<DashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Governor<K, C> =
    governor::RateLimiter<K, SharedStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Token buckets by key, in a map of at most `max_keys` entries. `C` is the clock (a fake one in
/// tests, [`governor::clock::FakeRelativeClock`]).
#[derive(Debug)]
pub struct RateLimiter<K: Hash + Eq + Clone, C: Clock = MonotonicClock> {
    limit: RateLimit,
    max_keys: usize,
    keys: Arc<DashMapStateStore<K>>,
    limiter: Governor<K, C>,
    clock: C,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter at `limit`, tracking at most `max_keys` keys (at least 8).
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self::with_clock(limit, max_keys, MonotonicClock)
    }
}

impl<K: Hash + Eq + Clone, C: Clock> RateLimiter<K, C> {
    /// A limiter on `clock` (for tests with a controlled clock).
    pub fn with_clock(limit: RateLimit, max_keys: usize, clock: C) -> Self {
        let limit = RateLimit {
            per_second: limit.per_second.max(1),
            burst: limit.burst.max(1),
        };
        let keys = Arc::new(DashMapStateStore::<K>::default());
        let limiter = governor::RateLimiter::new(limit.quota(), SharedStore(keys.clone()), &clock);
        Self {
            limit,
            max_keys: max_keys.max(8),
            keys,
            limiter,
            clock,
        }
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }

    /// Takes one token for `key` now.
    pub fn check(&self, key: K) -> Result<(), RateLimited> {
        if self.keys.len() >= self.max_keys && !self.keys.contains_key(&key) {
            self.evict();
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| RateLimited::after(not_until.wait_time_from(self.clock.now())))
    }

    /// Drops idle keys, then arbitrary keys until an eighth of the map is free.
    fn evict(&self) {
        self.limiter.retain_recent();
        let low = self.max_keys.saturating_sub(self.max_keys / 8);
        let excess = self.keys.len().saturating_sub(low);
        if excess > 0 {
            let victims: Vec<K> = self
                .keys
                .iter()
                .take(excess)
                .map(|entry| entry.key().clone())
                .collect();
            for key in victims {
                self.keys.remove(&key);
            }
        }
        // After a flood has passed, give the memory back.
        if self.keys.len() < self.max_keys / 4 {
            self.limiter.shrink_to_fit();
        }
    }
}

impl<C: Clock> RateLimiter<[u8; 32], C> {
    /// The per-session check of a paid request, keyed by the session address. Call it only once
    /// the request proved it speaks for the session (its voucher verified against the session's
    /// voucher signer): session ids are public, so a bucket keyed by an unauthenticated header
    /// lets anyone spend a victim's quota.
    pub fn check_session(&self, session: [u8; 32]) -> Result<(), LimitError> {
        self.check(session)
            .map_err(|limited| limited.into_limit_error("on this session"))
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        per_second: u32,
        burst: u32,
        max_keys: usize,
    ) -> (RateLimiter<u32, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter =
            RateLimiter::with_clock(RateLimit { per_second, burst }, max_keys, clock.clone());
        (limiter, clock)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_until_it_refills() {
        let (limiter, clock) = limiter(2, 3, 16);
        for _ in 0..3 {
            assert_eq!(limiter.check(1), Ok(()));
        }
        assert_eq!(
            limiter.check(1),
            Err(RateLimited {
                retry_after_secs: 1
            })
        );
        // Half a second at 2/s is one token.
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(1), Ok(()));
        assert!(limiter.check(1).is_err());
        // Other keys have their own buckets.
        assert_eq!(limiter.check(2), Ok(()));
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let (limiter, clock) = limiter(1_000, 1, 16);
        assert!(limiter.check(7).is_ok());
        // A token is 1 ms away, but Retry-After is whole seconds.
        assert_eq!(
            limiter.check(7),
            Err(RateLimited {
                retry_after_secs: 1
            })
        );
        clock.advance(Duration::from_millis(1));
        assert!(limiter.check(7).is_ok());
    }

    #[test]
    fn retry_after_rounds_the_wait_up_to_whole_seconds() {
        assert_eq!(
            RateLimited::after(Duration::from_millis(2_001)).retry_after_secs,
            3
        );
        assert_eq!(
            RateLimited::after(Duration::from_secs(2)).retry_after_secs,
            2
        );
        assert_eq!(RateLimited::after(Duration::ZERO).retry_after_secs, 1);
    }

    #[test]
    fn a_flood_of_keys_keeps_the_map_bounded() {
        let (limiter, _clock) = limiter(1, 1, 64);
        for key in 0..10_000 {
            // Every key spent its token: none is idle, so arbitrary keys are evicted.
            let _ = limiter.check(key);
            assert!(limiter.tracked() <= 64);
        }
        // Idle keys go first: once their buckets refilled, a new key evicts them all.
        let (small, clock) = self::limiter(1, 1, 8);
        for key in 0..8 {
            assert!(small.check(key).is_ok());
        }
        assert_eq!(small.tracked(), 8);
        clock.advance(Duration::from_secs(5));
        assert!(small.check(1_000_000).is_ok());
        assert_eq!(small.tracked(), 1);
    }

    #[test]
    fn a_key_forgotten_under_a_flood_starts_again_with_a_full_bucket() {
        let (limiter, _clock) = limiter(1, 1, 8);
        for key in 0..64 {
            assert!(limiter.check(key).is_ok());
            assert!(limiter.check(key).is_err());
        }
        // Every key spent its only token, but at most 8 are remembered: a forgotten one is
        // served again at once.
        assert!(limiter.tracked() <= 8);
        let forgotten = (0..64)
            .find(|key| !limiter.keys.contains_key(key))
            .expect("a forgotten key");
        assert!(limiter.check(forgotten).is_ok());
    }

    #[test]
    fn a_zero_rate_means_no_limit_and_a_zero_burst_means_the_rate() {
        assert_eq!(RateLimit::per_second(0, 10), None);
        assert_eq!(
            RateLimit::per_second(5, 0),
            Some(RateLimit {
                per_second: 5,
                burst: 5
            })
        );
    }

    #[test]
    fn the_session_limiter_refuses_the_same_session_with_a_429_and_keeps_sessions_apart() {
        let limiter = RateLimiter::with_clock(
            RateLimit {
                per_second: 1,
                burst: 1,
            },
            16,
            FakeRelativeClock::default(),
        );
        assert_eq!(limiter.check_session([7; 32]), Ok(()));
        let refused = limiter
            .check_session([7; 32])
            .expect_err("second request in the same second");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(
            refused.message,
            "too many requests on this session; retry after 1 s"
        );
        assert_eq!(limiter.check_session([8; 32]), Ok(()), "another session");
    }
}
