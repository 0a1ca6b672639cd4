//! The escrow program's arithmetic, off chain: what the provider is paid at settlement, and the
//! deadlines of a session's end.
//!
//! These functions are the program's (`programs/session-escrow/src/state/session.rs`) written a
//! second time for code that cannot link the program; `tests/program_equivalence.rs` holds the two
//! equal on random sessions. `None` is the program's `ArithmeticOverflow`.

/// A session's money, as the escrow account keeps it (trust v2: nothing leaves the vault before
/// settlement, so the books are what was promised and what was proven, not what was paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Books {
    /// Total deposited (open + top-ups).
    pub deposit: u64,
    /// Cumulative of the best voucher the provider claimed.
    pub settled: u64,
    /// seq of that voucher (0 before the first claim).
    pub settled_seq: u64,
    /// Latency penalties recorded by disputes.
    pub penalties: u64,
    /// The lowest cumulative an over-claim receipt showed (`u64::MAX`: none).
    pub overclaim_cap: u64,
    /// seq of that receipt (`u64::MAX`: none).
    pub overclaim_cap_seq: u64,
}

impl Default for Books {
    fn default() -> Self {
        Self {
            deposit: 0,
            settled: 0,
            settled_seq: 0,
            penalties: 0,
            overclaim_cap: u64::MAX,
            overclaim_cap_seq: u64::MAX,
        }
    }
}

impl Books {
    /// What vouchers may authorise in total: the deposit (penalties are paid back at
    /// settlement, they do not make the deposit larger).
    pub fn voucher_cap(&self) -> u64 {
        self.deposit
    }

    /// What the provider has earned if the best voucher it holds is `cumulative` at `seq`
    /// (claimed or not): the voucher capped by the deposit and by an over-claim receipt at or
    /// after it (the program's `Session::earned` once that voucher is settled).
    pub fn earned(&self, seq: u64, cumulative: u64) -> u64 {
        let (seq, cumulative) = if seq > self.settled_seq {
            (seq, cumulative)
        } else {
            (self.settled_seq, self.settled)
        };
        let earned = cumulative.min(self.deposit);
        if seq <= self.overclaim_cap_seq {
            earned.min(self.overclaim_cap)
        } else {
            earned
        }
    }

    /// The provider's payout at settlement with the best voucher `(seq, cumulative)`:
    /// `earned − penalties`, never below 0 (the program's `Session::payout`).
    pub fn payout(&self, seq: u64, cumulative: u64) -> u64 {
        let earned = self.earned(seq, cumulative);
        earned.saturating_sub(self.penalties.min(earned))
    }
}

/// When a session ends, until when the provider may claim and the agent dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Unix seconds at which the session expires.
    pub expires_at: i64,
    /// Unix seconds at which closing started (the agent's close request or the provider's
    /// close), when the session is closing.
    pub closing_started_at: Option<i64>,
    /// Seconds the provider may still claim after the end, and the agent dispute after that.
    pub grace_secs: u64,
}

impl Window {
    /// When the session stops: expiry, or the start of closing if that came first.
    pub fn end(&self) -> i64 {
        match self.closing_started_at {
            Some(started) if started < self.expires_at => started,
            _ => self.expires_at,
        }
    }

    /// The last second at which the program accepts a claim: `end() + grace_secs`.
    pub fn claim_deadline(&self) -> Option<i64> {
        let grace = i64::try_from(self.grace_secs).ok()?;
        self.end().checked_add(grace)
    }

    /// The last second at which the program accepts a dispute: `end() + 2 × grace_secs`;
    /// `finalize` is allowed after it.
    pub fn dispute_deadline(&self) -> Option<i64> {
        let grace = i64::try_from(self.grace_secs).ok()?;
        self.claim_deadline()?.checked_add(grace)
    }

    /// Whether a claim sent at `now` (unix seconds) can still land. A deadline that overflows is
    /// one the program refuses every claim against.
    pub fn claim_open_at(&self, now: i64) -> bool {
        self.claim_deadline()
            .is_some_and(|deadline| now <= deadline)
    }

    /// Whether `finalize` can land at `now`.
    pub fn finalize_open_at(&self, now: i64) -> bool {
        self.dispute_deadline()
            .is_some_and(|deadline| now > deadline)
    }

    /// Whether the session takes requests at `now`: not closing and not past expiry.
    pub fn serves_at(&self, now: i64) -> bool {
        self.closing_started_at.is_none() && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_run_from_the_earlier_of_expiry_and_closing() {
        let mut window = Window {
            expires_at: 100,
            closing_started_at: None,
            grace_secs: 10,
        };
        assert_eq!(window.claim_deadline(), Some(110));
        assert_eq!(window.dispute_deadline(), Some(120));
        window.closing_started_at = Some(40);
        assert_eq!(window.claim_deadline(), Some(50));
        assert_eq!(window.dispute_deadline(), Some(60));
        assert!(!window.finalize_open_at(60));
        assert!(window.finalize_open_at(61));
        window.closing_started_at = Some(150);
        assert_eq!(window.claim_deadline(), Some(110));
        assert!(window.claim_open_at(110));
        assert!(!window.claim_open_at(111));
    }

    #[test]
    fn a_grace_that_does_not_fit_has_no_deadline_no_claim_and_no_finalize() {
        let window = Window {
            expires_at: 1,
            closing_started_at: None,
            grace_secs: u64::MAX,
        };
        assert_eq!(window.claim_deadline(), None);
        assert!(!window.claim_open_at(0));
        assert!(!window.finalize_open_at(i64::MAX));
    }

    #[test]
    fn the_payout_is_the_best_voucher_capped_less_the_penalties() {
        let mut books = Books {
            deposit: 100,
            ..Books::default()
        };
        assert_eq!(books.payout(7, 70), 70);
        assert_eq!(books.payout(7, 700), 100, "capped by the deposit");
        books.penalties = 15;
        assert_eq!(books.payout(7, 70), 55);
        books.settled = 60;
        books.settled_seq = 6;
        assert_eq!(
            books.payout(0, 0),
            45,
            "the settled voucher when none is newer"
        );
        books.overclaim_cap = 50;
        books.overclaim_cap_seq = 6;
        assert_eq!(books.payout(0, 0), 35);
        assert_eq!(books.payout(7, 70), 55, "a later voucher lifts the cap");
        books.penalties = 1_000;
        assert_eq!(books.payout(7, 70), 0);
    }
}
