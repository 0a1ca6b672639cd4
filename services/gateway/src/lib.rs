//! x402pp-gateway: the x402++ payment layer in front of an OpenAI-compatible inference server
//! (llama.cpp's `llama-server`, vLLM, Ollama…), so that any of them can be sold per token
//! through metered sessions (docs/gateway.md, docs/design/metered-streaming.md §4).
//!
//! | item | what |
//! |---|---|
//! | [`GatewayOptions`] | the upstream (base URL, API key, model override, timeouts) and the metered price |
//! | [`GatewayOptions::configure`] | adds the paid routes to a provider's [`ServerConfig`] |
//! | [`app`] | the router with the provider's payment layer and request limits: what `x402pp gateway` serves |
//! | [`upstream_router`] | the same routes without payment (tests, or another payment layer) |
//! | [`GatewayError`] | why a gateway cannot be built |
//! | [`cli`] | the flags of `x402pp gateway` and its `run` |
//!
//! Routes:
//!
//! | route | paid | handler |
//! |---|---|---|
//! | `POST /v1/chat/completions`, `POST /v1/completions` | metered (session), or `exact` at the route's maximum | the JSON is parsed (`400` on garbage); `max_tokens` is clamped to what the hold affords ([`x402pp_openai::TokenPrices`]; none → `400 max_tokens_unaffordable`); a stream asks the upstream for usage; forwarded without the client's `Authorization` and payment headers; the answer is passed back (SSE frame by frame) with its usage reported to the layer |
//! | `GET /v1/models` | free | passed through |
//! | `GET /health` | free | answered locally |
//!
//! How usage is counted, how upstream failures are answered and what dropping a stream does:
//! see [`forward`].

pub mod cli;
pub mod forward;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use x402pp_openai::{TokenPrices, CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH};
use x402pp_protocol::Metering;
use x402pp_server::{PaymentLayer, Provider, RequestLimitsLayer, RoutePrice, ServerConfig};

pub use relay::RelayError;

/// The paid routes of a gateway.
pub const PAID_PATHS: [&str; 2] = [CHAT_COMPLETIONS_PATH, COMPLETIONS_PATH];
/// The free model list, passed through.
pub const MODELS_PATH: &str = "/v1/models";
/// The free liveness route, answered locally.
pub const HEALTH_PATH: &str = "/health";

/// The default time to connect to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time for the upstream's response headers (a model loading may take long).
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default longest silence between two reads of an upstream body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The default largest non-stream answer (or error body) read from the upstream: 16 MiB, what
/// the payment layer buffers.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// The default largest request body read from a client.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The metered price of the paid routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayPricing {
    /// Atomic units per successful request.
    pub base: u64,
    /// Token prices and the most one request may cost.
    pub metering: Metering,
}

impl GatewayPricing {
    /// The prices [`forward`] bounds `max_tokens` with.
    pub fn token_prices(&self) -> TokenPrices {
        TokenPrices {
            base: self.base,
            price_in: self.metering.unit_price_in,
            price_out: self.metering.unit_price_out,
            unit_size: self.metering.unit_size,
        }
    }

    /// The route price of each paid route: metered sessions, `exact` at `max_per_request`.
    pub fn route_price(&self) -> RoutePrice {
        let mut route = RoutePrice::metered(self.base, self.metering);
        route.description = "OpenAI-compatible inference, metered per token".into();
        route.capability = Some("inference".into());
        route
    }
}

/// What the gateway forwards to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// The upstream's base URL, e.g. `http://127.0.0.1:8080` (a trailing `/` or `/v1` is
    /// dropped; `/v1/...` is appended).
    pub upstream: String,
    /// Sent to the upstream as `Authorization: Bearer …`; the client's own `Authorization` is
    /// never forwarded.
    pub upstream_api_key: Option<String>,
    /// Replaces the `model` of every request (an upstream serving one model under a fixed name).
    pub model: Option<String>,
    /// The paid routes' price.
    pub pricing: GatewayPricing,
    /// Time to connect to the upstream.
    pub connect_timeout: Duration,
    /// Time for the upstream's response headers (`504 upstream_timeout` after).
    pub first_byte_timeout: Duration,
    /// Longest silence between two reads of an upstream body (the stream then ends in error).
    pub read_timeout: Duration,
    /// Largest non-stream answer or error body read from the upstream (`502` above).
    pub max_answer_bytes: usize,
    /// Largest request body read from a client (`413` above; [`app`] also applies the
    /// provider's request limits in front).
    pub max_request_bytes: usize,
}

impl GatewayOptions {
    /// Options for `upstream` priced `pricing`, with the default timeouts and bounds.
    pub fn new(upstream: impl Into<String>, pricing: GatewayPricing) -> Self {
        GatewayOptions {
            upstream: upstream.into(),
            upstream_api_key: None,
            model: None,
            pricing,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }

    /// `config` with the paid routes ([`PAID_PATHS`]) priced by [`GatewayOptions::pricing`];
    /// `adjust` changes each route's terms (SLA, `exact`, discovery…).
    pub fn configure(
        &self,
        mut config: ServerConfig,
        adjust: impl Fn(&str, &mut RoutePrice),
    ) -> ServerConfig {
        for path in PAID_PATHS {
            let mut route = self.pricing.route_price();
            adjust(path, &mut route);
            config = config.route(path, route);
        }
        config
    }

    /// The upstream URL of `path` (`/v1/...`).
    pub fn upstream_url(&self, path: &str) -> String {
        let base = self.upstream.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}{path}")
    }
}

/// Why a gateway cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream URL is not an absolute `http(s)` URL.
    #[error("the upstream {0:?} is not an http:// or https:// URL")]
    InvalidUpstream(String),
    /// The HTTP client could not be built.
    #[error("building the upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    pub(crate) options: Arc<GatewayOptions>,
    pub(crate) client: reqwest::Client,
    pub(crate) provider: Option<Arc<Provider>>,
}

impl Gateway {
    fn new(options: GatewayOptions, provider: Option<Arc<Provider>>) -> Result<Self, GatewayError> {
        let upstream = options.upstream.trim();
        let valid = reqwest::Url::parse(upstream)
            .ok()
            .is_some_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !valid {
            return Err(GatewayError::InvalidUpstream(options.upstream.clone()));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()?;
        Ok(Gateway {
            options: Arc::new(options),
            client,
            provider,
        })
    }

    /// The token prices of `path`: the provider's metered route when it prices it, else the
    /// options'.
    pub(crate) fn prices(&self, path: &str) -> (TokenPrices, u64) {
        let route = self.provider.as_ref().and_then(|p| p.route(path));
        match route.and_then(|r| r.metering.map(|m| (r.price_per_request, m))) {
            Some((base, metering)) => (
                GatewayPricing { base, metering }.token_prices(),
                metering.max_per_request,
            ),
            None => (
                self.options.pricing.token_prices(),
                self.options.pricing.metering.max_per_request,
            ),
        }
    }
}

/// The gateway's routes behind `provider`'s payment layer and request limits. The provider's
/// config must price the paid routes ([`GatewayOptions::configure`]); a path it does not price
/// is served free.
pub fn app(provider: Arc<Provider>, options: GatewayOptions) -> Result<Router, GatewayError> {
    let limits = RequestLimitsLayer::new(provider.config().limits.clone());
    let gateway = Gateway::new(options, Some(provider.clone()))?;
    Ok(router(gateway)
        .layer(PaymentLayer::new(provider))
        .layer(limits))
}

/// The gateway's routes without payment: every request is forwarded, `max_tokens` bounded by
/// what [`GatewayPricing::metering`]'s `max_per_request` affords unless the request carries a
/// [`x402pp_server::PaymentContext`] with a hold.
pub fn upstream_router(options: GatewayOptions) -> Result<Router, GatewayError> {
    Ok(router(Gateway::new(options, None)?))
}

fn router(gateway: Gateway) -> Router {
    let mut router = Router::new();
    for path in PAID_PATHS {
        router = router.route(path, post(forward::completion));
    }
    router
        .route(MODELS_PATH, get(forward::models))
        .route(HEALTH_PATH, get(health))
        .fallback(not_found)
        .with_state(gateway)
}

async fn health(State(gateway): State<Gateway>) -> Response {
    let mut body = json!({"status": "ok", "upstream": gateway.options.upstream});
    if let Some(provider) = &gateway.provider {
        body["provider"] = json!(provider.address().to_string());
        body["network"] = json!(provider.config().network);
    }
    Json(body).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    forward::error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use x402pp_protocol::UnitKind;

    fn pricing() -> GatewayPricing {
        GatewayPricing {
            base: 100,
            metering: Metering {
                unit_price_in: 0,
                unit_price_out: 2_000,
                unit_size: 1_000,
                max_per_request: 1_000,
                unit_kind: UnitKind::Tokens,
            },
        }
    }

    #[test]
    fn the_upstream_url_appends_the_v1_path_once() {
        for base in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/v1",
            "http://127.0.0.1:8080/v1/",
        ] {
            assert_eq!(
                GatewayOptions::new(base, pricing()).upstream_url(CHAT_COMPLETIONS_PATH),
                "http://127.0.0.1:8080/v1/chat/completions",
                "{base}"
            );
        }
    }

    #[test]
    fn an_upstream_that_is_not_an_http_url_is_refused() {
        for bad in ["127.0.0.1:8080", "ftp://host", "", "http://"] {
            assert!(
                matches!(
                    upstream_router(GatewayOptions::new(bad, pricing())),
                    Err(GatewayError::InvalidUpstream(_))
                ),
                "{bad}"
            );
        }
        assert!(upstream_router(GatewayOptions::new("https://api.example", pricing())).is_ok());
    }

    #[test]
    fn both_paid_routes_are_metered_with_exact_at_the_maximum() {
        let route = pricing().route_price();
        assert_eq!(route.price_per_request, 100);
        assert_eq!(route.max_per_request(), 1_000);
        assert_eq!(route.metering, Some(pricing().metering));
        assert_eq!(
            pricing().token_prices(),
            TokenPrices {
                base: 100,
                price_in: 0,
                price_out: 2_000,
                unit_size: 1_000
            }
        );
    }
}
