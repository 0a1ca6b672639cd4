//! The server's errors: each maps to an x402++ wire code and HTTP status, and renders as the
//! JSON error body. Internal details are logged, not returned.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use x402pp_protocol::{ErrorBody, ErrorCode, ProtocolError};

/// A request the server refuses, with its wire code.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServerError {
    /// Wire code (decides the HTTP status).
    pub code: ErrorCode,
    /// Message for the client.
    pub message: String,
    /// Extra data for the client (e.g. top-up details).
    pub details: Option<serde_json::Value>,
    /// Extra headers (e.g. `X-402-Session-Status`, `PAYMENT-REQUIRED`).
    pub headers: Vec<(&'static str, String)>,
}

impl ServerError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    /// Adds details to the body.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a header to the response.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A header that could not be decoded.
    pub fn malformed(error: &ProtocolError) -> Self {
        Self::new(error.code(), error.to_string())
    }

    /// The chain could not be reached.
    pub fn chain_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "chain unavailable");
        Self::new(
            ErrorCode::ChainUnavailable,
            "the Solana RPC is unavailable; retry later",
        )
    }

    /// The x402 facilitator could not be asked (down, 5xx, rate limited, no verdict): named as
    /// such, not blamed on the chain.
    pub fn facilitator_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "facilitator unavailable");
        Self::new(
            ErrorCode::FacilitatorUnavailable,
            "the x402 facilitator is unavailable; retry later",
        )
    }

    /// An unexpected failure; the detail is logged only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::InternalError, "internal error")
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: self.code,
            message: self.message,
            details: self.details,
        };
        let mut response = (status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

impl From<x402pp_limits::LimitError> for ServerError {
    fn from(error: x402pp_limits::LimitError) -> Self {
        let details = error.details();
        let headers = error.headers();
        Self {
            code: error.code,
            message: error.message,
            details,
            headers,
        }
    }
}

/// Why a [`crate::Provider`] could not start (not a wire error: nothing was served).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is refused ([`crate::ServerConfig::validate`]).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The mint could not be read from the chain.
    #[error("reading the mint {mint}: {source}")]
    Chain {
        /// The configured mint.
        mint: solana_sdk::pubkey::Pubkey,
        /// The RPC failure.
        #[source]
        source: Box<solana_client::client_error::ClientError>,
    },
    /// The configured mint is not a mint of SPL Token or Token-2022.
    #[error("{0} is not a token mint")]
    NotAMint(solana_sdk::pubkey::Pubkey),
    /// The facilitator could not say what it supports.
    #[error("asking the facilitator what it supports: {0}")]
    Facilitator(#[from] crate::facilitator::FacilitatorError),
}
