//! The batcher: the poll loop that collects consumed records into batches
//! bounded by count, bytes and time, and hands each to the normalize stage.
//!
//! When the later stages are behind it stops polling: librdkafka's bounded
//! prefetch queue then holds what is fetched, and nothing is discarded. Only
//! when that lasts (a database outage) are the partitions paused, so that
//! polling can resume and keep the consumer in its group.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Batch, InFlight};
use crate::config::PipelineConfig;
use crate::kafka::{self, HostConsumer};
use crate::metrics::Metrics;
use crate::record::Record;

/// How long the poll loop waits on a stalled writer before it pauses its
/// partitions to keep polling (and so its group membership).
const PAUSE_AFTER: Duration = Duration::from_secs(5);

/// How long a batch waits for more records while a writer is free: long
/// enough to take in the rest of a fetch, short against a write. Batching
/// adapts to the load: while the writers are busy, records gather (up to
/// `BATCH_LINGER`, `BATCH_SIZE` and the byte budget) and are written
/// together; as soon as one is free, what has gathered goes.
pub(super) const IDLE_LINGER: Duration = Duration::from_millis(2);

/// The poll loop's state.
pub(super) struct Batcher {
    consumer: Arc<HostConsumer>,
    /// Most records in a batch (`BATCH_SIZE`).
    batch_size: usize,
    /// Most record bytes in a batch: one statement must stay well under
    /// PostgreSQL's 1 GiB.
    max_bytes: usize,
    /// How long a record waits for its batch to fill while batches are in
    /// flight (`BATCH_LINGER`).
    linger: Duration,
    /// Batches the later stages hold; while a writer is free, a batch waits
    /// only [`IDLE_LINGER`].
    in_flight: Arc<InFlight>,
    /// Where the time a batch spent filling is observed.
    metrics: Arc<Metrics>,
    /// The batch being filled, its record bytes, and when its first record
    /// was received.
    batch: Vec<Record>,
    batch_bytes: usize,
    arrived: Option<std::time::Instant>,
    /// When the batch in hand must go, whether full or not.
    deadline: Option<Instant>,
    /// A full (or lingered) batch waiting for the normalize stage to take it.
    pending: Option<(Vec<Record>, std::time::Instant)>,
    /// Whether the partitions are paused (the later stages were blocked for
    /// [`PAUSE_AFTER`]).
    paused: bool,
}

impl Batcher {
    pub fn new(
        consumer: Arc<HostConsumer>,
        config: &PipelineConfig,
        in_flight: Arc<InFlight>,
        metrics: Arc<Metrics>,
    ) -> Batcher {
        let batch_size = config.batch_size as usize;
        Batcher {
            consumer,
            batch_size,
            max_bytes: usize::try_from(config.batch_max_bytes.unwrap_or(crate::budget::DEFAULT_BATCH_MAX_BYTES))
                .unwrap_or(usize::MAX),
            linger: config.batch_linger,
            in_flight,
            metrics,
            batch: Vec::with_capacity(batch_size),
            batch_bytes: 0,
            arrived: None,
            deadline: None,
            pending: None,
            paused: false,
        }
    }

    fn full(&self) -> bool {
        self.batch.len() >= self.batch_size || self.batch_bytes >= self.max_bytes
    }

    /// Moves the batch in hand to `pending`.
    fn close_batch(&mut self) {
        let records = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        let arrived = self.arrived.take().unwrap_or_else(std::time::Instant::now);
        self.pending = Some((records, arrived));
        self.batch_bytes = 0;
        self.deadline = None;
    }

    /// How long a new batch may wait: the whole linger while every writer
    /// is busy (the wait overlaps their writes), a moment while one is free.
    fn linger_now(&self) -> Duration {
        if self.in_flight.writer_free() { IDLE_LINGER.min(self.linger) } else { self.linger }
    }

    /// Polls and batches until `shutdown`, then hands over what it holds,
    /// in order, and closes the channel.
    pub async fn run(mut self, batches: mpsc::Sender<Batch>, shutdown: &CancellationToken) {
        let mut blocked_since: Option<Instant> = None;
        loop {
            if self.pending.is_none() && self.full() {
                self.close_batch();
            }
            let blocked = self.pending.is_some() && self.full();
            blocked_since = if blocked { blocked_since.or(Some(Instant::now())) } else { None };
            let pause_at = blocked_since.filter(|_| !self.paused).map(|t| t + PAUSE_AFTER);
            let linger = self.deadline.filter(|_| self.pending.is_none());
            let in_flight = self.in_flight.clone();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                permit = batches.reserve(), if self.pending.is_some() => {
                    let Ok(permit) = permit else { break };
                    if let Some((records, arrived)) = self.pending.take() {
                        self.in_flight.started(1);
                        let handed = std::time::Instant::now();
                        self.metrics.stage("batching", handed.duration_since(arrived));
                        permit.send(Batch { records, arrived, handed });
                    }
                    if self.paused {
                        kafka::set_paused(&self.consumer, false);
                        self.paused = false;
                    }
                }
                () = sleep_until(linger), if linger.is_some() => self.close_batch(),
                () = in_flight.idle.notified(), if !self.batch.is_empty() && self.pending.is_none() => {
                    // A writer just became free: the batch in hand need not
                    // wait out its linger.
                    if self.in_flight.writer_free() {
                        let soon = Instant::now() + IDLE_LINGER.min(self.linger);
                        self.deadline = Some(self.deadline.map_or(soon, |d| d.min(soon)));
                    }
                }
                () = sleep_until(pause_at), if pause_at.is_some() => {
                    tracing::info!("Writes are stalled; pausing consumption and staying in the group.");
                    kafka::set_paused(&self.consumer, true);
                    self.paused = true;
                }
                message = self.consumer.recv(), if !blocked || self.paused => match message {
                    Ok(message) if blocked => {
                        // Paused and full: polling only keeps the consumer
                        // in its group. A record that arrives anyway (a
                        // partition assigned before it could be paused) is
                        // given back, not held: memory stays bounded.
                        kafka::give_back(&self.consumer, &message);
                    }
                    Ok(message) => {
                        if self.batch.is_empty() {
                            self.deadline = Some(Instant::now() + self.linger_now());
                            self.arrived = Some(std::time::Instant::now());
                        }
                        let record = kafka::to_record(&message);
                        self.batch_bytes += record_bytes(&record);
                        self.batch.push(record);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Kafka consumer error.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }

        // Shutdown: hand over what is in hand, in order.
        let arrived = self.arrived.unwrap_or_else(std::time::Instant::now);
        let last = Some((self.batch, arrived));
        for (records, arrived) in [self.pending.take(), last].into_iter().flatten().filter(|(b, _)| !b.is_empty()) {
            self.in_flight.started(1);
            let batch = Batch { records, arrived, handed: std::time::Instant::now() };
            if batches.send(batch).await.is_err() {
                break;
            }
        }
    }
}

/// The bytes a record adds to a batch's statement at most: its value (as it
/// is; compressed it is smaller), key and headers (a value that is not text
/// goes as base64).
pub(super) fn record_bytes(r: &Record) -> usize {
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
