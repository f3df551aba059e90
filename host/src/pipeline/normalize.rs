//! The normalize stage: each batch is normalized and turned into rows on a
//! blocking thread (modules run there, values are compressed there), then
//! split among the writers by the dispatcher.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::dispatch::Dispatch;
use super::{Batch, InFlight, Marks, Prepared};
use crate::config::ValueCompression;
use crate::metrics::{Metrics, NormalizerLabel};
use crate::modules::Modules;
use crate::record::Record;
use crate::storage::{StoredRow, TimeRule};

/// The stage and what it needs.
pub(super) struct NormalizeStage {
    /// One channel per writer, in the dispatcher's lane order.
    pub lanes: Vec<mpsc::Sender<Prepared>>,
    pub dispatch: Arc<Dispatch>,
    /// The normalizers: each record goes to the module its route picks, or
    /// to the built-in default.
    pub modules: Arc<Modules>,
    pub metrics: Arc<Metrics>,
    /// Whether values are stored compressed (`VALUE_COMPRESSION`).
    pub compression: ValueCompression,
    /// When a record's own time is trusted (`RECORD_TIME_TOLERANCE`).
    pub time_rule: TimeRule,
    /// Batches in flight, and what this stage is doing for the watchdog.
    pub in_flight: Arc<InFlight>,
}

impl NormalizeStage {
    /// Normalizes every batch it is given until the channel closes.
    pub async fn run(self, mut batches: mpsc::Receiver<Batch>) {
        while let Some(Batch { records, arrived, handed }) = batches.recv().await {
            self.metrics.stage("normalize_wait", handed.elapsed());
            let normalizing = std::time::Instant::now();
            let (modules, metrics, dispatch) = (self.modules.clone(), self.metrics.clone(), self.dispatch.clone());
            let (compression, time_rule) = (self.compression, self.time_rule);
            self.in_flight.doing(0, Some(format!("normalizing {} records", records.len())));
            let prepared = tokio::task::spawn_blocking(move || {
                dispatch.split(prepare(records, &modules, &metrics, compression, time_rule))
            })
            .await;
            self.in_flight.doing(0, None);
            self.metrics.stage("normalize", normalizing.elapsed());
            match prepared {
                Ok(mut parts) => {
                    let marks = Marks { arrived, sent: std::time::Instant::now() };
                    for part in parts.iter_mut().flatten() {
                        part.marks = marks;
                    }
                    // The batch was counted once; each part is written apart.
                    let sent = parts.iter().filter(|p| p.is_some()).count();
                    self.in_flight.started(sent.saturating_sub(1));
                    for (lane, part) in self.lanes.iter().zip(parts) {
                        if let Some(part) = part
                            && lane.send(part).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Err(error) => {
                    // A panic in a normalizer is a host bug; stop rather than
                    // skip records (their offsets are never stored).
                    tracing::error!(%error, "Normalizing a batch failed; stopping the pipeline.");
                    return;
                }
            }
        }
    }
}

/// Normalizes a batch and turns it into rows, compressing their values
/// (here, on the blocking thread, not on the writer's).
fn prepare(
    records: Vec<Record>,
    modules: &Modules,
    metrics: &Metrics,
    compression: ValueCompression,
    time_rule: TimeRule,
) -> Prepared {
    let normalized = modules.normalize(&records);
    debug_assert_eq!(normalized.len(), records.len());
    let now = chrono::Utc::now();
    let mut last_offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut per_topic: HashMap<String, u64> = HashMap::new();
    let rows = records
        .into_iter()
        .zip(normalized)
        .map(|(record, normalized)| {
            let last = last_offsets.entry((record.topic.clone(), record.partition)).or_insert(record.offset);
            *last = (*last).max(record.offset);
            *per_topic.entry(record.topic.clone()).or_default() += 1;
            if let Some(error) = &normalized.error {
                tracing::warn!(
                    topic = %record.topic, partition = record.partition, offset = record.offset,
                    normalizer = %normalized.normalizer, %error, "Normalizer failed; stored with the built-in default's fields."
                );
                metrics.normalizer_errors.get_or_create(&NormalizerLabel { normalizer: normalized.normalizer.clone() }).inc();
            }
            let mut row = StoredRow::from_record_at(record, normalized, time_rule, now);
            if compression == ValueCompression::Zstd {
                row.compress_value();
            }
            row
        })
        .collect();
    for (topic, n) in &per_topic {
        metrics.consumed.get_or_create(&metrics.topic(topic)).inc_by(*n);
    }
    Prepared { marks: Marks::default(), rows, last_offsets, per_topic }
}
