//! `POST /v1/chat/completions`: the toy model `x402pp-toy-1` behind an OpenAI-compatible route
//! (docs/design/metered-streaming.md §5.1), metered per token.
//!
//! - **Request**: OpenAI `{model, messages, stream?, stream_options?, max_tokens?,
//!   max_completion_tokens?, …}`; unknown fields are ignored. Test knobs, honoured only with
//!   [`ChatOptions::allow_injected_latency`]: `delay_ms` (before the answer, or before the first
//!   frame of a stream) and `token_delay_ms` (between the words of a stream).
//! - **Bound**: the answer has at most the client's limit (16 if none, 256 at most) and, on a
//!   metered session, at most the completion tokens the voucher's hold affords after the base
//!   and the prompt ([`TokenPrices::affordable_completion_tokens`]); none affordable →
//!   `400 {"error": "max_tokens_unaffordable"}`.
//! - **Answer**: `chat.completion` JSON with `usage`, or (`stream: true`) server-sent events
//!   produced one at a time ([`x402pp_openai::toy::ToyStream`]), the usage chunk only when
//!   `stream_options.include_usage`, then `data: [DONE]`.
//! - **Usage**: prompt tokens and the words emitted are reported through the request's
//!   [`UsageReporter`] (as the stream goes, and once more with its last frame).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use x402pp_openai::toy::{self, ToyOptions, ToyStream, DEFAULT_TOY_TOKENS, MAX_TOY_TOKENS};
use x402pp_openai::{ChatCompletionRequest, TokenPrices, CHAT_COMPLETIONS_PATH};
use x402pp_protocol::bazaar::DiscoveryDeclaration;
use x402pp_protocol::Metering;
use x402pp_server::{PaymentContext, ReportedUsage, RoutePrice, UsageReporter};

/// The chat route.
pub const CHAT_PATH: &str = CHAT_COMPLETIONS_PATH;

/// The longest injected delay, before the answer or between two words (milliseconds).
const MAX_INJECTED_DELAY_MS: u64 = 60_000;
/// The largest request body [`chat_router`] reads.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Prompts up to this size are generated on the request's task; longer ones (one SHA-256 over
/// the prompt per word) on the blocking pool.
const INLINE_PROMPT_BYTES: usize = 1_024;

/// How the chat route serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatOptions {
    /// Honour `delay_ms` and `token_delay_ms` in requests (demos and tests only).
    pub allow_injected_latency: bool,
    /// The route's prices, which bound the answer by what a metered voucher's hold affords;
    /// `None`: no bound from the hold.
    pub prices: Option<TokenPrices>,
}

impl ChatOptions {
    /// The options of a route priced `route` (its base and, when metered, its token prices).
    pub fn for_route(route: Option<&RoutePrice>, allow_injected_latency: bool) -> Self {
        let prices = route.and_then(|route| {
            route
                .metering
                .map(|metering| token_prices(route.price_per_request, &metering))
        });
        ChatOptions {
            allow_injected_latency,
            prices,
        }
    }
}

/// The token prices of a metered route whose base is `base`.
pub fn token_prices(base: u64, metering: &Metering) -> TokenPrices {
    TokenPrices {
        base,
        price_in: metering.unit_price_in,
        price_out: metering.unit_price_out,
        unit_size: metering.unit_size,
    }
}

/// The chat route alone, without payment: the handler logic, for tests and for embedding behind
/// another payment layer. [`crate::app`] serves it behind the provider's.
pub fn chat_router(options: ChatOptions) -> Router {
    Router::new()
        .route(CHAT_PATH, post(chat_completions))
        .with_state(options)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(options): State<ChatOptions>,
    request: Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let payment = parts.extensions.get::<PaymentContext>();
    let (seq, hold, reporter) = match payment {
        Some(PaymentContext::Session {
            seq, hold, usage, ..
        }) => (Some(*seq), *hold, Some(usage.clone())),
        Some(PaymentContext::Exact { .. }) | None => (None, None, None),
    };
    // `app` bounds the body with the request limits in front of the route; this bound is for
    // the router served alone.
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &e.to_string(),
            )
        }
    };
    let mut request: ChatCompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_request", &e.to_string()),
    };
    let delay = knob(&request, "delay_ms", options.allow_injected_latency);
    let token_delay = knob(&request, "token_delay_ms", options.allow_injected_latency);

    let prompt_tokens = toy::prompt_tokens(&request.prompt_text());
    if let (Some(prices), Some(hold)) = (options.prices, hold) {
        match prices.affordable_completion_tokens(hold, prompt_tokens) {
            Some(0) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "max_tokens_unaffordable",
                    &format!(
                        "a hold of {hold} pays for no completion token after the base of {} \
                         and {prompt_tokens} prompt tokens",
                        prices.base
                    ),
                )
            }
            Some(affordable) => bound_tokens(&mut request, affordable),
            None => {}
        }
    }
    let toy_options = ToyOptions {
        seq,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };

    if request.is_stream() {
        let inline = request.prompt_text().len() <= INLINE_PROMPT_BYTES;
        let frames = toy::stream_with(&request, toy_options);
        let stream = paced(frames, Pacing::new(delay, token_delay, reporter, inline));
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(stream),
        )
            .into_response();
    }

    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let answer = if body.len() <= INLINE_PROMPT_BYTES {
        toy::complete_with(&request, toy_options)
    } else {
        match tokio::task::spawn_blocking(move || toy::complete_with(&request, toy_options)).await {
            Ok(answer) => answer,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    if let (Some(reporter), Some(usage)) = (&reporter, answer.usage) {
        report(reporter, usage.prompt_tokens, usage.completion_tokens);
    }
    Json(answer).into_response()
}

/// Lowers the request's limit to `affordable` when the answer would be longer (a request
/// without a limit gets [`DEFAULT_TOY_TOKENS`], and none gets more than [`MAX_TOY_TOKENS`]).
fn bound_tokens(request: &mut ChatCompletionRequest, affordable: u64) {
    let wanted = request
        .token_limit()
        .unwrap_or(DEFAULT_TOY_TOKENS)
        .clamp(1, MAX_TOY_TOKENS);
    if wanted > affordable {
        request.max_tokens = Some(affordable);
        request.max_completion_tokens = None;
    }
}

/// A test knob of the request (`delay_ms`, `token_delay_ms`), when allowed and a number.
fn knob(request: &ChatCompletionRequest, name: &str, allowed: bool) -> Option<Duration> {
    if !allowed {
        return None;
    }
    let ms = request.extra.get(name).and_then(Value::as_u64)?;
    (ms > 0).then(|| Duration::from_millis(ms.min(MAX_INJECTED_DELAY_MS)))
}

fn report(reporter: &UsageReporter, prompt_tokens: u64, completion_tokens: u64) {
    reporter.report(ReportedUsage {
        units_in: prompt_tokens,
        units_out: completion_tokens,
        estimated: false,
    });
}

/// How a stream is paced and reported.
struct Pacing {
    frames: Option<ToyStream>,
    first: bool,
    delay: Option<Duration>,
    token_delay: Option<Duration>,
    reporter: Option<UsageReporter>,
    prompt_tokens: u64,
    /// Words are computed on the body's task (short prompt), else on the blocking pool.
    inline: bool,
}

impl Pacing {
    fn new(
        delay: Option<Duration>,
        token_delay: Option<Duration>,
        reporter: Option<UsageReporter>,
        inline: bool,
    ) -> Self {
        Pacing {
            frames: None,
            first: true,
            delay,
            token_delay,
            reporter,
            prompt_tokens: 0,
            inline,
        }
    }
}

/// The frames of `frames`, each computed when the body asks for it: the pacing's `delay` before
/// the first, `token_delay` before each word; the usage so far is reported after each word and
/// with the last frame.
fn paced(
    frames: ToyStream,
    mut pacing: Pacing,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    pacing.prompt_tokens = frames.usage().prompt_tokens;
    pacing.frames = Some(frames);
    stream::unfold(pacing, |mut pacing| async move {
        let mut frames = pacing.frames.take()?;
        if std::mem::take(&mut pacing.first) {
            if let Some(delay) = pacing.delay {
                tokio::time::sleep(delay).await;
            }
        }
        let word = frames.next_is_token();
        if let (true, Some(delay)) = (word, pacing.token_delay) {
            tokio::time::sleep(delay).await;
        }
        let (frames, frame) = if pacing.inline || !word {
            let frame = frames.next();
            (frames, frame)
        } else {
            // One SHA-256 over a long prompt per word: off the runtime's threads.
            match tokio::task::spawn_blocking(move || {
                let frame = frames.next();
                (frames, frame)
            })
            .await
            {
                Ok(done) => done,
                Err(_) => return None,
            }
        };
        let frame = frame?;
        let last = frames.len() == 0;
        if let (Some(reporter), true) = (&pacing.reporter, word || last) {
            report(reporter, pacing.prompt_tokens, frames.tokens_emitted());
        }
        if !last {
            pacing.frames = Some(frames);
        }
        Some((Ok(frame), pacing))
    })
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// How to call [`CHAT_PATH`] and what it answers, for discovery: `POST` an OpenAI chat request
/// (`messages`, optional `max_tokens` and `stream`), answered with a `chat.completion`.
pub fn chat_discovery() -> DiscoveryDeclaration {
    let input = json!({
        "model": toy::TOY_MODEL,
        "messages": [{"role": "user", "content": "Explain x402 in one line"}],
        "max_tokens": 8,
    });
    let example = serde_json::from_value::<ChatCompletionRequest>(input.clone())
        .map(|request| toy::complete(&request))
        .ok()
        .and_then(|answer| serde_json::to_value(answer).ok())
        .unwrap_or_default();
    DiscoveryDeclaration::post_json(
        input,
        json!({
            "type": "object",
            "properties": {
                "model": {"type": "string", "description": "x402pp-toy-1 (any name is served by it)"},
                "messages": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string"},
                            "content": {"type": "string"},
                        },
                        "required": ["role", "content"],
                    },
                },
                "max_tokens": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TOY_TOKENS,
                    "description": "completion tokens at most (default 16); bounded by the voucher's hold",
                },
                "stream": {"type": "boolean", "description": "answer with server-sent events"},
                "stream_options": {
                    "type": "object",
                    "properties": {"include_usage": {"type": "boolean"}},
                },
            },
            "required": ["messages"],
        }),
    )
    .with_output(
        example,
        Some(json!({
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "chat.completion"},
                "model": {"type": "string"},
                "choices": {"type": "array"},
                "usage": {
                    "type": "object",
                    "properties": {
                        "prompt_tokens": {"type": "integer"},
                        "completion_tokens": {"type": "integer"},
                        "total_tokens": {"type": "integer"},
                    },
                },
            },
            "required": ["id", "object", "model", "choices", "usage"],
        })),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

    use futures_util::StreamExt;
    use solana_sdk::pubkey::Pubkey;
    use tower::ServiceExt;
    use x402pp_openai::{SseParser, Usage};

    use super::*;

    const PRICES: TokenPrices = TokenPrices {
        base: 100,
        price_in: 0,
        price_out: 2_000,
        unit_size: 1_000,
    };

    fn session(hold: Option<u64>) -> (PaymentContext, UsageReporter) {
        let usage = UsageReporter::default();
        let context = PaymentContext::Session {
            session: Pubkey::new_unique(),
            seq: 7,
            cumulative: 1_000,
            hold,
            usage: usage.clone(),
        };
        (context, usage)
    }

    async fn call(options: ChatOptions, body: Value, payment: Option<PaymentContext>) -> Response {
        let mut request = Request::post(CHAT_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        if let Some(payment) = payment {
            request.extensions_mut().insert(payment);
        }
        chat_router(options).oneshot(request).await.unwrap()
    }

    async fn json_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The events of an SSE body, `[DONE]` as the string `"[DONE]"`.
    async fn events_of(response: Response) -> Vec<Value> {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
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

    fn ask(max_tokens: u64, stream: bool) -> Value {
        json!({"model": "x402pp-toy-1", "max_tokens": max_tokens, "stream": stream,
               "messages": [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "Explain x402 in one line"}]})
    }

    #[tokio::test]
    async fn the_toy_chat_completion_answers_openai_json_with_usage() {
        let (payment, usage) = session(Some(1_000));
        let response = call(
            ChatOptions {
                prices: Some(PRICES),
                ..ChatOptions::default()
            },
            ask(8, false),
            Some(payment),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let answer = json_of(response).await;
        assert_eq!(answer["object"], json!("chat.completion"));
        assert_eq!(answer["model"], json!("x402pp-toy-1"));
        assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(answer["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(answer["choices"][0]["message"]["role"], json!("assistant"));
        assert_eq!(answer["choices"][0]["finish_reason"], json!("length"));
        let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(text.split(' ').count(), 8);
        // 2 + 5 prompt words.
        assert_eq!(
            answer["usage"],
            json!({"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15})
        );
        let expected =
            toy::complete(&serde_json::from_value::<ChatCompletionRequest>(ask(8, false)).unwrap());
        assert_eq!(
            text,
            expected.choices[0].message.content.as_ref().unwrap().text()
        );
        // The voucher's seq makes the id; the usage reached the payment layer.
        assert_ne!(answer["id"], json!(expected.id));
        assert_eq!(
            usage.reported(),
            Some(ReportedUsage {
                units_in: 7,
                units_out: 8,
                estimated: false
            })
        );

        // Unpaid (a route the provider does not price): served, nothing to report.
        let response = call(ChatOptions::default(), ask(3, false), None).await;
        assert_eq!(
            json_of(response).await["usage"]["completion_tokens"],
            json!(3)
        );
    }

    #[tokio::test]
    async fn the_chat_stream_is_sse_ending_with_done() {
        let (payment, usage) = session(Some(1_000));
        let mut asked = ask(5, true);
        asked["stream_options"] = json!({"include_usage": true});
        let response = call(
            ChatOptions {
                prices: Some(PRICES),
                ..ChatOptions::default()
            },
            asked,
            Some(payment),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        let events = events_of(response).await;
        // Role, 5 words, finish, usage, [DONE].
        assert_eq!(events.len(), 9);
        assert_eq!(
            events[0]["choices"][0]["delta"],
            json!({"role": "assistant"})
        );
        assert!(events[1..6]
            .iter()
            .all(|e| e["object"] == json!("chat.completion.chunk")
                && e["choices"][0]["delta"]["content"].is_string()));
        assert_eq!(events[6]["choices"][0]["finish_reason"], json!("length"));
        assert_eq!(events[7]["choices"], json!([]));
        assert_eq!(
            events[7]["usage"],
            serde_json::to_value(Usage::new(7, 5)).unwrap()
        );
        assert_eq!(events[8], json!("[DONE]"));
        assert_eq!(
            usage.reported(),
            Some(ReportedUsage {
                units_in: 7,
                units_out: 5,
                estimated: false
            })
        );

        // Without include_usage: no usage chunk, [DONE] still last, the usage still reported.
        let (payment, usage) = session(None);
        let events =
            events_of(call(ChatOptions::default(), ask(3, true), Some(payment)).await).await;
        assert_eq!(events.len(), 1 + 3 + 1 + 1);
        assert!(events.iter().all(|e| e.get("usage").is_none()));
        assert_eq!(events.last(), Some(&json!("[DONE]")));
        assert_eq!(usage.reported().map(|u| u.units_out), Some(3));
    }

    #[tokio::test]
    async fn the_stream_reports_its_usage_as_it_goes_and_waits_between_tokens_only_when_allowed() {
        let (payment, usage) = session(Some(1_000));
        let mut slow = ask(4, true);
        slow["token_delay_ms"] = json!(60_000);
        let allowed = ChatOptions {
            allow_injected_latency: true,
            prices: Some(PRICES),
        };
        let response = call(allowed, slow.clone(), Some(payment)).await;
        let mut body = response.into_body().into_data_stream();
        // The role chunk comes at once; the first word waits its delay.
        let first = body.next().await.unwrap().unwrap();
        assert!(std::str::from_utf8(&first)
            .unwrap()
            .contains("\"role\":\"assistant\""));
        let second = tokio::time::timeout(Duration::from_millis(200), body.next()).await;
        assert!(second.is_err(), "the first word waits for token_delay_ms");
        assert_eq!(usage.reported(), None);
        drop(body);

        // Not allowed: the knob is ignored and the words come at once, reported one by one.
        let (payment, usage) = session(Some(1_000));
        let response = call(
            ChatOptions {
                prices: Some(PRICES),
                ..ChatOptions::default()
            },
            slow,
            Some(payment),
        )
        .await;
        let mut body = response.into_body().into_data_stream();
        body.next().await.unwrap().unwrap();
        for word in 1..=4 {
            body.next().await.unwrap().unwrap();
            assert_eq!(usage.reported().map(|u| u.units_out), Some(word));
        }
        let rest: Vec<_> = body.collect().await;
        assert_eq!(rest.len(), 2, "finish chunk and [DONE]");
    }

    #[tokio::test]
    async fn max_tokens_is_bounded_by_what_the_hold_affords() {
        let options = ChatOptions {
            prices: Some(PRICES),
            ..ChatOptions::default()
        };
        // (120 − 100) · 1 000 / 2 000 = 10 tokens.
        let (payment, usage) = session(Some(120));
        let answer = json_of(call(options, ask(64, false), Some(payment)).await).await;
        assert_eq!(answer["usage"]["completion_tokens"], json!(10));
        assert_eq!(answer["choices"][0]["finish_reason"], json!("length"));
        assert_eq!(usage.reported().map(|u| u.units_out), Some(10));

        // The same bound on a stream, and on max_completion_tokens.
        let (payment, _) = session(Some(120));
        let mut body = ask(64, true);
        body["max_completion_tokens"] = json!(200);
        let events = events_of(call(options, body, Some(payment)).await).await;
        assert_eq!(events.len(), 1 + 10 + 1 + 1);

        // A limit within the hold is kept.
        let (payment, _) = session(Some(1_000));
        let answer = json_of(call(options, ask(64, false), Some(payment)).await).await;
        assert_eq!(answer["usage"]["completion_tokens"], json!(64));

        // Input priced: 7 prompt tokens at 1 000 per 1 000 cost 7, leaving 13 → 6 tokens.
        let priced_input = ChatOptions {
            prices: Some(TokenPrices {
                price_in: 1_000,
                ..PRICES
            }),
            ..ChatOptions::default()
        };
        let (payment, _) = session(Some(120));
        let answer = json_of(call(priced_input, ask(64, false), Some(payment)).await).await;
        assert_eq!(answer["usage"]["completion_tokens"], json!(6));

        // A hold that pays only the base affords nothing: 400, nothing reported.
        let (payment, usage) = session(Some(101));
        let response = call(options, ask(64, true), Some(payment)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(response).await["error"],
            json!("max_tokens_unaffordable")
        );
        assert_eq!(usage.reported(), None);

        // No hold (a fixed-price session, exact): the client's limit.
        let (payment, _) = session(None);
        let answer = json_of(call(options, ask(64, false), Some(payment)).await).await;
        assert_eq!(answer["usage"]["completion_tokens"], json!(64));
        // Free completion tokens: the hold bounds nothing.
        let free = ChatOptions {
            prices: Some(TokenPrices {
                price_out: 0,
                ..PRICES
            }),
            ..ChatOptions::default()
        };
        let (payment, _) = session(Some(100));
        let answer = json_of(call(free, ask(64, false), Some(payment)).await).await;
        assert_eq!(answer["usage"]["completion_tokens"], json!(64));
    }

    #[tokio::test]
    async fn a_request_that_is_not_a_chat_request_is_answered_400() {
        for body in [
            json!("hello"),
            json!({"messages": "not a list"}),
            json!({"max_tokens": -1, "messages": []}),
        ] {
            let response = call(ChatOptions::default(), body.clone(), None).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(json_of(response).await["error"], json!("malformed_request"));
        }
    }

    #[test]
    fn the_chat_route_is_declared_for_discovery_and_its_example_fits() {
        let declaration = chat_discovery();
        assert_eq!(declaration.validate(), Ok(()));
        let ext = declaration.extension();
        assert_eq!(ext.method(), Some("POST"));
        let request: ChatCompletionRequest =
            serde_json::from_value(ext.info["input"]["body"].clone()).unwrap();
        let answer = ext.info["output"]["example"].clone();
        assert_eq!(
            answer,
            serde_json::to_value(toy::complete(&request)).unwrap()
        );
        assert_eq!(answer["usage"]["completion_tokens"], json!(8));
    }

    #[test]
    fn the_options_of_a_metered_route_carry_its_token_prices() {
        let route = RoutePrice::metered(
            100,
            Metering {
                unit_price_in: 1,
                unit_price_out: 2_000,
                unit_size: 1_000,
                max_per_request: 1_000,
                unit_kind: x402pp_protocol::UnitKind::Tokens,
            },
        );
        let options = ChatOptions::for_route(Some(&route), true);
        assert_eq!(
            options.prices,
            Some(TokenPrices {
                base: 100,
                price_in: 1,
                price_out: 2_000,
                unit_size: 1_000
            })
        );
        assert!(options.allow_injected_latency);
        assert_eq!(
            ChatOptions::for_route(Some(&RoutePrice::new(5)), false).prices,
            None
        );
        assert_eq!(ChatOptions::for_route(None, false), ChatOptions::default());
    }
}
