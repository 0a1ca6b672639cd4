//! `top_up`: the agent adds to the deposit of an open, unexpired session.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{self, Mint, TokenAccount, TokenInterface, TransferChecked};

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::events::DepositToppedUp;
use crate::state::{Session, SessionStatus};
use crate::vault::token_amount;

/// Accounts of `top_up`.
#[derive(Accounts)]
pub struct TopUp<'info> {
    /// The session's agent.
    pub agent: Signer<'info>,
    /// The session to top up.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = agent @ EscrowError::NotSessionAgent,
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
    /// The agent's token account the top-up comes from.
    #[account(
        mut,
        token::mint = mint,
        token::authority = agent,
        token::token_program = token_program,
    )]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
}

/// Moves `amount` from the agent into the vault and raises the deposit by what arrived.
pub fn handler(ctx: Context<TopUp>, amount: u64) -> Result<()> {
    let accounts = ctx.accounts;
    require!(amount > 0, EscrowError::ZeroAmount);
    require!(
        accounts.session.status == SessionStatus::Open,
        EscrowError::SessionClosing
    );
    let now = Clock::get()?.unix_timestamp;
    require!(
        now < accounts.session.expires_at,
        EscrowError::SessionExpired
    );
    // Refuse before moving tokens if the books could not hold the new total.
    accounts
        .session
        .deposit
        .checked_add(amount)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;

    let before = accounts.vault.amount;
    token_interface::transfer_checked(
        CpiContext::new(
            accounts.token_program.key(),
            TransferChecked {
                from: accounts.agent_token.to_account_info(),
                mint: accounts.mint.to_account_info(),
                to: accounts.vault.to_account_info(),
                authority: accounts.agent.to_account_info(),
            },
        ),
        amount,
        accounts.mint.decimals,
    )?;
    let received = token_amount(&accounts.vault.to_account_info())?
        .checked_sub(before)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
    require!(received > 0, EscrowError::ZeroAmount);

    let session = &mut accounts.session;
    session.deposit = session
        .deposit
        .checked_add(received)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
    emit!(DepositToppedUp {
        session: session.key(),
        amount: received,
        deposit: session.deposit
    });
    Ok(())
}
