//! Events emitted (`emit!`) on every state change.

use anchor_lang::prelude::*;

/// A session was opened.
#[event]
pub struct SessionOpened {
    /// The session account.
    pub session: Pubkey,
    /// The depositing agent.
    pub agent: Pubkey,
    /// The provider that signed the offer.
    pub provider: Pubkey,
    /// The deposit mint.
    pub mint: Pubkey,
    /// The key that signs vouchers.
    pub voucher_signer: Pubkey,
    /// The agent's nonce.
    pub nonce: u64,
    /// Tokens received by the vault.
    pub deposit: u64,
    /// sha256 of the signed offer.
    pub offer_hash: [u8; 32],
    /// Unix seconds of expiry.
    pub expires_at: i64,
}

/// The agent added to the deposit.
#[event]
pub struct DepositToppedUp {
    /// The session account.
    pub session: Pubkey,
    /// Tokens received by the vault.
    pub amount: u64,
    /// Total deposit after the top-up.
    pub deposit: u64,
}

/// The provider claimed a voucher.
#[event]
pub struct VoucherClaimed {
    /// The session account.
    pub session: Pubkey,
    /// The voucher's seq.
    pub seq: u64,
    /// The voucher's cumulative.
    pub cumulative: u64,
    /// Paid to the provider by this claim.
    pub amount: u64,
    /// Total claimed after this claim.
    pub claimed: u64,
    /// The anchored receipt chain head.
    pub receipts_head: [u8; 32],
    /// The anchored receipt count.
    pub receipt_count: u64,
}

/// The agent asked to close the session.
#[event]
pub struct CloseRequested {
    /// The session account.
    pub session: Pubkey,
    /// Unix seconds of the request.
    pub requested_at: i64,
    /// Last second the provider may still claim.
    pub claim_deadline: i64,
}

/// The provider closed the session cooperatively.
#[event]
pub struct SessionClosed {
    /// The session account.
    pub session: Pubkey,
    /// Paid to the provider by the final claim (0 without one).
    pub final_claim: u64,
    /// Returned to the agent from the vault.
    pub returned_to_agent: u64,
    /// Total claimed over the session.
    pub claimed: u64,
    /// Total refunded by disputes over the session.
    pub refunded: u64,
}

/// The agent reclaimed the session after its end plus grace.
#[event]
pub struct SessionReclaimed {
    /// The session account.
    pub session: Pubkey,
    /// Returned to the agent from the vault.
    pub returned_to_agent: u64,
    /// Total claimed over the session.
    pub claimed: u64,
    /// Total refunded by disputes over the session.
    pub refunded: u64,
}

/// The agent disputed a provider-signed receipt.
#[event]
pub struct ReceiptDisputed {
    /// The session account.
    pub session: Pubkey,
    /// The dispute record.
    pub dispute: Pubkey,
    /// The receipt's seq.
    pub seq: u64,
    /// sha256 of the receipt message.
    pub receipt_hash: [u8; 32],
    /// Penalty owed for a latency breach.
    pub latency_penalty: u64,
    /// Refund owed for an over-claim.
    pub overclaim_refund: u64,
    /// Actually paid to the agent.
    pub paid: u64,
}
