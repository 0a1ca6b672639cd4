//! `claim`: the provider redeems the agent's latest voucher.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{Mint, TokenAccount, TokenInterface};
use x402pp_messages::VoucherMessage;

use crate::constants::SESSION_SEED;
use crate::ed25519::load_verified_message;
use crate::error::EscrowError;
use crate::events::VoucherClaimed;
use crate::state::Session;
use crate::vault::pay_out;

/// Arguments of `claim` (and of the optional final claim of `close`): the receipt chain the
/// provider anchors on chain with this claim.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimArgs {
    /// receipt_hash of the provider's latest receipt of the session.
    pub receipts_head: [u8; 32],
    /// Number of receipts `receipts_head` commits to; never decreases.
    pub receipt_count: u64,
}

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
        has_one = mint @ EscrowError::WrongMint,
        has_one = vault @ EscrowError::WrongVault,
    )]
    pub session: Box<Account<'info, Session>>,
    /// The session's vault.
    #[account(mut)]
    pub vault: Box<InterfaceAccount<'info, TokenAccount>>,
    /// The session's mint.
    #[account(mint::token_program = token_program)]
    pub mint: Box<InterfaceAccount<'info, Mint>>,
    /// Where the provider is paid (any token account of the mint; the provider signs).
    #[account(mut, token::mint = mint, token::token_program = token_program)]
    pub provider_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// CHECK: address-checked instructions sysvar, read by the strict Ed25519 parser.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
}

/// Pays the provider what the voucher allows beyond what was already claimed.
pub fn handler(ctx: Context<Claim>, args: ClaimArgs) -> Result<()> {
    let accounts = ctx.accounts;
    let now = Clock::get()?.unix_timestamp;
    let session_key = accounts.session.key();
    let (voucher, amount) = redeem_voucher(
        &mut accounts.session,
        session_key,
        &accounts.instructions_sysvar,
        &args,
        now,
    )?;
    require!(amount > 0, EscrowError::NothingToClaim);
    pay_out(
        &accounts.session,
        &accounts.vault,
        &accounts.mint,
        &accounts.provider_token,
        &accounts.token_program,
        amount,
    )?;
    emit!(VoucherClaimed {
        session: session_key,
        seq: voucher.seq,
        cumulative: voucher.cumulative,
        amount,
        claimed: accounts.session.claimed,
        receipts_head: args.receipts_head,
        receipt_count: args.receipt_count,
    });
    Ok(())
}

/// Verifies the voucher in the preceding Ed25519 instruction against `session`, updates the
/// session's books and returns the voucher and the amount to pay the provider:
/// `min(cumulative, deposit − refunded) − claimed` (0 when the deposit cap is reached).
pub(crate) fn redeem_voucher(
    session: &mut Session,
    session_key: Pubkey,
    instructions_sysvar: &AccountInfo,
    args: &ClaimArgs,
    now: i64,
) -> Result<(VoucherMessage, u64)> {
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
        now <= session.claim_deadline()?,
        EscrowError::ClaimWindowClosed
    );
    require!(
        voucher.seq >= session.claimed_seq,
        EscrowError::VoucherSeqRegressed
    );
    require!(
        voucher.cumulative > session.claimed,
        EscrowError::VoucherNotIncreasing
    );
    require!(
        args.receipt_count >= session.receipt_count,
        EscrowError::ReceiptCountRegressed
    );

    let amount = session.payable(voucher.cumulative)?;
    session.claimed = session
        .claimed
        .checked_add(amount)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
    session.claimed_seq = voucher.seq;
    session.receipts_head = args.receipts_head;
    session.receipt_count = args.receipt_count;
    Ok((voucher, amount))
}
