//! Fuzzing of the facilitator's `POST /verify` and `POST /settle` bodies over real HTTP:
//! arbitrary bytes, hostile values in every field of a valid request (out-of-range, negative and
//! float numbers, wrong types, unicode, keys of the wrong length), byte edits of the payment
//! transaction (reaching the bincode decoder, sanitisation and the exact-scheme checks), and
//! transactions with random instruction lists.
//!
//! The contract: a body that is not a facilitator request gets a 4xx with a JSON
//! `{"error": ..., "message": ...}`; a request gets `200` with a `VerifyResponse` /
//! `SettleResponse` (invalid here: the RPC behind it is down); never a 5xx or a dropped
//! connection.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, missing_docs)] // tests

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::hash::Hash;
use solana_sdk::instruction::{AccountMeta, Instruction};
use solana_sdk::message::{v0, VersionedMessage};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;
use x402pp_facilitator::MAX_BODY_BYTES;
use x402pp_protocol::Network;
use x402pp_solana::exact::client::{build_transaction, PaymentPlan};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};
use x402pp_solana::exact::ExactRequirements;
use x402pp_solana::token;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    url: String,
    http: reqwest::Client,
    fee_payer: Pubkey,
    payer: Keypair,
    asset: Pubkey,
    pay_to: Pubkey,
}

/// The facilitator on a free port, its RPC pointing at a closed port (every chain check fails
/// fast, so only the decoding and the static checks are exercised).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fee_payer = Arc::new(Keypair::new());
        let rpc = Arc::new(RpcClient::new("http://127.0.0.1:9".into()));
        let facilitator = Arc::new(ExactFacilitator::new(
            rpc.clone(),
            fee_payer.clone(),
            FacilitatorConfig::new(Network::solana_devnet()),
        ));
        let state = x402pp_facilitator::AppState::new(facilitator, rpc);
        let addr = runtime.block_on(async {
            let (addr, _task) = x402pp_facilitator::serve("127.0.0.1:0".parse().unwrap(), state)
                .await
                .unwrap();
            addr
        });
        Fixture {
            runtime,
            url: format!("http://{addr}"),
            // A fresh connection per request: a pooled keep-alive connection can be closed by
            // the server just as the client reuses it (hyper's "connection closed before
            // message completed"), which would be the pool's race, not the body's answer.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            fee_payer: fee_payer.pubkey(),
            payer: Keypair::new(),
            asset: Pubkey::new_unique(),
            pay_to: Pubkey::new_unique(),
        }
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PRICE: u64 = 1_000;

fn requirements_json(f: &Fixture) -> Value {
    json!({
        "scheme": "exact",
        "network": Network::SOLANA_DEVNET,
        "amount": PRICE.to_string(),
        "asset": f.asset.to_string(),
        "payTo": f.pay_to.to_string(),
        "maxTimeoutSeconds": 60,
        "extra": {"feePayer": f.fee_payer.to_string()},
    })
}

/// A valid exact payment transaction (client-signed, fee-payer slot empty).
fn valid_transaction(f: &Fixture) -> VersionedTransaction {
    let plan = PaymentPlan {
        requirements: ExactRequirements {
            amount: PRICE,
            asset: f.asset,
            pay_to: f.pay_to,
            fee_payer: f.fee_payer,
            memo: None,
        },
        token_program: token::TOKEN_PROGRAM_ID,
        decimals: 6,
        blockhash: Hash::new_from_array([7; 32]),
        compute_unit_limit: 20_000,
        compute_unit_price: 1,
    };
    build_transaction(&f.payer, &plan).unwrap()
}

fn request_json(f: &Fixture, transaction: &str) -> Value {
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "resource": {"url": "http://127.0.0.1/v1/inference"},
            "accepted": requirements_json(f),
            "payload": {"transaction": transaction},
        },
        "paymentRequirements": requirements_json(f),
    })
}

/// POSTs `body` to `/verify` and `/settle` and checks each answer.
fn post_both(body: &[u8]) {
    post("/verify", body.to_vec());
    post("/settle", body.to_vec());
}

fn post(path: &str, body: Vec<u8>) {
    let f = fixture();
    let len = body.len();
    let (status, text) = f.runtime.block_on(async {
        let send = || {
            f.http
                .post(format!("{}{path}", f.url))
                .header("content-type", "application/json")
                .body(body.clone())
                .timeout(Duration::from_secs(30))
                .send()
        };
        // A connection-level failure is tried once more on a new connection: a body the
        // server drops the connection for is dropped both times (the contract is about the
        // body, and a busy machine can fail one connection).
        let response = match send().await {
            Ok(response) => response,
            Err(first) => send().await.unwrap_or_else(|e| {
                panic!("{path} dropped a {len}-byte body twice: {first:?}; then {e:?}")
            }),
        };
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    });
    let answer: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} answered HTTP {status} without JSON ({e}): {text}"));
    match status {
        200 => {
            if path == "/verify" {
                assert_eq!(answer["isValid"], false, "{answer}");
                assert!(answer["invalidReason"].is_string(), "{answer}");
            } else {
                assert_eq!(answer["success"], false, "{answer}");
                assert!(answer["errorReason"].is_string(), "{answer}");
                assert_eq!(answer["network"], Network::SOLANA_DEVNET, "{answer}");
            }
        }
        400..=499 => {
            assert!(answer["error"].is_string(), "{path} {status}: {answer}");
            assert!(answer["message"].is_string(), "{path} {status}: {answer}");
            if status == 413 {
                assert!(len > MAX_BODY_BYTES, "413 for {len} bytes");
            }
        }
        other => panic!("{path} answered HTTP {other} to a {len}-byte body: {text}"),
    }
}

const HOSTILE: &[&str] = &[
    "18446744073709551616",
    "18446744073709551615",
    "-9223372036854775809",
    "-1",
    "0",
    "1.5",
    "1e30",
    "1e400",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"-1\"",
    "\"1e30\"",
    "\"18446744073709551616\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é漢字🦀\"",
    "\"11111111111111111111111111111111\"",
    "\"1111111111111111111111111111111\"",
    "\"0OIl\"",
    "\"solana:\"",
    "\"eip155:8453\"",
    "\"session\"",
    "1",
    "2",
    "3",
];

const RAW_MARKER: &str = "__x402pp_fuzz_raw_";

fn render(value: &Value) -> String {
    let mut text = value.to_string();
    for (i, raw) in HOSTILE.iter().enumerate() {
        text = text.replace(&format!("\"{RAW_MARKER}{i}\""), raw);
    }
    text
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0..HOSTILE.len()).prop_map(|i| json!(format!("{RAW_MARKER}{i}"))),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        2 => proptest::collection::vec(any::<u8>(), 0..70).prop_map(|b| json!(bs58::encode(b).into_string())),
        2 => proptest::collection::vec(any::<u8>(), 0..1_300).prop_map(|b| json!(STANDARD.encode(b))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path of `value`, as JSON pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(v, p, out);
            }
        }
        _ => {}
    }
}

/// Byte edits: (position, byte, op) with op 0 = overwrite, 1 = truncate, 2 = insert, 3 = flip.
fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..5)
}

fn apply(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        let len = bytes.len().max(1);
        match op {
            0 => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = byte;
                }
            }
            1 => bytes.truncate(at % len),
            2 => bytes.insert((at % len).min(bytes.len()), byte),
            _ => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= 1 << (byte % 8);
                }
            }
        }
    }
    bytes
}

/// A program id for a random instruction: one the checks look for, or anything.
fn program() -> impl Strategy<Value = Pubkey> {
    prop_oneof![
        Just(solana_compute_budget_interface::id()),
        Just(token::TOKEN_PROGRAM_ID),
        Just(token::TOKEN_2022_PROGRAM_ID),
        Just(token::MEMO_PROGRAM_ID),
        Just(token::LIGHTHOUSE_PROGRAM_ID),
        Just(token::SYSTEM_PROGRAM_ID),
        any::<[u8; 32]>().prop_map(Pubkey::new_from_array),
    ]
}

/// A random instruction: program, data, and (key index, signer, writable) per account.
type RandomInstruction = (Pubkey, Vec<u8>, Vec<(u8, bool, bool)>);

fn instruction() -> impl Strategy<Value = RandomInstruction> {
    (
        program(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..12),
            (any::<u32>()).prop_map(|n| {
                let mut d = vec![2];
                d.extend_from_slice(&n.to_le_bytes());
                d
            }),
            (any::<u64>()).prop_map(|n| {
                let mut d = vec![3];
                d.extend_from_slice(&n.to_le_bytes());
                d
            }),
            (any::<u64>(), any::<u8>()).prop_map(|(n, dec)| {
                let mut d = vec![12];
                d.extend_from_slice(&n.to_le_bytes());
                d.push(dec);
                d
            }),
        ],
        proptest::collection::vec((0u8..6, any::<bool>(), any::<bool>()), 0..5),
    )
}

/// A transaction with random instructions over a few well-known accounts, signed by the payer.
fn random_transaction(
    f: &Fixture,
    instructions: &[RandomInstruction],
) -> Option<VersionedTransaction> {
    let source =
        token::associated_token_address(&f.payer.pubkey(), &f.asset, &token::TOKEN_PROGRAM_ID);
    let destination =
        token::associated_token_address(&f.pay_to, &f.asset, &token::TOKEN_PROGRAM_ID);
    let keys = [
        source,
        f.asset,
        destination,
        f.payer.pubkey(),
        f.fee_payer,
        Pubkey::new_unique(),
    ];
    let instructions: Vec<Instruction> = instructions
        .iter()
        .map(|(program, data, accounts)| Instruction {
            program_id: *program,
            accounts: accounts
                .iter()
                .map(|&(i, signer, writable)| {
                    let key = keys[usize::from(i) % keys.len()];
                    if writable {
                        AccountMeta::new(key, signer)
                    } else {
                        AccountMeta::new_readonly(key, signer)
                    }
                })
                .collect(),
            data: data.clone(),
        })
        .collect();
    let message =
        v0::Message::try_compile(&f.fee_payer, &instructions, &[], Hash::new_unique()).ok()?;
    let message = VersionedMessage::V0(message);
    let signers = usize::from(message.header().num_required_signatures);
    let mut signatures = vec![Signature::default(); signers];
    if let Some(i) = message
        .static_account_keys()
        .iter()
        .take(signers)
        .position(|k| *k == f.payer.pubkey())
    {
        signatures[i] = f.payer.sign_message(&message.serialize());
    }
    Some(VersionedTransaction {
        signatures,
        message,
    })
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn arbitrary_bodies_get_a_json_answer_and_never_a_5xx(
        body in proptest::collection::vec(any::<u8>(), 0..3_000),
    ) {
        post_both(&body);
    }

    #[test]
    fn hostile_values_in_any_field_of_a_valid_request_get_a_json_answer(
        pick in any::<prop::sample::Index>(),
        with in prop::option::weighted(0.9, json_value()),
        second in prop::option::of((any::<prop::sample::Index>(), json_value())),
    ) {
        let f = fixture();
        let tx = bincode::serialize(&valid_transaction(f)).unwrap();
        let mut request = request_json(f, &STANDARD.encode(tx));
        for (pick, with) in [(pick, with)].into_iter().chain(second.map(|(p, w)| (p, Some(w)))) {
            let mut all = Vec::new();
            pointers(&request, String::new(), &mut all);
            let pointer = &all[pick.index(all.len())];
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match (request.pointer_mut(parent), with) {
                (Some(Value::Object(map)), Some(v)) => {
                    map.insert(key.to_owned(), v);
                }
                (Some(Value::Object(map)), None) => {
                    map.remove(key);
                }
                (Some(Value::Array(items)), Some(v)) => items[key.parse::<usize>().unwrap()] = v,
                _ => {}
            }
        }
        post_both(render(&request).as_bytes());
    }

    #[test]
    fn byte_edits_of_a_valid_payment_transaction_get_a_verdict(edits in edits()) {
        let f = fixture();
        let tx = bincode::serialize(&valid_transaction(f)).unwrap();
        let request = request_json(f, &STANDARD.encode(apply(tx, &edits)));
        post_both(request.to_string().as_bytes());
    }

    #[test]
    fn byte_edits_of_a_valid_request_body_get_a_json_answer(edits in edits()) {
        let f = fixture();
        let tx = bincode::serialize(&valid_transaction(f)).unwrap();
        let request = request_json(f, &STANDARD.encode(tx));
        post_both(&apply(request.to_string().into_bytes(), &edits));
    }

    #[test]
    fn transactions_with_random_instructions_get_a_verdict(
        instructions in proptest::collection::vec(instruction(), 0..9),
        signatures in prop::option::of(0usize..4),
    ) {
        let f = fixture();
        if let Some(mut tx) = random_transaction(f, &instructions) {
            if let Some(n) = signatures {
                tx.signatures.resize(n, Signature::default());
            }
            let request = request_json(f, &STANDARD.encode(bincode::serialize(&tx).unwrap()));
            post_both(request.to_string().as_bytes());
        }
    }
}

#[test]
fn the_valid_request_passes_the_static_checks_and_fails_only_at_the_chain() {
    let f = fixture();
    let tx = bincode::serialize(&valid_transaction(f)).unwrap();
    let body = request_json(f, &STANDARD.encode(tx)).to_string();
    let answer: Value = f.runtime.block_on(async {
        f.http
            .post(format!("{}/verify", f.url))
            .body(body)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    // The mutations start from a payment that only the (unreachable) chain refuses.
    assert_eq!(
        answer["invalidReason"], "unexpected_verify_error",
        "{answer}"
    );
}

#[test]
fn oversized_and_deeply_nested_bodies_get_a_json_4xx() {
    post_both(&vec![b'{'; MAX_BODY_BYTES + 1]);
    post_both(&vec![b' '; 10 * MAX_BODY_BYTES]);
    for depth in [128, 129, 10_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        post_both(nested.as_bytes());
        let f = fixture();
        let mut request = request_json(f, "AAAA");
        request["paymentPayload"]["payload"] = json!("__nested__");
        let text = request.to_string().replace("\"__nested__\"", &nested);
        post_both(text.as_bytes());
    }
}
