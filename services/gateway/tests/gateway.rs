//! The gateway's handlers against the fake OpenAI-compatible upstream of `common` (axum on
//! 127.0.0.1:0) in the three usage behaviours of real servers — usage in a final chunk only when
//! asked (OpenAI, vLLM, recent Ollama), usage always in the last chunk (llama.cpp), no usage
//! (older Ollama) — plus failing and endless upstreams. The gateway is called without its
//! payment layer ([`x402pp_gateway::upstream_router`]); a metered voucher is simulated by putting
//! the [`PaymentContext`] the layer would put in the request's extensions (`paid.rs` runs it
//! behind the real layer).
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use common::{chat, events_in, fake_upstream, is_usage_only, pricing, Mode, PROMPT_TOKENS};
use futures_util::StreamExt;
use serde_json::{json, Value};
use solana_sdk::pubkey::Pubkey;
use tower::ServiceExt;
use x402pp_gateway::{upstream_router, GatewayOptions};
use x402pp_server::{PaymentContext, ReportedUsage, UsageReporter};

fn gateway(url: &str) -> Router {
    upstream_router(GatewayOptions::new(url, pricing(0))).unwrap()
}

/// A metered voucher's context, as the payment layer puts it in the request.
fn voucher(hold: u64) -> (PaymentContext, UsageReporter) {
    let usage = UsageReporter::default();
    let context = PaymentContext::Session {
        session: Pubkey::new_unique(),
        seq: 1,
        cumulative: hold,
        hold: Some(hold),
        usage: usage.clone(),
    };
    (context, usage)
}

fn request(path: &str, body: &Value, payment: Option<PaymentContext>) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    if let Some(payment) = payment {
        request.extensions_mut().insert(payment);
    }
    request
}

async fn call(router: &Router, body: &Value, payment: Option<PaymentContext>) -> Response {
    router
        .clone()
        .oneshot(request("/v1/chat/completions", body, payment))
        .await
        .unwrap()
}

async fn bytes_of(response: Response) -> Vec<u8> {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

/// The data of each event of an SSE answer.
async fn events_of(response: Response) -> Vec<Value> {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    events_in(&bytes_of(response).await)
}

fn exact(completion: u64) -> Option<ReportedUsage> {
    Some(ReportedUsage {
        units_in: PROMPT_TOKENS,
        units_out: completion,
        estimated: false,
    })
}

#[tokio::test]
async fn the_gateway_forwards_and_reports_the_upstreams_completion_tokens() {
    // Usage in a final chunk, asked for by the client: forwarded to it, and reported.
    let fake = fake_upstream(Mode::UsageWhenAsked).await;
    let router = gateway(&fake.url);
    let (payment, usage) = voucher(1_000);
    let response = call(&router, &chat(Some(7), true, Some(true)), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    let events = events_of(response).await;
    assert_eq!(events.len(), 1 + 7 + 1 + 1 + 1);
    assert!(is_usage_only(&events[9]));
    assert_eq!(events[10], json!("[DONE]"));
    assert_eq!(usage.reported(), exact(7));

    // A JSON answer: passed through, its usage reported.
    let (payment, usage) = voucher(1_000);
    let response = call(&router, &chat(Some(5), false, None), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = serde_json::from_slice(&bytes_of(response).await).unwrap();
    assert_eq!(answer["usage"]["completion_tokens"], json!(5));
    assert_eq!(usage.reported(), exact(5));

    // /v1/completions goes to the upstream's /v1/completions.
    let (payment, usage) = voucher(1_000);
    let response = router
        .clone()
        .oneshot(request(
            "/v1/completions",
            &json!({"model": "fake", "prompt": "once upon", "max_tokens": 3}),
            Some(payment),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(usage.reported(), exact(3));

    // Usage always in the last chunk (llama.cpp): forwarded with it, and reported.
    let fake = fake_upstream(Mode::UsageInLastChunk).await;
    let router = gateway(&fake.url);
    let (payment, usage) = voucher(1_000);
    let events = events_of(call(&router, &chat(Some(4), true, None), Some(payment)).await).await;
    assert_eq!(events.len(), 1 + 4 + 1 + 1);
    assert_eq!(events[5]["usage"]["completion_tokens"], json!(4));
    assert_eq!(usage.reported(), exact(4));
}

#[tokio::test]
async fn without_usage_the_gateway_counts_content_deltas_and_flags_the_estimate() {
    let fake = fake_upstream(Mode::NoUsage).await;
    let router = gateway(&fake.url);
    let (payment, usage) = voucher(1_000);
    let events =
        events_of(call(&router, &chat(Some(9), true, Some(true)), Some(payment)).await).await;
    assert_eq!(events.len(), 1 + 9 + 1 + 1);
    assert_eq!(
        usage.reported(),
        Some(ReportedUsage {
            units_in: 0,
            units_out: 9,
            estimated: true
        })
    );

    // A JSON answer without usage: a quarter of its characters, estimated.
    let (payment, usage) = voucher(1_000);
    let response = call(&router, &chat(Some(4), false, None), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // "word word word word": 19 characters → 5 tokens.
    assert_eq!(
        usage.reported(),
        Some(ReportedUsage {
            units_in: 0,
            units_out: 5,
            estimated: true
        })
    );
}

#[tokio::test]
async fn the_gateway_asks_the_upstream_for_usage_and_hides_the_usage_chunk_the_client_did_not_ask_for(
) {
    let fake = fake_upstream(Mode::UsageWhenAsked).await;
    let router = gateway(&fake.url);
    for asked in [None, Some(false)] {
        let (payment, usage) = voucher(1_000);
        let events =
            events_of(call(&router, &chat(Some(6), true, asked), Some(payment)).await).await;
        assert_eq!(
            fake.last().body["stream_options"]["include_usage"],
            json!(true)
        );
        assert_eq!(events.len(), 1 + 6 + 1 + 1, "{asked:?}");
        assert!(!events.iter().any(is_usage_only));
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        assert_eq!(usage.reported(), exact(6));
    }
    // A non-stream request gets no stream_options.
    let (payment, _) = voucher(1_000);
    call(&router, &chat(Some(2), false, None), Some(payment)).await;
    assert!(fake.last().body.get("stream_options").is_none());
}

#[tokio::test]
async fn max_tokens_is_clamped_to_what_the_hold_affords() {
    let fake = fake_upstream(Mode::UsageWhenAsked).await;
    let router = gateway(&fake.url);
    // (120 − 100) · 1 000 / 2 000 = 10 tokens.
    let (payment, _) = voucher(120);
    call(&router, &chat(Some(64), false, None), Some(payment)).await;
    assert_eq!(fake.last().body["max_tokens"], json!(10));
    // No limit: set to the bound; max_completion_tokens clamped too.
    let (payment, _) = voucher(120);
    call(&router, &chat(None, true, None), Some(payment)).await;
    assert_eq!(fake.last().body["max_tokens"], json!(10));
    let (payment, _) = voucher(120);
    let mut body = chat(None, false, None);
    body["max_completion_tokens"] = json!(500);
    call(&router, &body, Some(payment)).await;
    assert_eq!(fake.last().body["max_completion_tokens"], json!(10));
    // A limit within the hold is kept.
    let (payment, _) = voucher(1_000);
    call(&router, &chat(Some(64), false, None), Some(payment)).await;
    assert_eq!(fake.last().body["max_tokens"], json!(64));
    // Without a voucher (exact, or no payment): what max_per_request affords, 450.
    call(&router, &chat(Some(10_000), false, None), None).await;
    assert_eq!(fake.last().body["max_tokens"], json!(450));

    // Priced prompts: "Explain x402 in one line" is 24 bytes ≈ 6 tokens, costing 6 at 1 000 per
    // 1 000, which leaves (120 − 100 − 6) / 2 = 7 tokens.
    let priced = upstream_router(GatewayOptions::new(&fake.url, pricing(1_000))).unwrap();
    let (payment, _) = voucher(120);
    call(&priced, &chat(Some(64), false, None), Some(payment)).await;
    assert_eq!(fake.last().body["max_tokens"], json!(7));

    // A hold paying only the base: 400, and the upstream is not called.
    let calls = fake.calls();
    let (payment, usage) = voucher(101);
    let response = call(&router, &chat(Some(64), true, None), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = serde_json::from_slice(&bytes_of(response).await).unwrap();
    assert_eq!(answer["error"], json!("max_tokens_unaffordable"));
    assert_eq!(fake.calls(), calls);
    assert_eq!(usage.reported(), None);
}

#[tokio::test]
async fn an_upstream_error_before_the_first_byte_is_passed_through() {
    let fake = fake_upstream(Mode::Unavailable).await;
    let router = gateway(&fake.url);
    let (payment, usage) = voucher(1_000);
    let response = call(&router, &chat(Some(4), true, None), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let answer: Value = serde_json::from_slice(&bytes_of(response).await).unwrap();
    assert_eq!(answer["error"]["message"], json!("loading model"));
    assert_eq!(usage.reported(), None);

    // An upstream nobody listens on: 502 upstream_unavailable.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (payment, usage) = voucher(1_000);
    let response = call(&gateway(&closed), &chat(Some(4), true, None), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let answer: Value = serde_json::from_slice(&bytes_of(response).await).unwrap();
    assert_eq!(answer["error"], json!("upstream_unavailable"));
    assert_eq!(usage.reported(), None);

    // Garbage from the client: 400, never forwarded.
    let fake = fake_upstream(Mode::UsageWhenAsked).await;
    let router = gateway(&fake.url);
    for garbage in [
        "not json",
        "[1, 2]",
        r#"{"stream": "yes"}"#,
        r#"{"max_tokens": -3}"#,
    ] {
        let response = router
            .clone()
            .oneshot(
                Request::post("/v1/chat/completions")
                    .body(Body::from(garbage))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{garbage}");
        let answer: Value = serde_json::from_slice(&bytes_of(response).await).unwrap();
        assert_eq!(answer["error"], json!("malformed_request"));
    }
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn the_clients_authorization_header_never_reaches_the_upstream() {
    let fake = fake_upstream(Mode::UsageWhenAsked).await;
    let mut sent = request("/v1/chat/completions", &chat(Some(2), false, None), None);
    for (name, value) in [
        ("authorization", "Bearer the-clients-secret"),
        ("x-402-voucher", "eyJ2b3VjaGVy"),
        ("x-402-receipt-mode", "sse-event"),
        ("payment-signature", "eyJwYXlsb2Fk"),
        ("x-payment", "eyJwYXlsb2Fk"),
        ("cookie", "session=1"),
        ("x-request-id", "abc"),
    ] {
        sent.headers_mut().insert(name, value.parse().unwrap());
    }
    let response = gateway(&fake.url).oneshot(sent).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = fake.last().headers;
    for name in [
        "authorization",
        "x-402-voucher",
        "x-402-receipt-mode",
        "payment-signature",
        "x-payment",
        "cookie",
    ] {
        assert!(seen.get(name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(seen["x-request-id"], "abc");
    assert_eq!(seen[header::CONTENT_TYPE], "application/json");

    // The configured key is the upstream's Authorization, on completions and on models.
    let mut options = GatewayOptions::new(&fake.url, pricing(0));
    options.upstream_api_key = Some("upstream-key".into());
    options.model = Some("served-model".into());
    let router = upstream_router(options).unwrap();
    let mut sent = request("/v1/chat/completions", &chat(Some(2), false, None), None);
    sent.headers_mut().insert(
        "authorization",
        "Bearer the-clients-secret".parse().unwrap(),
    );
    router.clone().oneshot(sent).await.unwrap();
    let seen = fake.last();
    assert_eq!(seen.headers[header::AUTHORIZATION], "Bearer upstream-key");
    assert_eq!(seen.body["model"], json!("served-model"));
    let models = router
        .clone()
        .oneshot(Request::get("/v1/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(models.status(), StatusCode::OK);
    let models: Value = serde_json::from_slice(&bytes_of(models).await).unwrap();
    assert_eq!(models["data"][0]["id"], json!("fake"));
    assert_eq!(models["authorized"], json!(true));
    let health = router
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let health: Value = serde_json::from_slice(&bytes_of(health).await).unwrap();
    assert_eq!(health["status"], json!("ok"));
}

#[tokio::test]
async fn dropping_the_stream_closes_the_upstream_request() {
    let mut fake = fake_upstream(Mode::Endless).await;
    let router = gateway(&fake.url);
    let (payment, usage) = voucher(1_000);
    let response = call(&router, &chat(Some(64), true, None), Some(payment)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    // Frames arrive while the upstream is still generating, each counted as it passes.
    for n in 1..=3 {
        let frame = body.next().await.unwrap().unwrap();
        assert!(std::str::from_utf8(&frame).unwrap().contains("more"));
        assert!(usage.reported().unwrap().units_out >= n);
    }
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), fake.dropped.recv())
        .await
        .expect("the upstream's stream is dropped once the client's is")
        .unwrap();
}
