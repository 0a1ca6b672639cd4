//! The agent's signed cumulative voucher (`X-402-Voucher`).
//!
//! A voucher of a fixed-price session is signed as the v2 [`VoucherMessage`]. A voucher of a
//! metered session also states `accepted` (JSON `"version": 3, "accepted": "1340"`): the
//! cumulative of the last receipt the agent accepted; `cumulative − accepted` is the hold of the
//! request. It is signed as the [`VoucherMessageV3`].

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use x402pp_messages::{VoucherMessage, VoucherMessageV3};

use crate::crypto::{sign, verify};
use crate::encoding::{Amount, Hash32, Pubkey, Signature};
use crate::error::ProtocolError;
use crate::metering::{check_version, METERED_VERSION};

/// A promise to pay up to `cumulative` in total on `session`; request number `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VoucherWire", into = "VoucherWire")]
pub struct Voucher {
    /// The session account address.
    pub session: Pubkey,
    /// The session's incarnation: the slot it was opened in (from the session account).
    pub opened_slot: u64,
    /// Request number: 1 for the first request, then +1 per request.
    pub seq: u64,
    /// Total authorised on the session so far (metered: `accepted` + the request's hold).
    pub cumulative: Amount,
    /// (Metered sessions only, JSON `"version": 3`.) The `cumulativeCharged` of the last receipt
    /// the agent accepted (0 before the first): settled by this voucher alone, while the hold
    /// `cumulative − accepted` is payable only through the request's receipt. `None`: a v2
    /// voucher.
    pub accepted: Option<Amount>,
    /// Hash of the last receipt the agent accepted (zeros before the first): the voucher
    /// commits to the receipt chain up to `seq − 1`.
    pub receipt_head: Hash32,
    /// Signature by the session's voucher signer over the [`VoucherMessage`] (a
    /// [`VoucherMessageV3`] when `accepted` is set).
    pub signature: Signature,
}

/// The JSON of a voucher: the v2 keys, plus `version` and `accepted` for a v3 voucher.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VoucherWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    session: Pubkey,
    opened_slot: u64,
    seq: u64,
    cumulative: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accepted: Option<Amount>,
    receipt_head: Hash32,
    signature: Signature,
}

impl TryFrom<VoucherWire> for Voucher {
    type Error = String;

    fn try_from(w: VoucherWire) -> Result<Self, String> {
        check_version(w.version, w.accepted.is_some())?;
        Ok(Self {
            session: w.session,
            opened_slot: w.opened_slot,
            seq: w.seq,
            cumulative: w.cumulative,
            accepted: w.accepted,
            receipt_head: w.receipt_head,
            signature: w.signature,
        })
    }
}

impl From<Voucher> for VoucherWire {
    fn from(v: Voucher) -> Self {
        Self {
            version: v.accepted.map(|_| u64::from(METERED_VERSION)),
            session: v.session,
            opened_slot: v.opened_slot,
            seq: v.seq,
            cumulative: v.cumulative,
            accepted: v.accepted,
            receipt_head: v.receipt_head,
            signature: v.signature,
        }
    }
}

/// The binary message a voucher's signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyVoucherMessage {
    /// A fixed-price session's voucher (105 bytes).
    V2(VoucherMessage),
    /// A metered session's voucher (113 bytes).
    V3(VoucherMessageV3),
}

impl AnyVoucherMessage {
    /// The signed bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::V2(m) => m.encode().to_vec(),
            Self::V3(m) => m.encode().to_vec(),
        }
    }

    /// The fields both versions have, as a v2 message (not the signed bytes of a v3 voucher).
    pub const fn common(&self) -> VoucherMessage {
        match *self {
            Self::V2(m) => m,
            Self::V3(m) => VoucherMessage {
                session: m.session,
                opened_slot: m.opened_slot,
                seq: m.seq,
                cumulative: m.cumulative,
                receipt_head: m.receipt_head,
            },
        }
    }
}

impl Voucher {
    /// Signs the (v2) voucher `terms` describes with the session's voucher signer.
    pub fn sign(terms: VoucherTerms, key: &SigningKey) -> Self {
        Self::signed(terms, None, key)
    }

    /// Signs the metered (v3) voucher of `terms` stating `accepted` (the cumulative of the last
    /// receipt accepted; `terms.cumulative` is `accepted` + the hold).
    pub fn sign_metered(terms: VoucherTerms, accepted: Amount, key: &SigningKey) -> Self {
        Self::signed(terms, Some(accepted), key)
    }

    fn signed(terms: VoucherTerms, accepted: Option<Amount>, key: &SigningKey) -> Self {
        let message = terms.signed_message(accepted);
        Self {
            session: terms.session,
            opened_slot: terms.opened_slot,
            seq: terms.seq,
            cumulative: terms.cumulative,
            accepted,
            receipt_head: terms.receipt_head,
            signature: sign(key, &message.encode()),
        }
    }

    /// The terms (all but `accepted` and the signature).
    pub fn terms(&self) -> VoucherTerms {
        VoucherTerms {
            session: self.session,
            opened_slot: self.opened_slot,
            seq: self.seq,
            cumulative: self.cumulative,
            receipt_head: self.receipt_head,
        }
    }

    /// The v2 message: the signed message of a fixed-price voucher. For a metered voucher these
    /// are only the fields it shares with v2; its signed bytes are [`Self::signed_message`]'s.
    pub fn message(&self) -> VoucherMessage {
        self.terms().message()
    }

    /// The message the signature covers: v3 when `accepted` is set, v2 otherwise.
    pub fn signed_message(&self) -> AnyVoucherMessage {
        self.terms().signed_message(self.accepted)
    }

    /// The hold of a metered voucher (`cumulative − accepted`; `None` for v2 or when `accepted`
    /// exceeds `cumulative`).
    pub fn hold(&self) -> Option<u64> {
        self.accepted
            .and_then(|a| self.cumulative.0.checked_sub(a.0))
    }

    /// Verifies the signature strictly against the session's voucher signer (over the message of
    /// the voucher's version) and returns the fields both versions share (see
    /// [`Self::verify_any`] for the signed message itself).
    pub fn verify(&self, voucher_signer: &Pubkey) -> Result<VoucherMessage, ProtocolError> {
        Ok(self.verify_any(voucher_signer)?.common())
    }

    /// Verifies the signature strictly against the session's voucher signer and returns the
    /// signed message. A metered voucher accepting more than it authorises is malformed.
    pub fn verify_any(&self, voucher_signer: &Pubkey) -> Result<AnyVoucherMessage, ProtocolError> {
        if self.accepted.is_some_and(|a| a > self.cumulative) {
            return Err(x402pp_messages::MessageError::AcceptedAboveCumulative.into());
        }
        let message = self.signed_message();
        verify(voucher_signer, &message.encode(), &self.signature)?;
        Ok(message)
    }
}

/// Everything in a voucher but its signature (and, for a metered voucher, `accepted`: see
/// [`Voucher::sign_metered`]).
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

    /// The metered (v3) message stating `accepted`.
    pub fn message_v3(&self, accepted: Amount) -> VoucherMessageV3 {
        VoucherMessageV3 {
            session: self.session.0,
            opened_slot: self.opened_slot,
            seq: self.seq,
            cumulative: self.cumulative.0,
            accepted: accepted.0,
            receipt_head: self.receipt_head.0,
        }
    }

    /// The message to sign: v3 with `accepted`, v2 without.
    pub fn signed_message(&self, accepted: Option<Amount>) -> AnyVoucherMessage {
        match accepted {
            None => AnyVoucherMessage::V2(self.message()),
            Some(accepted) => AnyVoucherMessage::V3(self.message_v3(accepted)),
        }
    }
}
