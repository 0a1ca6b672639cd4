//! How a session prices a request: a fixed price (v2), or a base plus usage under signed metering
//! terms (v3), capped by the hold the agent's voucher leaves for the request.

use x402pp_protocol::messages::charge;
use x402pp_protocol::{Cut, Metering, ReceiptStatus};

use crate::charge::charged;
use crate::progress::VoucherRejection;

/// A session's pricing, from its signed offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// Every `ok` request costs `price` (v2 messages).
    Fixed {
        /// Atomic units per `ok` request.
        price: u64,
    },
    /// `base` plus the units' price, at most the request's hold (v3 messages).
    Metered {
        /// Charged per successful request (and per partial one the agent cut or whose hold was
        /// reached).
        base: u64,
        /// The usage prices and the maximum per request.
        metering: Metering,
    },
}

impl From<u64> for Pricing {
    /// A fixed price.
    fn from(price: u64) -> Self {
        Self::Fixed { price }
    }
}

impl Pricing {
    /// The pricing of an offer whose `price_per_request` is `base_or_price` and whose metering
    /// terms are `metering` (`None`: fixed price).
    pub const fn of(base_or_price: u64, metering: Option<Metering>) -> Self {
        match metering {
            None => Self::Fixed {
                price: base_or_price,
            },
            Some(metering) => Self::Metered {
                base: base_or_price,
                metering,
            },
        }
    }

    /// Whether requests are priced by usage.
    pub const fn is_metered(&self) -> bool {
        matches!(self, Self::Metered { .. })
    }

    /// The fixed price, or the base.
    pub const fn base(&self) -> u64 {
        match *self {
            Self::Fixed { price } => price,
            Self::Metered { base, .. } => base,
        }
    }

    /// The usage prices of a metered session.
    pub const fn metering(&self) -> Option<&Metering> {
        match self {
            Self::Fixed { .. } => None,
            Self::Metered { metering, .. } => Some(metering),
        }
    }

    /// The most one request can cost: the fixed price, or the maximum per request.
    pub const fn max_per_request(&self) -> u64 {
        match *self {
            Self::Fixed { price } => price,
            Self::Metered { metering, .. } => metering.max_per_request,
        }
    }

    /// Whether `hold` is a hold a metered voucher may leave: `base ≤ hold ≤ max_per_request`.
    /// (A fixed price has no hold; any value passes.)
    pub fn check_hold(&self, hold: u64) -> Result<(), VoucherRejection> {
        match *self {
            Self::Fixed { .. } => Ok(()),
            Self::Metered { base, metering } => {
                if (base..=metering.max_per_request).contains(&hold) {
                    Ok(())
                } else {
                    Err(VoucherRejection::InvalidHold {
                        base,
                        max_per_request: metering.max_per_request,
                        hold,
                    })
                }
            }
        }
    }

    /// What a request is charged: the fixed price for `ok` (units, cut and hold ignored), or
    /// the metered charge `min(hold, base_due + ceil(units · prices / unit_size))` of
    /// [`x402pp_protocol::messages::charge`].
    pub fn charge(&self, hold: u64, status: ReceiptStatus, usage: Units) -> u64 {
        match self {
            Self::Fixed { price } => charged(status, *price),
            Self::Metered { base, metering } => charge(
                *base,
                metering,
                hold,
                status,
                usage.cut,
                usage.units_in,
                usage.units_out,
            ),
        }
    }
}

/// The counted usage of one request, and why it stopped if it stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units {
    /// Input units.
    pub units_in: u64,
    /// Output units delivered.
    pub units_out: u64,
    /// Why the answer stopped early ([`Cut::None`] when complete).
    pub cut: Cut,
}

#[cfg(test)]
mod tests {
    use super::*;
    use x402pp_protocol::UnitKind;

    fn metered() -> Pricing {
        Pricing::Metered {
            base: 100,
            metering: Metering {
                unit_price_in: 0,
                unit_price_out: 2_000,
                unit_size: 1_000,
                max_per_request: 1_000,
                unit_kind: UnitKind::Tokens,
            },
        }
    }

    #[test]
    fn a_hold_must_lie_between_the_base_and_the_maximum() {
        let pricing = metered();
        assert_eq!(pricing.check_hold(100), Ok(()));
        assert_eq!(pricing.check_hold(1_000), Ok(()));
        for hold in [0, 99, 1_001] {
            assert_eq!(
                pricing.check_hold(hold),
                Err(VoucherRejection::InvalidHold {
                    base: 100,
                    max_per_request: 1_000,
                    hold
                })
            );
        }
        assert_eq!(Pricing::from(7).check_hold(0), Ok(()));
    }

    #[test]
    fn the_worked_example_prices_each_request_its_units() {
        let pricing = metered();
        let units = |units_out, cut| Units {
            units_in: 0,
            units_out,
            cut,
        };
        assert_eq!(
            pricing.charge(1_000, ReceiptStatus::Ok, units(150, Cut::None)),
            400
        );
        assert_eq!(
            pricing.charge(1_000, ReceiptStatus::Partial, units(37, Cut::ClientGone)),
            174
        );
        assert_eq!(
            pricing.charge(500, ReceiptStatus::Ok, units(420, Cut::None)),
            500,
            "capped by the hold"
        );
        assert_eq!(
            Pricing::from(7).charge(0, ReceiptStatus::Ok, units(9, Cut::None)),
            7
        );
        assert_eq!((pricing.base(), pricing.max_per_request()), (100, 1_000));
        assert_eq!(Pricing::of(100, pricing.metering().copied()), pricing);
    }
}
