//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! The registry below is the one list of metrics: the book's
//! `docs/src/reference/metrics.md` is generated from it (with each metric's
//! type, labels and help) by `host/tests/docs.rs`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NormalizerLabel {
    pub normalizer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReducedLabels {
    pub topic: String,
    pub form: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub module: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleFailureLabels {
    pub module: String,
    pub version: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleInfoLabels {
    pub module: String,
    pub version: String,
    pub hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    pub consumed: Family<TopicLabel, Counter>,
    pub stored: Family<TopicLabel, Counter>,
    pub normalizer_errors: Family<NormalizerLabel, Counter>,
    pub redelivered: Counter,
    pub reduced: Family<ReducedLabels, Counter>,
    pub write_failures: Family<KindLabel, Counter>,
    pub module_records: Family<ModuleLabels, Counter>,
    pub module_failures: Family<ModuleFailureLabels, Counter>,
    pub module_shadow_records: Family<ModuleLabels, Counter>,
    pub module_shadow_differences: Family<ModuleLabels, Counter>,
    pub module_call_seconds: Family<ModuleLabels, Histogram>,
    pub module_quarantined: Family<ModuleLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub module_info: Family<ModuleInfoLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub batch_write_seconds: Histogram,
    pub batch_records: Histogram,
    pub consumer_lag: Family<PartitionLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub database_up: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub http_requests: Family<RequestLabels, Counter<u64, AtomicU64>>,
    pub http_seconds: Family<RouteLabel, Histogram>,
    /// Console live-tail streams open now.
    pub live_streams: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Records a live-tail stream did not send because its browser was
    /// behind (coalesced).
    pub live_skipped: Counter,
    /// Content-Security-Policy violations browsers reported from the console.
    pub csp_violations: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("notification");
        let consumed = Family::<TopicLabel, Counter>::default();
        let stored = Family::<TopicLabel, Counter>::default();
        let normalizer_errors = Family::<NormalizerLabel, Counter>::default();
        let redelivered = Counter::default();
        let reduced = Family::<ReducedLabels, Counter>::default();
        let write_failures = Family::<KindLabel, Counter>::default();
        let module_records = Family::<ModuleLabels, Counter>::default();
        let module_failures = Family::<ModuleFailureLabels, Counter>::default();
        let module_shadow_records = Family::<ModuleLabels, Counter>::default();
        let module_shadow_differences = Family::<ModuleLabels, Counter>::default();
        let module_call_seconds = Family::<ModuleLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        let module_quarantined = Family::default();
        let module_info = Family::default();
        let batch_write_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let batch_records = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        let consumer_lag = Family::default();
        let database_up = Gauge::default();
        let http_requests = Family::default();
        let http_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register("records_consumed", "Records received from Kafka", consumed.clone());
        registry.register("records_stored", "Records whose row is committed in PostgreSQL", stored.clone());
        registry.register("normalizer_errors", "Records a normalizer module failed on", normalizer_errors.clone());
        registry.register(
            "records_redelivered",
            "Records received again that were already stored (dropped by the unique key)",
            redelivered.clone(),
        );
        registry.register(
            "records_reduced",
            "Records PostgreSQL refused as they were, stored through the last resort (the exact value, key, headers and coordinates)",
            reduced.clone(),
        );
        registry.register("write_failures", "Failed batch writes, retried, by kind", write_failures.clone());
        registry.register("module_records", "Records given to a normalizer module", module_records.clone());
        registry.register("module_failures", "Records a normalizer module failed on, by kind", module_failures.clone());
        registry.register(
            "module_shadow_records",
            "Records a shadow module version was compared on",
            module_shadow_records.clone(),
        );
        registry.register(
            "module_shadow_differences",
            "Records where a shadow module version answered differently from the live one",
            module_shadow_differences.clone(),
        );
        registry.register(
            "module_call_seconds",
            "Time a normalizer module spent on one batch of its records",
            module_call_seconds.clone(),
        );
        registry.register(
            "module_quarantined",
            "1 while a live module version is quarantined",
            module_quarantined.clone(),
        );
        registry.register("module_info", "1 for each live module version on this replica", module_info.clone());
        registry.register(
            "batch_write_seconds",
            "Time to write one batch, retries included",
            batch_write_seconds.clone(),
        );
        registry.register("batch_records", "Records per written batch", batch_records.clone());
        registry.register("consumer_lag", "Records behind the partition's high watermark", consumer_lag.clone());
        registry.register("database_up", "1 when the database answers", database_up.clone());
        registry.register("http_requests", "HTTP requests by route and status", http_requests.clone());
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route (live-tail streams excluded)",
            http_seconds.clone(),
        );
        let live_streams = Gauge::default();
        let live_skipped = Counter::default();
        let csp_violations = Counter::default();
        registry.register("console_live_streams", "Console live-tail streams open now", live_streams.clone());
        registry.register(
            "console_live_skipped",
            "Records a live-tail stream left out because its browser could not keep up",
            live_skipped.clone(),
        );
        registry.register(
            "console_csp_violations",
            "Content-Security-Policy violations browsers reported from the console",
            csp_violations.clone(),
        );
        Metrics {
            registry,
            consumed,
            stored,
            normalizer_errors,
            redelivered,
            reduced,
            write_failures,
            module_records,
            module_failures,
            module_shadow_records,
            module_shadow_differences,
            module_call_seconds,
            module_quarantined,
            module_info,
            batch_write_seconds,
            batch_records,
            consumer_lag,
            database_up,
            http_requests,
            http_seconds,
            live_streams,
            live_skipped,
            csp_violations,
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "Could not encode the metrics.");
        }
        out
    }
}
