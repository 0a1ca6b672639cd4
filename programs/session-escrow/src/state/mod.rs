//! Accounts owned by the escrow program.

mod dispute;
mod session;

pub use dispute::Dispute;
pub use session::{Payout, Session, SessionStatus, FIXED_PRICE_TERMS, METERED_TERMS};
