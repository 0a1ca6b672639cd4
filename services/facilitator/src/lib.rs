//! x402pp-facilitator: the x402 v2 facilitator HTTP API for the `exact` scheme on Solana.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /verify` | `{x402Version, paymentPayload, paymentRequirements}` | `VerifyResponse` |
//! | `POST /settle` | same | `SettleResponse` |
//! | `GET /supported` | | `SupportedResponse` (kinds, `extensions: ["bazaar"]`, `signers["solana:*"]` = fee payer) |
//! | `GET /discovery/resources?type=&limit=&offset=` | | `DiscoveryResourcesResponse`: the paid resources that declared the `bazaar` extension ([`discovery`]) |
//! | `POST /sponsor` | `{transaction}` | `{signature, instruction}`: fee sponsorship of agents' escrow transactions, when set up ([`AppState::with_sponsor`]; docs/protocol.md §5.1) |
//! | `GET /health` | | `{"status": "ok" \| "rpc_unavailable", ...}` |
//! | `GET /metrics` | | Prometheus text |
//!
//! The JSON is byte-compatible with the x402 v2 specification so `@x402/core`'s
//! `HTTPFacilitatorClient` can use it. A body that is not such JSON gets
//! `400 {"error": "malformed_request", "message": ...}`, never a 500.
//!
//! Every route has the [`RequestLimits`] of its [`AppState`] ([`default_limits`] unless set):
//! header bytes (`431 header_too_large`), body bytes (`413 payload_too_large`), time to receive
//! the body (`408 request_timeout`) and an optional per-IP rate (`429 rate_limited` with
//! `Retry-After`; [`serve`] passes the peer address).

pub mod cli;
pub mod discovery;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use solana_client::nonblocking::rpc_client::RpcClient;
use x402pp_limits::{RequestLimits, RequestLimitsLayer};
use x402pp_protocol::x402::FacilitatorRequest;
use x402pp_protocol::{ErrorBody, ErrorCode};
use x402pp_solana::exact::facilitator::ExactFacilitator;
use x402pp_solana::sponsor::Sponsor;

pub use discovery::Catalog;
pub use metrics::Metrics;

/// Largest request body accepted: a facilitator request with a 1 232-byte transaction is ~3 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The facilitator's default request limits: 32 KiB of headers, [`MAX_BODY_BYTES`] of body,
/// 30 s to receive it, no per-IP rate.
pub fn default_limits() -> RequestLimits {
    RequestLimits {
        max_body_bytes: MAX_BODY_BYTES,
        ..RequestLimits::default()
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    facilitator: Arc<ExactFacilitator>,
    rpc: Arc<RpcClient>,
    metrics: Arc<Metrics>,
    limits: RequestLimits,
    catalog: Arc<Catalog>,
    sponsor: Option<Arc<Sponsor>>,
}

impl AppState {
    /// State around a facilitator and the RPC it uses, with [`default_limits`].
    pub fn new(facilitator: Arc<ExactFacilitator>, rpc: Arc<RpcClient>) -> Self {
        Self {
            facilitator,
            rpc,
            metrics: Arc::new(Metrics::new()),
            limits: default_limits(),
            catalog: Arc::new(Catalog::default()),
            sponsor: None,
        }
    }

    /// The same state sponsoring agents' escrow transactions with `sponsor` (`POST /sponsor`):
    /// a neutral sponsor, e.g. for disputes against the providers it serves
    /// (`SponsorPolicy::dispute_providers`).
    pub fn with_sponsor(mut self, sponsor: Arc<Sponsor>) -> Self {
        self.sponsor = Some(sponsor);
        self
    }

    /// The same state with a discovery catalog of at most `capacity` resources (0: none).
    pub fn with_catalog_capacity(mut self, capacity: usize) -> Self {
        self.catalog = Arc::new(Catalog::new(capacity));
        self
    }

    /// The discovery catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The same state with other request limits.
    pub fn with_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// The facilitator's routes.
pub fn router(state: AppState) -> Router {
    let limits = RequestLimitsLayer::new(state.limits.clone());
    let max_body = state.limits.max_body_bytes;
    Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route("/supported", get(supported))
        .route("/discovery/resources", get(discovery_resources))
        .route("/sponsor", post(sponsor))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(limits)
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
    // The peer address feeds the per-IP rate limit.
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move { axum::serve(listener, make).await });
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
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::MalformedRequest
        };
        ApiError::new(status, code, rejection.body_text())
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

/// `POST /sponsor`: pays the fee (and rent) of an agent's escrow transaction under the
/// sponsor's policy, or says why not (`sponsor_refused` 403, `rate_limited` 429 with
/// `Retry-After`, `malformed_request` 400, `chain_unavailable` 503).
async fn sponsor(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let Some(sponsor) = state.sponsor.clone() else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::SponsorRefused,
            "this facilitator does not sponsor transactions".into(),
        )
        .into_response();
    };
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedRequest,
                format!("body is not a sponsor request: {}", rejection.body_text()),
            )
            .into_response()
        }
    };
    match sponsor.answer(&bytes).await {
        Ok((response, _)) => Json(response).into_response(),
        Err(error) => {
            let code = error.code();
            let status =
                StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = ApiError::new(status, code, error.public_message()).into_response();
            if let Some(secs) = error.retry_after_secs() {
                if let Ok(value) = secs.to_string().parse() {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            response
        }
    }
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
    if answer.success {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match state.catalog.record(&request, now) {
            Ok(()) => {}
            Err(discovery::NotListed::NoExtension | discovery::NotListed::Off) => {}
            Err(why) => tracing::warn!(%why, "settled resource not listed for discovery"),
        }
    }
    Json(answer).into_response()
}

/// `GET /discovery/resources`: a page of the catalog; a query that does not parse, or a limit
/// out of range, is `400 malformed_request`.
async fn discovery_resources(
    State(state): State<AppState>,
    query: Result<Query<discovery::ListQuery>, QueryRejection>,
) -> Response {
    let result = query
        .map_err(|rejection| format!("bad discovery query: {}", rejection.body_text()))
        .and_then(|Query(query)| {
            state
                .catalog
                .list(&query)
                .map_err(|e| format!("bad discovery query: {e}"))
        });
    match result {
        Ok(page) => Json(page).into_response(),
        Err(message) => {
            state.metrics.malformed();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedRequest,
                message,
            )
            .into_response()
        }
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

async fn supported(State(state): State<AppState>) -> Response {
    let mut supported = state.facilitator.supported();
    if state.catalog.capacity() > 0
        && !supported
            .extensions
            .iter()
            .any(|e| e == x402pp_protocol::bazaar::BAZAAR)
    {
        supported
            .extensions
            .push(x402pp_protocol::bazaar::BAZAAR.to_owned());
    }
    Json(supported).into_response()
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
