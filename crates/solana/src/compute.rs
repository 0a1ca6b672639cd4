//! The compute budget of the transactions x402++ builds.
//!
//! Every transaction the agent, the provider's settler and the demo send starts with
//! `SetComputeUnitLimit` (the sum of what its instructions may use) and `SetComputeUnitPrice`
//! (micro-lamports per compute unit, 1 by default as in x402's `exact`), instead of the
//! runtime's default of 200 000 units per instruction: the priority fee is price × limit, and a
//! block packs a transaction by its limit, so a tight limit is what makes priority cheap on a
//! busy cluster.
//!
//! The escrow program's budgets are [`session_escrow::compute_units`] (measured on its SBF build,
//! with headroom, and held by a program test) plus the bump searches of its PDAs, which depend
//! on the session (hence the [`SessionKeys`] argument); the other programs' are below. An
//! instruction of a program not listed here gets the runtime's default, so a transaction never
//! asks for less than it needs.

pub use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_sdk::instruction::Instruction;

use crate::ed25519::ED25519_PROGRAM_ID;
use crate::escrow::{SessionKeys, PROGRAM_ID};
use crate::token;

/// Default price of a compute unit, micro-lamports (x402's `exact` default).
pub const DEFAULT_UNIT_PRICE: u64 = 1;

/// What the runtime charges a builtin instruction (compute budget, system program).
pub const BUILTIN_UNITS: u32 = 150;

/// What an Ed25519SigVerify precompile instruction takes from the compute meter: nothing
/// (measured: a transaction's units are its program's); its verification is paid by the
/// signature fee.
pub const ED25519_UNITS: u32 = 0;

/// `CreateIdempotent` of the Associated Token Account program: its dearest path, creating a
/// Token-2022 account, took 22 148 units on the localnet's SPL build (a test holds it under this).
pub const CREATE_ATA_UNITS: u32 = 40_000;

/// What the runtime allows an instruction without a limit; used for programs not listed here.
pub const DEFAULT_INSTRUCTION_UNITS: u32 = 200_000;

/// The most a transaction may ask for.
pub const MAX_TRANSACTION_UNITS: u32 = 1_400_000;

/// Parses a compute budget instruction's data with the interface's own (borsh) decoder: `None`
/// when it is no such instruction or has trailing bytes.
pub fn parse_compute_budget(data: &[u8]) -> Option<ComputeBudgetInstruction> {
    borsh::from_slice(data).ok()
}

/// The compute units `instruction` may use in a transaction on `session` (whose PDA bump the
/// escrow program searches).
pub fn instruction_units(instruction: &Instruction, session: &SessionKeys) -> u32 {
    let program = instruction.program_id;
    if program == PROGRAM_ID {
        session_escrow::compute_units::of_instruction(
            instruction,
            session.session_bump,
            session.opened_slot,
        )
        .unwrap_or(DEFAULT_INSTRUCTION_UNITS)
    } else if program == solana_compute_budget_interface::id()
        || program == token::SYSTEM_PROGRAM_ID
    {
        BUILTIN_UNITS
    } else if program == ED25519_PROGRAM_ID {
        ED25519_UNITS
    } else if program == token::ASSOCIATED_TOKEN_PROGRAM_ID {
        CREATE_ATA_UNITS
    } else {
        DEFAULT_INSTRUCTION_UNITS
    }
}

/// The compute unit limit of a transaction on `session` made of `instructions` and the two
/// compute budget instructions [`with_compute_budget`] adds.
pub fn unit_limit(instructions: &[Instruction], session: &SessionKeys) -> u32 {
    instructions
        .iter()
        .map(|instruction| instruction_units(instruction, session))
        .fold(2 * BUILTIN_UNITS, u32::saturating_add)
        .min(MAX_TRANSACTION_UNITS)
}

/// `instructions` (a transaction on `session`) preceded by `SetComputeUnitLimit`
/// ([`unit_limit`]) and `SetComputeUnitPrice` (`unit_price` micro-lamports per unit). Compute
/// budget instructions already in `instructions` are dropped: a transaction may carry each only
/// once.
pub fn with_compute_budget(
    instructions: &[Instruction],
    session: &SessionKeys,
    unit_price: u64,
) -> Vec<Instruction> {
    let rest: Vec<Instruction> = instructions
        .iter()
        .filter(|ix| ix.program_id != solana_compute_budget_interface::id())
        .cloned()
        .collect();
    let mut all = Vec::with_capacity(rest.len().saturating_add(2));
    all.push(ComputeBudgetInstruction::set_compute_unit_limit(
        unit_limit(&rest, session),
    ));
    all.push(ComputeBudgetInstruction::set_compute_unit_price(unit_price));
    all.extend(rest);
    all
}

#[cfg(test)]
mod tests {
    use anchor_lang::InstructionData;
    use solana_sdk::pubkey::Pubkey;

    use super::*;

    #[test]
    fn compute_budget_data_parses_exactly_or_not_at_all() {
        let limit = ComputeBudgetInstruction::set_compute_unit_limit(20_000);
        let price = ComputeBudgetInstruction::set_compute_unit_price(7);
        assert_eq!(
            parse_compute_budget(&limit.data),
            Some(ComputeBudgetInstruction::SetComputeUnitLimit(20_000))
        );
        assert_eq!(
            parse_compute_budget(&price.data),
            Some(ComputeBudgetInstruction::SetComputeUnitPrice(7))
        );
        // The layout the runtime reads: tag 2 + u32 LE, tag 3 + u64 LE.
        assert_eq!(limit.data, [2, 0x20, 0x4e, 0, 0]);
        assert_eq!(price.data, [3, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_compute_budget(&[&limit.data[..], &[0]].concat()),
            None
        );
        assert_eq!(parse_compute_budget(&limit.data[..4]), None);
        assert_eq!(parse_compute_budget(&[]), None);
        assert_eq!(parse_compute_budget(&[99, 0, 0, 0, 0]), None);
    }

    /// A session whose PDA bump is 255 (no search beyond the first try), found by trying nonces.
    fn session_at_bump_255() -> SessionKeys {
        let (agent, provider) = (Pubkey::new_unique(), Pubkey::new_unique());
        (0..)
            .map(|nonce| {
                SessionKeys::new(
                    agent,
                    provider,
                    nonce,
                    Pubkey::new_unique(),
                    token::TOKEN_PROGRAM_ID,
                )
            })
            .find(|keys| keys.session_bump == u8::MAX)
            .expect("half of all nonces give bump 255")
    }

    fn top_up() -> Instruction {
        Instruction {
            program_id: PROGRAM_ID,
            accounts: vec![],
            data: session_escrow::instruction::TopUp { amount: 1 }.data(),
        }
    }

    #[test]
    fn a_transaction_asks_for_the_sum_of_its_instruction_budgets() {
        let verify = Instruction {
            program_id: ED25519_PROGRAM_ID,
            accounts: vec![],
            data: vec![],
        };
        let all = with_compute_budget(&[verify, top_up()], &session_at_bump_255(), 7);
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[0],
            ComputeBudgetInstruction::set_compute_unit_limit(
                2 * BUILTIN_UNITS + ED25519_UNITS + session_escrow::compute_units::TOP_UP
            )
        );
        assert_eq!(all[1], ComputeBudgetInstruction::set_compute_unit_price(7));
    }

    #[test]
    fn each_bump_below_255_of_the_session_adds_one_search_step() {
        let mut keys = session_at_bump_255();
        let at_255 = unit_limit(&[top_up()], &keys);
        keys.session_bump = 252;
        assert_eq!(
            unit_limit(&[top_up()], &keys),
            at_255 + 3 * session_escrow::compute_units::PDA_SEARCH_STEP
        );
    }

    #[test]
    fn an_unknown_program_gets_the_runtime_default_and_existing_budget_instructions_are_replaced() {
        let unknown = Instruction {
            program_id: Pubkey::new_unique(),
            accounts: vec![],
            data: vec![],
        };
        let old = ComputeBudgetInstruction::set_compute_unit_limit(1);
        let all = with_compute_budget(&[old, unknown], &session_at_bump_255(), 1);
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            ComputeBudgetInstruction::set_compute_unit_limit(
                2 * BUILTIN_UNITS + DEFAULT_INSTRUCTION_UNITS
            )
        );
    }

    #[test]
    fn unknown_escrow_data_gets_the_runtime_default() {
        let bogus = Instruction {
            program_id: PROGRAM_ID,
            accounts: vec![],
            data: vec![0; 8],
        };
        assert_eq!(
            instruction_units(&bogus, &session_at_bump_255()),
            DEFAULT_INSTRUCTION_UNITS
        );
    }
}
