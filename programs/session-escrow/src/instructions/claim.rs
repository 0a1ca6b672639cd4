//! `claim`: the provider records the agent's latest voucher. No tokens move: the provider is
//! paid at `finalize`, after the agent's dispute window (docs/program.md, "Trust v2").

use anchor_lang::prelude::*;
use x402pp_messages::VoucherMessage;

use crate::constants::SESSION_SEED;
use crate::ed25519::load_verified_message;
use crate::error::EscrowError;
use crate::events::VoucherClaimed;
use crate::state::Session;

/// Accounts of `claim`. Must be preceded by an Ed25519SigVerify instruction over the voucher.
#[derive(Accounts)]
pub struct Claim<'info> {
    /// The session's provider.
    pub provider: Signer<'info>,
    /// The session claimed on.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = provider @ EscrowError::NotSessionProvider,
    )]
    pub session: Box<Account<'info, Session>>,
    /// CHECK: address-checked instructions sysvar, read by the strict Ed25519 parser.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
}

/// Records the voucher in the preceding Ed25519 instruction as the session's settled voucher.
pub fn handler(ctx: Context<Claim>) -> Result<()> {
    let accounts = ctx.accounts;
    let now = Clock::get()?.unix_timestamp;
    let session_key = accounts.session.key();
    settle_voucher(
        &mut accounts.session,
        session_key,
        &accounts.instructions_sysvar,
        now,
    )
}

/// Verifies the voucher in the preceding Ed25519 instruction against `session` and records it:
/// `settled`, `settled_seq`, and the receipt head it commits to. Emits `VoucherClaimed`.
pub(crate) fn settle_voucher(
    session: &mut Session,
    session_key: Pubkey,
    instructions_sysvar: &AccountInfo,
    now: i64,
) -> Result<()> {
    let verified = load_verified_message(instructions_sysvar, VoucherMessage::LEN)?;
    require_keys_eq!(
        verified.signer,
        session.voucher_signer,
        EscrowError::VoucherNotSignedBySessionKey
    );
    let voucher = VoucherMessage::decode(&verified.message)
        .map_err(|_| error!(EscrowError::MalformedMessage))?;
    require!(
        voucher.session == session_key.to_bytes(),
        EscrowError::VoucherSessionMismatch
    );
    require!(
        voucher.opened_slot == session.opened_slot,
        EscrowError::WrongIncarnation
    );
    require!(
        now <= session.claim_deadline()?,
        EscrowError::ClaimWindowClosed
    );
    require!(
        voucher.seq > session.settled_seq,
        EscrowError::VoucherSeqRegressed
    );
    require!(
        voucher.cumulative >= session.settled,
        EscrowError::VoucherNotIncreasing
    );

    session.settled = voucher.cumulative;
    session.settled_seq = voucher.seq;
    session.receipts_head = voucher.receipt_head;
    // seq ≥ 1 here (it is above settled_seq ≥ 0).
    session.receipt_count = voucher.seq.saturating_sub(1);
    emit!(VoucherClaimed {
        session: session_key,
        seq: voucher.seq,
        cumulative: voucher.cumulative,
        receipts_head: voucher.receipt_head,
        receipt_count: session.receipt_count,
    });
    Ok(())
}
