//! `request_close`: the agent starts closing; the provider may still claim during one grace and
//! the agent dispute during the next, then anyone may finalize.

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

/// Marks the session closing now: the end becomes min(expiry, now).
pub fn handler(ctx: Context<RequestClose>) -> Result<()> {
    let session = &mut ctx.accounts.session;
    require!(
        session.status == SessionStatus::Open,
        EscrowError::SessionClosing
    );
    let now = Clock::get()?.unix_timestamp;
    start_closing(session, now, false)
}

/// Moves an open session to `Closing` at `now` (a closing one keeps its earlier start) and emits
/// `CloseRequested`.
pub(crate) fn start_closing(
    session: &mut Account<Session>,
    now: i64,
    by_provider: bool,
) -> Result<()> {
    if session.status == SessionStatus::Open {
        session.status = SessionStatus::Closing;
        session.closing_started_at = now;
    }
    emit!(CloseRequested {
        session: session.key(),
        requested_at: session.closing_started_at,
        by_provider,
        claim_deadline: session.claim_deadline()?,
        dispute_deadline: session.dispute_deadline()?,
    });
    Ok(())
}
