//! The provider's signed offer (`X-402-Offer`, and `extra.offer` of the `session` option).
//!
//! The signature covers the binary [`OfferMessage`], not the JSON: `network`, `escrowProgram`,
//! `intentId` are routing information checked by the agent, and `resource` is bound through its
//! sha256. A **metered** offer (`"version": 3` and `metering`, see [`crate::metering`]) is signed
//! as the [`OfferMessageV3`] instead: the v2 fields (`pricePerRequest` is the base) followed by the
//! usage prices.

use std::fmt;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x402pp_messages::{OfferMessage, OfferMessageV3};

use crate::crypto::{pubkey_of, sha256, sign, verify};
use crate::encoding::{Amount, Hash32, Id16, Pubkey, Signature};
use crate::error::ProtocolError;
use crate::intent::Intent;
use crate::metering::{offer_fields, MeteringTerms};
use crate::network::Network;

/// An uptime percentage with at most two decimals, held as basis points (99.5 % = 9 950).
///
/// It is a JSON number of percent on the wire (`99.5`), in an intent only: offers v2 no longer
/// promise uptime (nothing measured or enforced it); the agent keeps it as its own threshold for
/// the uptime it measures. Numbers with more than two decimals or outside 0–100 are rejected
/// rather than rounded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UptimePercent(u16);

impl UptimePercent {
    /// From basis points; `None` above 10 000.
    pub const fn from_bps(bps: u16) -> Option<Self> {
        if bps <= 10_000 {
            Some(Self(bps))
        } else {
            None
        }
    }

    /// The value in basis points.
    pub const fn bps(self) -> u16 {
        self.0
    }

    /// From a percentage such as `99.5`.
    pub fn from_percent(percent: f64) -> Result<Self, String> {
        let scaled = percent * 100.0;
        let rounded = scaled.round();
        if !(0.0..=10_000.0).contains(&rounded) || (scaled - rounded).abs() > 1e-6 {
            return Err(format!(
                "{percent} is not a percentage in 0..=100 with at most 2 decimals"
            ));
        }
        // In range 0..=10_000 and integral, checked above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Self(rounded as u16))
    }

    /// The value as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Debug for UptimePercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

impl Serialize for UptimePercent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.percent())
    }
}

impl<'de> Deserialize<'de> for UptimePercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_percent(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// SLA terms the provider commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferSla {
    /// The slowest response the provider promises, in milliseconds, measured from the voucher's
    /// acceptance to the response body being ready.
    pub max_latency_ms: u32,
    /// The largest request body the latency promise covers (0: no bound); a larger request is
    /// served, its receipt says `slaCovered: false`.
    pub max_input_bytes: u32,
    /// Share of the price refunded per latency breach, in basis points (≤ 10 000).
    pub latency_penalty_bps: u16,
}

/// Everything in an offer but its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferTerms {
    /// Random id, signed.
    pub offer_id: Id16,
    /// The intent this offer answers, when the agent sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_id: Option<Id16>,
    /// The resource URL; its sha256 is signed.
    pub resource: String,
    /// The provider's key: the signer and the payee.
    pub provider: Pubkey,
    /// CAIP-2 network of the escrow.
    pub network: Network,
    /// The SPL mint.
    pub asset: Pubkey,
    /// The escrow program id.
    pub escrow_program: Pubkey,
    /// Price per successful request, atomic units; the **base** of a metered offer (charged per
    /// successful request on top of the units).
    pub price_per_request: Amount,
    /// Smallest accepted deposit, atomic units.
    pub min_deposit: Amount,
    /// Session lifetime.
    pub session_ttl_secs: u64,
    /// Claim window after expiry or close request.
    pub grace_secs: u64,
    /// SLA terms.
    pub sla: OfferSla,
    /// Unix seconds after which the offer cannot open a session.
    pub expires_at: i64,
    /// The usage prices of a metered offer (JSON `"version": 3` and `metering`); `None` for a
    /// fixed-price (v2) offer, whose JSON has neither key.
    #[serde(
        flatten,
        serialize_with = "offer_fields::serialize",
        deserialize_with = "offer_fields::deserialize"
    )]
    pub metering: Option<MeteringTerms>,
}

/// The binary message an offer's signature covers: v2 for a fixed-price offer, v3 for a metered
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyOfferMessage {
    /// A fixed-price offer (177 bytes).
    V2(OfferMessage),
    /// A metered offer (206 bytes).
    V3(OfferMessageV3),
}

impl AnyOfferMessage {
    /// The v2 fields (for a metered offer, `price_per_request` is the base).
    pub const fn offer(&self) -> &OfferMessage {
        match self {
            Self::V2(offer) => offer,
            Self::V3(metered) => &metered.offer,
        }
    }

    /// The usage prices of a metered offer.
    pub const fn metering(&self) -> Option<&x402pp_messages::Metering> {
        match self {
            Self::V2(_) => None,
            Self::V3(metered) => Some(&metered.metering),
        }
    }

    /// The signed bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::V2(offer) => offer.encode().to_vec(),
            Self::V3(metered) => metered.encode().to_vec(),
        }
    }
}

impl OfferTerms {
    /// The v2 fields of the signed message: the whole message of a fixed-price offer, and the
    /// first part (with the v3 tag left out) of a metered one, whose signed bytes are
    /// [`Self::signed_message`]'s.
    pub fn message(&self) -> Result<OfferMessage, ProtocolError> {
        if self.sla.latency_penalty_bps > 10_000 {
            return Err(ProtocolError::Unsignable {
                field: "sla.latencyPenaltyBps",
                reason: format!("{} exceeds 10000", self.sla.latency_penalty_bps),
            });
        }
        Ok(OfferMessage {
            provider: self.provider.0,
            mint: self.asset.0,
            price_per_request: self.price_per_request.0,
            min_deposit: self.min_deposit.0,
            session_ttl_secs: self.session_ttl_secs,
            grace_secs: self.grace_secs,
            max_latency_ms: self.sla.max_latency_ms,
            max_input_bytes: self.sla.max_input_bytes,
            latency_penalty_bps: self.sla.latency_penalty_bps,
            expires_at: self.expires_at,
            offer_id: self.offer_id.0,
            resource_hash: sha256(&[self.resource.as_bytes()]),
        })
    }

    /// The binary message the provider signs: [`OfferMessage`] for a fixed-price offer,
    /// [`OfferMessageV3`] for a metered one, whose terms must be usable (a unit size above 0, a
    /// maximum above 0 and at least the base).
    pub fn signed_message(&self) -> Result<AnyOfferMessage, ProtocolError> {
        let offer = self.message()?;
        let Some(terms) = self.metering else {
            return Ok(AnyOfferMessage::V2(offer));
        };
        let metering = terms.metering();
        if !metering.is_valid(offer.price_per_request) {
            return Err(ProtocolError::Unsignable {
                field: "metering",
                reason: format!(
                    "unitSize {} must be above 0 and maxPerRequest {} above 0 and at least the \
                     base {}",
                    metering.unit_size, metering.max_per_request, offer.price_per_request
                ),
            });
        }
        Ok(AnyOfferMessage::V3(OfferMessageV3 { offer, metering }))
    }

    /// The most one request can cost: `maxPerRequest` of a metered offer, the price of a
    /// fixed-price one. It is the request's price for x402 (the `session` option's `amount`) and
    /// what an intent's `maxPricePerRequest` must cover.
    pub fn max_per_request(&self) -> Amount {
        self.metering
            .map_or(self.price_per_request, |m| m.max_per_request)
    }

    /// Whether this offer answers `intent`: it echoes the intent's id and took it as its own
    /// signed `offer_id`, so the provider's signature covers the binding.
    pub fn answers(&self, intent: &Intent) -> bool {
        self.intent_id == Some(intent.intent_id) && self.offer_id == intent.intent_id
    }

    /// Why these terms do not meet `intent`, if they do not.
    pub fn unmet_by(&self, intent: &Intent) -> Option<String> {
        if self.network != intent.network {
            return Some(format!(
                "network {} is not {}",
                self.network, intent.network
            ));
        }
        if self.asset != intent.asset {
            return Some(format!("asset {} is not {}", self.asset, intent.asset));
        }
        if self.max_per_request() > intent.max_price_per_request {
            return Some(match self.metering {
                None => format!(
                    "price {} exceeds the intent's maximum {}",
                    self.price_per_request, intent.max_price_per_request
                ),
                Some(m) => format!(
                    "metered maximum price per request {} exceeds the intent's maximum {}",
                    m.max_per_request, intent.max_price_per_request
                ),
            });
        }
        if self.sla.max_latency_ms > intent.sla.max_latency_ms {
            return Some(format!(
                "promised latency {} ms exceeds the intent's {} ms",
                self.sla.max_latency_ms, intent.sla.max_latency_ms
            ));
        }
        None
    }
}

/// A signed offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The terms.
    #[serde(flatten)]
    pub terms: OfferTerms,
    /// The provider's ed25519 signature over the [`OfferMessage`] ([`OfferMessageV3`] for a
    /// metered offer).
    pub signature: Signature,
}

impl Offer {
    /// Signs `terms` with the provider's key; the key must be `terms.provider`.
    pub fn sign(terms: OfferTerms, key: &SigningKey) -> Result<Self, ProtocolError> {
        let signer = pubkey_of(key);
        if signer != terms.provider {
            return Err(ProtocolError::WrongSigner {
                expected: terms.provider.to_string(),
                actual: signer.to_string(),
            });
        }
        let signature = sign(key, &terms.signed_message()?.encode());
        Ok(Self { terms, signature })
    }

    /// Verifies the provider's signature (strictly) and returns the v2 fields of the signed
    /// message (for a metered offer: the base fields; [`Self::verify_any`] gives the metering).
    pub fn verify(&self) -> Result<OfferMessage, ProtocolError> {
        Ok(*self.verify_any()?.offer())
    }

    /// Verifies the provider's signature (strictly) over the message of the offer's version
    /// and returns that message.
    pub fn verify_any(&self) -> Result<AnyOfferMessage, ProtocolError> {
        let message = self.terms.signed_message()?;
        verify(&self.terms.provider, &message.encode(), &self.signature)?;
        Ok(message)
    }

    /// sha256 of the signed message (177 or 206 bytes): what the escrow stores as `offer_hash`.
    pub fn offer_hash(&self) -> Result<Hash32, ProtocolError> {
        Ok(Hash32(sha256(&[&self.terms.signed_message()?.encode()])))
    }

    /// Whether the offer can no longer open a session at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.terms.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_keeps_two_decimals_exactly() {
        assert_eq!(
            UptimePercent::from_percent(99.5).map(UptimePercent::bps),
            Ok(9_950)
        );
        assert_eq!(
            UptimePercent::from_percent(99.99).map(UptimePercent::bps),
            Ok(9_999)
        );
        assert_eq!(
            UptimePercent::from_percent(100.0).map(UptimePercent::bps),
            Ok(10_000)
        );
        assert!(UptimePercent::from_percent(99.995).is_err());
        assert!(UptimePercent::from_percent(100.01).is_err());
        assert!(UptimePercent::from_percent(-1.0).is_err());
        assert!(UptimePercent::from_percent(f64::NAN).is_err());
        let json = serde_json::to_string(&UptimePercent(9_950)).expect("serialises");
        assert_eq!(json, "99.5");
    }
}
