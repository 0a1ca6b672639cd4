//! Fuzzing of every decoder a peer's bytes reach: the header codec for each header type, the
//! x402 bodies, and the primitive parsers (base58 keys and signatures, hex, amounts, CAIP-2).
//!
//! Inputs are arbitrary bytes and structure-aware mutations of valid encodings (byte flips,
//! truncation, extension; fields replaced by hostile JSON: out-of-range and negative numbers,
//! floats, exponents, wrong types, unicode and control characters, huge strings). The contract:
//! no decoder panics; a failure is a typed [`ProtocolError`] whose wire code is
//! `malformed_request` or `header_too_large` (a 4xx) and whose body is JSON; anything accepted
//! re-encodes and decodes to the same value.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, missing_docs)] // tests

mod common;

use std::fmt::Debug;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use x402pp_protocol::x402::{
    FacilitatorRequest, PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo,
    SessionExtra, SettleResponse, SupportedResponse, VerifyResponse, X402Version2,
};
use x402pp_protocol::{
    headers, Amount, ErrorCode, Hash32, Id16, Intent, IntentSla, Network, Offer, ProtocolError,
    Pubkey, Receipt, SessionSnapshot, SessionState, Signature, UptimePercent, Voucher,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures print their minimal input; no regression files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- valid samples of every header and body --------------------------------------------------

fn offer() -> Offer {
    Offer::sign(common::offer_terms(), &common::provider()).unwrap()
}

fn voucher() -> Voucher {
    Voucher::sign(
        x402pp_protocol::VoucherTerms {
            session: common::session(),
            opened_slot: 42,
            seq: 1,
            cumulative: Amount(1_000),
            receipt_head: x402pp_protocol::Hash32::ZERO,
        },
        &common::voucher_signer(),
    )
}

fn receipt() -> Receipt {
    Receipt::sign(
        common::receipt_body(1, 1_000, 1_000, 120, Hash32::ZERO),
        &common::provider(),
    )
    .unwrap()
}

fn intent() -> Intent {
    Intent {
        intent_id: Id16([9; 16]),
        capability: "inference".into(),
        max_price_per_request: Amount(5_000),
        asset: common::mint(),
        network: Network::solana_devnet(),
        sla: IntentSla {
            max_latency_ms: 1_000,
            min_uptime_percent: UptimePercent::from_bps(9_900).unwrap(),
        },
        agent: Pubkey([3; 32]),
        expires_at: 1_800_000_000,
        commitment: Some(Amount(1_000_000)),
    }
}

fn status() -> SessionSnapshot {
    SessionSnapshot {
        session_id: common::session(),
        state: SessionState::Open,
        seq: 3,
        accepted: Amount(3_000),
        deposit: Amount(100_000),
        refunded: Amount(0),
        remaining: Amount(97_000),
        price_per_request: Amount(1_000),
        expires_at: 1_800_000_000,
    }
}

fn requirements() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: Network::solana_devnet(),
        amount: "1000".into(),
        asset: common::mint().to_string(),
        pay_to: Pubkey([4; 32]).to_string(),
        max_timeout_seconds: 60,
        extra: Some(json!({ "feePayer": Pubkey([5; 32]) })),
    }
}

fn payment_payload() -> PaymentPayload {
    PaymentPayload {
        x402_version: X402Version2,
        resource: Some(ResourceInfo {
            url: "http://127.0.0.1/v1/inference".into(),
            description: Some("inference".into()),
            mime_type: Some("application/json".into()),
        }),
        accepted: requirements(),
        payload: json!({ "transaction": STANDARD.encode([1u8; 200]) }),
        extensions: None,
    }
}

fn payment_required() -> PaymentRequired {
    PaymentRequired {
        x402_version: X402Version2,
        error: Some("payment required".into()),
        resource: ResourceInfo {
            url: "http://127.0.0.1/v1/inference".into(),
            description: None,
            mime_type: None,
        },
        accepts: vec![
            PaymentRequirements {
                scheme: "session".into(),
                extra: serde_json::to_value(SessionExtra {
                    offer: offer(),
                    sponsor: None,
                })
                .ok(),
                ..requirements()
            },
            requirements(),
        ],
        extensions: None,
    }
}

fn settle_response() -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        payer: Some(Pubkey([6; 32]).to_string()),
        transaction: bs58::encode([7u8; 64]).into_string(),
        network: Network::solana_devnet(),
        amount: Some("1000".into()),
        extensions: None,
    }
}

fn facilitator_request() -> FacilitatorRequest {
    FacilitatorRequest {
        x402_version: X402Version2,
        payment_payload: payment_payload(),
        payment_requirements: requirements(),
    }
}

fn verify_response() -> VerifyResponse {
    VerifyResponse {
        is_valid: false,
        invalid_reason: Some("invalid_exact_svm_payload_transaction".into()),
        invalid_message: Some("é漢字🦀".into()),
        payer: None,
    }
}

fn supported_response() -> SupportedResponse {
    serde_json::from_value(json!({
        "kinds": [{"x402Version": 2, "scheme": "exact", "network": Network::SOLANA_DEVNET,
                   "extra": {"feePayer": Pubkey([5; 32])}}],
        "extensions": [],
        "signers": {"solana:*": [Pubkey([5; 32]).to_string()]}
    }))
    .unwrap()
}

/// Which decoder an input is fed to.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Voucher,
    Offer,
    Receipt,
    Intent,
    Status,
    PaymentSignature,
    PaymentRequired,
    PaymentResponse,
    FacilitatorRequest,
    VerifyResponse,
    SupportedResponse,
}

const KINDS: [Kind; 11] = [
    Kind::Voucher,
    Kind::Offer,
    Kind::Receipt,
    Kind::Intent,
    Kind::Status,
    Kind::PaymentSignature,
    Kind::PaymentRequired,
    Kind::PaymentResponse,
    Kind::FacilitatorRequest,
    Kind::VerifyResponse,
    Kind::SupportedResponse,
];

impl Kind {
    fn sample(self) -> Value {
        match self {
            Self::Voucher => serde_json::to_value(voucher()),
            Self::Offer => serde_json::to_value(offer()),
            Self::Receipt => serde_json::to_value(receipt()),
            Self::Intent => serde_json::to_value(intent()),
            Self::Status => serde_json::to_value(status()),
            Self::PaymentSignature => serde_json::to_value(payment_payload()),
            Self::PaymentRequired => serde_json::to_value(payment_required()),
            Self::PaymentResponse => serde_json::to_value(settle_response()),
            Self::FacilitatorRequest => serde_json::to_value(facilitator_request()),
            Self::VerifyResponse => serde_json::to_value(verify_response()),
            Self::SupportedResponse => serde_json::to_value(supported_response()),
        }
        .unwrap()
    }

    /// Feeds `bytes` to this kind's decoder and checks the contract.
    fn check(self, bytes: &[u8]) {
        match self {
            Self::Voucher => {
                if let Some(v) = decode::<Voucher>(headers::X402_VOUCHER, bytes) {
                    let _ = v.verify(&Pubkey([1; 32]));
                    let _ = v.verify(&x402pp_protocol::crypto::pubkey_of(
                        &common::voucher_signer(),
                    ));
                }
            }
            Self::Offer => {
                if let Some(o) = decode::<Offer>(headers::X402_OFFER, bytes) {
                    let _ = o.verify();
                    let _ = o.offer_hash();
                    let _ = o.is_expired(i64::MAX);
                    let _ = o.terms.unmet_by(&intent());
                }
            }
            Self::Receipt => {
                if let Some(r) = decode::<Receipt>(headers::X402_RECEIPT, bytes) {
                    let _ = r.verify(&r.body.provider);
                    let mut chain = x402pp_protocol::ReceiptChain::new(r.body.session_id);
                    let _ = chain.append(&r.body.message());
                }
            }
            Self::Intent => {
                if let Some(i) = decode::<Intent>(headers::X402_INTENT, bytes) {
                    let _ = common::offer_terms().unmet_by(&i);
                }
            }
            Self::Status => {
                decode::<SessionSnapshot>(headers::X402_SESSION_STATUS, bytes);
            }
            Self::PaymentSignature => {
                if let Some(p) = decode::<PaymentPayload>(headers::PAYMENT_SIGNATURE, bytes) {
                    let _ = p.accepted.amount_atomic();
                    let _ = p.accepted.asset_pubkey();
                    let _ = p.accepted.pay_to_pubkey();
                    let _ = p
                        .accepted
                        .extra_as::<x402pp_protocol::x402::ExactSvmExtra>();
                }
            }
            Self::PaymentRequired => {
                if let Some(p) = decode::<PaymentRequired>(headers::PAYMENT_REQUIRED, bytes) {
                    let _ = p.option("session", &Network::solana_devnet());
                    for option in &p.accepts {
                        if let Some(extra) = option.extra_as::<SessionExtra>() {
                            let _ = extra.offer.verify();
                        }
                    }
                }
            }
            Self::PaymentResponse => {
                decode::<SettleResponse>(headers::PAYMENT_RESPONSE, bytes);
            }
            Self::FacilitatorRequest => {
                decode::<FacilitatorRequest>("body", bytes);
            }
            Self::VerifyResponse => {
                decode::<VerifyResponse>("body", bytes);
            }
            Self::SupportedResponse => {
                decode::<SupportedResponse>("body", bytes);
            }
        }
    }
}

/// Decodes with the header codec and checks the contract; the value when accepted.
fn decode<T>(name: &'static str, bytes: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    match headers::decode::<T>(name, bytes) {
        Ok(value) => {
            // Re-encoded (base64 grows it by a third, so compare the JSON, not the header size).
            headers::encode(&value).expect("an accepted value re-encodes");
            let json = serde_json::to_vec(&value).unwrap();
            let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
                panic!(
                    "{name}: re-encoded value does not decode: {e}: {}",
                    short(&json)
                )
            });
            // Free-form JSON (`payload`, `extra`, `extensions`) may hold floats that serde_json's
            // default parser reads back 1 ULP off; the typed fields must match exactly.
            assert!(
                back == value
                    || approx_eq(
                        &serde_json::to_value(&back).unwrap(),
                        &serde_json::to_value(&value).unwrap()
                    ),
                "{name}: accepted value does not round-trip: {}",
                short(&json)
            );
            // And it can be forwarded inside a larger document (a facilitator request).
            let mut wrapped = b"{\"outer\":[".to_vec();
            wrapped.extend_from_slice(&json);
            wrapped.extend_from_slice(b"]}");
            assert!(
                serde_json::from_slice::<Value>(&wrapped).is_ok(),
                "{name}: an accepted value cannot be embedded: {}",
                short(&json)
            );
            Some(value)
        }
        Err(error) => {
            check_error(&error);
            if bytes.len() > headers::MAX_HEADER_LEN {
                assert_eq!(error.code(), ErrorCode::HeaderTooLarge);
            }
            None
        }
    }
}

/// JSON equality with floats compared to a relative 1e-12.
fn approx_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| approx_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The start of `bytes`, for failure messages.
fn short(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

/// A decoding error is a 4xx with a JSON `{"error": code, "message": ...}` body.
fn check_error(error: &ProtocolError) {
    let code = error.code();
    assert!(
        matches!(
            code,
            ErrorCode::MalformedRequest | ErrorCode::HeaderTooLarge
        ),
        "{error} has code {code}"
    );
    let status = code.http_status();
    assert!((400..500).contains(&status), "{code} is HTTP {status}");
    let body = serde_json::to_value(error.to_body()).unwrap();
    assert_eq!(body["error"], code.as_str());
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

// ---- mutations ---------------------------------------------------------------------------------

/// JSON text that breaks a field: out-of-range, negative, float and exponent numbers, wrong
/// types, strings that look like numbers, unicode and control characters, lone surrogates.
const HOSTILE_JSON: &[&str] = &[
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775808",
    "-9223372036854775809",
    "-1",
    "-0",
    "0",
    "1.5",
    "1e30",
    "1e400",
    "-1e400",
    "4294967296",
    "65536",
    "100.001",
    "null",
    "true",
    "[]",
    "{}",
    "[[[[[[[[[[]]]]]]]]]]",
    "\"\"",
    "\" \"",
    "\"18446744073709551616\"",
    "\"-1\"",
    "\"1e30\"",
    "\"1.0\"",
    "\" 1000\"",
    "\"0x10\"",
    "\"\\u0000\"",
    "\"\\u0000\\u001f\\r\\n\"",
    "\"\\ud800\"",
    "\"\\udfff\\ud800\"",
    "\"é漢字🦀\u{202e}\"",
    "\"１０００\"",
    "\"0OIl\"",
    "\"11111111111111111111111111111111\"",
    "\"1111111111111111111111111111111\"",
    "\"111111111111111111111111111111111\"",
    "\"solana:\"",
    "\"Solana:abc\"",
    "\"eip155:8453\"",
    "\"open\"",
    "\"handler_error\"",
    "2",
    "3",
];

/// A replacement for one field: hostile JSON text, or a random JSON value.
#[derive(Debug, Clone)]
enum Replacement {
    Raw(&'static str),
    Value(Value),
    LongString(usize, char),
    Base58(Vec<u8>),
    Hex(Vec<u8>),
    Remove,
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        any::<u64>().prop_map(|n| Value::String(n.to_string())),
        "[0-9]{0,25}".prop_map(Value::String),
        "[1-9A-HJ-NP-Za-km-z]{0,100}".prop_map(Value::String),
        "[0-9a-f]{0,70}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn replacement() -> impl Strategy<Value = Replacement> {
    prop_oneof![
        4 => proptest::sample::select(HOSTILE_JSON).prop_map(Replacement::Raw),
        3 => json_value().prop_map(Replacement::Value),
        1 => (0usize..9_000, any::<char>()).prop_map(|(n, c)| Replacement::LongString(n, c)),
        2 => proptest::collection::vec(any::<u8>(), 0..70).prop_map(Replacement::Base58),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Replacement::Hex),
        1 => Just(Replacement::Remove),
    ]
}

/// Every path (object keys and array indexes) of `value`, shallowest first.
fn paths(value: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(Vec::new(), value)];
    while let Some((path, v)) = stack.pop() {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let mut p = path.clone();
            p.push(key);
            out.push(p.clone());
            stack.push((p, child));
        }
    }
    out
}

const RAW_MARKER: &str = "__x402pp_fuzz_raw__";

/// `sample` as JSON text with the field at `path` replaced (or removed).
fn replace(sample: &Value, path: &[String], with: &Replacement) -> String {
    let mut value = sample.clone();
    let Some((last, parents)) = path.split_last() else {
        return value.to_string();
    };
    let mut at = &mut value;
    for key in parents {
        at = match at {
            Value::Object(map) => map.get_mut(key).unwrap(),
            Value::Array(items) => items.get_mut(key.parse::<usize>().unwrap()).unwrap(),
            _ => unreachable!("paths only go through containers"),
        };
    }
    let new = match with {
        Replacement::Raw(_) => Some(Value::String(RAW_MARKER.into())),
        Replacement::Value(v) => Some(v.clone()),
        Replacement::LongString(n, c) => Some(Value::String(std::iter::repeat_n(*c, *n).collect())),
        Replacement::Base58(bytes) => Some(Value::String(bs58::encode(bytes).into_string())),
        Replacement::Hex(bytes) => Some(Value::String(hex::encode(bytes))),
        Replacement::Remove => None,
    };
    match (at, new) {
        (Value::Object(map), Some(new)) => {
            map.insert(last.clone(), new);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), new) => {
            let i = last.parse::<usize>().unwrap();
            match new {
                Some(new) => items[i] = new,
                None => {
                    items.remove(i);
                }
            }
        }
        _ => unreachable!("paths only go through containers"),
    }
    let text = value.to_string();
    match with {
        Replacement::Raw(raw) => text.replace(&format!("\"{RAW_MARKER}\""), raw),
        _ => text,
    }
}

/// One byte-level edit of an encoding.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        proptest::collection::vec(any::<u8>(), 1..32).prop_map(Edit::Extend),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Flip(i, bit) => {
                if let Some(b) = bytes.get_mut(i % len) {
                    *b ^= 1 << bit;
                }
            }
            Edit::Set(i, v) => {
                if let Some(b) = bytes.get_mut(i % len) {
                    *b = *v;
                }
            }
            Edit::Truncate(i) => bytes.truncate(i % len),
            Edit::Extend(tail) => bytes.extend_from_slice(tail),
            Edit::Duplicate(i, n) => {
                let start = (i % len).min(bytes.len());
                let end = start.saturating_add(*n).min(bytes.len());
                let piece = bytes[start..end].to_vec();
                bytes.splice(end..end, piece);
            }
        }
    }
    bytes
}

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(KINDS.as_slice())
}

// ---- the header codec ----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_header_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        kind in kind(),
    ) {
        kind.check(&bytes);
        // Raw-JSON mode (a leading `{`) and base64 of the same bytes.
        let mut raw = b"{".to_vec();
        raw.extend_from_slice(&bytes);
        kind.check(&raw);
        kind.check(STANDARD.encode(&bytes).as_bytes());
    }

    #[test]
    fn arbitrary_text_never_panics_a_header_decoder(text in any::<String>(), kind in kind()) {
        kind.check(text.as_bytes());
        kind.check(STANDARD.encode(text.as_bytes()).as_bytes());
    }
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn byte_edits_of_valid_headers_never_panic_their_decoder(
        kind in kind(),
        edits in proptest::collection::vec(edit(), 1..4),
        base64 in any::<bool>(),
    ) {
        let json = kind.sample().to_string();
        let encoded = if base64 { STANDARD.encode(&json) } else { json.clone() };
        kind.check(&apply(encoded.into_bytes(), &edits));
        // The JSON edited, then base64-encoded: reaches the JSON decoder with broken JSON.
        kind.check(STANDARD.encode(apply(json.into_bytes(), &edits)).as_bytes());
    }

    #[test]
    fn hostile_field_values_in_valid_headers_get_a_typed_error_or_round_trip(
        kind in kind(),
        pick in any::<prop::sample::Index>(),
        with in replacement(),
        base64 in any::<bool>(),
    ) {
        let sample = kind.sample();
        let paths = paths(&sample);
        let path = &paths[pick.index(paths.len())];
        let text = replace(&sample, path, &with);
        if base64 {
            kind.check(STANDARD.encode(&text).as_bytes());
        } else {
            kind.check(text.as_bytes());
        }
    }

    #[test]
    fn two_hostile_fields_and_an_unknown_one_get_a_typed_error_or_round_trip(
        kind in kind(),
        picks in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        with in (replacement(), replacement()),
        extra in json_value(),
    ) {
        let sample = kind.sample();
        let first_paths = paths(&sample);
        let first = replace(&sample, &first_paths[picks.0.index(first_paths.len())], &with.0);
        let Ok(mut value) = serde_json::from_str::<Value>(&first) else {
            kind.check(first.as_bytes());
            return Ok(());
        };
        if let Value::Object(map) = &mut value {
            map.insert("unknownFutureField".into(), extra);
        }
        let all = paths(&value);
        if all.is_empty() {
            kind.check(value.to_string().as_bytes());
            return Ok(());
        }
        let second = replace(&value, &all[picks.1.index(all.len())], &with.1);
        kind.check(STANDARD.encode(&second).as_bytes());
    }

    #[test]
    fn headers_around_the_size_limit_are_refused_before_decoding(
        extra in 0usize..64,
        over in any::<bool>(),
        kind in kind(),
        fill in any::<u8>(),
    ) {
        let len = if over {
            headers::MAX_HEADER_LEN + 1 + extra
        } else {
            headers::MAX_HEADER_LEN - extra
        };
        let bytes = vec![fill; len];
        kind.check(&bytes);
        if over {
            let err = headers::decode::<Voucher>(headers::X402_VOUCHER, &bytes).unwrap_err();
            prop_assert_eq!(err.code(), ErrorCode::HeaderTooLarge);
        }
    }
}

#[test]
fn every_valid_sample_decodes_from_base64_and_raw_json() {
    for kind in KINDS {
        let json = kind.sample().to_string();
        kind.check(json.as_bytes());
        kind.check(STANDARD.encode(&json).as_bytes());
    }
    // The samples really decode (the mutations start from accepted inputs).
    let voucher_header = headers::encode(&voucher()).unwrap();
    assert!(headers::decode::<Voucher>(headers::X402_VOUCHER, voucher_header.as_bytes()).is_ok());
    let offer_header = headers::encode(&offer()).unwrap();
    assert!(headers::decode::<Offer>(headers::X402_OFFER, offer_header.as_bytes()).is_ok());
}

#[test]
fn deeply_nested_json_in_a_header_is_a_malformed_request_not_a_stack_overflow() {
    for depth in [100, 129, 1_000, 4_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let payload = format!(
            r#"{{"x402Version":2,"accepted":{},"payload":{nested}}}"#,
            serde_json::to_string(&requirements()).unwrap()
        );
        for kind in KINDS {
            kind.check(payload.as_bytes());
            kind.check(STANDARD.encode(&payload).as_bytes());
        }
    }
}

// ---- primitive parsers -----------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn base58_keys_and_signatures_parse_only_at_their_exact_length(
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let text = bs58::encode(&bytes).into_string();
        let key = text.parse::<Pubkey>();
        prop_assert_eq!(key.is_ok(), bytes.len() == 32, "{:?}", key);
        if let Ok(key) = key {
            prop_assert_eq!(key.to_string(), text.clone());
        }
        let signature = text.parse::<Signature>();
        prop_assert_eq!(signature.is_ok(), bytes.len() == 64);
        // And as JSON strings, through serde.
        let quoted = Value::String(text).to_string();
        prop_assert_eq!(serde_json::from_str::<Pubkey>(&quoted).is_ok(), bytes.len() == 32);
        prop_assert_eq!(serde_json::from_str::<Signature>(&quoted).is_ok(), bytes.len() == 64);
    }

    #[test]
    fn hex_hashes_and_ids_parse_only_lowercase_at_their_exact_length(
        bytes in proptest::collection::vec(any::<u8>(), 0..70),
    ) {
        let text = hex::encode(&bytes);
        prop_assert_eq!(text.parse::<Hash32>().is_ok(), bytes.len() == 32);
        prop_assert_eq!(text.parse::<Id16>().is_ok(), bytes.len() == 16);
        let upper = text.to_uppercase();
        let has_letters = upper != text;
        prop_assert_eq!(upper.parse::<Hash32>().is_ok(), bytes.len() == 32 && !has_letters);
    }

    #[test]
    fn arbitrary_text_never_panics_a_primitive_parser(text in any::<String>()) {
        let _ = text.parse::<Pubkey>();
        let _ = text.parse::<Signature>();
        let _ = text.parse::<Hash32>();
        let _ = text.parse::<Id16>();
        let _ = Network::solana_from_genesis_hash(&text);
        if let Ok(amount) = text.parse::<Amount>() {
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(amount.to_string().parse::<Amount>(), Ok(amount));
        }
        if let Ok(network) = text.parse::<Network>() {
            prop_assert_eq!(network.as_str(), text.as_str());
            prop_assert!(network.namespace().len() >= 3);
            prop_assert!(!network.reference().is_empty());
        }
        for parsed in [
            text.parse::<Pubkey>().err().map(ProtocolError::from),
            text.parse::<Amount>().err().map(ProtocolError::from),
            text.parse::<Network>().err().map(ProtocolError::from),
        ]
        .into_iter()
        .flatten()
        {
            check_error(&parsed);
        }
    }

    #[test]
    fn amounts_are_accepted_exactly_when_they_fit_u64(
        n in any::<u128>(),
        junk in proptest::sample::select(&["", "-", "+", " ", ".0", "e3", "E3", "\u{0}", "_", "１"][..]),
        prefix in any::<bool>(),
    ) {
        let text = n.to_string();
        let parsed = text.parse::<Amount>();
        prop_assert_eq!(parsed.is_ok(), u64::try_from(n).is_ok());
        if let Ok(amount) = parsed {
            prop_assert_eq!(u128::from(amount.get()), n);
        }
        if !junk.is_empty() {
            let bad = if prefix { format!("{junk}{text}") } else { format!("{text}{junk}") };
            prop_assert!(bad.parse::<Amount>().is_err(), "{bad:?} was accepted");
        }
        // Numbers (not strings) are refused whatever their value.
        prop_assert!(serde_json::from_str::<Amount>(&text).is_err());
    }

    #[test]
    fn caip2_ids_are_accepted_exactly_when_they_follow_the_grammar(
        namespace in "[-a-zA-Z0-9_:é ]{0,10}",
        reference in "[-_a-zA-Z0-9:.é ]{0,36}",
    ) {
        let text = format!("{namespace}:{reference}");
        let valid = (3..=8).contains(&namespace.len())
            && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && (1..=32).contains(&reference.len())
            && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        prop_assert_eq!(text.parse::<Network>().is_ok(), valid, "{}", text);
        prop_assert_eq!(
            serde_json::from_value::<Network>(Value::String(text)).is_ok(),
            valid
        );
    }

    #[test]
    fn uptime_percentages_are_exact_two_decimal_values_in_range(percent in any::<f64>()) {
        if let Ok(uptime) = UptimePercent::from_percent(percent) {
            prop_assert!(uptime.bps() <= 10_000);
            prop_assert!((uptime.percent() - percent).abs() < 1e-6);
        }
        let json = serde_json::to_string(&percent).unwrap_or_else(|_| "null".into());
        let _ = serde_json::from_str::<UptimePercent>(&json);
    }

    #[test]
    fn the_x402_version_accepts_only_the_number_two(text in proptest::sample::select(HOSTILE_JSON)) {
        let parsed = serde_json::from_str::<X402Version2>(text);
        prop_assert_eq!(parsed.is_ok(), text == "2");
    }
}
