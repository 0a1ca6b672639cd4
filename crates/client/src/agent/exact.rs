//! Paying with the x402 `exact` scheme when no acceptable session is offered.

use super::pay::{error_of, header_value};
use super::*;

impl Agent {
    pub(super) async fn pay_exact(
        &self,
        challenge: &Challenge,
        request: &Request,
        transport: &mut Transport<'_>,
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
        let payload = x402pp_solana::exact::client::build_payment(
            &self.inner.rpc,
            &self.inner.config.keypair,
            option,
            Some(challenge.required.resource.clone()),
        )
        .await?;
        let mut paid = clone_request(request)?;
        paid.headers_mut().insert(
            headers::PAYMENT_SIGNATURE,
            header_value(&headers::encode(&payload)?)?,
        );
        let response = transport.execute(paid).await?;
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
