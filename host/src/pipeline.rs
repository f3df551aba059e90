//! The ingest pipeline: Kafka message → normalizer → PostgreSQL row → stored
//! offset. The only module that uses Kafka, the normalizers and storage.
//!
//! Three stages run concurrently, joined by channels that hold one batch
//! each, so memory stays bounded however far behind the consumer is:
//!
//! 1. the **poll loop** collects records into batches bounded by count and
//!    time; when the later stages are behind it stops polling (librdkafka's
//!    prefetch queue is bounded), and if that lasts it pauses its partitions
//!    and polls on, so the consumer stays in its group;
//! 2. the **normalize stage** runs the normalizers on a blocking thread;
//! 3. the **writers** (`DATABASE_WRITERS`, each on a connection of its own)
//!    write the batch (as one binary `COPY`; see `storage`), split by
//!    partition: a partition whose rows are still being written by a writer
//!    goes to that writer again, any other to the writer with the fewest
//!    rows in hand. Each part is one transaction, retried with backoff while
//!    the database is unreachable, and its offsets are stored only after its
//!    commit. A partition's records are thus written and committed in
//!    order, while PostgreSQL works on several parts at once (a batch from
//!    librdkafka often holds one partition only, so a fixed partition →
//!    writer map would leave writers idle).
//!
//! Topic discovery runs beside them, in a task of its own: its metadata
//! request may wait on a slow broker, and the poll loop must not.

mod batcher;
mod dispatch;
mod normalize;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{DbConfig, KafkaConfig, PipelineConfig};
use crate::kafka::{self, HostConsumer};
use crate::metrics::Metrics;
use crate::modules::Modules;
use crate::record::Record;
use crate::status::Status;
use crate::storage::{Db, Partitioner, StoredRow, TimeRule};
use batcher::Batcher;
use dispatch::Dispatch;
use normalize::NormalizeStage;
use writer::Writer;

/// How long shutdown waits for the final offset commit.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A batch (or a writer's part of one) ready for the database.
/// A batch on its way to the normalize stage.
struct Batch {
    records: Vec<Record>,
    /// When its first record was received, and when it was handed over.
    arrived: Instant,
    handed: Instant,
}

/// When a part's oldest record was received and when the part was sent to
/// its writer: the stage histograms' marks.
#[derive(Debug, Clone, Copy)]
struct Marks {
    arrived: Instant,
    sent: Instant,
}

impl Default for Marks {
    fn default() -> Self {
        let now = Instant::now();
        Marks { arrived: now, sent: now }
    }
}

struct Prepared {
    /// When its oldest record arrived, and when it was sent to its writer.
    marks: Marks,
    rows: Vec<StoredRow>,
    /// The highest offset in the batch per (topic, partition).
    last_offsets: HashMap<(String, i32), i64>,
    /// Records per topic, for the metrics.
    per_topic: HashMap<String, u64>,
}

/// Everything the pipeline works with.
pub struct Pipeline {
    pub consumer: Arc<HostConsumer>,
    pub db: Db,
    /// The normalizers: each record goes to the module its route picks, or
    /// to the built-in default.
    pub modules: Arc<Modules>,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    pub kafka_config: KafkaConfig,
    pub config: PipelineConfig,
    /// Partitions: which months the write path creates before writing.
    pub db_config: DbConfig,
}

/// Runs the pipeline until `shutdown` is cancelled, then writes what it holds
/// and commits offsets, giving up on unwritten batches after `give_up` fires
/// (they are redelivered on the next start and stored then).
pub async fn run(pipeline: Pipeline, shutdown: CancellationToken, give_up: CancellationToken) -> anyhow::Result<()> {
    let Pipeline { consumer, db, modules, status, metrics, kafka_config, config, db_config } = pipeline;
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
    let in_flight = Arc::new(InFlight::new(config.writers.max(1) as usize));
    // One lane per writer: a batch is split by partition (see `Dispatch`).
    let dispatch = Arc::new(Dispatch::new(config.writers.max(1) as usize));
    let mut lanes = Vec::new();
    let mut writers = Vec::new();
    for lane in 0..config.writers.max(1) as usize {
        let (rows_tx, rows_rx) = mpsc::channel::<Prepared>(1);
        lanes.push(rows_tx);
        let writer = Writer {
            db: db.clone(),
            method: config.write_method,
            partitions: Partitioner::new(&db_config),
            consumer: consumer.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            give_up: give_up.clone(),
            in_flight: in_flight.clone(),
            dispatch: dispatch.clone(),
            lane,
        };
        writers.push(tokio::spawn(writer.run(rows_rx)));
    }
    let watchdog = tokio::spawn(watch_progress(
        in_flight.clone(),
        modules.clone(),
        status.clone(),
        metrics.clone(),
        config.stall_after,
        shutdown.clone(),
    ));
    let stage = NormalizeStage {
        lanes,
        dispatch,
        modules,
        metrics: metrics.clone(),
        compression: config.value_compression,
        time_rule: TimeRule {
            tolerance: chrono::Duration::from_std(config.record_time_tolerance)
                .unwrap_or_else(|_| chrono::Duration::minutes(10)),
        },
        in_flight: in_flight.clone(),
    };
    let normalizer = tokio::spawn(stage.run(batch_rx));

    // Topic discovery runs beside the poll loop: a metadata request to a slow
    // broker must not stop consumption while it waits.
    let discovery =
        tokio::spawn(discover_topics(consumer.clone(), kafka_config.clone(), status.clone(), shutdown.clone()));
    Batcher::new(consumer.clone(), &config, in_flight.clone(), metrics.clone()).run(batch_tx, &shutdown).await;
    discovery.abort();
    watchdog.abort();

    // The poll loop has handed over its last batch and closed the channel;
    // the later stages drain and end.
    normalizer.await?;
    let mut all_written = true;
    for writer in writers {
        all_written &= writer.await?;
    }
    // The final commit needs the group coordinator; with the broker gone it
    // would block indefinitely, so it gets a bounded wait. Uncommitted
    // offsets only mean redelivered records, which the unique key drops.
    let committer = consumer.clone();
    let commit = tokio::task::spawn_blocking(move || kafka::commit(&committer));
    if tokio::time::timeout(FINAL_COMMIT_TIMEOUT, commit).await.is_err() {
        tracing::warn!(
            "The final offset commit did not finish in time; records since the last commit will be redelivered."
        );
    }
    if !all_written {
        tracing::warn!("Shut down before every batch was written; those records will be consumed again.");
    }
    Ok(())
}

/// Lists the cluster's topics every `topic_refresh_interval` and subscribes
/// to the wanted ones, on a blocking thread of its own, until shutdown.
async fn discover_topics(
    consumer: Arc<HostConsumer>,
    kafka_config: KafkaConfig,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let mut topics = BTreeSet::new();
    let mut refresh = tokio::time::interval(kafka_config.topic_refresh_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = refresh.tick() => {}
        }
        let (c, k, current) = (consumer.clone(), kafka_config.clone(), topics.clone());
        match tokio::task::spawn_blocking(move || kafka::refresh_subscription(&c, &k, &current)).await {
            Ok(Ok(wanted)) => {
                status.set_subscribed(wanted.len());
                topics = wanted;
            }
            Ok(Err(error)) => tracing::warn!(error = %format!("{error:#}"), "Could not refresh the topic list."),
            Err(error) => tracing::error!(%error, "The topic refresh task failed."),
        }
    }
}

/// Batches handed to the later stages and not yet written. While none is,
/// a new batch waits only [`batcher::IDLE_LINGER`] for more records, not the whole
/// `BATCH_LINGER`: with nothing to overlap with, waiting only adds latency.
/// Under load batches are in flight, so they still fill up.
struct InFlight {
    batches: AtomicUsize,
    /// How many parts can be written at once (`DATABASE_WRITERS`).
    writers: usize,
    /// Signalled when a writer becomes free.
    idle: tokio::sync::Notify,
    /// When a part was last written (or the pipeline started): what the
    /// stall watchdog measures.
    last_progress: std::sync::Mutex<std::time::Instant>,
    /// What each stage is doing and since when, for the watchdog's
    /// culprit: index 0 is the normalize stage, 1.. the writers.
    activity: std::sync::Mutex<Vec<Option<(String, std::time::Instant)>>>,
}

impl InFlight {
    fn new(writers: usize) -> InFlight {
        InFlight {
            batches: AtomicUsize::new(0),
            writers: writers.max(1),
            idle: tokio::sync::Notify::new(),
            last_progress: std::sync::Mutex::new(std::time::Instant::now()),
            activity: std::sync::Mutex::new(vec![None; writers + 1]),
        }
    }

    /// Whether a writer is free: fewer parts in flight than writers.
    fn writer_free(&self) -> bool {
        self.batches.load(Ordering::Acquire) < self.writers
    }

    fn waiting(&self) -> usize {
        self.batches.load(Ordering::Acquire)
    }

    /// `n` more batches (or parts of one) are in flight.
    fn started(&self, n: usize) {
        self.batches.fetch_add(n, Ordering::AcqRel);
    }

    /// One was written; when that frees a writer, the batcher is woken.
    fn finished(&self) {
        if let Ok(mut at) = self.last_progress.lock() {
            *at = std::time::Instant::now();
        }
        if self.batches.fetch_sub(1, Ordering::AcqRel) <= self.writers {
            self.idle.notify_one();
        }
    }

    /// Stage `stage` (0: normalize, 1..: writers) now does `what`, or
    /// nothing.
    fn doing(&self, stage: usize, what: Option<String>) {
        if let Ok(mut activity) = self.activity.lock()
            && let Some(slot) = activity.get_mut(stage)
        {
            *slot = what.map(|w| (w, std::time::Instant::now()));
        }
    }

    /// How long since the last part was written.
    fn since_progress(&self) -> Duration {
        self.last_progress.lock().map(|at| at.elapsed()).unwrap_or_default()
    }

    /// The longest-running activity, as a sentence.
    fn culprit(&self, modules: &Modules) -> String {
        let activity = self.activity.lock().map(|a| a.clone()).unwrap_or_default();
        let longest = activity
            .iter()
            .enumerate()
            .filter_map(|(stage, a)| a.as_ref().map(|(what, since)| (stage, what, since.elapsed())))
            .max_by_key(|(_, _, took)| *took);
        match longest {
            Some((0, what, took)) => match modules.running() {
                Some((module, running)) => format!(
                    "the normalize stage has been {what} for {} s; module {module} has been running for {} s",
                    took.as_secs(),
                    running.as_secs()
                ),
                None => format!("the normalize stage has been {what} for {} s", took.as_secs()),
            },
            Some((writer, what, took)) => format!("writer {} has been {what} for {} s", writer - 1, took.as_secs()),
            None => "no stage is working on them".to_owned(),
        }
    }
}

/// How often the stall watchdog looks.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Says on `/ready/ingest` (and in the metrics) when no part has been
/// written for `stall_after` while batches wait, naming what the pipeline
/// is stuck on; clears it when parts are written again.
async fn watch_progress(
    in_flight: Arc<InFlight>,
    modules: Arc<Modules>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    stall_after: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let mut stalled = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let waiting = in_flight.waiting();
        let since = in_flight.since_progress();
        metrics.pipeline_idle_seconds.set(if waiting > 0 { since.as_secs_f64() } else { 0.0 });
        if waiting > 0 && since >= stall_after {
            let reason = format!(
                "no batch was written for {} s while {waiting} wait: {}",
                since.as_secs(),
                in_flight.culprit(&modules)
            );
            if !stalled {
                tracing::error!(%reason, "The pipeline is stalled.");
            }
            stalled = true;
            status.set_stalled(Some(reason));
        } else if stalled {
            tracing::info!("The pipeline moves again.");
            stalled = false;
            status.set_stalled(None);
        }
    }
}
