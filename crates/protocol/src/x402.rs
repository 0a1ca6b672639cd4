//! x402 v2 types, field for field as `specs/x402-specification-v2.md` defines them.
//!
//! Unknown fields are ignored on decode (the spec's forward-compatibility rule); optional fields
//! are omitted when absent. Amounts, assets and addresses are kept as strings here because an
//! x402 challenge may list options for other chains (EVM amounts are uint256, addresses hex);
//! the Solana-specific accessors parse them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::encoding::{Amount, EncodingError, Pubkey};
use crate::network::Network;
use crate::offer::Offer;

/// The `exact` scheme name.
pub const SCHEME_EXACT: &str = "exact";
/// The x402++ session scheme name.
pub const SCHEME_SESSION: &str = "session";

/// The protocol version field; only version 2 is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct X402Version2;

impl Serialize for X402Version2 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(2)
    }
}

impl<'de> Deserialize<'de> for X402Version2 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            2 => Ok(Self),
            other => Err(serde::de::Error::custom(format!(
                "unsupported x402Version {other}: this implementation speaks x402 v2"
            ))),
        }
    }
}

/// What is being paid for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// The resource URL.
    pub url: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay for a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Scheme name (`exact`, `session`, ...).
    pub scheme: String,
    /// CAIP-2 network.
    pub network: Network,
    /// Amount in atomic units (decimal string). For `session`: the price per request.
    pub amount: String,
    /// Asset address (the SPL mint on Solana).
    pub asset: String,
    /// Recipient address (the owner of the destination token account on Solana).
    pub pay_to: String,
    /// How long the payment may take to complete.
    pub max_timeout_seconds: u64,
    /// Scheme-specific data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

impl PaymentRequirements {
    /// The amount as a u64 of atomic units (Solana token amounts).
    pub fn amount_atomic(&self) -> Result<Amount, EncodingError> {
        self.amount.parse()
    }

    /// The asset as a Solana mint address.
    pub fn asset_pubkey(&self) -> Result<Pubkey, EncodingError> {
        self.asset.parse()
    }

    /// The recipient as a Solana address.
    pub fn pay_to_pubkey(&self) -> Result<Pubkey, EncodingError> {
        self.pay_to.parse()
    }

    /// `extra` decoded as `T`, if present and of that shape.
    pub fn extra_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        self.extra
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

/// `extra` of an `exact` option on Solana.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactSvmExtra {
    /// The facilitator's fee payer; the client leaves its signature slot empty.
    pub fee_payer: Pubkey,
    /// Memo the client must attach instead of a random nonce, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

/// `extra` of a `session` option: the provider's signed offer, and who pays the fees and rent
/// of the session's transactions for an agent that holds no SOL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionExtra {
    /// The signed offer, identical to the `X-402-Offer` header.
    pub offer: Offer,
    /// A fee sponsor for this session's transactions, when the provider names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sponsor: Option<crate::sponsor::SponsorInfo>,
}

/// The body of a 402 challenge (`PAYMENT-REQUIRED`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 2.
    pub x402_version: X402Version2,
    /// Why payment is required (or why the last payment failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource.
    pub resource: ResourceInfo,
    /// The accepted ways to pay.
    pub accepts: Vec<PaymentRequirements>,
    /// Extension data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

impl PaymentRequired {
    /// The first option of the given scheme on the given network.
    pub fn option(&self, scheme: &str, network: &Network) -> Option<&PaymentRequirements> {
        self.accepts
            .iter()
            .find(|r| r.scheme == scheme && &r.network == network)
    }
}

/// The client's payment (`PAYMENT-SIGNATURE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Always 2.
    pub x402_version: X402Version2,
    /// The resource paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The option the client chose, copied from the challenge.
    pub accepted: PaymentRequirements,
    /// Scheme-specific payload (`{"transaction": base64}` for exact on Solana).
    pub payload: Value,
    /// Extension data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// `payload` of an `exact` payment on Solana.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactSvmPayload {
    /// Base64 of the partially signed versioned transaction.
    pub transaction: String,
}

/// Body of the facilitator's `POST /verify` and `POST /settle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    /// Always 2.
    pub x402_version: X402Version2,
    /// The client's payment.
    pub payment_payload: PaymentPayload,
    /// The requirements the resource server holds it to.
    pub payment_requirements: PaymentRequirements,
}

/// Answer of `POST /verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment is valid.
    pub is_valid: bool,
    /// Error code when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Human-readable detail when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The payer's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// Answer of `POST /settle`, and the body of `PAYMENT-RESPONSE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the payment settled.
    pub success: bool,
    /// Error code when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Human-readable detail when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The payer's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction signature; empty when settlement failed.
    pub transaction: String,
    /// CAIP-2 network.
    pub network: Network,
    /// Amount settled, in atomic units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Extension data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// One (version, scheme, network) a facilitator supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Always 2.
    pub x402_version: X402Version2,
    /// Scheme name.
    pub scheme: String,
    /// CAIP-2 network.
    pub network: Network,
    /// Scheme-specific data (`{"feePayer": ...}` for exact on Solana).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// The kinds of a `/supported` answer that parse as v2 [`SupportedKind`]s; the others are
/// skipped.
fn understood_kinds<'de, D>(deserializer: D) -> Result<Vec<SupportedKind>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Vec<Value> = Vec::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .filter_map(|kind| serde_json::from_value::<SupportedKind>(kind).ok())
        .collect())
}

/// Answer of `GET /supported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    /// Supported kinds. Kinds this crate does not understand (x402 v1 kinds such as
    /// `{"x402Version":1,"scheme":"exact","network":"solana-devnet"}`, which the official
    /// facilitator lists next to its v2 ones) are skipped, not an error: a facilitator that also
    /// supports something else still supports what it supports.
    #[serde(deserialize_with = "understood_kinds")]
    pub kinds: Vec<SupportedKind>,
    /// Implemented extension identifiers.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// CAIP-2 pattern (`solana:*`) to the facilitator's signer addresses.
    #[serde(default)]
    pub signers: BTreeMap<String, Vec<String>>,
}
