//! A strict reader for the Ed25519SigVerify precompile instruction that precedes an escrow
//! instruction.
//!
//! The runtime verifies every signature an Ed25519SigVerify instruction lists before the
//! transaction runs; a program only learns *what* was verified by reading that instruction back
//! from the instructions sysvar. The reader therefore accepts exactly one shape and nothing else:
//!
//! ```text
//! offset  size  field
//!      0     1  num_signatures = 1
//!      1     1  padding = 0
//!      2     2  signature_offset = 48            (u16 LE)
//!      4     2  signature_instruction_index = u16::MAX
//!      6     2  public_key_offset = 16
//!      8     2  public_key_instruction_index = u16::MAX
//!     10     2  message_data_offset = 112
//!     12     2  message_data_size = exact length of the expected message type
//!     14     2  message_instruction_index = u16::MAX
//!     16    32  public key
//!     48    64  signature
//!    112     n  message (n = message_data_size, nothing after it)
//! ```
//!
//! This is the layout `solana_ed25519_program::new_ed25519_instruction_with_signature` produces.
//! The instruction must be the one immediately before the current instruction (so two escrow
//! instructions can never share one verified signature), must carry no accounts, and is loaded
//! from the address-checked instructions sysvar.

use anchor_lang::prelude::*;
use solana_instructions_sysvar::{load_current_index_checked, load_instruction_at_checked};

use crate::error::EscrowError;

/// Length of the header: count, padding and one 14-byte offsets record.
pub const HEADER_LEN: usize = 16;
/// Where the public key starts in the canonical layout.
pub const PUBKEY_OFFSET: usize = HEADER_LEN;
/// Where the signature starts in the canonical layout.
pub const SIGNATURE_OFFSET: usize = PUBKEY_OFFSET + 32;
/// Where the message starts in the canonical layout.
pub const MESSAGE_OFFSET: usize = SIGNATURE_OFFSET + 64;
/// Instruction index meaning "this Ed25519 instruction" — the only one accepted.
pub const THIS_INSTRUCTION: u16 = u16::MAX;

/// A signature the runtime verified: who signed and the exact signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMessage {
    /// The ed25519 public key that signed.
    pub signer: Pubkey,
    /// The signed message, exactly `expected_len` bytes.
    pub message: Vec<u8>,
}

/// Loads the instruction just before the current one from `instructions_sysvar` and returns its
/// single verified `(signer, message)`, with the message exactly `expected_len` bytes long.
pub fn load_verified_message(
    instructions_sysvar: &AccountInfo,
    expected_len: usize,
) -> Result<VerifiedMessage> {
    let verified = load_verified_message_at(instructions_sysvar, 1)?;
    require!(
        verified.message.len() == expected_len,
        EscrowError::Ed25519MessageLength
    );
    Ok(verified)
}

/// Loads the instruction `back` places before the current one (1: the one just before) and
/// returns its single verified `(signer, message)`, of whatever length its strict header
/// declares; the caller decides which lengths it accepts. A metered claim reads its receipt at
/// 1 and its voucher at 2 this way.
pub fn load_verified_message_at(
    instructions_sysvar: &AccountInfo,
    back: u16,
) -> Result<VerifiedMessage> {
    require_keys_eq!(
        *instructions_sysvar.key,
        solana_sdk_ids::sysvar::instructions::ID,
        EscrowError::InvalidInstructionsSysvar
    );
    let current = load_current_index_checked(instructions_sysvar)
        .map_err(|_| error!(EscrowError::InvalidInstructionsSysvar))?;
    let at = current
        .checked_sub(back)
        .ok_or_else(|| error!(EscrowError::MissingEd25519Instruction))?;
    let instruction = load_instruction_at_checked(usize::from(at), instructions_sysvar)
        .map_err(|_| error!(EscrowError::MissingEd25519Instruction))?;
    require_keys_eq!(
        instruction.program_id,
        solana_sdk_ids::ed25519_program::ID,
        EscrowError::MissingEd25519Instruction
    );
    require!(
        instruction.accounts.is_empty(),
        EscrowError::MalformedEd25519Instruction
    );
    // The declared message size (0 if the header is cut short: the parser then names what is
    // wrong with it, the signature count first).
    let declared = instruction
        .data
        .get(12..14)
        .and_then(|size| <[u8; 2]>::try_from(size).ok())
        .map_or(0, |size| usize::from(u16::from_le_bytes(size)));
    parse_single_signature(&instruction.data, declared)
}

/// Parses Ed25519SigVerify instruction data under the strict rules of this module.
pub fn parse_single_signature(data: &[u8], expected_len: usize) -> Result<VerifiedMessage> {
    let count = data
        .first()
        .copied()
        .ok_or_else(|| error!(EscrowError::MalformedEd25519Instruction))?;
    require!(count == 1, EscrowError::Ed25519SignatureCount);
    let header: [u8; HEADER_LEN] = data
        .get(..HEADER_LEN)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| error!(EscrowError::MalformedEd25519Instruction))?;
    let [_count, padding, s0, s1, si0, si1, p0, p1, pi0, pi1, m0, m1, ms0, ms1, mi0, mi1] = header;
    require!(padding == 0, EscrowError::MalformedEd25519Instruction);

    let signature_offset = u16::from_le_bytes([s0, s1]);
    let signature_instruction_index = u16::from_le_bytes([si0, si1]);
    let public_key_offset = u16::from_le_bytes([p0, p1]);
    let public_key_instruction_index = u16::from_le_bytes([pi0, pi1]);
    let message_data_offset = u16::from_le_bytes([m0, m1]);
    let message_data_size = u16::from_le_bytes([ms0, ms1]);
    let message_instruction_index = u16::from_le_bytes([mi0, mi1]);

    require!(
        signature_instruction_index == THIS_INSTRUCTION
            && public_key_instruction_index == THIS_INSTRUCTION
            && message_instruction_index == THIS_INSTRUCTION,
        EscrowError::Ed25519InstructionIndex
    );
    require!(
        usize::from(public_key_offset) == PUBKEY_OFFSET
            && usize::from(signature_offset) == SIGNATURE_OFFSET
            && usize::from(message_data_offset) == MESSAGE_OFFSET,
        EscrowError::Ed25519Offsets
    );
    let total = MESSAGE_OFFSET
        .checked_add(expected_len)
        .ok_or_else(|| error!(EscrowError::ArithmeticOverflow))?;
    require!(
        usize::from(message_data_size) == expected_len && data.len() == total,
        EscrowError::Ed25519MessageLength
    );

    let signer = data
        .get(PUBKEY_OFFSET..SIGNATURE_OFFSET)
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(Pubkey::new_from_array)
        .ok_or_else(|| error!(EscrowError::MalformedEd25519Instruction))?;
    let message = data
        .get(MESSAGE_OFFSET..total)
        .ok_or_else(|| error!(EscrowError::Ed25519MessageLength))?
        .to_vec();
    Ok(VerifiedMessage { signer, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EscrowError;

    fn canonical(message: &[u8]) -> Vec<u8> {
        let size = u16::try_from(message.len()).expect("short test message");
        let mut data = vec![1, 0];
        for field in [48u16, u16::MAX, 16, u16::MAX, 112, size, u16::MAX] {
            data.extend_from_slice(&field.to_le_bytes());
        }
        data.extend_from_slice(&[7; 32]);
        data.extend_from_slice(&[8; 64]);
        data.extend_from_slice(message);
        data
    }

    fn code(result: Result<VerifiedMessage>) -> Option<u32> {
        let Err(anchor_lang::error::Error::AnchorError(error)) = result else {
            return None;
        };
        Some(error.error_code_number)
    }

    fn n(error: EscrowError) -> Option<u32> {
        Some(error.into())
    }

    #[test]
    fn the_canonical_layout_yields_the_signer_and_the_exact_message() {
        let parsed = parse_single_signature(&canonical(&[9; 65]), 65).expect("canonical parses");
        assert_eq!(parsed.signer, Pubkey::new_from_array([7; 32]));
        assert_eq!(parsed.message, vec![9; 65]);
    }

    #[test]
    fn every_deviation_from_the_canonical_layout_has_its_own_error() {
        let good = canonical(&[9; 65]);
        let mut zero = good.clone();
        zero[0] = 0;
        assert_eq!(
            code(parse_single_signature(&zero, 65)),
            n(EscrowError::Ed25519SignatureCount)
        );
        assert_eq!(
            code(parse_single_signature(&[], 65)),
            n(EscrowError::MalformedEd25519Instruction)
        );
        assert_eq!(
            code(parse_single_signature(&good[..10], 65)),
            n(EscrowError::MalformedEd25519Instruction)
        );
        let mut padding = good.clone();
        padding[1] = 1;
        assert_eq!(
            code(parse_single_signature(&padding, 65)),
            n(EscrowError::MalformedEd25519Instruction)
        );
        for index_at in [4, 8, 14] {
            let mut other = good.clone();
            other[index_at] = 0;
            assert_eq!(
                code(parse_single_signature(&other, 65)),
                n(EscrowError::Ed25519InstructionIndex)
            );
        }
        for offset_at in [2, 6, 10] {
            let mut other = good.clone();
            other[offset_at] = other[offset_at].wrapping_add(1);
            assert_eq!(
                code(parse_single_signature(&other, 65)),
                n(EscrowError::Ed25519Offsets)
            );
        }
        assert_eq!(
            code(parse_single_signature(&good, 64)),
            n(EscrowError::Ed25519MessageLength)
        );
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            code(parse_single_signature(&longer, 65)),
            n(EscrowError::Ed25519MessageLength)
        );
    }
}
