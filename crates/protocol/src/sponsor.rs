//! Fee sponsorship of session transactions: an agent that holds no SOL has a sponsor (the
//! provider, or a facilitator) pay the fees and rent of its `open_session`, `top_up`,
//! `request_close`, `dispute` and `finalize`; the agent signs only for its tokens.
//!
//! The provider names its sponsor in the session option's `extra.sponsor` ([`SponsorInfo`]).
//! The agent builds the transaction with `feePayer` as fee payer (and rent payer), signs it and
//! `POST`s a [`SponsorRequest`] to `url`; the sponsor checks, co-signs, sends and confirms it and
//! answers a [`SponsorResponse`], or an [`ErrorBody`](crate::ErrorBody) `sponsor_refused`
//! (403), `rate_limited` (429), `malformed_request` (400) or `chain_unavailable` (503).

use serde::{Deserialize, Serialize};

use crate::encoding::Pubkey;

/// Where a session's transactions can be sponsored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SponsorInfo {
    /// The sponsor endpoint (absolute URL).
    pub url: String,
    /// The sponsor's key: the transaction's fee payer and the session's rent payer.
    pub fee_payer: Pubkey,
}

/// The body of a sponsor request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SponsorRequest {
    /// The transaction, base64 of its bincode serialization, signed by everyone but the sponsor.
    pub transaction: String,
}

/// The answer to a sponsored transaction that landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SponsorResponse {
    /// The confirmed transaction's signature (base58).
    pub signature: String,
    /// The escrow instruction it carried (`open_session`, `top_up`, ...).
    pub instruction: String,
}
