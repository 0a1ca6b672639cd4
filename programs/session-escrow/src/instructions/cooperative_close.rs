//! `cooperative_close`: agent and provider both sign, so the session settles and closes now,
//! without waiting for the dispute window (the agent signs once it has checked the receipts, and
//! may put its disputes in the same transaction, before this instruction).

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{Mint, TokenAccount, TokenInterface};

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::instructions::claim::settle_voucher;
use crate::instructions::close::CloseArgs;
use crate::instructions::finalize::pay_and_close;
use crate::state::Session;

/// Accounts of `cooperative_close`.
#[derive(Accounts)]
pub struct CooperativeClose<'info> {
    /// The session's agent.
    pub agent: Signer<'info>,
    /// The session's provider.
    pub provider: Signer<'info>,
    /// CHECK: the session's rent payer (`has_one`); receives the rent of the vault and the session.
    #[account(mut)]
    pub rent_payer: UncheckedAccount<'info>,
    /// The session to settle and close.
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
    /// The session's vault; closed by this instruction.
    #[account(mut)]
    pub vault: Box<InterfaceAccount<'info, TokenAccount>>,
    /// The session's mint (writable if Token-2022, to harvest withheld transfer fees).
    #[account(mint::token_program = token_program)]
    pub mint: Box<InterfaceAccount<'info, Mint>>,
    /// Where the provider is paid (any token account of the mint; the provider signs).
    #[account(mut, token::mint = mint, token::token_program = token_program)]
    pub provider_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// Where the agent gets the rest (any token account of the mint; the agent signs).
    #[account(mut, token::mint = mint, token::token_program = token_program)]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// CHECK: address-checked instructions sysvar, read only with a final voucher.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
    /// SPL Token or Token-2022 (the mint's owner).
    pub token_program: Interface<'info, TokenInterface>,
}

/// Final voucher (optional), then settlement and close, now.
pub fn handler(ctx: Context<CooperativeClose>, args: CloseArgs) -> Result<()> {
    let accounts = ctx.accounts;
    if args.final_voucher {
        let now = Clock::get()?.unix_timestamp;
        let session_key = accounts.session.key();
        settle_voucher(
            &mut accounts.session,
            session_key,
            &accounts.instructions_sysvar,
            now,
        )?;
    }
    pay_and_close(
        &accounts.session,
        &accounts.vault,
        &accounts.mint,
        &accounts.provider_token,
        &accounts.agent_token,
        &accounts.rent_payer.to_account_info(),
        &accounts.token_program,
        true,
    )
}
