//! x402pp-client: the agent side of x402++ session channels on Solana.
//!
//! An [`Agent`] sends HTTP requests and pays the ones that answer `402`:
//!
//! - with a **session** when the provider offers one the [`Budget`] accepts: it verifies the
//!   signed offer, opens an escrow session on chain once (one transaction), then pays each
//!   request with a cumulative voucher (no transaction) and verifies every receipt (provider
//!   signature, its own input hash, the body's output hash, the chain link, the amount);
//! - with x402 v2 **`exact`** otherwise (or when [`AgentConfig::prefer_session`] is `false`);
//!
//! stating its **intent** (`X-402-Intent`: capability, the budget's price and latency, the
//! deposit it commits to) on the first, unpaid request to a resource and accepting only an offer
//! that answers it ([`AgentConfig::state_intent`]; a provider with nothing to meet it answers
//! `no_acceptable_offer` and the agent pays `exact` where offered);
//!
//! and only in the mints it pays in ([`AgentConfig::assets`], by default the network's USDC):
//! an offer or `exact` requirement in any other asset is [`ClientError::AssetRefused`]. A session
//! answer that may have been served but carries no receipt is [`ClientError::ReceiptMissing`],
//! and at most one lost answer is recovered from a `409 voucher_conflict` per request
//! ([`ClientError::RepeatedConflict`] after that).
//!
//! **Metered** offers (version 3: a base per request plus unit prices, at most `maxPerRequest`)
//! are accepted when their maximum fits the budget's price: each voucher states the total of the
//! receipts accepted and adds a **hold** (by default the maximum; [`RequestOptions::max_charge`]
//! lowers it), the deposit must cover `accepted + hold`, and each receipt's charge is checked
//! against its units. [`Agent::send_stream`] takes a streamed (SSE) answer frame by frame and
//! verifies its receipt, sent as the stream's final event, at [`PaidStream::finish`]; a stream
//! cut before its receipt has the receipt fetched by resending its voucher
//! ([`Agent::recover_receipts`], or before the session's next voucher).
//!
//! It tops the deposit up when it runs low, records SLA breaches (receipt latency above the
//! offer's `maxLatencyMs`) and disputes them on chain ([`DisputePolicy::Automatic`]), and keeps
//! sessions and receipts in a local store ([`AgentConfig::store_path`]).
//!
//! Vouchers are signed by a **fresh ed25519 key per session** (registered on chain as the
//! session's `voucher_signer` at open), never by the wallet: a leaked voucher key can only spend
//! that session's deposit. Requests of one session are serialised (the provider refuses a voucher
//! while the previous request of the session is in flight); concurrent requests to one provider
//! share its session and queue.
//!
//! ```no_run
//! # async fn demo() -> Result<(), x402pp_client::ClientError> {
//! use std::sync::Arc;
//! use x402pp_client::{Agent, AgentConfig, Budget};
//! let wallet = Arc::new(solana_sdk::signature::Keypair::new());
//! let agent = Agent::new(AgentConfig::new("http://127.0.0.1:8899", wallet, Budget::default())).await?;
//! let response = agent
//!     .client()
//!     .post("http://127.0.0.1:8080/v1/inference")
//!     .json(&serde_json::json!({ "prompt": "hello" }))
//!     .send()
//!     .await?;
//! println!("{}", response.text().await?);
//! # Ok(()) }
//! ```
//!
//! A load generator that drives a session itself (signing vouchers, skipping receipt checks)
//! takes it over from the agent with [`Agent::hand_over_session`]: the agent then signs no
//! further voucher on it.
//!
//! See `docs/client.md` for the budget rules, session reuse, disputes and the store format.

mod agent;
pub mod config;
pub mod error;
pub mod middleware;
mod store;
pub mod types;

pub use agent::{Agent, PaidStream, SessionHandover, StreamReceiptError};
pub use config::{AgentConfig, Budget, DisputePolicy, Sponsorship, DEFAULT_MAX_UNVERIFIED_TAIL};
pub use error::{ClientError, RefusalCode, StoreError};
pub use middleware::PaymentMiddleware;
pub use types::{
    AgentSessionState, AgentStats, Anchor, DisputeOutcome, RequestOptions, SessionInfo,
    StreamOutcome, StreamReceipt,
};
pub use x402pp_session::{Progress, ReceiptError};
