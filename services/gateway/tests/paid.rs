//! The gateway paid through the real payment layer, over real HTTP against a real localnet: the
//! world serves [`x402pp_gateway::app`] (the provider's layer in front of the gateway's routes)
//! forwarding to the fake OpenAI-compatible upstream of `common`, which stands for the
//! third-party inference server. Agents pay with raw metered (v3) vouchers; each answer is
//! charged the upstream's own token count, a failure nothing, a cut stream the tokens delivered,
//! and the settler claims the receipts' total (docs/gateway.md, docs/protocol.md §10).
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

mod common;

use common::{
    chat, events_in, fake_upstream, is_usage_only, pricing, Fake, Mode, BROKEN_AFTER, PROMPT_TOKENS,
};
use serde_json::{json, Value};
use x402pp_gateway::{GatewayOptions, GatewayPricing, PAID_PATHS};
use x402pp_openai::{CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH};
use x402pp_protocol::crypto::output_hash;
use x402pp_protocol::{headers, Cut, ReceiptStatus};
use x402pp_server::ledger::SettlementPolicy;
use x402pp_server::settlement::SettlerConfig;
use x402pp_server::RoutePrice;
use x402pp_solana::escrow;
use x402pp_testkit::{
    receipt_header, split_receipt_block, Facilitator, MeteredSession, World, RECOVER_TIMEOUT,
};

/// The most a request costs ([`pricing`]'s `max_per_request`).
const MAX: u64 = 1_000;
/// Every session's deposit.
const DEPOSIT: u64 = 500_000;

/// The charge of an answer with `completion` tokens (prompts are free): base + ceil(tokens ×
/// 2 000 / 1 000).
fn charge_of(completion: u64) -> u64 {
    100 + (completion * 2_000).div_ceil(1_000)
}

struct Gateway {
    kit: World,
    fake: Fake,
}

x402pp_testkit::deref_world!(Gateway, kit);

/// A provider serving the gateway in front of a fake upstream in `mode`, both paid routes
/// priced `pricing` (sessions open with [`DEPOSIT`]).
async fn world_priced(mode: Mode, pricing: GatewayPricing) -> Gateway {
    let fake = fake_upstream(mode).await;
    let options = GatewayOptions::new(&fake.url, pricing);
    let mut builder = World::builder().facilitator(Facilitator::InProcess);
    for path in PAID_PATHS {
        let route = RoutePrice {
            min_deposit: DEPOSIT,
            ..options.pricing.route_price()
        };
        builder = builder.route(path, route);
    }
    let kit = builder
        .router(move |provider| x402pp_gateway::app(provider, options.clone()).unwrap())
        .start()
        .await
        .unwrap();
    Gateway { kit, fake }
}

async fn world(mode: Mode) -> Gateway {
    world_priced(mode, pricing(0)).await
}

impl Gateway {
    async fn open(&self) -> MeteredSession {
        self.open_metered_session(CHAT_COMPLETIONS_PATH, DEPOSIT)
            .await
            .unwrap()
    }

    /// A streamed chat completion of `max_tokens` on `agent`'s next voucher (hold [`MAX`]):
    /// its bytes before the receipt block, checked and accepted at the upstream's usage.
    async fn streamed_completion(&self, agent: &mut MeteredSession, max_tokens: u64) -> Vec<u8> {
        let voucher = agent.voucher(MAX);
        let response = self
            .paid_streamed(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
            .json(&chat(Some(max_tokens), true, None))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        let (answer, receipt) = split_receipt_block(&bytes).unwrap();
        let usage = receipt.body.usage.unwrap();
        assert_eq!(
            (usage.units_in, usage.units_out),
            (PROMPT_TOKENS, max_tokens)
        );
        agent
            .accept(&voucher, &receipt, charge_of(max_tokens))
            .unwrap();
        answer.to_vec()
    }
}

#[tokio::test]
async fn a_paid_streamed_completion_through_the_gateway_is_charged_the_upstreams_reported_tokens() {
    let w = world(Mode::UsageWhenAsked).await;
    let mut agent = w.open().await;
    let voucher = agent.voucher(MAX);
    let response = w
        .paid_streamed(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
        .header("authorization", "Bearer the-agents-own-key")
        .json(&chat(Some(7), true, None))
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
    let bytes = response.bytes().await.unwrap();
    let (answer, receipt) = split_receipt_block(&bytes).unwrap();

    // The client sees the stream it asked for: role, 7 words, finish, [DONE] — not the
    // usage-only chunk the gateway asked the upstream for.
    let events = events_in(answer);
    assert_eq!(events.len(), 1 + 7 + 1 + 1);
    assert!(!events.iter().any(is_usage_only));
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    assert!(std::str::from_utf8(answer)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
    // The upstream was asked for usage, and got no payment header nor the agent's key.
    let seen = w.fake.last();
    assert_eq!(seen.body["stream_options"]["include_usage"], json!(true));
    assert_eq!(seen.body["max_tokens"], json!(7));
    for name in [
        headers::X402_VOUCHER,
        headers::X402_SESSION_ID,
        headers::X402_RECEIPT_MODE,
        "authorization",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }

    // The receipt: the upstream's own count (prompt tokens only it knows, not estimated), over
    // exactly the bytes streamed before the receipt event.
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Ok);
    assert_eq!((usage.units_in, usage.units_out), (PROMPT_TOKENS, 7));
    assert!(!usage.units_estimated);
    assert!(usage.streamed);
    assert_eq!(usage.cut, Cut::None);
    assert_eq!(usage.output_bytes, answer.len() as u64);
    assert_eq!(receipt.body.output_hash, output_hash(answer));
    // 100 + ceil(7 × 2 000 / 1 000) = 114.
    agent.accept(&voucher, &receipt, 114).unwrap();

    // The next voucher states 114 accepted: a second stream, llama.cpp-style usage in the last
    // chunk, charged on top.
    w.fake.set_mode(Mode::UsageInLastChunk);
    w.streamed_completion(&mut agent, 12).await;
    assert_eq!(agent.accepted, 114 + charge_of(12));
}

#[tokio::test]
async fn a_paid_buffered_completion_is_charged_its_usage_and_carries_the_receipt_header() {
    let w = world(Mode::UsageWhenAsked).await;
    let mut agent = w.open().await;
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
        .json(&chat(Some(5), false, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(headers::X402_RECEIPT_MODE).is_none());
    let receipt = receipt_header(&response).unwrap();
    assert!(response
        .headers()
        .get(headers::X402_SESSION_STATUS)
        .is_some());
    let body = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], json!(5));
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Ok);
    assert_eq!((usage.units_in, usage.units_out), (PROMPT_TOKENS, 5));
    assert!(!usage.streamed && !usage.units_estimated);
    assert_eq!(usage.output_bytes, body.len() as u64);
    assert_eq!(receipt.body.output_hash, output_hash(&body));
    agent.accept(&voucher, &receipt, charge_of(5)).unwrap();

    // /v1/completions has the same terms: the same session pays it.
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(COMPLETIONS_PATH, &agent.session(), &voucher)
        .json(&json!({"model": "fake", "prompt": "once upon", "max_tokens": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt = receipt_header(&response).unwrap();
    assert_eq!(receipt.body.usage.unwrap().units_out, 3);
    agent.accept(&voucher, &receipt, charge_of(3)).unwrap();

    // A stream asked for without the receipt mode (a plain OpenAI client): the whole stream,
    // with the receipt in the header and no receipt event.
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
        .json(&chat(Some(4), true, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt = receipt_header(&response).unwrap();
    let body = response.bytes().await.unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("x402-receipt"));
    assert_eq!(events_in(&body).len(), 1 + 4 + 1 + 1);
    let usage = receipt.body.usage.unwrap();
    assert_eq!((usage.units_in, usage.units_out), (PROMPT_TOKENS, 4));
    assert!(!usage.streamed);
    assert_eq!(receipt.body.output_hash, output_hash(&body));
    agent.accept(&voucher, &receipt, charge_of(4)).unwrap();
}

#[tokio::test]
async fn an_upstream_failure_before_the_first_byte_is_receipted_and_charged_nothing() {
    let w = world(Mode::Unavailable).await;
    let mut agent = w.open().await;
    for stream in [true, false] {
        let voucher = agent.voucher(MAX);
        let response = w
            .paid_streamed(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
            .json(&chat(Some(4), stream, None))
            .send()
            .await
            .unwrap();
        // The upstream's status and body, with the receipt in the header (nothing streamed).
        assert_eq!(response.status(), 503, "stream: {stream}");
        assert!(response.headers().get(headers::X402_RECEIPT_MODE).is_none());
        let receipt = receipt_header(&response).unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], json!("loading model"));
        assert_eq!(receipt.body.status, ReceiptStatus::HandlerError);
        agent.accept(&voucher, &receipt, 0).unwrap();
    }
    assert_eq!(agent.accepted, 0);

    // The session goes on, the failures cost nothing: the next answer is charged from 0.
    w.fake.set_mode(Mode::UsageWhenAsked);
    w.streamed_completion(&mut agent, 3).await;
    assert_eq!(agent.accepted, charge_of(3));
}

#[tokio::test]
async fn an_agent_dropping_a_gateway_stream_is_charged_the_tokens_delivered_and_the_upstream_request_is_closed(
) {
    // A large maximum: the agent's cut, not the hold, ends the endless stream.
    let max = 100_000;
    let mut wide = pricing(0);
    wide.metering.max_per_request = max;
    let mut w = world_priced(Mode::Endless, wide).await;
    let mut agent = w.open().await;
    let session = agent.session();
    let voucher = agent.voucher(max);
    let mut response = w
        .paid_streamed(CHAT_COMPLETIONS_PATH, &session, &voucher)
        .json(&chat(Some(64), true, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut read = Vec::new();
    while events_in(&read).len() < 3 {
        let chunk = response.chunk().await.unwrap().expect("a frame");
        read.extend_from_slice(&chunk);
    }
    drop(response);

    // The gateway drops the upstream response with the agent's stream: the upstream's body is
    // dropped, its connection closed.
    tokio::time::timeout(RECOVER_TIMEOUT, w.fake.dropped.recv())
        .await
        .expect("the upstream's stream is dropped once the agent's is")
        .unwrap();

    // The receipt of what was handed over, by resending the voucher.
    let receipt = w
        .recover_receipt(CHAT_COMPLETIONS_PATH, &session, &voucher)
        .await
        .unwrap();
    let usage = receipt.body.usage.unwrap();
    assert_eq!(
        (receipt.body.status, usage.cut),
        (ReceiptStatus::Partial, Cut::ClientGone)
    );
    let delivered = events_in(&read).len() as u64;
    assert!(usage.units_out >= delivered, "{usage:?}");
    assert!(usage.output_bytes >= read.len() as u64);
    assert!(usage.units_estimated, "counted from the delivered deltas");
    assert_eq!(usage.units_in, 0, "no usage chunk was delivered");
    // The agent's cut: base + the tokens delivered, far below the hold.
    agent
        .accept(&voucher, &receipt, charge_of(usage.units_out))
        .unwrap();
    assert!(agent.accepted < max);

    // The session goes on from there.
    w.fake.set_mode(Mode::UsageWhenAsked);
    let before = agent.accepted;
    w.streamed_completion(&mut agent, 2).await;
    assert_eq!(agent.accepted, before + charge_of(2));
}

#[tokio::test]
async fn an_upstream_breaking_off_mid_stream_ends_the_stream_with_a_receipt_for_the_tokens_delivered(
) {
    let w = world(Mode::BreaksOff).await;
    let mut agent = w.open().await;
    let voucher = agent.voucher(MAX);
    let response = w
        .paid_streamed(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
        .json(&chat(Some(64), true, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let (answer, receipt) = split_receipt_block(&bytes).unwrap();
    assert_eq!(events_in(answer).len() as u64, BROKEN_AFTER);
    let usage = receipt.body.usage.unwrap();
    assert_eq!(
        (receipt.body.status, usage.cut, usage.units_out),
        (ReceiptStatus::Partial, Cut::UpstreamError, BROKEN_AFTER)
    );
    assert_eq!(receipt.body.output_hash, output_hash(answer));
    // The provider's side failed: the tokens delivered, without the base.
    agent.accept(&voucher, &receipt, BROKEN_AFTER * 2).unwrap();

    // A client taking the stream whole gets the layer's 502, charged nothing.
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(CHAT_COMPLETIONS_PATH, &agent.session(), &voucher)
        .json(&chat(Some(64), true, None))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let receipt = receipt_header(&response).unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::HandlerError);
    agent.accept(&voucher, &receipt, 0).unwrap();
}

#[tokio::test]
async fn the_settler_claims_the_last_gateway_receipt_and_the_program_settles_its_total() {
    let w = world(Mode::UsageWhenAsked).await;
    let mut agent = w.open().await;
    let session = agent.session();
    // A streamed answer, a buffered one, and a streamed one last: its receipt came in the
    // stream's final event and is the one claimed with.
    w.streamed_completion(&mut agent, 30).await;
    let voucher = agent.voucher(MAX);
    let response = w
        .paid(CHAT_COMPLETIONS_PATH, &session, &voucher)
        .json(&chat(Some(45), false, None))
        .send()
        .await
        .unwrap();
    let receipt = receipt_header(&response).unwrap();
    agent.accept(&voucher, &receipt, charge_of(45)).unwrap();
    let last = agent.voucher(MAX);
    let response = w
        .paid_streamed(CHAT_COMPLETIONS_PATH, &session, &last)
        .json(&chat(Some(9), true, None))
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let (_, receipt) = split_receipt_block(&bytes).unwrap();
    agent.accept(&last, &receipt, charge_of(9)).unwrap();
    let total = charge_of(30) + charge_of(45) + charge_of(9);
    assert_eq!(agent.accepted, total);
    // 160 + 190 + 118 = 468, while the last voucher authorises 350 accepted + a hold of 1 000.
    assert_eq!(total, 468);
    assert_eq!(last.cumulative.get(), 350 + MAX);

    let settler = w.settler(SettlerConfig {
        policy: SettlementPolicy {
            min_unclaimed: 1,
            ..SettlementPolicy::default()
        },
        ..SettlerConfig::default()
    });
    let report = settler
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!((report.claims_confirmed, report.claimed_amount), (1, total));
    let account = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (account.settled, account.settled_seq, account.receipt_count),
        (total, 3, 3)
    );
    assert_eq!(account.receipts_head, agent.chain.head.0);
    let again = settler
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!(again.claims_confirmed, 0, "nothing more to claim");
}
