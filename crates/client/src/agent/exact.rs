//! Paying with the x402 `exact` scheme when no acceptable session is offered.

use x402pp_protocol::payment_id;

use super::pay::{error_of, header_value};
use super::*;

/// How many times a payment with an identifier is sent again after its answer was lost.
const EXACT_RESENDS: u32 = 2;
/// The wait before the first resend; the next one doubles it.
const EXACT_RESEND_DELAY: Duration = Duration::from_millis(250);

impl Agent {
    pub(super) async fn pay_exact(
        &self,
        challenge: &Challenge,
        request: &Request,
        transport: &mut Transport<'_>,
        options: RequestOptions,
    ) -> Result<Response, ClientError> {
        let budget = &self.inner.config.budget;
        let option = challenge
            .required
            .option(SCHEME_EXACT, &self.inner.network)
            .ok_or_else(|| ClientError::OfferRejected("no exact option".into()))?;
        self.check_asset(
            SCHEME_EXACT,
            option.asset_pubkey().ok().map(|asset| sol_key(&asset)),
            &option.asset,
        )?;
        let price = option
            .amount_atomic()
            .map_err(x402pp_protocol::ProtocolError::from)?
            .0;
        if price > budget.max_price_per_request {
            return Err(ClientError::BudgetExceeded(format!(
                "price {price} per request is above the budget's {}",
                budget.max_price_per_request
            )));
        }
        if let Some(max_charge) = options.max_charge.filter(|&max| price > max) {
            return Err(ClientError::BudgetExceeded(format!(
                "exact price {price} is above the request's max_charge {max_charge}"
            )));
        }
        let mut payload = x402pp_solana::exact::client::build_payment(
            &self.inner.rpc,
            &self.inner.config.keypair,
            option,
            Some(challenge.required.resource.clone()),
        )
        .await?;
        // With the x402 `payment-identifier` the server declared, the same payment can be sent
        // again when its answer is lost: the server answers it from its record of the first
        // attempt, it is never settled twice.
        // The challenge's extensions are echoed, as x402 v2 clients do (a facilitator lists a
        // resource in its discovery catalog from the `bazaar` extension of a settled payment).
        payload.extensions = challenge.required.extensions.clone();
        let identified = payment_id::declared(challenge.required.extensions.as_ref());
        if identified {
            payment_id::attach(&mut payload.extensions, &payment_id::PaymentId::generate());
        }
        let signature = header_value(&headers::encode(&payload)?)?;
        let mut resent = 0u32;
        let response = loop {
            let mut paid = clone_request(request)?;
            paid.headers_mut()
                .insert(headers::PAYMENT_SIGNATURE, signature.clone());
            match transport.execute(paid).await {
                Ok(response) => break response,
                Err(error) if identified && resent < EXACT_RESENDS => {
                    resent = resent.saturating_add(1);
                    tracing::warn!(%error, resent, "exact answer lost; sending the same payment again");
                    tokio::time::sleep(EXACT_RESEND_DELAY.saturating_mul(resent)).await;
                }
                Err(error) => return Err(error),
            }
        };
        bump(&self.inner.stats.exact_requests, 1);
        if response.status() == StatusCode::PAYMENT_REQUIRED {
            let settled = response
                .headers()
                .get(headers::PAYMENT_RESPONSE)
                .and_then(|v| {
                    headers::decode::<SettleResponse>(headers::PAYMENT_RESPONSE, v.as_bytes()).ok()
                });
            let (status, code, message) = error_of(response).await;
            let code = settled
                .as_ref()
                .and_then(|s| s.error_reason.as_deref())
                .map_or(code, RefusalCode::parse);
            return Err(ClientError::PaymentRefused {
                status,
                code,
                message,
            });
        }
        if response.status().is_success() {
            bump(&self.inner.stats.ok_requests, 1);
        }
        Ok(response)
    }
}
