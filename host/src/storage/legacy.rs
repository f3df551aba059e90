//! The original service's database at a cut-over: its rows read in id
//! order (never written: its sessions are read-only), its recorded Kafka
//! positions, and the host's side of an import (rows stored with their
//! original ids, each once, and where an interrupted import stands).
//!
//! # Imported rows beside live ones
//!
//! An imported row has no Kafka coordinates, like a row created through the
//! API. The unique key of live rows, (topic, partition, offset, record
//! time), never matches a row whose partition and offset are NULL, so an
//! imported row can neither be taken for a redelivered record nor make one
//! be skipped. Its own key is the original's id, claimed in
//! `legacy_imported` by the statement that stores the row: a second import
//! stores nothing twice. What no key can tell is the same Kafka record
//! stored by both services (the original wrote no coordinates), so
//! [`Db::live_rows_before`] says where the host itself already stored
//! records the original had read, and the import refuses to run there.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Db, DbError};
use crate::record::Fields;

/// A row of the original's `notifications` table, as it stored it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LegacyRow {
    /// A UUID as text (`VARCHAR(36)`).
    pub notification_id: String,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    /// JSON text: the wrapper for Kafka rows, `{"message": …}` for API rows.
    pub event: String,
    pub status: Option<String>,
    /// Naive UTC: when the original inserted the row.
    pub created_at: Option<NaiveDateTime>,
    pub source_topic: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub source_service: Option<String>,
}

const LEGACY_COLUMNS: &str = "notification_id::text AS notification_id, customer_id::text AS customer_id, \
     runner_id::text AS runner_id, order_id::text AS order_id, event::text AS event, status::text AS status, \
     created_at, source_topic::text AS source_topic, event_type::text AS event_type, \
     correlation_id::text AS correlation_id, source_service::text AS source_service";

/// The columns the original's table has (and an import reads).
const EXPECTED_COLUMNS: [&str; 11] = [
    "notification_id",
    "customer_id",
    "runner_id",
    "order_id",
    "event",
    "status",
    "created_at",
    "source_topic",
    "event_type",
    "correlation_id",
    "source_service",
];

/// Which of the original's rows an import copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyScope {
    /// Every row.
    All,
    /// The rows created through its API (`source_topic 'api'`).
    Api,
}

impl LegacyScope {
    fn name(self) -> &'static str {
        match self {
            LegacyScope::All => "all",
            LegacyScope::Api => "api",
        }
    }

    /// The condition on the original's rows, with the id bound as `$1`.
    fn condition(self) -> &'static str {
        match self {
            LegacyScope::All => "($1::text IS NULL OR notification_id > $1)",
            LegacyScope::Api => "($1::text IS NULL OR notification_id > $1) AND source_topic = 'api'",
        }
    }
}

/// One position the original recorded in `kafka_offsets`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LegacyOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset it would have read.
    pub offset: i64,
}

/// The original service's database, read only.
#[derive(Debug, Clone)]
pub struct LegacyDb {
    pool: PgPool,
    source: String,
}

impl LegacyDb {
    /// Connects (every session read-only, so nothing here can change the
    /// original's tables) and checks that `notifications` is the original
    /// service's table.
    pub async fn open(url: &str) -> anyhow::Result<LegacyDb> {
        use anyhow::Context as _;
        let options: PgConnectOptions =
            url.parse().context("the original's database URL is not a valid PostgreSQL URL")?;
        let source =
            format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
        let options = options
            .application_name("notification-host import")
            .options([("default_transaction_read_only", "on"), ("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to the original's database {source}"))?;
        let db = LegacyDb { pool, source };
        db.check_shape().await?;
        Ok(db)
    }

    /// `host:port/database`: names the source without its credentials.
    pub fn source(&self) -> &str {
        &self.source
    }

    async fn check_shape(&self) -> anyhow::Result<()> {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
             WHERE a.attrelid = to_regclass('notifications') AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::from)?;
        if columns.is_empty() {
            anyhow::bail!(
                "{} has no `notifications` table where its search path looks: is it the original service's database?",
                self.source
            );
        }
        let missing: Vec<&str> =
            EXPECTED_COLUMNS.iter().copied().filter(|c| !columns.iter().any(|(name, _)| name == c)).collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "{}'s `notifications` is not the original service's table: it has no {}",
                self.source,
                missing.join(", ")
            );
        }
        if columns.iter().any(|(name, ty)| name == "notification_id" && ty == "bigint") {
            anyhow::bail!(
                "{}'s `notifications` is the host's own table (notification_id bigint), not the original service's",
                self.source
            );
        }
        Ok(())
    }

    /// How many rows of `scope` there are after `after` (all when None).
    pub async fn count(&self, scope: LegacyScope, after: Option<&str>) -> Result<u64, DbError> {
        let sql = format!("SELECT count(*) FROM notifications WHERE {}", scope.condition());
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(after).fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// The next rows of `scope` in id order after `after`, at most `limit`.
    pub async fn page(&self, scope: LegacyScope, after: Option<&str>, limit: u32) -> Result<Vec<LegacyRow>, DbError> {
        let sql = format!(
            "SELECT {LEGACY_COLUMNS} FROM notifications WHERE {} ORDER BY notification_id LIMIT $2",
            scope.condition()
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await?)
    }

    /// The positions the original recorded, or None when it has no
    /// `kafka_offsets` table.
    pub async fn offsets(&self) -> Result<Option<Vec<LegacyOffset>>, DbError> {
        let found = sqlx::query_as(
            "SELECT topic::text AS topic, partition, \"offset\" AS offset FROM kafka_offsets \
             WHERE topic IS NOT NULL AND partition IS NOT NULL ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::from);
        match found {
            Ok(rows) => Ok(Some(rows)),
            Err(DbError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Order ids the original holds (placeholders left out): `limit` at
    /// random, or every one in order when None.
    pub async fn order_ids(&self, limit: Option<u32>) -> Result<Vec<String>, DbError> {
        let inner = "SELECT DISTINCT order_id::text AS order_id FROM notifications \
                     WHERE order_id IS NOT NULL AND order_id NOT IN ('', 'unknown', 'unavailable')";
        let ids = match limit {
            Some(n) => {
                let sql = format!("SELECT order_id FROM ({inner}) o ORDER BY random() LIMIT $1");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(i64::from(n)).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("SELECT order_id FROM ({inner}) o ORDER BY 1");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?
            }
        };
        Ok(ids)
    }

    /// Every row of one order, as the original's `GET /order/{id}` read
    /// them (in insert-time order).
    pub async fn order_rows(&self, order_id: &str) -> Result<Vec<LegacyRow>, DbError> {
        let sql = format!(
            "SELECT {LEGACY_COLUMNS} FROM notifications WHERE order_id = $1 ORDER BY created_at, notification_id"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_all(&self.pool).await?)
    }
}

/// An original row as the host stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    /// The original's id.
    pub legacy_id: String,
    /// Its ids, placeholders already absent.
    pub fields: Fields,
    /// Its `event` as the row's JSON document, when PostgreSQL's JSONB
    /// takes it; otherwise None and the text is in `raw_value`.
    pub document: Option<String>,
    pub raw_value: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub source_topic: String,
    pub ingest_note: Option<String>,
}

/// Where an import of one source and scope stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProgress {
    /// The original's id of the last row committed, when resuming.
    pub after_id: Option<String>,
    /// Rows read and imported by the earlier, interrupted, runs.
    pub rows_read: u64,
    pub imported: u64,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchImported {
    /// Rows stored now.
    pub imported: u64,
    /// Rows an earlier import already stored.
    pub present: u64,
}

impl Db {
    /// Starts an import of `source`: continues an unfinished one (its
    /// position and counts), or starts over from the first row.
    pub async fn begin_legacy_import(&self, source: &str, scope: LegacyScope) -> Result<ImportProgress, DbError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            after_id: Option<String>,
            rows_read: i64,
            imported: i64,
        }
        let row: Row = sqlx::query_as(
            "INSERT INTO legacy_import_progress (source, scope) VALUES ($1, $2) \
             ON CONFLICT (source, scope) DO UPDATE SET \
               after_id = CASE WHEN legacy_import_progress.finished_at IS NULL THEN legacy_import_progress.after_id END, \
               rows_read = CASE WHEN legacy_import_progress.finished_at IS NULL THEN legacy_import_progress.rows_read ELSE 0 END, \
               imported = CASE WHEN legacy_import_progress.finished_at IS NULL THEN legacy_import_progress.imported ELSE 0 END, \
               started_at = CASE WHEN legacy_import_progress.finished_at IS NULL THEN legacy_import_progress.started_at ELSE now() END, \
               updated_at = now(), finished_at = NULL \
             RETURNING after_id, rows_read, imported",
        )
        .bind(source)
        .bind(scope.name())
        .fetch_one(&self.admin)
        .await?;
        Ok(ImportProgress {
            after_id: row.after_id,
            rows_read: u64::try_from(row.rows_read).unwrap_or_default(),
            imported: u64::try_from(row.imported).unwrap_or_default(),
        })
    }

    /// Stores one batch of original rows, each unless an earlier import
    /// stored it, and moves the import's position to `last_id`, in one
    /// transaction: an interruption loses no more than this batch, which
    /// the next run reads again.
    pub async fn import_legacy_batch(
        &self,
        source: &str,
        scope: LegacyScope,
        rows: &[ImportRow],
        last_id: &str,
    ) -> Result<BatchImported, DbError> {
        let mut tx = self.writes.begin().await?;
        let imported = match insert_imported(&mut tx, rows).await.map_err(DbError::from) {
            Ok(n) => n,
            Err(DbError::Refused(_)) => {
                // A document the checks let through and JSONB refused: the
                // batch again, row by row, such a row's text kept as its value.
                drop(tx);
                tx = self.writes.begin().await?;
                let mut n = 0;
                for row in rows {
                    n += insert_one_keeping_text(&mut tx, row).await?;
                }
                n
            }
            Err(e) => return Err(e),
        };
        let read = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE legacy_import_progress SET after_id = $3, rows_read = rows_read + $4, imported = imported + $5, \
             updated_at = now() WHERE source = $1 AND scope = $2",
        )
        .bind(source)
        .bind(scope.name())
        .bind(last_id)
        .bind(read)
        .bind(i64::try_from(imported).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BatchImported { imported, present: (rows.len() as u64).saturating_sub(imported) })
    }

    /// Marks the import of `source` finished: the next one starts over.
    pub async fn finish_legacy_import(&self, source: &str, scope: LegacyScope) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE legacy_import_progress SET finished_at = now(), updated_at = now() WHERE source = $1 AND scope = $2",
        )
        .bind(source)
        .bind(scope.name())
        .execute(&self.admin)
        .await?;
        Ok(())
    }

    /// Of `positions` (where the original stopped reading), those before
    /// which the host itself already stored a record of that partition:
    /// records both services stored, which an import of the original's
    /// Kafka rows would store a second time.
    pub async fn live_rows_before(&self, positions: &[LegacyOffset]) -> Result<Vec<LegacyOffset>, DbError> {
        let topics: Vec<&str> = positions.iter().map(|p| p.topic.as_str()).collect();
        let partitions: Vec<i32> = positions.iter().map(|p| p.partition).collect();
        let offsets: Vec<i64> = positions.iter().map(|p| p.offset).collect();
        Ok(sqlx::query_as(
            "SELECT t.topic, t.partition, t.offset FROM UNNEST($1::text[], $2::int4[], $3::int8[]) \
             AS t(topic, partition, \"offset\") WHERE EXISTS (SELECT 1 FROM notifications n \
             WHERE n.source_topic = t.topic AND n.kafka_partition = t.partition AND n.kafka_offset < t.offset) \
             ORDER BY 1, 2",
        )
        .bind(topics)
        .bind(partitions)
        .bind(offsets)
        .fetch_all(&self.reads)
        .await?)
    }
}

/// Stores `rows` whose original ids no import claimed yet; how many.
async fn insert_imported(conn: &mut sqlx::PgConnection, rows: &[ImportRow]) -> Result<u64, sqlx::Error> {
    let col = |f: &dyn Fn(&ImportRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let n: i64 = sqlx::query_scalar(IMPORT_SQL)
        .bind(rows.iter().map(|r| r.legacy_id.clone()).collect::<Vec<_>>())
        .bind(col(&|r| r.fields.customer_id.clone()))
        .bind(col(&|r| r.fields.runner_id.clone()))
        .bind(col(&|r| r.fields.order_id.clone()))
        .bind(col(&|r| r.document.clone()))
        .bind(rows.iter().map(|r| r.raw_value.clone()).collect::<Vec<_>>())
        .bind(col(&|r| r.fields.status.clone()))
        .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source_topic.clone()).collect::<Vec<_>>())
        .bind(col(&|r| r.fields.event_type.clone()))
        .bind(col(&|r| r.fields.correlation_id.clone()))
        .bind(col(&|r| r.fields.source_service.clone()))
        .bind(col(&|r| r.ingest_note.clone()))
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// One row in a savepoint of its own; when PostgreSQL refuses its document,
/// again with the document's text kept as the row's value (and a note).
async fn insert_one_keeping_text(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    row: &ImportRow,
) -> Result<u64, DbError> {
    let mut savepoint = sqlx::Acquire::begin(&mut **tx).await?;
    match insert_imported(&mut savepoint, std::slice::from_ref(row)).await.map_err(DbError::from) {
        Ok(n) => {
            savepoint.commit().await?;
            Ok(n)
        }
        Err(DbError::Refused(e)) => {
            savepoint.rollback().await?;
            let reason = super::write::database_reason(&e);
            let mut kept = row.clone();
            if let Some(document) = kept.document.take() {
                kept.raw_value = Some(document.into_bytes());
            }
            let note = format!("PostgreSQL refused the original's event as a JSON document ({reason}); kept as text");
            kept.ingest_note = Some(match kept.ingest_note.take() {
                Some(earlier) => format!("{earlier}; {note}"),
                None => note,
            });
            Ok(insert_imported(tx, std::slice::from_ref(&kept)).await?)
        }
        Err(e) => Err(e),
    }
}

/// A batch as one statement: claims each original id in `legacy_imported`
/// and stores the rows whose claim is new, in the same statement, so a row
/// is stored exactly when its id is claimed.
const IMPORT_SQL: &str = "WITH src AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
     $5::text[], $6::bytea[], $7::text[], $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[], \
     $13::text[]) AS t(legacy_id, customer_id, runner_id, order_id, event, raw_value, status, created_at, \
     source_topic, event_type, correlation_id, source_service, ingest_note)), \
     claimed AS (INSERT INTO legacy_imported (legacy_id) SELECT legacy_id FROM src \
       ON CONFLICT (legacy_id) DO NOTHING RETURNING legacy_id), \
     stored AS (INSERT INTO notifications (legacy_id, customer_id, runner_id, order_id, event, raw_value, status, \
       created_at, source_topic, event_type, correlation_id, source_service, ingest_note) \
       SELECT s.legacy_id, s.customer_id, s.runner_id, s.order_id, s.event::jsonb, s.raw_value, s.status, \
       s.created_at, s.source_topic, s.event_type, s.correlation_id, s.source_service, s.ingest_note \
       FROM src s JOIN claimed c ON c.legacy_id = s.legacy_id RETURNING 1) \
     SELECT count(*) FROM stored";
