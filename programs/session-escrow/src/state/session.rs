//! The session account: one agent's deposit for one provider under one signed offer.

use anchor_lang::prelude::*;

use crate::constants::BPS_DENOMINATOR;
use crate::error::EscrowError;

/// Where a session is in its life. A closed session has no account any more (it is closed and its
/// rent returned), so there is no `Closed` variant to check against.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq, InitSpace)]
pub enum SessionStatus {
    /// Accepting top-ups, claims and disputes.
    Open,
    /// The agent asked to close, or the provider ended the session: its end is
    /// `closing_started_at` (or expiry, if earlier); claims and disputes go on until their
    /// deadlines, then anyone may finalize.
    Closing,
}

/// A payment session. PDA `["session", agent, provider, nonce_le_u64]`.
///
/// Fixed-size fields only (no `Option`, no `Vec`) so every field has a stable offset for
/// `getProgramAccounts` memcmp filters (agent at 8, provider at 40, mint at 72).
///
/// No tokens leave the vault before the session is finalized: claims record the agent's best
/// voucher (`settled`), disputes record debts (`penalties`, the over-claim cap), and `finalize`
/// pays the provider [`Session::payout`] and the agent the rest (docs/program.md, "Trust v2").
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
    /// The slot of `open_session`: this incarnation of the address. Every voucher and receipt
    /// names it, so a session reopened at the same address honours no earlier signature.
    pub opened_slot: u64,
    /// Total deposited (open + top-ups), in atomic units.
    pub deposit: u64,
    /// Cumulative of the best voucher the provider claimed (not capped by the deposit).
    pub settled: u64,
    /// seq of that voucher (0 before the first claim).
    pub settled_seq: u64,
    /// Latency penalties recorded by disputes; deducted from the provider's payout.
    pub penalties: u64,
    /// The lowest `cumulative_charged` a disputed receipt at or after the settled voucher showed
    /// (`u64::MAX`: none). Caps the provider's payout while `settled_seq ≤ overclaim_cap_seq`.
    pub overclaim_cap: u64,
    /// seq of the receipt that set `overclaim_cap` (`u64::MAX`: none).
    pub overclaim_cap_seq: u64,
    /// Price per request from the offer.
    pub price_per_request: u64,
    /// Promised latency from the offer.
    pub max_latency_ms: u32,
    /// The largest request body the latency promise covers (0: no bound), from the offer.
    pub max_input_bytes: u32,
    /// Penalty per latency breach, in basis points of the price.
    pub latency_penalty_bps: u16,
    /// sha256 of the signed offer message.
    pub offer_hash: [u8; 32],
    /// Unix seconds at open.
    pub opened_at: i64,
    /// Unix seconds at which the session expires (opened_at + session_ttl_secs).
    pub expires_at: i64,
    /// Unix seconds at which closing started (the agent's `request_close` or the provider's
    /// `close`), meaningful while `status` is `Closing`; 0 if none.
    pub closing_started_at: i64,
    /// Seconds the provider may still claim after the end, and the agent still dispute after that.
    pub grace_secs: u64,
    /// The receipt head the agent's claimed voucher committed to (its `receipt_head`).
    pub receipts_head: [u8; 32],
    /// Number of receipts `receipts_head` commits to (the claimed voucher's seq − 1).
    pub receipt_count: u64,
    /// Number of disputes recorded against this session.
    pub dispute_count: u64,
    /// Open or closing.
    pub status: SessionStatus,
    /// Canonical bump of the session PDA.
    pub bump: u8,
    /// Canonical bump of the vault PDA.
    pub vault_bump: u8,
    /// Who paid the rent of the session and the vault at open (the agent, or its fee sponsor);
    /// `finalize` and `cooperative_close` return that rent here.
    pub rent_payer: Pubkey,
    /// The version of the signed messages the session takes: 2 (fixed price) or 3 (metered).
    pub terms_version: u8,
    /// Metered sessions: atomic units per `unit_size` input units (0 for fixed price).
    pub unit_price_in: u64,
    /// Metered sessions: atomic units per `unit_size` output units.
    pub unit_price_out: u64,
    /// Metered sessions: how many units the prices are for (0 for fixed price).
    pub unit_size: u32,
    /// Metered sessions: the most one request may cost (0 for fixed price).
    pub max_per_request: u64,
    /// Metered sessions: what is counted (0 tokens, 1 bytes).
    pub unit_kind: u8,
}

/// `Session::terms_version` of a fixed-price session (v2 messages).
pub const FIXED_PRICE_TERMS: u8 = 2;
/// `Session::terms_version` of a metered session (v3 messages).
pub const METERED_TERMS: u8 = 3;

/// How `finalize` splits the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payout {
    /// What the provider is paid: its earned amount less the penalties.
    pub provider: u64,
    /// Penalties the provider's earnings could not cover (recorded, not paid).
    pub penalty_shortfall: u64,
}

fn overflow() -> Error {
    error!(EscrowError::ArithmeticOverflow)
}

impl Session {
    /// Account size including Anchor's 8-byte discriminator.
    pub const SPACE: usize = 8 + Self::INIT_SPACE;

    /// When the session stops: expiry, or the start of closing if that came first.
    pub fn end(&self) -> i64 {
        if self.status == SessionStatus::Closing && self.closing_started_at < self.expires_at {
            self.closing_started_at
        } else {
            self.expires_at
        }
    }

    fn grace(&self) -> Result<i64> {
        i64::try_from(self.grace_secs).map_err(|_| overflow())
    }

    /// Last second at which the provider may claim: `end() + grace_secs`.
    pub fn claim_deadline(&self) -> Result<i64> {
        self.end().checked_add(self.grace()?).ok_or_else(overflow)
    }

    /// Last second at which the agent may dispute: `end() + 2 × grace_secs`, so the agent has a
    /// whole grace after the provider's last possible claim. `finalize` is allowed after it.
    pub fn dispute_deadline(&self) -> Result<i64> {
        self.claim_deadline()?
            .checked_add(self.grace()?)
            .ok_or_else(overflow)
    }

    /// The latency penalty one breached receipt records:
    /// `price_per_request × latency_penalty_bps / 10 000`, rounded down.
    pub fn latency_penalty(&self) -> Result<u64> {
        self.latency_penalty_of(self.price_per_request)
    }

    /// The latency penalty on a request that charged `amount`: `amount × latency_penalty_bps /
    /// 10 000`, rounded down (a metered receipt's penalty is a share of its actual charge).
    pub fn latency_penalty_of(&self, amount: u64) -> Result<u64> {
        let penalty = u128::from(amount)
            .checked_mul(u128::from(self.latency_penalty_bps))
            .and_then(|product| product.checked_div(u128::from(BPS_DENOMINATOR)))
            .ok_or_else(overflow)?;
        u64::try_from(penalty).map_err(|_| overflow())
    }

    /// What the provider has earned: the settled voucher, capped by the deposit and, while the
    /// settled voucher is at or before an over-claim receipt, by what that receipt charged.
    pub fn earned(&self) -> u64 {
        let earned = self.settled.min(self.deposit);
        if self.settled_seq <= self.overclaim_cap_seq {
            earned.min(self.overclaim_cap)
        } else {
            earned
        }
    }

    /// The provider's payout at finalize: `earned − penalties` (the penalties it cannot cover
    /// are the shortfall). The agent gets the rest of the vault.
    pub fn payout(&self) -> Payout {
        let earned = self.earned();
        let covered = self.penalties.min(earned);
        Payout {
            provider: earned.saturating_sub(covered),
            penalty_shortfall: self.penalties.saturating_sub(covered),
        }
    }

    /// The signed metering terms of a metered session (`None` for a fixed-price one).
    pub fn metering(&self) -> Option<x402pp_messages::Metering> {
        if self.terms_version != METERED_TERMS {
            return None;
        }
        Some(x402pp_messages::Metering {
            unit_price_in: self.unit_price_in,
            unit_price_out: self.unit_price_out,
            unit_size: self.unit_size,
            max_per_request: self.max_per_request,
            unit_kind: x402pp_messages::UnitKind::from_u8(self.unit_kind).ok()?,
        })
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

    fn session() -> Session {
        Session {
            agent: Pubkey::new_from_array([1; 32]),
            provider: Pubkey::new_from_array([2; 32]),
            mint: Pubkey::new_from_array([3; 32]),
            vault: Pubkey::default(),
            voucher_signer: Pubkey::default(),
            nonce: 0,
            opened_slot: 7,
            deposit: 100,
            settled: 0,
            settled_seq: 0,
            penalties: 0,
            overclaim_cap: u64::MAX,
            overclaim_cap_seq: u64::MAX,
            price_per_request: 10,
            max_latency_ms: 0,
            max_input_bytes: 0,
            latency_penalty_bps: 5_000,
            offer_hash: [0; 32],
            opened_at: 0,
            expires_at: 100,
            closing_started_at: 0,
            grace_secs: 10,
            receipts_head: [0; 32],
            receipt_count: 0,
            dispute_count: 0,
            status: SessionStatus::Open,
            bump: 255,
            vault_bump: 255,
            rent_payer: Pubkey::new_from_array([4; 32]),
            terms_version: FIXED_PRICE_TERMS,
            unit_price_in: 0,
            unit_price_out: 0,
            unit_size: 0,
            max_per_request: 0,
            unit_kind: 0,
        }
    }

    #[test]
    fn account_sizes_and_filter_offsets_are_stable() {
        assert_eq!(Session::SPACE, 427);
        assert_eq!(Dispute::SPACE, 189);
        let mut data = Vec::new();
        session().try_serialize(&mut data).expect("serializes");
        assert_eq!(data.len(), Session::SPACE);
        assert_eq!(&data[8..40], &[1; 32]);
        assert_eq!(&data[40..72], &[2; 32]);
        assert_eq!(&data[72..104], &[3; 32]);
    }

    #[test]
    fn deadlines_run_from_the_earlier_of_expiry_and_closing() {
        let mut session = session();
        assert_eq!(session.claim_deadline().ok(), Some(110));
        assert_eq!(session.dispute_deadline().ok(), Some(120));
        session.status = SessionStatus::Closing;
        session.closing_started_at = 40;
        assert_eq!(session.claim_deadline().ok(), Some(50));
        assert_eq!(session.dispute_deadline().ok(), Some(60));
        session.closing_started_at = 150;
        assert_eq!(session.claim_deadline().ok(), Some(110));
    }

    #[test]
    fn the_payout_is_the_capped_voucher_less_the_penalties() {
        let mut session = session();
        session.settled = 70;
        session.settled_seq = 7;
        assert_eq!(session.payout().provider, 70);
        session.penalties = 15;
        assert_eq!(session.payout().provider, 55);
        // An over-claim receipt at seq 7 showing 60 caps the voucher of seq 7 ...
        session.overclaim_cap = 60;
        session.overclaim_cap_seq = 7;
        assert_eq!(session.payout().provider, 45);
        // ... and no longer once a later voucher is settled.
        session.settled_seq = 8;
        assert_eq!(session.payout().provider, 55);
        // A voucher above the deposit pays the deposit.
        session.settled = 1_000;
        assert_eq!(session.payout().provider, 85);
        // Penalties beyond the earnings are a shortfall, not a payout below zero.
        session.settled = 10;
        session.penalties = 25;
        assert_eq!(
            session.payout(),
            Payout {
                provider: 0,
                penalty_shortfall: 15
            }
        );
        assert_eq!(session.latency_penalty().ok(), Some(5));
    }
}
