//! Token movements out of a session's vault. The session PDA is the vault's authority and signs.

use anchor_lang::prelude::*;
use anchor_lang::solana_program::program_pack::Pack;
use anchor_lang::Ids;
use anchor_spl::token_interface::{
    self, CloseAccount, Mint, TokenAccount, TokenInterface, TransferChecked,
};

use crate::error::EscrowError;
use crate::state::Session;

/// Transfers `amount` from the vault to `to`, signed by the session PDA. Does nothing for 0.
pub fn pay_out<'info>(
    session: &Account<'info, Session>,
    vault: &InterfaceAccount<'info, TokenAccount>,
    mint: &InterfaceAccount<'info, Mint>,
    to: &InterfaceAccount<'info, TokenAccount>,
    token_program: &Interface<'info, TokenInterface>,
    amount: u64,
) -> Result<()> {
    if amount == 0 {
        return Ok(());
    }
    let nonce_le = session.nonce.to_le_bytes();
    let bump = [session.bump];
    let seeds = session.signer_seeds(&nonce_le, &bump);
    let signer: &[&[&[u8]]] = &[&seeds];
    token_interface::transfer_checked(
        CpiContext::new_with_signer(
            token_program.key(),
            TransferChecked {
                from: vault.to_account_info(),
                mint: mint.to_account_info(),
                to: to.to_account_info(),
                authority: session.to_account_info(),
            },
            signer,
        ),
        amount,
        mint.decimals,
    )
}

/// Closes the (empty) vault, sending its rent lamports to `destination`. Transfer fees a
/// Token-2022 mint withheld in the vault are harvested to the mint first (Token-2022 refuses to
/// close an account that still holds some; harvesting is permissionless but needs the mint
/// writable, so clients pass a Token-2022 mint writable to `close` and `reclaim`).
pub fn close_vault<'info>(
    session: &Account<'info, Session>,
    vault: &InterfaceAccount<'info, TokenAccount>,
    mint: &InterfaceAccount<'info, Mint>,
    destination: &AccountInfo<'info>,
    token_program: &Interface<'info, TokenInterface>,
) -> Result<()> {
    harvest_withheld_fees(vault, mint, token_program)?;
    let nonce_le = session.nonce.to_le_bytes();
    let bump = [session.bump];
    let seeds = session.signer_seeds(&nonce_le, &bump);
    let signer: &[&[&[u8]]] = &[&seeds];
    token_interface::close_account(CpiContext::new_with_signer(
        token_program.key(),
        CloseAccount {
            account: vault.to_account_info(),
            destination: destination.clone(),
            authority: session.to_account_info(),
        },
        signer,
    ))
}

/// Transfer fees withheld in a Token-2022 `vault`; 0 for SPL Token or without the extension.
fn withheld_fees(vault: &AccountInfo) -> Result<u64> {
    use anchor_spl::token_2022::spl_token_2022::extension::transfer_fee::TransferFeeAmount;
    use anchor_spl::token_2022::spl_token_2022::extension::{
        BaseStateWithExtensions, StateWithExtensions,
    };
    use anchor_spl::token_2022::spl_token_2022::state::Account;
    if *vault.owner != anchor_spl::token_2022::ID {
        return Ok(0);
    }
    let data = vault.try_borrow_data()?;
    let state = StateWithExtensions::<Account>::unpack(&data)?;
    Ok(state
        .get_extension::<TransferFeeAmount>()
        .map_or(0, |fees| u64::from(fees.withheld_amount)))
}

/// Moves the transfer fees withheld in `vault` to the mint (Token-2022
/// `HarvestWithheldTokensToMint`, permissionless); nothing when there are none.
fn harvest_withheld_fees<'info>(
    vault: &InterfaceAccount<'info, TokenAccount>,
    mint: &InterfaceAccount<'info, Mint>,
    token_program: &Interface<'info, TokenInterface>,
) -> Result<()> {
    let vault = vault.to_account_info();
    if withheld_fees(&vault)? == 0 {
        return Ok(());
    }
    let mint = mint.to_account_info();
    require!(mint.is_writable, EscrowError::MintNotWritable);
    let harvest =
        anchor_spl::token_2022::spl_token_2022::extension::transfer_fee::instruction::harvest_withheld_tokens_to_mint(
            &token_program.key(),
            mint.key,
            &[vault.key],
        )?;
    anchor_lang::solana_program::program::invoke(&harvest, &[mint, vault])?;
    Ok(())
}

/// Size of a token account for `mint`: 165 bytes for SPL Token; for Token-2022 the base account
/// plus the account extensions the mint's extensions require (as Anchor's `init` computes it).
pub fn token_account_space(mint: &AccountInfo) -> Result<usize> {
    if *mint.owner == anchor_spl::token_2022::ID {
        use anchor_spl::token_2022::spl_token_2022::extension::{
            BaseStateWithExtensions, ExtensionType, StateWithExtensions,
        };
        use anchor_spl::token_2022::spl_token_2022::state::{Account, Mint as MintState};
        let data = mint.try_borrow_data()?;
        let state = StateWithExtensions::<MintState>::unpack(&data)?;
        let required =
            ExtensionType::get_required_init_account_extensions(&state.get_extension_types()?);
        Ok(ExtensionType::try_calculate_account_len::<Account>(
            &required,
        )?)
    } else {
        Ok(anchor_spl::token::spl_token::state::Account::LEN)
    }
}

/// Initializes the freshly allocated `vault` as a token account of `mint` owned by `session`.
pub fn initialize_vault<'info>(
    vault: &AccountInfo<'info>,
    mint: &AccountInfo<'info>,
    session: &AccountInfo<'info>,
    token_program: &Interface<'info, TokenInterface>,
) -> Result<()> {
    token_interface::initialize_account3(CpiContext::new(
        token_program.key(),
        token_interface::InitializeAccount3 {
            account: vault.clone(),
            mint: mint.clone(),
            authority: session.clone(),
        },
    ))
}

/// Where a token account keeps its amount (u64 LE), in SPL Token and Token-2022 alike.
const AMOUNT_RANGE: std::ops::Range<usize> = 64..72;

/// The token amount held by `account`, a token account of either token program: read from its
/// bytes after a CPI moved tokens, instead of deserializing the whole account (and, under
/// Token-2022, its extensions) again.
pub fn token_amount(account: &AccountInfo) -> Result<u64> {
    require!(
        anchor_spl::token_interface::TokenInterface::ids().contains(account.owner),
        anchor_lang::error::ErrorCode::AccountOwnedByWrongProgram
    );
    let data = account.try_borrow_data()?;
    let amount: [u8; 8] = data
        .get(AMOUNT_RANGE)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| error!(anchor_lang::error::ErrorCode::AccountDidNotDeserialize))?;
    Ok(u64::from_le_bytes(amount))
}
