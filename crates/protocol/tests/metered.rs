//! The metered (version 3) wire types: offers, vouchers and receipts priced by usage, next to the
//! v2 ones they must not disturb.

#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

mod common;

use serde_json::{json, Value};
use x402pp_protocol::crypto::pubkey_of;
use x402pp_protocol::messages::{OfferMessageV3, ReceiptMessage};
use x402pp_protocol::x402::{PaymentRequired, PaymentRequirements, ResourceInfo, SessionExtra};
use x402pp_protocol::{
    headers, Amount, AnyOfferMessage, AnyReceiptMessage, AnyVoucherMessage, Cut, ErrorCode, Hash32,
    Id16, Intent, IntentSla, Network, Offer, ProtocolError, Receipt, ReceiptChain, ReceiptStatus,
    UptimePercent, Voucher, VoucherTerms,
};

fn metered_offer() -> Offer {
    Offer::sign(common::metered_offer_terms(), &common::provider()).unwrap()
}

fn voucher_terms(seq: u64, cumulative: u64) -> VoucherTerms {
    VoucherTerms {
        session: common::session(),
        opened_slot: 42,
        seq,
        cumulative: Amount(cumulative),
        receipt_head: Hash32::ZERO,
    }
}

fn ok_receipt(seq: u64, amount: u64, cumulative: u64, units_out: u64, prev: Hash32) -> Receipt {
    Receipt::sign(
        common::metered_receipt_body(
            seq,
            amount,
            cumulative,
            (0, units_out, units_out * 4),
            ReceiptStatus::Ok,
            Cut::None,
            false,
            prev,
        ),
        &common::provider(),
    )
    .unwrap()
}

#[test]
fn a_v3_offer_round_trips_through_its_header_and_verifies() {
    let offer = metered_offer();
    let value = serde_json::to_value(&offer).unwrap();
    assert_eq!(value["version"], 3);
    assert_eq!(
        value["metering"],
        json!({"unit": "tokens", "unitSize": 1000, "unitPriceIn": "0", "unitPriceOut": "2000",
               "maxPerRequest": "1000"})
    );
    let header = headers::encode(&offer).unwrap();
    let back: Offer = headers::decode(headers::X402_OFFER, header.as_bytes()).unwrap();
    assert_eq!(back, offer);
    let AnyOfferMessage::V3(message) = back.verify_any().unwrap() else {
        panic!("a metered offer is signed as v3");
    };
    assert_eq!(message.metering, common::metering().metering());
    assert_eq!(
        back.verify().unwrap(),
        message.offer,
        "verify gives the v2 part"
    );
    assert_eq!(
        back.offer_hash().unwrap().0,
        x402pp_protocol::crypto::sha256(&[&message.encode()]),
        "offer_hash is the sha256 of the 206 bytes"
    );
    assert_eq!(message.encode().len(), OfferMessageV3::LEN);
}

#[test]
fn a_v2_offer_has_neither_version_nor_metering_and_a_v3_one_read_as_v2_does_not_verify() {
    let v2 = serde_json::to_value(Offer::sign(common::offer_terms(), &common::provider()).unwrap())
        .unwrap();
    assert!(v2.get("version").is_none() && v2.get("metering").is_none());
    let mut explicit_v2 = v2.clone();
    explicit_v2["version"] = json!(2);
    serde_json::from_value::<Offer>(explicit_v2)
        .unwrap()
        .verify()
        .unwrap();

    // What an agent that does not know metering rebuilds: the v2 message, so the signature fails
    // and it pays `exact` instead.
    let mut stripped = serde_json::to_value(metered_offer()).unwrap();
    let object = stripped.as_object_mut().unwrap();
    object.remove("version");
    object.remove("metering");
    let stripped: Offer = serde_json::from_value(stripped).unwrap();
    assert_eq!(
        stripped.verify().unwrap_err().code(),
        ErrorCode::InvalidSignature
    );

    // Changing any usage price breaks the signature.
    let mut cheaper = metered_offer();
    cheaper.terms.metering.as_mut().unwrap().unit_price_out = Amount(1_999);
    assert_eq!(
        cheaper.verify().unwrap_err().code(),
        ErrorCode::InvalidSignature
    );
}

#[test]
fn an_offer_whose_version_contradicts_its_metering_is_malformed() {
    let mut value = serde_json::to_value(metered_offer()).unwrap();
    value["version"] = json!(2);
    assert!(serde_json::from_value::<Offer>(value).is_err());
    let mut value =
        serde_json::to_value(Offer::sign(common::offer_terms(), &common::provider()).unwrap())
            .unwrap();
    value["version"] = json!(3);
    let err =
        headers::decode::<Offer>(headers::X402_OFFER, value.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MalformedRequest);
}

#[test]
fn an_offer_with_unusable_metering_cannot_be_signed() {
    let cases: [fn(&mut x402pp_protocol::MeteringTerms); 3] = [
        |m| m.unit_size = 0,
        |m| m.max_per_request = Amount(0),
        |m| m.max_per_request = Amount(99), // below the base of 100
    ];
    for change in cases {
        let mut terms = common::metered_offer_terms();
        change(terms.metering.as_mut().unwrap());
        let err = Offer::sign(terms, &common::provider()).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::Unsignable {
                field: "metering",
                ..
            }
        ));
    }
}

fn intent(max_price: u64) -> Intent {
    Intent {
        intent_id: Id16([1; 16]),
        capability: "inference".into(),
        max_price_per_request: Amount(max_price),
        asset: common::mint(),
        network: Network::solana_devnet(),
        sla: IntentSla {
            max_latency_ms: 250,
            min_uptime_percent: UptimePercent::from_bps(9_950).unwrap(),
        },
        agent: pubkey_of(&common::key(common::AGENT_SEED)),
        expires_at: 1_800_000_000,
        commitment: None,
    }
}

#[test]
fn an_intent_is_met_only_when_its_max_price_covers_the_max_per_request() {
    let terms = common::metered_offer_terms();
    assert_eq!(terms.max_per_request(), Amount(1_000));
    assert_eq!(terms.unmet_by(&intent(1_000)), None);
    assert!(
        terms
            .unmet_by(&intent(999))
            .is_some_and(|why| why.contains("maximum price per request 1000")),
        "a base of 100 under the intent's 999 is not enough: one request may cost 1 000"
    );
    // The v2 rule is unchanged: the fixed price is the request's price.
    let fixed = common::offer_terms();
    assert_eq!(fixed.max_per_request(), Amount(1_000));
    assert!(fixed.unmet_by(&intent(999)).is_some());
    assert_eq!(fixed.unmet_by(&intent(1_000)), None);
}

#[test]
fn a_metered_challenge_still_fits_the_header_limit() {
    // The largest realistic challenge: an `exact` option and a `session` option carrying the
    // signed v3 offer with the longest terms (u64::MAX amounts), a long resource URL and a
    // discovery extension.
    let mut terms = common::metered_offer_terms();
    terms.resource = format!("https://inference.example.com/{}", "v".repeat(200));
    terms.price_per_request = Amount(u64::MAX / 2);
    terms.min_deposit = Amount(u64::MAX);
    terms.metering = Some(x402pp_protocol::MeteringTerms {
        unit: x402pp_protocol::UnitKind::Tokens,
        unit_size: u32::MAX,
        unit_price_in: Amount(u64::MAX),
        unit_price_out: Amount(u64::MAX),
        max_per_request: Amount(u64::MAX),
    });
    let offer = Offer::sign(terms.clone(), &common::provider()).unwrap();
    let option = |scheme: &str, extra: Value| PaymentRequirements {
        scheme: scheme.into(),
        network: Network::solana_devnet(),
        amount: terms.max_per_request().to_string(),
        asset: common::mint().to_string(),
        pay_to: pubkey_of(&common::provider()).to_string(),
        max_timeout_seconds: 60,
        extra: Some(extra),
    };
    let challenge = PaymentRequired {
        x402_version: Default::default(),
        error: Some("payment required".into()),
        resource: ResourceInfo {
            url: terms.resource.clone(),
            description: Some("d".repeat(500)),
            mime_type: Some("text/event-stream".into()),
        },
        accepts: vec![
            option("exact", json!({"feePayer": pubkey_of(&common::other())})),
            option(
                "session",
                serde_json::to_value(SessionExtra {
                    offer,
                    sponsor: None,
                })
                .unwrap(),
            ),
        ],
        extensions: Some(
            json!({"bazaar": {"info": {"input": {"type": "http", "method": "POST",
            "bodyType": "json", "body": {"model": "toy", "messages": [{"role": "user", "content": "hi"}],
            "stream": true}}}}}),
        ),
    };
    let header = headers::encode(&challenge).unwrap();
    assert!(
        header.len() <= headers::MAX_HEADER_LEN,
        "{} bytes",
        header.len()
    );
    let back: PaymentRequired =
        headers::decode(headers::PAYMENT_REQUIRED, header.as_bytes()).unwrap();
    let session: SessionExtra = back.accepts[1].extra_as().unwrap();
    session.offer.verify_any().unwrap();
    assert_eq!(
        back.accepts[1].amount,
        u64::MAX.to_string(),
        "amount = maxPerRequest"
    );
}

#[test]
fn a_v3_voucher_states_accepted_and_is_signed_as_v3() {
    let signer = common::voucher_signer();
    let voucher = Voucher::sign_metered(voucher_terms(2, 1_400), Amount(400), &signer);
    let value = serde_json::to_value(&voucher).unwrap();
    assert_eq!(
        (value["version"].clone(), value["accepted"].clone()),
        (json!(3), json!("400"))
    );
    let header = headers::encode(&voucher).unwrap();
    let back: Voucher = headers::decode(headers::X402_VOUCHER, header.as_bytes()).unwrap();
    assert_eq!(back, voucher);
    assert_eq!(back.hold(), Some(1_000));
    let AnyVoucherMessage::V3(message) = back.verify_any(&pubkey_of(&signer)).unwrap() else {
        panic!("a voucher with accepted is v3");
    };
    assert_eq!((message.accepted, message.cumulative), (400, 1_400));
    assert_eq!(back.verify(&pubkey_of(&signer)).unwrap().cumulative, 1_400);

    // `accepted` is signed: another value, or dropping it, breaks the signature.
    let mut other = back.clone();
    other.accepted = Some(Amount(0));
    assert_eq!(
        other.verify(&pubkey_of(&signer)).unwrap_err().code(),
        ErrorCode::InvalidSignature
    );
    other.accepted = None;
    assert!(other.verify(&pubkey_of(&signer)).is_err());

    // A v2 voucher's JSON is unchanged: no version, no accepted.
    let v2 = serde_json::to_value(Voucher::sign(voucher_terms(1, 1_000), &signer)).unwrap();
    assert!(v2.get("version").is_none() && v2.get("accepted").is_none());
}

#[test]
fn a_voucher_whose_version_contradicts_accepted_or_that_accepts_more_than_it_authorises_is_refused()
{
    let signer = common::voucher_signer();
    let v3 = serde_json::to_value(Voucher::sign_metered(
        voucher_terms(2, 1_400),
        Amount(400),
        &signer,
    ))
    .unwrap();
    let mut as_v2 = v3.clone();
    as_v2["version"] = json!(2);
    let err = headers::decode::<Voucher>(headers::X402_VOUCHER, as_v2.to_string().as_bytes())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MalformedRequest);
    let mut v2 = serde_json::to_value(Voucher::sign(voucher_terms(1, 1_000), &signer)).unwrap();
    v2["version"] = json!(3);
    assert!(headers::decode::<Voucher>(headers::X402_VOUCHER, v2.to_string().as_bytes()).is_err());

    let greedy = Voucher::sign_metered(voucher_terms(2, 300), Amount(400), &signer);
    let err = greedy.verify(&pubkey_of(&signer)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MalformedRequest);
}

#[test]
fn a_v3_receipt_round_trips_verifies_and_hashes_its_221_bytes() {
    let provider = pubkey_of(&common::provider());
    let receipt = ok_receipt(1, 400, 400, 150, Hash32::ZERO);
    let value = serde_json::to_value(&receipt).unwrap();
    for (field, expected) in [
        ("version", json!(3)),
        ("unitsIn", json!(0)),
        ("unitsOut", json!(150)),
        ("outputBytes", json!(600)),
        ("ttfbMs", json!(40)),
        ("latencyMs", json!(40)),
        ("totalMs", json!(900)),
        ("cut", json!("none")),
        ("streamed", json!(false)),
        ("unitsEstimated", json!(false)),
    ] {
        assert_eq!(value[field], expected, "{field}");
    }
    let header = headers::encode(&receipt).unwrap();
    let back: Receipt = headers::decode(headers::X402_RECEIPT, header.as_bytes()).unwrap();
    assert_eq!(back, receipt);
    let AnyReceiptMessage::V3(message) = back.verify_any(&provider).unwrap() else {
        panic!("a metered receipt is v3");
    };
    assert_eq!(
        receipt.receipt_id,
        Hash32(x402pp_protocol::crypto::sha256(&[&message.encode()]))
    );
    assert_eq!(x402pp_protocol::receipt_hash(&message), receipt.receipt_id);
    // The v2 entry point does not hand a v3 receipt out as a v2 message.
    assert!(matches!(
        back.verify(&provider),
        Err(ProtocolError::ReceiptVersion {
            expected: 2,
            found: 3
        })
    ));
    // A v2 receipt's JSON has none of the v3 keys.
    let v2 = serde_json::to_value(
        Receipt::sign(
            common::receipt_body(1, 1_000, 1_000, 10, Hash32::ZERO),
            &common::provider(),
        )
        .unwrap(),
    )
    .unwrap();
    for field in ["version", "unitsIn", "ttfbMs", "cut", "streamed"] {
        assert!(v2.get(field).is_none(), "{field}");
    }
}

#[test]
fn a_metered_receipt_with_part_of_its_usage_or_the_wrong_version_is_malformed() {
    let value = serde_json::to_value(ok_receipt(1, 400, 400, 150, Hash32::ZERO)).unwrap();
    for (field, replacement) in [
        ("unitsOut", None),
        ("cut", Some(json!("sideways"))),
        ("version", Some(json!(2))),
        ("streamed", Some(json!("yes"))),
    ] {
        let mut broken = value.clone();
        match replacement {
            None => {
                broken.as_object_mut().unwrap().remove(field);
            }
            Some(v) => broken[field] = v,
        }
        let err = headers::decode::<Receipt>(headers::X402_RECEIPT, broken.to_string().as_bytes())
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedRequest, "{field}");
    }
}

#[test]
fn inconsistent_metered_receipts_cannot_be_signed() {
    let body = |status, cut, amount, output_bytes| {
        common::metered_receipt_body(
            1,
            amount,
            amount,
            (0, 0, output_bytes),
            status,
            cut,
            true,
            Hash32::ZERO,
        )
    };
    let refused = [
        (
            "ok with a cut",
            body(ReceiptStatus::Ok, Cut::ClientGone, 100, 10),
        ),
        (
            "partial without a cut",
            body(ReceiptStatus::Partial, Cut::None, 100, 10),
        ),
        (
            "partial without output",
            body(ReceiptStatus::Partial, Cut::ClientGone, 100, 0),
        ),
        (
            "failure charging",
            body(ReceiptStatus::HandlerError, Cut::None, 1, 0),
        ),
        (
            "timeout charging",
            body(ReceiptStatus::Timeout, Cut::IdleTimeout, 1, 0),
        ),
        ("latency is not ttfb", {
            let mut b = body(ReceiptStatus::Ok, Cut::None, 100, 10);
            b.usage.as_mut().unwrap().ttfb_ms = 41;
            b
        }),
        ("ttfb after total", {
            let mut b = body(ReceiptStatus::Ok, Cut::None, 100, 10);
            b.usage.as_mut().unwrap().total_ms = 39;
            b
        }),
    ];
    for (case, body) in refused {
        let err = Receipt::sign(body, &common::provider()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidReceipt, "{case}");
    }
    // A handler error may name its cut as a diagnostic, charging nothing.
    Receipt::sign(
        body(ReceiptStatus::HandlerError, Cut::UpstreamError, 0, 0),
        &common::provider(),
    )
    .unwrap();
}

#[test]
fn a_v2_receipt_cannot_be_partial() {
    let mut body = common::receipt_body(1, 0, 0, 10, Hash32::ZERO);
    body.status = ReceiptStatus::Partial;
    let err = Receipt::sign(body, &common::provider()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidReceipt);
}

#[test]
fn the_receipt_chain_links_v3_receipts_and_refuses_a_charging_failure() {
    let provider = pubkey_of(&common::provider());
    let first = ok_receipt(1, 400, 400, 150, Hash32::ZERO);
    let second = ok_receipt(2, 940, 1_340, 420, first.receipt_id);
    let mut chain = ReceiptChain::new(common::session());
    for receipt in [&first, &second] {
        let message = receipt.verify_any(&provider).unwrap();
        assert_eq!(chain.append(&message).unwrap(), receipt.receipt_id);
    }
    assert_eq!((chain.last_seq, chain.cumulative_charged), (2, 1_340));

    let AnyReceiptMessage::V3(third) = Receipt::sign(
        common::metered_receipt_body(
            3,
            0,
            1_340,
            (0, 0, 0),
            ReceiptStatus::Timeout,
            Cut::None,
            false,
            second.receipt_id,
        ),
        &common::provider(),
    )
    .unwrap()
    .verify_any(&provider)
    .unwrap() else {
        panic!("v3");
    };
    let charging = x402pp_protocol::messages::ReceiptMessageV3 {
        amount_charged: 5,
        cumulative_charged: 1_345,
        ..third
    };
    assert_eq!(
        chain.append(&charging).unwrap_err().code(),
        ErrorCode::InvalidReceipt
    );
    let partial = x402pp_protocol::messages::ReceiptMessageV3 {
        status: ReceiptStatus::Partial,
        cut: Cut::ClientGone,
        output_bytes: 10,
        amount_charged: 5,
        cumulative_charged: 1_345,
        ..third
    };
    chain.append(&partial).unwrap();
    // The v2 rule is untouched: a v2 failure still cannot charge.
    let mut v2_chain = ReceiptChain::new(common::session());
    let failed = ReceiptMessage {
        status: ReceiptStatus::HandlerError,
        amount_charged: 1,
        cumulative_charged: 1,
        ..common::receipt_body(1, 0, 0, 10, Hash32::ZERO).message()
    };
    assert!(v2_chain.append(&failed).is_err());
}
