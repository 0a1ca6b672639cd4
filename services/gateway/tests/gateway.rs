//! The gateway's handlers against a fake OpenAI-compatible upstream (axum on 127.0.0.1:0) in
//! the three usage behaviours of real servers — usage in a final chunk only when asked (OpenAI,
//! vLLM, recent Ollama), usage always in the last chunk (llama.cpp), no usage (older Ollama) —
//! plus failing and endless upstreams. The gateway is called without its payment layer
//! ([`x402pp_gateway::upstream_router`]); a metered voucher is simulated by putting the
//! [`PaymentContext`] the layer would put in the request's extensions.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use solana_sdk::pubkey::Pubkey;
use tokio::sync::mpsc;
use tower::ServiceExt;
use x402pp_gateway::{upstream_router, GatewayOptions, GatewayPricing};
use x402pp_openai::SseParser;
use x402pp_protocol::{Metering, UnitKind};
use x402pp_server::{PaymentContext, ReportedUsage, UsageReporter};

/// The fake upstream's prompt tokens, whatever the prompt.
const PROMPT_TOKENS: u64 = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `stream_options.include_usage` → a final chunk with `choices: []` and `usage`.
    UsageWhenAsked,
    /// `usage` in the last chunk (with the finish reason), asked or not.
    UsageInLastChunk,
    /// Never any `usage`, not even in a JSON answer.
    NoUsage,
    /// `503` with a JSON error, before any byte of an answer.
    Unavailable,
    /// A word every few milliseconds, forever; tells when its stream is dropped.
    Endless,
}

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Upstream {
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
    dropped: mpsc::UnboundedSender<()>,
}

struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn chunk(choices: Value, usage: Option<Value>) -> String {
    let mut chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                           "created": 1, "model": "fake", "choices": choices});
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    format!("data: {chunk}\n\n")
}

fn usage(completion: u64) -> Value {
    json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion,
           "total_tokens": PROMPT_TOKENS + completion})
}

async fn fake_completion(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    upstream.seen.lock().unwrap().push(Seen {
        headers,
        body: body.clone(),
    });
    let words = body["max_tokens"].as_u64().unwrap_or(16).min(50);
    let stream = body["stream"] == json!(true);
    let asked = body["stream_options"]["include_usage"] == json!(true);
    match upstream.mode {
        Mode::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"message": "loading model", "type": "unavailable_error"}})),
            )
                .into_response()
        }
        Mode::Endless => {
            let guard = DropSignal(upstream.dropped.clone());
            let frames = futures_util::stream::unfold(guard, |guard| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let frame = chunk(json!([{"index": 0, "delta": {"content": " more"}}]), None);
                Some((Ok::<_, std::convert::Infallible>(frame), guard))
            });
            return (
                [(header::CONTENT_TYPE, "text/event-stream")],
                Body::from_stream(frames),
            )
                .into_response();
        }
        _ => {}
    }
    if !stream {
        let mut answer = json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": vec!["word"; words as usize].join(" ")}}]});
        if upstream.mode != Mode::NoUsage {
            answer["usage"] = usage(words);
        }
        return Json(answer).into_response();
    }
    let mut frames = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant"}}]),
        None,
    )];
    for i in 0..words {
        let piece = if i == 0 { "word" } else { " word" };
        frames.push(chunk(
            json!([{"index": 0, "delta": {"content": piece}}]),
            None,
        ));
    }
    let last_usage = (upstream.mode == Mode::UsageInLastChunk).then(|| usage(words));
    frames.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "length"}]),
        last_usage,
    ));
    if upstream.mode == Mode::UsageWhenAsked && asked {
        frames.push(chunk(json!([]), Some(usage(words))));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    // Every event split in two body frames, so that events cross read boundaries.
    let pieces: Vec<Result<String, std::convert::Infallible>> = frames
        .into_iter()
        .flat_map(|frame| {
            let (head, tail) = frame.split_at(frame.len() / 2);
            [Ok(head.to_owned()), Ok(tail.to_owned())]
        })
        .collect();
    let frames = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::task::yield_now().await;
        piece
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(frames),
    )
        .into_response()
}

async fn fake_models(headers: HeaderMap) -> Response {
    let authorized = headers.get(header::AUTHORIZATION).is_some();
    Json(
        json!({"object": "list", "data": [{"id": "fake", "object": "model"}],
                "authorized": authorized}),
    )
    .into_response()
}

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    dropped: mpsc::UnboundedReceiver<()>,
}

impl Fake {
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream was called")
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn fake_upstream(mode: Mode) -> Fake {
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Upstream {
        mode,
        seen: seen.clone(),
        dropped: dropped_tx,
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(fake_completion))
        .route("/v1/completions", post(fake_completion))
        .route("/v1/models", get(fake_models))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Fake { url, seen, dropped }
}

fn pricing(price_in: u64) -> GatewayPricing {
    GatewayPricing {
        base: 100,
        metering: Metering {
            unit_price_in: price_in,
            unit_price_out: 2_000,
            unit_size: 1_000,
            max_per_request: 1_000,
            unit_kind: UnitKind::Tokens,
        },
    }
}

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

fn chat(max_tokens: Option<u64>, stream: bool, include_usage: Option<bool>) -> Value {
    let mut body = json!({"model": "fake", "stream": stream,
                          "messages": [{"role": "user", "content": "Explain x402 in one line"}]});
    if let Some(max_tokens) = max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(include_usage) = include_usage {
        body["stream_options"] = json!({"include_usage": include_usage});
    }
    body
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

/// The data of each event of an SSE body (`[DONE]` as the string `"[DONE]"`).
async fn events_of(response: Response) -> Vec<Value> {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let bytes = bytes_of(response).await;
    SseParser::new()
        .feed(&bytes)
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

fn is_usage_only(event: &Value) -> bool {
    event["choices"] == json!([]) && event["usage"].is_object()
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
