//! Compute-unit budgets of the program's instructions, for clients sizing
//! `SetComputeUnitLimit` (a transaction that asks for what it uses pays a smaller priority fee
//! and fits busier blocks than one left at the runtime's 200 000 per instruction).
//!
//! Each budget is what the instruction consumed on its worst path (a Token-2022 mint with a
//! transfer fee and metadata extensions, or SPL Token where that costs more; the longest path
//! through the handler; its token CPIs included), measured on the SBF build `.ci/run` makes,
//! times about 1.3. That build runs 2–3× the compute units of an `anchor build`
//! (docs/program.md), so on a cluster these are generous upper bounds. The program test
//! `every_instruction_stays_within_its_compute_budget` fails when an instruction exceeds its
//! budget; docs/program.md has the measured table.
//!
//! Every instruction finds the canonical bump of the session PDA it checks (`open_session` also
//! of the vault, `dispute` of its record); each bump below 255 costs one more
//! `create_program_address` ([`PDA_SEARCH_STEP`]). The budgets are for bump 255;
//! [`of_instruction`] adds what the instruction's actual bumps cost. The session's bump is fixed
//! when it opens and stored in it (`Session::bump`), so a client always knows it.

use anchor_lang::Discriminator;

use crate::instruction;

/// `open_session` (a metered offer's 206 bytes cost ≈ 3 300 more than a fixed-price one's).
pub const OPEN_SESSION: u32 = 61_000;
/// `top_up`.
pub const TOP_UP: u32 = 32_500;
/// `claim` (records the voucher; no token CPI). Sized for a metered claim with its receipt
/// (a second Ed25519 instruction read and checked: ≈ 5 000 more than a voucher alone).
pub const CLAIM: u32 = 22_500;
/// `request_close`.
pub const REQUEST_CLOSE: u32 = 10_500;
/// `close` (with a final voucher, and on a metered session its receipt; no token CPI).
pub const CLOSE: u32 = 23_500;
/// `finalize` (two payouts, vault closed).
pub const FINALIZE: u32 = 56_500;
/// `cooperative_close` (final voucher, metered: and its receipt; two payouts, vault closed).
pub const COOPERATIVE_CLOSE: u32 = 69_000;
/// `dispute` (records the debt and the dispute account; no token CPI).
pub const DISPUTE: u32 = 32_000;

/// What the runtime charges per `create_program_address` a bump search makes
/// (`create_program_address_units` of Agave's compute budget).
pub const PDA_SEARCH_STEP: u32 = 1_500;

/// The budget of the instruction whose data is `data` (by its Anchor discriminator), PDAs at
/// bump 255; `None` when `data` is no instruction of this program.
pub fn of_instruction_data(data: &[u8]) -> Option<u32> {
    let budgets: [(&[u8], u32); 8] = [
        (instruction::OpenSession::DISCRIMINATOR, OPEN_SESSION),
        (instruction::TopUp::DISCRIMINATOR, TOP_UP),
        (instruction::Claim::DISCRIMINATOR, CLAIM),
        (instruction::RequestClose::DISCRIMINATOR, REQUEST_CLOSE),
        (instruction::Close::DISCRIMINATOR, CLOSE),
        (instruction::Finalize::DISCRIMINATOR, FINALIZE),
        (
            instruction::CooperativeClose::DISCRIMINATOR,
            COOPERATIVE_CLOSE,
        ),
        (instruction::Dispute::DISCRIMINATOR, DISPUTE),
    ];
    budgets
        .iter()
        .find(|(discriminator, _)| data.starts_with(discriminator))
        .map(|&(_, budget)| budget)
}

/// What searching a PDA's canonical `bump` costs beyond the first try.
pub fn pda_search_units(bump: u8) -> u32 {
    u32::from(u8::MAX.saturating_sub(bump)).saturating_mul(PDA_SEARCH_STEP)
}

#[cfg(not(target_os = "solana"))]
pub use off_chain::of_instruction;

#[cfg(not(target_os = "solana"))]
mod off_chain {
    use anchor_lang::prelude::Pubkey;
    use anchor_lang::solana_program::instruction::Instruction;
    use anchor_lang::AnchorDeserialize;

    use super::*;
    use crate::constants::{DISPUTE_SEED, VAULT_SEED};

    /// The compute units `ix` may use if it is an instruction of this program on the session
    /// whose PDA bump is `session_bump` and whose incarnation is `opened_slot` (a dispute
    /// record's address depends on it): its budget plus the bump searches it makes. `None` for
    /// another program's instruction or data that is no instruction of this one.
    pub fn of_instruction(ix: &Instruction, session_bump: u8, opened_slot: u64) -> Option<u32> {
        if ix.program_id != crate::ID {
            return None;
        }
        let budget = of_instruction_data(&ix.data)?;
        let key = |i: usize| ix.accounts.get(i).map(|meta| meta.pubkey);
        let bump = |seeds: &[&[u8]]| Pubkey::find_program_address(seeds, &crate::ID).1;
        let args = ix.data.get(8..).unwrap_or_default();
        let other = if ix.data.starts_with(instruction::OpenSession::DISCRIMINATOR) {
            // Accounts: agent, provider, mint, session, vault, ...: the vault's search.
            key(3).map_or(0, |session| {
                pda_search_units(bump(&[VAULT_SEED, session.as_ref()]))
            })
        } else if ix.data.starts_with(instruction::Dispute::DISCRIMINATOR) {
            // Accounts: agent, session, dispute, ...: the record's search.
            let dispute = instruction::Dispute::deserialize(&mut &args[..]).ok();
            match (dispute, key(1)) {
                (Some(dispute), Some(session)) => pda_search_units(bump(&[
                    DISPUTE_SEED,
                    session.as_ref(),
                    &opened_slot.to_le_bytes(),
                    &dispute.seq.to_le_bytes(),
                ])),
                _ => 0,
            }
        } else {
            0
        };
        Some(
            budget
                .saturating_add(pda_search_units(session_bump))
                .saturating_add(other),
        )
    }
}
