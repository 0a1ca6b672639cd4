//! The dispute record: evidence that one provider-signed receipt was disputed.

use anchor_lang::prelude::*;

/// One disputed receipt. PDA `["dispute", session, opened_slot_le_u64, receipt_seq_le_u64]`, so
/// every receipt of a session's incarnation can be disputed once. The record stays after the
/// session closes, as evidence.
#[account]
#[derive(InitSpace, Debug)]
pub struct Dispute {
    /// The disputed session.
    pub session: Pubkey,
    /// The session's incarnation (its `opened_slot`).
    pub opened_slot: u64,
    /// The agent that disputed.
    pub agent: Pubkey,
    /// The provider that signed the receipt.
    pub provider: Pubkey,
    /// seq of the disputed receipt.
    pub seq: u64,
    /// sha256 of the signed receipt message.
    pub receipt_hash: [u8; 32],
    /// Latency in the receipt.
    pub latency_ms: u32,
    /// cumulative_charged in the receipt.
    pub cumulative_charged: u64,
    /// Latency penalty the dispute recorded (0 if none).
    pub latency_penalty: u64,
    /// How far the settled voucher was above the receipt's `cumulative_charged` when disputed
    /// (0 if no over-claim); the receipt caps the provider's payout.
    pub overclaim: u64,
    /// Unix seconds of the dispute.
    pub disputed_at: i64,
    /// Canonical bump of the dispute PDA.
    pub bump: u8,
}

impl Dispute {
    /// Account size including Anchor's 8-byte discriminator.
    pub const SPACE: usize = 8 + Self::INIT_SPACE;
}

/// Anchor lists only accounts that some `Accounts` struct holds as `Account<T>`; a `Dispute` is
/// created by hand (see `pda.rs`), so this prints its IDL entry next to Anchor's own
/// `__anchor_private_print_idl_*` output for `idl/assemble.py` to merge.
#[cfg(all(test, feature = "idl-build"))]
mod idl {
    use super::Dispute;
    use anchor_lang::idl::{serde_json, IdlBuild};
    use anchor_lang::Discriminator;

    #[test]
    fn __anchor_private_print_idl_manual_account_dispute() {
        let account =
            serde_json::json!({ "name": "Dispute", "discriminator": Dispute::DISCRIMINATOR });
        let ty = Dispute::create_type().map(|mut ty| {
            ty.name = "Dispute".into();
            ty
        });
        let printed = serde_json::json!({ "account": account, "type": ty });
        println!("--- IDL begin manual account ---");
        println!(
            "{}",
            serde_json::to_string_pretty(&printed).unwrap_or_default()
        );
        println!("--- IDL end manual account ---");
    }
}
