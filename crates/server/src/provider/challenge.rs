//! The 402 challenge: `PAYMENT-REQUIRED` with the session and `exact` options and a freshly signed
//! `X-402-Offer`.

use axum::http::HeaderMap;
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
    pub(super) fn exact_requirements(&self, route: &RoutePrice) -> Option<PaymentRequirements> {
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
    pub(super) fn challenge(
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
}
