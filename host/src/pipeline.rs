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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{DbConfig, KafkaConfig, PipelineConfig, ValueCompression, WriteMethod};
use crate::kafka::{self, HostConsumer};
use crate::metrics::{KindLabel, Metrics, NormalizerLabel, ReducedLabels, TopicLabel};
use crate::modules::Modules;
use crate::record::Record;
use crate::status::Status;
use crate::storage::{Db, KnownPartitions, StoredRow, WriteError, partition_window};

/// How long the poll loop waits on a stalled writer before it pauses its
/// partitions to keep polling (and so its group membership).
const PAUSE_AFTER: Duration = Duration::from_secs(5);

/// How long shutdown waits for the final offset commit.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A batch ready for the database.
struct Prepared {
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
    let (batch_tx, batch_rx) = mpsc::channel::<Vec<Record>>(1);
    let in_flight = Arc::new(InFlight::default());
    // One lane per writer: a batch is split by partition (see `Dispatch`).
    let dispatch = Arc::new(Dispatch::new(config.writers.max(1) as usize));
    let mut lanes = Vec::new();
    let mut writers = Vec::new();
    for lane in 0..config.writers.max(1) as usize {
        let (rows_tx, rows_rx) = mpsc::channel::<Prepared>(1);
        lanes.push(rows_tx);
        writers.push(tokio::spawn(writer_stage(
            rows_rx,
            db.clone(),
            config.write_method,
            db_config.clone(),
            consumer.clone(),
            status.clone(),
            metrics.clone(),
            give_up.clone(),
            in_flight.clone(),
            (dispatch.clone(), lane),
        )));
    }
    let normalizer = tokio::spawn(normalize_stage(
        batch_rx,
        lanes,
        dispatch,
        modules,
        metrics.clone(),
        config.value_compression,
        in_flight.clone(),
    ));

    // Topic discovery runs beside the poll loop: a metadata request to a slow
    // broker must not stop consumption while it waits.
    let discovery =
        tokio::spawn(discover_topics(consumer.clone(), kafka_config.clone(), status.clone(), shutdown.clone()));
    poll_loop(&consumer, &config, batch_tx, &in_flight, &shutdown).await;
    discovery.abort();

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
/// a new batch waits only [`IDLE_LINGER`] for more records, not the whole
/// `BATCH_LINGER`: with nothing to overlap with, waiting only adds latency.
/// Under load batches are in flight, so they still fill up.
#[derive(Default)]
struct InFlight {
    batches: std::sync::atomic::AtomicUsize,
    /// Signalled when the last batch in flight is written.
    idle: tokio::sync::Notify,
}

impl InFlight {
    fn none(&self) -> bool {
        self.batches.load(std::sync::atomic::Ordering::Acquire) == 0
    }
}

/// How long a batch waits for more records when nothing is in flight: long
/// enough to take in the rest of a fetch, short against a write.
const IDLE_LINGER: Duration = Duration::from_millis(2);

async fn poll_loop(
    consumer: &Arc<HostConsumer>,
    config: &PipelineConfig,
    batch_tx: mpsc::Sender<Vec<Record>>,
    in_flight: &InFlight,
    shutdown: &CancellationToken,
) {
    let batch_size = config.batch_size as usize;
    let max_bytes = usize::try_from(config.batch_max_bytes).unwrap_or(usize::MAX);
    let mut batch: Vec<Record> = Vec::with_capacity(batch_size);
    // Record data in `batch`, bounded by `batch_max_bytes` as the count is
    // by `batch_size`: one statement must stay under PostgreSQL's 1 GiB.
    let mut batch_bytes = 0usize;
    let mut batch_deadline: Option<Instant> = None;
    // A full (or lingered) batch waiting for the normalize stage to take it.
    let mut pending: Option<Vec<Record>> = None;
    let mut paused = false;

    // When the later stages are behind, the loop stops polling: librdkafka's
    // bounded prefetch queue then holds what is fetched, and nothing is
    // discarded. Only when that lasts (a database outage) are the partitions
    // paused, so that polling can resume and keep the consumer in its group.
    let mut blocked_since: Option<Instant> = None;
    loop {
        let full = batch.len() >= batch_size || batch_bytes >= max_bytes;
        if pending.is_none() && full {
            pending = Some(std::mem::replace(&mut batch, Vec::with_capacity(batch_size)));
            batch_bytes = 0;
            batch_deadline = None;
        }
        let blocked = pending.is_some() && (batch.len() >= batch_size || batch_bytes >= max_bytes);
        blocked_since = if blocked { blocked_since.or(Some(Instant::now())) } else { None };
        let pause_at = blocked_since.filter(|_| !paused).map(|t| t + PAUSE_AFTER);
        let linger = batch_deadline.filter(|_| pending.is_none());
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = batch_tx.reserve(), if pending.is_some() => {
                let Ok(permit) = permit else { break };
                if let Some(records) = pending.take() {
                    in_flight.batches.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    permit.send(records);
                }
                if paused {
                    kafka::set_paused(consumer, false);
                    paused = false;
                }
            }
            () = sleep_until(linger), if linger.is_some() => {
                pending = Some(std::mem::replace(&mut batch, Vec::with_capacity(batch_size)));
                batch_bytes = 0;
                batch_deadline = None;
            }
            () = in_flight.idle.notified(), if !batch.is_empty() && pending.is_none() => {
                // The later stages just went idle: the batch in hand need not
                // wait out its linger.
                if in_flight.none() {
                    let soon = Instant::now() + IDLE_LINGER.min(config.batch_linger);
                    batch_deadline = Some(batch_deadline.map_or(soon, |d| d.min(soon)));
                }
            }
            () = sleep_until(pause_at), if pause_at.is_some() => {
                tracing::info!("Writes are stalled; pausing consumption and staying in the group.");
                kafka::set_paused(consumer, true);
                paused = true;
            }
            message = consumer.recv(), if !blocked || paused => match message {
                Ok(message) => {
                    if batch.is_empty() {
                        let linger =
                            if in_flight.none() { IDLE_LINGER.min(config.batch_linger) } else { config.batch_linger };
                        batch_deadline = Some(Instant::now() + linger);
                    }
                    let record = kafka::to_record(&message);
                    batch_bytes += record_bytes(&record);
                    batch.push(record);
                }
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }

    // Shutdown: hand over what is in hand, in order.
    for records in [pending.take(), Some(batch)].into_iter().flatten().filter(|b| !b.is_empty()) {
        in_flight.batches.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if batch_tx.send(records).await.is_err() {
            break;
        }
    }
}

/// The bytes a record adds to a batch's statement at most: its value (as it
/// is; compressed it is smaller), key and headers (a value that is not text
/// goes as base64).
fn record_bytes(r: &Record) -> usize {
    let value = r.value.as_ref().map_or(0, Vec::len);
    let headers: usize = r.headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len) * 2).sum();
    value + r.key.as_ref().map_or(0, Vec::len) + headers
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn normalize_stage(
    mut batches: mpsc::Receiver<Vec<Record>>,
    lanes: Vec<mpsc::Sender<Prepared>>,
    dispatch: Arc<Dispatch>,
    modules: Arc<Modules>,
    metrics: Arc<Metrics>,
    compression: ValueCompression,
    in_flight: Arc<InFlight>,
) {
    while let Some(records) = batches.recv().await {
        let modules = modules.clone();
        let metrics = metrics.clone();
        let dispatch = dispatch.clone();
        let prepared =
            tokio::task::spawn_blocking(move || dispatch.split(prepare(records, &modules, &metrics, compression)))
                .await;
        match prepared {
            Ok(parts) => {
                // The batch was counted once; each part is written apart.
                let sent = parts.iter().filter(|p| p.is_some()).count();
                in_flight.batches.fetch_add(sent.saturating_sub(1), std::sync::atomic::Ordering::AcqRel);
                for (lane, part) in lanes.iter().zip(parts) {
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

/// Which writer each batch part goes to. A partition with rows in flight
/// (handed to a writer, offsets not yet stored) goes to that same writer,
/// which writes its parts in order; any other partition to the writer with
/// the fewest rows in flight. So a partition's parts are never written by
/// two writers at once, and its offsets are stored in order.
struct Dispatch {
    state: std::sync::Mutex<DispatchState>,
}

struct DispatchState {
    /// Per partition in flight: its writer and how many parts hold it.
    owners: HashMap<(String, i32), (usize, usize)>,
    /// Rows in flight per writer.
    load: Vec<usize>,
}

impl Dispatch {
    fn new(lanes: usize) -> Dispatch {
        Dispatch { state: std::sync::Mutex::new(DispatchState { owners: HashMap::new(), load: vec![0; lanes] }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DispatchState> {
        // The state is a few counters, consistent after every statement.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The batch as one part per writer (None for a writer it has nothing
    /// for), each partition's rows in their order, marked in flight.
    fn split(&self, batch: Prepared) -> Vec<Option<Prepared>> {
        let mut state = self.lock();
        let lanes = state.load.len();
        if lanes <= 1 {
            for key in batch.last_offsets.keys() {
                state.owners.entry(key.clone()).or_insert((0, 0)).1 += 1;
            }
            state.load[0] += batch.rows.len();
            return vec![Some(batch)];
        }
        let mut rows_of: HashMap<(String, i32), usize> = HashMap::new();
        for row in &batch.rows {
            *rows_of.entry((row.source_topic.clone(), row.kafka_partition.unwrap_or_default())).or_default() += 1;
        }
        // Partitions in flight first (their writer is fixed), then the
        // largest, each to the least-loaded writer.
        let mut keys: Vec<_> = rows_of.iter().map(|(k, n)| (k.clone(), *n)).collect();
        keys.sort_by_key(|(k, n)| (!state.owners.contains_key(k), std::cmp::Reverse(*n)));
        let mut lane_of: HashMap<(String, i32), usize> = HashMap::new();
        for (key, n) in keys {
            let lane = match state.owners.get(&key) {
                Some((lane, _)) => *lane,
                None => (0..lanes).min_by_key(|l| state.load[*l]).unwrap_or(0),
            };
            state.load[lane] += n;
            state.owners.entry(key.clone()).or_insert((lane, 0)).1 += 1;
            lane_of.insert(key, lane);
        }
        drop(state);
        let mut parts: Vec<Prepared> = (0..lanes)
            .map(|_| Prepared { rows: Vec::new(), last_offsets: HashMap::new(), per_topic: HashMap::new() })
            .collect();
        for row in batch.rows {
            let key = (row.source_topic.clone(), row.kafka_partition.unwrap_or_default());
            let part = &mut parts[lane_of.get(&key).copied().unwrap_or(0)];
            *part.per_topic.entry(row.source_topic.clone()).or_default() += 1;
            part.rows.push(row);
        }
        for (key, offset) in batch.last_offsets {
            let lane = lane_of.get(&key).copied().unwrap_or(0);
            parts[lane].last_offsets.insert(key, offset);
        }
        parts.into_iter().map(|p| (!p.rows.is_empty()).then_some(p)).collect()
    }

    /// A writer stored the offsets of a part it was given.
    fn done(&self, lane: usize, part: &Prepared) {
        let mut state = self.lock();
        if let Some(load) = state.load.get_mut(lane) {
            *load = load.saturating_sub(part.rows.len());
        }
        for key in part.last_offsets.keys() {
            if let Some((_, parts)) = state.owners.get_mut(key) {
                *parts = parts.saturating_sub(1);
                if *parts == 0 {
                    state.owners.remove(key);
                }
            }
        }
    }
}

/// Normalizes a batch and turns it into rows, compressing their values
/// (here, on the blocking thread, not on the writer's).
fn prepare(records: Vec<Record>, modules: &Modules, metrics: &Metrics, compression: ValueCompression) -> Prepared {
    let normalized = modules.normalize(&records);
    debug_assert_eq!(normalized.len(), records.len());
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
            let mut row = StoredRow::from_record(record, normalized);
            if compression == ValueCompression::Zstd {
                row.compress_value();
            }
            row
        })
        .collect();
    for (topic, n) in &per_topic {
        metrics.consumed.get_or_create(&TopicLabel { topic: topic.clone() }).inc_by(*n);
    }
    Prepared { rows, last_offsets, per_topic }
}

/// Writes every batch; returns whether all of them were written.
#[allow(clippy::too_many_arguments)]
async fn writer_stage(
    mut batches: mpsc::Receiver<Prepared>,
    db: Db,
    method: WriteMethod,
    db_config: DbConfig,
    consumer: Arc<HostConsumer>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    give_up: CancellationToken,
    in_flight: Arc<InFlight>,
    (dispatch, lane): (Arc<Dispatch>, usize),
) -> bool {
    let mut known = KnownPartitions::default();
    while let Some(batch) = batches.recv().await {
        let started = std::time::Instant::now();
        let window = partition_window(
            chrono::Utc::now(),
            db_config.partition_history_months,
            db_config.retention_days,
            db_config.partitions_ahead,
        );
        // Only an optimisation of where rows land: a failure here never stops
        // the batch (the rows go to the default partition), and an outage is
        // met by the write's own retries.
        match db.ensure_partitions_for(&mut known, &batch.rows, window).await {
            Ok(created) if !created.is_empty() => tracing::info!(?created, "Partitions created for the batch."),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "Could not create the batch's month partitions; its rows go to the default partition.")
            }
        }
        let span = tracing::info_span!("batch", rows = batch.rows.len(), topics = batch.per_topic.len());
        let written = write_with_retry(&db, &batch.rows, method, &status, &metrics, &give_up).instrument(span).await;
        if !written {
            // Storing the offsets of any later batch would skip this one.
            return false;
        }
        metrics.batch_write_seconds.observe(started.elapsed().as_secs_f64());
        metrics.batch_records.observe(batch.rows.len() as f64);
        for (topic, n) in &batch.per_topic {
            metrics.stored.get_or_create(&TopicLabel { topic: topic.clone() }).inc_by(*n);
        }
        let consumer = consumer.clone();
        let offsets = batch.last_offsets.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || kafka::store_offsets(&consumer, &offsets)).await {
            tracing::error!(%error, "Storing offsets failed.");
        }
        dispatch.done(lane, &batch);
        if in_flight.batches.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            in_flight.idle.notify_one();
        }
    }
    true
}

/// Writes one batch, retrying while the database is down or refuses every
/// row alike. A record PostgreSQL refuses is never a reason to retry: the
/// write path stores it in a reduced form and the batch goes on.
async fn write_with_retry(
    db: &Db,
    rows: &[StoredRow],
    method: WriteMethod,
    status: &Status,
    metrics: &Metrics,
    give_up: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let result = match method {
            WriteMethod::Copy => db.copy(rows).await,
            WriteMethod::Insert => db.insert(rows).await,
        };
        match result {
            Ok(written) => {
                if failures > 0 {
                    tracing::info!(failures, "Database writes succeed again.");
                }
                status.set_db_up(true);
                status.set_write_blocked(None);
                metrics.redelivered.inc_by((rows.len() as u64).saturating_sub(written.inserted));
                for r in &written.reduced {
                    metrics.reduced.get_or_create(&ReducedLabels { topic: r.topic.clone(), form: "last_resort" }).inc();
                }
                tracing::debug!(
                    rows = rows.len(),
                    inserted = written.inserted,
                    reduced = written.reduced.len(),
                    "Batch written."
                );
                return true;
            }
            Err(error) => {
                failures += 1;
                let log = failures == 1 || failures.is_multiple_of(20);
                let kind = match &error {
                    WriteError::Outage(_) => {
                        status.set_db_up(false);
                        if log {
                            tracing::warn!(%error, failures, "Database write failed; retrying with backoff.");
                        }
                        "outage"
                    }
                    WriteError::LastResortRefused { .. } => {
                        status.set_write_blocked(Some(error.to_string()));
                        if log {
                            tracing::error!(%error, failures, "The database refuses every row alike; ingestion waits and retries with backoff.");
                        }
                        "last_resort_refused"
                    }
                };
                metrics.write_failures.get_or_create(&KindLabel { kind }).inc();
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = give_up.cancelled() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Normalized;

    fn batch(parts: &[(&str, i32, i64)]) -> Prepared {
        let mut last_offsets = HashMap::new();
        let rows = parts
            .iter()
            .map(|&(topic, partition, offset)| {
                last_offsets.insert((topic.to_owned(), partition), offset);
                let record = Record {
                    topic: topic.into(),
                    partition,
                    offset,
                    timestamp: Some(1_743_760_800_000),
                    key: None,
                    headers: Vec::new(),
                    value: Some(b"{}".to_vec()),
                };
                StoredRow::from_record(
                    record,
                    Normalized { fields: Default::default(), normalizer: "default".into(), error: None },
                )
            })
            .collect();
        Prepared { rows, last_offsets, per_topic: HashMap::new() }
    }

    fn lanes_of(parts: &[Option<Prepared>]) -> Vec<Vec<(String, i32)>> {
        parts
            .iter()
            .map(|p| {
                let mut keys: Vec<_> = p.iter().flat_map(|p| p.last_offsets.keys().cloned()).collect();
                keys.sort();
                keys
            })
            .collect()
    }

    #[test]
    fn a_partition_in_flight_stays_on_its_writer_and_others_go_to_the_idle_one() {
        let d = Dispatch::new(2);
        let first = d.split(batch(&[("a", 0, 1), ("a", 0, 2)]));
        assert_eq!(lanes_of(&first), [vec![("a".to_owned(), 0)], vec![]]);
        // `a/0` is still being written by writer 0; `b/0` goes to writer 1.
        let second = d.split(batch(&[("a", 0, 3), ("b", 0, 1)]));
        assert_eq!(lanes_of(&second), [vec![("a".to_owned(), 0)], vec![("b".to_owned(), 0)]]);
        // Rows keep their order within a partition.
        let offsets: Vec<_> = second[0].iter().flat_map(|p| p.rows.iter().map(|r| r.kafka_offset)).collect();
        assert_eq!(offsets, [Some(3)]);
        // Once both of writer 0's parts are done, `a/0` may move.
        for part in first.iter().chain(&second[..1]).flatten() {
            d.done(0, part);
        }
        let third = d.split(batch(&[("a", 0, 4), ("a", 0, 5), ("a", 0, 6)]));
        assert_eq!(lanes_of(&third), [vec![("a".to_owned(), 0)], vec![]], "writer 0 is now the least loaded");
        let fourth = d.split(batch(&[("b", 0, 2)]));
        assert_eq!(lanes_of(&fourth), [vec![], vec![("b".to_owned(), 0)]], "b/0 is still on writer 1");
    }
}
