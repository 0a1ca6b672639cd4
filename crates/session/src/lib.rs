//! x402pp-session: the session rules of x402++ that the agent and the provider share, with no
//! I/O — no HTTP, no chain, no database, no clock. Both sides are shells over it.
//!
//! | rule | here | used by |
//! |---|---|---|
//! | the next voucher (seq + 1, accepted + price; metered: accepted + hold) | [`Progress::next_voucher`], [`Progress::next_metered_voucher`], [`Progress::next_voucher_at`] | agent |
//! | the check of a voucher → a wire code | [`Progress::check_voucher`], [`VoucherRejection::code`] | provider |
//! | what a status (metered: its units) is charged | [`status_of_http`], [`charged`], [`Progress::charge`], [`Pricing::charge`], [`charge`] | both |
//! | the receipt body | [`SessionTerms::receipt_body`], [`SessionTerms::metered_receipt_body`] | provider |
//! | the check of a receipt → a typed error | [`SessionTerms::check_receipt`], [`ReceiptError`] | agent |
//! | what settlement pays, and the deadlines | [`Books::payout`], [`Window::claim_deadline`], [`Window::dispute_deadline`] | provider's settler, ledger, agent |
//!
//! [`Books`] and [`Window`] are the escrow program's own arithmetic (`Session::payout`,
//! `Session::claim_deadline`, `Session::dispute_deadline`); a property test holds them equal to
//! the program's functions. The
//! provider's SQL triggers (crates/server/migrations) stay as the durable backstop of the voucher
//! rule, and the program as the final one of the money rules.
//!
//! ```
//! use x402pp_session::{Progress, VoucherRejection};
//! let progress = Progress::default();
//! let next = progress.next_voucher(1_000)?;
//! assert_eq!((next.seq, next.cumulative), (1, 1_000));
//! assert_eq!(progress.check_voucher(next, 1_000, 5_000), Ok(()));
//! assert!(matches!(
//!     progress.check_voucher(next, 1_000, 500),
//!     Err(VoucherRejection::InsufficientDeposit { top_up: 500, .. })
//! ));
//! # Ok::<(), x402pp_session::SessionError>(())
//! ```

mod books;
mod charge;
mod pricing;
mod progress;
mod receipt;

pub use books::{Books, Window};
pub use charge::{charged, status_of_http};
pub use pricing::{Pricing, Units};
pub use progress::{Charge, NextVoucher, Progress, VoucherRejection};
pub use receipt::{Exchange, ReceiptError, Served, ServedUsage, SessionTerms};
/// The metered charge rule (one definition, shared with the escrow program).
pub use x402pp_protocol::messages::charge;
pub use x402pp_protocol::{Cut, Metering, UnitKind};

/// A session's arithmetic or pricing does not fit the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The named quantity would overflow.
    #[error("the session's {0} would overflow")]
    Overflow(&'static str),
    /// A fixed-price receipt asked of a metered session, or a metered one of a fixed-price
    /// session.
    #[error("the session is {}: its receipts are version {}", if *metered { "metered" } else { "fixed-price" }, if *metered { 3 } else { 2 })]
    WrongPricing {
        /// Whether the session is metered.
        metered: bool,
    },
}
