//! Header names and the header codec: base64 (standard alphabet, padded) of compact JSON.
//!
//! [`decode`] also accepts raw JSON (a value starting with `{`), refuses values over
//! [`MAX_HEADER_LEN`] before doing any work, and reports failures as typed
//! [`ProtocolError`]s that map to `400 malformed_request` / `header_too_large`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ProtocolError;

/// x402 v2: the 402 response's `PaymentRequired`.
pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// x402 v2: the request's `PaymentPayload` (exact scheme).
pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
/// x402 v2: the paid response's `SettleResponse` (exact scheme).
pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
/// x402++: the agent's intent (request).
pub const X402_INTENT: &str = "X-402-Intent";
/// x402++: the provider's signed offer (402 response).
pub const X402_OFFER: &str = "X-402-Offer";
/// x402++: the session account address (request).
pub const X402_SESSION_ID: &str = "X-402-Session-Id";
/// x402++: the agent's signed cumulative voucher (request).
pub const X402_VOUCHER: &str = "X-402-Voucher";
/// x402++: the provider's signed receipt (paid response, also on handler failure).
pub const X402_RECEIPT: &str = "X-402-Receipt";
/// x402++: the session's balance after this request (paid and 402 responses).
pub const X402_SESSION_STATUS: &str = "X-402-Session-Status";

/// Largest header value accepted by [`decode`], in bytes (8 KiB, the common proxy limit).
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Encodes a value as base64 of its compact JSON.
///
/// Fails only for values JSON cannot represent (maps with non-string keys); every type of this
/// crate encodes.
pub fn encode<T: Serialize>(value: &T) -> Result<String, ProtocolError> {
    let json = serde_json::to_vec(value).map_err(|e| ProtocolError::Serialize(e.to_string()))?;
    Ok(STANDARD.encode(json))
}

/// Decodes a header value (base64 of JSON, or raw JSON) into `T`.
///
/// `name` is the header's name, used in errors.
pub fn decode<T: DeserializeOwned>(name: &'static str, value: &[u8]) -> Result<T, ProtocolError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(ProtocolError::HeaderTooLarge {
            name,
            len: value.len(),
            limit: MAX_HEADER_LEN,
        });
    }
    let value = value.trim_ascii();
    let json = if value.first() == Some(&b'{') {
        std::borrow::Cow::Borrowed(value)
    } else {
        let bytes = STANDARD
            .decode(value)
            .map_err(|e| ProtocolError::HeaderEncoding {
                name,
                reason: e.to_string(),
            })?;
        std::borrow::Cow::Owned(bytes)
    };
    serde_json::from_slice(&json).map_err(|e| ProtocolError::HeaderJson {
        name,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u32,
    }

    #[test]
    fn encoded_values_decode_to_the_same_value() {
        let text = encode(&Sample { a: 7 }).expect("encodes");
        assert_eq!(text, STANDARD.encode(br#"{"a":7}"#));
        assert_eq!(decode::<Sample>("X", text.as_bytes()), Ok(Sample { a: 7 }));
    }

    #[test]
    fn raw_json_is_accepted() {
        assert_eq!(decode::<Sample>("X", br#" {"a":1} "#), Ok(Sample { a: 1 }));
    }

    #[test]
    fn non_base64_is_a_malformed_request() {
        let err = decode::<Sample>("X", b"%%%not base64").expect_err("rejected");
        assert!(matches!(err, ProtocolError::HeaderEncoding { .. }));
        assert_eq!(err.code(), ErrorCode::MalformedRequest);
    }

    #[test]
    fn base64_of_garbage_is_a_malformed_request() {
        let err = decode::<Sample>("X", STANDARD.encode(b"\xff\xfe").as_bytes()).expect_err("bad");
        assert!(matches!(err, ProtocolError::HeaderJson { .. }));
        assert_eq!(err.code().http_status(), 400);
    }

    #[test]
    fn oversized_header_is_rejected_before_decoding() {
        let huge = vec![b'A'; MAX_HEADER_LEN + 1];
        let err = decode::<Sample>("X", &huge).expect_err("too large");
        assert_eq!(err.code(), ErrorCode::HeaderTooLarge);
    }
}
