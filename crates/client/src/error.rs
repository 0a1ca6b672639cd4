//! Errors of the agent.

use x402pp_protocol::ProtocolError;
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
    /// A provider receipt failed verification (signature, hashes, chain link or amount). The
    /// session is abandoned: no further voucher is signed on it.
    #[error("invalid receipt: {0}")]
    ReceiptInvalid(String),
    /// The provider refused the payment.
    #[error("payment refused ({status} {code}): {message}")]
    PaymentRefused {
        /// HTTP status.
        status: u16,
        /// The x402++ error code (`insufficient_deposit`, `invalid_voucher`, ...).
        code: String,
        /// The provider's message.
        message: String,
    },
    /// Chain access failed (RPC down, transaction rejected or failed).
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// The HTTP request failed (connection, timeout, body).
    #[error("http: {0}")]
    Http(String),
    /// Protocol data could not be encoded or decoded.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The local store could not be read or written.
    #[error("store: {0}")]
    Store(String),
    /// The request body is a stream: it cannot be cloned to retry after a 402, nor hashed.
    #[error("the request body is a stream; paid requests need a buffered body")]
    NonCloneableRequest,
    /// No session with this address is known to the agent.
    #[error("unknown session {0}")]
    UnknownSession(String),
}

impl From<reqwest::Error> for ClientError {
    fn from(error: reqwest::Error) -> Self {
        Self::Http(error.to_string())
    }
}
