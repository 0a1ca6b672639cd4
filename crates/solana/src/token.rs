//! SPL Token / Token-2022 helpers: program ids, associated token accounts, mint decoding,
//! `TransferChecked` building and parsing.
//!
//! The associated-token-account derivation and its idempotent-create instruction are small and
//! stable, so they are written here rather than pulling another interface crate.

use solana_sdk::instruction::{AccountMeta, Instruction};
use solana_sdk::pubkey::Pubkey;
use spl_token_2022_interface::extension::StateWithExtensions;
use spl_token_2022_interface::state::Mint;

/// The SPL Token program.
pub const TOKEN_PROGRAM_ID: Pubkey = spl_token_interface::ID;
/// The Token-2022 program.
pub const TOKEN_2022_PROGRAM_ID: Pubkey = spl_token_2022_interface::ID;
/// The Associated Token Account program.
pub const ASSOCIATED_TOKEN_PROGRAM_ID: Pubkey =
    solana_sdk::pubkey!("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL");
/// The SPL Memo program (v2).
pub const MEMO_PROGRAM_ID: Pubkey =
    solana_sdk::pubkey!("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
/// The Lighthouse assertion program that wallets (Phantom, Solflare) inject.
pub const LIGHTHOUSE_PROGRAM_ID: Pubkey =
    solana_sdk::pubkey!("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95");
/// The system program.
pub const SYSTEM_PROGRAM_ID: Pubkey = solana_sdk::pubkey!("11111111111111111111111111111111");

/// The `TransferChecked` instruction tag (the same in both token programs).
const TRANSFER_CHECKED_TAG: u8 = 12;

/// Whether `program` is SPL Token or Token-2022.
pub fn is_token_program(program: &Pubkey) -> bool {
    *program == TOKEN_PROGRAM_ID || *program == TOKEN_2022_PROGRAM_ID
}

/// The associated token account of `owner` for `mint` under `token_program`.
pub fn associated_token_address(owner: &Pubkey, mint: &Pubkey, token_program: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(
        &[owner.as_ref(), token_program.as_ref(), mint.as_ref()],
        &ASSOCIATED_TOKEN_PROGRAM_ID,
    )
    .0
}

/// `CreateIdempotent` of the ATA program: creates `owner`'s associated account unless it exists.
pub fn create_associated_token_account_idempotent(
    payer: &Pubkey,
    owner: &Pubkey,
    mint: &Pubkey,
    token_program: &Pubkey,
) -> Instruction {
    Instruction {
        program_id: ASSOCIATED_TOKEN_PROGRAM_ID,
        accounts: vec![
            AccountMeta::new(*payer, true),
            AccountMeta::new(associated_token_address(owner, mint, token_program), false),
            AccountMeta::new_readonly(*owner, false),
            AccountMeta::new_readonly(*mint, false),
            AccountMeta::new_readonly(SYSTEM_PROGRAM_ID, false),
            AccountMeta::new_readonly(*token_program, false),
        ],
        data: vec![1],
    }
}

/// A memo instruction with no signer accounts.
pub fn memo(text: &str) -> Instruction {
    Instruction {
        program_id: MEMO_PROGRAM_ID,
        accounts: Vec::new(),
        data: text.as_bytes().to_vec(),
    }
}

/// `TransferChecked` of `amount` from `source` to `destination`, authorised by `authority`.
pub fn transfer_checked(
    token_program: &Pubkey,
    source: &Pubkey,
    mint: &Pubkey,
    destination: &Pubkey,
    authority: &Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    let mut data = Vec::with_capacity(10);
    data.push(TRANSFER_CHECKED_TAG);
    data.extend_from_slice(&amount.to_le_bytes());
    data.push(decimals);
    Instruction {
        program_id: *token_program,
        accounts: vec![
            AccountMeta::new(*source, false),
            AccountMeta::new_readonly(*mint, false),
            AccountMeta::new(*destination, false),
            AccountMeta::new_readonly(*authority, true),
        ],
        data,
    }
}

/// The fields of a `TransferChecked` instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferChecked {
    /// Source token account.
    pub source: Pubkey,
    /// Mint.
    pub mint: Pubkey,
    /// Destination token account.
    pub destination: Pubkey,
    /// Owner or delegate that authorises the transfer.
    pub authority: Pubkey,
    /// Amount in atomic units.
    pub amount: u64,
    /// Mint decimals the instruction asserts.
    pub decimals: u8,
}

/// Parses `TransferChecked` from instruction data and its resolved account keys, or `None` when
/// the data is not exactly a `TransferChecked` (single-signer form, 4 accounts).
pub fn parse_transfer_checked(data: &[u8], accounts: &[Pubkey]) -> Option<TransferChecked> {
    let (&tag, rest) = data.split_first()?;
    if tag != TRANSFER_CHECKED_TAG || rest.len() != 9 || accounts.len() != 4 {
        return None;
    }
    let amount = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let decimals = *rest.get(8)?;
    Some(TransferChecked {
        source: accounts[0],
        mint: accounts[1],
        destination: accounts[2],
        authority: accounts[3],
        amount,
        decimals,
    })
}

/// Decimals of a mint account's data (SPL Token or Token-2022, extensions allowed).
pub fn mint_decimals(data: &[u8]) -> Option<u8> {
    StateWithExtensions::<Mint>::unpack(data)
        .ok()
        .map(|m| m.base.decimals)
}

/// Amount held by a token account's data (SPL Token or Token-2022).
pub fn token_account_amount(data: &[u8]) -> Option<u64> {
    StateWithExtensions::<spl_token_2022_interface::state::Account>::unpack(data)
        .ok()
        .map(|a| a.base.amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_checked_round_trips_through_the_parser() {
        let keys: Vec<Pubkey> = (0..4).map(|_| Pubkey::new_unique()).collect();
        let ix = transfer_checked(
            &TOKEN_PROGRAM_ID,
            &keys[0],
            &keys[1],
            &keys[2],
            &keys[3],
            42,
            6,
        );
        let parsed = parse_transfer_checked(&ix.data, &keys).expect("parses");
        assert_eq!(parsed.amount, 42);
        assert_eq!(parsed.decimals, 6);
        assert_eq!(parsed.authority, keys[3]);
    }

    #[test]
    fn other_token_instructions_are_not_transfer_checked() {
        let keys: Vec<Pubkey> = (0..4).map(|_| Pubkey::new_unique()).collect();
        assert!(parse_transfer_checked(&[3, 1, 0, 0, 0, 0, 0, 0, 0], &keys[..3]).is_none());
        assert!(parse_transfer_checked(&[12, 1, 0, 0], &keys).is_none());
        assert!(parse_transfer_checked(&[], &keys).is_none());
    }

    #[test]
    fn associated_address_depends_on_the_token_program() {
        let (owner, mint) = (Pubkey::new_unique(), Pubkey::new_unique());
        assert_ne!(
            associated_token_address(&owner, &mint, &TOKEN_PROGRAM_ID),
            associated_token_address(&owner, &mint, &TOKEN_2022_PROGRAM_ID)
        );
    }
}
