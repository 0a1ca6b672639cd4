//! The static layout path of the spec (§3.1) as pure functions: decode the payload's transaction
//! and check its instructions against the requirements and the sponsor's limits, every refusal
//! with its official reason code.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_sdk::message::VersionedMessage;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::x402::ExactSvmPayload;

use crate::exact::{
    ExactError, ExactReason, ExactRequirements, MAX_COMPUTE_UNITS, MAX_COMPUTE_UNIT_PRICE,
};
use crate::{compute, token};

/// Largest serialized transaction Solana accepts.
pub(super) const MAX_TRANSACTION_SIZE: usize = 1_232;

/// Caps the fee payer applies (Sponsor Acceptance Policy).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Highest compute unit price accepted, micro-lamports per CU.
    pub max_compute_unit_price: u64,
    /// Highest compute unit limit accepted.
    pub max_compute_units: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_compute_unit_price: MAX_COMPUTE_UNIT_PRICE,
            max_compute_units: MAX_COMPUTE_UNITS,
        }
    }
}

/// What a verified payment transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPayment {
    /// The transfer.
    pub transfer: token::TransferChecked,
    /// The token program of the transfer.
    pub token_program: Pubkey,
    /// The client (transfer authority), who signed.
    pub payer: Pubkey,
}

pub(super) fn reject<T>(reason: ExactReason, message: impl Into<String>) -> Result<T, ExactError> {
    Err(ExactError::new(reason, message))
}

/// Decodes the base64 transaction of an exact payload.
pub fn decode_transaction(payload: &serde_json::Value) -> Result<VersionedTransaction, ExactError> {
    let payload: ExactSvmPayload = serde_json::from_value(payload.clone())
        .map_err(|e| ExactError::new(ExactReason::CouldNotBeDecoded, format!("payload: {e}")))?;
    if payload.transaction.len() > MAX_TRANSACTION_SIZE.saturating_mul(2) {
        return reject(
            ExactReason::CouldNotBeDecoded,
            "transaction is larger than Solana allows",
        );
    }
    let bytes = STANDARD
        .decode(payload.transaction.as_bytes())
        .map_err(|e| ExactError::new(ExactReason::CouldNotBeDecoded, format!("base64: {e}")))?;
    if bytes.len() > MAX_TRANSACTION_SIZE {
        return reject(
            ExactReason::CouldNotBeDecoded,
            "transaction is larger than Solana allows",
        );
    }
    let tx: VersionedTransaction = bincode::deserialize(&bytes).map_err(|e| {
        ExactError::new(ExactReason::CouldNotBeDecoded, format!("transaction: {e}"))
    })?;
    if tx.sanitize().is_err() {
        return reject(
            ExactReason::CouldNotBeDecoded,
            "transaction does not sanitize",
        );
    }
    Ok(tx)
}

/// The static checks of the spec's Path 1, which need no chain access.
pub fn check_transaction(
    tx: &VersionedTransaction,
    req: &ExactRequirements,
    limits: Limits,
) -> Result<CheckedPayment, ExactError> {
    let message = &tx.message;
    if let VersionedMessage::V0(v0) = message {
        if !v0.address_table_lookups.is_empty() {
            return reject(
                ExactReason::CouldNotBeDecoded,
                "address lookup tables are not supported",
            );
        }
    }
    let keys = message.static_account_keys();
    if keys.first() != Some(&req.fee_payer) {
        return reject(
            ExactReason::FacilitatorPayerMismatch,
            "the fee payer must be extra.feePayer",
        );
    }
    let instructions = message.instructions();
    if !(3..=7).contains(&instructions.len()) {
        return reject(
            ExactReason::InstructionsLength,
            format!("{} instructions, expected 3 to 7", instructions.len()),
        );
    }
    let resolve = |indexes: &[u8]| -> Result<Vec<Pubkey>, ExactError> {
        indexes
            .iter()
            .map(|&i| keys.get(usize::from(i)).copied())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ExactError::new(ExactReason::CouldNotBeDecoded, "account index out of range")
            })
    };
    let program_of = |i: usize| -> Result<Pubkey, ExactError> {
        instructions
            .get(i)
            .and_then(|ix| keys.get(usize::from(ix.program_id_index)).copied())
            .ok_or_else(|| {
                ExactError::new(ExactReason::CouldNotBeDecoded, "program index out of range")
            })
    };
    let compute_budget = solana_compute_budget_interface::id();

    // 1. SetComputeUnitLimit.
    let limit_ix = &instructions[0];
    let limit = match (
        program_of(0)? == compute_budget,
        compute::parse_compute_budget(&limit_ix.data),
    ) {
        (true, Some(ComputeBudgetInstruction::SetComputeUnitLimit(limit))) => limit,
        _ => {
            return reject(
                ExactReason::ComputeLimitInstruction,
                "instruction 1 must be SetComputeUnitLimit",
            )
        }
    };
    if limit > limits.max_compute_units {
        return reject(
            ExactReason::ComputeLimitInstruction,
            format!(
                "compute unit limit {limit} exceeds {}",
                limits.max_compute_units
            ),
        );
    }
    // 2. SetComputeUnitPrice.
    let price = match (
        program_of(1)? == compute_budget,
        compute::parse_compute_budget(&instructions[1].data),
    ) {
        (true, Some(ComputeBudgetInstruction::SetComputeUnitPrice(price))) => price,
        _ => {
            return reject(
                ExactReason::ComputePriceInstruction,
                "instruction 2 must be SetComputeUnitPrice",
            )
        }
    };
    if price > limits.max_compute_unit_price {
        return reject(
            ExactReason::ComputePriceTooHigh,
            format!(
                "compute unit price {price} exceeds {}",
                limits.max_compute_unit_price
            ),
        );
    }
    // 3. TransferChecked.
    let token_program = program_of(2)?;
    let transfer = if token::is_token_program(&token_program) {
        token::parse_transfer_checked(&instructions[2].data, &resolve(&instructions[2].accounts)?)
    } else {
        None
    };
    let Some(transfer) = transfer else {
        return reject(
            ExactReason::NoTransferInstruction,
            "instruction 3 must be a TransferChecked",
        );
    };
    if transfer.authority == req.fee_payer || transfer.source == req.fee_payer {
        return reject(
            ExactReason::FeePayerTransferringFunds,
            "the fee payer may not be the transfer's authority or source",
        );
    }
    if transfer.mint != req.asset {
        return reject(
            ExactReason::MintMismatch,
            format!("mint {} is not {}", transfer.mint, req.asset),
        );
    }
    let destination = token::associated_token_address(&req.pay_to, &req.asset, &token_program);
    if transfer.destination != destination {
        return reject(
            ExactReason::RecipientMismatch,
            format!(
                "destination {} is not the ATA {destination} of payTo",
                transfer.destination
            ),
        );
    }
    if transfer.amount != req.amount {
        return reject(
            ExactReason::AmountMismatch,
            format!("amount {} is not {}", transfer.amount, req.amount),
        );
    }
    // 4-7. Only memo or Lighthouse.
    let mut memos = Vec::new();
    for (i, ix) in instructions.iter().enumerate().skip(3) {
        let program = program_of(i)?;
        if program == token::MEMO_PROGRAM_ID {
            memos.push(ix.data.as_slice());
        } else if program != token::LIGHTHOUSE_PROGRAM_ID {
            let reason = match i {
                3 => ExactReason::UnknownFourthInstruction,
                4 => ExactReason::UnknownFifthInstruction,
                5 => ExactReason::UnknownSixthInstruction,
                _ => ExactReason::UnknownSeventhInstruction,
            };
            return reject(
                reason,
                format!(
                    "instruction {} calls {program}, expected Memo or Lighthouse",
                    i.saturating_add(1)
                ),
            );
        }
    }
    check_memos(req.memo.as_deref(), &memos)?;
    // Fee payer isolation: in no instruction's accounts, never a program.
    for (i, ix) in instructions.iter().enumerate() {
        if program_of(i)? == req.fee_payer || resolve(&ix.accounts)?.contains(&req.fee_payer) {
            return reject(
                ExactReason::FeePayerIncludedInInstructionAccounts,
                format!(
                    "the fee payer appears in instruction {}",
                    i.saturating_add(1)
                ),
            );
        }
    }
    // Signer set: exactly the fee payer and the transfer authority, and the client signed.
    let header = message.header();
    if header.num_required_signatures != 2 || keys.get(1) != Some(&transfer.authority) {
        return reject(
            ExactReason::InvalidSignature,
            "signers must be exactly the fee payer and the transfer authority",
        );
    }
    let client_signature = tx.signatures.get(1).ok_or_else(|| {
        ExactError::new(ExactReason::InvalidSignature, "missing client signature")
    })?;
    if !client_signature.verify(transfer.authority.as_ref(), &message.serialize()) {
        return reject(
            ExactReason::InvalidSignature,
            "the client's signature does not verify",
        );
    }
    Ok(CheckedPayment {
        transfer,
        token_program,
        payer: transfer.authority,
    })
}

/// The shortest memo accepted as the client's random nonce when `extra.memo` is absent: the
/// spec's "random nonce (at least 16 bytes, hex-encoded for UTF-8 compliance)".
pub const MIN_NONCE_MEMO_BYTES: usize = 16;

/// The memo rules (spec §3.1): with `extra.memo`, exactly one memo and its data equal to it
/// (`memo_count`, `memo_mismatch`); without it (an empty `extra.memo` counts as none, as x402's
/// own facilitator reads it), at least one memo (`memo_count`) and each one UTF-8 of at least
/// [`MIN_NONCE_MEMO_BYTES`] (`memo_mismatch`): the nonce that makes concurrent payments with
/// identical terms distinct transactions. An empty memo lands on chain (the Memo program
/// accepts empty data) but identifies nothing.
fn check_memos(required: Option<&str>, memos: &[&[u8]]) -> Result<(), ExactError> {
    match (required.filter(|memo| !memo.is_empty()), memos) {
        (Some(expected), [memo]) if *memo == expected.as_bytes() => Ok(()),
        (Some(_), [_]) => reject(ExactReason::MemoMismatch, "the memo is not extra.memo"),
        (Some(_), _) => reject(
            ExactReason::MemoCount,
            format!(
                "{} memos; exactly one equal to extra.memo is required",
                memos.len()
            ),
        ),
        (None, []) => reject(
            ExactReason::MemoCount,
            "a memo with a random nonce is required",
        ),
        (None, memos) => {
            for memo in memos {
                if memo.len() < MIN_NONCE_MEMO_BYTES || std::str::from_utf8(memo).is_err() {
                    return reject(
                        ExactReason::MemoMismatch,
                        format!(
                            "a memo of {} bytes is not a nonce: without extra.memo each memo must \
                             be UTF-8 of at least {MIN_NONCE_MEMO_BYTES} bytes",
                            memo.len()
                        ),
                    );
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(required: Option<&str>, memos: &[&[u8]]) -> Option<ExactReason> {
        check_memos(required, memos).err().map(|e| e.reason)
    }

    #[test]
    fn memos_follow_the_spec_and_an_empty_one_never_passes() {
        let nonce = b"0123456789abcdef0123456789abcdef";
        assert_eq!(reason(None, &[nonce]), None);
        assert_eq!(reason(None, &[b"0123456789abcdef"]), None);
        assert_eq!(reason(None, &[]), Some(ExactReason::MemoCount));
        for bad in [&b""[..], b"0123456789abcde", b"\xff0123456789abcdef"] {
            assert_eq!(reason(None, &[bad]), Some(ExactReason::MemoMismatch));
            assert_eq!(reason(None, &[nonce, bad]), Some(ExactReason::MemoMismatch));
            assert_eq!(reason(Some(""), &[bad]), Some(ExactReason::MemoMismatch));
        }
        assert_eq!(reason(Some("inv-1"), &[b"inv-1"]), None);
        assert_eq!(
            reason(Some("inv-1"), &[b""]),
            Some(ExactReason::MemoMismatch)
        );
        assert_eq!(
            reason(Some("inv-1"), &[b"inv-2"]),
            Some(ExactReason::MemoMismatch)
        );
        assert_eq!(reason(Some("inv-1"), &[]), Some(ExactReason::MemoCount));
        assert_eq!(
            reason(Some("inv-1"), &[b"inv-1", b"inv-1"]),
            Some(ExactReason::MemoCount)
        );
    }
}
