//! The `invalidReason` / `errorReason` codes of the exact scheme on SVM, spelled as the official
//! x402 facilitators spell them so x402 clients and servers can act on them.

/// Why an exact payment was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExactReason {
    /// The payload's scheme is not `exact`.
    UnsupportedScheme,
    /// The payload is for another network than this facilitator's.
    NetworkMismatch,
    /// Requirements lack `extra.feePayer`.
    MissingFeePayer,
    /// `extra.feePayer` is not this facilitator's key.
    FeePayerNotManagedByFacilitator,
    /// The transaction's fee payer is not `extra.feePayer`.
    FacilitatorPayerMismatch,
    /// Not base64 of a versioned transaction, or uses lookup tables we do not resolve.
    CouldNotBeDecoded,
    /// Fewer than 3 or more than 7 instructions.
    InstructionsLength,
    /// The first instruction is not `SetComputeUnitLimit` within the cap.
    ComputeLimitInstruction,
    /// The second instruction is not `SetComputeUnitPrice`.
    ComputePriceInstruction,
    /// The compute unit price exceeds the cap.
    ComputePriceTooHigh,
    /// The third instruction is not a `TransferChecked` of SPL Token or Token-2022.
    NoTransferInstruction,
    /// The fee payer appears in an instruction's accounts.
    FeePayerIncludedInInstructionAccounts,
    /// The fee payer is the transfer's authority or source.
    FeePayerTransferringFunds,
    /// The transfer's mint is not the asset.
    MintMismatch,
    /// The destination is not the associated token account of `payTo`.
    RecipientMismatch,
    /// The amount is not exactly the required amount.
    AmountMismatch,
    /// An optional instruction at position 4 is neither Memo nor Lighthouse.
    UnknownFourthInstruction,
    /// An optional instruction at position 5 is neither Memo nor Lighthouse.
    UnknownFifthInstruction,
    /// An optional instruction at position 6 is neither Memo nor Lighthouse.
    UnknownSixthInstruction,
    /// An optional instruction at position 7 is neither Memo nor Lighthouse.
    UnknownSeventhInstruction,
    /// No memo (or more than one when `extra.memo` is set).
    MemoCount,
    /// The memo is not `extra.memo`.
    MemoMismatch,
    /// The transaction requires signers other than the client and the fee payer, or the client's
    /// signature does not verify.
    InvalidSignature,
    /// The destination token account does not exist.
    ReceiverAtaNotFound,
    /// The payer's token account lacks the amount.
    InsufficientFunds,
    /// Simulation failed (expired blockhash, program error, ...).
    SimulationFailed,
    /// The same transaction is being or was just settled.
    DuplicateSettlement,
    /// The transaction failed or expired on chain.
    InvalidTransactionState,
    /// The transaction was sent but not confirmed within the timeout; it may still land.
    SettlementPending,
    /// The RPC failed while verifying.
    UnexpectedVerifyError,
    /// The RPC failed while settling.
    UnexpectedSettleError,
}

impl ExactReason {
    /// The wire code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::NetworkMismatch => "network_mismatch",
            Self::MissingFeePayer => "invalid_exact_svm_payload_missing_fee_payer",
            Self::FeePayerNotManagedByFacilitator => "fee_payer_not_managed_by_facilitator",
            Self::FacilitatorPayerMismatch => "facilitator_payer_mismatch",
            Self::CouldNotBeDecoded => "invalid_exact_svm_payload_transaction_could_not_be_decoded",
            Self::InstructionsLength => "invalid_exact_svm_payload_transaction_instructions_length",
            Self::ComputeLimitInstruction => {
                "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction"
            }
            Self::ComputePriceInstruction => {
                "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction"
            }
            Self::ComputePriceTooHigh => {
                "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high"
            }
            Self::NoTransferInstruction => "invalid_exact_svm_payload_no_transfer_instruction",
            Self::FeePayerIncludedInInstructionAccounts => {
                "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts"
            }
            Self::FeePayerTransferringFunds => {
                "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds"
            }
            Self::MintMismatch => "invalid_exact_svm_payload_mint_mismatch",
            Self::RecipientMismatch => "invalid_exact_svm_payload_recipient_mismatch",
            Self::AmountMismatch => "invalid_exact_svm_payload_amount_mismatch",
            Self::UnknownFourthInstruction => "invalid_exact_svm_payload_unknown_fourth_instruction",
            Self::UnknownFifthInstruction => "invalid_exact_svm_payload_unknown_fifth_instruction",
            Self::UnknownSixthInstruction => "invalid_exact_svm_payload_unknown_sixth_instruction",
            Self::UnknownSeventhInstruction => {
                "invalid_exact_svm_payload_unknown_seventh_instruction"
            }
            Self::MemoCount => "invalid_exact_svm_payload_memo_count",
            Self::MemoMismatch => "invalid_exact_svm_payload_memo_mismatch",
            Self::InvalidSignature => "invalid_exact_svm_payload_transaction_signature",
            Self::ReceiverAtaNotFound => "invalid_exact_svm_payload_transaction_receiver_ata_not_found",
            Self::InsufficientFunds => "insufficient_funds",
            Self::SimulationFailed => "transaction_simulation_failed",
            Self::DuplicateSettlement => "duplicate_settlement",
            Self::InvalidTransactionState => "invalid_transaction_state",
            Self::SettlementPending => "settlement_pending",
            Self::UnexpectedVerifyError => "unexpected_verify_error",
            Self::UnexpectedSettleError => "unexpected_settle_error",
        }
    }
}

impl std::fmt::Display for ExactReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection: the code, and a human-readable message for `invalidMessage` / `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ExactError {
    /// The wire code.
    pub reason: ExactReason,
    /// Detail for humans; never contains secrets.
    pub message: String,
}

impl ExactError {
    /// A rejection with a message.
    pub fn new(reason: ExactReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}
