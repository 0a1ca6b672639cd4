//! Prometheus metrics of a provider: requests, payments, receipts, SLA, claims, latency.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Label {
    kind: String,
}

/// The provider's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Counter,
    paid: Family<Label, Counter>,
    payment_required: Family<Label, Counter>,
    receipts: Family<Label, Counter>,
    sla_breaches: Counter,
    claims: Family<Label, Counter>,
    handler_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `x402pp_provider` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("x402pp_provider");
        let requests = Counter::default();
        let paid = Family::<Label, Counter>::default();
        let payment_required = Family::<Label, Counter>::default();
        let receipts = Family::<Label, Counter>::default();
        let sla_breaches = Counter::default();
        let claims = Family::<Label, Counter>::default();
        let handler_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        registry.register("requests", "Requests to paid routes", requests.clone());
        registry.register(
            "paid_requests",
            "Requests served after payment, by scheme",
            paid.clone(),
        );
        registry.register(
            "payment_required",
            "402 answers, by error code",
            payment_required.clone(),
        );
        registry.register("receipts", "Receipts signed, by status", receipts.clone());
        registry.register(
            "sla_breaches",
            "Receipts over the promised latency",
            sla_breaches.clone(),
        );
        registry.register("claims", "Claim transactions, by outcome", claims.clone());
        registry.register(
            "handler_duration_seconds",
            "Handler latency of paid requests",
            handler_seconds.clone(),
        );
        Self {
            registry,
            requests,
            paid,
            payment_required,
            receipts,
            sla_breaches,
            claims,
            handler_seconds,
        }
    }

    /// A request reached a paid route.
    pub fn request(&self) {
        self.requests.inc();
    }

    /// A request was served after payment by `scheme`.
    pub fn paid(&self, scheme: &str) {
        self.paid
            .get_or_create(&Label {
                kind: scheme.to_owned(),
            })
            .inc();
    }

    /// A 402 (or other refusal) with `code`.
    pub fn refused(&self, code: &str) {
        self.payment_required
            .get_or_create(&Label {
                kind: code.to_owned(),
            })
            .inc();
    }

    /// A receipt was signed.
    pub fn receipt(&self, status: &str, breached: bool, handler: Duration) {
        self.receipts
            .get_or_create(&Label {
                kind: status.to_owned(),
            })
            .inc();
        if breached {
            self.sla_breaches.inc();
        }
        self.handler_seconds.observe(handler.as_secs_f64());
    }

    /// A claim transaction ended with `outcome`.
    pub fn claim(&self, outcome: &str) {
        self.claims
            .get_or_create(&Label {
                kind: outcome.to_owned(),
            })
            .inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
