//! The intent the agent states on its first, unpaid request to a resource (`X-402-Intent`): what
//! it wants, the most it pays, the SLA it needs and the deposit it commits to. The offer that
//! answers it signs its id (`OfferTerms::answers`), and the agent accepts no other.

use x402pp_protocol::{Id16, Intent, IntentSla, UptimePercent};

use super::pay::header_value;
use super::*;

/// How long an intent asks for an offer, in seconds: enough for the 402 round trip (the
/// provider refuses an expired intent with `no_acceptable_offer`), short enough that a copy of
/// it is soon void.
pub(super) const INTENT_TTL_SECS: i64 = 60;

impl Agent {
    /// The deposit the agent commits to in its intents: the deposit it would make for
    /// `deposit_requests` requests at the budget's highest price, within `max_deposit`. It never
    /// deposits more on the offer that answers: the offer's `minDeposit` is at most the
    /// commitment (a tier the commitment reached) or the route's own minimum, and its price at
    /// most the budget's.
    pub(super) fn commitment(&self) -> u64 {
        let config = &self.inner.config;
        config
            .budget
            .max_price_per_request
            .saturating_mul(config.deposit_requests.max(1))
            .min(config.budget.max_deposit)
    }

    /// The intent of a new request, when the agent states one: intents on
    /// ([`AgentConfig::state_intent`]), sessions wanted ([`AgentConfig::prefer_session`]) and an
    /// asset to name (the first the agent pays in; without one nothing can be paid anyway).
    pub(super) fn intent(&self) -> Option<Intent> {
        let config = &self.inner.config;
        if !(config.state_intent && config.prefer_session) {
            return None;
        }
        let asset = self.inner.assets.first()?;
        let commitment = self.commitment();
        Some(Intent {
            intent_id: Id16::random(),
            capability: config.capability.clone(),
            max_price_per_request: Amount(config.budget.max_price_per_request),
            asset: proto_key(asset),
            network: self.inner.network.clone(),
            sla: config.intent_sla.unwrap_or(IntentSla {
                max_latency_ms: config.budget.max_latency_ms,
                min_uptime_percent: UptimePercent::default(),
            }),
            agent: proto_key(&config.keypair.pubkey()),
            expires_at: now_secs().saturating_add(INTENT_TTL_SECS),
            commitment: (commitment > 0).then_some(Amount(commitment)),
        })
    }

    /// States the agent's intent on the unpaid `request` and returns the intent an offer must
    /// answer: the agent's own, or the one the caller already put on the request (sent as is),
    /// or none.
    pub(super) fn state_intent(
        &self,
        request: &mut Request,
    ) -> Result<Option<Intent>, ClientError> {
        if let Some(value) = request.headers().get(headers::X402_INTENT) {
            // The caller stated its own intent: the offer must answer that one. One that does
            // not decode is the provider's to refuse (`malformed_request`).
            return Ok(headers::decode::<Intent>(headers::X402_INTENT, value.as_bytes()).ok());
        }
        let Some(intent) = self.intent() else {
            return Ok(None);
        };
        request.headers_mut().insert(
            headers::X402_INTENT,
            header_value(&headers::encode(&intent)?)?,
        );
        Ok(Some(intent))
    }
}
