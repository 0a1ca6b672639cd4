//! Serving a request on a session voucher: load and check the session, check the voucher with the
//! session core, accept it durably, run the handler, sign and store the receipt.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::x402::SCHEME_SESSION;
use x402pp_protocol::{
    headers, Amount, ErrorCode, Receipt, ReceiptBody, ReceiptStatus, SessionSnapshot, SessionState,
    Voucher,
};
use x402pp_session::{
    Cut, NextVoucher, Pricing, Served, ServedUsage, SessionTerms, VoucherRejection,
};
use x402pp_solana::{escrow, ChainError};

use super::run::Answer;
use super::stream::{MeteredBody, Pending};
use super::{header_str, now_ms, status_name, PaymentContext, Provider};
use crate::config::RoutePrice;
use crate::error::ServerError;
use crate::ledger::types::{ChainSession, ReceiptRecord, SessionRecord, StoredVoucher};
use crate::ledger::LedgerError;

/// A route's prices as a session-mismatch message names them: `1000`, or `1000 (or 800 locking
/// at least 1000000, ...)` with tiers.
fn route_prices(route: &RoutePrice) -> String {
    if route.tiers.is_empty() {
        return route.price_per_request.to_string();
    }
    let tiers: Vec<String> = route
        .tiers
        .iter()
        .map(|tier| {
            format!(
                "{} locking at least {}",
                tier.price_per_request, tier.min_deposit
            )
        })
        .collect();
    format!("{} (or {})", route.price_per_request, tiers.join(", or "))
}

impl Provider {
    /// The session from the cache, else the chain (refreshing the ledger's row), else the ledger
    /// when the chain is unreachable.
    pub(crate) async fn load_session(
        &self,
        session: &Pubkey,
        from_chain: bool,
    ) -> Result<SessionRecord, ServerError> {
        let address = session.to_bytes();
        if !from_chain {
            if let Some(record) = self.sessions.get(&address) {
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
        if record.chain.opened_slot != chain.opened_slot {
            // The ledger holds one incarnation per address (docs/protocol.md §6).
            return Err(ServerError::new(
                ErrorCode::SessionMismatch,
                format!(
                    "{session} was reopened (slot {}) while this provider still holds the \
                     session opened at slot {}; open with a fresh nonce",
                    chain.opened_slot, record.chain.opened_slot
                ),
            ));
        }
        self.sessions.insert(record.clone());
        Ok(record)
    }

    pub(super) fn check_session(
        &self,
        record: &SessionRecord,
        route: &RoutePrice,
    ) -> Result<(), ServerError> {
        let chain = &record.chain;
        if chain.provider != self.address.to_bytes() || chain.mint != self.config.mint.to_bytes() {
            return Err(ServerError::new(
                ErrorCode::SessionMismatch,
                "the session is for another provider or mint",
            ));
        }
        // A session is bound to the terms of the offer it was opened on: a route serves it only
        // under the same promise and one of the route's prices (its own, or a commitment
        // tier's with the tier's deposit locked), so a strict promise bought on one route
        // cannot be spent on another with a looser one, nor a tier's discount had without its
        // deposit.
        let sla = &route.sla;
        let signed = (
            chain.max_latency_ms,
            chain.max_input_bytes,
            chain.latency_penalty_bps,
        );
        let offered = (
            sla.max_latency_ms,
            sla.max_input_bytes,
            sla.latency_penalty_bps,
        );
        if chain.metering != route.metering {
            let terms = |metering: Option<x402pp_protocol::Metering>| {
                metering.map_or_else(
                    || "a fixed price".to_owned(),
                    |m| {
                        format!(
                            "metered prices (in {}, out {} per {} units, at most {})",
                            m.unit_price_in, m.unit_price_out, m.unit_size, m.max_per_request
                        )
                    },
                )
            };
            return Err(ServerError::new(
                ErrorCode::SessionMismatch,
                format!(
                    "the session was opened with {}, this route charges {}",
                    terms(chain.metering),
                    terms(route.metering)
                ),
            ));
        }
        if signed != offered || !route.prices(chain.price_per_request, chain.deposit) {
            let message = match route.deposit_for_price(chain.price_per_request) {
                Some(min_deposit) if signed == offered => format!(
                    "the session charges {}, this route's commitment tier price for sessions \
                     locking at least {min_deposit}, and it locks {}",
                    chain.price_per_request, chain.deposit
                ),
                _ => format!(
                    "the session was opened on other terms (price {}, {} ms for bodies up to {} \
                     bytes, penalty {} bps) than this route's ({}, {} ms, {} bytes, {} bps)",
                    chain.price_per_request,
                    signed.0,
                    signed.1,
                    signed.2,
                    route_prices(route),
                    offered.0,
                    offered.1,
                    offered.2
                ),
            };
            return Err(ServerError::new(ErrorCode::SessionMismatch, message));
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

    /// Whether `chain` has one of `route`'s tier terms (its SLA, a tier's price) but locks
    /// less than that tier's deposit.
    fn short_of_tier(chain: &ChainSession, route: &RoutePrice) -> bool {
        let sla = &route.sla;
        (
            chain.max_latency_ms,
            chain.max_input_bytes,
            chain.latency_penalty_bps,
        ) == (
            sla.max_latency_ms,
            sla.max_input_bytes,
            sla.latency_penalty_bps,
        ) && route
            .deposit_for_price(chain.price_per_request)
            .is_some_and(|needed| chain.deposit < needed)
    }

    pub(super) fn status_of(record: &SessionRecord) -> SessionSnapshot {
        let chain = &record.chain;
        SessionSnapshot {
            session_id: x402pp_protocol::Pubkey(chain.address),
            state: chain.state,
            seq: record.last_seq,
            accepted: Amount(record.accepted),
            deposit: Amount(chain.deposit),
            refunded: Amount(chain.penalties),
            remaining: Amount(chain.books().voucher_cap().saturating_sub(record.accepted)),
            price_per_request: Amount(chain.price_per_request),
            expires_at: chain.expires_at,
        }
    }

    /// The session core's voucher rule ([`Progress::check_voucher`]) against `record`, as a
    /// wire error (with the top-up needed for `insufficient_deposit`).
    pub(super) fn check_voucher(
        record: &SessionRecord,
        voucher: &Voucher,
    ) -> Result<(), ServerError> {
        let chain = &record.chain;
        if voucher.opened_slot != chain.opened_slot {
            return Err(ServerError::new(
                ErrorCode::InvalidVoucher,
                format!(
                    "the voucher is for the session opened at slot {}, not {}",
                    voucher.opened_slot, chain.opened_slot
                ),
            ));
        }
        let next = NextVoucher {
            seq: voucher.seq,
            cumulative: voucher.cumulative.get(),
            receipt_head: voucher.receipt_head,
            accepted: voucher.accepted.map(Amount::get),
        };
        let rejection = match record.progress().check_voucher(
            next,
            Pricing::of(chain.price_per_request, chain.metering),
            chain.books().voucher_cap(),
        ) {
            Ok(()) => return Ok(()),
            Err(rejection) => rejection,
        };
        let error = ServerError::new(rejection.code(), rejection.to_string());
        Err(match rejection {
            VoucherRejection::InsufficientDeposit {
                required, top_up, ..
            } => error.with_details(serde_json::json!({
                "sessionId": x402pp_protocol::Pubkey(chain.address),
                "deposit": chain.deposit.to_string(),
                "accepted": record.accepted.to_string(),
                "required": required.to_string(),
                "topUp": top_up.to_string(),
            })),
            VoucherRejection::InvalidHold {
                base,
                max_per_request,
                hold,
            } => error.with_details(serde_json::json!({
                "base": base.to_string(),
                "maxPerRequest": max_per_request.to_string(),
                "hold": hold.to_string(),
            })),
            _ => error,
        })
    }

    /// The session terms receipts are signed under.
    pub(crate) fn terms_of(&self, chain: &ChainSession) -> SessionTerms {
        SessionTerms {
            session: x402pp_protocol::Pubkey(chain.address),
            opened_slot: chain.opened_slot,
            provider: x402pp_protocol::Pubkey(self.address.to_bytes()),
            price_per_request: chain.price_per_request,
            max_latency_ms: chain.max_latency_ms,
            max_input_bytes: chain.max_input_bytes,
            metering: chain.metering,
        }
    }

    /// A serving slot of route `path` when it has `max_in_flight`; `503 overloaded` when all
    /// are taken.
    fn route_slot(
        &self,
        path: &str,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ServerError> {
        let Some(slots) = self.route_slots.get(path) else {
            return Ok(None);
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => Err(ServerError::new(
                ErrorCode::Overloaded,
                format!("{path} is serving as many requests as it can answer in time; retry"),
            )
            .with_header("retry-after", "1".into())),
        }
    }

    pub(super) async fn serve_session<F, Fut>(
        self: &Arc<Self>,
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
        if let Err(refusal) = self.check_session(&record, route) {
            // On a tier's terms but locking less than the tier's deposit: the cached copy may
            // predate a top-up, so one refresh from the chain before the refusal.
            if !Self::short_of_tier(&record.chain, route) {
                return Err(refusal);
            }
            record = self.load_session(&session, true).await?;
            self.check_session(&record, route)?;
        }
        // 3. Verify the voucher (strict ed25519), then take a token of the session's rate.
        voucher
            .verify(&x402pp_protocol::Pubkey(record.chain.voucher_signer))
            .map_err(|e| ServerError::new(e.code(), e.to_string()))?;
        // The per-session rate counts only vouchers the session's signer signed: a session id
        // is public on chain, so a flood of junk under it must not use the agent's quota (junk
        // costs a cache lookup and a signature check, and is the per-IP limit's business). A
        // refused voucher stays unused.
        if let Some(limiter) = &self.session_limiter {
            limiter
                .check_session(session.to_bytes())
                .map_err(ServerError::from)?;
        }
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
            self.sessions.insert(refreshed.clone());
            record = refreshed;
        }
        // The body is read (and bounded) before the voucher is accepted, so a bad body cannot
        // leave an accepted voucher without a receipt.
        let sse_receipt = wants_sse_receipt(request.headers());
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
        let input_bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
        // Shed what the route cannot serve within its promise: before the voucher is accepted,
        // so nothing is charged and the voucher stays unused. The slot is held until the
        // receipt is signed.
        let slot = self.route_slot(path)?;

        // 5. Record it durably: of concurrent requests with this voucher, one wins.
        let stored = StoredVoucher {
            seq: voucher.seq,
            cumulative: voucher.cumulative.get(),
            signature: voucher.signature.0,
            accepted: voucher.accepted.map(Amount::get),
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
            self.sessions.insert(row.clone());
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
        self.sessions
            .update(&record.chain.address, |r| r.last_seq = voucher.seq);
        let usage = super::UsageReporter::default();

        // 6. Run the handler, timed, with the payment in the extensions.
        let mut request = Request::from_parts(parts, Body::from(body));
        request.extensions_mut().insert(PaymentContext::Session {
            session,
            seq: voucher.seq,
            cumulative: voucher.cumulative.get(),
            hold: voucher.hold(),
            usage: usage.clone(),
        });
        let accepted_at = Instant::now();
        let (status, response_parts, answer) = self.run_head(request, inner).await;

        // A metered session's SSE answer to an agent that takes the receipt as a final event
        // streams through; its receipt is signed after the last byte (stream.rs).
        let answer = match (sse_receipt, record.chain.metering, voucher.hold(), answer) {
            (true, Some(metering), Some(hold), Answer::Body(inner_body))
                if status == ReceiptStatus::Ok && is_event_stream(&response_parts.headers) =>
            {
                return Ok(self.stream_answer(
                    response_parts,
                    inner_body,
                    Pending {
                        provider: self.clone(),
                        record,
                        stored,
                        metering,
                        hold,
                        input_hash: input,
                        input_bytes,
                        accepted_at,
                        usage,
                        slot,
                    },
                ));
            }
            (_, _, _, answer) => answer,
        };
        let (status, response_parts, output) = self.buffer(status, response_parts, answer).await;
        let latency = accepted_at.elapsed();

        // 7. Sign and store the receipt, then answer.
        let latency_ms = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        let served = Served {
            status,
            input_hash: input,
            input_bytes: Some(input_bytes),
            output_hash: output_hash(&output),
            latency_ms,
            completed_at_ms: now_ms(),
        };
        let terms = self.terms_of(&record.chain);
        let output_bytes = u64::try_from(output.len()).unwrap_or(u64::MAX);
        let body = match (record.chain.metering, voucher.hold()) {
            (Some(metering), Some(hold)) => {
                let units = super::metered::units_of_answer(
                    &metering,
                    usage.reported(),
                    input_bytes,
                    &response_parts.headers,
                    &output,
                );
                let usage = ServedUsage {
                    hold,
                    units_in: units.units_in,
                    // The program refuses more output units than output bytes.
                    units_out: units.units_out.min(output_bytes),
                    output_bytes,
                    total_ms: latency_ms,
                    cut: Cut::None,
                    streamed: false,
                    units_estimated: units.estimated,
                };
                terms.metered_receipt_body(&record.progress(), voucher.seq, served, usage)
            }
            _ => terms.receipt_body(&record.progress(), voucher.seq, served),
        }
        .map_err(ServerError::internal)?;
        let (receipt_header, status_header) = self
            .complete_request(&mut record, stored, body, status, latency)
            .await?;
        drop(slot);

        let mut response = Response::from_parts(response_parts, Body::from(output));
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&receipt_header) {
            headers.insert(headers::X402_RECEIPT, value);
        }
        if let Some(status) = status_header.and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(headers::X402_SESSION_STATUS, status);
        }
        Ok(response)
    }

    /// The response of a streamed answer: the handler's status and headers (less a length; plus
    /// the receipt mode and what keeps proxies from buffering), its body wrapped in a
    /// [`MeteredBody`].
    fn stream_answer(
        &self,
        mut parts: http::response::Parts,
        body: Body,
        pending: Pending,
    ) -> Response<Body> {
        let headers = &mut parts.headers;
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(
            headers::X402_RECEIPT_MODE,
            HeaderValue::from_static(headers::RECEIPT_MODE_SSE_EVENT),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Response::from_parts(parts, Body::new(MeteredBody::new(body, pending)))
    }

    /// Signs and stores a request's receipt and moves the session past it (ledger, cache,
    /// metrics). Returns the `X-402-Receipt` and `X-402-Session-Status` values. When another
    /// replica stored a receipt for this seq first (it judged the request cut off by a crash),
    /// that stored receipt is the request's and is the one returned.
    pub(super) async fn complete_request(
        &self,
        record: &mut SessionRecord,
        stored: StoredVoucher,
        body: ReceiptBody,
        status: ReceiptStatus,
        latency: std::time::Duration,
    ) -> Result<(String, Option<String>), ServerError> {
        let seq = stored.seq;
        let breached = !body.sla_verification.met;
        let (receipt, receipt_header, stored_receipt) = self.sign_receipt(body)?;
        match self
            .ledger
            .record_receipt(&record.chain.address, &stored_receipt)
            .await
        {
            Ok(()) => {}
            Err(LedgerError::Conflict) => {
                let winner = self
                    .ledger
                    .receipt(&record.chain.address, seq)
                    .await
                    .map_err(ServerError::internal)?
                    .ok_or_else(|| ServerError::internal("the receipt of a conflict is gone"))?;
                let winner: Receipt =
                    serde_json::from_str(&winner.json).map_err(ServerError::internal)?;
                if let Some(row) = self.ledger_row(&record.chain.address).await? {
                    *record = row;
                    self.sessions.insert(record.clone());
                }
                let header = headers::encode(&winner).map_err(ServerError::internal)?;
                return Ok((header, Self::session_status_header(record)));
            }
            Err(e) => return Err(ServerError::internal(e)),
        }
        let mut progress = record.progress();
        progress.record(seq, receipt.body.cumulative_charged.0, receipt.receipt_id);
        record.set_progress(progress);
        if stored_receipt_charges(&receipt) {
            record.best_voucher = Some(stored);
        }
        let cached = record.clone();
        self.sessions
            .update(&record.chain.address, move |r| *r = cached);
        self.metrics.receipt(status_name(status), breached, latency);
        if status == ReceiptStatus::Ok || stored_receipt_charges(&receipt) {
            self.metrics.paid(SCHEME_SESSION);
        }
        Ok((receipt_header, Self::session_status_header(record)))
    }

    /// Signs a receipt body; returns the receipt, its `X-402-Receipt` header and its ledger row.
    pub(super) fn sign_receipt(
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
            ok: stored_receipt_charges(&receipt),
            amount_charged: receipt.body.amount_charged.0,
            cumulative_charged: receipt.body.cumulative_charged.0,
            json,
        };
        Ok((receipt, header, record))
    }
    pub(super) fn session_status_header(record: &SessionRecord) -> Option<String> {
        headers::encode(&Self::status_of(record)).ok()
    }
}

/// Whether a receipt is stored `ok` (its voucher becomes the best voucher and `accepted` moves to
/// its cumulative): a fixed-price receipt when its status is `ok`; a metered one when it charged
/// anything (an `ok` or `partial` answer).
fn stored_receipt_charges(receipt: &Receipt) -> bool {
    match receipt.body.usage {
        None => receipt.body.status == ReceiptStatus::Ok,
        Some(_) => receipt.body.amount_charged.0 > 0,
    }
}

/// Whether an answer is a server-sent event stream.
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("text/event-stream"))
}

/// Whether the request asks for a streamed answer's receipt as a final SSE event.
fn wants_sse_receipt(headers: &http::HeaderMap) -> bool {
    headers
        .get(headers::X402_RECEIPT_MODE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim()
                .eq_ignore_ascii_case(headers::RECEIPT_MODE_SSE_EVENT)
        })
}
