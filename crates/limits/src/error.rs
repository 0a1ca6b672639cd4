//! The refusal of a request by a limit: a wire code, a message and, for rate limits, the
//! `Retry-After` seconds. It renders as the x402++ JSON error body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use x402pp_protocol::{ErrorBody, ErrorCode};

/// A request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LimitError {
    /// Wire code (decides the HTTP status): `header_too_large`, `payload_too_large`,
    /// `request_timeout`, `rate_limited` or `malformed_request` (a body that could not be read).
    pub code: ErrorCode,
    /// Message for the client.
    pub message: String,
    /// Whole seconds to wait before retrying (`Retry-After`, and `details.retryAfterSecs`), for
    /// `rate_limited`.
    pub retry_after_secs: Option<u64>,
}

impl LimitError {
    /// A refusal with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The body's `details`: `{"retryAfterSecs": n}` for a rate limit.
    pub fn details(&self) -> Option<serde_json::Value> {
        self.retry_after_secs
            .map(|secs| serde_json::json!({ "retryAfterSecs": secs }))
    }

    /// The response headers beyond the body's: `Retry-After` for a rate limit.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.retry_after_secs
            .map(|secs| ("retry-after", secs.to_string()))
            .into_iter()
            .collect()
    }
}

impl IntoResponse for LimitError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = self.headers();
        let body = ErrorBody {
            error: self.code,
            details: self.details(),
            message: self.message,
        };
        let mut response = (status, Json(body)).into_response();
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rate_limit_renders_as_429_json_with_retry_after() {
        let error = LimitError {
            code: ErrorCode::RateLimited,
            message: "too many".into(),
            retry_after_secs: Some(3),
        };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "3");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: ErrorBody = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body.error, ErrorCode::RateLimited);
        assert_eq!(body.message, "too many");
        assert_eq!(
            body.details,
            Some(serde_json::json!({ "retryAfterSecs": 3 }))
        );
    }

    #[test]
    fn other_refusals_have_no_retry_after() {
        let error = LimitError::new(ErrorCode::PayloadTooLarge, "big");
        assert_eq!(error.details(), None);
        assert!(error.headers().is_empty());
        assert_eq!(
            error.into_response().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
