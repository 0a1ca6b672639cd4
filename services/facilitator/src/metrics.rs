//! Prometheus metrics of the facilitator.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: String,
}

/// Counters and latency histograms of `/verify` and `/settle`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    verify: Family<Outcome, Counter>,
    settle: Family<Outcome, Counter>,
    malformed: Counter,
    verify_seconds: Histogram,
    settle_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("x402pp_facilitator");
        let verify = Family::<Outcome, Counter>::default();
        let settle = Family::<Outcome, Counter>::default();
        let malformed = Counter::default();
        let verify_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let settle_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "verify_requests",
            "Verify requests by result (ok or reason)",
            verify.clone(),
        );
        registry.register(
            "settle_requests",
            "Settle requests by result (ok or reason)",
            settle.clone(),
        );
        registry.register(
            "malformed_requests",
            "Requests rejected as malformed",
            malformed.clone(),
        );
        registry.register(
            "verify_duration_seconds",
            "Verify latency",
            verify_seconds.clone(),
        );
        registry.register(
            "settle_duration_seconds",
            "Settle latency",
            settle_seconds.clone(),
        );
        Self {
            registry,
            verify,
            settle,
            malformed,
            verify_seconds,
            settle_seconds,
        }
    }

    /// Records a verification.
    pub fn verified(&self, reason: Option<&str>, elapsed: Duration) {
        let result = reason.unwrap_or("ok").to_owned();
        self.verify.get_or_create(&Outcome { result }).inc();
        self.verify_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records a settlement.
    pub fn settled(&self, reason: Option<&str>, elapsed: Duration) {
        let result = reason.unwrap_or("ok").to_owned();
        self.settle.get_or_create(&Outcome { result }).inc();
        self.settle_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records a malformed request.
    pub fn malformed(&self) {
        self.malformed.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
