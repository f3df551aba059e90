//! The write path: a batch of rows in one statement, and every row
//! PostgreSQL refuses found and stored through the last resort, so that one
//! record never stops the log. Also the API's insert.

use super::DbError;
use super::live::{STORED_SUMMARY_SQL, StoredBatch, Summary};
use super::reads::{COLUMNS, NewApiNotification, Notification};
use super::{Db, StoredRow};

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
/// to be stored through the last resort because PostgreSQL refused a value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    pub inserted: u64,
    pub reduced: Vec<Reduced>,
    /// Statements whose stored rows could not be announced to listeners
    /// (the rows are stored; only the console's live tail misses them).
    pub notify_failures: u64,
}

/// A record PostgreSQL refused as it was, stored through the last resort
/// ([`StoredRow::last_resort`]: the exact bytes and coordinates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reduced {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
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
    /// Writes `rows`, skipping rows already stored (a redelivery), and
    /// stores every record whatever PostgreSQL thinks of its values.
    ///
    /// The batch is one statement. When PostgreSQL refuses it for a reason
    /// other than an outage, the refused rows are found by halving the batch
    /// (a few statements for one bad row in a thousand, not a thousand), and
    /// each refused row is stored again through the last resort
    /// ([`StoredRow::last_resort`]), a row holding only the record's exact
    /// bytes, its Kafka coordinates and
    /// a note saying what was dropped and why. Nothing in that row comes from
    /// a normalizer or a JSON parser, and no index covers a value a producer
    /// controls beyond Kafka's own limits, so PostgreSQL has nothing in it to
    /// refuse; if it refuses anyway the cause is the database, not the record,
    /// and the caller retries.
    pub async fn insert(&self, rows: &[StoredRow]) -> Result<Written, WriteError> {
        let (trusted, adjusted) = self.split_times(rows).await.map_err(into_write_error)?;
        let mut written = self.insert_trusted(&trusted).await?;
        self.write_adjusted(&adjusted, &mut written).await?;
        Ok(written)
    }

    /// [`Db::insert`] of rows whose times are their records' own.
    pub(super) async fn insert_trusted(&self, rows: &[StoredRow]) -> Result<Written, WriteError> {
        let mut written = Written::default();
        if rows.is_empty() {
            return Ok(written);
        }
        // Slices still to write, last first; a refused slice is halved.
        let mut todo = vec![rows];
        while let Some(slice) = todo.pop() {
            match self.insert_batch(slice).await.map_err(Failure::from) {
                Ok(stored) => written.add(stored, self).await,
                Err(Failure::Outage(e)) => return Err(WriteError::Outage(e)),
                Err(Failure::Refused(reason)) => match slice {
                    [row] => {
                        let stored = self.insert_last_resort(row, reason).await?;
                        written.add(stored, self).await;
                        written.reduced.push(Reduced {
                            topic: row.source_topic.clone(),
                            partition: row.kafka_partition.unwrap_or_default(),
                            offset: row.kafka_offset.unwrap_or_default(),
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

    /// Stores one row PostgreSQL refused as it was, through the last resort.
    async fn insert_last_resort(&self, row: &StoredRow, reason: String) -> Result<Option<StoredBatch>, WriteError> {
        let (topic, partition, offset) =
            (&row.source_topic, row.kafka_partition.unwrap_or_default(), row.kafka_offset.unwrap_or_default());
        let last = row.last_resort(&reason);
        match self.insert_batch(std::slice::from_ref(&last)).await.map_err(Failure::from) {
            Ok(stored) => {
                tracing::warn!(%topic, partition, offset, %reason, "PostgreSQL refused the row; stored the record through the last resort.");
                Ok(stored)
            }
            Err(Failure::Outage(e)) => Err(WriteError::Outage(e)),
            Err(Failure::Refused(refused)) => {
                Err(WriteError::LastResortRefused { topic: topic.clone(), partition, offset, reason: refused })
            }
        }
    }

    /// One statement; what it stored.
    async fn insert_batch(&self, rows: &[StoredRow]) -> Result<Option<StoredBatch>, sqlx::Error> {
        insert_on(&self.writes, rows).await
    }
}

/// The insert statement for `rows` on `executor` (the pool, or a
/// transaction); what it stored.
pub(super) async fn insert_on<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    rows: &[StoredRow],
) -> Result<Option<StoredBatch>, sqlx::Error> {
    {
        let summary: Summary = sqlx::query_as(sqlx::AssertSqlSafe(INSERT_SQL.as_str()))
            .bind(col(rows, |r| r.fields.customer_id.clone()))
            .bind(col(rows, |r| r.fields.runner_id.clone()))
            .bind(col(rows, |r| r.fields.order_id.clone()))
            .bind(col(rows, |r| r.value_zstd.clone()))
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
            .fetch_one(executor)
            .await?;
        Ok(StoredBatch::from_summary(summary))
    }
}

/// A failed statement as the write path reports it: an outage to wait out,
/// or (anything else, which no record explains) a refusal of every row.
pub(super) fn into_write_error(e: sqlx::Error) -> WriteError {
    if is_outage(&e) {
        WriteError::Outage(e)
    } else {
        WriteError::LastResortRefused { topic: String::new(), partition: 0, offset: 0, reason: database_reason(&e) }
    }
}

impl Written {
    /// Counts what one committed statement stored and announces it.
    pub(super) async fn add(&mut self, stored: Option<StoredBatch>, db: &Db) {
        if let Some(batch) = stored {
            self.inserted += u64::try_from(batch.rows).unwrap_or_default();
            if !db.notify_stored(&batch).await {
                self.notify_failures += 1;
            }
        }
    }
}

/// One array per column keeps the statement text constant (so PostgreSQL
/// prepares it once) whatever the batch size. The statement answers what it
/// stored (how many rows were new, their ids and times), for the
/// notification sent after it commits.
static INSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH stored AS (INSERT INTO notifications (customer_id, runner_id, order_id, value_zstd, status, created_at, \
         source_topic, event_type, correlation_id, source_service, kafka_partition, kafka_offset, kafka_key, \
         kafka_headers, kafka_timestamp, raw_value, ingest_note, normalizer, normalizer_error) \
         SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14::jsonb, c15, c16, c17, c18, c19 \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::timestamptz[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::int4[], $12::int8[], $13::bytea[], $14::text[], \
         $15::timestamptz[], $16::bytea[], $17::text[], $18::text[], $19::text[]) \
         AS t(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19) \
         ON CONFLICT ON CONSTRAINT notifications_kafka_record DO NOTHING \
         RETURNING notification_id, created_at) \
         SELECT {STORED_SUMMARY_SQL} FROM stored"
    )
});

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
/// resolves by storing them through the last resort. Mistaking an outage for a
/// refusal costs a few statements and ends in a retry (the last resort is
/// refused too); mistaking a refusal for an outage would retry one bad record
/// forever, so the list of outages is the one kept short.
pub(super) fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => super::error::is_outage_code(&db.code().unwrap_or_default()),
        // Encoding a value the driver itself refuses is about the row.
        sqlx::Error::Encode(_) | sqlx::Error::InvalidArgument(_) => false,
        _ => true,
    }
}

pub(super) fn database_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("{} ({})", db.message(), db.code().unwrap_or_default()),
        other => other.to_string(),
    }
}

impl Db {
    /// Stores a notification sent through the API with the values the
    /// original service stored: status `sent`, event type
    /// `notification.manual`, a new UUID as correlation id, source service
    /// `notification-service-api`, source topic `api`, and the event wrapped
    /// as `{"message": <event>}`. `raw_value` keeps the exact request body.
    pub async fn insert_api(&self, n: &NewApiNotification, body: &[u8]) -> Result<Notification, DbError> {
        let sql = format!(
            "WITH stored AS (INSERT INTO notifications (customer_id, runner_id, order_id, event, status, created_at, \
             source_topic, event_type, correlation_id, source_service, raw_value) \
             VALUES ($1, $2, $3, jsonb_build_object('message', $4::text::jsonb), '{API_STATUS}', now(), '{API_TOPIC}', \
             '{API_EVENT_TYPE}', gen_random_uuid()::text, '{API_SOURCE_SERVICE}', $5) RETURNING *) \
             SELECT {COLUMNS} FROM stored"
        );
        let stored: Notification = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&n.customer_id)
            .bind(&n.runner_id)
            .bind(&n.order_id)
            .bind(n.event.to_string())
            .bind(body)
            .fetch_one(&self.reads)
            .await?;
        let batch = StoredBatch {
            rows: 1,
            first_id: stored.notification_id,
            last_id: stored.notification_id,
            earliest: stored.created_at,
            latest: stored.created_at,
        };
        self.notify_stored_on(&self.reads, &batch).await;
        Ok(stored)
    }
}

/// What the original service stored for a notification sent through the API.
pub const API_STATUS: &str = "sent";
pub const API_TOPIC: &str = "api";
pub const API_EVENT_TYPE: &str = "notification.manual";
pub const API_SOURCE_SERVICE: &str = "notification-service-api";
