//! `dispute`: the agent proves a breach with a provider-signed receipt and is paid from the vault.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{Mint, TokenAccount, TokenInterface};
use x402pp_messages::{ReceiptMessage, ReceiptStatus};

use crate::constants::{BPS_DENOMINATOR, DISPUTE_SEED, SESSION_SEED};
use crate::ed25519::load_verified_message;
use crate::error::EscrowError;
use crate::events::ReceiptDisputed;
use crate::pda::{create_pda_account, write_account};
use crate::state::{Dispute, Session};
use crate::vault::pay_out;

/// Accounts of `dispute`. Must be preceded by an Ed25519SigVerify instruction over the receipt.
#[derive(Accounts)]
#[instruction(seq: u64)]
pub struct DisputeReceipt<'info> {
    /// The session's agent; pays the dispute record's rent.
    #[account(mut)]
    pub agent: Signer<'info>,
    /// The disputed session.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = agent @ EscrowError::NotSessionAgent,
        has_one = mint @ EscrowError::WrongMint,
        has_one = vault @ EscrowError::WrongVault,
    )]
    pub session: Box<Account<'info, Session>>,
    /// CHECK: the new Dispute PDA `["dispute", session, seq_le]` (canonical bump); created by the
    /// handler, which refuses an existing record — so each receipt is disputable once. Not
    /// Anchor's `init`: see `pda::create_pda_account` (a pre-funded address must not block it).
    #[account(mut, seeds = [DISPUTE_SEED, session.key().as_ref(), &seq.to_le_bytes()], bump)]
    pub dispute: UncheckedAccount<'info>,
    /// The session's vault.
    #[account(mut)]
    pub vault: Box<InterfaceAccount<'info, TokenAccount>>,
    /// The session's mint.
    #[account(mint::token_program = token_program)]
    pub mint: Box<InterfaceAccount<'info, Mint>>,
    /// Where the penalty or refund goes (any token account of the mint; the agent signs).
    #[account(mut, token::mint = mint, token::token_program = token_program)]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// CHECK: address-checked instructions sysvar, read by the strict Ed25519 parser.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
    /// Creates the dispute record.
    pub system_program: Program<'info, System>,
}

/// What a receipt proves against a session, before capping by what the vault holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breach {
    /// price × latency_penalty_bps / 10 000 when a charged request was slower than promised.
    pub latency_penalty: u64,
    /// claimed − receipt.cumulative_charged (less what earlier over-claim disputes refunded)
    /// when the provider's last claim was at or before the receipt and took more than it shows.
    pub overclaim_refund: u64,
}

impl Breach {
    /// Evaluates `receipt` against the session's terms and books.
    pub fn of(session: &Session, receipt: &ReceiptMessage) -> Result<Self> {
        let latency_penalty =
            if receipt.status == ReceiptStatus::Ok && receipt.latency_ms > session.max_latency_ms {
                let penalty = u128::from(session.price_per_request)
                    .checked_mul(u128::from(session.latency_penalty_bps))
                    .and_then(|product| product.checked_div(u128::from(BPS_DENOMINATOR)))
                    .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
                u64::try_from(penalty).map_err(|_| error!(EscrowError::ArithmeticOverflow))?
            } else {
                0
            };
        let overclaim_refund =
            if session.claimed_seq <= receipt.seq && session.claimed > receipt.cumulative_charged {
                session
                    .claimed
                    .checked_sub(receipt.cumulative_charged)
                    .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?
                    .saturating_sub(session.overclaim_refunded)
            } else {
                0
            };
        Ok(Self {
            latency_penalty,
            overclaim_refund,
        })
    }

    /// Total owed to the agent.
    pub fn total(&self) -> Result<u64> {
        self.latency_penalty
            .checked_add(self.overclaim_refund)
            .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))
    }
}

/// Records the dispute and pays the agent what the receipt proves, capped by what is left.
pub fn handler(ctx: Context<DisputeReceipt>, seq: u64) -> Result<()> {
    let accounts = ctx.accounts;
    let session_key = accounts.session.key();

    let verified = load_verified_message(&accounts.instructions_sysvar, ReceiptMessage::LEN)?;
    require_keys_eq!(
        verified.signer,
        accounts.session.provider,
        EscrowError::ReceiptNotSignedByProvider
    );
    let receipt = ReceiptMessage::decode(&verified.message)
        .map_err(|_| error!(EscrowError::MalformedMessage))?;
    require!(
        receipt.session == session_key.to_bytes(),
        EscrowError::ReceiptSessionMismatch
    );
    require!(receipt.seq == seq, EscrowError::ReceiptSeqMismatch);

    // The record first: a receipt already disputed fails here, whatever it shows.
    let dispute_info = accounts.dispute.to_account_info();
    let dispute_key = dispute_info.key();
    let seq_le = seq.to_le_bytes();
    let bump = [ctx.bumps.dispute];
    let seeds: [&[u8]; 4] = [DISPUTE_SEED, session_key.as_ref(), &seq_le, &bump];
    create_pda_account(
        &accounts.agent.to_account_info(),
        &dispute_info,
        &accounts.system_program.to_account_info(),
        Dispute::SPACE,
        &crate::ID,
        &seeds,
        EscrowError::DisputeAlreadyRecorded,
    )?;

    let breach = Breach::of(&accounts.session, &receipt)?;
    let owed = breach.total()?;
    require!(owed > 0, EscrowError::NoBreach);
    let paid = owed
        .min(accounts.session.remaining()?)
        .min(accounts.vault.amount);

    let session = &mut accounts.session;
    session.refunded = session
        .refunded
        .checked_add(paid)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
    // Over-claim refunds are paid first, so a later receipt cannot refund the same excess twice.
    session.overclaim_refunded = session
        .overclaim_refunded
        .checked_add(breach.overclaim_refund.min(paid))
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
    session.dispute_count = session
        .dispute_count
        .checked_add(1)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;

    pay_out(
        &accounts.session,
        &accounts.vault,
        &accounts.mint,
        &accounts.agent_token,
        &accounts.token_program,
        paid,
    )?;

    let now = Clock::get()?.unix_timestamp;
    let receipt_hash = solana_sha256_hasher::hash(&verified.message).to_bytes();
    write_account(
        &dispute_info,
        &Dispute {
            session: session_key,
            agent: accounts.agent.key(),
            provider: accounts.session.provider,
            seq,
            receipt_hash,
            latency_ms: receipt.latency_ms,
            cumulative_charged: receipt.cumulative_charged,
            latency_penalty: breach.latency_penalty,
            overclaim_refund: breach.overclaim_refund,
            paid,
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
        overclaim_refund: breach.overclaim_refund,
        paid,
    });
    Ok(())
}
