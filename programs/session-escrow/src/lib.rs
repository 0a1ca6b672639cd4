//! # session-escrow — the on-chain half of x402++ session channels
//!
//! An agent locks a deposit for a provider in a vault owned by a session PDA, on terms the
//! provider signed (an *offer*). The agent then pays per request off chain with cumulative
//! *vouchers*; the provider records the best one with [`session_escrow::claim`], and a
//! provider-signed *receipt* that shows a latency breach or an over-claim is recorded as a debt
//! by [`session_escrow::dispute`]. Either side can end the session
//! ([`session_escrow::request_close`], [`session_escrow::close`]); no tokens leave the vault
//! until the agent's dispute window has passed, when anyone may [`session_escrow::finalize`]
//! (the provider is paid what it earned less the penalties, the agent the rest), unless both
//! sign a [`session_escrow::cooperative_close`].
//!
//! Signatures are checked by the Ed25519SigVerify precompile; the program reads the verified
//! message back through the instructions sysvar with a strict parser ([`ed25519`]) and decodes it
//! with the shared layouts of [`messages`]. Tokens move with `transfer_checked` through
//! `Interface<TokenInterface>`, so SPL Token and Token-2022 mints both work.
//!
//! Layout: `lib.rs` dispatches; `instructions/<verb>.rs` hold each `Accounts` struct and handler;
//! [`state`] the accounts; [`error`] the error codes; [`events`] the events; [`constants`] the
//! PDA seeds; [`compute_units`] the compute budget of each instruction. See `docs/program.md`
//! for the full reference.

// `#[program]` and `#[derive(Accounts)]` generate undocumented public items at the crate root
// (`instruction::*`, `accounts::*`, client modules). Everything written here is documented; with
// this allow removed, only those generated items warn. No other workspace lint is relaxed.
#![allow(missing_docs)]

pub mod compute_units;
pub mod constants;
pub mod ed25519;
pub mod error;
pub mod events;
pub mod instructions;
pub mod pda;
pub mod state;
pub mod vault;

/// The signed binary layouts (offer, voucher, receipt) the program parses.
pub use x402pp_messages as messages;

use anchor_lang::prelude::*;
use instructions::*;

declare_id!("EfPTkRAiF5v4HgVvAKAuHRi18kmCGke3shfR7oeHdbAW");

/// The escrow program's instructions. Each one dispatches to `instructions::<verb>::handler`.
#[program]
pub mod session_escrow {
    use super::*;

    /// Opens a session on a provider-signed offer (Ed25519 instruction before this one) and
    /// moves the deposit into the session's vault.
    pub fn open_session(ctx: Context<OpenSession>, args: OpenSessionArgs) -> Result<()> {
        instructions::open_session::handler(ctx, args)
    }

    /// Adds `amount` to the deposit of an open, unexpired session.
    pub fn top_up(ctx: Context<TopUp>, amount: u64) -> Result<()> {
        instructions::top_up::handler(ctx, amount)
    }

    /// Records the agent's voucher (Ed25519 instruction before this one) as the session's
    /// settled voucher; the provider is paid at `finalize`.
    pub fn claim(ctx: Context<Claim>) -> Result<()> {
        instructions::claim::handler(ctx)
    }

    /// The agent starts closing: claims until end + grace, disputes until end + 2 × grace.
    pub fn request_close(ctx: Context<RequestClose>) -> Result<()> {
        instructions::request_close::handler(ctx)
    }

    /// The provider ends the session (optional final voucher): nothing is paid or deleted
    /// before the dispute window has passed.
    pub fn close(ctx: Context<CloseSession>, args: CloseArgs) -> Result<()> {
        instructions::close::handler(ctx, args)
    }

    /// Anyone, after the dispute window: the provider gets what it earned less the penalties,
    /// the agent the rest; vault and session closed.
    pub fn finalize(ctx: Context<Finalize>) -> Result<()> {
        instructions::finalize::handler(ctx)
    }

    /// Agent and provider together settle and close now (optional final voucher).
    pub fn cooperative_close(ctx: Context<CooperativeClose>, args: CloseArgs) -> Result<()> {
        instructions::cooperative_close::handler(ctx, args)
    }

    /// Records the debt a provider-signed receipt (Ed25519 instruction before this one) proves:
    /// a latency breach or an over-claim; each receipt seq can be disputed once.
    pub fn dispute(ctx: Context<DisputeReceipt>, seq: u64) -> Result<()> {
        instructions::dispute::handler(ctx, seq)
    }
}
