//! SPL Token / Token-2022 helpers: program ids, associated token accounts, mint decoding,
//! `TransferChecked` building and parsing — thin wrappers over the SPL interface crates
//! (`spl-token-2022-interface`, whose instruction format and base account layouts are also SPL
//! Token's, and `spl-associated-token-account-interface`), so no instruction byte or account
//! offset is written by hand here.

use solana_sdk::instruction::{AccountMeta, Instruction};
use solana_sdk::pubkey::Pubkey;
use spl_token_2022_interface::extension::StateWithExtensions;
use spl_token_2022_interface::instruction::TokenInstruction;
use spl_token_2022_interface::state::Mint;

/// The SPL Token program.
pub const TOKEN_PROGRAM_ID: Pubkey = spl_token_interface::ID;
/// The Token-2022 program.
pub const TOKEN_2022_PROGRAM_ID: Pubkey = spl_token_2022_interface::ID;
/// The Associated Token Account program.
pub const ASSOCIATED_TOKEN_PROGRAM_ID: Pubkey = spl_associated_token_account_interface::program::ID;
/// The SPL Memo program (v2).
pub const MEMO_PROGRAM_ID: Pubkey =
    solana_sdk::pubkey!("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
/// The Lighthouse assertion program that wallets (Phantom, Solflare) inject.
pub const LIGHTHOUSE_PROGRAM_ID: Pubkey =
    solana_sdk::pubkey!("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95");
/// The system program.
pub const SYSTEM_PROGRAM_ID: Pubkey = solana_sdk::pubkey!("11111111111111111111111111111111");

/// Whether `program` is SPL Token or Token-2022.
pub fn is_token_program(program: &Pubkey) -> bool {
    *program == TOKEN_PROGRAM_ID || *program == TOKEN_2022_PROGRAM_ID
}

/// The associated token account of `owner` for `mint` under `token_program`.
pub fn associated_token_address(owner: &Pubkey, mint: &Pubkey, token_program: &Pubkey) -> Pubkey {
    spl_associated_token_account_interface::address::get_associated_token_address_with_program_id(
        owner,
        mint,
        token_program,
    )
}

/// `CreateIdempotent` of the ATA program: creates `owner`'s associated account unless it exists.
pub fn create_associated_token_account_idempotent(
    payer: &Pubkey,
    owner: &Pubkey,
    mint: &Pubkey,
    token_program: &Pubkey,
) -> Instruction {
    spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent(
        payer,
        owner,
        mint,
        token_program,
    )
}

/// A memo instruction with no signer accounts.
pub fn memo(text: &str) -> Instruction {
    Instruction {
        program_id: MEMO_PROGRAM_ID,
        accounts: Vec::new(),
        data: text.as_bytes().to_vec(),
    }
}

/// `TransferChecked` of `amount` from `source` to `destination`, authorised by `authority`
/// (single signer): the data packed by the interface's `TokenInstruction`, the accounts of its
/// `transfer_checked` builder (which only accepts the two token programs; this one addresses
/// whatever `token_program` it is given, callers check the mint's owner first).
pub fn transfer_checked(
    token_program: &Pubkey,
    source: &Pubkey,
    mint: &Pubkey,
    destination: &Pubkey,
    authority: &Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    Instruction {
        program_id: *token_program,
        accounts: vec![
            AccountMeta::new(*source, false),
            AccountMeta::new_readonly(*mint, false),
            AccountMeta::new(*destination, false),
            AccountMeta::new_readonly(*authority, true),
        ],
        data: TokenInstruction::TransferChecked { amount, decimals }.pack(),
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
/// the data is not exactly a `TransferChecked` (no trailing bytes; single-signer form, 4
/// accounts).
pub fn parse_transfer_checked(data: &[u8], accounts: &[Pubkey]) -> Option<TransferChecked> {
    let instruction = TokenInstruction::unpack(data).ok()?;
    let TokenInstruction::TransferChecked { amount, decimals } = instruction else {
        return None;
    };
    // `unpack` ignores trailing bytes (as the token programs do); a payment is its exact encoding.
    if instruction.pack() != data {
        return None;
    }
    let [source, mint, destination, authority] = *accounts else {
        return None;
    };
    Some(TransferChecked {
        source,
        mint,
        destination,
        authority,
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
        for program in [TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID] {
            let ix = transfer_checked(&program, &keys[0], &keys[1], &keys[2], &keys[3], 42, 6);
            // The interface's own builder makes the same instruction.
            let expected = spl_token_2022_interface::instruction::transfer_checked(
                &program,
                &keys[0],
                &keys[1],
                &keys[2],
                &keys[3],
                &[],
                42,
                6,
            )
            .expect("a token program");
            assert_eq!(ix, expected);
            // The encoding both token programs read: tag 12, u64 LE amount, decimals.
            assert_eq!(ix.data, [12, 42, 0, 0, 0, 0, 0, 0, 0, 6]);
            let parsed = parse_transfer_checked(&ix.data, &keys).expect("parses");
            assert_eq!(
                parsed,
                TransferChecked {
                    source: keys[0],
                    mint: keys[1],
                    destination: keys[2],
                    authority: keys[3],
                    amount: 42,
                    decimals: 6,
                }
            );
        }
    }

    #[test]
    fn other_token_instructions_are_not_transfer_checked() {
        let keys: Vec<Pubkey> = (0..4).map(|_| Pubkey::new_unique()).collect();
        assert!(parse_transfer_checked(&[3, 1, 0, 0, 0, 0, 0, 0, 0], &keys[..3]).is_none());
        assert!(parse_transfer_checked(&[12, 1, 0, 0], &keys).is_none());
        assert!(parse_transfer_checked(&[], &keys).is_none());
        // Trailing bytes, or a multisig's extra signer accounts, are refused.
        let data = [12, 1, 0, 0, 0, 0, 0, 0, 0, 6];
        assert!(parse_transfer_checked(&data, &keys).is_some());
        assert!(parse_transfer_checked(&[&data[..], &[0]].concat(), &keys).is_none());
        let five: Vec<Pubkey> = (0..5).map(|_| Pubkey::new_unique()).collect();
        assert!(parse_transfer_checked(&data, &five).is_none());
    }

    #[test]
    fn the_idempotent_ata_create_is_instruction_1_of_the_ata_program() {
        let (payer, owner, mint) = (
            Pubkey::new_unique(),
            Pubkey::new_unique(),
            Pubkey::new_unique(),
        );
        let ix =
            create_associated_token_account_idempotent(&payer, &owner, &mint, &TOKEN_PROGRAM_ID);
        assert_eq!(ix.program_id, ASSOCIATED_TOKEN_PROGRAM_ID);
        assert_eq!(ix.data, [1]);
        let keys: Vec<Pubkey> = ix.accounts.iter().map(|a| a.pubkey).collect();
        assert_eq!(
            keys,
            [
                payer,
                associated_token_address(&owner, &mint, &TOKEN_PROGRAM_ID),
                owner,
                mint,
                SYSTEM_PROGRAM_ID,
                TOKEN_PROGRAM_ID
            ]
        );
        // The derivation the ATA program checks: seeds owner, token program, mint.
        assert_eq!(
            keys[1],
            Pubkey::find_program_address(
                &[owner.as_ref(), TOKEN_PROGRAM_ID.as_ref(), mint.as_ref()],
                &ASSOCIATED_TOKEN_PROGRAM_ID,
            )
            .0
        );
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
