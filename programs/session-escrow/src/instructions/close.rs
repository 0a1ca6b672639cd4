//! `close`: the provider ends the session, optionally with a final voucher. Nothing is paid and
//! nothing is deleted: the end moves to now, the provider may still claim for one grace and the
//! agent dispute for the next, then anyone may `finalize`. Deleting a session early needs the
//! agent's signature (`cooperative_close`), so a provider cannot close away a dispute.

use anchor_lang::prelude::*;

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::instructions::claim::settle_voucher;
use crate::instructions::request_close::start_closing;
use crate::state::Session;

/// Arguments of `close` and `cooperative_close`.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseArgs {
    /// Record a final voucher first; the instruction must then be preceded by an
    /// Ed25519SigVerify instruction over it, exactly as for `claim`.
    pub final_voucher: bool,
}

/// Accounts of `close`.
#[derive(Accounts)]
pub struct CloseSession<'info> {
    /// The session's provider.
    pub provider: Signer<'info>,
    /// The session to end.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = provider @ EscrowError::NotSessionProvider,
    )]
    pub session: Box<Account<'info, Session>>,
    /// CHECK: address-checked instructions sysvar, read only with a final voucher.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
}

/// Final voucher (optional), then closing starts now (an earlier start or expiry stays).
pub fn handler(ctx: Context<CloseSession>, args: CloseArgs) -> Result<()> {
    let accounts = ctx.accounts;
    let now = Clock::get()?.unix_timestamp;
    require!(
        now <= accounts.session.claim_deadline()?,
        EscrowError::ClaimWindowClosed
    );
    if args.final_voucher {
        let session_key = accounts.session.key();
        settle_voucher(
            &mut accounts.session,
            session_key,
            &accounts.instructions_sysvar,
            now,
        )?;
    }
    start_closing(&mut accounts.session, now, true)
}
