//! x402pp-protocol: the wire of x402++ session channels on Solana, with no HTTP and no RPC.
//!
//! - [`x402`]: the x402 v2 types (`PaymentRequired`, `PaymentRequirements`, `PaymentPayload`,
//!   facilitator requests and responses), byte-compatible with the official clients.
//! - [`bazaar`]: the x402 v2 `bazaar` discovery extension (route declarations, the catalog of
//!   `GET /discovery/resources`); [`payment_id`]: the x402 `payment-identifier` extension
//!   (idempotent `exact` retries).
//! - [`Intent`], [`Offer`], [`Voucher`], [`Receipt`], [`SessionSnapshot`]: the x402++ types;
//!   [`metering`]: their metered (version 3) form, priced by usage.
//! - [`headers`]: header names and the base64-JSON codec.
//! - [`messages`]: the signed binary layouts (shared with the escrow program), and [`crypto`]:
//!   ed25519 sign and `verify_strict`, request/response hashes.
//! - [`ReceiptChain`]: the hash chain that links a session's receipts.
//! - [`ErrorCode`] / [`ErrorBody`]: the snake_case wire errors; [`ProtocolError`] maps onto them.
//!
//! ```
//! use x402pp_protocol::{headers, Amount, Hash32, Pubkey, Voucher, VoucherTerms};
//! # let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! let terms = VoucherTerms {
//!     session: Pubkey([1; 32]),
//!     opened_slot: 42,
//!     seq: 1,
//!     cumulative: Amount(1_000),
//!     receipt_head: Hash32::ZERO,
//! };
//! let voucher = Voucher::sign(terms, &key);
//! let header = headers::encode(&voucher)?;
//! let back: Voucher = headers::decode(headers::X402_VOUCHER, header.as_bytes())?;
//! back.verify(&x402pp_protocol::crypto::pubkey_of(&key))?;
//! # Ok::<(), x402pp_protocol::ProtocolError>(())
//! ```

pub mod bazaar;
pub mod crypto;
pub mod encoding;
pub mod error;
pub mod headers;
pub mod intent;
pub mod metering;
pub mod network;
pub mod offer;
pub mod payment_id;
pub mod receipt;
pub mod session;
pub mod sponsor;
pub mod voucher;
pub mod x402;

/// The signed binary layouts, shared with the escrow program.
pub use x402pp_messages as messages;

pub use encoding::{Amount, EncodingError, Hash32, Id16, Pubkey, Signature};
pub use error::{ErrorBody, ErrorCode, ProtocolError};
pub use intent::{Intent, IntentSla};
pub use metering::{MeteringTerms, ReceiptUsage, METERED_VERSION};
pub use network::Network;
pub use offer::{AnyOfferMessage, Offer, OfferSla, OfferTerms, UptimePercent};
pub use receipt::{
    receipt_hash, AnyReceiptMessage, Receipt, ReceiptBody, ReceiptChain, ReceiptLink,
    SlaVerification,
};
pub use session::{SessionSnapshot, SessionState};
pub use voucher::{AnyVoucherMessage, Voucher, VoucherTerms};
pub use x402pp_messages::{Cut, Metering, ReceiptStatus, UnitKind};
