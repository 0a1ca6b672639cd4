//! Creation of the program's PDAs without Anchor's `init`.
//!
//! Anchor 1.x `init` creates an account that already holds lamports with the system program's
//! `CreateAccountAllowPrefund` instruction, which clusters running agave 3.1 do not have yet.
//! Anyone can send lamports to a predictable PDA address, so with `init` a provider could block
//! every dispute of a receipt by pre-funding its Dispute PDA with one lamport. This helper uses
//! the classic, universally supported path instead: `create_account` when the address is empty,
//! otherwise top up the rent, `allocate` and `assign` (the PDA signs). It also turns "already
//! exists" into a specific error instead of a system-program failure.

use anchor_lang::prelude::*;
use anchor_lang::system_program::{self, Allocate, Assign, CreateAccount, Transfer};

use crate::error::EscrowError;

/// Creates `target` (a PDA of `signer_seeds`) with `space` bytes owned by `owner`, paid by
/// `payer`. Fails with `exists` when `target` already belongs to a program or holds data.
pub fn create_pda_account<'info>(
    payer: &AccountInfo<'info>,
    target: &AccountInfo<'info>,
    system: &AccountInfo<'info>,
    space: usize,
    owner: &Pubkey,
    signer_seeds: &[&[u8]],
    exists: EscrowError,
) -> Result<()> {
    if *target.owner != system_program::ID || !target.data_is_empty() {
        return Err(exists.into());
    }
    let space_u64 = u64::try_from(space).map_err(|_| error!(EscrowError::ArithmeticOverflow))?;
    let required = Rent::get()?.minimum_balance(space).max(1);
    let current = target.lamports();
    let signer: &[&[&[u8]]] = &[signer_seeds];
    if current == 0 {
        return system_program::create_account(
            CpiContext::new_with_signer(
                system.key(),
                CreateAccount {
                    from: payer.clone(),
                    to: target.clone(),
                },
                signer,
            ),
            required,
            space_u64,
            owner,
        );
    }
    let shortfall = required.saturating_sub(current);
    if shortfall > 0 {
        system_program::transfer(
            CpiContext::new(
                system.key(),
                Transfer {
                    from: payer.clone(),
                    to: target.clone(),
                },
            ),
            shortfall,
        )?;
    }
    system_program::allocate(
        CpiContext::new_with_signer(
            system.key(),
            Allocate {
                account_to_allocate: target.clone(),
            },
            signer,
        ),
        space_u64,
    )?;
    system_program::assign(
        CpiContext::new_with_signer(
            system.key(),
            Assign {
                account_to_assign: target.clone(),
            },
            signer,
        ),
        owner,
    )
}

/// Writes `value` (discriminator + borsh) into a freshly created program account.
pub fn write_account<T: AccountSerialize>(target: &AccountInfo, value: &T) -> Result<()> {
    let mut data = target.try_borrow_mut_data()?;
    let mut cursor: &mut [u8] = &mut data;
    value.try_serialize(&mut cursor)
}
