//! x402pp-limits: HTTP request limits for axum, each refusal answered with the x402++ JSON error
//! body ([`x402pp_protocol::ErrorBody`]):
//!
//! | limit | answer |
//! |---|---|
//! | total size of a request's header names and values | `431 header_too_large` |
//! | size of its body | `413 payload_too_large` |
//! | time to receive the body once the headers are in | `408 request_timeout` |
//! | requests per key (client IP, session) | `429 rate_limited` with `Retry-After` |
//!
//! - [`RequestLimitsLayer`] applies the header, body, read-timeout and per-IP limits of a
//!   [`RequestLimits`] to every route of a router (free or paid). The client IP is the peer address
//!   from axum's `ConnectInfo<SocketAddr>`: serve with
//!   `into_make_service_with_connect_info::<SocketAddr>()`. Without it (e.g. `oneshot` in tests,
//!   or a server started with plain `axum::serve`) the per-IP limit is skipped, never a panic.
//! - [`RateLimiter`] is a keyed token bucket ([`governor`]'s GCRA) in a bounded map; the provider
//!   (`x402pp-server`) uses one keyed by session ([`RateLimiter::check_session`]) on a paid
//!   route once the request's voucher verified against the session's voucher signer (session ids
//!   are public: only the session's signer may spend its quota).
//!
//! This crate has no chain, ledger or settlement code, so a service that only needs the limits
//! (the x402 facilitator) does not depend on the provider's server crate.

mod error;
mod layer;
mod rate;

pub use error::LimitError;
pub use layer::{
    header_bytes, is_length_limit, RequestLimits, RequestLimitsLayer, RequestLimitsService,
};
pub use rate::{RateLimit, RateLimited, RateLimiter};
