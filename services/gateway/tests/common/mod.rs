//! A fake OpenAI-compatible upstream (axum on 127.0.0.1:0), shared by the gateway's tests: it
//! stands for the third-party inference server (llama.cpp, vLLM, Ollama) in the three usage
//! behaviours of real servers — usage in a final chunk only when asked (OpenAI, vLLM, recent
//! Ollama), usage always in the last chunk (llama.cpp), no usage (older Ollama) — plus failing
//! and endless upstreams. It records what it was sent and tells when an endless stream is
//! dropped.
#![allow(dead_code, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use x402pp_gateway::GatewayPricing;
use x402pp_openai::SseParser;
use x402pp_protocol::{Metering, UnitKind};

/// The fake upstream's prompt tokens, whatever the prompt.
pub const PROMPT_TOKENS: u64 = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
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
    /// A stream of [`BROKEN_AFTER`] words whose body then fails (the connection breaks off).
    BreaksOff,
}

/// The words a [`Mode::BreaksOff`] stream sends before it breaks off.
pub const BROKEN_AFTER: u64 = 5;

#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
struct Upstream {
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    dropped: mpsc::UnboundedSender<()>,
}

struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

pub fn chunk(choices: Value, usage: Option<Value>) -> String {
    let mut chunk = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                           "created": 1, "model": "fake", "choices": choices});
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    format!("data: {chunk}\n\n")
}

pub fn usage(completion: u64) -> Value {
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
    let mode = *upstream.mode.lock().unwrap();
    let words = body["max_tokens"].as_u64().unwrap_or(16).min(50);
    let stream = body["stream"] == json!(true);
    let asked = body["stream_options"]["include_usage"] == json!(true);
    match mode {
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
        Mode::BreaksOff => {
            let words = (0..BROKEN_AFTER).map(|_| {
                Ok(chunk(
                    json!([{"index": 0, "delta": {"content": " word"}}]),
                    None,
                ))
            });
            let broken = std::iter::once(Err(std::io::Error::other("the model crashed")));
            let frames = futures_util::stream::iter(words.chain(broken)).then(|frame| async move {
                tokio::task::yield_now().await;
                frame
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
        if mode != Mode::NoUsage {
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
    let last_usage = (mode == Mode::UsageInLastChunk).then(|| usage(words));
    frames.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "length"}]),
        last_usage,
    ));
    if mode == Mode::UsageWhenAsked && asked {
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

/// A running fake upstream.
pub struct Fake {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub dropped: mpsc::UnboundedReceiver<()>,
    mode: Arc<Mutex<Mode>>,
}

impl Fake {
    /// The last request it was sent.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream was called")
    }

    /// How many requests it was sent.
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

pub async fn fake_upstream(mode: Mode) -> Fake {
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mode = Arc::new(Mutex::new(mode));
    let state = Upstream {
        mode: mode.clone(),
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
    Fake {
        url,
        seen,
        dropped,
        mode,
    }
}

/// Base 100, `price_in` and 2 000 per 1 000 prompt and completion tokens, at most 1 000 a
/// request.
pub fn pricing(price_in: u64) -> GatewayPricing {
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

/// A chat request for the fake model.
pub fn chat(max_tokens: Option<u64>, stream: bool, include_usage: Option<bool>) -> Value {
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

/// The data of each event of an SSE body (`[DONE]` as the string `"[DONE]"`).
pub fn events_in(bytes: &[u8]) -> Vec<Value> {
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

/// Whether an event is a usage-only chunk (`choices: []` and a `usage`).
pub fn is_usage_only(event: &Value) -> bool {
    event["choices"] == json!([]) && event["usage"].is_object()
}
