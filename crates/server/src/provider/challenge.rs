//! The 402 challenge: `PAYMENT-REQUIRED` with the session and `exact` options and a freshly signed
//! `X-402-Offer`, on the plain challenge and on every other 402 (issue 18: a generic x402 client
//! keeps the `exact` fallback whatever the session error).

use axum::http::HeaderMap;
use x402pp_protocol::metering::MeteringTerms;
use x402pp_protocol::x402::{
    ExactSvmExtra, PaymentRequired, PaymentRequirements, ResourceInfo, SessionExtra, X402Version2,
    SCHEME_EXACT, SCHEME_SESSION,
};
use x402pp_protocol::{headers, Amount, ErrorCode, Id16, Intent, Offer, OfferTerms};
use x402pp_solana::escrow;

use super::{header_str, now_ms, Provider};
use crate::config::RoutePrice;
use crate::error::ServerError;

impl Provider {
    // ---- the 402 challenge -------------------------------------------------------------------

    pub(super) fn resource(&self, path: &str) -> String {
        format!("{}{path}", self.config.public_url.trim_end_matches('/'))
    }

    pub(super) fn offer_terms(
        &self,
        path: &str,
        route: &RoutePrice,
        intent: Option<&Intent>,
    ) -> OfferTerms {
        let now = now_ms() / 1_000;
        // An intent committing a deposit that reaches one of the route's price tiers gets the
        // cheapest such tier: its price, and its deposit as the signed minimum (the escrow
        // refuses a smaller deposit, so the discount cannot be had without the commitment).
        let (price_per_request, min_deposit) =
            route.price_for(intent.and_then(|i| i.commitment).map(Amount::get));
        OfferTerms {
            // An offer answering an intent takes the intent's id as its own signed id, so the
            // provider's signature binds the answer to the intent (`OfferTerms::answers`).
            offer_id: intent.map_or_else(Id16::random, |i| i.intent_id),
            intent_id: intent.map(|i| i.intent_id),
            resource: self.resource(path),
            provider: x402pp_protocol::Pubkey(self.address.to_bytes()),
            network: self.config.network.clone(),
            asset: x402pp_protocol::Pubkey(self.config.mint.to_bytes()),
            escrow_program: x402pp_protocol::Pubkey(escrow::PROGRAM_ID.to_bytes()),
            price_per_request: Amount(price_per_request),
            min_deposit: Amount(min_deposit),
            session_ttl_secs: route.session_ttl_secs,
            grace_secs: route.grace_secs,
            sla: route.sla,
            expires_at: now.saturating_add(i64::try_from(route.offer_ttl_secs).unwrap_or(i64::MAX)),
            metering: route.metering.map(MeteringTerms::from),
        }
    }

    /// The x402 extensions every `PAYMENT-REQUIRED` of `route` declares: `payment-identifier`
    /// (not required: an `exact` payment that carries an id is idempotent, see
    /// `serve_exact`), and `bazaar` when the route has a discovery declaration.
    pub(super) fn extensions(&self, route: &RoutePrice) -> serde_json::Value {
        let mut extensions = serde_json::json!({
            x402pp_protocol::payment_id::PAYMENT_IDENTIFIER:
                x402pp_protocol::payment_id::declaration(false),
        });
        if let (Some(map), Some(declaration)) = (extensions.as_object_mut(), &route.discovery) {
            map.insert(
                x402pp_protocol::bazaar::BAZAAR.to_owned(),
                serde_json::to_value(declaration.extension()).unwrap_or_default(),
            );
        }
        extensions
    }

    /// The `exact` option of a route, when offered and a facilitator fee payer is known.
    pub(super) fn exact_requirements(&self, route: &RoutePrice) -> Option<PaymentRequirements> {
        let fee_payer = self.fee_payer.filter(|_| route.exact)?;
        Some(PaymentRequirements {
            scheme: SCHEME_EXACT.to_owned(),
            network: self.config.network.clone(),
            amount: route.max_per_request().to_string(),
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
    /// `X-402-Intent` when one was sent), or `no_acceptable_offer` when the intent cannot be met
    /// (still with a `PAYMENT-REQUIRED`, offering `exact` only).
    pub(super) fn challenge(
        &self,
        path: &str,
        route: &RoutePrice,
        headers: &HeaderMap,
        reason: &str,
    ) -> ServerError {
        self.with_requirements(
            ServerError::new(ErrorCode::PaymentRequired, reason.to_owned()),
            path,
            route,
            headers,
        )
    }

    /// `error` (a 402) with the route's payment requirements attached: `PAYMENT-REQUIRED`
    /// (its `error` field the wire code, so a generic x402 client still sees the `exact`
    /// option) and, when the intent in `headers` can be met, a freshly signed `X-402-Offer`. An
    /// intent that cannot be met turns a plain challenge into `no_acceptable_offer`; an intent
    /// header that does not decode turns it into `malformed_request`.
    pub(super) fn with_requirements(
        &self,
        error: ServerError,
        path: &str,
        route: &RoutePrice,
        headers: &HeaderMap,
    ) -> ServerError {
        let intent = match header_str(headers, headers::X402_INTENT) {
            Some(raw) => match headers::decode::<Intent>(headers::X402_INTENT, raw) {
                Ok(intent) => Some(intent),
                Err(e) if error.code == ErrorCode::PaymentRequired => {
                    return ServerError::malformed(&e)
                }
                Err(_) => None,
            },
            None => None,
        };
        let terms = self.offer_terms(path, route, intent.as_ref());
        let now = now_ms() / 1_000;
        let unmet = intent.as_ref().and_then(|intent| {
            // An intent is a request for an offer until its own expiry (issue 18: an intent
            // with `expiresAt: 1` still got an offer).
            if intent.expires_at <= now {
                return Some(format!("the intent expired at {}", intent.expires_at));
            }
            // Routing by capability: a route that names what it does answers only intents for
            // that (an intent with an empty capability asks for anything).
            if let Some(capability) = &route.capability {
                if !intent.capability.is_empty() && intent.capability != *capability {
                    return Some(format!(
                        "capability {:?} is not offered here (this route offers {capability:?})",
                        intent.capability
                    ));
                }
            }
            terms.unmet_by(intent)
        });
        let mut error = match &unmet {
            Some(why) if error.code == ErrorCode::PaymentRequired => ServerError::new(
                ErrorCode::NoAcceptableOffer,
                format!("no offer meets the intent: {why}"),
            ),
            _ => error,
        };
        let mut accepts = Vec::with_capacity(2);
        if unmet.is_none() {
            // The session option's amount is the most a request can cost: the offer's price (a
            // tier's, when the intent's commitment reached one), or a metered offer's
            // `maxPerRequest`; agents check that they are equal.
            let price = terms.max_per_request();
            let offer = match Offer::sign(terms, &self.signing_key) {
                Ok(offer) => offer,
                Err(e) => return ServerError::internal(e),
            };
            match headers::encode(&offer) {
                Ok(value) => error = error.with_header(headers::X402_OFFER, value),
                Err(e) => return ServerError::internal(e),
            }
            accepts.push(PaymentRequirements {
                scheme: SCHEME_SESSION.to_owned(),
                network: self.config.network.clone(),
                amount: price.to_string(),
                asset: self.config.mint.to_string(),
                pay_to: self.address.to_string(),
                max_timeout_seconds: 60,
                extra: serde_json::to_value(SessionExtra {
                    offer,
                    sponsor: self.sponsor_info(),
                })
                .ok(),
            });
        }
        accepts.extend(self.exact_requirements(route));
        let required = PaymentRequired {
            x402_version: X402Version2,
            error: Some(match error.code {
                ErrorCode::PaymentRequired => error.message.clone(),
                code => code.as_str().to_owned(),
            }),
            resource: ResourceInfo {
                url: self.resource(path),
                description: Some(route.description.clone()),
                mime_type: Some(route.mime_type.clone()),
            },
            accepts,
            extensions: Some(self.extensions(route)),
        };
        match headers::encode(&required) {
            Ok(value) => error.with_header(headers::PAYMENT_REQUIRED, value),
            Err(e) => ServerError::internal(e),
        }
    }
}
