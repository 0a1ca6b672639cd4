//! `close`: the provider closes cooperatively, optionally with a final claim; the rest of the
//! vault goes to the agent, and the vault's and session's rent go back to the agent.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{Mint, TokenAccount, TokenInterface};

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::events::{SessionClosed, VoucherClaimed};
use crate::instructions::claim::{redeem_voucher, ClaimArgs};
use crate::state::Session;
use crate::vault::{close_vault, pay_out, token_amount};

/// Arguments of `close`.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseArgs {
    /// `Some` to redeem a final voucher first; the instruction must then be preceded by an
    /// Ed25519SigVerify instruction over it, exactly as for `claim`.
    pub final_claim: Option<ClaimArgs>,
}

/// Accounts of `close`.
#[derive(Accounts)]
pub struct CloseSession<'info> {
    /// The session's provider.
    pub provider: Signer<'info>,
    /// CHECK: must be the session's agent (`has_one`); receives the rent of the vault and session.
    #[account(mut)]
    pub agent: UncheckedAccount<'info>,
    /// The session to close.
    #[account(
        mut,
        close = agent,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = provider @ EscrowError::NotSessionProvider,
        has_one = agent @ EscrowError::NotSessionAgent,
        has_one = mint @ EscrowError::WrongMint,
        has_one = vault @ EscrowError::WrongVault,
    )]
    pub session: Box<Account<'info, Session>>,
    /// The session's vault; closed by this instruction.
    #[account(mut)]
    pub vault: Box<InterfaceAccount<'info, TokenAccount>>,
    /// The session's mint. A Token-2022 mint is passed writable: the vault's withheld transfer
    /// fees, if any, are harvested to it before the vault closes (not `mut` here, so an SPL
    /// Token mint such as USDC's is not write-locked).
    #[account(mint::token_program = token_program)]
    pub mint: Box<InterfaceAccount<'info, Mint>>,
    /// Where a final claim pays the provider.
    #[account(mut, token::mint = mint, token::token_program = token_program)]
    pub provider_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// Where the rest of the vault goes: a token account the agent owns.
    #[account(
        mut,
        token::mint = mint,
        token::authority = agent,
        token::token_program = token_program,
    )]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// CHECK: address-checked instructions sysvar, read only for a final claim.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
}

/// Final claim (optional), remainder to the agent, vault and session closed.
pub fn handler(ctx: Context<CloseSession>, args: CloseArgs) -> Result<()> {
    let accounts = ctx.accounts;
    let session_key = accounts.session.key();
    let mut final_claim = 0;
    if let Some(claim) = args.final_claim {
        let now = Clock::get()?.unix_timestamp;
        let (voucher, amount) = redeem_voucher(
            &mut accounts.session,
            session_key,
            &accounts.instructions_sysvar,
            &claim,
            now,
        )?;
        pay_out(
            &accounts.session,
            &accounts.vault,
            &accounts.mint,
            &accounts.provider_token,
            &accounts.token_program,
            amount,
        )?;
        final_claim = amount;
        emit!(VoucherClaimed {
            session: session_key,
            seq: voucher.seq,
            cumulative: voucher.cumulative,
            amount,
            claimed: accounts.session.claimed,
            receipts_head: claim.receipts_head,
            receipt_count: claim.receipt_count,
        });
    }

    let returned = token_amount(&accounts.vault.to_account_info())?;
    pay_out(
        &accounts.session,
        &accounts.vault,
        &accounts.mint,
        &accounts.agent_token,
        &accounts.token_program,
        returned,
    )?;
    close_vault(
        &accounts.session,
        &accounts.vault,
        &accounts.mint,
        &accounts.agent.to_account_info(),
        &accounts.token_program,
    )?;
    emit!(SessionClosed {
        session: session_key,
        final_claim,
        returned_to_agent: returned,
        claimed: accounts.session.claimed,
        refunded: accounts.session.refunded,
    });
    Ok(())
}
