//! Errors of the agent.

use std::path::PathBuf;

use x402pp_protocol::{ErrorCode, ProtocolError};
use x402pp_session::ReceiptError;
use x402pp_solana::ChainError;

/// Everything that can go wrong paying a request or managing a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The route costs more than the budget allows (price, or the minimum deposit); nothing was
    /// paid.
    #[error("over budget: {0}")]
    BudgetExceeded(String),
    /// The provider's offer or payment requirements are unusable (bad signature, wrong network,
    /// asset or escrow program, expired, SLA weaker than the budget demands, no known scheme).
    #[error("offer rejected: {0}")]
    OfferRejected(String),
    /// The offer or the `exact` requirement is in an asset this agent does not pay in
    /// ([`AgentConfig::assets`](crate::AgentConfig::assets)): the budget's amounts are in the
    /// agent's assets, so a price in another mint means nothing to it. Nothing was paid.
    #[error(
        "offer rejected: the {scheme} payment is in {asset}, which this agent does not pay in \
         (it pays in: {accepted}; set AgentConfig::assets or --asset)"
    )]
    AssetRefused {
        /// `session` or `exact`.
        scheme: &'static str,
        /// The mint the provider named.
        asset: String,
        /// The mints the agent pays in, comma-separated (`none` when none is configured and the
        /// network has no known USDC).
        accepted: String,
    },
    /// A provider receipt failed verification (signature, hashes, chain link or amount). The
    /// session is abandoned: no further voucher is signed on it.
    #[error("invalid receipt: {0}")]
    ReceiptInvalid(#[from] ReceiptError),
    /// A session-paid answer that may have been served (a 2xx or 3xx status) came without an
    /// `X-402-Receipt`: nothing proves what it is, so its body is not returned. Every session
    /// answer must carry a receipt; a proxy or a provider that strips it gets the session
    /// abandoned (no further voucher is signed on it).
    #[error(
        "the provider answered {status} to voucher {seq} of session {session} without an \
         X-402-Receipt: the answer is not accepted and the session is abandoned"
    )]
    ReceiptMissing {
        /// The session the voucher was for.
        session: solana_sdk::pubkey::Pubkey,
        /// The voucher's seq.
        seq: u64,
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The provider answered `409 voucher_conflict` with a receipt for a second voucher within
    /// one request: at most one lost answer is recovered per request (a voucher signed for the
    /// first time in this request cannot have been served before). The session is abandoned.
    #[error(
        "the provider answered voucher {seq} of session {session} with 409 voucher_conflict \
         after this request had already recovered one receipt: refusing to sign more vouchers; \
         the session is abandoned"
    )]
    RepeatedConflict {
        /// The session.
        session: solana_sdk::pubkey::Pubkey,
        /// The seq of the second conflicting voucher.
        seq: u64,
    },
    /// A streamed session answer lost its receipt event (the agent stopped reading, the
    /// connection broke, or the stream ended without it) and resending its voucher did not
    /// produce the receipt. The receipt stays owed: the agent asks again before the session's
    /// next voucher ([`Agent::recover_receipts`](crate::Agent::recover_receipts)).
    #[error("no receipt for the streamed answer to voucher {seq} of session {session}: {reason}")]
    MissingStreamReceipt {
        /// The session.
        session: solana_sdk::pubkey::Pubkey,
        /// The voucher's seq.
        seq: u64,
        /// Why (the stream's end, and what the resend answered).
        reason: String,
    },
    /// The wallet does not hold the tokens a deposit or top-up needs; nothing was sent.
    #[error("the wallet holds {available} of {mint}; {needed} are needed")]
    InsufficientFunds {
        /// The mint.
        mint: solana_sdk::pubkey::Pubkey,
        /// Atomic units needed.
        needed: u64,
        /// Atomic units the wallet's token account holds.
        available: u64,
    },
    /// The provider refused the payment.
    #[error("payment refused ({status} {code}): {message}")]
    PaymentRefused {
        /// HTTP status.
        status: u16,
        /// Why, as the provider (or its facilitator) coded it.
        code: RefusalCode,
        /// The provider's message.
        message: String,
    },
    /// The session's fee sponsor refused to pay for a transaction (not one it sponsors, over
    /// its rate or limits, or one that would fail); nothing was sent.
    #[error("the fee sponsor refused ({status} {code}): {message}")]
    SponsorRefused {
        /// HTTP status.
        status: u16,
        /// The sponsor's code (`sponsor_refused`, `rate_limited`, ...).
        code: RefusalCode,
        /// The sponsor's message.
        message: String,
    },
    /// Chain access failed (RPC down, transaction rejected or failed).
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The HTTP request failed (connection, timeout, body, or a middleware of the chain).
    #[error("http: {0}")]
    Http(#[from] reqwest_middleware::Error),
    /// A header value the agent built is not a valid HTTP header value.
    #[error("invalid header value: {0}")]
    InvalidHeader(#[from] reqwest::header::InvalidHeaderValue),
    /// Protocol data could not be encoded or decoded.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The local store could not be read or written.
    #[error("store {}: {source}", path.display())]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: StoreError,
    },
    /// The request body is a stream: it cannot be cloned to retry after a 402, nor hashed.
    #[error("the request body is a stream; paid requests need a buffered body")]
    NonCloneableRequest,
    /// The agent holds no receipt with this seq on the session (nothing to dispute).
    #[error("no receipt {0} held")]
    NoSuchReceipt(u64),
    /// No session with this address is known to the agent.
    #[error("unknown session {0}")]
    UnknownSession(solana_sdk::pubkey::Pubkey),
}

/// What failed in the agent's store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file's JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The code of a refused payment: one of x402++'s wire codes, or a code this agent does not know
/// (an x402 facilitator's `errorReason` for `exact`, or a newer provider's code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalCode {
    /// An x402++ wire code.
    Known(ErrorCode),
    /// Any other code, as sent.
    Other(String),
}

impl RefusalCode {
    /// Reads a code as sent on the wire.
    pub fn parse(code: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(code.to_owned()))
            .map_or_else(|_| Self::Other(code.to_owned()), Self::Known)
    }

    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(code) => code.as_str(),
            Self::Other(code) => code,
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(error: reqwest::Error) -> Self {
        Self::Http(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_read_as_typed_codes_when_known() {
        assert_eq!(
            RefusalCode::parse("insufficient_deposit"),
            RefusalCode::Known(ErrorCode::InsufficientDeposit)
        );
        assert_eq!(
            RefusalCode::parse("duplicate_settlement"),
            RefusalCode::Other("duplicate_settlement".into())
        );
        assert_eq!(
            RefusalCode::parse("session_closed").to_string(),
            "session_closed"
        );
    }
}
