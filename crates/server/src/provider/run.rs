//! Running the paid handler: timed, bounded, panics caught.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use futures_util::FutureExt as _;
use x402pp_protocol::ReceiptStatus;
use x402pp_session::status_of_http;

use super::Provider;

impl Provider {
    /// Runs the handler with the configured timeout and buffers its response body.
    pub(super) async fn run<F, Fut>(
        &self,
        request: Request<Body>,
        inner: F,
    ) -> (ReceiptStatus, http::response::Parts, Bytes, Duration)
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        let started = Instant::now();
        // A panicking handler must still get a receipt: the voucher was already accepted.
        let guarded = std::panic::AssertUnwindSafe(inner(request)).catch_unwind();
        let outcome = tokio::time::timeout(self.config.handler_timeout, guarded).await;
        let failure = |code: StatusCode, message: &str| {
            let (parts, _) = Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(())
                .unwrap_or_default()
                .into_parts();
            let body =
                serde_json::json!({ "error": "handler_failed", "message": message }).to_string();
            (parts, Bytes::from(body))
        };
        let (status, parts, body) = match outcome {
            Err(_) => {
                let (parts, body) = failure(StatusCode::GATEWAY_TIMEOUT, "the handler timed out");
                (ReceiptStatus::Timeout, parts, body)
            }
            Ok(Err(_panic)) => {
                tracing::error!("a paid handler panicked");
                let (parts, body) =
                    failure(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed");
                (ReceiptStatus::HandlerError, parts, body)
            }
            Ok(Ok(response)) => {
                let (parts, body) = response.into_parts();
                match axum::body::to_bytes(body, self.config.max_response_body).await {
                    Ok(bytes) => (status_of_http(parts.status.as_u16()), parts, bytes),
                    Err(_) => {
                        let (parts, body) = failure(
                            StatusCode::BAD_GATEWAY,
                            "the handler's response was too large or broken",
                        );
                        (ReceiptStatus::HandlerError, parts, body)
                    }
                }
            }
        };
        (status, parts, body, started.elapsed())
    }
}
