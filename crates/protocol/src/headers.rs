//! Header names and the header codec: base64 (standard alphabet, padded) of compact JSON.
//!
//! [`decode`] also accepts raw JSON (a value starting with `{`), refuses values over
//! [`MAX_HEADER_LEN`] before doing any work and JSON nested deeper than [`MAX_JSON_DEPTH`], and
//! reports failures as typed
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
/// x402++: how the agent takes a streamed answer's receipt (request); a response that streams
/// with its receipt as a final SSE event echoes it (docs/protocol.md §10.4).
pub const X402_RECEIPT_MODE: &str = "X-402-Receipt-Mode";
/// The value of [`X402_RECEIPT_MODE`]: the receipt as the stream's final `x402-receipt` event.
pub const RECEIPT_MODE_SSE_EVENT: &str = "sse-event";

/// Largest header value accepted by [`decode`], in bytes (8 KiB, the common proxy limit).
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Deepest JSON nesting (objects and arrays) accepted by [`decode`]. Real headers nest a few
/// levels; the margin below serde_json's own limit of 128 lets a decoded value be embedded in a
/// larger document and still parse — the provider forwards `PAYMENT-SIGNATURE` to the
/// facilitator one level deeper, which refused a payload nested 127 levels deep.
pub const MAX_JSON_DEPTH: usize = 64;

/// Whether `json` nests objects and arrays deeper than `limit` (strings are skipped).
fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth = depth.saturating_add(1);
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Encodes a value as base64 of its compact JSON.
///
/// Fails only for values JSON cannot represent (maps with non-string keys); every type of this
/// crate encodes.
pub fn encode<T: Serialize>(value: &T) -> Result<String, ProtocolError> {
    let json = serde_json::to_vec(value).map_err(|e| ProtocolError::Serialize(e.to_string()))?;
    Ok(encode_json(&json))
}

/// The header value of JSON already serialized (what [`encode`] does after serializing), for a
/// caller that also keeps the JSON, so it is serialized once.
pub fn encode_json(json: &[u8]) -> String {
    STANDARD.encode(json)
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
    if nests_deeper_than(&json, MAX_JSON_DEPTH) {
        return Err(ProtocolError::HeaderJson {
            name,
            reason: format!("JSON is nested deeper than {MAX_JSON_DEPTH} levels"),
        });
    }
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
    fn json_nested_past_the_depth_limit_is_a_malformed_request() {
        let nested = |depth: usize| {
            format!(
                r#"{{"a":1,"b":{}"[{{\"]"{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        // Brackets inside strings do not count.
        assert_eq!(
            decode::<Sample>("X", nested(MAX_JSON_DEPTH - 1).as_bytes()),
            Ok(Sample { a: 1 })
        );
        let err = decode::<Sample>("X", nested(MAX_JSON_DEPTH).as_bytes()).expect_err("too deep");
        assert!(matches!(err, ProtocolError::HeaderJson { .. }));
        assert_eq!(err.code(), ErrorCode::MalformedRequest);
    }

    #[test]
    fn oversized_header_is_rejected_before_decoding() {
        let huge = vec![b'A'; MAX_HEADER_LEN + 1];
        let err = decode::<Sample>("X", &huge).expect_err("too large");
        assert_eq!(err.code(), ErrorCode::HeaderTooLarge);
    }
}
