//! Errors: the internal [`ProtocolError`] and the snake_case wire codes of [`ErrorCode`], kept
//! apart and mapped in one place ([`ProtocolError::code`]).
//!
//! Every HTTP error in x402++ is a JSON [`ErrorBody`] `{ "error": "<code>", "message": "..." }`
//! with the status [`ErrorCode::http_status`] gives.

use serde::{Deserialize, Serialize};

use crate::encoding::EncodingError;
use crate::network::NetworkError;
use x402pp_messages::MessageError;

/// The wire error codes of x402++, serialised in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No payment was sent for a paid route.
    PaymentRequired,
    /// A header or body could not be decoded (bad base64, JSON, field or length).
    MalformedRequest,
    /// A header is larger than [`crate::headers::MAX_HEADER_LEN`].
    HeaderTooLarge,
    /// A signature did not verify against the key it must come from.
    InvalidSignature,
    /// The voucher does not follow the session: wrong session, seq or increment.
    InvalidVoucher,
    /// Another request already used this voucher sequence number.
    VoucherConflict,
    /// The voucher was accepted and its request is still being served (or was cut off by a
    /// provider crash and is not yet recovered); resend the same voucher after `Retry-After`
    /// seconds to get its receipt.
    RequestInFlight,
    /// The voucher's cumulative amount exceeds what is left of the deposit; top up.
    InsufficientDeposit,
    /// A metered voucher's hold (`cumulative − accepted`) is below the base or above
    /// `maxPerRequest`; the voucher was not used. `details: {base, maxPerRequest, hold}`.
    InvalidHold,
    /// No open session with this id exists for this provider.
    SessionNotFound,
    /// The session is closing, closed or past its expiry.
    SessionClosed,
    /// The session belongs to another provider, mint or program.
    SessionMismatch,
    /// The agent's intent cannot be met by any offer of this provider.
    NoAcceptableOffer,
    /// The offer has expired or its terms do not match.
    InvalidOffer,
    /// A receipt is malformed, inconsistent or does not continue the chain.
    InvalidReceipt,
    /// The network or asset is not supported here.
    UnsupportedNetwork,
    /// Too many requests from this client or session; retry after `Retry-After` seconds.
    RateLimited,
    /// An `exact` payment's `payment-identifier` was already used for another payment (or
    /// another resource): ids are per payment, a retry resends the same payment.
    PaymentIdConflict,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The request (its body) was not received within the server's read timeout.
    RequestTimeout,
    /// The blockchain RPC is unreachable or failing; retry later.
    ChainUnavailable,
    /// The x402 facilitator the provider uses for `exact` is unreachable or failing (transport
    /// error, 5xx, rate limited, an answer that is no verdict); retry later.
    FacilitatorUnavailable,
    /// The route is serving as many requests as it can answer within its latency promise; the
    /// voucher was not accepted (nothing charged); retry after `Retry-After` seconds.
    Overloaded,
    /// A fee sponsor refused to pay for a transaction (not one it sponsors, over its limits,
    /// or failing); nothing was signed or sent.
    SponsorRefused,
    /// An unexpected server-side failure; details are logged, not returned.
    InternalError,
}

impl ErrorCode {
    /// The HTTP status the code is returned with.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::MalformedRequest => 400,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::HeaderTooLarge => 431,
            Self::VoucherConflict | Self::RequestInFlight | Self::PaymentIdConflict => 409,
            Self::RateLimited => 429,
            Self::SponsorRefused => 403,
            Self::ChainUnavailable | Self::FacilitatorUnavailable | Self::Overloaded => 503,
            Self::InternalError => 500,
            Self::PaymentRequired
            | Self::InvalidSignature
            | Self::InvalidVoucher
            | Self::InsufficientDeposit
            | Self::InvalidHold
            | Self::SessionNotFound
            | Self::SessionClosed
            | Self::SessionMismatch
            | Self::NoAcceptableOffer
            | Self::InvalidOffer
            | Self::InvalidReceipt
            | Self::UnsupportedNetwork => 402,
        }
    }

    /// The snake_case code string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentRequired => "payment_required",
            Self::MalformedRequest => "malformed_request",
            Self::HeaderTooLarge => "header_too_large",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidVoucher => "invalid_voucher",
            Self::VoucherConflict => "voucher_conflict",
            Self::RequestInFlight => "request_in_flight",
            Self::InsufficientDeposit => "insufficient_deposit",
            Self::InvalidHold => "invalid_hold",
            Self::SessionNotFound => "session_not_found",
            Self::SessionClosed => "session_closed",
            Self::SessionMismatch => "session_mismatch",
            Self::NoAcceptableOffer => "no_acceptable_offer",
            Self::InvalidOffer => "invalid_offer",
            Self::InvalidReceipt => "invalid_receipt",
            Self::UnsupportedNetwork => "unsupported_network",
            Self::RateLimited => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::ChainUnavailable => "chain_unavailable",
            Self::PaymentIdConflict => "payment_id_conflict",
            Self::FacilitatorUnavailable => "facilitator_unavailable",
            Self::Overloaded => "overloaded",
            Self::SponsorRefused => "sponsor_refused",
            Self::InternalError => "internal_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every x402++ error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub error: ErrorCode,
    /// Human-readable explanation; never contains secrets or internals.
    pub message: String,
    /// Code-specific data, e.g. the deposit and top-up needed for `insufficient_deposit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// A body with a code and message and no details.
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            details: None,
        }
    }
}

/// Everything that can go wrong decoding, checking or verifying protocol data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A header value exceeds the size limit.
    #[error("header {name} is {len} bytes, the limit is {limit}")]
    HeaderTooLarge {
        /// Header name.
        name: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A header value is neither base64 of JSON nor raw JSON.
    #[error("header {name} is not base64 of JSON: {reason}")]
    HeaderEncoding {
        /// Header name.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// A header's JSON does not have the expected shape.
    #[error("header {name} has invalid JSON: {reason}")]
    HeaderJson {
        /// Header name.
        name: &'static str,
        /// What failed (serde's message, with the field path).
        reason: String,
    },
    /// A primitive value (key, hash, amount) is malformed.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// A network id is malformed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A binary message is malformed.
    #[error("malformed signed message: {0}")]
    Message(#[from] MessageError),
    /// A field value cannot be represented in the signed layout.
    #[error("field {field} cannot be signed: {reason}")]
    Unsignable {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The public key is not a valid ed25519 point.
    #[error("{0} is not a valid ed25519 public key")]
    InvalidPublicKey(String),
    /// The signature does not verify (strictly) against the expected signer.
    #[error("signature does not verify for {signer}")]
    BadSignature {
        /// The key that should have signed.
        signer: String,
    },
    /// The signing key is not the key the message names as its signer.
    #[error("signing key {actual} is not the message's signer {expected}")]
    WrongSigner {
        /// The key named in the message.
        expected: String,
        /// The key that tried to sign.
        actual: String,
    },
    /// A receipt's unsigned fields disagree with its signed ones.
    #[error("receipt is inconsistent: {0}")]
    InconsistentReceipt(String),
    /// A value could not be serialised to JSON.
    #[error("cannot serialise to JSON: {0}")]
    Serialize(String),
    /// A receipt does not continue the session's chain.
    #[error("receipt does not continue the chain: {0}")]
    BrokenChain(String),
    /// A receipt of the other version than the caller handles: a metered (v3) receipt where a
    /// fixed-price (v2) one is expected, or the reverse.
    #[error("receipt is version {found}, version {expected} was expected")]
    ReceiptVersion {
        /// The version the caller handles.
        expected: u8,
        /// The receipt's version.
        found: u8,
    },
}

impl ProtocolError {
    /// The wire code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::HeaderTooLarge { .. } => ErrorCode::HeaderTooLarge,
            Self::HeaderEncoding { .. }
            | Self::HeaderJson { .. }
            | Self::Encoding(_)
            | Self::Network(_)
            | Self::Message(_)
            | Self::Unsignable { .. }
            | Self::InvalidPublicKey(_) => ErrorCode::MalformedRequest,
            Self::BadSignature { .. } | Self::WrongSigner { .. } => ErrorCode::InvalidSignature,
            Self::InconsistentReceipt(_) | Self::BrokenChain(_) | Self::ReceiptVersion { .. } => {
                ErrorCode::InvalidReceipt
            }
            Self::Serialize(_) => ErrorCode::InternalError,
        }
    }

    /// The JSON body this error is reported with.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_snake_case_names() {
        for code in [
            ErrorCode::PaymentRequired,
            ErrorCode::VoucherConflict,
            ErrorCode::NoAcceptableOffer,
            ErrorCode::ChainUnavailable,
            ErrorCode::FacilitatorUnavailable,
            ErrorCode::PaymentIdConflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RequestTimeout,
            ErrorCode::RateLimited,
            ErrorCode::Overloaded,
            ErrorCode::SponsorRefused,
            ErrorCode::InvalidHold,
        ] {
            let json = serde_json::to_string(&code).expect("serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn statuses_follow_the_x402_conventions() {
        assert_eq!(ErrorCode::MalformedRequest.http_status(), 400);
        assert_eq!(ErrorCode::InsufficientDeposit.http_status(), 402);
        assert_eq!(ErrorCode::InvalidHold.http_status(), 402);
        assert_eq!(ErrorCode::VoucherConflict.http_status(), 409);
        assert_eq!(ErrorCode::PaymentIdConflict.http_status(), 409);
        assert_eq!(ErrorCode::ChainUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::FacilitatorUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::SponsorRefused.http_status(), 403);
        assert_eq!(ErrorCode::RequestTimeout.http_status(), 408);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::HeaderTooLarge.http_status(), 431);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
    }

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ProtocolError::BadSignature {
            signer: "abc".into(),
        }
        .to_body();
        let json = serde_json::to_value(&body).expect("serialises");
        assert_eq!(json["error"], "invalid_signature");
        assert!(json["message"].as_str().is_some_and(|m| m.contains("abc")));
        assert!(json.get("details").is_none());
    }
}
