//! `reclaim`: after the session's end plus grace, the agent takes the rest back and closes it.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{Mint, TokenAccount, TokenInterface};

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::events::SessionReclaimed;
use crate::state::Session;
use crate::vault::{close_vault, pay_out};

/// Accounts of `reclaim`.
#[derive(Accounts)]
pub struct Reclaim<'info> {
    /// The session's agent; receives the rent of the vault and session.
    #[account(mut)]
    pub agent: Signer<'info>,
    /// The session to reclaim.
    #[account(
        mut,
        close = agent,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
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
    /// Where the rest of the vault goes (any token account of the mint; the agent signs).
    #[account(mut, token::mint = mint, token::token_program = token_program)]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
}

/// Returns the whole vault to the agent and closes the vault and session.
pub fn handler(ctx: Context<Reclaim>) -> Result<()> {
    let accounts = ctx.accounts;
    let now = Clock::get()?.unix_timestamp;
    require!(
        now > accounts.session.claim_deadline()?,
        EscrowError::ReclaimTooEarly
    );
    let returned = accounts.vault.amount;
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
    emit!(SessionReclaimed {
        session: accounts.session.key(),
        returned_to_agent: returned,
        claimed: accounts.session.claimed,
        refunded: accounts.session.refunded,
    });
    Ok(())
}
