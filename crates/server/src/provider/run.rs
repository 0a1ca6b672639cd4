//! Running the paid handler: timed, bounded, panics caught.

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use futures_util::FutureExt as _;
use x402pp_protocol::ReceiptStatus;
use x402pp_session::status_of_http;

use super::Provider;

/// The handler's answer before its body is read: its body, or the failure answer the layer
/// substituted (a timeout, a panic).
pub(super) enum Answer {
    /// The handler answered; the body is still to be read (or streamed).
    Body(Body),
    /// The handler failed; the layer's answer.
    Failed(Bytes),
}

fn failure(code: StatusCode, message: &str) -> (http::response::Parts, Bytes) {
    let (parts, _) = Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(())
        .unwrap_or_default()
        .into_parts();
    let body = serde_json::json!({ "error": "handler_failed", "message": message }).to_string();
    (parts, Bytes::from(body))
}

impl Provider {
    /// Runs the handler until it answers (status and headers), within the handler timeout; a
    /// panic or a timeout becomes the layer's own failure answer.
    pub(super) async fn run_head<F, Fut>(
        &self,
        request: Request<Body>,
        inner: F,
    ) -> (ReceiptStatus, http::response::Parts, Answer)
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        // A panicking handler must still get a receipt: the voucher was already accepted.
        let guarded = std::panic::AssertUnwindSafe(inner(request)).catch_unwind();
        match tokio::time::timeout(self.config.handler_timeout, guarded).await {
            Err(_) => {
                let (parts, body) = failure(StatusCode::GATEWAY_TIMEOUT, "the handler timed out");
                (ReceiptStatus::Timeout, parts, Answer::Failed(body))
            }
            Ok(Err(_panic)) => {
                tracing::error!("a paid handler panicked");
                let (parts, body) =
                    failure(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed");
                (ReceiptStatus::HandlerError, parts, Answer::Failed(body))
            }
            Ok(Ok(response)) => {
                let (parts, body) = response.into_parts();
                (
                    status_of_http(parts.status.as_u16()),
                    parts,
                    Answer::Body(body),
                )
            }
        }
    }

    /// Reads an answer's body (bounded by `max_response_body`); a body too large or broken is a
    /// failure.
    pub(super) async fn buffer(
        &self,
        status: ReceiptStatus,
        parts: http::response::Parts,
        answer: Answer,
    ) -> (ReceiptStatus, http::response::Parts, Bytes) {
        let body = match answer {
            Answer::Failed(bytes) => return (status, parts, bytes),
            Answer::Body(body) => body,
        };
        match axum::body::to_bytes(body, self.config.max_response_body).await {
            Ok(bytes) => (status, parts, bytes),
            Err(_) => {
                let (parts, body) = failure(
                    StatusCode::BAD_GATEWAY,
                    "the handler's response was too large or broken",
                );
                (ReceiptStatus::HandlerError, parts, body)
            }
        }
    }
}
