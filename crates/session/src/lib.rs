//! x402pp-session: the session rules of x402++ that the agent and the provider share, with no
//! I/O — no HTTP, no chain, no database, no clock. Both sides are shells over it.
//!
//! | rule | here | used by |
//! |---|---|---|
//! | the next voucher (seq + 1, accepted + price) | [`Progress::next_voucher`] | agent |
//! | the check of a voucher → a wire code | [`Progress::check_voucher`], [`VoucherRejection::code`] | provider |
//! | what a status is charged | [`status_of_http`], [`charged`], [`Progress::charge`] | both |
//! | the receipt body | [`SessionTerms::receipt_body`] | provider |
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
mod progress;
mod receipt;

pub use books::{Books, Window};
pub use charge::{charged, status_of_http};
pub use progress::{Charge, NextVoucher, Progress, VoucherRejection};
pub use receipt::{Exchange, ReceiptError, Served, SessionTerms};

/// Arithmetic that does not fit: a session at the edge of `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The named quantity would overflow.
    #[error("the session's {0} would overflow")]
    Overflow(&'static str),
}
