//! The x402 `payment-identifier` extension: an idempotency id a client attaches to an `exact`
//! payment, so that a retry of the same payment (after a lost answer) gets the answer of the
//! first attempt instead of being charged again or refused as a duplicate.
//!
//! A server declares it in `PaymentRequired.extensions` ([`declaration`]); a client echoes it in
//! `PaymentPayload.extensions` with `info.id` set ([`attach`]); the server reads it with
//! [`id_of`]. An id is 16–128 characters of `[A-Za-z0-9_-]` ([`PaymentId::parse`]), the rules of
//! the official `@x402/extensions` package.

use serde_json::{json, Value};

use crate::encoding::Id16;
use crate::x402::PaymentPayload;

/// The extension's key in `extensions`.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";
/// Shortest id.
pub const MIN_LEN: usize = 16;
/// Longest id.
pub const MAX_LEN: usize = 128;

/// Why a payment's `payment-identifier` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentIdError {
    /// The extension is present but is not `{"info": {"id": "<string>", ...}}`.
    #[error("the payment-identifier extension has no string info.id")]
    Shape,
    /// The id breaks the length or character rules.
    #[error(
        "payment identifier {0:?} must be {MIN_LEN}-{MAX_LEN} characters of A-Z, a-z, 0-9, _ and -"
    )]
    Invalid(String),
}

/// A valid payment identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentId(String);

impl PaymentId {
    /// Checks `id` against the extension's rules.
    pub fn parse(id: &str) -> Result<Self, PaymentIdError> {
        let valid = (MIN_LEN..=MAX_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            Err(PaymentIdError::Invalid(id.to_owned()))
        }
    }

    /// A fresh random id (`pay_` and 32 hex digits), as the official client makes them.
    pub fn generate() -> Self {
        Self(format!("pay_{}", Id16::random()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The extension as a server declares it in `PaymentRequired.extensions`.
pub fn declaration(required: bool) -> Value {
    json!({
        "info": { "required": required },
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "required": { "type": "boolean" },
                "id": {
                    "type": "string",
                    "minLength": MIN_LEN,
                    "maxLength": MAX_LEN,
                    "pattern": "^[a-zA-Z0-9_-]+$"
                }
            },
            "required": ["required"]
        }
    })
}

/// Whether `extensions` (of a `PaymentRequired`) declares the extension.
pub fn declared(extensions: Option<&Value>) -> bool {
    extensions.is_some_and(|e| e.get(PAYMENT_IDENTIFIER).is_some())
}

/// Sets `info.id` of the extension in a payment's `extensions`, adding the declaration (not
/// required) when it is missing.
pub fn attach(extensions: &mut Option<Value>, id: &PaymentId) {
    let all = extensions.get_or_insert_with(|| json!({}));
    if !all.is_object() {
        *all = json!({});
    }
    if let Some(map) = all.as_object_mut() {
        let extension = map
            .entry(PAYMENT_IDENTIFIER)
            .or_insert_with(|| declaration(false));
        if let Some(info) = extension.get_mut("info").and_then(Value::as_object_mut) {
            info.insert("id".into(), Value::String(id.0.clone()));
        } else {
            *extension = json!({ "info": { "required": false, "id": id.0 } });
        }
    }
}

/// The payment's identifier: `None` without the extension (or without an id in it), an error
/// when it is malformed.
pub fn id_of(payload: &PaymentPayload) -> Result<Option<PaymentId>, PaymentIdError> {
    let Some(extension) = payload
        .extensions
        .as_ref()
        .and_then(|e| e.get(PAYMENT_IDENTIFIER))
    else {
        return Ok(None);
    };
    let info = extension.get("info").ok_or(PaymentIdError::Shape)?;
    match info.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => PaymentId::parse(id).map(Some),
        Some(_) => Err(PaymentIdError::Shape),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_official_length_and_character_rules() {
        assert!(PaymentId::parse("pay_0123456789abcdef").is_ok());
        assert!(PaymentId::parse(&"a".repeat(MAX_LEN)).is_ok());
        for bad in [
            "short",
            "pay_0123456789abcde!",
            "",
            &"a".repeat(MAX_LEN + 1),
        ] {
            assert!(PaymentId::parse(bad).is_err(), "{bad}");
        }
        let fresh = PaymentId::generate();
        assert_eq!(PaymentId::parse(fresh.as_str()), Ok(fresh.clone()));
        assert_ne!(fresh, PaymentId::generate());
    }

    #[test]
    fn an_attached_id_reads_back_and_a_malformed_one_is_an_error() {
        let payload = |extensions: Option<Value>| -> PaymentPayload {
            serde_json::from_value(json!({
                "x402Version": 2,
                "accepted": {
                    "scheme": "exact", "network": "solana:devnet", "amount": "1",
                    "asset": "x", "payTo": "y", "maxTimeoutSeconds": 60
                },
                "payload": {},
                "extensions": extensions,
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(id_of(&payload(None)), Ok(None));
        let id = PaymentId::generate();
        let mut extensions = Some(json!({"other": {}}));
        attach(&mut extensions, &id);
        assert_eq!(id_of(&payload(extensions.clone())), Ok(Some(id)));
        assert!(declared(extensions.as_ref()));
        let shape = json!({ PAYMENT_IDENTIFIER: { "info": { "id": 7 } } });
        assert_eq!(id_of(&payload(Some(shape))), Err(PaymentIdError::Shape));
        let invalid = json!({ PAYMENT_IDENTIFIER: { "info": { "id": "bad id" } } });
        assert!(matches!(
            id_of(&payload(Some(invalid))),
            Err(PaymentIdError::Invalid(_))
        ));
    }
}
