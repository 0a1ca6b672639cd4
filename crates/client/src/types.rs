//! What the agent reports: sessions, statistics, dispute outcomes.

use serde::{Deserialize, Serialize};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signature;

/// The agent's view of a session's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSessionState {
    /// Usable for requests.
    Open,
    /// `request_close` was sent (or the session expired): no more requests; disputes until the
    /// dispute deadline, then `finalize`.
    Closing,
    /// Finalized (or cooperatively closed) on chain: the account is gone.
    Closed,
    /// A receipt failed verification, or the session was handed over to a tool that drives it
    /// itself ([`crate::Agent::hand_over_session`]): the agent signs no further voucher on it
    /// (close it).
    Abandoned,
}

/// A snapshot of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session account.
    pub address: Pubkey,
    /// The provider's key.
    pub provider: Pubkey,
    /// The deposit mint.
    pub mint: Pubkey,
    /// The offer's resource URL.
    pub resource: String,
    /// The intent the session's offer answered (the agent's `X-402-Intent`; the offer signed
    /// its id as its `offerId`); `None` when it was opened on an offer that answered none.
    pub intent_id: Option<x402pp_protocol::Id16>,
    /// Price per request (atomic units); a metered session's base.
    pub price_per_request: u64,
    /// The most one request may cost: the price, or a metered session's `maxPerRequest` (the
    /// default hold of its vouchers).
    pub max_per_request: u64,
    /// Whether requests are priced by usage (version 3 offer, vouchers and receipts).
    pub metered: bool,
    /// Total deposited (open + top-ups).
    pub deposit: u64,
    /// Latency penalties the agent's disputes recorded on chain (paid to the agent at
    /// `finalize`, out of the provider's earnings).
    pub refunded: u64,
    /// Cumulative charged by the receipts the agent accepted (what the next voucher builds on).
    pub accepted: u64,
    /// seq of the last voucher sent.
    pub seq: u64,
    /// Verified receipts held.
    pub receipts: usize,
    /// Receipts that show an SLA breach.
    pub breaches: usize,
    /// Breaches already disputed on chain.
    pub disputed: usize,
    /// Receipts adopted from a `409 voucher_conflict` (the answer was lost): charged, counted as
    /// failed requests, and not proof that anything was served.
    pub recovered: usize,
    /// Requests that got a 2xx answer with a valid `ok` receipt.
    pub ok_requests: u64,
    /// Paid requests that did not (handler errors, timeouts, refusals after the voucher).
    pub failed_requests: u64,
    /// Unix seconds at which the session expires.
    pub expires_at: i64,
    /// The key that signs this session's vouchers.
    pub voucher_signer: Pubkey,
    /// Local state.
    pub state: AgentSessionState,
}

impl SessionInfo {
    /// Observed uptime in basis points: the share of requests that got a 2xx answer with a
    /// valid receipt (10 000 before the first request).
    pub fn uptime_bps(&self) -> u16 {
        uptime_bps(self.ok_requests, self.failed_requests)
    }
}

pub(crate) fn uptime_bps(ok: u64, failed: u64) -> u16 {
    let total = u128::from(ok).saturating_add(u128::from(failed));
    if total == 0 {
        return 10_000;
    }
    let bps = u128::from(ok)
        .saturating_mul(10_000)
        .checked_div(total)
        .unwrap_or(10_000);
    u16::try_from(bps).unwrap_or(10_000)
}

/// Counters since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Requests sent through [`Agent::send`](crate::Agent::send).
    pub requests: u64,
    /// Requests paid with a session voucher.
    pub session_requests: u64,
    /// Requests paid with x402 `exact` (each one an on-chain transfer the facilitator sends).
    pub exact_requests: u64,
    /// Receipts that passed every check against the answer they came with.
    pub receipts_verified: u64,
    /// Receipts adopted from a `409 voucher_conflict` whose answer was lost: checked except for
    /// the input and output hashes (nothing to hold them against), charged, and counted as
    /// failed requests, not as served ones.
    pub receipts_recovered: u64,
    /// Paid requests that got a 2xx answer (and, for sessions, a valid `ok` receipt).
    pub ok_requests: u64,
    /// Receipts showing an SLA (latency) breach.
    pub sla_breaches: u64,
    /// Disputes recorded on chain.
    pub disputes: u64,
    /// Atomic units of latency penalties the agent's disputes recorded (paid at `finalize`).
    pub penalties_refunded: u64,
    /// On-chain transactions this agent sent and saw confirmed (open, top-up, close, finalize,
    /// dispute). `exact` transfers are sent by the provider's facilitator and not counted here.
    pub transactions: u64,
    /// Fees (lamports) those transactions cost the agent (rent deposits excluded).
    pub fees_lamports: u64,
    /// Of [`AgentStats::transactions`], those a fee sponsor paid for (fee and rent).
    pub sponsored_transactions: u64,
}

impl AgentStats {
    /// Uptime over all paid requests, in basis points.
    pub fn uptime_bps(&self) -> u16 {
        let paid = self.session_requests.saturating_add(self.exact_requests);
        uptime_bps(self.ok_requests, paid.saturating_sub(self.ok_requests))
    }
}

/// The result of disputing one breach receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeOutcome {
    /// The session.
    pub session: Pubkey,
    /// The receipt's seq.
    pub seq: u64,
    /// The dispute transaction.
    pub signature: Signature,
    /// The latency penalty the dispute recorded (atomic units): deducted from the provider's
    /// payout and paid to the agent at `finalize`.
    pub paid: u64,
}

/// The receipt head the chain anchors for a session (from the voucher the provider claimed),
/// held against the agent's store ([`crate::Agent::check_anchor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "result"
)]
pub enum Anchor {
    /// Nothing claimed yet, or the session account is gone.
    None,
    /// The chain anchors receipts `1 ..= count` and the head is the hash of the agent's receipt
    /// `count` (zeros for 0).
    Matches {
        /// Receipts anchored.
        count: u64,
    },
    /// The anchored head is not the agent's receipt `count`: a voucher the agent's key signed
    /// commits to a chain of receipts the agent never accepted (the voucher key is compromised,
    /// or the store lost receipts). Keep the store; it is the evidence.
    Mismatch {
        /// Receipts the chain says are anchored.
        count: u64,
        /// The head on chain.
        on_chain: x402pp_protocol::Hash32,
        /// The hash of the agent's receipt `count`, when the store has it.
        stored: Option<x402pp_protocol::Hash32>,
    },
}

/// Per-request options of a paid request ([`crate::Agent::send_with_options`],
/// [`crate::Agent::send_stream_with_options`], or a `reqwest_middleware` request extension:
/// `client.post(url).with_extension(RequestOptions::default().with_max_charge(500))`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// The most this request may cost (atomic units). On a metered session it is the voucher's
    /// hold (clamped to the offer's `maxPerRequest`; a value below the base cannot pay the
    /// request: [`crate::ClientError::BudgetExceeded`]); a fixed price above it is refused the
    /// same way. `None`: the offer's maximum (within the budget).
    pub max_charge: Option<u64>,
}

impl RequestOptions {
    /// These options with `max_charge` set.
    #[must_use]
    pub fn with_max_charge(mut self, max_charge: u64) -> Self {
        self.max_charge = Some(max_charge);
        self
    }
}

/// What a streamed session answer was charged, from its verified receipt
/// ([`crate::PaidStream::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReceipt {
    /// The session.
    pub session: Pubkey,
    /// The voucher's seq.
    pub seq: u64,
    /// The verified receipt (stored with the session's receipts).
    pub receipt: x402pp_protocol::Receipt,
    /// Input units the receipt counts (0 on a fixed-price session).
    pub units_in: u64,
    /// Output units the receipt counts (0 on a fixed-price session).
    pub units_out: u64,
    /// What the request was charged.
    pub charged: u64,
    /// The most it could have been charged: the voucher's hold (the price on a fixed-price
    /// session).
    pub hold: u64,
    /// Voucher accepted → first billable byte (ms): what the latency promise is about.
    pub ttfb_ms: u32,
    /// Voucher accepted → last byte or the cut (ms).
    pub total_ms: u32,
    /// Whether the receipt was fetched by resending the voucher because the stream lost its
    /// receipt event (cut, or ended without it): its output was checked against the bytes read
    /// (`docs/design/metered-streaming.md` §3.7), not the whole answer.
    pub recovered: bool,
    /// Whether the receipt shows an SLA breach (recorded; disputed per the dispute policy).
    pub breach: bool,
}

/// How a streamed answer ended ([`crate::PaidStream::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// Paid by a session voucher: the receipt was verified against the bytes streamed.
    Session(Box<StreamReceipt>),
    /// Not paid by a session (a free route, or x402 `exact`): no receipt follows the body.
    Unreceipted,
}

impl StreamOutcome {
    /// The session receipt, when paid by a session.
    pub fn receipt(&self) -> Option<&StreamReceipt> {
        match self {
            Self::Session(receipt) => Some(receipt),
            Self::Unreceipted => None,
        }
    }
}
