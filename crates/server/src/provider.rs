//! The provider: its keys, terms, ledger and chain access, and the three things it does with a
//! request to a paid route — challenge it (402 with a signed offer), serve it on a session
//! voucher, or serve it on an `exact` payment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use ed25519_dalek::SigningKey;
use futures_util::FutureExt as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::x402::{
    ExactSvmExtra, FacilitatorRequest, PaymentPayload, PaymentRequired, PaymentRequirements,
    ResourceInfo, SessionExtra, SettleResponse, X402Version2, SCHEME_EXACT, SCHEME_SESSION,
};
use x402pp_protocol::{
    headers, Amount, ErrorCode, Hash32, Id16, Intent, Offer, OfferTerms, Receipt, ReceiptBody,
    ReceiptStatus, SessionState, SessionStatus, SlaVerification, Voucher,
};
use x402pp_solana::{escrow, ChainError};

use crate::config::{RoutePrice, ServerConfig};
use crate::error::ServerError;
use crate::facilitator::SharedFacilitator;
use crate::ledger::types::{
    Address, ExactSettlementRecord, ReceiptRecord, SessionRecord, StoredVoucher,
};
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;

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
    },
    /// Paid by an `exact` transfer that settled.
    Exact {
        /// Payer address.
        payer: String,
        /// Settlement transaction signature.
        transaction: String,
    },
}

struct CachedSession {
    record: SessionRecord,
    refreshed: Instant,
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
    sessions: Mutex<HashMap<Address, CachedSession>>,
    session_limiter: Option<crate::limits::RateLimiter<Address>>,
    metrics: Metrics,
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
    /// Looks up the mint's token program, and the facilitator's fee payer when `exact` is offered.
    pub async fn new(
        config: ServerConfig,
        keypair: Arc<Keypair>,
        ledger: Arc<Ledger>,
        rpc: Arc<RpcClient>,
        facilitator: Option<SharedFacilitator>,
    ) -> Result<Arc<Self>, ServerError> {
        let mint = rpc
            .get_account(&config.mint)
            .await
            .map_err(ServerError::chain_unavailable)?;
        if !x402pp_solana::token::is_token_program(&mint.owner) {
            return Err(ServerError::internal(format!(
                "{} is not a token mint",
                config.mint
            )));
        }
        let fee_payer = match &facilitator {
            Some(f) => {
                let supported = f.supported().await.map_err(ServerError::internal)?;
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
        Ok(Arc::new(Self {
            session_limiter,
            signing_key: x402pp_solana::keys::signing_key(&keypair),
            address: keypair.pubkey(),
            token_program: mint.owner,
            config,
            keypair,
            ledger,
            rpc,
            facilitator,
            fee_payer,
            sessions: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
        }))
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

    /// The price of `path`, if it is a paid route.
    pub fn route(&self, path: &str) -> Option<&RoutePrice> {
        self.config.routes.get(path)
    }

    /// Handles a request to the paid route `path`: serves it through `inner` once paid.
    pub(crate) async fn handle<F, Fut>(
        &self,
        path: &str,
        request: Request<Body>,
        inner: F,
    ) -> Response<Body>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        self.metrics.request();
        let Some(route) = self.route(path).cloned() else {
            return inner(request).await;
        };
        // Per-session rate first: a flood on one session costs a map lookup, not a verification
        // or a ledger write, and leaves the voucher unused.
        if let Some(Err(error)) = self
            .session_limiter
            .as_ref()
            .map(|limiter| limiter.check_session(request.headers()))
        {
            self.metrics.refused(error.code.as_str());
            return axum::response::IntoResponse::into_response(error);
        }
        let headers = request.headers();
        let result = if headers.contains_key(headers::X402_VOUCHER)
            || headers.contains_key(headers::X402_SESSION_ID)
        {
            self.serve_session(path, &route, request, inner).await
        } else if headers.contains_key(headers::PAYMENT_SIGNATURE) {
            self.serve_exact(path, &route, request, inner).await
        } else {
            Err(self.challenge(path, &route, headers, "payment required"))
        };
        result.unwrap_or_else(|error| {
            self.metrics.refused(error.code.as_str());
            axum::response::IntoResponse::into_response(error)
        })
    }

    // ---- the 402 challenge -------------------------------------------------------------------

    fn resource(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url.trim_end_matches('/'))
    }

    fn offer_terms(&self, path: &str, route: &RoutePrice, intent: Option<&Intent>) -> OfferTerms {
        let now = now_ms() / 1_000;
        OfferTerms {
            offer_id: Id16::random(),
            intent_id: intent.map(|i| i.intent_id),
            resource: self.resource(path),
            provider: x402pp_protocol::Pubkey(self.address.to_bytes()),
            network: self.config.network.clone(),
            asset: x402pp_protocol::Pubkey(self.config.mint.to_bytes()),
            escrow_program: x402pp_protocol::Pubkey(escrow::PROGRAM_ID.to_bytes()),
            price_per_request: Amount(route.price_per_request),
            min_deposit: Amount(route.min_deposit),
            session_ttl_secs: route.session_ttl_secs,
            grace_secs: route.grace_secs,
            sla: route.sla,
            expires_at: now.saturating_add(i64::try_from(route.offer_ttl_secs).unwrap_or(i64::MAX)),
        }
    }

    /// The `exact` option of a route, when offered and a facilitator fee payer is known.
    fn exact_requirements(&self, route: &RoutePrice) -> Option<PaymentRequirements> {
        let fee_payer = self.fee_payer.filter(|_| route.exact)?;
        Some(PaymentRequirements {
            scheme: SCHEME_EXACT.to_owned(),
            network: self.config.network.clone(),
            amount: route.price_per_request.to_string(),
            asset: self.config.mint.to_string(),
            pay_to: self.address.to_string(),
            max_timeout_seconds: 60,
            extra: serde_json::to_value(ExactSvmExtra {
                fee_payer: x402pp_protocol::Pubkey(fee_payer.to_bytes()),
                memo: None,
            })
            .ok(),
        })
    }

    /// A 402 with `PAYMENT-REQUIRED` and a freshly signed `X-402-Offer` (answering the
    /// `X-402-Intent` when one was sent), or `no_acceptable_offer` when the intent cannot be met.
    fn challenge(
        &self,
        path: &str,
        route: &RoutePrice,
        headers: &HeaderMap,
        reason: &str,
    ) -> ServerError {
        let intent = match header_str(headers, headers::X402_INTENT) {
            Some(raw) => match headers::decode::<Intent>(headers::X402_INTENT, raw) {
                Ok(intent) => Some(intent),
                Err(e) => return ServerError::malformed(&e),
            },
            None => None,
        };
        let terms = self.offer_terms(path, route, intent.as_ref());
        if let Some(intent) = &intent {
            if let Some(why) = terms.unmet_by(intent) {
                return ServerError::new(
                    ErrorCode::NoAcceptableOffer,
                    format!("no offer meets the intent: {why}"),
                );
            }
        }
        let offer = match Offer::sign(terms, &self.signing_key) {
            Ok(offer) => offer,
            Err(e) => return ServerError::internal(e),
        };
        let mut accepts = vec![PaymentRequirements {
            scheme: SCHEME_SESSION.to_owned(),
            network: self.config.network.clone(),
            amount: route.price_per_request.to_string(),
            asset: self.config.mint.to_string(),
            pay_to: self.address.to_string(),
            max_timeout_seconds: 60,
            extra: serde_json::to_value(SessionExtra {
                offer: offer.clone(),
            })
            .ok(),
        }];
        accepts.extend(self.exact_requirements(route));
        let required = PaymentRequired {
            x402_version: X402Version2,
            error: Some(reason.to_owned()),
            resource: ResourceInfo {
                url: self.resource(path),
                description: Some(route.description.clone()),
                mime_type: Some(route.mime_type.clone()),
            },
            accepts,
            extensions: None,
        };
        let mut error = ServerError::new(ErrorCode::PaymentRequired, reason.to_owned());
        for (name, value) in [
            (headers::PAYMENT_REQUIRED, headers::encode(&required)),
            (headers::X402_OFFER, headers::encode(&offer)),
        ] {
            match value {
                Ok(value) => error = error.with_header(name, value),
                Err(e) => return ServerError::internal(e),
            }
        }
        error
    }

    // ---- sessions ---------------------------------------------------------------------------

    fn cached(&self, address: &Address) -> Option<SessionRecord> {
        let sessions = self.sessions.lock().ok()?;
        let cached = sessions.get(address)?;
        (cached.refreshed.elapsed() < self.config.session_refresh).then(|| cached.record.clone())
    }

    fn cache(&self, record: SessionRecord) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(
                record.chain.address,
                CachedSession {
                    record,
                    refreshed: Instant::now(),
                },
            );
        }
    }

    fn update_cached(&self, address: &Address, update: impl FnOnce(&mut SessionRecord)) {
        if let Ok(mut sessions) = self.sessions.lock() {
            if let Some(cached) = sessions.get_mut(address) {
                update(&mut cached.record);
            }
        }
    }

    /// The session from the cache, else the chain (refreshing the ledger's row), else the ledger
    /// when the chain is unreachable.
    async fn load_session(
        &self,
        session: &Pubkey,
        from_chain: bool,
    ) -> Result<SessionRecord, ServerError> {
        let address = session.to_bytes();
        if !from_chain {
            if let Some(record) = self.cached(&address) {
                return Ok(record);
            }
        }
        let account = match escrow::fetch_session(&self.rpc, session).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                return Err(ServerError::new(
                    ErrorCode::SessionNotFound,
                    format!("no open session {session}"),
                ))
            }
            Err(ChainError::Account { reason, .. }) => {
                return Err(ServerError::new(
                    ErrorCode::SessionMismatch,
                    format!("{session} {reason}"),
                ))
            }
            Err(e) => {
                // RPC down: the ledger still knows sessions it served.
                return match self.ledger.session(&address).await {
                    Ok(Some(record)) => Ok(record),
                    _ => Err(ServerError::chain_unavailable(e)),
                };
            }
        };
        let chain = crate::settlement::chain_session(session, &account, &self.token_program);
        let record = self
            .ledger
            .upsert_session(&chain)
            .await
            .map_err(ServerError::internal)?;
        self.cache(record.clone());
        Ok(record)
    }

    fn check_session(&self, record: &SessionRecord, route: &RoutePrice) -> Result<(), ServerError> {
        let chain = &record.chain;
        if chain.provider != self.address.to_bytes() || chain.mint != self.config.mint.to_bytes() {
            return Err(ServerError::new(
                ErrorCode::SessionMismatch,
                "the session is for another provider or mint",
            ));
        }
        if chain.price_per_request != route.price_per_request {
            return Err(ServerError::new(
                ErrorCode::SessionMismatch,
                format!(
                    "the session's price {} is not this route's {}",
                    chain.price_per_request, route.price_per_request
                ),
            ));
        }
        if chain.state != SessionState::Open {
            return Err(ServerError::new(
                ErrorCode::SessionClosed,
                "the session is closing",
            ));
        }
        if now_ms() / 1_000 >= chain.expires_at {
            return Err(ServerError::new(
                ErrorCode::SessionClosed,
                "the session has expired",
            ));
        }
        Ok(())
    }

    fn status_of(record: &SessionRecord) -> SessionStatus {
        let chain = &record.chain;
        let cap = chain.deposit.saturating_sub(chain.refunded);
        SessionStatus {
            session_id: x402pp_protocol::Pubkey(chain.address),
            state: chain.state,
            seq: record.last_seq,
            accepted: Amount(record.accepted),
            deposit: Amount(chain.deposit),
            refunded: Amount(chain.refunded),
            remaining: Amount(cap.saturating_sub(record.accepted)),
            price_per_request: Amount(chain.price_per_request),
            expires_at: chain.expires_at,
        }
    }

    /// The seq/amount rules of DESIGN §7 against `record`.
    fn check_voucher(record: &SessionRecord, voucher: &Voucher) -> Result<(), ServerError> {
        let price = record.chain.price_per_request;
        if voucher.seq <= record.last_seq {
            return Err(ServerError::new(
                ErrorCode::VoucherConflict,
                format!("voucher seq {} was already used", voucher.seq),
            ));
        }
        if record.receipt_count < record.last_seq {
            return Err(ServerError::new(
                ErrorCode::VoucherConflict,
                "the previous request of this session is still in flight",
            ));
        }
        let next = record.last_seq.saturating_add(1);
        if voucher.seq != next {
            return Err(ServerError::new(
                ErrorCode::InvalidVoucher,
                format!("voucher seq must be {next}, got {}", voucher.seq),
            ));
        }
        let expected = record
            .accepted
            .checked_add(price)
            .ok_or_else(|| ServerError::internal("accepted + price overflows"))?;
        if voucher.cumulative.get() != expected {
            return Err(ServerError::new(
                ErrorCode::InvalidVoucher,
                format!(
                    "voucher cumulative must be {expected} (accepted {} + price {price})",
                    record.accepted
                ),
            ));
        }
        let cap = record.chain.deposit.saturating_sub(record.chain.refunded);
        if expected > cap {
            let needed = expected.saturating_sub(cap);
            return Err(ServerError::new(
                ErrorCode::InsufficientDeposit,
                format!(
                    "the deposit left ({cap}) does not cover {expected}; top up at least {needed}"
                ),
            )
            .with_details(serde_json::json!({
                "sessionId": x402pp_protocol::Pubkey(record.chain.address),
                "deposit": record.chain.deposit.to_string(),
                "refunded": record.chain.refunded.to_string(),
                "accepted": record.accepted.to_string(),
                "required": expected.to_string(),
                "topUp": needed.to_string(),
            })));
        }
        Ok(())
    }

    async fn serve_session<F, Fut>(
        &self,
        path: &str,
        route: &RoutePrice,
        request: Request<Body>,
        inner: F,
    ) -> Result<Response<Body>, ServerError>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        // 1. Parse.
        let headers = request.headers();
        let session: Pubkey = header_str(headers, headers::X402_SESSION_ID)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                ServerError::new(
                    ErrorCode::MalformedRequest,
                    "X-402-Session-Id must be a base58 session address",
                )
            })?;
        let voucher: Voucher = match header_str(headers, headers::X402_VOUCHER) {
            Some(raw) => headers::decode(headers::X402_VOUCHER, raw)
                .map_err(|e| ServerError::malformed(&e))?,
            None => {
                return Err(ServerError::new(
                    ErrorCode::MalformedRequest,
                    "X-402-Voucher is missing",
                ))
            }
        };
        if voucher.session.0 != session.to_bytes() {
            return Err(ServerError::new(
                ErrorCode::InvalidVoucher,
                "the voucher is for another session",
            ));
        }
        // 2. Load and check the session.
        let mut record = self.load_session(&session, false).await?;
        self.check_session(&record, route)?;
        // 3. Verify the voucher (strict ed25519).
        voucher
            .verify(&x402pp_protocol::Pubkey(record.chain.voucher_signer))
            .map_err(|e| ServerError::new(e.code(), e.to_string()))?;
        // 4. Seq and amount; a stale cache (another replica served, or the agent topped up) gets
        //    one refresh before a refusal.
        if let Err(first) = Self::check_voucher(&record, &voucher) {
            let refreshed = if first.code == ErrorCode::InsufficientDeposit {
                self.load_session(&session, true).await?
            } else {
                match self.ledger_row(&session.to_bytes()).await? {
                    Some(row) => row,
                    None => return Err(first),
                }
            };
            let refreshed = match Self::check_voucher(&refreshed, &voucher) {
                Ok(()) => refreshed,
                Err(e) if e.code == ErrorCode::VoucherConflict => {
                    let row = self.resolve_conflict(&refreshed, &voucher).await?;
                    Self::check_voucher(&row, &voucher)?;
                    row
                }
                Err(e) => {
                    return Err(match Self::session_status_header(&refreshed) {
                        Some(status) => e.with_header(headers::X402_SESSION_STATUS, status),
                        None => e,
                    })
                }
            };
            self.cache(refreshed.clone());
            record = refreshed;
        }
        // The body is read (and bounded) before the voucher is accepted, so a bad body cannot
        // leave an accepted voucher without a receipt.
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, self.config.max_request_body)
            .await
            .map_err(|e| {
                if crate::limits::is_length_limit(&e) {
                    ServerError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "the request body is over the limit of {} bytes",
                            self.config.max_request_body
                        ),
                    )
                } else {
                    ServerError::new(ErrorCode::MalformedRequest, format!("request body: {e}"))
                }
            })?;
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or(path, |pq| pq.as_str())
            .to_owned();
        let input = input_hash(parts.method.as_str(), &path_and_query, &body);

        // 5. Record it durably: of concurrent requests with this voucher, one wins.
        let stored = StoredVoucher {
            seq: voucher.seq,
            cumulative: voucher.cumulative.get(),
            signature: voucher.signature.0,
        };
        let mut accepted = self
            .ledger
            .accept_voucher(&record.chain.address, &stored)
            .await;
        if matches!(accepted, Err(LedgerError::Conflict)) {
            // A resend, a concurrent duplicate, or a session blocked by a request a crash cut
            // off: recover or explain; try once more only where the voucher may now be next.
            let row = self.resolve_conflict(&record, &voucher).await?;
            Self::check_voucher(&row, &voucher)?;
            self.cache(row.clone());
            record = row;
            accepted = self
                .ledger
                .accept_voucher(&record.chain.address, &stored)
                .await;
        }
        match accepted {
            Ok(()) => {}
            Err(LedgerError::Conflict) => {
                return Err(ServerError::new(
                    ErrorCode::VoucherConflict,
                    format!("voucher seq {} was already used", voucher.seq),
                ))
            }
            Err(e) => return Err(ServerError::internal(e)),
        }
        record.last_seq = voucher.seq;
        self.update_cached(&record.chain.address, |r| r.last_seq = voucher.seq);

        // 6. Run the handler, timed, with the payment in the extensions.
        let mut request = Request::from_parts(parts, Body::from(body));
        request.extensions_mut().insert(PaymentContext::Session {
            session,
            seq: voucher.seq,
            cumulative: voucher.cumulative.get(),
        });
        let (status, response_parts, output, latency) = self.run(request, inner).await;

        // 7. Sign and store the receipt, then answer.
        let price = record.chain.price_per_request;
        let (amount, cumulative) = if status == ReceiptStatus::Ok {
            (price, voucher.cumulative.get())
        } else {
            (0, record.accepted)
        };
        let latency_ms = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        let completed = now_ms();
        let body = ReceiptBody {
            session_id: voucher.session,
            request_number: voucher.seq,
            input_hash: input,
            output_hash: output_hash(&output),
            request_started_at: completed.saturating_sub(i64::from(latency_ms)),
            request_completed_at: completed,
            latency_ms,
            status,
            amount_charged: Amount(amount),
            cumulative_charged: Amount(cumulative),
            prev_receipt_hash: Hash32(record.receipts_head),
            sla_verification: SlaVerification::latency(record.chain.max_latency_ms, latency_ms),
            provider: x402pp_protocol::Pubkey(self.address.to_bytes()),
        };
        let breached = !body.sla_verification.met;
        let (receipt, receipt_header, stored_receipt) = self.sign_receipt(body)?;
        self.ledger
            .record_receipt(&record.chain.address, &stored_receipt)
            .await
            .map_err(ServerError::internal)?;
        record.receipts_head = receipt.receipt_id.0;
        record.receipt_count = voucher.seq;
        if status == ReceiptStatus::Ok {
            record.accepted = cumulative;
            record.best_voucher = Some(stored);
        }
        let cached = record.clone();
        self.update_cached(&record.chain.address, move |r| *r = cached);
        self.metrics.receipt(status_name(status), breached, latency);
        if status == ReceiptStatus::Ok {
            self.metrics.paid(SCHEME_SESSION);
        }

        let mut response = Response::from_parts(response_parts, Body::from(output));
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&receipt_header) {
            headers.insert(headers::X402_RECEIPT, value);
        }
        if let Some(status) =
            Self::session_status_header(&record).and_then(|s| HeaderValue::from_str(&s).ok())
        {
            headers.insert(headers::X402_SESSION_STATUS, status);
        }
        Ok(response)
    }

    /// Signs a receipt body; returns the receipt, its `X-402-Receipt` header and its ledger row.
    fn sign_receipt(
        &self,
        body: ReceiptBody,
    ) -> Result<(Receipt, String, ReceiptRecord), ServerError> {
        let receipt = Receipt::sign(body, &self.signing_key).map_err(ServerError::internal)?;
        // Serialized once: the stored JSON and the header are the same bytes.
        let json = serde_json::to_string(&receipt).map_err(ServerError::internal)?;
        let header = headers::encode_json(json.as_bytes());
        let record = ReceiptRecord {
            seq: receipt.body.request_number,
            hash: receipt.receipt_id.0,
            ok: receipt.body.status == ReceiptStatus::Ok,
            amount_charged: receipt.body.amount_charged.0,
            cumulative_charged: receipt.body.cumulative_charged.0,
            json,
        };
        Ok((receipt, header, record))
    }

    /// After a voucher lost the ledger's compare-and-set. Reads the session's row and:
    ///
    /// - if a request is in flight (`receipt_count < last_seq`) and its voucher was accepted
    ///   longer ago than the handler timeout plus the orphan grace, no process is serving it any
    ///   more (a crash cut it off): writes a zero-charge `handler_error` receipt for it, which
    ///   unblocks the session; if it is younger, answers `409 request_in_flight` with
    ///   `Retry-After`;
    /// - if `voucher` is the very voucher already accepted for its seq (a resend after a lost
    ///   answer), answers `409 voucher_conflict` with that seq's stored receipt attached, so the
    ///   agent can continue its receipt chain;
    /// - returns the row when the voucher may now be the next one (after a recovery), else
    ///   `409 voucher_conflict`.
    async fn resolve_conflict(
        &self,
        record: &SessionRecord,
        voucher: &Voucher,
    ) -> Result<SessionRecord, ServerError> {
        let address = record.chain.address;
        let conflict = || {
            ServerError::new(
                ErrorCode::VoucherConflict,
                format!("voucher seq {} was already used", voucher.seq),
            )
        };
        let row_or_conflict = |row: Option<SessionRecord>| row.ok_or_else(conflict);
        let mut row = row_or_conflict(self.ledger_row(&address).await?)?;
        if row.receipt_count < row.last_seq {
            let accepted_at = self
                .ledger
                .voucher_accepted_at(&address, row.last_seq)
                .await
                .map_err(ServerError::internal)?
                .unwrap_or(0);
            let deadline = self
                .config
                .handler_timeout
                .saturating_add(self.config.orphan_grace)
                .as_secs();
            let deadline = accepted_at.saturating_add(i64::try_from(deadline).unwrap_or(i64::MAX));
            let now = now_ms() / 1_000;
            if now < deadline {
                let wait = deadline.saturating_sub(now).max(1);
                return Err(ServerError::new(
                    ErrorCode::RequestInFlight,
                    format!(
                        "request {} of this session is still being served; resend its voucher \
                         after {wait} s for its receipt",
                        row.last_seq
                    ),
                )
                .with_header("retry-after", wait.to_string()));
            }
            self.recover_orphan(&row, accepted_at).await?;
            row = row_or_conflict(self.ledger_row(&address).await?)?;
        }
        if voucher.seq == row.last_seq.saturating_add(1) {
            return Ok(row);
        }
        let resent = voucher.seq <= row.last_seq
            && matches!(
                self.ledger.voucher(&address, voucher.seq).await,
                Ok(Some(stored)) if stored.signature == voucher.signature.0
                    && stored.cumulative == voucher.cumulative.get()
            );
        if !resent {
            return Err(conflict());
        }
        let stored = self
            .ledger
            .receipt(&address, voucher.seq)
            .await
            .map_err(ServerError::internal)?;
        let Some(stored) = stored else {
            return Err(conflict());
        };
        let receipt: Receipt = serde_json::from_str(&stored.json).map_err(ServerError::internal)?;
        let header = headers::encode(&receipt).map_err(ServerError::internal)?;
        let mut error = ServerError::new(
            ErrorCode::VoucherConflict,
            format!(
                "voucher seq {} was already served; its receipt is attached",
                voucher.seq
            ),
        )
        .with_header(headers::X402_RECEIPT, header);
        if let Some(status) = Self::session_status_header(&row) {
            error = error.with_header(headers::X402_SESSION_STATUS, status);
        }
        Err(error)
    }

    /// The session's ledger row as it is now (not the cache's copy).
    async fn ledger_row(&self, address: &Address) -> Result<Option<SessionRecord>, ServerError> {
        self.ledger
            .session(address)
            .await
            .map_err(ServerError::internal)
    }

    /// Writes the zero-charge receipt of a request whose voucher was accepted at `accepted_at`
    /// (unix seconds) but whose process died before its receipt. The input is unknown (the
    /// request was never stored): its hash is zero. A concurrent recovery by another replica
    /// wins harmlessly (one receipt per seq).
    async fn recover_orphan(
        &self,
        row: &SessionRecord,
        accepted_at: i64,
    ) -> Result<(), ServerError> {
        let completed = now_ms();
        let started = accepted_at.saturating_mul(1_000);
        let latency_ms =
            u32::try_from(completed.saturating_sub(started).max(0)).unwrap_or(u32::MAX);
        let body = ReceiptBody {
            session_id: x402pp_protocol::Pubkey(row.chain.address),
            request_number: row.last_seq,
            input_hash: Hash32::ZERO,
            output_hash: output_hash(&[]),
            request_started_at: started,
            request_completed_at: completed,
            latency_ms,
            status: ReceiptStatus::HandlerError,
            amount_charged: Amount(0),
            cumulative_charged: Amount(row.accepted),
            prev_receipt_hash: Hash32(row.receipts_head),
            sla_verification: SlaVerification::latency(row.chain.max_latency_ms, latency_ms),
            provider: x402pp_protocol::Pubkey(self.address.to_bytes()),
        };
        let (_, _, stored) = self.sign_receipt(body)?;
        match self
            .ledger
            .record_receipt(&row.chain.address, &stored)
            .await
        {
            Ok(()) | Err(LedgerError::Conflict) => {}
            Err(e) => return Err(ServerError::internal(e)),
        }
        tracing::warn!(
            session = %Pubkey::new_from_array(row.chain.address),
            seq = row.last_seq,
            "a request cut off by a crash got a zero-charge handler_error receipt"
        );
        self.metrics.receipt(
            status_name(ReceiptStatus::HandlerError),
            false,
            Duration::ZERO,
        );
        Ok(())
    }

    fn session_status_header(record: &SessionRecord) -> Option<String> {
        headers::encode(&Self::status_of(record)).ok()
    }

    /// Runs the handler with the configured timeout and buffers its response body.
    async fn run<F, Fut>(
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
                    Ok(bytes) if parts.status.is_success() || parts.status.is_redirection() => {
                        (ReceiptStatus::Ok, parts, bytes)
                    }
                    Ok(bytes) => (ReceiptStatus::HandlerError, parts, bytes),
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

    // ---- exact ------------------------------------------------------------------------------

    async fn serve_exact<F, Fut>(
        &self,
        path: &str,
        route: &RoutePrice,
        request: Request<Body>,
        inner: F,
    ) -> Result<Response<Body>, ServerError>
    where
        F: FnOnce(Request<Body>) -> Fut,
        Fut: std::future::Future<Output = Response<Body>>,
    {
        let (Some(facilitator), Some(requirements)) =
            (&self.facilitator, self.exact_requirements(route))
        else {
            return Err(self.challenge(
                path,
                route,
                request.headers(),
                "the exact scheme is not accepted on this route",
            ));
        };
        let payload: PaymentPayload =
            match header_str(request.headers(), headers::PAYMENT_SIGNATURE) {
                Some(raw) => headers::decode(headers::PAYMENT_SIGNATURE, raw)
                    .map_err(|e| ServerError::malformed(&e))?,
                None => {
                    return Err(ServerError::new(
                        ErrorCode::MalformedRequest,
                        "PAYMENT-SIGNATURE is missing",
                    ))
                }
            };
        let facilitator_request = FacilitatorRequest {
            x402_version: X402Version2,
            payment_payload: payload,
            payment_requirements: requirements,
        };
        let verdict = facilitator
            .verify(&facilitator_request)
            .await
            .map_err(ServerError::chain_unavailable)?;
        if !verdict.is_valid {
            let reason = verdict
                .invalid_reason
                .unwrap_or_else(|| "invalid_payment".into());
            return Err(self.challenge(path, route, request.headers(), &reason));
        }
        // Settle before serving: content is never served for a payment that did not settle.
        let (settled, retried) = self
            .settle_exact(facilitator.as_ref(), &facilitator_request)
            .await?;
        // A retry after a transport failure may learn that the first attempt landed
        // (`duplicate_settlement` with its signature): confirmed on chain, it is this payment.
        let recovered = if retried
            && !settled.success
            && settled.error_reason.as_deref() == Some("duplicate_settlement")
        {
            self.confirm_landed_exact(&facilitator_request, &settled)
                .await
        } else {
            None
        };
        let settled = recovered.clone().unwrap_or(settled);
        if !settled.success {
            let reason = settled
                .error_reason
                .clone()
                .unwrap_or_else(|| "settlement_failed".into());
            let mut error = self.challenge(path, route, request.headers(), &reason);
            if let Ok(value) = headers::encode(&settled) {
                error = error.with_header(headers::PAYMENT_RESPONSE, value);
            }
            return Err(error);
        }
        let record = ExactSettlementRecord {
            tx_signature: settled.transaction.clone(),
            payer: settled.payer.clone().unwrap_or_default(),
            amount: route.price_per_request,
            resource: path.to_owned(),
            settled_at_ms: now_ms(),
        };
        if let Err(e) = self.ledger.record_exact_settlement(&record).await {
            if recovered.is_some() {
                // The settlements primary key is what makes one landed transaction serve once.
                return Err(match e {
                    LedgerError::Conflict => {
                        self.challenge(path, route, request.headers(), "duplicate_settlement")
                    }
                    e => ServerError::internal(e),
                });
            }
            tracing::error!(error = %e, transaction = %settled.transaction, "could not record an exact settlement");
        }
        let mut request = request;
        request.extensions_mut().insert(PaymentContext::Exact {
            payer: record.payer.clone(),
            transaction: settled.transaction.clone(),
        });
        let mut response = inner(request).await;
        self.metrics.paid(SCHEME_EXACT);
        if let Some(value) = headers::encode(&settled)
            .ok()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response
                .headers_mut()
                .insert(headers::PAYMENT_RESPONSE, value);
        }
        Ok(response)
    }

    /// `/settle`, retried on a transport failure (the facilitator may have died mid-settle) up
    /// to [`EXACT_SETTLE_RETRIES`] times with a doubling backoff. Returns the answer and whether
    /// an earlier attempt failed, i.e. whether the payment may already have been sent.
    async fn settle_exact(
        &self,
        facilitator: &dyn crate::facilitator::Facilitator,
        request: &FacilitatorRequest,
    ) -> Result<(SettleResponse, bool), ServerError> {
        let mut attempt: u32 = 0;
        loop {
            match facilitator.settle(request).await {
                Ok(answer) => return Ok((answer, attempt > 0)),
                Err(e) if attempt < EXACT_SETTLE_RETRIES => {
                    tracing::warn!(error = %e, attempt, "settle failed in transport; retrying");
                    let backoff =
                        EXACT_SETTLE_BACKOFF.saturating_mul(2_u32.saturating_pow(attempt));
                    tokio::time::sleep(backoff).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(ServerError::chain_unavailable(e)),
            }
        }
    }

    /// The settlement a retried `/settle` reported as `duplicate_settlement`, when its signature
    /// is the fee payer's over this very payment's message (so that transaction is this payment)
    /// and the chain has it confirmed without error; `None` otherwise.
    async fn confirm_landed_exact(
        &self,
        request: &FacilitatorRequest,
        answer: &SettleResponse,
    ) -> Option<SettleResponse> {
        let signature: Signature = answer.transaction.parse().ok()?;
        let fee_payer = self.fee_payer?;
        let tx =
            x402pp_solana::exact::facilitator::decode_transaction(&request.payment_payload.payload)
                .ok()?;
        if !signature.verify(fee_payer.as_ref(), &tx.message.serialize()) {
            tracing::warn!(%signature, "the facilitator reported a transaction that is not this payment");
            return None;
        }
        let statuses = match self
            .rpc
            .get_signature_statuses_with_history(&[signature])
            .await
        {
            Ok(statuses) => statuses,
            Err(e) => {
                tracing::warn!(%signature, error = %e, "could not confirm a reported settlement");
                return None;
            }
        };
        let status = statuses.value.first().cloned().flatten()?;
        if status.err.is_some()
            || !status
                .satisfies_commitment(solana_client::rpc_config::CommitmentConfig::confirmed())
        {
            return None;
        }
        let payer = tx.message.static_account_keys().get(1)?.to_string();
        tracing::info!(%signature, "a retried settle found the payment already landed");
        Some(SettleResponse {
            success: true,
            error_reason: None,
            error_message: None,
            payer: Some(payer),
            transaction: signature.to_string(),
            network: answer.network.clone(),
            amount: Some(request.payment_requirements.amount.clone()),
            extensions: None,
        })
    }
}

/// How many times `serve_exact` retries a `/settle` that failed in transport.
const EXACT_SETTLE_RETRIES: u32 = 3;
/// The first retry's delay; each next one doubles (0.25 s, 0.5 s, 1 s).
const EXACT_SETTLE_BACKOFF: Duration = Duration::from_millis(250);

fn status_name(status: ReceiptStatus) -> &'static str {
    match status {
        ReceiptStatus::Ok => "ok",
        ReceiptStatus::HandlerError => "handler_error",
        ReceiptStatus::Timeout => "timeout",
    }
}
