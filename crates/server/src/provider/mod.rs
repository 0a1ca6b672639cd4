//! The provider: its keys, terms, ledger and chain access, and the three things it does with a
//! request to a paid route — challenge it (402 with a signed offer), serve it on a session
//! voucher, or serve it on an `exact` payment.

mod cache;
mod challenge;
mod conflict;
mod exact;
mod metered;
mod run;
mod session;
mod stream;
mod usage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response};
use ed25519_dalek::SigningKey;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::x402::SCHEME_EXACT;
use x402pp_protocol::{headers, ReceiptStatus};

use crate::config::{RoutePrice, ServerConfig};
use crate::error::StartError;
use crate::facilitator::SharedFacilitator;
use crate::ledger::types::Address;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
pub use cache::SessionCache;
pub use usage::{ReportedUsage, UsageReporter};

/// What a handler behind the layer learns about the payment, from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentContext {
    /// Paid by a session voucher.
    Session {
        /// Session address.
        session: Pubkey,
        /// Voucher seq (request number).
        seq: u64,
        /// Cumulative amount the voucher authorises.
        cumulative: u64,
        /// Metered sessions: the most this request may cost (the voucher's hold); a handler
        /// bounds its work by it (e.g. `max_tokens`). `None` on a fixed-price session.
        hold: Option<u64>,
        /// Metered sessions: where the handler reports the units the request used.
        usage: UsageReporter,
    },
    /// Paid by an `exact` transfer that settled.
    Exact {
        /// Payer address.
        payer: String,
        /// Settlement transaction signature.
        transaction: String,
    },
}

/// A provider of paid routes. Build once, share as `Arc`, wrap routes with [`crate::PaymentLayer`].
pub struct Provider {
    config: ServerConfig,
    keypair: Arc<Keypair>,
    signing_key: SigningKey,
    address: Pubkey,
    token_program: Pubkey,
    ledger: Arc<Ledger>,
    rpc: Arc<RpcClient>,
    facilitator: Option<SharedFacilitator>,
    fee_payer: Option<Pubkey>,
    sessions: SessionCache,
    session_limiter: Option<crate::limits::RateLimiter<Address>>,
    /// Per route with `max_in_flight`: the slots its session requests take while served.
    route_slots: HashMap<String, Arc<tokio::sync::Semaphore>>,
    metrics: Metrics,
    /// Pays its agents' fees and rent when `config.sponsor` is set.
    pub(crate) sponsor: Option<x402pp_solana::sponsor::Sponsor>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("address", &self.address)
            .field("network", &self.config.network)
            .field("routes", &self.config.routes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(HeaderValue::as_bytes)
}

impl Provider {
    /// A provider selling `config.routes`, paid to `keypair`'s address.
    ///
    /// Checks the configuration ([`ServerConfig::validate`]), then looks up the mint's token
    /// program, and the facilitator's fee payer when `exact` is offered.
    pub async fn new(
        config: ServerConfig,
        keypair: Arc<Keypair>,
        ledger: Arc<Ledger>,
        rpc: Arc<RpcClient>,
        facilitator: Option<SharedFacilitator>,
    ) -> Result<Arc<Self>, StartError> {
        config.validate()?;
        let mint = rpc
            .get_account(&config.mint)
            .await
            .map_err(|source| StartError::Chain {
                mint: config.mint,
                source: Box::new(source),
            })?;
        if !x402pp_solana::token::is_token_program(&mint.owner) {
            return Err(StartError::NotAMint(config.mint));
        }
        let fee_payer = match &facilitator {
            Some(f) => {
                let supported = f.supported().await?;
                supported
                    .kinds
                    .iter()
                    .find(|k| k.scheme == SCHEME_EXACT && k.network == config.network)
                    .and_then(|k| k.extra.as_ref())
                    .and_then(|e| e.get("feePayer"))
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok())
            }
            None => None,
        };
        let session_limiter = config
            .per_session_rate
            .map(|rate| crate::limits::RateLimiter::new(rate, config.limits.max_tracked_keys));
        let sessions = SessionCache::new(config.max_cached_sessions, config.session_refresh);
        let route_slots = config
            .routes
            .iter()
            .filter_map(|(path, route)| {
                let slots = usize::try_from(route.max_in_flight?).ok()?;
                Some((path.clone(), Arc::new(tokio::sync::Semaphore::new(slots))))
            })
            .collect();
        let sponsor = config.sponsor.clone().map(|policy| {
            x402pp_solana::sponsor::Sponsor::new(
                rpc.clone(),
                keypair.clone(),
                x402pp_solana::sponsor::SponsorPolicy {
                    providers: vec![keypair.pubkey()],
                    ..policy
                },
            )
        });
        let provider = Self {
            sponsor,
            session_limiter,
            route_slots,
            signing_key: x402pp_solana::keys::signing_key(&keypair),
            address: keypair.pubkey(),
            token_program: mint.owner,
            config,
            keypair,
            ledger,
            rpc,
            facilitator,
            fee_payer,
            sessions,
            metrics: Metrics::new(),
        };
        provider.check_challenges()?;
        Ok(Arc::new(provider))
    }

    /// Every route's `PAYMENT-REQUIRED` must fit in what clients decode
    /// ([`headers::MAX_HEADER_LEN`], with room for an intent id): a large discovery declaration
    /// could otherwise make a route unpayable by our own agent and by proxies with the common
    /// 8 KiB limit.
    fn check_challenges(&self) -> Result<(), crate::config::ConfigError> {
        /// Room kept for what an intent adds to the offer (its id) and for description text.
        const MARGIN: usize = 512;
        let limit = headers::MAX_HEADER_LEN.saturating_sub(MARGIN);
        for (path, route) in &self.config.routes {
            let challenge = self.challenge(path, route, &HeaderMap::new(), "payment required");
            let bytes = challenge
                .headers
                .iter()
                .find(|(name, _)| *name == headers::PAYMENT_REQUIRED)
                .map_or(0, |(_, value)| value.len());
            if bytes > limit {
                return Err(crate::config::ConfigError::ChallengeTooLarge {
                    route: path.clone(),
                    bytes,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// The provider's address (payee and offer signer).
    pub fn address(&self) -> Pubkey {
        self.address
    }

    /// The provider's keypair (for the settlement task).
    pub fn keypair(&self) -> Arc<Keypair> {
        self.keypair.clone()
    }

    /// The ledger.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many sessions the provider holds in its cache (bounded by
    /// [`ServerConfig::max_cached_sessions`]).
    pub fn cached_sessions(&self) -> u64 {
        self.sessions.len()
    }

    /// The price of `path`, if it is a paid route.
    pub fn route(&self, path: &str) -> Option<&RoutePrice> {
        self.config.routes.get(path)
    }

    /// Handles a request to the paid route `path`: serves it through `inner` once paid.
    pub(crate) async fn handle<F, Fut>(
        self: &Arc<Self>,
        path: &str,
        request: Request<Body>,
        inner: F,
    ) -> Response<Body>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        self.metrics.request();
        // Borrowed, not cloned: a route's declaration (its discovery schemas) is JSON, and a
        // copy per request showed in the profile (docs/perf/README.md).
        let Some(route) = self.route(path) else {
            return inner(request).await;
        };
        let headers = request.headers();
        // Kept for the payment requirements every 402 carries (the request is consumed).
        let mut intent = HeaderMap::new();
        if let Some(value) = headers.get(headers::X402_INTENT) {
            intent.insert(headers::X402_INTENT, value.clone());
        }
        let result = if headers.contains_key(headers::X402_VOUCHER)
            || headers.contains_key(headers::X402_SESSION_ID)
        {
            self.serve_session(path, route, request, inner).await
        } else if headers.contains_key(headers::PAYMENT_SIGNATURE) {
            self.serve_exact(path, route, request, inner).await
        } else {
            Err(self.challenge(path, route, headers, "payment required"))
        };
        result.unwrap_or_else(|error| {
            let error = if error.code.http_status() == 402
                && !error
                    .headers
                    .iter()
                    .any(|(name, _)| *name == headers::PAYMENT_REQUIRED)
            {
                self.with_requirements(error, path, route, &intent)
            } else {
                error
            };
            self.metrics.refused(error.code.as_str());
            axum::response::IntoResponse::into_response(error)
        })
    }
}

fn status_name(status: ReceiptStatus) -> &'static str {
    match status {
        ReceiptStatus::Ok => "ok",
        ReceiptStatus::HandlerError => "handler_error",
        ReceiptStatus::Timeout => "timeout",
        ReceiptStatus::Partial => "partial",
    }
}
