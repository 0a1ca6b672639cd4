//! The agent's signed cumulative voucher (`X-402-Voucher`).

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use x402pp_messages::VoucherMessage;

use crate::crypto::{sign, verify};
use crate::encoding::{Amount, Pubkey, Signature};
use crate::error::ProtocolError;

/// A promise to pay up to `cumulative` in total on `session`; request number `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Voucher {
    /// The session account address.
    pub session: Pubkey,
    /// Request number: 1 for the first request, then +1 per request.
    pub seq: u64,
    /// Total authorised on the session so far.
    pub cumulative: Amount,
    /// Signature by the session's voucher signer over the [`VoucherMessage`].
    pub signature: Signature,
}

impl Voucher {
    /// Signs a voucher with the session's voucher signer.
    pub fn sign(session: Pubkey, seq: u64, cumulative: Amount, key: &SigningKey) -> Self {
        let message = VoucherMessage {
            session: session.0,
            seq,
            cumulative: cumulative.0,
        };
        Self {
            session,
            seq,
            cumulative,
            signature: sign(key, &message.encode()),
        }
    }

    /// The signed message.
    pub fn message(&self) -> VoucherMessage {
        VoucherMessage {
            session: self.session.0,
            seq: self.seq,
            cumulative: self.cumulative.0,
        }
    }

    /// Verifies the signature strictly against the session's voucher signer.
    pub fn verify(&self, voucher_signer: &Pubkey) -> Result<VoucherMessage, ProtocolError> {
        let message = self.message();
        verify(voucher_signer, &message.encode(), &self.signature)?;
        Ok(message)
    }
}
