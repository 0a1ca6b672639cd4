//! The reference provider's chat route (`POST /v1/chat/completions`, the toy model
//! `x402pp-toy-1`) paid with metered sessions, over real HTTP against a real localnet: the
//! world serves the reference app with the route priced as the binary prices it by default
//! (`--base-price 100 --price-out 2000 --max-per-request 1000`), and agents pay with raw v3
//! vouchers. Streams arrive word by word and end with their verified receipt, the voucher's hold
//! bounds the answer, and each answer is charged its usage (docs/server.md, "The reference
//! provider"; docs/protocol.md §10).
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use x402pp_openai::SseParser;
use x402pp_protocol::crypto::output_hash;
use x402pp_protocol::{headers, Cut, ErrorBody, ErrorCode, Metering, ReceiptStatus, UnitKind};
use x402pp_provider::{AppOptions, CHAT_PATH};
use x402pp_server::RoutePrice;
use x402pp_testkit::{receipt_header, split_receipt_block, MeteredSession, World};

const BASE: u64 = 100;
const PRICE_OUT: u64 = 2_000;
/// The most a request may cost, the default hold.
const MAX: u64 = 1_000;
const DEPOSIT: u64 = 100_000;

/// The chat route as `x402pp provider` prices it by default (`Args::chat_route`).
fn chat_route() -> RoutePrice {
    RoutePrice::metered(
        BASE,
        Metering {
            unit_price_in: 0,
            unit_price_out: PRICE_OUT,
            unit_size: 1_000,
            max_per_request: MAX,
            unit_kind: UnitKind::Tokens,
        },
    )
}

/// The charge of a complete answer of `completion` tokens: base + ceil(tokens × 2 000 / 1 000).
fn charge_of(completion: u64) -> u64 {
    BASE + (completion * PRICE_OUT).div_ceil(1_000)
}

/// The reference app with the chat route priced, injected latency allowed.
async fn world() -> World {
    World::builder()
        .reference_app(AppOptions {
            allow_injected_latency: true,
        })
        .route(CHAT_PATH, chat_route())
        .start()
        .await
        .unwrap()
}

async fn open(w: &World) -> MeteredSession {
    w.open_metered_session(CHAT_PATH, DEPOSIT).await.unwrap()
}

fn ask(max_tokens: u64, stream: bool) -> Value {
    json!({"model": "x402pp-toy-1", "stream": stream, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "Explain x402 in one line"}]})
}

/// The JSON of each event of an SSE answer (`[DONE]` as the string).
fn events_in(bytes: &[u8]) -> Vec<Value> {
    SseParser::new()
        .feed(bytes)
        .into_iter()
        .map(|event| {
            let event = event.unwrap();
            if event.is_done() {
                json!("[DONE]")
            } else {
                serde_json::from_str(&event.data).unwrap()
            }
        })
        .collect()
}

/// The words (content deltas) among `events`.
fn words(events: &[Value]) -> u64 {
    events
        .iter()
        .filter(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|text| !text.is_empty())
        })
        .count() as u64
}

#[tokio::test]
async fn a_paid_streamed_chat_completion_arrives_token_by_token_and_ends_with_a_verified_receipt() {
    const TOKENS: u64 = 12;
    const TOKEN_DELAY_MS: u64 = 250;
    let w = world().await;
    let mut agent = open(&w).await;
    let voucher = agent.voucher(MAX);
    let mut body = ask(TOKENS, true);
    body["stream_options"] = json!({"include_usage": true});
    body["token_delay_ms"] = json!(TOKEN_DELAY_MS);
    let sent = Instant::now();
    let mut response = w
        .paid_streamed(CHAT_PATH, &agent.session(), &voucher)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[headers::X402_RECEIPT_MODE],
        headers::RECEIPT_MODE_SSE_EVENT
    );
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());

    // The first word arrives on its own. The toy waits token_delay_ms before each word, so its
    // last word cannot exist before TOKENS × 250 ms after the request was sent: a first word
    // read earlier was streamed, not buffered.
    let mut received = Vec::new();
    while words(&events_in(&received)) == 0 {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("a word before the end");
        received.extend_from_slice(&chunk);
    }
    let first_word = sent.elapsed();
    let earliest_last_word = Duration::from_millis(TOKENS * TOKEN_DELAY_MS);
    assert!(
        first_word < earliest_last_word,
        "the first word came after {first_word:?}, when the last could already exist"
    );
    assert_eq!(words(&events_in(&received)), 1);
    assert!(!String::from_utf8_lossy(&received).contains("x402-receipt"));

    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    let (answer, receipt) = split_receipt_block(&received).unwrap();
    let events = events_in(answer);
    // Role, the words, finish, usage, [DONE].
    assert_eq!(words(&events), TOKENS);
    assert_eq!(events.len() as u64, 1 + TOKENS + 1 + 1 + 1);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let reported = &events[events.len() - 2]["usage"];
    assert_eq!(reported["completion_tokens"], json!(TOKENS));

    // The receipt charges what the stream says it used, over exactly the bytes streamed.
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Ok);
    assert_eq!(usage.cut, Cut::None);
    assert_eq!(
        (usage.units_in, usage.units_out),
        (
            reported["prompt_tokens"].as_u64().unwrap(),
            reported["completion_tokens"].as_u64().unwrap()
        )
    );
    assert!(usage.units_in > 0 && !usage.units_estimated);
    assert!(usage.streamed);
    assert_eq!(usage.output_bytes, answer.len() as u64);
    assert_eq!(receipt.body.output_hash, output_hash(answer));
    // The first billable frame waited one delay, the whole answer all of them.
    assert!(u64::from(usage.ttfb_ms) >= TOKEN_DELAY_MS, "{usage:?}");
    assert!(
        u64::from(usage.total_ms) >= TOKENS * TOKEN_DELAY_MS,
        "{usage:?}"
    );
    agent.accept(&voucher, &receipt, charge_of(TOKENS)).unwrap();
}

#[tokio::test]
async fn the_hold_bounds_max_tokens_and_the_charge_never_exceeds_it() {
    let w = world().await;
    let mut agent = open(&w).await;
    let session = agent.session();
    // Each asks for the toy's most, 256 words; the hold affords floor((hold − 100) / 2) of them.
    for (hold, stream, affordable) in [
        (120, false, 10),
        (150, true, 25),
        (333, false, 116),
        (MAX, true, 256),
    ] {
        let voucher = agent.voucher(hold);
        let response = w
            .paid_streamed(CHAT_PATH, &session, &voucher)
            .json(&ask(256, stream))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "hold {hold}");
        let (completion, receipt) = if stream {
            let bytes = response.bytes().await.unwrap();
            let (answer, receipt) = split_receipt_block(&bytes).unwrap();
            let events = events_in(answer);
            assert_eq!(
                events[events.len() - 2]["choices"][0]["finish_reason"],
                json!("length")
            );
            (words(&events), receipt)
        } else {
            let receipt = receipt_header(&response).unwrap();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["choices"][0]["finish_reason"], json!("length"));
            (
                answer["usage"]["completion_tokens"].as_u64().unwrap(),
                receipt,
            )
        };
        assert_eq!(completion, affordable, "hold {hold}");
        assert_eq!(receipt.body.usage.unwrap().units_out, affordable);
        let charge = charge_of(affordable);
        assert!(charge <= hold, "hold {hold}, charge {charge}");
        agent.accept(&voucher, &receipt, charge).unwrap();
    }
    // 120 + 150 + 332 + 612.
    assert_eq!(agent.accepted, 1_214);

    // A hold that pays the base and not one word: 400, receipted and charged nothing.
    let voucher = agent.voucher(BASE + 1);
    let response = w
        .paid(CHAT_PATH, &session, &voucher)
        .json(&ask(8, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let receipt = receipt_header(&response).unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], json!("max_tokens_unaffordable"));
    assert_eq!(receipt.body.status, ReceiptStatus::HandlerError);
    agent.accept(&voucher, &receipt, 0).unwrap();

    // A hold below the base or above the route's maximum is refused before anything is served.
    for hold in [BASE - 1, MAX + 1] {
        let response = w
            .paid(CHAT_PATH, &session, &agent.voucher(hold))
            .json(&ask(8, false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 402, "hold {hold}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], json!("invalid_hold"));
    }
    assert_eq!(agent.accepted, 1_214);
}

#[tokio::test]
async fn a_buffered_chat_completion_is_charged_its_usage() {
    let w = world().await;
    let mut agent = open(&w).await;
    let session = agent.session();
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(CHAT_PATH, &session, &voucher)
        .json(&ask(8, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(headers::X402_RECEIPT_MODE).is_none());
    let receipt = receipt_header(&response).unwrap();
    let body = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["object"], json!("chat.completion"));
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Ok);
    assert_eq!(
        (usage.units_in, usage.units_out),
        (
            answer["usage"]["prompt_tokens"].as_u64().unwrap(),
            answer["usage"]["completion_tokens"].as_u64().unwrap()
        )
    );
    assert_eq!(usage.units_out, 8);
    assert!(!usage.streamed && !usage.units_estimated);
    assert_eq!(usage.output_bytes, body.len() as u64);
    assert_eq!(receipt.body.output_hash, output_hash(&body));
    agent.accept(&voucher, &receipt, charge_of(8)).unwrap();

    // A stream without the receipt mode (a plain OpenAI client) is buffered the same way: the
    // whole stream, the receipt in the header, charged its words.
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(CHAT_PATH, &session, &voucher)
        .json(&ask(5, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt = receipt_header(&response).unwrap();
    let body = response.bytes().await.unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("x402-receipt"));
    assert_eq!(words(&events_in(&body)), 5);
    let usage = receipt.body.usage.unwrap();
    assert_eq!(usage.units_out, 5);
    assert!(!usage.streamed);
    assert_eq!(receipt.body.output_hash, output_hash(&body));
    agent.accept(&voucher, &receipt, charge_of(5)).unwrap();

    // The receipts' total is what the session has spent: the next voucher must state it.
    let stale = agent.voucher_accepting(0, MAX);
    let response = w
        .paid(CHAT_PATH, &session, &stale)
        .json(&ask(1, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::InvalidVoucher);
    assert_eq!(agent.accepted, charge_of(8) + charge_of(5));
}
