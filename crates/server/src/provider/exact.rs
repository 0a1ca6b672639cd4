//! Serving a request paid with the x402 `exact` scheme: verify, settle, then serve.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use solana_sdk::signature::Signature;
use x402pp_protocol::x402::{
    FacilitatorRequest, PaymentPayload, SettleResponse, X402Version2, SCHEME_EXACT,
};
use x402pp_protocol::{headers, ErrorCode};

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
                Err(e) => return Err(ServerError::chain_unavailable(e)),
            }
        }
    }

    /// The settlement a retried `/settle` reported as `duplicate_settlement`, when its signature
    /// is the fee payer's over this very payment's message (so that transaction is this payment)
    /// and the chain has it confirmed without error; `None` otherwise.
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
