//! Request limits: the total size of a request's headers (`431 header_too_large`), the size of
//! its body (`413 payload_too_large`), the time to receive the body (`408 request_timeout`), and
//! token-bucket rate limits per client IP and per session (`429 rate_limited` with
//! `Retry-After`). Every refusal is the JSON [`x402pp_protocol::ErrorBody`].
//!
//! - [`RequestLimitsLayer`] applies the header, body, read-timeout and per-IP limits to every
//!   route of a router (free or paid). The client IP is the peer address from axum's
//!   `ConnectInfo<SocketAddr>`: serve with `into_make_service_with_connect_info::<SocketAddr>()`.
//!   Without it (e.g. `oneshot` in tests, or a server started with plain `axum::serve`) the per-IP
//!   limit is skipped, never a panic.
//! - The per-session limit is checked by the [`crate::Provider`] first thing on a paid route,
//!   keyed by `X-402-Session-Id`, before any signature verification or ledger write: a flood on
//!   one session costs a map lookup each, and a refused voucher is not used (resend it later).
//!
//! [`RateLimiter`] is a small in-memory token bucket per key in a bounded map: when the map is
//! full, idle keys (whose bucket has refilled) are dropped, then arbitrary keys until an eighth of
//! the map is free, so memory stays bounded under a flood of addresses (a dropped key starts again
//! with a full bucket).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response};
use axum::response::IntoResponse;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tower::{Layer, Service, ServiceExt};
use x402pp_protocol::{headers, ErrorCode};

use crate::error::ServerError;

/// Token units per token: buckets count micro-tokens so integer refill is exact enough.
const MICRO: u64 = 1_000_000;

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
}

/// A request refused by a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: retry after {retry_after_secs} s")]
pub struct RateLimited {
    /// Whole seconds until a token is available (the `Retry-After` value), at least 1.
    pub retry_after_secs: u64,
}

impl RateLimited {
    /// The `429 rate_limited` answer with `Retry-After`.
    pub fn into_server_error(self, what: &str) -> ServerError {
        ServerError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests {what}; retry after {} s",
                self.retry_after_secs
            ),
        )
        .with_details(serde_json::json!({ "retryAfterSecs": self.retry_after_secs }))
        .with_header("retry-after", self.retry_after_secs.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    micro_tokens: u64,
    last: Instant,
}

/// Token buckets by key, in a map of at most `max_keys` entries.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter at `limit`, tracking at most `max_keys` keys (at least 8).
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit: RateLimit {
                per_second: limit.per_second.max(1),
                burst: limit.burst.max(1),
            },
            max_keys: max_keys.max(8),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst).saturating_mul(MICRO)
    }

    /// The bucket's tokens at `now`, refilled and capped.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> u64 {
        let elapsed = u64::try_from(now.saturating_duration_since(bucket.last).as_micros())
            .unwrap_or(u64::MAX);
        bucket
            .micro_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(self.limit.per_second)))
            .min(self.capacity())
    }

    /// Takes one token for `key` now.
    pub fn check(&self, key: K) -> Result<(), RateLimited> {
        self.check_at(key, Instant::now())
    }

    /// Takes one token for `key` at `now` (for tests with a controlled clock).
    pub fn check_at(&self, key: K, now: Instant) -> Result<(), RateLimited> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&key) && buckets.len() >= self.max_keys {
            self.evict(&mut buckets, now);
        }
        let capacity = self.capacity();
        let bucket = buckets.entry(key).or_insert(Bucket {
            micro_tokens: capacity,
            last: now,
        });
        let tokens = self.refilled(bucket, now);
        bucket.last = now;
        match tokens.checked_sub(MICRO) {
            Some(left) => {
                bucket.micro_tokens = left;
                Ok(())
            }
            None => {
                bucket.micro_tokens = tokens;
                let missing = MICRO.saturating_sub(tokens);
                let wait_micros = missing.div_ceil(u64::from(self.limit.per_second));
                Err(RateLimited {
                    retry_after_secs: wait_micros.div_ceil(MICRO).max(1),
                })
            }
        }
    }

    /// Drops idle keys (full buckets: forgetting them changes nothing), then arbitrary keys until
    /// an eighth of the map is free, so the next inserts are cheap.
    fn evict(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let capacity = self.capacity();
        buckets.retain(|_, bucket| self.refilled(bucket, now) < capacity);
        let low = self.max_keys.saturating_sub(self.max_keys / 8);
        let excess = buckets.len().saturating_sub(low);
        if excess > 0 {
            let victims: Vec<K> = buckets.keys().take(excess).cloned().collect();
            for key in victims {
                buckets.remove(&key);
            }
        }
    }
}

impl RateLimiter<[u8; 32]> {
    /// The per-session check of a paid request: keyed by the `X-402-Session-Id` header when it
    /// is a valid address (a malformed one is refused later, and costs nothing to refuse).
    pub fn check_session(&self, request_headers: &HeaderMap) -> Result<(), ServerError> {
        let Some(session) = session_key(request_headers) else {
            return Ok(());
        };
        self.check(session)
            .map_err(|limited| limited.into_server_error("on this session"))
    }
}

/// The session address a request names in `X-402-Session-Id`, if it parses.
pub fn session_key(request_headers: &HeaderMap) -> Option<[u8; 32]> {
    let value = request_headers
        .get(headers::X402_SESSION_ID)?
        .to_str()
        .ok()?;
    value
        .trim()
        .parse::<solana_sdk::pubkey::Pubkey>()
        .ok()
        .map(|key| key.to_bytes())
}

/// Whether an error (or one of its sources) is a body length limit being exceeded.
pub fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The bytes of a request's header fields: names plus values, as counted against
/// [`RequestLimits::max_header_bytes`].
pub fn header_bytes(request_headers: &HeaderMap) -> usize {
    request_headers.iter().fold(0usize, |total, (name, value)| {
        total
            .saturating_add(name.as_str().len())
            .saturating_add(value.len())
    })
}

/// Limits every request of a router gets from [`RequestLimitsLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest total of header names and values (default 32 KiB); over it, `431`.
    pub max_header_bytes: usize,
    /// Largest request body on any route (default 1 MiB); over it, `413`. Paid routes are also
    /// bounded by `ServerConfig::max_request_body`.
    pub max_body_bytes: usize,
    /// Time to receive the body once the headers are in (default 30 s); over it, `408`. The
    /// handler's own time is not limited here (paid routes have `handler_timeout`).
    pub read_timeout: Duration,
    /// Per-client-IP rate (default none: behind a proxy every client has the proxy's address).
    pub per_ip: Option<RateLimit>,
    /// Keys (IPs, sessions) a rate limiter tracks at most (default 65 536).
    pub max_tracked_keys: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 1024 * 1024,
            read_timeout: Duration::from_secs(30),
            per_ip: None,
            max_tracked_keys: 65_536,
        }
    }
}

/// A tower layer applying [`RequestLimits`] to every request.
#[derive(Debug, Clone)]
pub struct RequestLimitsLayer {
    limits: Arc<RequestLimits>,
    per_ip: Option<Arc<RateLimiter<IpAddr>>>,
}

impl RequestLimitsLayer {
    /// A layer with `limits` (one per-IP limiter shared by all services it makes).
    pub fn new(limits: RequestLimits) -> Self {
        let per_ip = limits
            .per_ip
            .map(|rate| Arc::new(RateLimiter::new(rate, limits.max_tracked_keys)));
        Self {
            limits: Arc::new(limits),
            per_ip,
        }
    }

    /// The per-IP limiter, when there is one.
    pub fn per_ip(&self) -> Option<&Arc<RateLimiter<IpAddr>>> {
        self.per_ip.as_ref()
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimitsService {
            inner,
            limits: self.limits.clone(),
            per_ip: self.per_ip.clone(),
        }
    }
}

/// The service [`RequestLimitsLayer`] produces. Always answers (`Error = Infallible`).
#[derive(Debug, Clone)]
pub struct RequestLimitsService<S> {
    inner: S,
    limits: Arc<RequestLimits>,
    per_ip: Option<Arc<RateLimiter<IpAddr>>>,
}

impl<S> RequestLimitsService<S> {
    /// The refusal a request gets before its body is read, if any.
    fn refuse_early(&self, request: &Request<Body>) -> Option<ServerError> {
        let limits = &self.limits;
        let size = header_bytes(request.headers());
        if size > limits.max_header_bytes {
            return Some(ServerError::new(
                ErrorCode::HeaderTooLarge,
                format!(
                    "the request headers are {size} bytes, the limit is {}",
                    limits.max_header_bytes
                ),
            ));
        }
        if let (Some(limiter), Some(ConnectInfo(peer))) = (
            &self.per_ip,
            request.extensions().get::<ConnectInfo<SocketAddr>>(),
        ) {
            if let Err(limited) = limiter.check(peer.ip()) {
                return Some(limited.into_server_error("from this address"));
            }
        }
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared
            .is_some_and(|len| len > u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX))
        {
            return Some(too_large(limits.max_body_bytes));
        }
        None
    }
}

fn too_large(limit: usize) -> ServerError {
    ServerError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is over the limit of {limit} bytes"),
    )
}

/// Reads the whole body within the limits.
async fn read_body(body: Body, limits: &RequestLimits) -> Result<Body, ServerError> {
    let collected = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    match collected {
        Ok(Ok(collected)) => Ok(Body::from(collected.to_bytes())),
        Ok(Err(error)) if is_length_limit(error.as_ref()) => Err(too_large(limits.max_body_bytes)),
        Ok(Err(error)) => {
            tracing::debug!(%error, "request body could not be read");
            Err(ServerError::new(
                ErrorCode::MalformedRequest,
                "the request body could not be read",
            ))
        }
        Err(_) => Err(ServerError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body was not received within {} ms",
                limits.read_timeout.as_millis()
            ),
        )),
    }
}

impl<S> Service<Request<Body>> for RequestLimitsService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        if let Some(error) = self.refuse_early(&request) {
            return Box::pin(async move { Ok(error.into_response()) });
        }
        let limits = self.limits.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            match read_body(body, &limits).await {
                Ok(body) => inner.oneshot(Request::from_parts(parts, body)).await,
                Err(error) => Ok(error.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32, max_keys: usize) -> RateLimiter<u32> {
        RateLimiter::new(RateLimit { per_second, burst }, max_keys)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_until_it_refills() {
        let limiter = limiter(2, 3, 16);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(1, start), Ok(()));
        }
        assert_eq!(
            limiter.check_at(1, start),
            Err(RateLimited {
                retry_after_secs: 1
            })
        );
        // Half a second at 2/s is one token.
        let later = start.checked_add(Duration::from_millis(500)).expect("time");
        assert_eq!(limiter.check_at(1, later), Ok(()));
        assert!(limiter.check_at(1, later).is_err());
        // Other keys have their own buckets.
        assert_eq!(limiter.check_at(2, later), Ok(()));
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let limiter = limiter(1_000, 1, 16);
        let start = Instant::now();
        assert!(limiter.check_at(7, start).is_ok());
        // A token is 1 ms away, but Retry-After is whole seconds.
        assert_eq!(
            limiter.check_at(7, start),
            Err(RateLimited {
                retry_after_secs: 1
            })
        );
        let soon = start.checked_add(Duration::from_millis(1)).expect("time");
        assert!(limiter.check_at(7, soon).is_ok());
    }

    #[test]
    fn a_flood_of_keys_keeps_the_map_bounded() {
        let limiter = limiter(1, 1, 64);
        let now = Instant::now();
        for key in 0..10_000 {
            // Every key spent its token: none is idle, so arbitrary keys are evicted.
            let _ = limiter.check_at(key, now);
            assert!(limiter.tracked() <= 64);
        }
        // Idle keys go first: once their buckets refilled, a new key evicts them all.
        let small = self::limiter(1, 1, 8);
        for key in 0..8 {
            assert!(small.check_at(key, now).is_ok());
        }
        assert_eq!(small.tracked(), 8);
        let later = now.checked_add(Duration::from_secs(5)).expect("time");
        assert!(small.check_at(1_000_000, later).is_ok());
        assert_eq!(small.tracked(), 1);
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
    fn session_keys_are_valid_addresses_only() {
        let mut request_headers = HeaderMap::new();
        assert_eq!(session_key(&request_headers), None);
        request_headers.insert(headers::X402_SESSION_ID, "not base58!".parse().expect("hv"));
        assert_eq!(session_key(&request_headers), None);
        let address = solana_sdk::pubkey::Pubkey::new_unique();
        request_headers.insert(
            headers::X402_SESSION_ID,
            address.to_string().parse().expect("hv"),
        );
        assert_eq!(session_key(&request_headers), Some(address.to_bytes()));
    }

    #[test]
    fn header_bytes_count_names_and_values() {
        let mut request_headers = HeaderMap::new();
        request_headers.insert("x-a", "12345".parse().expect("hv"));
        request_headers.append("x-a", "678".parse().expect("hv"));
        assert_eq!(header_bytes(&request_headers), 3 + 5 + 3 + 3);
    }
}
