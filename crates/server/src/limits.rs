//! Request limits, from [`x402pp_limits`] (re-exported here so `x402pp_server::limits::…` paths
//! keep working): the total size of a request's headers (`431 header_too_large`), the size of its
//! body (`413 payload_too_large`), the time to receive the body (`408 request_timeout`), and
//! token-bucket rate limits per client IP and per session (`429 rate_limited` with
//! `Retry-After`). Every refusal is the JSON [`x402pp_protocol::ErrorBody`].
//!
//! - [`RequestLimitsLayer`] applies the header, body, read-timeout and per-IP limits to every
//!   route of a router (free or paid).
//! - The per-session limit ([`RateLimiter::check_session`]) is checked by the [`crate::Provider`]
//!   once a request's voucher verified against the session's voucher signer, before any ledger
//!   write: only the agent's own vouchers count against its session (a session id is public, so
//!   junk sent under it is refused as `402 invalid_signature` without touching the quota), and a
//!   refused voucher is not used (resend it later).

pub use x402pp_limits::{
    header_bytes, is_length_limit, LimitError, RateLimit, RateLimited, RateLimiter, RequestLimits,
    RequestLimitsLayer, RequestLimitsService,
};
