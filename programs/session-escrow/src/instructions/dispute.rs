//! `dispute`: the agent proves a breach with a provider-signed receipt. The program records the
//! debt — a latency penalty, or an over-claim cap — and `finalize` takes it out of the provider's
//! payout; no tokens move here (docs/program.md, "Trust v2").

use anchor_lang::prelude::*;
use x402pp_messages::{ReceiptMessage, ReceiptMessageV3, ReceiptStatus};

use crate::constants::{DISPUTE_SEED, SESSION_SEED};
use crate::ed25519::load_verified_message_at;
use crate::error::EscrowError;
use crate::events::ReceiptDisputed;
use crate::pda::{create_pda_account, write_account};
use crate::state::{Dispute, Session};

/// Accounts of `dispute`. Must be preceded by an Ed25519SigVerify instruction over the receipt.
#[derive(Accounts)]
#[instruction(seq: u64)]
pub struct DisputeReceipt<'info> {
    /// The session's agent.
    pub agent: Signer<'info>,
    /// Pays the dispute record's rent (the record stays as evidence): the agent itself, or a
    /// fee sponsor.
    #[account(mut)]
    pub payer: Signer<'info>,
    /// The disputed session.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = agent @ EscrowError::NotSessionAgent,
    )]
    pub session: Box<Account<'info, Session>>,
    /// CHECK: the new Dispute PDA `["dispute", session, opened_slot_le, seq_le]` (canonical bump);
    /// created by the handler, which refuses an existing record — so each receipt is disputable
    /// once. Not Anchor's `init`: see `pda::create_pda_account` (a pre-funded address must not
    /// block it).
    #[account(
        mut,
        seeds = [DISPUTE_SEED, session.key().as_ref(), &session.opened_slot.to_le_bytes(), &seq.to_le_bytes()],
        bump,
    )]
    pub dispute: UncheckedAccount<'info>,
    /// CHECK: address-checked instructions sysvar, read by the strict Ed25519 parser.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
    /// Creates the dispute record.
    pub system_program: Program<'info, System>,
}

/// The fields of a receipt (v2 or v3) that a dispute judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disputed {
    /// The receipt's seq.
    pub seq: u64,
    /// Its status.
    pub status: ReceiptStatus,
    /// Whether the offer's promise covered the request.
    pub sla_covered: bool,
    /// The latency the promise is about: v2 `latency_ms`, v3 `ttfb_ms`.
    pub latency_ms: u32,
    /// What the request was charged.
    pub amount_charged: u64,
    /// The session's total charged up to it.
    pub cumulative_charged: u64,
}

impl From<&ReceiptMessage> for Disputed {
    fn from(receipt: &ReceiptMessage) -> Self {
        Self {
            seq: receipt.seq,
            status: receipt.status,
            sla_covered: receipt.sla_covered,
            latency_ms: receipt.latency_ms,
            amount_charged: receipt.amount_charged,
            cumulative_charged: receipt.cumulative_charged,
        }
    }
}

impl From<&ReceiptMessageV3> for Disputed {
    fn from(receipt: &ReceiptMessageV3) -> Self {
        Self {
            seq: receipt.seq,
            status: receipt.status,
            sla_covered: receipt.sla_covered,
            latency_ms: receipt.ttfb_ms,
            amount_charged: receipt.amount_charged,
            cumulative_charged: receipt.cumulative_charged,
        }
    }
}

/// What a receipt proves against a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breach {
    /// When a charged request that the promise covered was slower than promised: `price ×
    /// latency_penalty_bps / 10 000` on a fixed-price session, the same share of the receipt's
    /// actual charge on a metered one.
    pub latency_penalty: u64,
    /// `settled − receipt.cumulative_charged` when the settled voucher is at or before the
    /// receipt and the provider took more than the receipt shows.
    pub overclaim: u64,
}

impl Breach {
    /// Evaluates `receipt` against the session's terms and books.
    pub fn of(session: &Session, receipt: &Disputed) -> Result<Self> {
        let charged = match receipt.status {
            ReceiptStatus::Ok | ReceiptStatus::Partial => true,
            ReceiptStatus::HandlerError | ReceiptStatus::Timeout => false,
        };
        let latency_penalty =
            if charged && receipt.sla_covered && receipt.latency_ms > session.max_latency_ms {
                match session.metering() {
                    None => session.latency_penalty()?,
                    Some(_) => session.latency_penalty_of(receipt.amount_charged)?,
                }
            } else {
                0
            };
        let overclaim = if session.settled_seq <= receipt.seq {
            session.settled.saturating_sub(receipt.cumulative_charged)
        } else {
            0
        };
        Ok(Self {
            latency_penalty,
            overclaim,
        })
    }

    /// Records the breach in the session's books: the penalty adds up; an over-claim receipt
    /// becomes the cap when it is lower than the cap in force (or that cap no longer applies).
    pub fn record(&self, session: &mut Session, receipt: &Disputed) -> Result<()> {
        session.penalties = session
            .penalties
            .checked_add(self.latency_penalty)
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
        if self.overclaim > 0 {
            let cap_in_force = session.settled_seq <= session.overclaim_cap_seq;
            if !cap_in_force || receipt.cumulative_charged < session.overclaim_cap {
                session.overclaim_cap = receipt.cumulative_charged;
                session.overclaim_cap_seq = receipt.seq;
            }
        }
        session.dispute_count = session
            .dispute_count
            .checked_add(1)
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
        Ok(())
    }
}

/// Records the dispute and the debt the receipt proves.
pub fn handler(ctx: Context<DisputeReceipt>, seq: u64) -> Result<()> {
    let accounts = ctx.accounts;
    let session_key = accounts.session.key();
    let now = Clock::get()?.unix_timestamp;
    require!(
        now <= accounts.session.dispute_deadline()?,
        EscrowError::DisputeWindowClosed
    );

    // A fixed-price session's receipts are v2 (191 bytes), a metered one's v3 (221 bytes).
    let metered = accounts.session.metering().is_some();
    let verified = load_verified_message_at(&accounts.instructions_sysvar, 1)?;
    match (metered, verified.message.len()) {
        (false, ReceiptMessage::LEN) | (true, ReceiptMessageV3::LEN) => {}
        (false, ReceiptMessageV3::LEN) | (true, ReceiptMessage::LEN) => {
            return err!(EscrowError::WrongMessageVersion)
        }
        _ => return err!(EscrowError::Ed25519MessageLength),
    }
    require_keys_eq!(
        verified.signer,
        accounts.session.provider,
        EscrowError::ReceiptNotSignedByProvider
    );
    let (receipt_session, receipt_opened_slot, receipt) = if metered {
        let receipt = ReceiptMessageV3::decode(&verified.message)
            .map_err(|_| error!(EscrowError::MalformedMessage))?;
        (
            receipt.session,
            receipt.opened_slot,
            Disputed::from(&receipt),
        )
    } else {
        let receipt = ReceiptMessage::decode(&verified.message)
            .map_err(|_| error!(EscrowError::MalformedMessage))?;
        (
            receipt.session,
            receipt.opened_slot,
            Disputed::from(&receipt),
        )
    };
    require!(
        receipt_session == session_key.to_bytes(),
        EscrowError::ReceiptSessionMismatch
    );
    require!(
        receipt_opened_slot == accounts.session.opened_slot,
        EscrowError::WrongIncarnation
    );
    require!(receipt.seq == seq, EscrowError::ReceiptSeqMismatch);

    // The record first: a receipt already disputed fails here, whatever it shows.
    let dispute_info = accounts.dispute.to_account_info();
    let dispute_key = dispute_info.key();
    let opened_slot_le = accounts.session.opened_slot.to_le_bytes();
    let seq_le = seq.to_le_bytes();
    let bump = [ctx.bumps.dispute];
    let seeds: [&[u8]; 5] = [
        DISPUTE_SEED,
        session_key.as_ref(),
        &opened_slot_le,
        &seq_le,
        &bump,
    ];
    create_pda_account(
        &accounts.payer.to_account_info(),
        &dispute_info,
        &accounts.system_program.to_account_info(),
        Dispute::SPACE,
        &crate::ID,
        &seeds,
        EscrowError::DisputeAlreadyRecorded,
    )?;

    let breach = Breach::of(&accounts.session, &receipt)?;
    require!(
        breach.latency_penalty > 0 || breach.overclaim > 0,
        EscrowError::NoBreach
    );
    breach.record(&mut accounts.session, &receipt)?;

    let receipt_hash = solana_sha256_hasher::hash(&verified.message).to_bytes();
    write_account(
        &dispute_info,
        &Dispute {
            session: session_key,
            opened_slot: accounts.session.opened_slot,
            agent: accounts.agent.key(),
            provider: accounts.session.provider,
            seq,
            receipt_hash,
            latency_ms: receipt.latency_ms,
            cumulative_charged: receipt.cumulative_charged,
            latency_penalty: breach.latency_penalty,
            overclaim: breach.overclaim,
            disputed_at: now,
            bump: ctx.bumps.dispute,
        },
    )?;
    emit!(ReceiptDisputed {
        session: session_key,
        dispute: dispute_key,
        seq,
        receipt_hash,
        latency_penalty: breach.latency_penalty,
        overclaim: breach.overclaim,
        penalties: accounts.session.penalties,
    });
    Ok(())
}
