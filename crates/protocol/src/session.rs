//! Session status as the provider reports it (`X-402-Session-Status`, 402 details).

use serde::{Deserialize, Serialize};

use crate::encoding::{Amount, Pubkey};

/// Lifecycle state of a session account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Accepting vouchers.
    Open,
    /// The agent asked to close; the provider may still claim during the grace period.
    Closing,
    /// Settled and closed.
    Closed,
}

/// A session's balance after the request it is attached to: the `X-402-Session-Status` header
/// (named a snapshot so it does not collide with the program's `SessionStatus` enum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSnapshot {
    /// The session account address.
    pub session_id: Pubkey,
    /// Lifecycle state.
    pub state: SessionState,
    /// Last accepted voucher seq; the next voucher must carry `seq + 1`.
    pub seq: u64,
    /// Cumulative amount accepted so far; the next voucher carries this + price.
    pub accepted: Amount,
    /// Deposit locked in the escrow.
    pub deposit: Amount,
    /// Latency penalties the agent's disputes recorded on chain (the session's `penalties`):
    /// deducted from the provider's payout and paid to the agent at `finalize`.
    pub refunded: Amount,
    /// What further vouchers may still authorise: deposit − accepted.
    pub remaining: Amount,
    /// Price per request.
    pub price_per_request: Amount,
    /// Unix seconds at which the session expires.
    pub expires_at: i64,
}
