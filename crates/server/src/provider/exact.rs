//! Serving a request paid with the x402 `exact` scheme: verify, settle, then serve.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use solana_sdk::signature::Signature;
use x402pp_protocol::x402::{
    FacilitatorRequest, PaymentPayload, SettleResponse, X402Version2, SCHEME_EXACT,
};
use x402pp_protocol::{headers, payment_id, ErrorCode};

use super::{header_str, now_ms, PaymentContext, Provider};
use crate::config::RoutePrice;
use crate::error::ServerError;
use crate::ledger::types::ExactSettlementRecord;
use crate::ledger::LedgerError;

impl Provider {
    // ---- exact ------------------------------------------------------------------------------

    pub(super) async fn serve_exact<F, Fut>(
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
        // A payment identifier makes a retry of the same payment idempotent: answered from the
        // record of the first attempt, without a second settlement (x402 `payment-identifier`).
        let payment_id = payment_id::id_of(&payload)
            .map_err(|e| ServerError::new(ErrorCode::MalformedRequest, e.to_string()))?;
        let identified = match payment_id {
            Some(id) => {
                let message_hash = message_hash_of(&payload).ok_or_else(|| {
                    ServerError::new(
                        ErrorCode::MalformedRequest,
                        "the exact payload carries no decodable transaction",
                    )
                })?;
                if let Some(done) = self
                    .ledger
                    .exact_payment(id.as_str())
                    .await
                    .map_err(ServerError::internal)?
                {
                    return self.replay_exact(&id, &done, &message_hash, path);
                }
                Some((id, message_hash))
            }
            None => None,
        };
        let facilitator_request = FacilitatorRequest {
            x402_version: X402Version2,
            payment_payload: payload,
            payment_requirements: requirements,
        };
        let verdict = facilitator
            .verify(&facilitator_request)
            .await
            .map_err(ServerError::facilitator_unavailable)?;
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
        // The payment may have been sent although the answer is no success: a retry after a
        // transport failure may learn that the first attempt landed (`duplicate_settlement`
        // with its signature), and a facilitator that stopped waiting says
        // `settlement_pending` with the signature it sent (issue 18). Either way the
        // transaction is looked up on chain (waiting for a pending one); confirmed, it is this
        // payment and the request is served — never charged and refused.
        let in_doubt = match settled.error_reason.as_deref() {
            _ if settled.success => false,
            Some("duplicate_settlement") => retried,
            Some("settlement_pending") => true,
            _ => false,
        };
        let recovered = if in_doubt {
            self.confirm_landed_exact(&facilitator_request, &settled)
                .await
        } else {
            None
        };
        if in_doubt && recovered.is_none() {
            // Nothing proves the payment, so nothing is served; but it may have landed: kept
            // for reconciliation, never a silent loss.
            self.record_in_doubt(&facilitator_request, &settled, path)
                .await;
        }
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
            amount: route.max_per_request(),
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
        let payment_response = headers::encode(&settled).ok();
        if let Some(value) = payment_response
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response
                .headers_mut()
                .insert(headers::PAYMENT_RESPONSE, value);
        }
        let Some((id, message_hash)) = identified else {
            return Ok(response);
        };
        // Kept so that a retry of this payment gets this answer: buffered, within the same
        // response limit as session answers (`max_response_body`, which receipts hash).
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, self.config.max_response_body).await {
            Ok(body) => body,
            Err(e) => return Err(ServerError::internal(format!("response body: {e}"))),
        };
        let record = crate::ledger::ExactPaymentRecord {
            payment_id: id.to_string(),
            message_hash,
            resource: path.to_owned(),
            tx_signature: settled.transaction.clone(),
            payment_response: serde_json::to_string(&settled).unwrap_or_default(),
            status: parts.status.as_u16(),
            content_type: parts
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.to_vec(),
            created_at_ms: now_ms(),
        };
        if let Err(e) = self.ledger.record_exact_payment(&record).await {
            tracing::error!(error = %e, payment_id = %id, "could not record an identified exact payment");
        }
        Ok(Response::from_parts(parts, Body::from(body)))
    }

    /// The answer to a payment whose identifier was recorded: the same answer again when it is
    /// the same payment (same transaction message, same resource), `409 payment_id_conflict`
    /// when the id was used for another.
    fn replay_exact(
        &self,
        id: &payment_id::PaymentId,
        done: &crate::ledger::ExactPaymentRecord,
        message_hash: &str,
        path: &str,
    ) -> Result<Response<Body>, ServerError> {
        if done.message_hash != message_hash || done.resource != path {
            return Err(ServerError::new(
                ErrorCode::PaymentIdConflict,
                format!("payment identifier {id} was used for another payment"),
            ));
        }
        tracing::info!(payment_id = %id, transaction = %done.tx_signature, "a retried payment answered from its record");
        let mut response = Response::builder().status(done.status);
        if let Some(content_type) = &done.content_type {
            response = response.header(axum::http::header::CONTENT_TYPE, content_type.as_str());
        }
        let settled: Option<SettleResponse> = serde_json::from_str(&done.payment_response).ok();
        if let Some(value) = settled.and_then(|s| headers::encode(&s).ok()) {
            response = response.header(headers::PAYMENT_RESPONSE, value);
        }
        response
            .body(Body::from(done.body.clone()))
            .map_err(ServerError::internal)
    }

    /// `/settle`, retried on a transport failure (the facilitator may have died mid-settle) up
    /// to [`EXACT_SETTLE_RETRIES`] times with a doubling backoff. Returns the answer and whether
    /// an earlier attempt failed, i.e. whether the payment may already have been sent.
    pub(super) async fn settle_exact(
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
                Err(e) => return Err(ServerError::facilitator_unavailable(e)),
            }
        }
    }

    /// Records a payment the facilitator says may have been sent but that could not be
    /// confirmed ([`crate::ledger::ExactInDoubtRecord`]), with a warning for the operator.
    async fn record_in_doubt(
        &self,
        request: &FacilitatorRequest,
        answer: &SettleResponse,
        path: &str,
    ) {
        let Ok(tx) =
            x402pp_solana::exact::facilitator::decode_transaction(&request.payment_payload.payload)
        else {
            return;
        };
        let record = crate::ledger::ExactInDoubtRecord {
            message_hash: message_hash(&tx.message.serialize()),
            payer: tx
                .message
                .static_account_keys()
                .get(1)
                .map(ToString::to_string)
                .unwrap_or_default(),
            amount: request
                .payment_requirements
                .amount
                .parse()
                .unwrap_or_default(),
            resource: path.to_owned(),
            reason: answer
                .error_reason
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            recorded_at_ms: now_ms(),
        };
        tracing::warn!(
            payer = %record.payer,
            amount = record.amount,
            reason = %record.reason,
            message_hash = %record.message_hash,
            "an exact payment may have been charged but could not be confirmed; not served, recorded for reconciliation"
        );
        if let Err(e) = self.ledger.record_exact_in_doubt(&record).await {
            tracing::error!(error = %e, "could not record an exact payment in doubt");
        }
    }

    /// The settlement a `/settle` reported as `settlement_pending` (or, retried, as
    /// `duplicate_settlement`), when its signature is the fee payer's over this very payment's
    /// message (so that transaction is this payment) and the chain has it confirmed without
    /// error within [`EXACT_PENDING_WAIT`]; `None` otherwise (nothing landed: nobody charged).
    pub(super) async fn confirm_landed_exact(
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
        // A pending transaction lands within its blockhash's life (about a minute) or never.
        let started = std::time::Instant::now();
        loop {
            let status = match self
                .rpc
                .get_signature_statuses_with_history(&[signature])
                .await
            {
                Ok(statuses) => statuses.value.first().cloned().flatten(),
                Err(e) => {
                    tracing::warn!(%signature, error = %e, "could not confirm a reported settlement");
                    return None;
                }
            };
            match status {
                Some(status) if status.err.is_some() => return None,
                Some(status)
                    if status.satisfies_commitment(
                        solana_client::rpc_config::CommitmentConfig::confirmed(),
                    ) =>
                {
                    break
                }
                _ if started.elapsed() >= EXACT_PENDING_WAIT => {
                    tracing::warn!(%signature, "a reported settlement did not confirm in time");
                    return None;
                }
                _ => tokio::time::sleep(EXACT_PENDING_POLL).await,
            }
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

/// How long `serve_exact` waits for a settlement the facilitator reported pending (or a
/// duplicate) to confirm on chain: a transaction's blockhash lives about 60–90 s.
const EXACT_PENDING_WAIT: Duration = Duration::from_secs(60);
/// Between two looks at a pending settlement.
const EXACT_PENDING_POLL: Duration = Duration::from_millis(400);
/// How many times `serve_exact` retries a `/settle` that failed in transport.
const EXACT_SETTLE_RETRIES: u32 = 3;
/// The first retry's delay; each next one doubles (0.25 s, 0.5 s, 1 s).
const EXACT_SETTLE_BACKOFF: Duration = Duration::from_millis(250);

/// Hex sha256 of the message of an `exact` payload's transaction; `None` when it does not decode.
fn message_hash_of(payload: &PaymentPayload) -> Option<String> {
    let tx = x402pp_solana::exact::facilitator::decode_transaction(&payload.payload).ok()?;
    Some(message_hash(&tx.message.serialize()))
}

/// Hex sha256 of a serialized transaction message: what identifies an `exact` payment in the
/// ledger's `exact_in_doubt` and `exact_payment_ids`.
fn message_hash(message: &[u8]) -> String {
    x402pp_protocol::Hash32(x402pp_protocol::crypto::sha256(&[message])).to_string()
}
