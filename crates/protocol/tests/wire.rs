//! Round trips and rejections of the wire types, the header codec and the receipt chain.

#![allow(clippy::arithmetic_side_effects)] // test arithmetic on small fixed values

mod common;

use proptest::prelude::*;
use serde_json::json;
use x402pp_protocol::crypto::pubkey_of;
use x402pp_protocol::messages::{OfferMessage, ReceiptMessage, VoucherMessage};
use x402pp_protocol::x402::{PaymentPayload, PaymentRequired, SessionExtra, SupportedResponse};
use x402pp_protocol::{
    headers, Amount, ErrorCode, Hash32, Id16, Intent, IntentSla, Network, Offer, ProtocolError,
    Receipt, ReceiptChain, UptimePercent, Voucher,
};

fn signed_offer() -> Offer {
    Offer::sign(common::offer_terms(), &common::provider()).expect("signs")
}

#[test]
fn offer_survives_the_header_round_trip_and_verifies() {
    let offer = signed_offer();
    let header = headers::encode(&offer).expect("encodes");
    let back: Offer = headers::decode(headers::X402_OFFER, header.as_bytes()).expect("decodes");
    assert_eq!(back, offer);
    back.verify().expect("verifies");
}

#[test]
fn offer_signed_with_a_key_other_than_its_provider_is_refused() {
    let err = Offer::sign(common::offer_terms(), &common::other()).expect_err("wrong signer");
    assert!(matches!(err, ProtocolError::WrongSigner { .. }));
    assert_eq!(err.code(), ErrorCode::InvalidSignature);
}

#[test]
fn offer_with_altered_terms_fails_verification() {
    let mut offer = signed_offer();
    offer.terms.price_per_request = Amount(1);
    assert_eq!(
        offer.verify().expect_err("tampered").code(),
        ErrorCode::InvalidSignature
    );

    let mut offer = signed_offer();
    offer.terms.resource.push_str("?other");
    assert!(
        offer.verify().is_err(),
        "resource is bound through its hash"
    );
}

#[test]
fn offer_routing_fields_are_not_signed_and_do_not_break_the_signature() {
    // network, escrowProgram and intentId are checked by the agent, not by the signature.
    let mut offer = signed_offer();
    offer.terms.intent_id = None;
    offer
        .verify()
        .expect("intentId is outside the signed layout");
}

#[test]
fn offer_with_penalty_over_100_percent_cannot_be_signed() {
    let mut terms = common::offer_terms();
    terms.sla.latency_penalty_bps = 10_001;
    let err = Offer::sign(terms, &common::provider()).expect_err("unsignable");
    assert_eq!(err.code(), ErrorCode::MalformedRequest);
}

#[test]
fn offer_expiry_is_exclusive() {
    let offer = signed_offer();
    assert!(!offer.is_expired(offer.terms.expires_at - 1));
    assert!(offer.is_expired(offer.terms.expires_at));
}

#[test]
fn voucher_signed_by_another_key_is_rejected() {
    let voucher = Voucher::sign(
        x402pp_protocol::VoucherTerms {
            session: common::session(),
            opened_slot: 42,
            seq: 1,
            cumulative: Amount(1_000),
            receipt_head: x402pp_protocol::Hash32::ZERO,
        },
        &common::other(),
    );
    let err = voucher
        .verify(&pubkey_of(&common::voucher_signer()))
        .expect_err("wrong key");
    assert_eq!(err.code(), ErrorCode::InvalidSignature);
}

#[test]
fn voucher_for_another_session_does_not_verify_for_this_one() {
    let mut voucher = Voucher::sign(
        x402pp_protocol::VoucherTerms {
            session: common::session(),
            opened_slot: 42,
            seq: 1,
            cumulative: Amount(1_000),
            receipt_head: x402pp_protocol::Hash32::ZERO,
        },
        &common::voucher_signer(),
    );
    voucher.session = x402pp_protocol::Pubkey([0x78; 32]);
    assert!(voucher
        .verify(&pubkey_of(&common::voucher_signer()))
        .is_err());
}

#[test]
fn unknown_json_fields_are_ignored_as_x402_requires() {
    let voucher = Voucher::sign(
        x402pp_protocol::VoucherTerms {
            session: common::session(),
            opened_slot: 42,
            seq: 4,
            cumulative: Amount(4_000),
            receipt_head: x402pp_protocol::Hash32::ZERO,
        },
        &common::voucher_signer(),
    );
    let mut value = serde_json::to_value(&voucher).expect("serialises");
    value["futureField"] = json!({"anything": [1, 2, 3]});
    let header = headers::encode(&value).expect("encodes");
    let back: Voucher = headers::decode(headers::X402_VOUCHER, header.as_bytes()).expect("decodes");
    back.verify(&pubkey_of(&common::voucher_signer()))
        .expect("still verifies");
}

#[test]
fn missing_and_mistyped_fields_are_malformed_requests() {
    let cases = [
        json!({"session": common::session(), "seq": 1, "signature": "1"}),
        json!({"session": common::session(), "seq": "1", "cumulative": "1", "signature": "1"}),
        json!({"session": common::session(), "seq": -1, "cumulative": "1", "signature": "1"}),
        json!({"session": "not-base58!", "seq": 1, "cumulative": "1", "signature": "1"}),
        json!({"session": common::session(), "seq": 1, "cumulative": 1, "signature": "1"}),
        json!([1, 2, 3]),
    ];
    for case in cases {
        let raw = case.to_string();
        let err =
            headers::decode::<Voucher>(headers::X402_VOUCHER, raw.as_bytes()).expect_err(&raw);
        assert_eq!(err.code(), ErrorCode::MalformedRequest, "{raw}");
        assert_eq!(err.code().http_status(), 400);
    }
}

#[test]
fn signature_of_the_wrong_length_is_malformed() {
    let mut value = serde_json::to_value(Voucher::sign(
        x402pp_protocol::VoucherTerms {
            session: common::session(),
            opened_slot: 42,
            seq: 1,
            cumulative: Amount(1),
            receipt_head: x402pp_protocol::Hash32::ZERO,
        },
        &common::voucher_signer(),
    ))
    .expect("serialises");
    value["signature"] = json!(bs58::encode([9u8; 63]).into_string());
    assert!(
        headers::decode::<Voucher>(headers::X402_VOUCHER, value.to_string().as_bytes()).is_err()
    );
}

fn signed_chain(n: u64) -> Vec<Receipt> {
    let mut prev = Hash32::ZERO;
    (1..=n)
        .map(|seq| {
            let r = Receipt::sign(
                common::receipt_body(seq, 1_000, seq * 1_000, 10, prev),
                &common::provider(),
            )
            .expect("signs");
            prev = r.receipt_id;
            r
        })
        .collect()
}

#[test]
fn receipt_chain_accepts_consecutive_receipts() {
    let provider = pubkey_of(&common::provider());
    let mut chain = ReceiptChain::new(common::session());
    for receipt in signed_chain(5) {
        let message = receipt.verify(&provider).expect("verifies");
        assert_eq!(
            chain.append(&message).expect("continues"),
            receipt.receipt_id
        );
    }
    assert_eq!((chain.last_seq, chain.cumulative_charged), (5, 5_000));
}

#[test]
fn receipt_chain_rejects_gaps_forks_wrong_totals_and_other_sessions() {
    let receipts = signed_chain(3);
    let messages: Vec<ReceiptMessage> = receipts.iter().map(|r| r.body.message()).collect();
    let mut chain = ReceiptChain::new(common::session());
    chain.append(&messages[0]).expect("first");

    let gap = chain.append(&messages[2]).expect_err("seq 3 after 1");
    assert_eq!(gap.code(), ErrorCode::InvalidReceipt);

    let fork = ReceiptMessage {
        prev_receipt_hash: [9; 32],
        ..messages[1]
    };
    assert!(chain.append(&fork).is_err());

    let inflated = ReceiptMessage {
        cumulative_charged: 2_001,
        ..messages[1]
    };
    assert!(chain.append(&inflated).is_err());

    let foreign = ReceiptMessage {
        session: [1; 32],
        ..messages[1]
    };
    assert!(chain.append(&foreign).is_err());

    assert_eq!(
        chain.last_seq, 1,
        "failed appends leave the chain unchanged"
    );
    chain
        .append(&messages[1])
        .expect("the honest second receipt still continues it");
}

#[test]
fn receipt_with_edited_unsigned_fields_is_inconsistent() {
    let provider = pubkey_of(&common::provider());
    let mut receipt = signed_chain(1).remove(0);
    receipt.body.request_started_at -= 1;
    assert_eq!(
        receipt.verify(&provider).expect_err("edited").code(),
        ErrorCode::InvalidReceipt
    );

    let mut receipt = signed_chain(1).remove(0);
    receipt.body.sla_verification.met = false;
    assert!(receipt.verify(&provider).is_err());

    let mut receipt = signed_chain(1).remove(0);
    receipt.receipt_id = Hash32([0; 32]);
    assert!(receipt.verify(&provider).is_err());
}

#[test]
fn receipt_with_edited_signed_fields_has_a_bad_signature() {
    let provider = pubkey_of(&common::provider());
    let mut receipt = signed_chain(1).remove(0);
    receipt.body.latency_ms = 1;
    receipt.body.request_started_at = receipt.body.request_completed_at - 1;
    receipt.body.sla_verification = x402pp_protocol::SlaVerification::latency(250, 1);
    receipt.receipt_id = x402pp_protocol::receipt_hash(&receipt.body.message());
    assert_eq!(
        receipt.verify(&provider).expect_err("forged").code(),
        ErrorCode::InvalidSignature
    );
}

#[test]
fn receipt_of_another_provider_is_rejected() {
    let receipt = signed_chain(1).remove(0);
    assert!(receipt.verify(&pubkey_of(&common::other())).is_err());
}

#[test]
fn failed_request_receipt_must_charge_nothing() {
    let mut body = common::receipt_body(1, 0, 0, 10, Hash32::ZERO);
    body.amount_charged = Amount(5);
    body.cumulative_charged = Amount(5);
    let err = Receipt::sign(body, &common::provider()).expect_err("charging a failure");
    assert_eq!(err.code(), ErrorCode::InvalidReceipt);
}

fn intent(max_price: u64, latency: u32, uptime_bps: u16) -> Intent {
    Intent {
        intent_id: Id16([1; 16]),
        capability: "inference".into(),
        max_price_per_request: Amount(max_price),
        asset: common::mint(),
        network: Network::solana_devnet(),
        sla: IntentSla {
            max_latency_ms: latency,
            min_uptime_percent: UptimePercent::from_bps(uptime_bps).expect("in range"),
        },
        agent: pubkey_of(&common::key(common::AGENT_SEED)),
        expires_at: 1_800_000_000,
        commitment: None,
    }
}

#[test]
fn offer_meets_an_intent_only_when_price_and_sla_fit() {
    let terms = common::offer_terms();
    assert_eq!(terms.unmet_by(&intent(1_000, 250, 9_950)), None);
    assert!(terms
        .unmet_by(&intent(999, 250, 9_950))
        .is_some_and(|why| why.contains("price")));
    assert!(terms
        .unmet_by(&intent(1_000, 249, 9_950))
        .is_some_and(|why| why.contains("latency")));
    // Offers v2 promise no uptime: the intent's minimum is the agent's own threshold for the
    // uptime it measures, not a term an offer can miss.
    assert_eq!(terms.unmet_by(&intent(1_000, 250, 10_000)), None);
    let mut other_net = intent(1_000, 250, 9_950);
    other_net.network = Network::solana_mainnet();
    assert!(terms.unmet_by(&other_net).is_some());
}

#[test]
fn intent_round_trips_in_camel_case() {
    let value = serde_json::to_value(intent(1_000, 250, 9_950)).expect("serialises");
    for field in [
        "intentId",
        "capability",
        "maxPricePerRequest",
        "asset",
        "network",
        "sla",
        "agent",
        "expiresAt",
    ] {
        assert!(value.get(field).is_some(), "missing {field}");
    }
    assert_eq!(value["sla"]["minUptimePercent"], json!(99.5));
    assert_eq!(value["maxPricePerRequest"], json!("1000"));
    // No commitment stated: the field is left out, not sent as null.
    assert!(value.get("commitment").is_none(), "{value}");
}

#[test]
fn an_intent_without_a_commitment_still_parses_and_one_with_a_commitment_round_trips() {
    // An intent as agents sent it before commitments existed (no `commitment` field).
    let old = json!({
        "intentId": Id16([1; 16]),
        "capability": "inference",
        "maxPricePerRequest": "1000",
        "asset": common::mint(),
        "network": Network::SOLANA_DEVNET,
        "sla": {"maxLatencyMs": 250, "minUptimePercent": 99.5},
        "agent": pubkey_of(&common::key(common::AGENT_SEED)),
        "expiresAt": 1_800_000_000
    });
    let header = headers::encode(&old).expect("encodes");
    let parsed: Intent = headers::decode(headers::X402_INTENT, header.as_bytes()).expect("parses");
    assert_eq!(parsed, intent(1_000, 250, 9_950));
    assert_eq!(parsed.commitment, None);

    // With a commitment: an amount string under `commitment`, and back.
    let committed = Intent {
        commitment: Some(Amount(1_000_000)),
        ..intent(1_000, 250, 9_950)
    };
    let value = serde_json::to_value(&committed).expect("serialises");
    assert_eq!(value["commitment"], json!("1000000"));
    let header = headers::encode(&committed).expect("encodes");
    let back: Intent = headers::decode(headers::X402_INTENT, header.as_bytes()).expect("parses");
    assert_eq!(back, committed);

    // A commitment is an amount like any other: a JSON number or a non-canonical string is
    // refused, not guessed.
    for bad in [
        json!(1_000_000),
        json!("01000000"),
        json!("-1"),
        json!("1e6"),
    ] {
        let mut value = old.clone();
        value["commitment"] = bad.clone();
        assert!(
            serde_json::from_value::<Intent>(value).is_err(),
            "commitment {bad} was accepted"
        );
    }
}

#[test]
fn spec_example_payment_required_parses_and_re_encodes() {
    // The x402 v2 specification's example challenge (EVM), with a Solana option added.
    let spec = json!({
        "x402Version": 2,
        "error": "PAYMENT-SIGNATURE header is required",
        "resource": {"url": "https://api.example.com/premium-data", "description": "Access to premium market data", "mimeType": "application/json"},
        "accepts": [
            {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
             "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
             "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}},
            {"scheme": "exact", "network": Network::SOLANA_DEVNET, "amount": "1000",
             "asset": common::mint(), "payTo": pubkey_of(&common::provider()),
             "maxTimeoutSeconds": 60, "extra": {"feePayer": pubkey_of(&common::other())}}
        ],
        "extensions": {}
    });
    let parsed: PaymentRequired = serde_json::from_value(spec.clone()).expect("parses");
    assert_eq!(serde_json::to_value(&parsed).expect("serialises"), spec);
    let solana = parsed
        .option("exact", &Network::solana_devnet())
        .expect("solana option");
    assert_eq!(solana.amount_atomic(), Ok(Amount(1_000)));
    assert!(
        parsed.accepts[0].asset_pubkey().is_err(),
        "EVM addresses are not Solana keys"
    );
    let extra: x402pp_protocol::x402::ExactSvmExtra = solana.extra_as().expect("feePayer extra");
    assert_eq!(extra.fee_payer, pubkey_of(&common::other()));
}

#[test]
fn x402_version_1_is_rejected() {
    let v1 = json!({"x402Version": 1, "resource": {"url": "u"}, "accepts": []});
    let err =
        headers::decode::<PaymentRequired>(headers::PAYMENT_REQUIRED, v1.to_string().as_bytes())
            .expect_err("v1");
    assert!(err.to_string().contains("x402Version"));
}

#[test]
fn session_option_carries_the_signed_offer() {
    let offer = signed_offer();
    let extra = serde_json::to_value(SessionExtra {
        offer: offer.clone(),
        sponsor: None,
    })
    .expect("serialises");
    let back: SessionExtra = serde_json::from_value(extra).expect("parses");
    back.offer.verify().expect("verifies");
    assert_eq!(back.offer, offer);
}

#[test]
fn facilitator_documents_parse() {
    let payload = json!({
        "x402Version": 2,
        "accepted": {"scheme": "exact", "network": Network::SOLANA_DEVNET, "amount": "1000",
                     "asset": common::mint(), "payTo": pubkey_of(&common::provider()), "maxTimeoutSeconds": 60},
        "payload": {"transaction": "AQID"}
    });
    let parsed: PaymentPayload = serde_json::from_value(payload).expect("payload parses");
    assert_eq!(parsed.payload["transaction"], "AQID");
    let supported = json!({
        "kinds": [{"x402Version": 2, "scheme": "exact", "network": Network::SOLANA_DEVNET, "extra": {"feePayer": "x"}}],
        "extensions": [],
        "signers": {"solana:*": ["CKPKJWNdJEqa81x7CkZ14BVPiY6y16Sxs7owznqtWYp5"]}
    });
    let parsed: SupportedResponse = serde_json::from_value(supported).expect("supported parses");
    assert_eq!(parsed.signers["solana:*"].len(), 1);
}

/// Issue 18 finding 1: the official facilitator registered the standard way
/// (`registerExactSvmScheme`) also lists x402 v1 kinds; our provider refused the whole answer
/// and would not start.
#[test]
fn a_supported_answer_with_v1_kinds_keeps_the_v2_kinds_and_skips_the_rest() {
    let supported = json!({
        "kinds": [
            {"x402Version": 2, "scheme": "exact", "network": Network::SOLANA_DEVNET, "extra": {"feePayer": "x"}},
            {"x402Version": 1, "scheme": "exact", "network": "solana-devnet", "extra": {"feePayer": "x"}},
            {"x402Version": 2, "scheme": "upto", "network": Network::SOLANA_DEVNET},
            {"x402Version": 3, "scheme": "exact", "network": Network::SOLANA_DEVNET},
            "not a kind"
        ],
        "extensions": [],
        "signers": {}
    });
    let parsed: SupportedResponse = serde_json::from_value(supported).expect("supported parses");
    let kinds: Vec<(&str, &str)> = parsed
        .kinds
        .iter()
        .map(|k| (k.scheme.as_str(), k.network.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("exact", Network::SOLANA_DEVNET),
            ("upto", Network::SOLANA_DEVNET)
        ]
    );
    let not_a_list = json!({"kinds": {"x402Version": 2}, "extensions": [], "signers": {}});
    assert!(serde_json::from_value::<SupportedResponse>(not_a_list).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_decoders_never_panic_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = headers::decode::<Voucher>(headers::X402_VOUCHER, &input);
        let _ = headers::decode::<Offer>(headers::X402_OFFER, &input);
        let _ = headers::decode::<Receipt>(headers::X402_RECEIPT, &input);
        let _ = headers::decode::<Intent>(headers::X402_INTENT, &input);
        let _ = headers::decode::<PaymentRequired>(headers::PAYMENT_REQUIRED, &input);
        let _ = headers::decode::<PaymentPayload>(headers::PAYMENT_SIGNATURE, &input);
    }

    #[test]
    fn message_decoders_never_panic_and_reject_wrong_lengths(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let offer = OfferMessage::decode(&input);
        let voucher = VoucherMessage::decode(&input);
        let receipt = ReceiptMessage::decode(&input);
        prop_assert!(offer.is_err() || input.len() == OfferMessage::LEN);
        prop_assert!(voucher.is_err() || input.len() == VoucherMessage::LEN);
        prop_assert!(receipt.is_err() || input.len() == ReceiptMessage::LEN);
    }

    #[test]
    fn any_voucher_round_trips_and_verifies(seq in any::<u64>(), cumulative in any::<u64>(), session in any::<[u8; 32]>()) {
        let voucher = Voucher::sign(x402pp_protocol::VoucherTerms { session: x402pp_protocol::Pubkey(session), opened_slot: 42, seq, cumulative: Amount(cumulative), receipt_head: x402pp_protocol::Hash32::ZERO }, &common::voucher_signer());
        let header = headers::encode(&voucher).expect("encodes");
        let back: Voucher = headers::decode(headers::X402_VOUCHER, header.as_bytes()).expect("decodes");
        prop_assert_eq!(&back, &voucher);
        prop_assert!(back.verify(&pubkey_of(&common::voucher_signer())).is_ok());
        prop_assert_eq!(VoucherMessage::decode(&voucher.message().encode()), Ok(voucher.message()));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_signed_voucher_message_breaks_it(bit in 0usize..(VoucherMessage::LEN * 8)) {
        let voucher = Voucher::sign(x402pp_protocol::VoucherTerms { session: common::session(), opened_slot: 42, seq: 1, cumulative: Amount(1_000), receipt_head: x402pp_protocol::Hash32::ZERO }, &common::voucher_signer());
        let mut bytes = voucher.message().encode();
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(x402pp_protocol::crypto::verify(&pubkey_of(&common::voucher_signer()), &bytes, &voucher.signature).is_err());
    }
}
