//! PostgreSQL: the pool, the migrations and every query. Nothing else in the
//! host speaks SQL.
//!
//! # Exactly one row per record
//!
//! Every Kafka record has a natural key, (topic, partition, offset), and the
//! table has a unique constraint on it. Batches are written with
//! `INSERT .. ON CONFLICT DO NOTHING`, so writing a record twice is harmless,
//! and the consumer stores a batch's offsets only after its transaction has
//! committed. A crash, a restart or a rebalance can therefore make Kafka
//! redeliver records (at-least-once delivery), but never produce a second
//! row, and no offset is ever committed for a record that is not stored.
//!
//! The alternative, keeping consumer offsets in PostgreSQL in the same
//! transaction, would also be exact but takes offset management away from the
//! consumer group (lag monitoring, `kafka-consumer-groups` resets, seeking on
//! every assignment) for no gain: the unique key already has to exist for the
//! audit log to be trustworthy.

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use serde_json::value::RawValue;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::record::{Fields, Header, Normalized, Record};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The database handle: a connection pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

/// Why a batch could not be written. Never a property of one record: every
/// record PostgreSQL refuses is stored through the last resort instead, so
/// what is left is a database that is down or refuses every row alike. The
/// records it held are not lost, only delayed: the writer retries.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database is unreachable or cannot work now (connection lost,
    /// shutting down, out of disk, a deadlock): wait and retry.
    #[error("the database is unavailable: {0}")]
    Outage(#[source] sqlx::Error),
    /// PostgreSQL refused even the last-resort row, which holds nothing a
    /// record controls: the cause is the database (a dropped table, lost
    /// privileges, a read-only server), not the data.
    #[error("PostgreSQL refused even the last-resort row of {topic}/{partition}@{offset}: {reason}")]
    LastResortRefused { topic: String, partition: i32, offset: i64, reason: String },
}

/// What writing a batch took: rows that were new, and the records that had
/// to be stored in a reduced form because PostgreSQL refused a value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub inserted: u64,
    pub reduced: Vec<Reduced>,
}

/// A record stored in a reduced form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduced {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub form: ReducedForm,
}

/// How much of a refused record's row was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReducedForm {
    /// Everything but the JSON document.
    WithoutDocument,
    /// The exact bytes and coordinates only ([`StoredRow::last_resort`]).
    LastResort,
}

impl ReducedForm {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ReducedForm::WithoutDocument => "without_document",
            ReducedForm::LastResort => "last_resort",
        }
    }
}

/// Why one statement failed.
enum Failure {
    /// Retry later, as it is.
    Outage(sqlx::Error),
    /// PostgreSQL refused something in the rows; the reason, for the note.
    Refused(String),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        if is_outage(&e) { Failure::Outage(e) } else { Failure::Refused(database_reason(&e)) }
    }
}

impl Db {
    /// Creates the pool without connecting, so that the host can start (and
    /// report itself not ready) while the database is still unreachable. A
    /// malformed URL is an error at once.
    pub fn connect_lazy(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!("DATABASE_URL is not a valid PostgreSQL connection URL: it must start with postgres://");
        }
        let options: PgConnectOptions = url.parse().context("DATABASE_URL is not a valid PostgreSQL connection URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.application_name("notification-host"));
        Ok(Db { pool })
    }

    /// Wraps an existing pool (tests).
    pub fn from_pool(pool: PgPool) -> Db {
        Db { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await.context("failed to apply the database migrations")
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Writes `rows`, skipping rows already stored (a redelivery), and
    /// stores every record whatever PostgreSQL thinks of its values.
    ///
    /// The batch is one statement. When PostgreSQL refuses it for a reason
    /// other than an outage, the refused rows are found by halving the batch
    /// (a few statements for one bad row in a thousand, not a thousand), and
    /// each refused row is stored again in a reduced form: first without its
    /// JSON document, then through the last resort ([`StoredRow::last_resort`]),
    /// a row holding only the record's exact bytes, its Kafka coordinates and
    /// a note saying what was dropped and why. Nothing in that row comes from
    /// a normalizer or a JSON parser, and no index covers a value a producer
    /// controls beyond Kafka's own limits, so PostgreSQL has nothing in it to
    /// refuse; if it refuses anyway the cause is the database, not the record,
    /// and the caller retries.
    pub async fn insert(&self, rows: &[StoredRow]) -> Result<Written, WriteError> {
        let mut written = Written::default();
        if rows.is_empty() {
            return Ok(written);
        }
        // Slices still to write, last first; a refused slice is halved.
        let mut todo = vec![rows];
        while let Some(slice) = todo.pop() {
            match self.insert_batch(slice).await.map_err(Failure::from) {
                Ok(n) => written.inserted += n,
                Err(Failure::Outage(e)) => return Err(WriteError::Outage(e)),
                Err(Failure::Refused(reason)) => match slice {
                    [row] => {
                        let (inserted, form) = self.insert_reduced(row, reason).await?;
                        written.inserted += inserted;
                        written.reduced.push(Reduced {
                            topic: row.source_topic.clone(),
                            partition: row.kafka_partition.unwrap_or_default(),
                            offset: row.kafka_offset.unwrap_or_default(),
                            form,
                        });
                    }
                    _ => {
                        if slice.len() == rows.len() {
                            tracing::warn!(rows = rows.len(), %reason, "PostgreSQL refused a value; finding the refused rows.");
                        }
                        let (first, second) = slice.split_at(slice.len() / 2);
                        todo.push(second);
                        todo.push(first);
                    }
                },
            }
        }
        Ok(written)
    }

    /// Stores one row PostgreSQL refused as it was.
    async fn insert_reduced(&self, row: &StoredRow, reason: String) -> Result<(u64, ReducedForm), WriteError> {
        let (topic, partition, offset) =
            (&row.source_topic, row.kafka_partition.unwrap_or_default(), row.kafka_offset.unwrap_or_default());
        let mut reasons = vec![reason];
        if row.event.is_some() {
            let mut without = row.clone();
            without.event = None;
            without.add_note(format!("PostgreSQL refused the row; stored without its JSON document: {}", reasons[0]));
            match self.insert_batch(std::slice::from_ref(&without)).await.map_err(Failure::from) {
                Ok(inserted) => {
                    tracing::warn!(%topic, partition, offset, reason = %reasons[0], "PostgreSQL refused the row; stored it without its JSON document.");
                    return Ok((inserted, ReducedForm::WithoutDocument));
                }
                Err(Failure::Outage(e)) => return Err(WriteError::Outage(e)),
                Err(Failure::Refused(reason)) => reasons.push(reason),
            }
        }
        let reason = reasons.join("; then ");
        let last = row.last_resort(&reason);
        match self.insert_batch(std::slice::from_ref(&last)).await.map_err(Failure::from) {
            Ok(inserted) => {
                tracing::warn!(%topic, partition, offset, %reason, "PostgreSQL refused the row; stored the record through the last resort.");
                Ok((inserted, ReducedForm::LastResort))
            }
            Err(Failure::Outage(e)) => Err(WriteError::Outage(e)),
            Err(Failure::Refused(refused)) => {
                Err(WriteError::LastResortRefused { topic: topic.clone(), partition, offset, reason: refused })
            }
        }
    }

    async fn insert_batch(&self, rows: &[StoredRow]) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(INSERT_SQL)
            .bind(col(rows, |r| r.fields.customer_id.clone()))
            .bind(col(rows, |r| r.fields.runner_id.clone()))
            .bind(col(rows, |r| r.fields.order_id.clone()))
            .bind(col(rows, |r| r.event.clone()))
            .bind(col(rows, |r| r.fields.status.clone()))
            .bind(col(rows, |r| r.created_at))
            .bind(col(rows, |r| r.source_topic.clone()))
            .bind(col(rows, |r| r.fields.event_type.clone()))
            .bind(col(rows, |r| r.fields.correlation_id.clone()))
            .bind(col(rows, |r| r.fields.source_service.clone()))
            .bind(col(rows, |r| r.kafka_partition))
            .bind(col(rows, |r| r.kafka_offset))
            .bind(col(rows, |r| r.kafka_key.clone()))
            .bind(col(rows, |r| r.kafka_headers.clone()))
            .bind(col(rows, |r| r.kafka_timestamp))
            .bind(col(rows, |r| r.raw_value.clone()))
            .bind(col(rows, |r| r.ingest_note.clone()))
            .bind(col(rows, |r| r.normalizer.clone()))
            .bind(col(rows, |r| r.normalizer_error.clone()))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}

/// One array per column keeps the statement text constant (so PostgreSQL
/// prepares it once) whatever the batch size.
const INSERT_SQL: &str = "INSERT INTO notifications (customer_id, runner_id, order_id, event, status, created_at, \
     source_topic, event_type, correlation_id, source_service, kafka_partition, kafka_offset, kafka_key, \
     kafka_headers, kafka_timestamp, raw_value, ingest_note, normalizer, normalizer_error) \
     SELECT c1, c2, c3, c4::jsonb, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14::jsonb, c15, c16, c17, c18, c19 \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], \
     $8::text[], $9::text[], $10::text[], $11::int4[], $12::int8[], $13::bytea[], $14::text[], \
     $15::timestamptz[], $16::bytea[], $17::text[], $18::text[], $19::text[]) \
     AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19) \
     ON CONFLICT ON CONSTRAINT notifications_kafka_record DO NOTHING";

fn col<T>(rows: &[StoredRow], f: impl Fn(&StoredRow) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// An error that says the database cannot work now, whatever the rows: the
/// connection or pool failed, or PostgreSQL reports a connection exception
/// (SQLSTATE class 08), insufficient resources (53: disk full, out of memory,
/// too many connections), operator intervention (57: shutting down), a system
/// error (58), a transaction rolled back by a deadlock or serialization
/// failure (40), a read-only transaction (25, a server that became a standby),
/// an object in use (55: a lock timeout), or an unknown database (3D) or
/// failed authentication (28).
///
/// Everything else is treated as a refusal of the rows, which the write path
/// resolves by storing them in a reduced form. Mistaking an outage for a
/// refusal costs a few statements and ends in a retry (the last resort is
/// refused too); mistaking a refusal for an outage would retry one bad record
/// forever, so the list of outages is the one kept short.
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            ["08", "53", "57", "58", "40", "25", "55", "3D", "28"].iter().any(|class| code.starts_with(class))
        }
        // Encoding a value the driver itself refuses is about the row.
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => false,
        _ => true,
    }
}

fn database_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("{} ({})", db.message(), db.code().unwrap_or_default()),
        other => other.to_string(),
    }
}

/// One row of `notifications`, prepared from a record and what its
/// normalizer found.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub fields: Fields,
    /// The JSON document to store as `event`, as text.
    pub event: Option<String>,
    pub created_at: DateTime<Utc>,
    pub source_topic: String,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub kafka_key: Option<Vec<u8>>,
    /// The headers as JSON text.
    pub kafka_headers: Option<String>,
    pub kafka_timestamp: Option<DateTime<Utc>>,
    pub raw_value: Option<Vec<u8>>,
    pub ingest_note: Option<String>,
    pub normalizer: Option<String>,
    pub normalizer_error: Option<String>,
}

/// A stored notification as the API reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    pub notification_id: i64,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    /// The JSON document as text (never parsed on the way out).
    pub event_json: Option<String>,
    pub raw_value: Option<Vec<u8>>,
    pub status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub source_topic: String,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub source_service: Option<String>,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub normalizer: Option<String>,
    pub normalizer_error: Option<String>,
    pub ingest_note: Option<String>,
    pub stored_at: DateTime<Utc>,
    pub kafka_key: Option<Vec<u8>>,
    /// The headers as stored: JSON text.
    pub kafka_headers: Option<String>,
}

const COLUMNS: &str = "notification_id, customer_id, runner_id, order_id, event::text AS event_json, raw_value, \
     status, created_at, source_topic, event_type, correlation_id, source_service, kafka_partition, kafka_offset, \
     normalizer, normalizer_error, ingest_note, stored_at, kafka_key, kafka_headers::text AS kafka_headers";

/// Record-time order, ties broken by the row id (the order rows were
/// written: within a partition, offset order). The same keyset as
/// `GET /notifications`, so every list of rows pages with one cursor form.
const TIME_ORDER: &str = "created_at, notification_id";
const TIME_ORDER_DESC: &str = "created_at DESC, notification_id DESC";

pub use notification_parse::request::{ListFilter, NewApiNotification, Position};

impl Db {
    /// The latest notification of an order by record time.
    pub async fn latest_for_order(&self, order_id: &str) -> Result<Option<Notification>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(latest_sql())).bind(order_id).fetch_optional(&self.pool).await
    }

    /// Notifications of an order, oldest first: at most `limit`, after
    /// `after` when given.
    pub async fn for_order(
        &self,
        order_id: &str,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        self.for_id("order_id", order_id, after, limit).await
    }

    /// Notifications of one correlation (saga) id, oldest first: at most
    /// `limit`, after `after` when given.
    pub async fn for_correlation(
        &self,
        correlation_id: &str,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        self.for_id("correlation_id", correlation_id, after, limit).await
    }

    async fn for_id(
        &self,
        column: &str,
        id: &str,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        let (created_at, notification_id) =
            after.map_or((None, None), |p| (Some(p.created_at), Some(p.notification_id)));
        sqlx::query_as(sqlx::AssertSqlSafe(for_column_sql(column)))
            .bind(id)
            .bind(created_at)
            .bind(notification_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// An order's own notifications plus every notification that shares a
    /// correlation id with one of them, oldest first, at most `limit`. The
    /// flag says whether a row names the order itself.
    pub async fn timeline(&self, order_id: &str, limit: i64) -> Result<Vec<(Notification, bool)>, sqlx::Error> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            n: Notification,
            direct: bool,
        }
        let sql = timeline_sql();
        let rows: Vec<Row> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(order_id).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| (r.n, r.direct)).collect())
    }

    /// One page of notifications matching `filter`, in (created_at, id)
    /// order, after `after` when given. Keyset pagination: rows inserted
    /// meanwhile never shift a page, so no row is skipped or repeated.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<Position>,
        descending: bool,
        limit: i64,
    ) -> Result<Vec<Notification>, sqlx::Error> {
        list_query("", filter, after, descending, limit).build_query_as().fetch_all(&self.pool).await
    }

    /// The plans PostgreSQL chooses for the API's queries, by query name, as
    /// `EXPLAIN` text. The benchmark prints them and the tests assert that each
    /// one is served by an index.
    pub async fn explain_api_queries(
        &self,
        order_id: &str,
        correlation_id: &str,
        filter: &ListFilter,
    ) -> Result<Vec<(&'static str, String)>, sqlx::Error> {
        let text = |rows: Vec<String>| rows.join("\n");
        let mut plans = Vec::new();
        let latest = format!("EXPLAIN {}", latest_sql());
        plans.push((
            "latest",
            text(sqlx::query_scalar(sqlx::AssertSqlSafe(latest)).bind(order_id).fetch_all(&self.pool).await?),
        ));
        let by_order = format!("EXPLAIN {}", for_column_sql("order_id"));
        plans.push((
            "order",
            text(
                sqlx::query_scalar(sqlx::AssertSqlSafe(by_order))
                    .bind(order_id)
                    .bind(None::<DateTime<Utc>>)
                    .bind(None::<i64>)
                    .bind(1001_i64)
                    .fetch_all(&self.pool)
                    .await?,
            ),
        ));
        let by_corr = format!("EXPLAIN {}", for_column_sql("correlation_id"));
        plans.push((
            "correlation",
            text(
                sqlx::query_scalar(sqlx::AssertSqlSafe(by_corr))
                    .bind(correlation_id)
                    .bind(None::<DateTime<Utc>>)
                    .bind(None::<i64>)
                    .bind(1001_i64)
                    .fetch_all(&self.pool)
                    .await?,
            ),
        ));
        let timeline = format!("EXPLAIN {}", timeline_sql());
        plans.push((
            "timeline",
            text(
                sqlx::query_scalar(sqlx::AssertSqlSafe(timeline))
                    .bind(order_id)
                    .bind(5001_i64)
                    .fetch_all(&self.pool)
                    .await?,
            ),
        ));
        let list = list_query("EXPLAIN ", filter, None, true, 101).build_query_scalar().fetch_all(&self.pool).await?;
        plans.push(("list", text(list)));
        Ok(plans)
    }

    /// A page of stored Kafka records (not API rows) to normalize again, in
    /// id order after `after_id`, optionally limited to one topic and an
    /// offset range.
    pub async fn stored_records(
        &self,
        topic: Option<&str>,
        offsets: (Option<i64>, Option<i64>),
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Record, Fields, Option<String>)>, sqlx::Error> {
        type Row = (
            i64,
            String,
            Option<i32>,
            Option<i64>,
            Option<DateTime<Utc>>,
            Option<Vec<u8>>,
            Option<String>,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT notification_id, source_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, \
             kafka_headers::text, raw_value, customer_id, runner_id, order_id, event_type, correlation_id, \
             source_service, status, normalizer \
             FROM notifications WHERE kafka_offset IS NOT NULL AND notification_id > $1 \
             AND ($2::text IS NULL OR source_topic = $2) AND ($3::int8 IS NULL OR kafka_offset >= $3) \
             AND ($4::int8 IS NULL OR kafka_offset <= $4) ORDER BY notification_id LIMIT $5",
        )
        .bind(after_id)
        .bind(topic)
        .bind(offsets.0)
        .bind(offsets.1)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let record = Record {
                    topic: r.1,
                    partition: r.2.unwrap_or_default(),
                    offset: r.3.unwrap_or_default(),
                    timestamp: r.4.map(|t| t.timestamp_millis()),
                    key: r.5,
                    headers: r.6.as_deref().map(headers_from_json).unwrap_or_default(),
                    value: r.7,
                };
                let fields = Fields {
                    customer_id: r.8,
                    runner_id: r.9,
                    order_id: r.10,
                    event_type: r.11,
                    correlation_id: r.12,
                    source_service: r.13,
                    status: r.14,
                };
                (r.0, record, fields, r.15)
            })
            .collect())
    }

    /// Replaces the normalizer's fields of the given rows (by id). A row
    /// PostgreSQL refuses (found by halving the page, as [`Db::insert`]
    /// does) keeps the fields it had; it is returned with the reason, and
    /// every other row is updated. An outage is an error.
    pub async fn update_fields(&self, rows: &[(i64, StoredRow)]) -> Result<(u64, Vec<(i64, String)>), sqlx::Error> {
        let (mut updated, mut refused) = (0, Vec::new());
        let mut todo = vec![rows];
        while let Some(slice) = todo.pop() {
            if slice.is_empty() {
                continue;
            }
            match self.update_batch(slice).await {
                Ok(n) => updated += n,
                Err(e) if is_outage(&e) => return Err(e),
                Err(e) => match slice {
                    [(id, _)] => refused.push((*id, database_reason(&e))),
                    _ => {
                        let (first, second) = slice.split_at(slice.len() / 2);
                        todo.push(second);
                        todo.push(first);
                    }
                },
            }
        }
        Ok((updated, refused))
    }

    async fn update_batch(&self, rows: &[(i64, StoredRow)]) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(
            "UPDATE notifications n SET customer_id = u.customer_id, runner_id = u.runner_id, order_id = u.order_id, \
             event_type = u.event_type, correlation_id = u.correlation_id, source_service = u.source_service, \
             status = u.status, normalizer = u.normalizer, normalizer_error = u.normalizer_error \
             FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[]) AS u(id, customer_id, runner_id, order_id, event_type, \
             correlation_id, source_service, status, normalizer, normalizer_error) WHERE n.notification_id = u.id",
        )
        .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.customer_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.runner_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.order_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.event_type.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.correlation_id.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.source_service.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.fields.status.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.normalizer.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.normalizer_error.clone()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Creates the monthly partitions from `from` to `to` (inclusive months)
    /// that do not exist yet. Rows already in the default partition for such
    /// a month move into the new partition. Safe to run from every replica
    /// at once (an advisory lock serializes them).
    pub async fn ensure_partitions(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<String>, sqlx::Error> {
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
                    format!("CREATE TABLE {name} (LIKE notifications INCLUDING DEFAULTS)"),
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
    pub async fn drop_expired(&self, cutoff: DateTime<Utc>) -> Result<Vec<String>, sqlx::Error> {
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

    /// Stores a notification sent through the API with the values the
    /// original service stored: status `sent`, event type
    /// `notification.manual`, a new UUID as correlation id, source service
    /// `notification-service-api`, source topic `api`, and the event wrapped
    /// as `{"message": <event>}`. `raw_value` keeps the exact request body.
    pub async fn insert_api(&self, n: &NewApiNotification, body: &[u8]) -> Result<Notification, sqlx::Error> {
        let sql = format!(
            "INSERT INTO notifications (customer_id, runner_id, order_id, event, status, created_at, source_topic, \
             event_type, correlation_id, source_service, raw_value) \
             VALUES ($1, $2, $3, jsonb_build_object('message', $4::text::jsonb), '{API_STATUS}', now(), '{API_TOPIC}', \
             '{API_EVENT_TYPE}', gen_random_uuid()::text, '{API_SOURCE_SERVICE}', $5) RETURNING {COLUMNS}"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&n.customer_id)
            .bind(&n.runner_id)
            .bind(&n.order_id)
            .bind(n.event.to_string())
            .bind(body)
            .fetch_one(&self.pool)
            .await
    }
}

/// What the original service stored for a notification sent through the API.
pub const API_STATUS: &str = "sent";
pub const API_TOPIC: &str = "api";
pub const API_EVENT_TYPE: &str = "notification.manual";
pub const API_SOURCE_SERVICE: &str = "notification-service-api";

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
    ) -> Result<Vec<String>, sqlx::Error> {
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

/// The query of [`Db::list`], optionally prefixed (with `EXPLAIN`).
fn list_query(
    prefix: &str,
    filter: &ListFilter,
    after: Option<Position>,
    descending: bool,
    limit: i64,
) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut qb: sqlx::QueryBuilder<sqlx::Postgres> =
        sqlx::QueryBuilder::new(format!("{prefix}SELECT {COLUMNS} FROM notifications WHERE true"));
    let equals = [
        ("customer_id", &filter.customer_id),
        ("runner_id", &filter.runner_id),
        ("order_id", &filter.order_id),
        ("correlation_id", &filter.correlation_id),
        ("event_type", &filter.event_type),
        ("source_topic", &filter.source_topic),
        ("source_service", &filter.source_service),
    ];
    for (column, value) in equals {
        if let Some(value) = value {
            if HASHED_ID_COLUMNS.contains(&column) {
                qb.push(format!(" AND hashtextextended({column}, 0) = hashtextextended("))
                    .push_bind(value.clone())
                    .push(", 0)");
            }
            qb.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    }
    if let Some(since) = filter.since {
        qb.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        qb.push(" AND created_at < ").push_bind(until);
    }
    if let Some(p) = after {
        qb.push(if descending {
            " AND (created_at, notification_id) < ("
        } else {
            " AND (created_at, notification_id) > ("
        });
        qb.push_bind(p.created_at).push(", ").push_bind(p.notification_id).push(")");
    }
    qb.push(if descending {
        " ORDER BY created_at DESC, notification_id DESC LIMIT "
    } else {
        " ORDER BY created_at, notification_id LIMIT "
    });
    qb.push_bind(limit);
    qb
}

/// The id columns whose indexes hold a hash of the value (migration 0002):
/// a query finds candidates by the hash and keeps the exact matches.
const HASHED_ID_COLUMNS: [&str; 4] = ["order_id", "customer_id", "runner_id", "correlation_id"];

/// `column` equals the text `param`, in the form the hash index serves.
fn id_equals(column: &str, param: &str) -> String {
    debug_assert!(HASHED_ID_COLUMNS.contains(&column.rsplit('.').next().unwrap_or(column)));
    format!("hashtextextended({column}, 0) = hashtextextended({param}, 0) AND {column} = {param}")
}

fn latest_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM notifications WHERE {} ORDER BY {TIME_ORDER_DESC} LIMIT 1",
        id_equals("order_id", "$1::text")
    )
}

/// Rows of one id after an optional (created_at, notification_id) position
/// ($2, $3), at most $4.
fn for_column_sql(column: &str) -> String {
    format!(
        "SELECT {COLUMNS} FROM notifications WHERE {} \
         AND ($2::timestamptz IS NULL OR (created_at, notification_id) > ($2, $3::int8)) \
         ORDER BY {TIME_ORDER} LIMIT $4",
        id_equals(column, "$1::text")
    )
}

fn timeline_sql() -> String {
    format!(
        "WITH direct AS (SELECT {COLUMNS} FROM notifications WHERE {by_order}), \
         sagas AS (SELECT DISTINCT correlation_id FROM direct WHERE correlation_id IS NOT NULL) \
         SELECT * FROM ( \
           SELECT *, true AS direct FROM direct \
           UNION ALL \
           SELECT n.*, false AS direct FROM sagas s CROSS JOIN LATERAL ( \
             SELECT {COLUMNS} FROM notifications \
             WHERE {by_saga} AND order_id IS DISTINCT FROM $1::text) n \
         ) t ORDER BY {TIME_ORDER} LIMIT $2",
        by_order = id_equals("order_id", "$1::text"),
        by_saga = id_equals("correlation_id", "s.correlation_id"),
    )
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl StoredRow {
    /// Prepares the row for a consumed record.
    pub fn from_record(record: Record, normalized: Normalized) -> StoredRow {
        let mut notes = Vec::new();
        let event = match record.value.as_deref() {
            None => None,
            Some(bytes) => match json_document(bytes) {
                Ok(text) => Some(text.to_owned()),
                Err(reason) => {
                    notes.push(reason);
                    None
                }
            },
        };
        let kafka_timestamp = match record.timestamp {
            Some(ms) => match representable_timestamp(ms) {
                Some(ts) => Some(ts),
                None => {
                    notes.push(format!("the record timestamp {ms} ms is outside what PostgreSQL can store"));
                    None
                }
            },
            None => {
                notes.push("the record has no timestamp".to_owned());
                None
            }
        };
        let (fields, nul_note) = without_nul(normalized.fields);
        notes.extend(nul_note);
        StoredRow {
            fields,
            event,
            // A fixed stand-in keeps the unique key stable across redeliveries.
            created_at: kafka_timestamp.unwrap_or(DateTime::UNIX_EPOCH),
            kafka_partition: Some(record.partition),
            kafka_offset: Some(record.offset),
            kafka_key: record.key,
            kafka_headers: Some(headers_json(&record.headers)),
            kafka_timestamp,
            raw_value: record.value,
            source_topic: record.topic,
            ingest_note: (!notes.is_empty()).then(|| notes.join("; ")),
            normalizer: Some(normalized.normalizer.replace('\0', "\u{FFFD}")),
            normalizer_error: normalized.error.map(|e| e.replace('\0', "\u{FFFD}")),
        }
    }

    /// The last resort for a record PostgreSQL refused: the exact value, key
    /// and headers, the Kafka coordinates and times, the normalizer's name,
    /// and a note saying what was dropped and why. Every text in it is the
    /// host's own, bounded and free of NUL: the headers are JSON the host
    /// wrote (NUL-free strings, anything else in base64), the note is cut to
    /// [`MAX_NOTE_BYTES`], and the topic name is bounded by Kafka. Nothing a
    /// normalizer or a JSON parser produced is left to refuse.
    pub fn last_resort(&self, reason: &str) -> StoredRow {
        let mut dropped = Vec::new();
        if self.event.is_some() {
            dropped.push("the JSON document".to_owned());
        }
        for (name, value) in named_fields(&self.fields) {
            if let Some(v) = value {
                dropped.push(format!("{name} ({} bytes)", v.len()));
            }
        }
        if let Some(e) = &self.normalizer_error {
            dropped.push(format!("the normalizer's error ({} bytes)", e.len()));
        }
        let normalizer = self.normalizer.clone().filter(|n| n.len() <= MAX_NORMALIZER_BYTES && !n.contains('\0'));
        if normalizer.is_none() && self.normalizer.is_some() {
            dropped.push("the normalizer's name".to_owned());
        }
        let mut note = format!(
            "PostgreSQL refused the row ({reason}); stored as a last resort with the exact value, key, headers and \
             Kafka coordinates; dropped: {}",
            if dropped.is_empty() { "nothing".to_owned() } else { dropped.join(", ") }
        );
        if let Some(earlier) = &self.ingest_note {
            note = format!("{earlier}; {note}");
        }
        StoredRow {
            fields: Fields::default(),
            event: None,
            created_at: self.created_at,
            source_topic: self.source_topic.clone(),
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
            kafka_key: self.kafka_key.clone(),
            kafka_headers: self.kafka_headers.clone(),
            kafka_timestamp: self.kafka_timestamp,
            raw_value: self.raw_value.clone(),
            ingest_note: Some(bounded_note(&note)),
            normalizer,
            normalizer_error: None,
        }
    }

    fn add_note(&mut self, note: String) {
        self.ingest_note = Some(match self.ingest_note.take() {
            Some(existing) => format!("{existing}; {note}"),
            None => note,
        });
    }
}

/// The value as a JSON document for the `event` column, or why it is not one.
fn json_document(bytes: &[u8]) -> Result<&str, String> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("the value is not valid UTF-8 (first invalid byte at {})", e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(if text.is_empty() { "the value is empty".into() } else { "the value is only white space".into() });
    }
    // Validates the whole document without building it (and without a depth
    // limit: nested values are skipped, not recursed into).
    serde_json::from_str::<&RawValue>(text).map_err(|e| format!("the value is not JSON: {e}"))?;
    if has_nul_escape(text) {
        return Err("the JSON document contains \\u0000, which JSONB cannot store".into());
    }
    Ok(text)
}

/// Whether JSON text contains the escape `\u0000` (not an escaped backslash
/// followed by `u0000`).
fn has_nul_escape(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = memchr_backslash(&b[i..]) {
        let at = i + pos;
        match b.get(at + 1) {
            Some(b'u') if b.get(at + 2..at + 6).is_some_and(|h| h == b"0000") => return true,
            // Skip the escaped character, so `\\u0000` is not mistaken.
            Some(_) => i = at + 2,
            None => return false,
        }
    }
    false
}

fn memchr_backslash(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\\')
}

/// PostgreSQL's timestamptz covers 4713 BC to 294276 AD.
fn representable_timestamp(ms: i64) -> Option<DateTime<Utc>> {
    const MIN_MS: i64 = -210_866_803_200_000;
    const MAX_MS: i64 = 9_224_318_015_999_999;
    (MIN_MS..=MAX_MS).contains(&ms).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

/// The longest note the last resort writes; a longer one is cut, at a
/// character boundary, and says so.
pub const MAX_NOTE_BYTES: usize = 4096;

/// The longest normalizer name (`name@version`) the last resort keeps.
const MAX_NORMALIZER_BYTES: usize = 256;

fn bounded_note(note: &str) -> String {
    let clean = note.replace('\0', "\u{FFFD}");
    if clean.len() <= MAX_NOTE_BYTES {
        return clean;
    }
    const CUT: &str = " [note cut]";
    let mut end = MAX_NOTE_BYTES - CUT.len();
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &clean[..end])
}

/// The fields by column name.
fn named_fields(f: &Fields) -> [(&'static str, &Option<String>); 7] {
    [
        ("customer_id", &f.customer_id),
        ("runner_id", &f.runner_id),
        ("order_id", &f.order_id),
        ("event_type", &f.event_type),
        ("correlation_id", &f.correlation_id),
        ("source_service", &f.source_service),
        ("status", &f.status),
    ]
}

/// PostgreSQL text cannot hold NUL; such characters become U+FFFD and the
/// row says so. The exact value stays in `raw_value`.
fn without_nul(mut f: Fields) -> (Fields, Option<String>) {
    let mut touched = Vec::new();
    for (name, slot) in [
        ("customer_id", &mut f.customer_id),
        ("runner_id", &mut f.runner_id),
        ("order_id", &mut f.order_id),
        ("event_type", &mut f.event_type),
        ("correlation_id", &mut f.correlation_id),
        ("source_service", &mut f.source_service),
        ("status", &mut f.status),
    ] {
        if let Some(v) = slot.as_mut().filter(|v| v.contains('\0')) {
            *v = v.replace('\0', "\u{FFFD}");
            touched.push(name);
        }
    }
    let note = (!touched.is_empty()).then(|| format!("NUL characters replaced by U+FFFD in {}", touched.join(", ")));
    (f, note)
}

/// The inverse of [`headers_json`].
fn headers_from_json(text: &str) -> Vec<Header> {
    #[derive(serde::Deserialize)]
    struct H {
        key: String,
        key_b64: Option<String>,
        value: Option<String>,
        value_b64: Option<String>,
    }
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.decode(s).ok();
    let parsed: Vec<H> = serde_json::from_str(text).unwrap_or_default();
    parsed
        .into_iter()
        .map(|h| {
            let value = match (h.value, h.value_b64) {
                (Some(v), _) => Some(v.into_bytes()),
                (None, Some(b)) => b64(b),
                (None, None) => None,
            };
            match h.key_b64.and_then(b64) {
                Some(name) => Header::from_bytes(name, value),
                None => Header::new(h.key, value),
            }
        })
        .collect()
}

/// Headers as a JSON array in their original order, every byte kept: a value
/// that is not NUL-free UTF-8 is given as base64 under `value_b64`, and a
/// name that is not (its text in `key` then has U+FFFD for what it cannot
/// show) also under `key_b64`.
fn headers_json(headers: &[Header]) -> String {
    let items: Vec<serde_json::Value> = headers
        .iter()
        .map(|h| {
            let mut item = serde_json::Map::new();
            item.insert("key".into(), h.key.replace('\0', "\u{FFFD}").into());
            let exact_name = h.key_bytes.clone().or_else(|| h.key.contains('\0').then(|| h.key.clone().into_bytes()));
            if let Some(name) = exact_name {
                item.insert("key_b64".into(), base64::engine::general_purpose::STANDARD.encode(name).into());
            }
            match h.value.as_deref() {
                None => {
                    item.insert("value".into(), serde_json::Value::Null);
                }
                Some(v) => match std::str::from_utf8(v) {
                    Ok(s) if !s.contains('\0') => {
                        item.insert("value".into(), s.into());
                    }
                    _ => {
                        item.insert("value_b64".into(), base64::engine::general_purpose::STANDARD.encode(v).into());
                    }
                },
            }
            serde_json::Value::Object(item)
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_documents_and_reasons() {
        assert_eq!(json_document(br#"{"a": 1}"#), Ok(r#"{"a": 1}"#));
        assert_eq!(json_document(b"\xEF\xBB\xBF[1]"), Ok("[1]"));
        assert_eq!(json_document(br#""str""#), Ok(r#""str""#));
        assert!(json_document(b"").unwrap_err().contains("empty"));
        assert!(json_document(b"  ").unwrap_err().contains("white space"));
        assert!(json_document(b"nope").unwrap_err().contains("not JSON"));
        assert!(json_document(b"{\"a\": \"\xff\"}").unwrap_err().contains("UTF-8"));
        assert!(json_document(br#"{"a": "x\u0000y"}"#).unwrap_err().contains("\\u0000"));
        assert!(json_document(br#"{"a": "x\\u0000y"}"#).is_ok());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(json_document(deep.as_bytes()).is_ok());
    }

    /// A repeated name, a null value and a binary value.
    fn mixed_headers() -> Vec<Header> {
        vec![Header::new("a", Some(b"1".to_vec())), Header::new("a", None), Header::new("bin", Some(vec![0xff, 0]))]
    }

    #[test]
    fn headers_keep_order_nulls_and_binary() {
        let h = mixed_headers();
        assert_eq!(
            headers_json(&h),
            r#"[{"key":"a","value":"1"},{"key":"a","value":null},{"key":"bin","value_b64":"/wA="}]"#
        );
    }

    #[test]
    fn headers_round_trip() {
        let h = mixed_headers();
        assert_eq!(headers_from_json(&headers_json(&h)), h);
    }

    #[test]
    fn header_names_that_are_not_text_keep_their_bytes() {
        let h = vec![Header::from_bytes(vec![0xff, b'n', 0xfe], Some(b"v".to_vec())), Header::new("with\0nul", None)];
        let json = headers_json(&h);
        assert_eq!(
            json,
            r#"[{"key":"�n�","key_b64":"/27+","value":"v"},{"key":"with�nul","key_b64":"d2l0aABudWw=","value":null}]"#
        );
        assert_eq!(headers_from_json(&json), h);
    }

    #[test]
    fn nul_in_fields_is_replaced_and_noted() {
        let (f, note) = without_nul(Fields { order_id: Some("a\0b".into()), ..Fields::default() });
        assert_eq!(f.order_id.as_deref(), Some("a\u{FFFD}b"));
        assert!(note.unwrap().contains("order_id"));
    }

    #[test]
    fn timestamps_outside_postgres_range_fall_back() {
        assert!(representable_timestamp(1_700_000_000_000).is_some());
        assert!(representable_timestamp(i64::MAX).is_none());
        assert!(representable_timestamp(i64::MIN).is_none());
    }
}
