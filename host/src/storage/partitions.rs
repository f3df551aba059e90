//! Monthly partitions: created ahead and, by the write path, for the months
//! a batch needs; expired ones dropped by retention.

use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use tokio_util::sync::CancellationToken;

use super::DbError;
use super::{Db, StoredRow};
use crate::config::DbConfig;

impl Db {
    /// Creates the monthly partitions from `from` to `to` (inclusive months)
    /// that do not exist yet. Rows already in the default partition for such
    /// a month move into the new partition. Safe to run from every replica
    /// at once (an advisory lock serializes them).
    pub async fn ensure_partitions(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<String>, DbError> {
        let mut created = Vec::new();
        let mut month = first_of_month(from);
        while month <= to {
            let next = next_month(month);
            let name = format!("notifications_{}", month.format("%Y_%m"));
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notifications_partitions'))").execute(&mut *tx).await?;
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(&mut *tx).await?;
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
                created.push(name);
            }
            tx.commit().await?;
            month = next;
        }
        Ok(created)
    }

    /// Drops every monthly partition that ends before `cutoff`, and deletes
    /// the default partition's rows older than it. Returns the dropped
    /// partitions.
    pub async fn drop_expired(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>, DbError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('notifications_partitions'))").execute(&mut *tx).await?;
        let partitions: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'notifications'::regclass AND c.relname ~ '^notifications_[0-9]{4}_[0-9]{2}$'",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut dropped = Vec::new();
        for name in partitions {
            let Some(month) =
                NaiveDate::parse_from_str(&format!("{}_01", &name["notifications_".len()..]), "%Y_%m_%d").ok()
            else {
                continue;
            };
            let end = next_month(month).and_hms_opt(0, 0, 0).map(|t| t.and_utc());
            if end.is_some_and(|end| end <= cutoff) {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {name}"))).execute(&mut *tx).await?;
                dropped.push(name);
            }
        }
        // Records without a timestamp stand at the epoch; their age is when
        // they were stored.
        sqlx::query(
            "DELETE FROM notifications_default WHERE (created_at <> 'epoch' AND created_at < $1) \
             OR (created_at = 'epoch' AND stored_at < $1)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(dropped)
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
            created.extend(self.ensure_partitions(month, month).await?);
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
pub async fn maintain_partitions(db: Db, config: DbConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.maintenance_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = maintenance(&db, &config, chrono::Utc::now()).await {
            tracing::warn!(error = %format!("{error:#}"), "Partition maintenance failed; retrying at the next interval.");
        }
    }
}

/// One maintenance pass: partitions from the retention start (or the current
/// month) to `partitions_ahead` months ahead, then retention.
pub async fn maintenance(db: &Db, config: &DbConfig, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
    let today = now.date_naive();
    let cutoff = config.retention_days.map(|d| now - chrono::Duration::days(i64::from(d)));
    let from = cutoff.map_or(today, |c| c.date_naive().max(today - chrono::Duration::days(3660)));
    let to = today.checked_add_months(chrono::Months::new(config.partitions_ahead)).unwrap_or(today);
    let created = db.ensure_partitions(from, to).await?;
    if !created.is_empty() {
        tracing::info!(?created, "Partitions created.");
    }
    if let Some(cutoff) = cutoff {
        let dropped = db.drop_expired(cutoff).await?;
        if !dropped.is_empty() {
            tracing::info!(?dropped, %cutoff, "Expired partitions dropped.");
        }
    }
    Ok(())
}
