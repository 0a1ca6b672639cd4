//! Events the program emits (Anchor `emit!`: `Program data:` log lines, base64 of discriminator +
//! borsh), so indexers and the provider's settlement follow sessions without polling accounts.

use anchor_lang::prelude::*;

/// A session was opened.
#[event]
pub struct SessionOpened {
    /// The session account.
    pub session: Pubkey,
    /// The depositing agent.
    pub agent: Pubkey,
    /// The provider.
    pub provider: Pubkey,
    /// The deposit mint.
    pub mint: Pubkey,
    /// The key that signs vouchers.
    pub voucher_signer: Pubkey,
    /// The agent's nonce.
    pub nonce: u64,
    /// The session's incarnation (the slot it was opened in).
    pub opened_slot: u64,
    /// What the vault received.
    pub deposit: u64,
    /// sha256 of the signed offer.
    pub offer_hash: [u8; 32],
    /// When the session expires.
    pub expires_at: i64,
}

/// The agent added to the deposit.
#[event]
pub struct DepositToppedUp {
    /// The session account.
    pub session: Pubkey,
    /// What the vault received.
    pub amount: u64,
    /// The new total deposit.
    pub deposit: u64,
}

/// The provider claimed a voucher (recorded; paid at finalize).
#[event]
pub struct VoucherClaimed {
    /// The session account.
    pub session: Pubkey,
    /// The voucher's seq.
    pub seq: u64,
    /// The voucher's cumulative (the new `settled`).
    pub cumulative: u64,
    /// The receipt head the voucher committed to.
    pub receipts_head: [u8; 32],
    /// Receipts the head commits to (seq − 1).
    pub receipt_count: u64,
}

/// Closing started: the agent's `request_close` or the provider's `close`.
#[event]
pub struct CloseRequested {
    /// The session account.
    pub session: Pubkey,
    /// When closing started.
    pub requested_at: i64,
    /// True for the provider's `close`, false for the agent's `request_close`.
    pub by_provider: bool,
    /// Last second the provider may claim.
    pub claim_deadline: i64,
    /// Last second the agent may dispute; finalize is allowed after it.
    pub dispute_deadline: i64,
}

/// The agent disputed a receipt.
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
    /// Latency penalty recorded (0 if none).
    pub latency_penalty: u64,
    /// Over-claim shown (settled − the receipt's cumulative_charged; 0 if none).
    pub overclaim: u64,
    /// Total penalties recorded on the session.
    pub penalties: u64,
}

/// The session was settled and closed: `finalize` after the dispute window, or a cooperative close.
#[event]
pub struct SessionFinalized {
    /// The session account.
    pub session: Pubkey,
    /// True for `cooperative_close` (both parties signed).
    pub cooperative: bool,
    /// The settled voucher's cumulative.
    pub settled: u64,
    /// Penalties recorded by disputes.
    pub penalties: u64,
    /// Paid to the provider: earned − penalties.
    pub to_provider: u64,
    /// Paid to the agent: the rest of the vault.
    pub to_agent: u64,
    /// Penalties the provider's earnings could not cover (not paid).
    pub penalty_shortfall: u64,
}
