//! How a handler tells the payment layer what a metered request used.

use std::sync::{Arc, Mutex};

/// Units a handler reports for a metered request (tokens, or bytes for a bytes-metered route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportedUsage {
    /// Input units (e.g. prompt tokens).
    pub units_in: u64,
    /// Output units (e.g. completion tokens).
    pub units_out: u64,
    /// Whether the units are an estimate (counted from the stream, not reported by the model).
    pub estimated: bool,
}

/// A handle in the request extensions of a metered session request
/// ([`crate::PaymentContext::Session::usage`]): the handler reports what the request used; the
/// last report wins. The layer charges from it when the answer was delivered whole; when the
/// answer was cut, it charges only the units of the bytes it delivered (its own count), since
/// the handler may have produced more than was handed over.
#[derive(Debug, Clone, Default)]
pub struct UsageReporter(Arc<Mutex<Option<ReportedUsage>>>);

impl UsageReporter {
    /// Reports the request's usage so far (replaces any earlier report).
    pub fn report(&self, usage: ReportedUsage) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(usage);
        }
    }

    /// The last report, if any.
    pub fn reported(&self) -> Option<ReportedUsage> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}

impl PartialEq for UsageReporter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for UsageReporter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_report_wins_and_clones_share_it() {
        let reporter = UsageReporter::default();
        assert_eq!(reporter.reported(), None);
        let handler_side = reporter.clone();
        handler_side.report(ReportedUsage {
            units_in: 3,
            units_out: 1,
            estimated: true,
        });
        handler_side.report(ReportedUsage {
            units_in: 3,
            units_out: 7,
            estimated: false,
        });
        assert_eq!(
            reporter.reported(),
            Some(ReportedUsage {
                units_in: 3,
                units_out: 7,
                estimated: false
            })
        );
        assert_eq!(reporter, handler_side);
        assert_ne!(reporter, UsageReporter::default());
    }
}
