//! Monthly partitions: created ahead and, by the write path, for the months
//! a batch needs; expired ones dropped by retention.
//!
//! Maintenance never makes ingestion or reads queue behind it. Creating,
//! attaching and dropping a partition take locks that every statement on the
//! table would wait behind, and the lock waits behind the slowest statement
//! already running: so each such step waits at most [`LOCK_TIMEOUT`] for its
//! lock, gives up (the waiting statements go on) and is retried a few times
//! with a pause, and otherwise at the next run. Rows are deleted in small
//! batches, each its own transaction.
//!
//! A row is expired when both its record time and the time it was stored
//! are before the cutoff: a backfill of old history, or a producer whose
//! clock is years behind, is kept `RETENTION_DAYS` from when it arrived, not
//! deleted on arrival.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::DbError;
use super::{Db, StoredRow};
use crate::config::DbConfig;
use crate::metrics::Metrics;

/// How long a maintenance statement waits for a lock before it gives up.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// Attempts of one step within a run, and the pause between them.
const LOCK_ATTEMPTS: u32 = 5;
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Rows one retention delete removes.
const DELETE_BATCH: i64 = 1000;

/// What a retention run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Partitions dropped whole.
    pub dropped: Vec<String>,
    /// Rows deleted one batch at a time (from the default partition, and
    /// from expired months that hold rows stored after the cutoff).
    pub deleted: u64,
    /// Steps that gave up waiting for a lock (retried at the next run).
    pub lock_timeouts: u64,
}

impl Db {
    /// Creates the monthly partitions from `from` to `to` (inclusive months)
    /// that do not exist yet, on the host's own connections. Rows already
    /// in the default partition for such a month move into the new
    /// partition. Safe to run from every replica at once (an advisory lock
    /// serializes them).
    pub async fn ensure_partitions(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<String>, DbError> {
        let mut lock_timeouts = 0;
        let created = self.ensure_partitions_counting(from, to, &mut lock_timeouts).await?;
        if lock_timeouts > 0 {
            tracing::debug!(lock_timeouts, "Creating partitions gave up waiting for a lock; the next run retries.");
        }
        Ok(created)
    }

    /// [`Db::ensure_partitions`], counting the steps that gave up waiting
    /// for a lock ([`LOCK_ATTEMPTS`] times each): those months are left for
    /// the next run.
    async fn ensure_partitions_counting(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        lock_timeouts: &mut u64,
    ) -> Result<Vec<String>, DbError> {
        let mut created = Vec::new();
        let mut month = first_of_month(from);
        while month <= to {
            let mut made = false;
            for attempt in 1..=LOCK_ATTEMPTS {
                match create_partition(&self.admin, month).await {
                    Ok(name) => {
                        created.extend(name);
                        made = true;
                        break;
                    }
                    Err(DbError::TimedOut(_)) => {
                        *lock_timeouts += 1;
                        if attempt < LOCK_ATTEMPTS {
                            tokio::time::sleep(LOCK_RETRY_PAUSE).await;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if !made {
                // What held this lock holds the next month's too: the next
                // run takes up the rest.
                break;
            }
            month = next_month(month);
        }
        Ok(created)
    }
}

/// Creates `month`'s partition unless it exists, waiting at most
/// [`LOCK_TIMEOUT`] for its locks; its name when created.
async fn create_partition(pool: &PgPool, month: NaiveDate) -> Result<Option<String>, DbError> {
    let month = first_of_month(month);
    let next = next_month(month);
    let name = format!("notifications_{}", month.format("%Y_%m"));
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = '{}ms'", LOCK_TIMEOUT.as_millis())))
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notifications_partitions'))").execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(&mut *tx).await?;
    if !exists {
        let (lo, hi) = (month.format("%Y-%m-%d").to_string(), next.format("%Y-%m-%d").to_string());
        // Names and bounds come from dates formatted here, never from input.
        for sql in [
            format!("CREATE TABLE {name} (LIKE notifications INCLUDING DEFAULTS INCLUDING STORAGE)"),
            format!(
                "WITH moved AS (DELETE FROM notifications_default WHERE created_at >= '{lo}' AND created_at < '{hi}' RETURNING *) \
                 INSERT INTO {name} SELECT * FROM moved"
            ),
            format!("ALTER TABLE notifications ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok((!exists).then_some(name))
}

impl Db {
    /// Removes expired rows: a month partition that ended before `cutoff`
    /// is dropped whole when none of its rows was stored after the cutoff,
    /// and otherwise loses its rows stored before it, in batches; the
    /// default partition loses its rows whose record time and stored time
    /// are both before the cutoff, in batches. No step waits longer than
    /// [`LOCK_TIMEOUT`] for a lock; one that gives up
    /// [`LOCK_ATTEMPTS`] times is left for the next run.
    pub async fn drop_expired(&self, cutoff: DateTime<Utc>) -> Result<Retention, DbError> {
        let mut done = Retention::default();
        let partitions: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'notifications'::regclass AND c.relname ~ '^notifications_[0-9]{4}_[0-9]{2}$'",
        )
        .fetch_all(&self.admin)
        .await?;
        for name in partitions {
            let Some(month) =
                NaiveDate::parse_from_str(&format!("{}_01", &name["notifications_".len()..]), "%Y_%m_%d").ok()
            else {
                continue;
            };
            let end = next_month(month).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
            if end.is_none_or(|end| end > cutoff) {
                continue;
            }
            // The name comes from the catalogue and matched the pattern above.
            let stored_since: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM ONLY {name} WHERE stored_at >= $1)"
            )))
            .bind(cutoff)
            .fetch_one(&self.admin)
            .await?;
            if stored_since {
                done.deleted += self.delete_batches(&name, "stored_at < $1", cutoff, &mut done.lock_timeouts).await?;
                continue;
            }
            let sql = format!("DROP TABLE {name}");
            if self.with_lock_timeout(&sql, &mut done.lock_timeouts).await? {
                done.dropped.push(name);
            } else {
                // What held this lock holds the next one too: the next run
                // takes up the rest.
                break;
            }
        }
        // Records without a timestamp stand at the epoch; like every other
        // row, they expire once they were stored before the cutoff.
        done.deleted += self
            .delete_batches(
                "notifications_default",
                "created_at < $1 AND stored_at < $1",
                cutoff,
                &mut done.lock_timeouts,
            )
            .await?;
        Ok(done)
    }

    /// Runs one DDL statement under [`LOCK_TIMEOUT`], retrying; false when
    /// every attempt gave up waiting for its lock.
    async fn with_lock_timeout(&self, sql: &str, lock_timeouts: &mut u64) -> Result<bool, DbError> {
        for attempt in 1..=LOCK_ATTEMPTS {
            let mut tx = self.admin.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = '{}ms'", LOCK_TIMEOUT.as_millis())))
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notifications_partitions'))").execute(&mut *tx).await?;
            match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut *tx).await.map_err(DbError::from) {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(true);
                }
                Err(DbError::TimedOut(_)) => {
                    *lock_timeouts += 1;
                    tracing::debug!(sql, attempt, "A maintenance statement gave up waiting for its lock.");
                    drop(tx);
                    tokio::time::sleep(LOCK_RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Deletes `table`'s rows matching `condition` (on `$1`), a batch of
    /// [`DELETE_BATCH`] rows per transaction; returns how many. A batch
    /// that times out on a lock ends the run for this table.
    async fn delete_batches(
        &self,
        table: &str,
        condition: &str,
        cutoff: DateTime<Utc>,
        lock_timeouts: &mut u64,
    ) -> Result<u64, DbError> {
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ONLY {table} WHERE {condition} LIMIT {DELETE_BATCH}))"
        );
        let mut deleted = 0;
        loop {
            let mut tx = self.admin.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = '{}ms'", LOCK_TIMEOUT.as_millis())))
                .execute(&mut *tx)
                .await?;
            match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(DbError::from)
            {
                Ok(r) => {
                    tx.commit().await?;
                    deleted += r.rows_affected();
                    if r.rows_affected() < DELETE_BATCH as u64 {
                        return Ok(deleted);
                    }
                }
                Err(DbError::TimedOut(_)) => {
                    *lock_timeouts += 1;
                    return Ok(deleted);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The months the write path creates partitions for, first days inclusive:
/// from `history_months` back (or the retention cutoff, if later) to
/// `ahead` months ahead of `now`.
pub fn partition_window(
    now: DateTime<Utc>,
    history_months: u32,
    retention_days: Option<u32>,
    ahead: u32,
) -> (NaiveDate, NaiveDate) {
    let today = now.date_naive();
    let history = today.checked_sub_months(chrono::Months::new(history_months)).unwrap_or(today);
    let retained = retention_days.map(|d| today - chrono::Duration::days(i64::from(d)));
    let from = retained.map_or(history, |r| r.max(history));
    let to = today.checked_add_months(chrono::Months::new(ahead)).unwrap_or(today);
    (first_of_month(from), first_of_month(to))
}

/// The month partitions this process knows exist, so that the write path
/// asks PostgreSQL at most once per month.
#[derive(Debug, Default)]
pub struct KnownPartitions(std::collections::BTreeSet<NaiveDate>);

/// What a writer does before each batch: creates the month partitions the
/// batch's rows need, within the window `DbConfig` sets around now.
#[derive(Debug)]
pub struct Partitioner {
    known: KnownPartitions,
    history_months: u32,
    retention_days: Option<u32>,
    ahead: u32,
}

impl Partitioner {
    pub fn new(config: &DbConfig) -> Partitioner {
        Partitioner {
            known: KnownPartitions::default(),
            history_months: config.partition_history_months,
            retention_days: config.retention_days,
            ahead: config.partitions_ahead,
        }
    }

    /// Creates the partitions `rows` need that this writer has not seen
    /// yet; returns the ones created.
    pub async fn prepare(&mut self, db: &Db, rows: &[StoredRow]) -> Result<Vec<String>, DbError> {
        let window = partition_window(Utc::now(), self.history_months, self.retention_days, self.ahead);
        db.ensure_partitions_for(&mut self.known, rows, window).await
    }
}

impl Db {
    /// Creates the month partitions `rows` need, within `window`, that this
    /// process has not seen yet, before the rows are written: rows then land
    /// in their month, not in the default partition (which retention cannot
    /// shrink, and from which a later partition would have to move them under
    /// a lock). Rows outside the window go to the default partition.
    pub async fn ensure_partitions_for(
        &self,
        known: &mut KnownPartitions,
        rows: &[StoredRow],
        window: (NaiveDate, NaiveDate),
    ) -> Result<Vec<String>, DbError> {
        let months: std::collections::BTreeSet<NaiveDate> = rows
            .iter()
            .map(|r| first_of_month(r.created_at.date_naive()))
            .filter(|m| (window.0..=window.1).contains(m) && !known.0.contains(m))
            .collect();
        let mut created = Vec::new();
        for month in months {
            created.extend(create_partition(&self.writes, month).await?);
            known.0.insert(month);
        }
        Ok(created)
    }
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn next_month(d: NaiveDate) -> NaiveDate {
    let d = first_of_month(d);
    d.checked_add_months(chrono::Months::new(1)).unwrap_or(d)
}

/// Creates monthly partitions ahead and drops expired ones, at start and
/// every `maintenance_interval`.
pub async fn maintain_partitions(db: Db, config: DbConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.maintenance_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match maintenance(&db, &config, chrono::Utc::now()).await {
            Ok(lock_timeouts) => {
                metrics.maintenance_lock_timeouts.inc_by(lock_timeouts);
            }
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "Partition maintenance failed; retrying at the next interval.")
            }
        }
    }
}

/// One maintenance pass: partitions from the retention start (or the current
/// month) to `partitions_ahead` months ahead, then retention. Returns how
/// many steps gave up waiting for a lock.
pub async fn maintenance(db: &Db, config: &DbConfig, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<u64> {
    let today = now.date_naive();
    let cutoff = config.retention_days.map(|d| now - chrono::Duration::days(i64::from(d)));
    let from = cutoff.map_or(today, |c| c.date_naive().max(today - chrono::Duration::days(3660)));
    let to = today.checked_add_months(chrono::Months::new(config.partitions_ahead)).unwrap_or(today);
    let mut lock_timeouts = 0;
    let created = db.ensure_partitions_counting(from, to, &mut lock_timeouts).await?;
    if !created.is_empty() {
        tracing::info!(?created, "Partitions created.");
    }
    if let Some(cutoff) = cutoff {
        let done = db.drop_expired(cutoff).await?;
        if !done.dropped.is_empty() || done.deleted > 0 {
            tracing::info!(dropped = ?done.dropped, deleted = done.deleted, %cutoff, "Expired records removed.");
        }
        lock_timeouts += done.lock_timeouts;
    }
    if lock_timeouts > 0 {
        tracing::info!(
            lock_timeouts,
            "Some maintenance steps gave up waiting for a lock rather than hold up reads and writes; the next run retries them."
        );
    }
    Ok(lock_timeouts)
}
