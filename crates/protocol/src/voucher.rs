//! The agent's signed cumulative voucher (`X-402-Voucher`).

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use x402pp_messages::VoucherMessage;

use crate::crypto::{sign, verify};
use crate::encoding::{Amount, Hash32, Pubkey, Signature};
use crate::error::ProtocolError;

/// A promise to pay up to `cumulative` in total on `session`; request number `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Voucher {
    /// The session account address.
    pub session: Pubkey,
    /// The session's incarnation: the slot it was opened in (from the session account).
    pub opened_slot: u64,
    /// Request number: 1 for the first request, then +1 per request.
    pub seq: u64,
    /// Total authorised on the session so far.
    pub cumulative: Amount,
    /// Hash of the last receipt the agent accepted (zeros before the first): the voucher
    /// commits to the receipt chain up to `seq − 1`.
    pub receipt_head: Hash32,
    /// Signature by the session's voucher signer over the [`VoucherMessage`].
    pub signature: Signature,
}

impl Voucher {
    /// Signs the voucher `terms` describes with the session's voucher signer.
    pub fn sign(terms: VoucherTerms, key: &SigningKey) -> Self {
        let message = terms.message();
        Self {
            session: terms.session,
            opened_slot: terms.opened_slot,
            seq: terms.seq,
            cumulative: terms.cumulative,
            receipt_head: terms.receipt_head,
            signature: sign(key, &message.encode()),
        }
    }

    /// The signed message.
    pub fn message(&self) -> VoucherMessage {
        VoucherTerms {
            session: self.session,
            opened_slot: self.opened_slot,
            seq: self.seq,
            cumulative: self.cumulative,
            receipt_head: self.receipt_head,
        }
        .message()
    }

    /// Verifies the signature strictly against the session's voucher signer.
    pub fn verify(&self, voucher_signer: &Pubkey) -> Result<VoucherMessage, ProtocolError> {
        let message = self.message();
        verify(voucher_signer, &message.encode(), &self.signature)?;
        Ok(message)
    }
}

/// Everything in a voucher but its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherTerms {
    /// The session account address.
    pub session: Pubkey,
    /// The session's incarnation (its `opened_slot`).
    pub opened_slot: u64,
    /// Request number.
    pub seq: u64,
    /// Total authorised so far.
    pub cumulative: Amount,
    /// Hash of the last receipt the agent accepted.
    pub receipt_head: Hash32,
}

impl VoucherTerms {
    /// The binary message the voucher signer signs.
    pub fn message(&self) -> VoucherMessage {
        VoucherMessage {
            session: self.session.0,
            opened_slot: self.opened_slot,
            seq: self.seq,
            cumulative: self.cumulative.0,
            receipt_head: self.receipt_head.0,
        }
    }
}
