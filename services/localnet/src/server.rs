//! The HTTP side: one `POST /` JSON-RPC endpoint (plus `GET /health`), on axum.
//!
//! Requests are handed to `jsonrpc-core` on the blocking pool (bank work is CPU-bound), so a
//! slow transaction never stalls the listener. Bodies above [`MAX_REQUEST_BODY_SIZE`] get
//! `413 Payload Too Large`, like a validator; a panic in a method becomes a `-32603` error and
//! the server keeps serving.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use jsonrpc_core::{ErrorCode, Failure, Id, IoHandler, Output, Version};
use serde_json::Value;

/// Largest accepted request body, the validator's default (50 KiB).
pub const MAX_REQUEST_BODY_SIZE: usize = 50 * 1024;

/// The router serving `io`.
pub(crate) fn router(io: Arc<IoHandler>) -> Router {
    Router::new()
        .route("/", post(rpc))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY_SIZE))
        .with_state(io)
}

fn json(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A JSON-RPC error response with a null id.
fn error(code: ErrorCode, message: Option<&str>) -> Response {
    let mut error = jsonrpc_core::Error::new(code);
    if let Some(message) = message {
        error.message = message.to_string();
    }
    let failure = Output::Failure(Failure {
        jsonrpc: Some(Version::V2),
        error,
        id: Id::Null,
    });
    json(serde_json::to_string(&failure).unwrap_or_default())
}

fn failure(code: ErrorCode) -> Value {
    let failure = Output::Failure(Failure {
        jsonrpc: Some(Version::V2),
        error: jsonrpc_core::Error::new(code),
        id: Id::Null,
    });
    serde_json::to_value(failure).unwrap_or(Value::Null)
}

/// Answers one request body. A batch is split here so that each element is answered on its own
/// (`[1, {...}]` gets an Invalid Request error for `1` and an answer for the call; jsonrpc-core
/// would refuse the whole batch as a parse error).
fn handle(io: &IoHandler, text: &str) -> Option<String> {
    let run = |request: &str| jsonrpc_core::futures_executor::block_on(io.handle_request(request));
    match serde_json::from_str::<Value>(text) {
        Err(_) | Ok(Value::Object(_)) => run(text),
        Ok(Value::Array(items)) if items.is_empty() => {
            Some(failure(ErrorCode::InvalidRequest).to_string())
        }
        Ok(Value::Array(items)) => {
            let answers: Vec<Value> = items
                .iter()
                .filter_map(|item| match item {
                    Value::Object(_) => run(&item.to_string())
                        .map(|out| serde_json::from_str(&out).unwrap_or(Value::Null)),
                    _ => Some(failure(ErrorCode::InvalidRequest)),
                })
                .collect();
            (!answers.is_empty()).then(|| Value::Array(answers).to_string())
        }
        Ok(_) => Some(failure(ErrorCode::InvalidRequest).to_string()),
    }
}

async fn rpc(State(io): State<Arc<IoHandler>>, body: Bytes) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(ErrorCode::ParseError, None);
    };
    let handled = tokio::task::spawn_blocking(move || handle(&io, &text)).await;
    match handled {
        Ok(Some(response)) => json(response),
        // Only notifications: nothing to answer.
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(join_error) => {
            tracing::error!(%join_error, "an RPC method panicked");
            error(ErrorCode::InternalError, None)
        }
    }
}
