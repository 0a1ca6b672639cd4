//! Where a session's requests stand, and the voucher rules on it: which voucher comes next (the
//! agent signs it) and whether a voucher is that one (the provider checks it).
//!
//! A fixed-price session's voucher adds the price to what was accepted. A metered session's
//! voucher (v3) states `accepted` (the last receipt's cumulative) and adds a **hold** the agent
//! chooses, `base ≤ hold ≤ max_per_request`: the most the request may cost.

use x402pp_protocol::{ErrorCode, Hash32, ReceiptStatus};

use crate::charge::charged;
use crate::pricing::Pricing;
use crate::SessionError;

/// Where a session's requests stand, as both sides track it.
///
/// The provider moves `last_seq` when it accepts a voucher and the rest when it signs the
/// request's receipt; the agent moves all of it when it accepts a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// seq of the last voucher accepted (0 before the first).
    pub last_seq: u64,
    /// Cumulative charged by `ok` receipts: what the next voucher adds the price to.
    pub accepted: u64,
    /// Receipts signed so far (the seq of the last one). Below `last_seq` while the request of
    /// the last voucher is being served.
    pub receipts: u64,
    /// Hash of the last receipt (zeros before the first).
    pub head: Hash32,
}

/// The voucher that pays the next request: its seq, cumulative amount and the receipt head it
/// commits to (and for a metered session the accepted amount it states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextVoucher {
    /// `last_seq + 1`.
    pub seq: u64,
    /// `accepted + price` (metered: `accepted + hold`).
    pub cumulative: u64,
    /// Hash of the last receipt accepted (zeros before the first).
    pub receipt_head: Hash32,
    /// The accepted amount a metered (v3) voucher states: the last receipt's cumulative charged.
    /// `None` for a fixed-price (v2) voucher.
    pub accepted: Option<u64>,
}

impl NextVoucher {
    /// The hold of a metered voucher: `cumulative − accepted` (`None` for a v2 voucher, or when
    /// `accepted` exceeds `cumulative`).
    pub fn hold(&self) -> Option<u64> {
        self.accepted
            .and_then(|accepted| self.cumulative.checked_sub(accepted))
    }
}

/// Why a provider refuses a voucher (before it runs anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VoucherRejection {
    /// seq 0 is never a voucher: the first request carries seq 1.
    #[error("voucher seq must be at least 1")]
    ZeroSeq,
    /// The seq was accepted before (a replay, or a resend after a lost answer).
    #[error("voucher seq {seq} was already used")]
    AlreadyUsed {
        /// The voucher's seq.
        seq: u64,
    },
    /// The previous request of the session has no receipt yet.
    #[error("request {seq} of this session is still in flight")]
    PreviousInFlight {
        /// The seq still being served.
        seq: u64,
    },
    /// The seq skips ahead.
    #[error("voucher seq must be {expected}, got {got}")]
    WrongSeq {
        /// `last_seq + 1`.
        expected: u64,
        /// The voucher's seq.
        got: u64,
    },
    /// The voucher commits to a receipt head other than the last receipt signed: the agent has
    /// not accepted that receipt (or the voucher is for another point of the chain).
    #[error("voucher receipt head {got} is not the last receipt {expected}")]
    WrongReceiptHead {
        /// The hash of the session's last receipt.
        expected: Hash32,
        /// The voucher's head.
        got: Hash32,
    },
    /// The cumulative amount is not the accepted amount plus the price.
    #[error(
        "voucher cumulative must be {expected} (accepted {accepted} + price {price}), got {got}"
    )]
    WrongCumulative {
        /// `accepted + price`.
        expected: u64,
        /// What the provider accepted so far.
        accepted: u64,
        /// The session's price.
        price: u64,
        /// The voucher's cumulative.
        got: u64,
    },
    /// A metered voucher does not state the last receipt's cumulative as `accepted`.
    #[error("voucher accepted must be {expected} (the last receipt's cumulative), got {got}")]
    WrongAccepted {
        /// The cumulative charged of the session's last receipt.
        expected: u64,
        /// The voucher's accepted.
        got: u64,
    },
    /// A metered voucher accepts more than it authorises (`accepted > cumulative`).
    #[error("voucher accepted {accepted} exceeds its cumulative {cumulative}")]
    AcceptedAboveCumulative {
        /// The voucher's accepted.
        accepted: u64,
        /// The voucher's cumulative.
        cumulative: u64,
    },
    /// A fixed-price (v2) voucher on a metered session, or a metered (v3) one on a fixed-price
    /// session.
    #[error("a {} voucher on a {} session", if *metered_session { "fixed-price" } else { "metered" }, if *metered_session { "metered" } else { "fixed-price" })]
    WrongVersion {
        /// Whether the session is metered.
        metered_session: bool,
    },
    /// A metered voucher's hold (`cumulative − accepted`) is below the base or above the
    /// maximum per request.
    #[error(
        "hold {hold} is not between the base {base} and the maximum per request {max_per_request}"
    )]
    InvalidHold {
        /// The session's base.
        base: u64,
        /// The session's maximum per request.
        max_per_request: u64,
        /// The voucher's hold.
        hold: u64,
    },
    /// The deposit does not cover the voucher.
    #[error("the deposit left ({cap}) does not cover {required}; top up at least {top_up}")]
    InsufficientDeposit {
        /// What vouchers may authorise: the deposit ([`crate::Books::voucher_cap`]).
        cap: u64,
        /// The voucher's cumulative.
        required: u64,
        /// `required − cap`.
        top_up: u64,
    },
    /// The next cumulative amount or seq does not fit in a u64.
    #[error(transparent)]
    Arithmetic(#[from] SessionError),
}

impl VoucherRejection {
    /// The wire code a provider answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadyUsed { .. } | Self::PreviousInFlight { .. } => ErrorCode::VoucherConflict,
            Self::ZeroSeq
            | Self::WrongSeq { .. }
            | Self::WrongReceiptHead { .. }
            | Self::WrongCumulative { .. }
            | Self::WrongAccepted { .. }
            | Self::AcceptedAboveCumulative { .. }
            | Self::WrongVersion { .. } => ErrorCode::InvalidVoucher,
            Self::InvalidHold { .. } => ErrorCode::InvalidHold,
            Self::InsufficientDeposit { .. } => ErrorCode::InsufficientDeposit,
            Self::Arithmetic(_) => ErrorCode::InternalError,
        }
    }
}

impl Progress {
    /// Whether a request has an accepted voucher but no receipt yet.
    pub fn in_flight(&self) -> bool {
        self.receipts < self.last_seq
    }

    /// The voucher that pays the next request at `price`. It is covered when its cumulative is
    /// at most the deposit (`Books::voucher_cap`), see [`Self::check_cover`].
    pub fn next_voucher(&self, price: u64) -> Result<NextVoucher, SessionError> {
        Ok(NextVoucher {
            seq: self
                .last_seq
                .checked_add(1)
                .ok_or(SessionError::Overflow("seq"))?,
            cumulative: self
                .accepted
                .checked_add(price)
                .ok_or(SessionError::Overflow("cumulative"))?,
            receipt_head: self.head,
            accepted: None,
        })
    }

    /// The metered (v3) voucher that pays the next request with `hold`: it states `accepted`
    /// (the last receipt's cumulative) and authorises `accepted + hold`. The deposit must cover
    /// that whole sum, not only what the request will likely cost.
    pub fn next_metered_voucher(&self, hold: u64) -> Result<NextVoucher, SessionError> {
        Ok(NextVoucher {
            accepted: Some(self.accepted),
            ..self.next_voucher(hold)?
        })
    }

    /// The voucher that pays the next request under `pricing`: the fixed price's, or a metered
    /// voucher with `hold` (by default the maximum per request), which must be within the
    /// pricing's range ([`VoucherRejection::InvalidHold`]).
    pub fn next_voucher_at(
        &self,
        pricing: Pricing,
        hold: Option<u64>,
    ) -> Result<NextVoucher, VoucherRejection> {
        match pricing {
            Pricing::Fixed { price } => Ok(self.next_voucher(price)?),
            Pricing::Metered { .. } => {
                let hold = hold.unwrap_or_else(|| pricing.max_per_request());
                pricing.check_hold(hold)?;
                Ok(self.next_metered_voucher(hold)?)
            }
        }
    }

    /// Whether a voucher for `cumulative` is within `cap` (the deposit).
    pub fn check_cover(cumulative: u64, cap: u64) -> Result<(), VoucherRejection> {
        match cumulative.checked_sub(cap) {
            Some(top_up) if top_up > 0 => Err(VoucherRejection::InsufficientDeposit {
                cap,
                required: cumulative,
                top_up,
            }),
            _ => Ok(()),
        }
    }

    /// The provider's check of a voucher at `pricing` (a fixed price, as a `u64`, or
    /// [`Pricing::Metered`]) against a deposit cap: it must be exactly [`Self::next_voucher`]
    /// (seq, cumulative, and the receipt head it commits to), no request may be in flight, and
    /// the deposit must cover it. The signature and the session's incarnation are checked
    /// separately (they need the session account).
    ///
    /// A metered session takes only metered vouchers (and a fixed-price one only v2 vouchers):
    /// `accepted` must be the last receipt's cumulative, the hold `cumulative − accepted` within
    /// `base ..= max_per_request`, and the deposit must cover `accepted + hold`.
    pub fn check_voucher(
        &self,
        voucher: NextVoucher,
        pricing: impl Into<Pricing>,
        cap: u64,
    ) -> Result<(), VoucherRejection> {
        match (pricing.into(), voucher.accepted) {
            (Pricing::Fixed { price }, None) => self.check_fixed_voucher(voucher, price, cap),
            (pricing @ Pricing::Metered { .. }, Some(accepted)) => {
                self.check_metered_voucher(voucher, accepted, pricing, cap)
            }
            (pricing, _) => {
                self.check_place(&voucher)?;
                Err(VoucherRejection::WrongVersion {
                    metered_session: pricing.is_metered(),
                })
            }
        }
    }

    /// The seq and receipt-head rules every voucher follows.
    fn check_place(&self, voucher: &NextVoucher) -> Result<(), VoucherRejection> {
        let seq = voucher.seq;
        if seq == 0 {
            return Err(VoucherRejection::ZeroSeq);
        }
        if seq <= self.last_seq {
            return Err(VoucherRejection::AlreadyUsed { seq });
        }
        if self.in_flight() {
            return Err(VoucherRejection::PreviousInFlight { seq: self.last_seq });
        }
        let expected = self
            .last_seq
            .checked_add(1)
            .ok_or(SessionError::Overflow("seq"))?;
        if seq != expected {
            return Err(VoucherRejection::WrongSeq { expected, got: seq });
        }
        if voucher.receipt_head != self.head {
            return Err(VoucherRejection::WrongReceiptHead {
                expected: self.head,
                got: voucher.receipt_head,
            });
        }
        Ok(())
    }

    fn check_metered_voucher(
        &self,
        voucher: NextVoucher,
        accepted: u64,
        pricing: Pricing,
        cap: u64,
    ) -> Result<(), VoucherRejection> {
        self.check_place(&voucher)?;
        if accepted != self.accepted {
            return Err(VoucherRejection::WrongAccepted {
                expected: self.accepted,
                got: accepted,
            });
        }
        let hold = voucher.cumulative.checked_sub(accepted).ok_or(
            VoucherRejection::AcceptedAboveCumulative {
                accepted,
                cumulative: voucher.cumulative,
            },
        )?;
        pricing.check_hold(hold)?;
        Self::check_cover(voucher.cumulative, cap)
    }

    /// The v2 rule, unchanged.
    fn check_fixed_voucher(
        &self,
        voucher: NextVoucher,
        price: u64,
        cap: u64,
    ) -> Result<(), VoucherRejection> {
        let NextVoucher {
            seq,
            cumulative,
            receipt_head,
            accepted: _,
        } = voucher;
        if seq == 0 {
            return Err(VoucherRejection::ZeroSeq);
        }
        if seq <= self.last_seq {
            return Err(VoucherRejection::AlreadyUsed { seq });
        }
        if self.in_flight() {
            return Err(VoucherRejection::PreviousInFlight { seq: self.last_seq });
        }
        let next = self.next_voucher(price)?;
        if seq != next.seq {
            return Err(VoucherRejection::WrongSeq {
                expected: next.seq,
                got: seq,
            });
        }
        if receipt_head != next.receipt_head {
            return Err(VoucherRejection::WrongReceiptHead {
                expected: next.receipt_head,
                got: receipt_head,
            });
        }
        if cumulative != next.cumulative {
            return Err(VoucherRejection::WrongCumulative {
                expected: next.cumulative,
                accepted: self.accepted,
                price,
                got: cumulative,
            });
        }
        Self::check_cover(cumulative, cap)
    }

    /// Records that the voucher `seq` was accepted (its request is now in flight).
    pub fn accept(&mut self, seq: u64) {
        self.last_seq = seq;
    }

    /// What a request ending with `status` at `price` charges, and the cumulative after it.
    pub fn charge(&self, status: ReceiptStatus, price: u64) -> Result<Charge, SessionError> {
        let amount = charged(status, price);
        Ok(Charge {
            amount,
            cumulative: self
                .accepted
                .checked_add(amount)
                .ok_or(SessionError::Overflow("cumulative"))?,
        })
    }

    /// Moves past a receipt (its seq, cumulative and hash): what both sides do once a receipt is
    /// signed or accepted.
    pub fn record(&mut self, seq: u64, cumulative_charged: u64, receipt_hash: Hash32) {
        self.last_seq = self.last_seq.max(seq);
        self.receipts = seq;
        self.accepted = cumulative_charged;
        self.head = receipt_hash;
    }
}

/// What one request is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Charged for this request.
    pub amount: u64,
    /// Charged on the session up to and including this request.
    pub cumulative: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(last_seq: u64, accepted: u64, receipts: u64) -> Progress {
        Progress {
            last_seq,
            accepted,
            receipts,
            head: Hash32::ZERO,
        }
    }

    #[test]
    fn each_voucher_is_checked_against_the_one_rule() {
        use VoucherRejection as R;
        let price = 10;
        let cap = 50;
        // (progress, seq, cumulative) → result
        let table: [(Progress, u64, u64, Result<(), VoucherRejection>); 10] = [
            (at(0, 0, 0), 1, 10, Ok(())),
            (at(3, 30, 3), 4, 40, Ok(())),
            (at(4, 30, 4), 5, 40, Ok(())), // request 4 failed: charged nothing
            (at(0, 0, 0), 0, 0, Err(R::ZeroSeq)),
            (at(3, 30, 3), 3, 30, Err(R::AlreadyUsed { seq: 3 })),
            (at(3, 30, 2), 4, 40, Err(R::PreviousInFlight { seq: 3 })),
            (
                at(3, 30, 3),
                5,
                40,
                Err(R::WrongSeq {
                    expected: 4,
                    got: 5,
                }),
            ),
            (
                at(3, 30, 3),
                4,
                45,
                Err(R::WrongCumulative {
                    expected: 40,
                    accepted: 30,
                    price,
                    got: 45,
                }),
            ),
            (
                at(5, 50, 5),
                6,
                60,
                Err(R::InsufficientDeposit {
                    cap,
                    required: 60,
                    top_up: 10,
                }),
            ),
            (
                at(1, u64::MAX, 1),
                2,
                0,
                Err(R::Arithmetic(SessionError::Overflow("cumulative"))),
            ),
        ];
        for (progress, seq, cumulative, expected) in table {
            let voucher = NextVoucher {
                seq,
                cumulative,
                receipt_head: Hash32::ZERO,
                accepted: None,
            };
            assert_eq!(
                progress.check_voucher(voucher, price, cap),
                expected,
                "{progress:?} seq {seq} cumulative {cumulative}"
            );
        }
    }

    #[test]
    fn a_voucher_committing_to_another_receipt_head_is_invalid() {
        let mut progress = at(3, 30, 3);
        progress.head = Hash32([9; 32]);
        let mut voucher = progress.next_voucher(10).expect("fits");
        assert_eq!(voucher.receipt_head, Hash32([9; 32]));
        assert_eq!(progress.check_voucher(voucher, 10, 100), Ok(()));
        voucher.receipt_head = Hash32([8; 32]);
        let rejection = VoucherRejection::WrongReceiptHead {
            expected: Hash32([9; 32]),
            got: Hash32([8; 32]),
        };
        assert_eq!(progress.check_voucher(voucher, 10, 100), Err(rejection));
        assert_eq!(rejection.code(), ErrorCode::InvalidVoucher);
    }

    #[test]
    fn rejections_carry_the_documented_wire_codes() {
        use VoucherRejection as R;
        assert_eq!(R::ZeroSeq.code(), ErrorCode::InvalidVoucher);
        assert_eq!(R::AlreadyUsed { seq: 1 }.code(), ErrorCode::VoucherConflict);
        assert_eq!(
            R::PreviousInFlight { seq: 1 }.code(),
            ErrorCode::VoucherConflict
        );
        assert_eq!(
            R::InsufficientDeposit {
                cap: 0,
                required: 1,
                top_up: 1
            }
            .code(),
            ErrorCode::InsufficientDeposit
        );
    }

    #[test]
    fn a_failed_request_charges_nothing_and_keeps_the_cumulative() {
        let progress = at(2, 20, 2);
        assert_eq!(
            progress.charge(ReceiptStatus::Ok, 10),
            Ok(Charge {
                amount: 10,
                cumulative: 30
            })
        );
        for status in [ReceiptStatus::HandlerError, ReceiptStatus::Timeout] {
            assert_eq!(
                progress.charge(status, 10),
                Ok(Charge {
                    amount: 0,
                    cumulative: 20
                })
            );
        }
    }
}
