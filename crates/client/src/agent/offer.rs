//! The 402 challenge and the budget's check of a session offer.

use x402pp_protocol::Intent;

use super::*;

/// The 402 challenge of a route.
pub(super) struct Challenge {
    pub(super) required: PaymentRequired,
    pub(super) offer: Option<Offer>,
}

impl Agent {
    pub(super) fn challenge(response: &Response) -> Result<Challenge, ClientError> {
        let required = response
            .headers()
            .get(headers::PAYMENT_REQUIRED)
            .ok_or_else(|| {
                ClientError::OfferRejected("402 without a PAYMENT-REQUIRED header".into())
            })?;
        let required: PaymentRequired =
            headers::decode(headers::PAYMENT_REQUIRED, required.as_bytes())?;
        let offer = match response.headers().get(headers::X402_OFFER) {
            Some(value) => Some(headers::decode::<Offer>(
                headers::X402_OFFER,
                value.as_bytes(),
            )?),
            None => None,
        };
        Ok(Challenge { required, offer })
    }

    /// The session offer of a challenge, if the budget accepts it and, when the agent stated
    /// `intent`, it answers that intent (its signed `offerId` is the intent's id) and meets it.
    pub(super) fn acceptable_session(
        &self,
        challenge: &Challenge,
        intent: Option<&Intent>,
    ) -> Result<Offer, ClientError> {
        let budget = &self.inner.config.budget;
        let network = &self.inner.network;
        let option = challenge
            .required
            .option(SCHEME_SESSION, network)
            .ok_or_else(|| ClientError::OfferRejected(format!("no session option on {network}")))?;
        let offer = match &challenge.offer {
            Some(offer) => offer.clone(),
            None => option
                .extra_as::<SessionExtra>()
                .map(|extra| extra.offer)
                .ok_or_else(|| {
                    ClientError::OfferRejected("the session option has no offer".into())
                })?,
        };
        let terms = &offer.terms;
        // The budget's amounts are in the agent's assets: a price in another mint is refused
        // before it is compared with anything.
        self.check_asset(
            SCHEME_SESSION,
            Some(sol_key(&terms.asset)),
            &terms.asset.to_string(),
        )?;
        // A metered offer's requests cost up to its maximum per request: that is its price.
        let price = terms.max_per_request().0;
        if price > budget.max_price_per_request {
            return Err(ClientError::BudgetExceeded(format!(
                "{} {price} per request is above the budget's {}",
                if terms.metering.is_some() {
                    "metered maximum"
                } else {
                    "price"
                },
                budget.max_price_per_request
            )));
        }
        if terms.min_deposit.0 > budget.max_deposit {
            return Err(ClientError::BudgetExceeded(format!(
                "minimum deposit {} is above the budget's {}",
                terms.min_deposit.0, budget.max_deposit
            )));
        }
        // Strict, over the message of the offer's version (v3 for a metered offer, whose terms
        // must be usable: a unit size, a maximum of at least the base).
        offer
            .verify_any()
            .map_err(|e| ClientError::OfferRejected(format!("offer signature: {e}")))?;
        let reject = |why: String| Err(ClientError::OfferRejected(why));
        if let Some(intent) = intent {
            // The provider's signature covers the offer id, so an offer whose id is the intent's
            // was signed in answer to it; any other (a provider ignoring intents, a replayed
            // offer) was not, and its terms were not shaped by what the agent asked.
            if !terms.answers(intent) {
                return reject(format!(
                    "the offer {} does not answer the intent {} (an answer signs the intent's id \
                     as its offerId)",
                    terms.offer_id, intent.intent_id
                ));
            }
            if let Some(why) = terms.unmet_by(intent) {
                return reject(format!("the offer does not meet the intent: {why}"));
            }
        }
        if &terms.network != network {
            return reject(format!("offer is for {}, not {network}", terms.network));
        }
        if terms.escrow_program.0 != escrow::PROGRAM_ID.to_bytes() {
            return reject(format!("unknown escrow program {}", terms.escrow_program));
        }
        // The option's amount is the request's price: a metered offer's maximum per request.
        if option.asset_pubkey().ok() != Some(terms.asset)
            || option.pay_to_pubkey().ok() != Some(terms.provider)
            || option.amount_atomic().ok() != Some(terms.max_per_request())
        {
            return reject("offer does not match the session option (asset, payTo, amount)".into());
        }
        if offer.is_expired(now_secs()) {
            return reject(format!("offer expired at {}", terms.expires_at));
        }
        if terms.sla.max_latency_ms > budget.max_latency_ms {
            return reject(format!(
                "offered latency {} ms is above the budget's {} ms",
                terms.sla.max_latency_ms, budget.max_latency_ms
            ));
        }
        Ok(offer)
    }
}
