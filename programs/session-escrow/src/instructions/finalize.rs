//! `finalize`: after the dispute window, anyone settles the session — the provider is paid what
//! it earned less the penalties, the agent the rest — and the vault and session are closed.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{Mint, TokenAccount, TokenInterface};

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::events::SessionFinalized;
use crate::state::Session;
use crate::vault::{close_vault, pay_out, token_amount};

/// Accounts of `finalize`. No signer is required besides the fee payer: payouts go to token
/// accounts owned by the session's provider and agent, and the rent goes back to whoever paid it
/// at open (`Session::rent_payer`).
#[derive(Accounts)]
pub struct Finalize<'info> {
    /// The session to settle; closed, its rent to its rent payer.
    #[account(
        mut,
        close = rent_payer,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = agent @ EscrowError::NotSessionAgent,
        has_one = provider @ EscrowError::NotSessionProvider,
        has_one = mint @ EscrowError::WrongMint,
        has_one = vault @ EscrowError::WrongVault,
        has_one = rent_payer @ EscrowError::NotRentPayer,
    )]
    pub session: Box<Account<'info, Session>>,
    /// CHECK: the session's agent (`has_one`); owner of `agent_token`.
    pub agent: UncheckedAccount<'info>,
    /// CHECK: the session's rent payer (`has_one`); receives the rent of the vault and the session.
    #[account(mut)]
    pub rent_payer: UncheckedAccount<'info>,
    /// CHECK: the session's provider (`has_one`); owner of `provider_token`.
    pub provider: UncheckedAccount<'info>,
    /// The session's vault; closed by this instruction.
    #[account(mut)]
    pub vault: Box<InterfaceAccount<'info, TokenAccount>>,
    /// The session's mint (writable if Token-2022, to harvest withheld transfer fees).
    #[account(mint::token_program = token_program)]
    pub mint: Box<InterfaceAccount<'info, Mint>>,
    /// Where the provider is paid: a token account the provider owns.
    #[account(mut, token::mint = mint, token::authority = provider, token::token_program = token_program)]
    pub provider_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// Where the agent gets the rest: a token account the agent owns.
    #[account(mut, token::mint = mint, token::authority = agent, token::token_program = token_program)]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
}

/// Settles after the dispute deadline.
pub fn handler(ctx: Context<Finalize>) -> Result<()> {
    let accounts = ctx.accounts;
    let now = Clock::get()?.unix_timestamp;
    require!(
        now > accounts.session.dispute_deadline()?,
        EscrowError::FinalizeTooEarly
    );
    pay_and_close(
        &accounts.session,
        &accounts.vault,
        &accounts.mint,
        &accounts.provider_token,
        &accounts.agent_token,
        &accounts.rent_payer.to_account_info(),
        &accounts.token_program,
        false,
    )
}

/// Pays the provider [`Session::payout`] and the agent the rest of the vault, closes the vault
/// (rent to `rent_to`) and emits `SessionFinalized`. The caller's `close = agent` constraint
/// closes the session.
#[allow(clippy::too_many_arguments)] // the accounts a settlement touches, each checked by its caller
pub(crate) fn pay_and_close<'info>(
    session: &Account<'info, Session>,
    vault: &InterfaceAccount<'info, TokenAccount>,
    mint: &InterfaceAccount<'info, Mint>,
    provider_token: &InterfaceAccount<'info, TokenAccount>,
    agent_token: &InterfaceAccount<'info, TokenAccount>,
    rent_to: &AccountInfo<'info>,
    token_program: &Interface<'info, TokenInterface>,
    cooperative: bool,
) -> Result<()> {
    let payout = session.payout();
    // The vault holds at least the deposit (direct transfers only add), and the payout is at most
    // the deposit; `min` keeps a transfer-fee mint's rounding from failing the settlement.
    let to_provider = payout.provider.min(vault.amount);
    pay_out(
        session,
        vault,
        mint,
        provider_token,
        token_program,
        to_provider,
    )?;
    let to_agent = token_amount(&vault.to_account_info())?;
    pay_out(session, vault, mint, agent_token, token_program, to_agent)?;
    close_vault(session, vault, mint, rent_to, token_program)?;
    emit!(SessionFinalized {
        session: session.key(),
        cooperative,
        settled: session.settled,
        penalties: session.penalties,
        to_provider,
        to_agent,
        penalty_shortfall: payout.penalty_shortfall,
    });
    Ok(())
}
