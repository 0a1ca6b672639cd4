//! The forwarding handlers.
//!
//! # A paid request (`POST /v1/chat/completions`, `POST /v1/completions`)
//!
//! 1. The body must be a JSON object (`400 malformed_request` otherwise); its `model` is
//!    replaced when [`GatewayOptions::model`](crate::GatewayOptions::model) is set.
//! 2. **Bound.** The request may cost at most its hold (a metered session's voucher), or the
//!    route's `max_per_request` (an `exact` payment, or no payment at all). The completion
//!    tokens that affords, after the base and the prompt, are
//!    `floor((hold − base − ceil(prompt_tokens·price_in/unit_size))·unit_size/price_out)`, with
//!    the prompt tokens estimated as `ceil(prompt bytes / 4)` ([`PROMPT_BYTES_PER_TOKEN`]; the
//!    bytes of the messages' text, or of `prompt`). `max_tokens`/`max_completion_tokens` are
//!    lowered to it (`max_tokens` set if neither is); none affordable →
//!    `400 max_tokens_unaffordable`. `price_out` 0: no bound.
//! 3. **Usage.** A stream (`stream: true`) gets `stream_options.include_usage: true`, whether or
//!    not the client asked; a usage-only chunk (`choices: []`) the client did not ask for is
//!    consumed, not forwarded.
//! 4. **Headers.** The upstream gets the client's headers except `Authorization`,
//!    `Proxy-Authorization`, `Cookie`, every `X-402-*`, `PAYMENT-*` and `X-PAYMENT*` header,
//!    hop-by-hop headers, `Host`, `Content-Length` and `Accept-Encoding` (the answer must come
//!    uncompressed to be counted); the upstream API key, if configured, becomes its
//!    `Authorization: Bearer`.
//! 5. **Answer.** Status passed through. An upstream that cannot be reached answers
//!    `502 upstream_unavailable` (`504 upstream_timeout` if its headers do not come in time);
//!    an upstream `4xx`/`5xx` is passed through as is, before any byte of an answer: the
//!    payment layer receipts it as a failed request, charged 0. A `text/event-stream` answer is
//!    relayed frame by frame (one frame per upstream read, with the events it completed);
//!    counted with [`x402pp_openai::StreamUsage`] (the last `usage` a chunk carries, else the
//!    content deltas, flagged estimated) and reported to the layer as it goes and at its end.
//!    A JSON answer is read whole, its [`x402pp_openai::json_body_usage`] reported.
//! 6. **Drop.** A client that goes away drops the relayed body, which drops the upstream
//!    response: its connection closes and the upstream stops generating.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use x402pp_openai::{json_body_usage, rewrite_for_upstream, CHAT_COMPLETIONS_PATH};
use x402pp_server::{PaymentContext, ReportedUsage, UsageReporter};

use crate::relay::Relay;
use crate::Gateway;

/// The prompt-token estimate: one token per this many bytes of prompt text, rounded up.
pub const PROMPT_BYTES_PER_TOKEN: u64 = 4;

/// Headers never forwarded (besides every `x-402-*`, `payment-*`, `x-payment*` and `proxy-*`
/// one), as their lowercase names.
const DROPPED_HEADERS: [&str; 13] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "accept-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Whether a client header may reach the upstream.
pub fn forwardable(name: &HeaderName) -> bool {
    let name = name.as_str();
    !(DROPPED_HEADERS.contains(&name)
        || name.starts_with("x-402-")
        || name.starts_with("payment-")
        || name.starts_with("x-payment")
        || name.starts_with("proxy-"))
}

/// A JSON error answer `{"error": code, "message": message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// The bytes of a request's prompt text: the messages' `content` (strings, or the `text` of
/// their parts) of a chat request, the `prompt` (string or strings) of a completion request;
/// the whole body's length when neither is there.
pub fn prompt_bytes(request: &Value, body_len: usize) -> u64 {
    fn text_bytes(value: &Value) -> u64 {
        match value {
            Value::String(text) => u64::try_from(text.len()).unwrap_or(u64::MAX),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::Object(part) => part.get("text").map_or(0, text_bytes),
                    other => text_bytes(other),
                })
                .fold(0, u64::saturating_add),
            _ => 0,
        }
    }
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        return messages
            .iter()
            .filter_map(|m| m.get("content"))
            .map(text_bytes)
            .fold(0, u64::saturating_add);
    }
    match request.get("prompt") {
        Some(prompt) => text_bytes(prompt),
        None => u64::try_from(body_len).unwrap_or(u64::MAX),
    }
}

fn report(reporter: Option<&UsageReporter>, usage: x402pp_openai::UsageCount) {
    if let Some(reporter) = reporter {
        reporter.report(ReportedUsage {
            units_in: usage.prompt_tokens,
            units_out: usage.completion_tokens,
            estimated: usage.estimated,
        });
    }
}

/// `POST /v1/chat/completions` and `POST /v1/completions` (see the module doc).
pub(crate) async fn completion(State(gateway): State<Gateway>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let path = if parts.uri.path() == CHAT_COMPLETIONS_PATH {
        CHAT_COMPLETIONS_PATH
    } else {
        x402pp_openai::COMPLETIONS_PATH
    };
    let (hold, reporter) = match parts.extensions.get::<PaymentContext>() {
        Some(PaymentContext::Session { hold, usage, .. }) => (*hold, Some(usage.clone())),
        Some(PaymentContext::Exact { .. }) | None => (None, None),
    };
    let body = match axum::body::to_bytes(body, gateway.options.max_request_bytes).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &e.to_string(),
            )
        }
    };
    let mut request: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(request)) => Value::Object(request),
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "the body must be a JSON object",
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_request", &e.to_string()),
    };
    if let (Some(model), Some(object)) = (&gateway.options.model, request.as_object_mut()) {
        object.insert("model".to_owned(), Value::String(model.clone()));
    }

    let (prices, max_per_request) = gateway.prices(path);
    let hold = hold.unwrap_or(max_per_request);
    let prompt_tokens = prompt_bytes(&request, body.len()).div_ceil(PROMPT_BYTES_PER_TOKEN);
    let bound = prices.affordable_completion_tokens(hold, prompt_tokens);
    if bound == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "max_tokens_unaffordable",
            &format!(
                "a hold of {hold} pays for no completion token after the base of {} and about \
                 {prompt_tokens} prompt tokens",
                prices.base
            ),
        );
    }
    let rewrite = match rewrite_for_upstream(&mut request, bound) {
        Ok(rewrite) => rewrite,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_request", &e.to_string()),
    };
    let body = match serde_json::to_vec(&request) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed_request", &e.to_string()),
    };

    let mut upstream = gateway
        .client
        .post(gateway.options.upstream_url(path))
        .headers(forwarded_headers(&parts.headers))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = &gateway.options.upstream_api_key {
        upstream = upstream.bearer_auth(key);
    }
    let answer = match send(&gateway, upstream).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };

    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let is_sse = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with(x402pp_openai::sse::CONTENT_TYPE));
    if status.is_success() && is_sse {
        let relay = Relay::new(answer, !rewrite.client_asked_usage, reporter);
        let mut response = Response::new(Body::from_stream(relay));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        return response;
    }

    let bytes = match read_bounded(answer, gateway.options.max_answer_bytes).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    if status.is_success() {
        if let Ok(usage) = json_body_usage(&bytes) {
            report(reporter.as_ref(), usage);
        }
    }
    passed_through(status, content_type, bytes)
}

/// `GET /v1/models`, passed through (the client's headers are not forwarded; the upstream API
/// key is).
pub(crate) async fn models(State(gateway): State<Gateway>) -> Response {
    let mut upstream = gateway
        .client
        .get(gateway.options.upstream_url(crate::MODELS_PATH));
    if let Some(key) = &gateway.options.upstream_api_key {
        upstream = upstream.bearer_auth(key);
    }
    let answer = match send(&gateway, upstream).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    match read_bounded(answer, gateway.options.max_answer_bytes).await {
        Ok(bytes) => passed_through(status, content_type, bytes),
        Err(response) => response,
    }
}

fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| forwardable(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Sends `request`, waiting at most the first-byte timeout for the response headers.
async fn send(
    gateway: &Gateway,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, Response> {
    match tokio::time::timeout(gateway.options.first_byte_timeout, request.send()).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) if e.is_timeout() => Err(upstream_timeout()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, upstream = %gateway.options.upstream, "upstream unreachable");
            Err(error(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream server cannot be reached",
            ))
        }
        Err(_) => Err(upstream_timeout()),
    }
}

fn upstream_timeout() -> Response {
    error(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        "the upstream server did not answer in time",
    )
}

/// The whole body of `answer`, at most `limit` bytes (`502 upstream_answer_too_large` above,
/// `502 upstream_unavailable` if it breaks off).
async fn read_bounded(mut answer: reqwest::Response, limit: usize) -> Result<Bytes, Response> {
    let mut out = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                if chunk.len() > limit.saturating_sub(out.len()) {
                    return Err(error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_answer_too_large",
                        &format!("the upstream's answer is over {limit} bytes"),
                    ));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(out)),
            Err(e) if e.is_timeout() => return Err(upstream_timeout()),
            Err(_) => {
                return Err(error(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unavailable",
                    "the upstream's answer broke off",
                ))
            }
        }
    }
}

fn passed_through(status: StatusCode, content_type: Option<HeaderValue>, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_and_credential_headers_are_never_forwarded() {
        for name in [
            "authorization",
            "x-402-voucher",
            "x-402-receipt-mode",
            "payment-signature",
            "x-payment",
            "cookie",
            "proxy-authorization",
            "host",
            "accept-encoding",
            "transfer-encoding",
            "keep-alive",
        ] {
            assert!(!forwardable(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "accept",
            "user-agent",
            "x-request-id",
            "openai-organization",
        ] {
            assert!(forwardable(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn the_prompt_bytes_are_the_texts_of_the_messages_or_the_prompt() {
        let chat = json!({"messages": [
            {"role": "system", "content": "abcd"},
            {"role": "user", "content": [{"type": "text", "text": "efgh"}, {"type": "image_url"}]},
            {"role": "assistant", "tool_calls": []}
        ]});
        assert_eq!(prompt_bytes(&chat, 999), 8);
        assert_eq!(prompt_bytes(&json!({"prompt": "hello"}), 999), 5);
        assert_eq!(prompt_bytes(&json!({"prompt": ["ab", "cd"]}), 999), 4);
        assert_eq!(prompt_bytes(&json!({"model": "m"}), 999), 999);
    }
}
