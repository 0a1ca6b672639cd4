//! Checks the code against the committed test vectors in `tests/vectors/`.
//!
//! The vectors are what a third-party implementation tests itself against: keys, exact message
//! bytes, hashes, signatures and header values. Regenerate them (only when a layout change is
//! intended) with `X402PP_WRITE_VECTORS=1 cargo test -p x402pp-protocol --test vectors`.

#![allow(clippy::arithmetic_side_effects)] // test arithmetic on small fixed values

mod common;

use std::path::PathBuf;

use serde_json::{json, Value};
use x402pp_protocol::crypto::{pubkey_of, sha256, verify};
use x402pp_protocol::messages::{
    OfferMessage, OfferMessageV3, ReceiptMessage, ReceiptMessageV3, VoucherMessage,
    VoucherMessageV3,
};
use x402pp_protocol::{
    headers, Amount, AnyOfferMessage, AnyReceiptMessage, AnyVoucherMessage, Cut, ErrorCode, Hash32,
    Offer, Pubkey, Receipt, ReceiptChain, ReceiptLink, ReceiptStatus, Signature, Voucher,
};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/signed_messages.json")
}

fn key_entry(seed: [u8; 32]) -> Value {
    json!({ "seedHex": hex::encode(seed), "pubkey": pubkey_of(&common::key(seed)).to_string() })
}

/// Adds the group order L to the little-endian scalar `s` of a signature: the classic
/// malleability that `verify_strict` must reject.
fn malleate(signature: Signature) -> Signature {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut bytes = signature.0;
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(bytes[32 + i]) + u16::from(*l) + carry;
        bytes[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    Signature(bytes)
}

/// Builds the vector document from the fixtures. Signatures are deterministic (RFC 8032).
fn build() -> Value {
    let offer = Offer::sign(common::offer_terms(), &common::provider()).expect("signs");
    let offer_message = offer.terms.message().expect("valid terms").encode();

    let signer = common::voucher_signer();
    let vouchers: Vec<Voucher> = [(1, 1_000), (2, 2_000), (3, 2_000)]
        .into_iter()
        .map(|(seq, cumulative)| {
            Voucher::sign(
                x402pp_protocol::VoucherTerms {
                    session: common::session(),
                    opened_slot: 42,
                    seq,
                    cumulative: Amount(cumulative),
                    receipt_head: x402pp_protocol::Hash32::ZERO,
                },
                &signer,
            )
        })
        .collect();

    let mut receipts = Vec::new();
    let mut prev = Hash32::ZERO;
    for (seq, amount, cumulative, latency) in [
        (1, 1_000, 1_000, 40),
        (2, 1_000, 2_000, 900),
        (3, 0, 2_000, 5),
    ] {
        let receipt = Receipt::sign(
            common::receipt_body(seq, amount, cumulative, latency, prev),
            &common::provider(),
        )
        .expect("signs");
        prev = receipt.receipt_id;
        receipts.push(receipt);
    }

    // Metered (v3): the worked example's offer, the voucher of request 3 (accepted 1 340, hold
    // 1 000) and two receipts: request 2 complete (420 tokens: 100 + 840) and request 3 cut by
    // the agent after 37 tokens (100 + 74).
    let offer_v3 = Offer::sign(common::metered_offer_terms(), &common::provider()).expect("signs");
    let offer_v3_message = offer_v3
        .terms
        .signed_message()
        .expect("valid terms")
        .encode();
    let voucher_v3 = Voucher::sign_metered(
        x402pp_protocol::VoucherTerms {
            session: common::session(),
            opened_slot: 42,
            seq: 3,
            cumulative: Amount(2_340),
            receipt_head: Hash32([0xab; 32]),
        },
        Amount(1_340),
        &signer,
    );
    let receipt_v3_ok = Receipt::sign(
        common::metered_receipt_body(
            2,
            940,
            1_340,
            (12, 420, 1_890),
            ReceiptStatus::Ok,
            Cut::None,
            true,
            Hash32([0xcd; 32]),
        ),
        &common::provider(),
    )
    .expect("signs");
    let receipt_v3_partial = Receipt::sign(
        common::metered_receipt_body(
            3,
            174,
            1_514,
            (12, 37, 166),
            ReceiptStatus::Partial,
            Cut::ClientGone,
            true,
            receipt_v3_ok.receipt_id,
        ),
        &common::provider(),
    )
    .expect("signs");
    let metered_receipt = |r: &Receipt| {
        json!({
            "json": r,
            "messageHex": hex::encode(r.body.signed_message().signed_bytes()),
            "receiptHash": r.receipt_id.to_string(),
            "header": headers::encode(r).expect("encodes"),
        })
    };

    let voucher_bytes = vouchers[0].message().encode();
    let weak_key = Pubkey({
        let mut identity = [0u8; 32];
        identity[0] = 1;
        identity
    });
    let weak_signature = Signature({
        let mut sig = [0u8; 64];
        sig[0] = 1;
        sig
    });

    json!({
        "description": "x402++ signed-message test vectors. Keys are ed25519 seeds (RFC 8032); messages are the fixed binary layouts of docs/protocol.md; signatures are over the message bytes; hashes are sha256 of the message bytes; headers are base64 of compact JSON.",
        "keys": {
            "provider": key_entry(common::PROVIDER_SEED),
            "agent": key_entry(common::AGENT_SEED),
            "voucherSigner": key_entry(common::VOUCHER_SIGNER_SEED),
            "other": key_entry(common::OTHER_SEED),
        },
        "offer": {
            "json": offer,
            "messageHex": hex::encode(offer_message),
            "offerHash": hex::encode(sha256(&[&offer_message])),
            "resourceHash": hex::encode(sha256(&[offer.terms.resource.as_bytes()])),
            "header": headers::encode(&offer).expect("encodes"),
        },
        "vouchers": vouchers.iter().map(|v| json!({
            "json": v,
            "messageHex": hex::encode(v.message().encode()),
            "header": headers::encode(v).expect("encodes"),
        })).collect::<Vec<_>>(),
        "receipts": receipts.iter().map(|r| json!({
            "json": r,
            "messageHex": hex::encode(r.body.message().encode()),
            "receiptHash": r.receipt_id.to_string(),
            "header": headers::encode(r).expect("encodes"),
        })).collect::<Vec<_>>(),
        "offer_v3": {
            "json": offer_v3,
            "messageHex": hex::encode(&offer_v3_message),
            "offerHash": hex::encode(sha256(&[&offer_v3_message])),
            "header": headers::encode(&offer_v3).expect("encodes"),
        },
        "voucher_v3": {
            "json": voucher_v3,
            "messageHex": hex::encode(voucher_v3.signed_message().encode()),
            "header": headers::encode(&voucher_v3).expect("encodes"),
        },
        "receipt_v3_ok": metered_receipt(&receipt_v3_ok),
        "receipt_v3_partial": metered_receipt(&receipt_v3_partial),
        "inputHash": {
            "method": "POST", "pathAndQuery": "/v1/inference", "body": "{\"prompt\":\"hi\"}",
            "hash": x402pp_protocol::crypto::input_hash("POST", "/v1/inference", b"{\"prompt\":\"hi\"}").to_string(),
        },
        "rejections": [
            {
                "case": "voucher_signed_by_another_key",
                "messageHex": hex::encode(voucher_bytes),
                "pubkey": pubkey_of(&common::voucher_signer()).to_string(),
                "signature": Voucher::sign(x402pp_protocol::VoucherTerms { session: common::session(), opened_slot: 42, seq: 1, cumulative: Amount(1_000), receipt_head: x402pp_protocol::Hash32::ZERO }, &common::other()).signature.to_string(),
                "error": "invalid_signature",
            },
            {
                "case": "malleable_signature_s_plus_l",
                "messageHex": hex::encode(voucher_bytes),
                "pubkey": pubkey_of(&common::voucher_signer()).to_string(),
                "signature": malleate(vouchers[0].signature).to_string(),
                "error": "invalid_signature",
            },
            {
                "case": "small_order_key_with_identity_signature",
                "messageHex": hex::encode(voucher_bytes),
                "pubkey": weak_key.to_string(),
                "signature": weak_signature.to_string(),
                "error": "invalid_signature",
            },
            {
                "case": "tampered_message_cumulative",
                "messageHex": hex::encode(VoucherMessage { cumulative: 1_001, ..vouchers[0].message() }.encode()),
                "pubkey": pubkey_of(&common::voucher_signer()).to_string(),
                "signature": vouchers[0].signature.to_string(),
                "error": "invalid_signature",
            },
        ],
    })
}

fn load() -> Value {
    let text = std::fs::read_to_string(vectors_path()).expect("vectors file is committed");
    serde_json::from_str(&text).expect("vectors file is JSON")
}

#[test]
fn committed_vectors_match_the_code() {
    let built = build();
    if std::env::var_os("X402PP_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&built).expect("serialises") + "\n";
        std::fs::write(vectors_path(), text).expect("writes vectors");
    }
    assert_eq!(
        load(),
        built,
        "code and committed vectors disagree; see the module docs"
    );
}

fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn offer_vector_decodes_verifies_and_hashes() {
    let v = load();
    let offer: Offer = serde_json::from_value(v["offer"]["json"].clone()).expect("offer JSON");
    let message = bytes(&v["offer"]["messageHex"]);
    assert_eq!(message.len(), OfferMessage::LEN);
    assert_eq!(offer.verify().expect("verifies").encode().to_vec(), message);
    assert_eq!(
        offer.offer_hash().expect("hashes").to_string(),
        v["offer"]["offerHash"]
    );
    let decoded = OfferMessage::decode(&message).expect("decodes");
    assert_eq!(decoded.price_per_request, 1_000);
    assert_eq!(decoded.max_input_bytes, 65_536);
    let from_header: Offer = headers::decode(
        headers::X402_OFFER,
        v["offer"]["header"].as_str().expect("str").as_bytes(),
    )
    .expect("header decodes");
    assert_eq!(from_header, offer);
}

#[test]
fn voucher_vectors_verify_against_the_voucher_signer() {
    let v = load();
    let signer: Pubkey = v["keys"]["voucherSigner"]["pubkey"]
        .as_str()
        .expect("str")
        .parse()
        .expect("key");
    for entry in v["vouchers"].as_array().expect("array") {
        let voucher: Voucher = serde_json::from_value(entry["json"].clone()).expect("voucher JSON");
        let message = voucher.verify(&signer).expect("verifies");
        assert_eq!(message.encode().to_vec(), bytes(&entry["messageHex"]));
        assert_eq!(
            VoucherMessage::decode(&bytes(&entry["messageHex"])),
            Ok(message)
        );
    }
}

#[test]
fn receipt_vectors_form_a_valid_chain() {
    let v = load();
    let provider: Pubkey = v["keys"]["provider"]["pubkey"]
        .as_str()
        .expect("str")
        .parse()
        .expect("key");
    let mut chain = ReceiptChain::new(common::session());
    for entry in v["receipts"].as_array().expect("array") {
        let receipt: Receipt = serde_json::from_value(entry["json"].clone()).expect("receipt JSON");
        let message = receipt.verify(&provider).expect("verifies");
        assert_eq!(message.encode().to_vec(), bytes(&entry["messageHex"]));
        assert_eq!(
            ReceiptMessage::decode(&bytes(&entry["messageHex"])),
            Ok(message)
        );
        assert_eq!(
            chain
                .append(&message)
                .expect("continues the chain")
                .to_string(),
            entry["receiptHash"]
        );
    }
    assert_eq!(chain.last_seq, 3);
    assert_eq!(chain.cumulative_charged, 2_000);
}

#[test]
fn rejection_vectors_fail_strict_verification_with_their_code() {
    let v = load();
    for case in v["rejections"].as_array().expect("array") {
        let pubkey: Pubkey = case["pubkey"].as_str().expect("str").parse().expect("key");
        let signature: Signature = case["signature"]
            .as_str()
            .expect("str")
            .parse()
            .expect("sig");
        let err = verify(&pubkey, &bytes(&case["messageHex"]), &signature)
            .expect_err(case["case"].as_str().expect("name"));
        assert_eq!(err.code().as_str(), case["error"], "{}", case["case"]);
        assert_eq!(err.code(), ErrorCode::InvalidSignature);
    }
}

#[test]
fn small_order_vector_is_accepted_by_lax_verification_so_strictness_matters() {
    let v = load();
    let case = &v["rejections"][2];
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        &case["pubkey"]
            .as_str()
            .expect("str")
            .parse::<Pubkey>()
            .expect("key")
            .0,
    )
    .expect("identity point decodes");
    let sig = ed25519_dalek::Signature::from_bytes(
        &case["signature"]
            .as_str()
            .expect("str")
            .parse::<Signature>()
            .expect("sig")
            .0,
    );
    assert!(key
        .verify_strict(&bytes(&case["messageHex"]), &sig)
        .is_err());
    use ed25519_dalek::Verifier as _;
    assert!(
        key.verify(&bytes(&case["messageHex"]), &sig).is_ok(),
        "lax verify accepts the weak key"
    );
}

#[test]
fn the_v3_offer_vector_verifies_as_its_206_bytes() {
    let v = load();
    let entry = &v["offer_v3"];
    let offer: Offer = serde_json::from_value(entry["json"].clone()).expect("offer JSON");
    assert_eq!(entry["json"]["version"], 3);
    let message = bytes(&entry["messageHex"]);
    assert_eq!(message.len(), OfferMessageV3::LEN);
    let AnyOfferMessage::V3(signed) = offer.verify_any().expect("verifies") else {
        panic!("a metered offer is signed as v3");
    };
    assert_eq!(signed.encode().to_vec(), message);
    assert_eq!(OfferMessageV3::decode(&message), Ok(signed));
    assert_eq!(
        (
            signed.offer.price_per_request,
            signed.metering.max_per_request
        ),
        (100, 1_000)
    );
    assert_eq!(
        offer.offer_hash().expect("hashes").to_string(),
        entry["offerHash"]
    );
    let from_header: Offer = headers::decode(
        headers::X402_OFFER,
        entry["header"].as_str().expect("str").as_bytes(),
    )
    .expect("header decodes");
    assert_eq!(from_header, offer);
}

#[test]
fn the_v3_voucher_vector_verifies_as_its_113_bytes() {
    let v = load();
    let entry = &v["voucher_v3"];
    let signer: Pubkey = v["keys"]["voucherSigner"]["pubkey"]
        .as_str()
        .expect("str")
        .parse()
        .expect("key");
    let voucher: Voucher = serde_json::from_value(entry["json"].clone()).expect("voucher JSON");
    assert_eq!(entry["json"]["accepted"], "1340");
    let AnyVoucherMessage::V3(signed) = voucher.verify_any(&signer).expect("verifies") else {
        panic!("a voucher with accepted is signed as v3");
    };
    let message = bytes(&entry["messageHex"]);
    assert_eq!(message.len(), VoucherMessageV3::LEN);
    assert_eq!(signed.encode().to_vec(), message);
    assert_eq!(VoucherMessageV3::decode(&message), Ok(signed));
    assert_eq!(signed.hold(), 1_000);
}

#[test]
fn the_v3_receipt_vectors_verify_as_their_221_bytes_and_link() {
    let v = load();
    let provider: Pubkey = v["keys"]["provider"]["pubkey"]
        .as_str()
        .expect("str")
        .parse()
        .expect("key");
    // The chain as it stood after receipt 1 (the vectors start at receipt 2).
    let mut chain = ReceiptChain {
        session: common::session(),
        last_seq: 1,
        head: Hash32([0xcd; 32]),
        cumulative_charged: 400,
    };
    for (name, status) in [
        ("receipt_v3_ok", ReceiptStatus::Ok),
        ("receipt_v3_partial", ReceiptStatus::Partial),
    ] {
        let entry = &v[name];
        let receipt: Receipt = serde_json::from_value(entry["json"].clone()).expect("JSON");
        let AnyReceiptMessage::V3(signed) = receipt.verify_any(&provider).expect("verifies") else {
            panic!("{name} is signed as v3");
        };
        let message = bytes(&entry["messageHex"]);
        assert_eq!(message.len(), ReceiptMessageV3::LEN, "{name}");
        assert_eq!(signed.encode().to_vec(), message, "{name}");
        assert_eq!(ReceiptMessageV3::decode(&message), Ok(signed), "{name}");
        assert_eq!(signed.status, status);
        assert_eq!(
            Hash32(sha256(&[&message])).to_string(),
            entry["receiptHash"],
            "the receipt hash is the sha256 of the 221 bytes"
        );
        assert_eq!(
            chain.append(&signed).expect("links").to_string(),
            entry["receiptHash"]
        );
        let from_header: Receipt = headers::decode(
            headers::X402_RECEIPT,
            entry["header"].as_str().expect("str").as_bytes(),
        )
        .expect("header decodes");
        assert_eq!(from_header, receipt);
    }
    assert_eq!((chain.last_seq, chain.cumulative_charged), (3, 1_514));
}
