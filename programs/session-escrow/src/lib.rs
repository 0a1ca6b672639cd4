//! # session-escrow — the on-chain half of x402++ session channels
//!
//! An agent locks a deposit for a provider in a vault owned by a session PDA, on terms the
//! provider signed (an *offer*). The agent then pays per request off chain with cumulative
//! *vouchers*; the provider redeems the best one with [`session_escrow::claim`]. Either side can
//! end the session ([`session_escrow::close`] cooperatively by the provider,
//! [`session_escrow::reclaim`] by the agent after expiry or a close request plus grace), and a
//! provider-signed *receipt* that shows a latency breach or an over-claim is enforced by
//! [`session_escrow::dispute`].
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

    /// Pays the provider what the agent's voucher (Ed25519 instruction before this one) allows.
    pub fn claim(ctx: Context<Claim>, args: ClaimArgs) -> Result<()> {
        instructions::claim::handler(ctx, args)
    }

    /// Starts closing: the provider may still claim until close request + grace.
    pub fn request_close(ctx: Context<RequestClose>) -> Result<()> {
        instructions::request_close::handler(ctx)
    }

    /// Cooperative close by the provider: optional final claim, rest to the agent, accounts closed.
    pub fn close(ctx: Context<CloseSession>, args: CloseArgs) -> Result<()> {
        instructions::close::handler(ctx, args)
    }

    /// The agent takes the rest back after (expiry or close request) + grace; accounts closed.
    pub fn reclaim(ctx: Context<Reclaim>) -> Result<()> {
        instructions::reclaim::handler(ctx)
    }

    /// Enforces a provider-signed receipt (Ed25519 instruction before this one) that shows a
    /// latency breach or an over-claim; each receipt seq can be disputed once.
    pub fn dispute(ctx: Context<DisputeReceipt>, seq: u64) -> Result<()> {
        instructions::dispute::handler(ctx, seq)
    }
}
