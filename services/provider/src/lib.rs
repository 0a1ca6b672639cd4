//! x402pp-provider: a reference paid API behind the x402pp-server payment layer.
//!
//! | route | paid | what |
//! |---|---|---|
//! | `POST /v1/inference` | fixed price | a deterministic toy text model whose work grows with its input ([`infer`]) |
//! | `POST /v1/chat/completions` | metered per token | the same model (`x402pp-toy-1`) behind an OpenAI-compatible route, JSON or server-sent events ([`chat`]) |
//! | `GET /health`, `GET /metrics` | free | liveness, OpenMetrics |
//! | `POST /x402pp/sponsor` | free | the provider pays its agents' escrow fees (`--sponsor`) |
//!
//! Modules: [`chat`] (the chat route), [`cli`] (flags and `run`).

pub mod chat;
pub mod cli;

pub use chat::{chat_discovery, chat_router, ChatOptions, CHAT_PATH};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use x402pp_protocol::bazaar::DiscoveryDeclaration;
use x402pp_server::{PaymentLayer, Provider, RequestLimitsLayer};

/// The paid route.
pub const INFERENCE_PATH: &str = "/v1/inference";

/// A completion request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    /// The prompt.
    pub prompt: String,
    /// Tokens to generate (default 16, at most 256).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Extra latency to inject, honoured only when the provider allows it (demo and tests).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// A completion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InferenceResponse {
    /// Model name.
    pub model: String,
    /// Generated text.
    pub completion: String,
    /// Tokens generated.
    pub tokens: u32,
}

/// The toy model: each token is chosen by hashing the whole prompt with the previous token,
/// so the work is proportional to prompt length × tokens, and the output is deterministic.
pub fn infer(prompt: &str, max_tokens: u32) -> InferenceResponse {
    let tokens = max_tokens.clamp(1, 256);
    // The same word sequence as the chat route's toy model (x402pp-openai).
    let words: Vec<&str> = x402pp_openai::toy::ToyWords::new(prompt)
        .take(usize::try_from(tokens).unwrap_or(16))
        .collect();
    InferenceResponse {
        model: "x402pp-toy-1".into(),
        completion: words.join(" "),
        tokens,
    }
}

/// How to call [`INFERENCE_PATH`] and what it answers, for discovery (the `bazaar` extension of
/// its 402s): `POST` with a JSON [`InferenceRequest`] (`prompt`, optional `max_tokens` 1–256;
/// `delay_ms` is a test knob and not advertised), answering an [`InferenceResponse`].
pub fn inference_discovery() -> DiscoveryDeclaration {
    let example = infer("Explain x402 in one line", 8);
    DiscoveryDeclaration::post_json(
        serde_json::json!({"prompt": "Explain x402 in one line", "max_tokens": 8}),
        serde_json::json!({
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "description": "the text to complete"},
                "max_tokens": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 256,
                    "description": "tokens to generate (default 16)",
                },
            },
            "required": ["prompt"],
            "additionalProperties": false,
        }),
    )
    .with_output(
        serde_json::to_value(&example).unwrap_or_default(),
        Some(serde_json::json!({
            "properties": {
                "model": {"type": "string"},
                "completion": {"type": "string"},
                "tokens": {"type": "integer", "minimum": 1},
            },
            "required": ["model", "completion", "tokens"],
        })),
    )
}

/// Options of the reference app.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppOptions {
    /// Honour `delay_ms` (and `token_delay_ms` on the chat route) in requests (for demos and
    /// SLA tests; off in production).
    pub allow_injected_latency: bool,
}

#[derive(Clone)]
struct AppState {
    provider: Arc<Provider>,
    options: AppOptions,
}

impl axum::extract::FromRef<AppState> for ChatOptions {
    fn from_ref(state: &AppState) -> Self {
        ChatOptions::for_route(
            state.provider.route(CHAT_PATH),
            state.options.allow_injected_latency,
        )
    }
}

/// The provider's router, with the payment layer around the paid routes (those the provider's
/// config prices: `/v1/inference`, and `/v1/chat/completions` when it is configured; an
/// unpriced chat route is served free) and the provider's
/// [`x402pp_server::RequestLimits`] (header bytes, body bytes, read timeout, per-IP rate) around
/// every route. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` for the
/// per-IP limit to apply.
pub fn app(provider: Arc<Provider>, options: AppOptions) -> Router {
    let limits = RequestLimitsLayer::new(provider.config().limits.clone());
    let state = AppState {
        provider: provider.clone(),
        options,
    };
    Router::new()
        .route(INFERENCE_PATH, post(inference))
        .route(CHAT_PATH, post(chat::chat_completions))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(x402pp_server::sponsor::SPONSOR_PATH, post(sponsor))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(PaymentLayer::new(provider))
        .layer(limits)
}

async fn inference(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let request: InferenceRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let body =
                serde_json::json!({ "error": "malformed_request", "message": e.to_string() });
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    if let Some(delay) = request
        .delay_ms
        .filter(|_| state.options.allow_injected_latency)
    {
        tokio::time::sleep(Duration::from_millis(delay.min(60_000))).await;
    }
    let prompt = request.prompt;
    let tokens = request.max_tokens.unwrap_or(16);
    // A short answer costs a few microseconds (one SHA-256 per token): less than handing it to
    // the blocking pool and back (two thread wake-ups), so it runs here; a long one (or a long
    // prompt) goes to the blocking pool, as a real model would.
    if tokens <= INLINE_TOKENS && prompt.len() <= INLINE_PROMPT_BYTES {
        return Json(infer(&prompt, tokens)).into_response();
    }
    match tokio::task::spawn_blocking(move || infer(&prompt, tokens)).await {
        Ok(answer) => Json(answer).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Answers of at most this many tokens (for prompts of at most [`INLINE_PROMPT_BYTES`]) are
/// computed on the request's thread: about 10 µs, tokio's bound for work that need not leave it.
const INLINE_TOKENS: u32 = 32;
/// See [`INLINE_TOKENS`].
const INLINE_PROMPT_BYTES: usize = 1_024;

/// `POST /x402pp/sponsor`: the provider pays the fee and rent of an agent's escrow
/// transaction (when it sponsors: `--sponsor`), or says why not.
async fn sponsor(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    match state.provider.sponsor(&body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Unknown paths get a JSON error like every other refusal (axum's default has no body).
async fn not_found(uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    let body = serde_json::json!({ "error": "not_found", "message": format!("no route {path}") });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// A known path with another method gets a JSON error (axum's default has no body).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    let body = serde_json::json!({
        "error": "method_not_allowed",
        "message": format!("{method} is not allowed on {path}"),
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "provider": state.provider.address().to_string(),
        "network": state.provider.config().network,
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.provider.metrics().encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toy_model_is_deterministic_and_sized_by_max_tokens() {
        let a = infer("hello", 8);
        assert_eq!(a, infer("hello", 8));
        assert_eq!(a.completion.split(' ').count(), 8);
        assert_ne!(a.completion, infer("hello!", 8).completion);
        assert_eq!(infer("x", 10_000).tokens, 256);
    }

    #[test]
    #[allow(clippy::unwrap_used)] // a test
    fn the_inference_route_is_declared_as_a_json_post_whose_examples_fit_the_app() {
        let declaration = inference_discovery();
        assert_eq!(declaration.validate(), Ok(()));
        let ext = declaration.extension();
        assert_eq!(ext.method(), Some("POST"));
        let body = ext.info["input"]["body"].clone();
        let request: InferenceRequest = serde_json::from_value(body).unwrap();
        let answer: InferenceResponse =
            serde_json::from_value(ext.info["output"]["example"].clone()).unwrap();
        assert_eq!(answer, infer(&request.prompt, request.max_tokens.unwrap()));
    }
}
