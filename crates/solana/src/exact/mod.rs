//! The x402 v2 `exact` scheme on Solana (`specs/schemes/exact/scheme_exact_svm.md`).
//!
//! - [`client`]: build and partially sign the payment transaction (compute limit, compute price,
//!   `TransferChecked` to the ATA of `payTo`, memo), fee payer = the facilitator.
//! - [`facilitator`]: verify (static layout path of the spec, every check with its official
//!   reason code, balance, simulation) and settle (fee-payer signature, send, confirm, duplicate
//!   settlement cache, a pending state distinct from failure).

pub mod client;
pub mod facilitator;
mod reason;

pub use reason::{ExactError, ExactReason};

use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::x402::{ExactSvmExtra, PaymentRequirements, SCHEME_EXACT};

/// Default compute unit limit of a payment transaction (transfer + memo use well under it).
pub const DEFAULT_COMPUTE_UNIT_LIMIT: u32 = 20_000;
/// Default compute unit price, micro-lamports per CU.
pub const DEFAULT_COMPUTE_UNIT_PRICE: u64 = crate::compute::DEFAULT_UNIT_PRICE;
/// The spec's reference cap on compute unit price for the static path: 5 lamports per CU.
pub const MAX_COMPUTE_UNIT_PRICE: u64 = 5_000_000;
/// The spec's reference cap on compute units.
pub const MAX_COMPUTE_UNITS: u32 = 400_000;

/// The exact-scheme fields of a [`PaymentRequirements`], parsed for Solana.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactRequirements {
    /// Amount in atomic units.
    pub amount: u64,
    /// Mint.
    pub asset: Pubkey,
    /// Recipient wallet (owner of the destination ATA).
    pub pay_to: Pubkey,
    /// Facilitator fee payer.
    pub fee_payer: Pubkey,
    /// Memo the client must use, if the server set a non-empty one.
    pub memo: Option<String>,
}

impl ExactRequirements {
    /// Parses the Solana exact fields of `requirements`.
    pub fn parse(requirements: &PaymentRequirements) -> Result<Self, ExactError> {
        if requirements.scheme != SCHEME_EXACT {
            return Err(ExactError::new(
                ExactReason::UnsupportedScheme,
                format!("scheme {}", requirements.scheme),
            ));
        }
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            ExactError::new(
                ExactReason::CouldNotBeDecoded,
                format!("requirements {what}: {e}"),
            )
        };
        let amount = requirements
            .amount_atomic()
            .map_err(|e| invalid("amount", &e))?
            .get();
        let asset = Pubkey::new_from_array(
            requirements
                .asset_pubkey()
                .map_err(|e| invalid("asset", &e))?
                .0,
        );
        let pay_to = Pubkey::new_from_array(
            requirements
                .pay_to_pubkey()
                .map_err(|e| invalid("payTo", &e))?
                .0,
        );
        let extra: ExactSvmExtra = requirements.extra_as().ok_or_else(|| {
            ExactError::new(ExactReason::MissingFeePayer, "extra.feePayer is required")
        })?;
        if extra.memo.as_ref().is_some_and(|m| m.len() > 256) {
            return Err(ExactError::new(
                ExactReason::MemoMismatch,
                "extra.memo exceeds 256 bytes",
            ));
        }
        Ok(Self {
            amount,
            asset,
            pay_to,
            fee_payer: Pubkey::new_from_array(extra.fee_payer.0),
            // An empty extra.memo asks for nothing (x402's own facilitator reads it so): the
            // client then writes its random nonce.
            memo: extra.memo.filter(|memo| !memo.is_empty()),
        })
    }
}
