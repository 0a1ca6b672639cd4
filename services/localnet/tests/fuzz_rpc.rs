//! Fuzzing of the localnet's JSON-RPC endpoint over real HTTP: arbitrary bodies, requests with
//! random methods, ids and params (hostile numbers, wrong types, keys and signatures of the wrong
//! length, broken base58/base64, unicode), batches, and byte edits of valid requests.
//!
//! The contract: every body gets a JSON-RPC 2.0 answer (`200` with a response object or batch,
//! `204` when it held only notifications, `413` when too large), no method panics (a panic is
//! answered as a bare `-32603 Internal error`), and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, missing_docs)] // tests

use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};
use x402pp_localnet::{Localnet, LocalnetConfig, MAX_REQUEST_BODY_SIZE};

struct Fixture {
    localnet: Localnet,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// One localnet (with manual slots, so the fuzzing does not race the slot timer) for every test.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let localnet = Localnet::start_blocking(LocalnetConfig {
            slot_interval: Duration::ZERO,
            ..LocalnetConfig::ephemeral()
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Fixture {
            localnet,
            runtime,
            http: reqwest::Client::new(),
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

/// POSTs `body` and checks the answer is well-formed JSON-RPC; returns the parsed answer.
fn post(body: Vec<u8>) -> Value {
    let f = fixture();
    let len = body.len();
    let (status, text) = f.runtime.block_on(async {
        let response = f
            .http
            .post(f.localnet.rpc_url())
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the localnet dropped a {len}-byte request: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    });
    match status {
        204 => return Value::Null,
        413 => {
            assert!(len > MAX_REQUEST_BODY_SIZE, "413 for a {len}-byte body");
            return Value::Null;
        }
        200 => {}
        other => panic!("HTTP {other} for a {len}-byte body: {text}"),
    }
    let answer: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    match &answer {
        Value::Object(_) => check_response(&answer),
        Value::Array(items) => {
            assert!(!items.is_empty(), "an empty batch answer");
            items.iter().for_each(check_response);
        }
        _ => panic!("not a JSON-RPC answer: {text}"),
    }
    answer
}

fn check_response(response: &Value) {
    // jsonrpc-core (like Agave) answers a request without `"jsonrpc"` in the 1.0 style, without it.
    assert!(
        response["jsonrpc"] == "2.0" || response.get("jsonrpc").is_none(),
        "{response}"
    );
    let result = response.get("result");
    let error = response.get("error");
    assert!(
        result.is_some() != error.is_some(),
        "exactly one of result and error: {response}"
    );
    if let Some(error) = error {
        let code = error["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("{response}"));
        assert!(error["message"].is_string(), "{response}");
        // A panicking method is answered with the bare internal error (server.rs).
        assert!(
            !(code == -32603 && error["message"] == "Internal error"),
            "a method panicked: {response}"
        );
    }
}

fn assert_healthy() {
    let answer = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "getHealth"})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(answer["result"], "ok", "{answer}");
}

const METHODS: &[&str] = &[
    "getHealth",
    "getVersion",
    "getGenesisHash",
    "getSlot",
    "getBlockHeight",
    "getEpochInfo",
    "getLatestBlockhash",
    "isBlockhashValid",
    "getFeeForMessage",
    "getMinimumBalanceForRentExemption",
    "getBalance",
    "getAccountInfo",
    "getMultipleAccounts",
    "getTokenAccountBalance",
    "getSignatureStatuses",
    "getTransaction",
    "sendTransaction",
    "simulateTransaction",
    "requestAirdrop",
    "localnet_info",
    "localnet_mintTo",
    "localnet_warpClock",
    "localnet_advanceSlots",
    "getEverything",
    "",
];

/// JSON text for one parameter: hostile numbers, wrong types, and strings that almost are keys,
/// signatures, hashes or transactions.
const HOSTILE: &[&str] = &[
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775809",
    "-1",
    "0",
    "1",
    "3",
    "1.5",
    "1e30",
    "1e400",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é漢字🦀\"",
    "\"11111111111111111111111111111111\"",
    "\"So11111111111111111111111111111111111111112\"",
    "\"0OIl\"",
    "{\"encoding\":\"base64\"}",
    "{\"encoding\":\"base58\"}",
    "{\"encoding\":\"jsonParsed\"}",
    "{\"encoding\":\"json\"}",
    "{\"commitment\":\"processed\"}",
    "{\"commitment\":\"finalized\",\"minContextSlot\":18446744073709551615}",
    "{\"dataSlice\":{\"offset\":18446744073709551615,\"length\":18446744073709551615}}",
    "{\"sigVerify\":true,\"replaceRecentBlockhash\":true}",
    "{\"accounts\":{\"addresses\":[\"x\"],\"encoding\":\"base64\"}}",
    "{\"unixTimestamp\":9223372036854775807}",
    "{\"unixTimestamp\":-9223372036854775808}",
    "{\"seconds\":18446744073709551615}",
    "{\"seconds\":9223372036854775807}",
    "{\"slots\":18446744073709551615}",
    "{\"owner\":\"11111111111111111111111111111111\",\"amount\":\"18446744073709551616\"}",
    "{\"owner\":\"11111111111111111111111111111111\",\"amount\":18446744073709551615}",
];

const RAW_MARKER: &str = "__x402pp_fuzz_raw_";

/// One parameter: hostile text, random bytes as base58/base64 of various lengths, or random JSON.
fn param() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0..HOSTILE.len()).prop_map(|i| json!(format!("{RAW_MARKER}{i}"))),
        2 => proptest::collection::vec(any::<u8>(), 0..100)
            .prop_map(|b| json!(bs58::encode(b).into_string())),
        2 => proptest::collection::vec(any::<u8>(), 0..1_400).prop_map(|b| json!(STANDARD.encode(b))),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        1 => proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 30..66).prop_map(|b| json!(bs58::encode(b).into_string())),
                0..4,
            )
            .prop_map(Value::Array),
    ]
}

/// Serialises `value`, splicing the raw hostile JSON texts in for their placeholders.
fn render(value: &Value) -> String {
    let mut text = value.to_string();
    for (i, raw) in HOSTILE.iter().enumerate() {
        text = text.replace(&format!("\"{RAW_MARKER}{i}\""), raw);
    }
    text
}

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u32>().prop_map(Value::from),
        "[a-z0-9]{0,8}".prop_map(Value::String),
        Just(Value::Null),
        Just(json!(1.5)),
        Just(json!([1])),
        Just(json!({"id": 1})),
    ]
}

fn version() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => Just(Some(json!("2.0"))),
        1 => Just(Some(json!("1.0"))),
        1 => Just(Some(json!(2))),
        1 => Just(None),
    ]
}

/// A request object with a random method, id and params.
fn request() -> impl Strategy<Value = Value> {
    (
        version(),
        prop::option::weighted(0.9, id()),
        prop_oneof![
            9 => proptest::sample::select(METHODS).prop_map(|m| json!(m)),
            1 => any::<String>().prop_map(Value::String),
            1 => Just(json!(7)),
        ],
        prop_oneof![
            4 => proptest::collection::vec(param(), 0..4).prop_map(Value::Array),
            2 => proptest::collection::btree_map("[a-zA-Z]{1,14}", param(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => param(),
            1 => Just(Value::Null),
        ],
        any::<bool>(),
    )
        .prop_map(|(version, id, method, params, with_params)| {
            let mut request = serde_json::Map::new();
            if let Some(version) = version {
                request.insert("jsonrpc".into(), version);
            }
            if let Some(id) = id {
                request.insert("id".into(), id);
            }
            request.insert("method".into(), method);
            if with_params {
                request.insert("params".into(), params);
            }
            Value::Object(request)
        })
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn arbitrary_bodies_get_a_json_rpc_answer(body in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        post(body);
    }

    #[test]
    fn random_calls_get_a_result_or_a_typed_error(request in request()) {
        post(render(&request).into_bytes());
    }

    #[test]
    fn batches_of_random_calls_and_junk_get_one_answer_per_call(
        items in proptest::collection::vec(
            prop_oneof![
                4 => request(),
                1 => param(),
            ],
            0..6,
        ),
    ) {
        post(render(&Value::Array(items)).into_bytes());
    }

    #[test]
    fn byte_edits_of_valid_calls_get_a_json_rpc_answer(
        request in request(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..5),
    ) {
        let mut bytes = render(&request).into_bytes();
        for (at, byte, op) in edits {
            let len = bytes.len().max(1);
            match op {
                0 => {
                    if let Some(b) = bytes.get_mut(at % len) {
                        *b = byte;
                    }
                }
                1 => bytes.truncate(at % len),
                _ => bytes.insert((at % len).min(bytes.len()), byte),
            }
        }
        post(bytes);
    }
}

#[test]
fn oversized_and_deeply_nested_bodies_get_an_answer_and_the_server_keeps_serving() {
    post(vec![b' '; MAX_REQUEST_BODY_SIZE + 1]);
    let huge_params = json!({"jsonrpc": "2.0", "id": 1, "method": "getBalance",
                             "params": ["x".repeat(MAX_REQUEST_BODY_SIZE)]});
    post(huge_params.to_string().into_bytes());
    for depth in [64, 127, 128, 129, 1_000, 20_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        post(nested.clone().into_bytes());
        let call = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"getBalance","params":{nested}}}"#);
        post(call.into_bytes());
    }
    assert_healthy();
}

#[test]
fn the_localnet_is_still_healthy_after_the_fuzzing() {
    let sample = render(&json!([
        format!("{RAW_MARKER}0"),
        format!("{RAW_MARKER}22")
    ]));
    assert_eq!(sample, format!("[{},{}]", HOSTILE[0], HOSTILE[22]));
    // Runs alongside the fuzz tests; every `post` above already checks its answer.
    for _ in 0..20 {
        assert_healthy();
    }
}
