//! The session account: one agent's deposit for one provider under one signed offer.

use anchor_lang::prelude::*;

use crate::error::EscrowError;

/// Where a session is in its life. A closed session has no account any more (it is closed and its
/// rent returned), so there is no `Closed` variant to check against.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum SessionStatus {
    /// Accepting top-ups and claims.
    Open,
    /// The agent asked to close; the provider may still claim until the claim deadline.
    Closing,
}

/// A payment session. PDA `["session", agent, provider, nonce_le_u64]`.
///
/// Fixed-size fields only (no `Option`, no `Vec`) so every field has a stable offset for
/// `getProgramAccounts` memcmp filters (agent at 8, provider at 40, mint at 72).
#[account]
#[derive(InitSpace, Debug)]
pub struct Session {
    /// The agent that deposited and signs (or delegates signing of) vouchers.
    pub agent: Pubkey,
    /// The provider that signed the offer, claims vouchers and signs receipts.
    pub provider: Pubkey,
    /// The token mint of the deposit.
    pub mint: Pubkey,
    /// The session's token vault (PDA `["vault", session]`, authority = this session).
    pub vault: Pubkey,
    /// The key that signs vouchers, chosen by the agent at open.
    pub voucher_signer: Pubkey,
    /// The agent's nonce that makes the session address unique.
    pub nonce: u64,
    /// Total deposited (open + top-ups), in atomic units.
    pub deposit: u64,
    /// Total paid to the provider by claims.
    pub claimed: u64,
    /// seq of the last voucher claimed (0 before the first claim).
    pub claimed_seq: u64,
    /// Total paid back to the agent by disputes (latency penalties and over-claim refunds).
    pub refunded: u64,
    /// Part of `refunded` that compensated over-claims (so one over-claim is refunded once).
    pub overclaim_refunded: u64,
    /// Price per request from the offer.
    pub price_per_request: u64,
    /// Promised latency from the offer.
    pub max_latency_ms: u32,
    /// Penalty per latency breach, in basis points of the price.
    pub latency_penalty_bps: u16,
    /// sha256 of the signed offer message.
    pub offer_hash: [u8; 32],
    /// Unix seconds at open.
    pub opened_at: i64,
    /// Unix seconds at which the session expires (opened_at + session_ttl_secs).
    pub expires_at: i64,
    /// Unix seconds of the agent's close request (meaningful while `status` is `Closing`), 0 if none.
    pub close_requested_at: i64,
    /// Seconds the provider may still claim after expiry or a close request.
    pub grace_secs: u64,
    /// receipt_hash of the latest receipt the provider anchored with a claim.
    pub receipts_head: [u8; 32],
    /// Number of receipts the anchored head commits to.
    pub receipt_count: u64,
    /// Number of disputes recorded against this session.
    pub dispute_count: u64,
    /// Open or closing.
    pub status: SessionStatus,
    /// Canonical bump of the session PDA.
    pub bump: u8,
    /// Canonical bump of the vault PDA.
    pub vault_bump: u8,
}

impl Session {
    /// Account size including Anchor's 8-byte discriminator.
    pub const SPACE: usize = 8 + Self::INIT_SPACE;

    /// When the session stops: expiry, or the close request if that came first.
    pub fn end(&self) -> i64 {
        if self.status == SessionStatus::Closing && self.close_requested_at < self.expires_at {
            self.close_requested_at
        } else {
            self.expires_at
        }
    }

    /// Last second at which the provider may claim: `end() + grace_secs`.
    pub fn claim_deadline(&self) -> Result<i64> {
        let grace = i64::try_from(self.grace_secs).map_err(|_| EscrowError::ArithmeticOverflow)?;
        self.end()
            .checked_add(grace)
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))
    }

    /// What the vault owes under the session's books: deposit − claimed − refunded.
    pub fn remaining(&self) -> Result<u64> {
        self.deposit
            .checked_sub(self.claimed)
            .and_then(|left| left.checked_sub(self.refunded))
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))
    }

    /// Latency penalties paid to the agent so far: the part of `refunded` that was not an
    /// over-claim refund.
    pub fn latency_penalties(&self) -> Result<u64> {
        self.refunded
            .checked_sub(self.overclaim_refunded)
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))
    }

    /// What a voucher for `cumulative` pays now:
    /// `min(cumulative − latency_penalties, deposit − refunded) − claimed`, or 0 when nothing is
    /// left to pay.
    ///
    /// Latency penalties come out of the provider's entitlement (otherwise a penalty would only
    /// hand the agent back its own deposit while the provider still collected the full voucher).
    /// Over-claim refunds only lower the cap: the provider earns them back by serving the
    /// requests that later vouchers pay for.
    pub fn payable(&self, cumulative: u64) -> Result<u64> {
        let cap = self
            .deposit
            .checked_sub(self.refunded)
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
        let earned = cumulative.saturating_sub(self.latency_penalties()?);
        Ok(earned.min(cap).saturating_sub(self.claimed))
    }

    /// Signer seeds of the session PDA, for CPIs where the session signs.
    pub fn signer_seeds<'a>(&'a self, nonce_le: &'a [u8; 8], bump: &'a [u8; 1]) -> [&'a [u8]; 5] {
        [
            crate::constants::SESSION_SEED,
            self.agent.as_ref(),
            self.provider.as_ref(),
            nonce_le.as_ref(),
            bump.as_ref(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Dispute;

    #[test]
    fn account_sizes_and_filter_offsets_are_stable() {
        assert_eq!(Session::SPACE, 345);
        assert_eq!(Dispute::SPACE, 189);
        let session = Session {
            agent: Pubkey::new_from_array([1; 32]),
            provider: Pubkey::new_from_array([2; 32]),
            mint: Pubkey::new_from_array([3; 32]),
            vault: Pubkey::default(),
            voucher_signer: Pubkey::default(),
            nonce: 0,
            deposit: 0,
            claimed: 0,
            claimed_seq: 0,
            refunded: 0,
            overclaim_refunded: 0,
            price_per_request: 0,
            max_latency_ms: 0,
            latency_penalty_bps: 0,
            offer_hash: [0; 32],
            opened_at: 0,
            expires_at: 100,
            close_requested_at: 0,
            grace_secs: 10,
            receipts_head: [0; 32],
            receipt_count: 0,
            dispute_count: 0,
            status: SessionStatus::Open,
            bump: 255,
            vault_bump: 255,
        };
        let mut data = Vec::new();
        session.try_serialize(&mut data).expect("serializes");
        assert_eq!(data.len(), Session::SPACE);
        assert_eq!(&data[8..40], &[1; 32]);
        assert_eq!(&data[40..72], &[2; 32]);
        assert_eq!(&data[72..104], &[3; 32]);
    }

    #[test]
    fn the_claim_deadline_is_the_earlier_of_expiry_and_close_request_plus_grace() {
        let mut session = Session {
            agent: Pubkey::default(),
            provider: Pubkey::default(),
            mint: Pubkey::default(),
            vault: Pubkey::default(),
            voucher_signer: Pubkey::default(),
            nonce: 0,
            deposit: 100,
            claimed: 30,
            claimed_seq: 0,
            refunded: 20,
            overclaim_refunded: 0,
            price_per_request: 0,
            max_latency_ms: 0,
            latency_penalty_bps: 0,
            offer_hash: [0; 32],
            opened_at: 0,
            expires_at: 100,
            close_requested_at: 0,
            grace_secs: 10,
            receipts_head: [0; 32],
            receipt_count: 0,
            dispute_count: 0,
            status: SessionStatus::Open,
            bump: 255,
            vault_bump: 255,
        };
        assert_eq!(session.claim_deadline().ok(), Some(110));
        session.status = SessionStatus::Closing;
        session.close_requested_at = 40;
        assert_eq!(session.claim_deadline().ok(), Some(50));
        session.close_requested_at = 150;
        assert_eq!(session.claim_deadline().ok(), Some(110));
        assert_eq!(session.remaining().ok(), Some(50));
        assert_eq!(session.payable(u64::MAX).ok(), Some(50));
        assert_eq!(session.payable(25).ok(), Some(0));
    }
}
