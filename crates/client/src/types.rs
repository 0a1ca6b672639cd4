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
    /// Price per request (atomic units).
    pub price_per_request: u64,
    /// Total deposited (open + top-ups).
    pub deposit: u64,
    /// Latency penalties the agent's disputes recorded on chain (paid to the agent at
    /// `finalize`, out of the provider's earnings).
    pub refunded: u64,
    /// Cumulative amount of the last voucher the provider accepted.
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
