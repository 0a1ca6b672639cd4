//! The agent's intent (`X-402-Intent`): what it wants, the most it pays, the SLA it needs.

use serde::{Deserialize, Serialize};

use crate::encoding::{Amount, Id16, Pubkey};
use crate::network::Network;
use crate::offer::UptimePercent;

/// SLA minimums an agent asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntentSla {
    /// The slowest response the agent accepts, in milliseconds.
    pub max_latency_ms: u32,
    /// The lowest uptime the agent accepts.
    pub min_uptime_percent: UptimePercent,
}

/// What an agent wants and the most it will pay. Not signed: it only shapes the offer, and the
/// offer is what gets signed and enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Random id, echoed by the offer that answers it.
    pub intent_id: Id16,
    /// What the agent wants done (free text, e.g. `inference`).
    pub capability: String,
    /// The most the agent pays per request.
    pub max_price_per_request: Amount,
    /// The mint the agent pays in.
    pub asset: Pubkey,
    /// The network the agent pays on.
    pub network: Network,
    /// SLA minimums.
    pub sla: IntentSla,
    /// The agent's key.
    pub agent: Pubkey,
    /// Unix seconds after which the intent is void.
    pub expires_at: i64,
    /// The deposit the agent is willing to lock in a session (atomic units of `asset`), when it
    /// says: a route with commitment price tiers answers with the cheapest tier this reaches
    /// (its price and its `minDeposit`, which the escrow then enforces). Absent (older agents):
    /// the route's base terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<Amount>,
}
