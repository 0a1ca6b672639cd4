//! The Ed25519SigVerify precompile instruction in the one canonical shape the escrow program
//! accepts: one signature, all data in this instruction (indexes `u16::MAX`), offsets in the
//! standard order (header 16 bytes, public key, signature, message).

use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;

/// The Ed25519SigVerify precompile program.
pub const ED25519_PROGRAM_ID: Pubkey =
    solana_sdk::pubkey!("Ed25519SigVerify111111111111111111111111111");

const HEADER_LEN: u16 = 16;
const PUBKEY_OFFSET: u16 = HEADER_LEN;
const SIGNATURE_OFFSET: u16 = PUBKEY_OFFSET + 32;
const MESSAGE_OFFSET: u16 = SIGNATURE_OFFSET + 64;

/// An Ed25519 precompile instruction verifying `signature` by `signer` over `message`.
///
/// Messages of x402++ are at most 182 bytes, far below the u16 offset range; longer input is
/// truncated to what the offsets can address and will fail verification on chain.
pub fn verify_instruction(signer: &[u8; 32], signature: &[u8; 64], message: &[u8]) -> Instruction {
    let message_len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    let mut data = Vec::with_capacity(usize::from(MESSAGE_OFFSET).saturating_add(message.len()));
    data.extend_from_slice(&[1, 0]);
    for field in [
        SIGNATURE_OFFSET,
        u16::MAX,
        PUBKEY_OFFSET,
        u16::MAX,
        MESSAGE_OFFSET,
        message_len,
        u16::MAX,
    ] {
        data.extend_from_slice(&field.to_le_bytes());
    }
    data.extend_from_slice(signer);
    data.extend_from_slice(signature);
    data.extend_from_slice(message);
    Instruction {
        program_id: ED25519_PROGRAM_ID,
        accounts: Vec::new(),
        data,
    }
}
