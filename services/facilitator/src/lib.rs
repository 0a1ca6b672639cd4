//! x402pp-facilitator: the x402 v2 facilitator HTTP API for the `exact` scheme on Solana.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /verify` | `{x402Version, paymentPayload, paymentRequirements}` | `VerifyResponse` |
//! | `POST /settle` | same | `SettleResponse` |
//! | `GET /supported` | | `SupportedResponse` (kinds, `signers["solana:*"]` = fee payer) |
//! | `GET /health` | | `{"status": "ok" \| "rpc_unavailable", ...}` |
//! | `GET /metrics` | | Prometheus text |
//!
//! The JSON is byte-compatible with the x402 v2 specification so `@x402/core`'s
//! `HTTPFacilitatorClient` can use it. A body that is not such JSON gets
//! `400 {"error": "malformed_request", "message": ...}`, never a 500.

pub mod cli;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use solana_client::nonblocking::rpc_client::RpcClient;
use x402pp_protocol::x402::FacilitatorRequest;
use x402pp_protocol::{ErrorBody, ErrorCode};
use x402pp_solana::exact::facilitator::ExactFacilitator;

pub use metrics::Metrics;

/// Largest request body accepted: a facilitator request with a 1 232-byte transaction is ~3 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    facilitator: Arc<ExactFacilitator>,
    rpc: Arc<RpcClient>,
    metrics: Arc<Metrics>,
}

impl AppState {
    /// State around a facilitator and the RPC it uses.
    pub fn new(facilitator: Arc<ExactFacilitator>, rpc: Arc<RpcClient>) -> Self {
        Self {
            facilitator,
            rpc,
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// The facilitator's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route("/supported", get(supported))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Binds `addr` and serves `router(state)` until the future is dropped; returns the bound address
/// and the server task.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((local, task))
}

/// An HTTP error: a status and the JSON error body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: String) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<FacilitatorRequest, ApiError> {
    let bytes = body.map_err(|rejection| {
        // Oversized bodies keep their 413; every other rejection is a malformed request.
        let status = rejection.status();
        ApiError::new(status, ErrorCode::MalformedRequest, rejection.body_text())
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            format!("body is not an x402 v2 facilitator request: {e}"),
        )
    })
}

async fn verify(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let request = match parse(body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.malformed();
            return error.into_response();
        }
    };
    let started = Instant::now();
    let answer = state.facilitator.verify(&request).await;
    state
        .metrics
        .verified(answer.invalid_reason.as_deref(), started.elapsed());
    tracing::info!(
        valid = answer.is_valid,
        reason = answer.invalid_reason.as_deref(),
        payer = answer.payer.as_deref(),
        "verify"
    );
    Json(answer).into_response()
}

async fn settle(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let request = match parse(body) {
        Ok(request) => request,
        Err(error) => {
            state.metrics.malformed();
            return error.into_response();
        }
    };
    let started = Instant::now();
    let answer = state.facilitator.settle(&request).await;
    state
        .metrics
        .settled(answer.error_reason.as_deref(), started.elapsed());
    tracing::info!(
        success = answer.success,
        reason = answer.error_reason.as_deref(),
        transaction = %answer.transaction,
        payer = answer.payer.as_deref(),
        "settle"
    );
    Json(answer).into_response()
}

async fn supported(State(state): State<AppState>) -> Response {
    Json(state.facilitator.supported()).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let rpc_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.rpc.get_health()).await,
        Ok(Ok(()))
    );
    let body = serde_json::json!({
        "status": if rpc_ok { "ok" } else { "rpc_unavailable" },
        "network": state.facilitator.network(),
        "feePayer": state.facilitator.fee_payer().to_string(),
    });
    let status = if rpc_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            e.to_string(),
        )
        .into_response(),
    }
}
