//! The escrow program's arithmetic, off chain: what vouchers may authorise, what a claim pays, and
//! until when the provider may claim.
//!
//! These functions are the program's (`programs/session-escrow/src/state/session.rs`) written a
//! second time for code that cannot link the program; `tests/program_equivalence.rs` holds the two
//! equal on random sessions. `None` is the program's `ArithmeticOverflow`.

/// A session's money, as the escrow account keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Books {
    /// Total deposited (open + top-ups).
    pub deposit: u64,
    /// Total paid to the provider by claims.
    pub claimed: u64,
    /// Total paid back to the agent by disputes (latency penalties and over-claim refunds).
    pub refunded: u64,
    /// The part of `refunded` that compensated over-claims.
    pub overclaim_refunded: u64,
}

impl Books {
    /// What vouchers may authorise in total: `deposit − refunded` (0 if refunds exceed it, which
    /// the program never lets happen).
    pub fn voucher_cap(&self) -> u64 {
        self.deposit.saturating_sub(self.refunded)
    }

    /// What the vault still holds under the books: `deposit − claimed − refunded`.
    pub fn remaining(&self) -> Option<u64> {
        self.deposit
            .checked_sub(self.claimed)?
            .checked_sub(self.refunded)
    }

    /// Latency penalties paid so far: the part of `refunded` that was not an over-claim refund.
    pub fn latency_penalties(&self) -> Option<u64> {
        self.refunded.checked_sub(self.overclaim_refunded)
    }

    /// What a claim of a voucher for `cumulative` pays now:
    /// `min(cumulative − latency_penalties, deposit − refunded) − claimed`, or 0 when nothing is
    /// left to pay (the program's `Session::payable`).
    pub fn claimable(&self, cumulative: u64) -> Option<u64> {
        let cap = self.deposit.checked_sub(self.refunded)?;
        let earned = cumulative.saturating_sub(self.latency_penalties()?);
        Some(earned.min(cap).saturating_sub(self.claimed))
    }
}

/// When a session ends and how long the provider may still claim after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds at which the session expires.
    pub expires_at: i64,
    /// Unix seconds of the agent's close request, when the session is closing.
    pub close_requested_at: Option<i64>,
    /// Seconds the provider may still claim after the end.
    pub grace_secs: u64,
}

impl Window {
    /// When the session stops: expiry, or the close request if that came first.
    pub fn end(&self) -> i64 {
        match self.close_requested_at {
            Some(requested) if requested < self.expires_at => requested,
            _ => self.expires_at,
        }
    }

    /// The last second at which the program accepts a claim: `end() + grace_secs`.
    pub fn claim_deadline(&self) -> Option<i64> {
        let grace = i64::try_from(self.grace_secs).ok()?;
        self.end().checked_add(grace)
    }

    /// Whether a claim sent at `now` (unix seconds) can still land. A deadline that overflows is
    /// one the program refuses every claim against.
    pub fn claim_open_at(&self, now: i64) -> bool {
        self.claim_deadline()
            .is_some_and(|deadline| now <= deadline)
    }

    /// Whether the session takes requests at `now`: not closing and not past expiry.
    pub fn serves_at(&self, now: i64) -> bool {
        self.close_requested_at.is_none() && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_deadline_is_the_earlier_of_expiry_and_close_request_plus_grace() {
        let mut window = Window {
            expires_at: 100,
            close_requested_at: None,
            grace_secs: 10,
        };
        assert_eq!(window.claim_deadline(), Some(110));
        window.close_requested_at = Some(40);
        assert_eq!(window.claim_deadline(), Some(50));
        window.close_requested_at = Some(150);
        assert_eq!(window.claim_deadline(), Some(110));
        assert!(window.claim_open_at(110));
        assert!(!window.claim_open_at(111));
    }

    #[test]
    fn a_grace_that_does_not_fit_has_no_deadline_and_no_claim() {
        let window = Window {
            expires_at: 1,
            close_requested_at: None,
            grace_secs: u64::MAX,
        };
        assert_eq!(window.claim_deadline(), None);
        assert!(!window.claim_open_at(0));
    }

    #[test]
    fn latency_penalties_come_out_of_the_claim_and_over_claim_refunds_only_lower_the_cap() {
        // (deposit, claimed, refunded, overclaim_refunded, cumulative) → claimable
        let table = [
            ((100, 0, 0, 0, 40), Some(40)),
            ((100, 0, 0, 0, 400), Some(100)),
            ((100, 30, 0, 0, 40), Some(10)),
            ((100, 30, 20, 0, 40), Some(0)), // 20 of penalties: earned 20 < claimed 30
            ((100, 0, 20, 20, 40), Some(40)), // an over-claim refund is not a penalty
            ((100, 0, 20, 20, 90), Some(80)), // ... but lowers the cap
            ((100, 0, 20, 30, 40), None),    // more over-claim refunds than refunds
            ((10, 0, 20, 0, 40), None),      // more refunds than deposit
        ];
        for ((deposit, claimed, refunded, overclaim_refunded, cumulative), expected) in table {
            let books = Books {
                deposit,
                claimed,
                refunded,
                overclaim_refunded,
            };
            assert_eq!(
                books.claimable(cumulative),
                expected,
                "{books:?} {cumulative}"
            );
        }
    }

    #[test]
    fn what_is_left_and_what_vouchers_may_authorise_follow_the_books() {
        let books = Books {
            deposit: 100,
            claimed: 30,
            refunded: 20,
            overclaim_refunded: 0,
        };
        assert_eq!(books.remaining(), Some(50));
        assert_eq!(books.voucher_cap(), 80);
        let broken = Books {
            claimed: 90,
            ..books
        };
        assert_eq!(broken.remaining(), None);
    }
}
