//! `request_close`: the agent starts closing; the provider may still claim during the grace.

use anchor_lang::prelude::*;

use crate::constants::SESSION_SEED;
use crate::error::EscrowError;
use crate::events::CloseRequested;
use crate::state::{Session, SessionStatus};

/// Accounts of `request_close`.
#[derive(Accounts)]
pub struct RequestClose<'info> {
    /// The session's agent.
    pub agent: Signer<'info>,
    /// The session to close.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = agent @ EscrowError::NotSessionAgent,
    )]
    pub session: Box<Account<'info, Session>>,
}

/// Marks the session closing now; the claim deadline becomes min(expiry, now) + grace.
pub fn handler(ctx: Context<RequestClose>) -> Result<()> {
    let session = &mut ctx.accounts.session;
    require!(
        session.status == SessionStatus::Open,
        EscrowError::SessionClosing
    );
    let now = Clock::get()?.unix_timestamp;
    session.status = SessionStatus::Closing;
    session.close_requested_at = now;
    emit!(CloseRequested {
        session: session.key(),
        requested_at: now,
        claim_deadline: session.claim_deadline()?,
    });
    Ok(())
}
