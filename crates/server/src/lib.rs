//! x402pp-server: the provider side of x402++ session channels on Solana.
//!
//! - [`PaymentLayer`]: a tower layer for axum. Priced routes answer unpaid requests with a 402
//!   (`PAYMENT-REQUIRED` listing `session` and `exact`, plus a signed `X-402-Offer`, answering an
//!   `X-402-Intent` when sent), serve session requests in the order of DESIGN §7 (parse → load
//!   session → verify voucher strictly → compare-and-set it durably → run the handler → sign and
//!   store the receipt → respond with `X-402-Receipt` and `X-402-Session-Status`), and serve
//!   `exact` payments after the facilitator settled them (`PAYMENT-RESPONSE`).
//! - [`Provider`]: keys, terms ([`ServerConfig`], [`RoutePrice`]), ledger, chain, facilitator.
//! - [`ledger`]: the durable ledger (SQLite by default, PostgreSQL by URL).
//! - [`settlement`]: the background task that claims on chain.
//! - [`Facilitator`]: `exact` verification and settlement, in-process or over HTTP.
//! - [`sponsor`]: the provider as fee sponsor of its sessions (agents that hold no SOL).
//! - [`limits`]: header, body, read-timeout and rate limits answering JSON errors
//!   ([`RequestLimitsLayer`] for every route, the per-session rate inside [`Provider`]).
//!
//! Handlers read what paid for the request from the extensions ([`PaymentContext`]).

pub mod config;
pub mod error;
pub mod facilitator;
pub mod layer;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod provider;
pub mod settlement;
pub mod sponsor;

pub use config::{ConfigError, PriceTier, RoutePrice, ServerConfig};
pub use error::{ServerError, StartError};
pub use facilitator::{Facilitator, FacilitatorError, HttpFacilitator, SharedFacilitator};
pub use layer::{PaymentLayer, PaymentService};
pub use limits::{RateLimit, RequestLimits, RequestLimitsLayer};
pub use metrics::Metrics;
pub use provider::{PaymentContext, Provider, ReportedUsage, UsageReporter};
