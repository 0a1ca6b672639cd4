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
    /// Cumulative of the best voucher the provider claimed (recorded; paid at finalize).
    pub settled: TokenAmount,
    /// Latency penalties the wallet's disputes recorded (deducted from the provider's payout).
    pub penalties: TokenAmount,
    /// What `finalize` would pay the provider as the account stands: what it earned less the
    /// penalties.
    pub provider_payout: TokenAmount,
    /// What `finalize` would return to the wallet: the vault less the provider's payout.
    pub agent_payout: TokenAmount,
    /// Unix seconds at which closing started (the wallet's request or the provider's close).
    pub closing_started_at: Option<i64>,
    /// Last second the provider may claim.
    pub claim_deadline: Option<i64>,
    /// Last second the wallet may dispute; anyone may `finalize` after it.
    pub dispute_deadline: Option<i64>,
    /// The receipt head the chain anchors, held against the store.
    pub anchor: x402pp_client::Anchor,
}

/// `session show --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    /// The store's view.
    pub session: SessionRow,
    /// The account on chain; `null` once it is finalized.
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
    /// Last second the provider may claim.
    pub claim_deadline: Option<i64>,
    /// Last second the wallet may dispute; `finalize` works after it.
    pub dispute_deadline: Option<i64>,
}

/// `session finalize --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeReport {
    /// The session (now closed).
    pub session: String,
    /// The `finalize` transaction.
    pub signature: String,
    /// What the provider was paid (what it earned less the penalties).
    pub provider_paid: Option<TokenAmount>,
    /// What came back to the wallet.
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
    /// The penalty the dispute recorded: deducted from the provider's payout and returned to
    /// the wallet at finalize.
    pub paid: TokenAmount,
}

/// `session dispute --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisputeReport {
    /// The disputes sent (empty when there was no breach to dispute).
    pub disputes: Vec<DisputeRow>,
}
