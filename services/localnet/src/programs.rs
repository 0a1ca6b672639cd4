//! Program ids the localnet loads, associated-token-account helpers and the native entry of
//! the escrow program.

use anchor_lang::prelude::AccountInfo;
use anchor_lang::solana_program::entrypoint::ProgramResult;
use solana_pubkey::Pubkey;

/// SPL Token.
pub const SPL_TOKEN: Pubkey = Pubkey::from_str_const("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
/// SPL Token-2022.
pub const TOKEN_2022: Pubkey =
    Pubkey::from_str_const("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
/// SPL Associated Token Account.
pub const ASSOCIATED_TOKEN: Pubkey =
    Pubkey::from_str_const("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL");
/// SPL Memo (v3; v1 `Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo` is loaded too).
pub const MEMO: Pubkey = Pubkey::from_str_const("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
/// SPL Memo v1.
pub const MEMO_V1: Pubkey = Pubkey::from_str_const("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo");
/// The x402++ session escrow program.
pub const SESSION_ESCROW: Pubkey = session_escrow::ID;

pub use x402pp_solana::token::{
    associated_token_address, create_associated_token_account_idempotent, is_token_program,
};

/// Runs the escrow program natively. Anchor's generated `entry` takes one `'info` lifetime for
/// the program id, the accounts and the data, which program-test's `processor!` (a plain
/// `fn(&Pubkey, &[AccountInfo], &[u8])`) cannot provide. Leaking copies gives `'static`
/// borrows that shorten to the accounts' lifetime, with no `unsafe`. The clones share the
/// `Rc<RefCell<_>>` lamports and data of the originals, so every write is seen by the runtime.
/// The cost is a few hundred bytes per escrow instruction for the life of the process, which is
/// acceptable for a test chain.
pub(crate) fn escrow_entry(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    data: &[u8],
) -> ProgramResult {
    let accounts: &[AccountInfo] = Box::leak(accounts.to_vec().into_boxed_slice());
    let program_id: &Pubkey = Box::leak(Box::new(*program_id));
    let data: &[u8] = Box::leak(data.to_vec().into_boxed_slice());
    session_escrow::entry(program_id, accounts, data)
}
