//! The JSON of the session commands (`--json`), documented in docs/cli.md.

use serde::Serialize;
use x402pp_protocol::Receipt;

use crate::amount::TokenAmount;

/// One session in `session list --json` and `session show --json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    /// Session account address.
    pub address: String,
    /// `open`, `closing`, `closed` or `abandoned` (the agent's view, docs/client.md).
    pub state: String,
    /// The provider's key.
    pub provider: String,
    /// The deposit mint.
    pub mint: String,
    /// The offer's resource URL.
    pub resource: String,
    /// Price per request.
    pub price: TokenAmount,
    /// Total deposited (open and top-ups).
    pub deposit: TokenAmount,
    /// Cumulative amount of the last voucher the provider accepted (spent so far).
    pub accepted: TokenAmount,
    /// `deposit − refunded − accepted`: what vouchers may still spend (0 once closed).
    pub remaining: TokenAmount,
    /// Paid back to the wallet by disputes.
    pub refunded: TokenAmount,
    /// seq of the last voucher sent.
    pub seq: u64,
    /// Verified receipts held.
    pub receipts: usize,
    /// Receipts showing an SLA breach.
    pub breaches: usize,
    /// Breaches disputed on chain.
    pub disputed: usize,
    /// Requests answered 2xx with a valid receipt.
    pub ok_requests: u64,
    /// Paid requests that were not.
    pub failed_requests: u64,
    /// Unix seconds at which the session expires.
    pub expires_at: i64,
    /// The per-session key that signs its vouchers.
    pub voucher_signer: String,
}

/// `session list --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionList {
    /// The wallet whose sessions these are.
    pub wallet: String,
    /// The store they were read from.
    pub store: String,
    /// The sessions, oldest first as stored.
    pub sessions: Vec<SessionRow>,
}

/// The session account on chain, in `session show --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainSession {
    /// `open` or `closing`.
    pub state: x402pp_protocol::SessionState,
    /// Paid to the provider by claims.
    pub claimed: TokenAmount,
    /// Left in the vault: deposit − claimed − refunded.
    pub vault: TokenAmount,
    /// Unix seconds of the close request, when one was made.
    pub close_requested_at: Option<i64>,
    /// Last second the provider may claim; `reclaim` works after it.
    pub claim_deadline: Option<i64>,
}

/// `session show --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    /// The store's view.
    pub session: SessionRow,
    /// The account on chain; `null` once it is closed (reclaimed, or closed by the provider).
    pub chain: Option<ChainSession>,
    /// The verified receipts, as the provider signed them (docs/protocol.md).
    pub receipts: Vec<Receipt>,
}

/// `session top-up --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopUpReport {
    /// The session.
    pub session: String,
    /// The `top_up` transaction.
    pub signature: String,
    /// What was added.
    pub amount: TokenAmount,
    /// The deposit after it.
    pub deposit: TokenAmount,
}

/// `session request-close --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestCloseReport {
    /// The session.
    pub session: String,
    /// The `request_close` transaction.
    pub signature: String,
    /// Last second the provider may claim; `reclaim` works after it.
    pub claim_deadline: Option<i64>,
}

/// `session reclaim --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReclaimReport {
    /// The session (now closed).
    pub session: String,
    /// The `reclaim` transaction.
    pub signature: String,
    /// What the vault held before the reclaim, returned to the wallet.
    pub returned: Option<TokenAmount>,
}

/// One dispute in `session dispute --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeRow {
    /// The session.
    pub session: String,
    /// The breach receipt's seq.
    pub seq: u64,
    /// The `dispute` transaction.
    pub signature: String,
    /// What the escrow paid back.
    pub paid: TokenAmount,
}

/// `session dispute --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeReport {
    /// The disputes sent (empty when there was no breach to dispute).
    pub disputes: Vec<DisputeRow>,
}
