//! A writer: one database connection's share of the batches. It writes each
//! part it is given as one transaction, retrying while the database is
//! unreachable, and stores the part's offsets only after its commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::dispatch::Dispatch;
use super::{InFlight, Prepared};
use crate::config::WriteMethod;
use crate::kafka::{self, HostConsumer};
use crate::metrics::{KindLabel, Metrics, ReducedLabels};
use crate::status::Status;
use crate::storage::{Db, Partitioner, StoredRow, WriteError};

/// One writer and everything it needs.
pub(super) struct Writer {
    pub db: Db,
    /// `COPY` or `INSERT` (`WRITE_METHOD`).
    pub method: WriteMethod,
    /// Creates the month partitions a part needs before it is written, so
    /// rows land in their month rather than the default partition.
    pub partitions: Partitioner,
    /// Where the part's offsets are stored once it is committed.
    pub consumer: Arc<HostConsumer>,
    /// Readiness: whether the database answers and writes succeed.
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    /// Fires when shutdown has waited long enough: an unwritten part is
    /// then abandoned (its records are consumed again on the next start).
    pub give_up: CancellationToken,
    /// Batches handed over and not yet written, for the poll loop's linger.
    pub in_flight: Arc<InFlight>,
    /// Told when a part's offsets are stored, so its partitions may move.
    pub dispatch: Arc<Dispatch>,
    /// This writer's lane in `dispatch`.
    pub lane: usize,
}

impl Writer {
    /// Writes every part it is given; returns whether all of them were
    /// written.
    pub async fn run(mut self, mut parts: mpsc::Receiver<Prepared>) -> bool {
        while let Some(part) = parts.recv().await {
            self.metrics.stage("write_wait", part.marks.sent.elapsed());
            self.in_flight.doing(self.lane + 1, Some(format!("writing {} rows", part.rows.len())));
            let written = self.write(&part).await;
            self.in_flight.doing(self.lane + 1, None);
            if !written {
                // Storing the offsets of any later part would skip this one.
                return false;
            }
            self.dispatch.done(self.lane, &part);
            self.in_flight.finished();
        }
        true
    }

    /// Writes one part and stores its offsets; false when shutdown gave up.
    async fn write(&mut self, part: &Prepared) -> bool {
        let started = std::time::Instant::now();
        // Only an optimisation of where rows land: a failure here never stops
        // the part (the rows go to the default partition), and an outage is
        // met by the write's own retries.
        match self.partitions.prepare(&self.db, &part.rows).await {
            Ok(created) if !created.is_empty() => tracing::info!(?created, "Partitions created for the batch."),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "Could not create the batch's month partitions; its rows go to the default partition.")
            }
        }
        let span = tracing::info_span!("batch", rows = part.rows.len(), topics = part.per_topic.len());
        let writing = std::time::Instant::now();
        if !self.write_with_retry(&part.rows).instrument(span).await {
            return false;
        }
        self.metrics.stage("write", writing.elapsed());
        self.metrics.batch_write_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_records.observe(part.rows.len() as f64);
        for (topic, n) in &part.per_topic {
            self.metrics.stored.get_or_create(&self.metrics.topic(topic)).inc_by(*n);
        }
        let consumer = self.consumer.clone();
        let offsets = part.last_offsets.clone();
        let storing = std::time::Instant::now();
        if let Err(error) = tokio::task::spawn_blocking(move || kafka::store_offsets(&consumer, &offsets)).await {
            tracing::error!(%error, "Storing offsets failed.");
        }
        self.metrics.stage("offsets", storing.elapsed());
        self.metrics.stage("in_process", part.marks.arrived.elapsed());
        true
    }

    /// Writes one part, retrying while the database is down or refuses every
    /// row alike. A record PostgreSQL refuses is never a reason to retry: the
    /// write path stores it in a reduced form and the part goes on.
    async fn write_with_retry(&self, rows: &[StoredRow]) -> bool {
        let mut delay = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            let result = match self.method {
                WriteMethod::Copy => self.db.copy(rows).await,
                WriteMethod::Insert => self.db.insert(rows).await,
            };
            match result {
                Ok(written) => {
                    if failures > 0 {
                        tracing::info!(failures, "Database writes succeed again.");
                    }
                    self.status.set_db_up(true);
                    self.status.set_write_blocked(None);
                    self.metrics.redelivered.inc_by((rows.len() as u64).saturating_sub(written.inserted));
                    self.metrics.notify_failures.inc_by(written.notify_failures);
                    for r in &written.reduced {
                        self.metrics
                            .reduced
                            .get_or_create(&ReducedLabels { topic: r.topic.clone(), form: "last_resort" })
                            .inc();
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
                            self.status.set_db_up(false);
                            if log {
                                tracing::warn!(%error, failures, "Database write failed; retrying with backoff.");
                            }
                            "outage"
                        }
                        WriteError::LastResortRefused { .. } => {
                            self.status.set_write_blocked(Some(error.to_string()));
                            if log {
                                tracing::error!(%error, failures, "The database refuses every row alike; ingestion waits and retries with backoff.");
                            }
                            "last_resort_refused"
                        }
                    };
                    self.metrics.write_failures.get_or_create(&KindLabel { kind }).inc();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.give_up.cancelled() => return false,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
