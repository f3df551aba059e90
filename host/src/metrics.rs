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
pub struct StageLabel {
    pub stage: &'static str,
}

/// The pipeline's stages, as `stage` labels of `pipeline_stage_seconds`:
/// a batch filling (from its first record's arrival), waiting for and
/// spent in the normalize stage, a part waiting for and spent in its
/// writer's transaction, storing its offsets, and its oldest record's whole
/// time in the process (arrival to offsets stored).
pub const STAGES: [&str; 7] =
    ["batching", "normalize_wait", "normalize", "write_wait", "write", "offsets", "in_process"];

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
    /// One of [`HTTP_METHODS`], or `other`: a client must not be able to
    /// add label values by making methods up.
    pub method: &'static str,
    pub status: u16,
}

/// The methods the HTTP metrics name; any other is counted as `other`.
pub const HTTP_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];

/// `method` as a bounded label value.
pub fn method_label(method: &str) -> &'static str {
    HTTP_METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// The topic label every topic past `METRICS_MAX_TOPICS` is counted under
/// (parentheses are not allowed in Kafka topic names).
pub const OTHER_TOPICS: &str = "(other)";

/// A saga type and one of its steps.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaStepLabels {
    pub saga_type: String,
    /// `service/event`.
    pub step: String,
}

impl SagaStepLabels {
    pub fn new(saga_type: &str, service: &str, event: &str) -> SagaStepLabels {
        SagaStepLabels { saga_type: saga_type.to_owned(), step: format!("{service}/{event}") }
    }
}

/// A producer: a source service and the event type it sends.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProducerLabels {
    pub service: String,
    pub event: String,
}

/// A saga type and one of its transitions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaTransitionLabels {
    pub saga_type: String,
    /// `service/event -> service/event`.
    pub transition: String,
}

/// Transitions with labels of their own in the step-latency histogram; the
/// rest are counted under `(other)`.
pub const SAGA_TRANSITION_SERIES: usize = 200;

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
    pub stage_seconds: Family<StageLabel, Histogram>,
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
    /// Seconds since a batch was last written while batches wait (0 when
    /// none waits): what the stall watchdog measures.
    pub pipeline_idle_seconds: Gauge<f64, AtomicU64>,
    /// Console notifications of stored rows that could not be sent (the
    /// rows are stored; only the live tail misses them).
    pub notify_failures: Counter,
    /// Maintenance statements that gave up waiting for a lock (retried
    /// later) rather than queue every write behind it.
    pub maintenance_lock_timeouts: Counter,
    /// The memory limit the host budgets against, in bytes.
    pub memory_limit_bytes: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Sagas overdue now, by type and last step (the largest groups).
    pub saga_stuck: Family<SagaStepLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// Time between saga steps, by type and transition, as learned.
    pub saga_step_seconds: Family<SagaTransitionLabels, Histogram>,
    /// Rows the saga learner has learned from.
    pub saga_rows_learned: Counter,
    /// Rows older than their saga's last step when learned.
    pub saga_rows_late: Counter,
    /// Producers silent now (the largest baselines), 1 each.
    pub producers_silent: Family<ProducerLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// Rows of producers past `SAGA_MAX_PRODUCERS`, not counted in any rate.
    pub saga_producer_rows_untracked: Counter,
    saga_transitions: std::sync::Mutex<std::collections::HashSet<SagaTransitionLabels>>,
    /// The topics that have a label of their own, at most `max_topics`.
    topics: std::sync::Mutex<std::collections::HashSet<String>>,
    max_topics: usize,
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
        let stage_seconds = Family::<StageLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
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
        registry.register(
            "pipeline_stage_seconds",
            "Time a batch spends in each stage of the pipeline, and its oldest record in the process (in_process)",
            stage_seconds.clone(),
        );
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
        let pipeline_idle_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "pipeline_idle_seconds",
            "Seconds since a batch was last written while batches wait (0 when none waits)",
            pipeline_idle_seconds.clone(),
        );
        let notify_failures = Counter::default();
        registry.register(
            "notify_failures",
            "Notifications of stored rows (the console's live tail) that could not be sent; the rows are stored",
            notify_failures.clone(),
        );
        let maintenance_lock_timeouts = Counter::default();
        registry.register(
            "maintenance_lock_timeouts",
            "Partition maintenance statements that gave up waiting for a lock and will be retried",
            maintenance_lock_timeouts.clone(),
        );
        let memory_limit_bytes = Gauge::default();
        registry.register(
            "memory_limit_bytes",
            "The memory limit the host budgets batches and answers against",
            memory_limit_bytes.clone(),
        );
        let saga_stuck = Family::default();
        registry.register(
            "sagas_stuck",
            "Sagas overdue now (idle longer than SAGA_OVERDUE_MARGIN times the learned p99 of every next step), by type and last step",
            saga_stuck.clone(),
        );
        let saga_step_seconds = Family::<SagaTransitionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 20))
        });
        registry.register(
            "saga_step_seconds",
            "Time between two steps of a saga (record times), by saga type and transition, as the learner learns them",
            saga_step_seconds.clone(),
        );
        let saga_rows_learned = Counter::default();
        registry.register(
            "saga_rows_learned",
            "Stored rows the saga learner has learned from",
            saga_rows_learned.clone(),
        );
        let saga_rows_late = Counter::default();
        registry.register(
            "saga_rows_late",
            "Rows dated before their saga's last step when learned (not learned as a transition)",
            saga_rows_late.clone(),
        );
        let producers_silent = Family::default();
        registry.register(
            "producers_silent",
            "Producers (source service, event type) whose rate over SAGA_SILENCE_WINDOW fell under a tenth of their baseline: 1 each",
            producers_silent.clone(),
        );
        let saga_producer_rows_untracked = Counter::default();
        registry.register(
            "saga_producer_rows_untracked",
            "Rows of producers past SAGA_MAX_PRODUCERS, counted in no producer's rate",
            saga_producer_rows_untracked.clone(),
        );
        Metrics {
            registry,
            producers_silent,
            saga_producer_rows_untracked,
            saga_stuck,
            saga_step_seconds,
            saga_rows_learned,
            saga_rows_late,
            saga_transitions: std::sync::Mutex::new(std::collections::HashSet::new()),
            pipeline_idle_seconds,
            notify_failures,
            maintenance_lock_timeouts,
            memory_limit_bytes,
            topics: std::sync::Mutex::new(std::collections::HashSet::new()),
            max_topics: DEFAULT_MAX_TOPICS,
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
            stage_seconds,
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

/// Topics with labels of their own, unless configured otherwise.
pub const DEFAULT_MAX_TOPICS: usize = 1000;

impl Metrics {
    /// Observes `took` for one of the pipeline's [`STAGES`].
    pub fn stage(&self, stage: &'static str, took: std::time::Duration) {
        self.stage_seconds.get_or_create(&StageLabel { stage }).observe(took.as_secs_f64());
    }

    /// The metrics, giving at most `max_topics` topics labels of their own.
    pub fn with_max_topics(max_topics: usize) -> Metrics {
        Metrics { max_topics, ..Metrics::default() }
    }

    /// The label of `topic`: its name while fewer than `max_topics` topics
    /// have one, else [`OTHER_TOPICS`]. Labels are never dropped, so a
    /// series once created stays.
    pub fn topic(&self, topic: &str) -> TopicLabel {
        let Ok(mut topics) = self.topics.lock() else { return TopicLabel { topic: OTHER_TOPICS.into() } };
        if topics.contains(topic) || (topics.len() < self.max_topics && topics.insert(topic.to_owned())) {
            TopicLabel { topic: topic.to_owned() }
        } else {
            TopicLabel { topic: OTHER_TOPICS.into() }
        }
    }

    /// Observes a learned step time: the transition gets a label of its own
    /// while fewer than [`SAGA_TRANSITION_SERIES`] have one.
    pub fn saga_step(&self, saga_type: &str, from: &str, to: &str, seconds: f64) {
        let mut labels =
            SagaTransitionLabels { saga_type: saga_type.to_owned(), transition: format!("{from} -> {to}") };
        if let Ok(mut seen) = self.saga_transitions.lock()
            && !seen.contains(&labels)
        {
            if seen.len() < SAGA_TRANSITION_SERIES {
                seen.insert(labels.clone());
            } else {
                labels = SagaTransitionLabels { saga_type: OTHER_TOPICS.into(), transition: OTHER_TOPICS.into() };
            }
        }
        self.saga_step_seconds.get_or_create(&labels).observe(seconds);
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "Could not encode the metrics.");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
        let m = Metrics::with_max_topics(2);
        assert_eq!(m.topic("a").topic, "a");
        assert_eq!(m.topic("b").topic, "b");
        assert_eq!(m.topic("c").topic, OTHER_TOPICS);
        assert_eq!(m.topic("a").topic, "a", "a topic with a label keeps it");
    }
}
