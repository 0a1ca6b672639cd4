//! Errors of the escrow program. Each rule has its own variant so clients and tests can tell
//! exactly which check failed.

use anchor_lang::prelude::*;

/// Every way an escrow instruction can be refused.
#[error_code]
pub enum EscrowError {
    // --- Ed25519 precompile instruction -------------------------------------------------------
    /// The instruction right before this one is not an Ed25519SigVerify instruction.
    #[msg("the previous instruction must be an Ed25519SigVerify instruction")]
    MissingEd25519Instruction,
    /// The instructions sysvar account is not the real one.
    #[msg("the instructions sysvar account is not Sysvar1nstructions")]
    InvalidInstructionsSysvar,
    /// The Ed25519 instruction is shorter than its header, has accounts or non-zero padding.
    #[msg("the Ed25519 instruction is malformed")]
    MalformedEd25519Instruction,
    /// The Ed25519 instruction does not verify exactly one signature.
    #[msg("the Ed25519 instruction must verify exactly one signature")]
    Ed25519SignatureCount,
    /// An instruction index in the Ed25519 offsets is not u16::MAX (this instruction).
    #[msg("the Ed25519 offsets must point into the Ed25519 instruction itself (index u16::MAX)")]
    Ed25519InstructionIndex,
    /// The Ed25519 offsets are not the canonical layout (pubkey, signature, message after the header).
    #[msg("the Ed25519 offsets are not canonical")]
    Ed25519Offsets,
    /// The signed message does not have the exact length of the expected message type.
    #[msg("the signed message has the wrong length for its type")]
    Ed25519MessageLength,
    /// The signed message has the right length but is not a valid message of the expected type.
    #[msg("the signed message could not be decoded")]
    MalformedMessage,

    // --- Offers ---------------------------------------------------------------------------------
    /// The offer was not signed by the provider account of the instruction.
    #[msg("the offer is not signed by the provider")]
    OfferNotSignedByProvider,
    /// The offer names another provider than the provider account.
    #[msg("the offer names another provider")]
    OfferProviderMismatch,
    /// The offer is for another mint than the mint account.
    #[msg("the offer is for another mint")]
    OfferMintMismatch,
    /// The signed offer terms differ from the terms in the instruction arguments.
    #[msg("the signed offer terms differ from the instruction arguments")]
    OfferTermsMismatch,
    /// The offer's expires_at has passed.
    #[msg("the offer has expired")]
    OfferExpired,
    /// The offer's terms are unusable (zero ttl, penalty above 100 %, times out of range).
    #[msg("the offer terms are invalid")]
    InvalidOfferTerms,
    /// The deposit is below the offer's min_deposit.
    #[msg("the deposit is below the offer's minimum")]
    DepositBelowMinimum,
    /// A deposit or top-up of zero.
    #[msg("the amount must be greater than zero")]
    ZeroAmount,

    // --- Session state ----------------------------------------------------------------------------
    /// A session (or its vault) already exists at this address: pick a new nonce.
    #[msg("a session already exists for this agent, provider and nonce")]
    SessionAlreadyExists,
    /// The signer is not the session's agent.
    #[msg("only the session's agent may do this")]
    NotSessionAgent,
    /// The signer is not the session's provider.
    #[msg("only the session's provider may do this")]
    NotSessionProvider,
    /// The session has a close request; this instruction needs an open session.
    #[msg("the session is closing")]
    SessionClosing,
    /// The session's expires_at has passed; this instruction needs a live session.
    #[msg("the session has expired")]
    SessionExpired,
    /// The vault account is not the session's vault.
    #[msg("the vault is not the session's vault")]
    WrongVault,
    /// The mint account is not the session's mint.
    #[msg("the mint is not the session's mint")]
    WrongMint,
    /// The claim deadline (end + grace) has passed.
    #[msg("the claim window has closed")]
    ClaimWindowClosed,
    /// Finalize before the dispute deadline (end + 2 × grace).
    #[msg("the session cannot be finalized before its dispute window has passed")]
    FinalizeTooEarly,

    // --- Vouchers -------------------------------------------------------------------------------
    /// The voucher was not signed by the session's voucher signer.
    #[msg("the voucher is not signed by the session's voucher signer")]
    VoucherNotSignedBySessionKey,
    /// The voucher is for another session.
    #[msg("the voucher is for another session")]
    VoucherSessionMismatch,
    /// The voucher's cumulative is below what was already settled (a stale voucher).
    #[msg("the voucher's cumulative is below what was already settled")]
    VoucherNotIncreasing,
    /// The voucher's seq is not above the seq of the last claimed voucher (a replay).
    #[msg("the voucher is not newer than the last claimed voucher")]
    VoucherSeqRegressed,
    /// A dispute after the dispute deadline (end + 2 × grace).
    #[msg("the dispute window has closed")]
    DisputeWindowClosed,
    /// A voucher or receipt of an earlier session opened at the same address.
    #[msg("the signed message is for an earlier session at this address (opened_slot differs)")]
    WrongIncarnation,

    // --- Receipts and disputes ------------------------------------------------------------------
    /// The receipt was not signed by the session's provider.
    #[msg("the receipt is not signed by the session's provider")]
    ReceiptNotSignedByProvider,
    /// The receipt is for another session.
    #[msg("the receipt is for another session")]
    ReceiptSessionMismatch,
    /// The receipt's seq differs from the seq argument that addresses the dispute account.
    #[msg("the receipt's seq differs from the dispute's seq argument")]
    ReceiptSeqMismatch,
    /// This receipt seq was already disputed (its Dispute record exists).
    #[msg("this receipt was already disputed")]
    DisputeAlreadyRecorded,
    /// The receipt shows neither a latency breach nor an over-claim.
    #[msg("the receipt shows no breach")]
    NoBreach,

    // --- Arithmetic -----------------------------------------------------------------------------
    /// A checked arithmetic operation overflowed.
    #[msg("arithmetic overflow")]
    ArithmeticOverflow,

    // --- Tokens ---------------------------------------------------------------------------------
    /// The vault holds Token-2022 transfer fees that must be harvested to the mint before it can
    /// close, and the mint was not passed writable.
    #[msg("the Token-2022 mint must be writable to harvest the vault's withheld transfer fees")]
    MintNotWritable,

    // --- Rent -----------------------------------------------------------------------------------
    /// The account passed to receive the session's rent is not the one that paid it at open.
    #[msg("the rent goes back to the session's rent payer")]
    NotRentPayer,

    // --- Metered sessions (v3) ------------------------------------------------------------------
    /// A v2 voucher or receipt on a metered session, or a v3 one on a fixed-price session.
    #[msg("the signed message's version does not match the session's terms")]
    WrongMessageVersion,
    /// The claim's receipt does not follow the voucher's receipt head.
    #[msg("the receipt does not follow the voucher's receipt head")]
    ReceiptNotInVoucherChain,
    /// The claim's receipt's cumulative is not the voucher's accepted plus the receipt's amount.
    #[msg("the receipt's cumulative is not the voucher's accepted amount plus its charge")]
    ReceiptCumulativeMismatch,
    /// The receipt's amount is not the charge of its units, status and cut under the signed
    /// terms and the voucher's hold.
    #[msg("the receipt's amount is not the charge of its units under the session's terms")]
    ReceiptChargeMismatch,
    /// The receipt reports more output units than output bytes.
    #[msg("the receipt reports more output units than output bytes")]
    ReceiptUnitsExceedOutput,
}
