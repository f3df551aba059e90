//! The fast write path: a batch as one binary `COPY`, the way PostgreSQL
//! loads rows cheapest (no statement to plan per batch, no arrays to
//! unpack, no conflict check per row, rows inserted in bulk).
//!
//! `COPY` has no `ON CONFLICT`: a batch holding a record already stored
//! (Kafka redelivers after a crash or a rebalance) fails on the unique key
//! as a whole, and so does a batch holding a value PostgreSQL refuses. Either
//! way nothing of it was stored, and the batch is written again through
//! [`Db::insert`], which skips the rows already there and stores refused
//! records through the last resort. Exactly one row per record therefore
//! rests on the same unique key as before; `COPY` only makes the common
//! case, a batch of new records, cheaper.

use chrono::{DateTime, Utc};

use super::live::notify_copied;
use super::write::{database_reason, into_write_error, is_outage};
use super::{Db, StoredRow, WriteError, Written};

/// The columns in the order [`encode`] writes them.
const COPY_SQL: &str = "COPY notifications (customer_id, runner_id, order_id, value_zstd, status, created_at, \
     source_topic, event_type, correlation_id, source_service, kafka_partition, kafka_offset, kafka_key, \
     kafka_headers, kafka_timestamp, raw_value, ingest_note, normalizer, normalizer_error) FROM STDIN (FORMAT binary)";
const COLUMNS: i16 = 19;

/// The sequence row ids come from (migration 0001; its cache is 1, so every
/// id handed out after `last_value` is read is above it).
const ID_SEQUENCE: &str = "notifications_notification_id_seq";

impl Db {
    /// Writes `rows` like [`Db::insert`], as one binary `COPY` when the batch
    /// is all new records PostgreSQL accepts (the common case), and through
    /// [`Db::insert`] otherwise.
    pub async fn copy(&self, rows: &[StoredRow]) -> Result<Written, WriteError> {
        let (trusted, adjusted) = self.split_times(rows).await.map_err(into_write_error)?;
        let mut written = self.copy_trusted(&trusted).await?;
        self.write_adjusted(&adjusted, &mut written).await?;
        Ok(written)
    }

    /// [`Db::copy`] of rows whose times are their records' own.
    async fn copy_trusted(&self, rows: &[StoredRow]) -> Result<Written, WriteError> {
        if rows.is_empty() {
            return Ok(Written::default());
        }
        match self.copy_batch(rows).await {
            Ok((inserted, notified)) => {
                Ok(Written { inserted, reduced: Vec::new(), notify_failures: u64::from(!notified) })
            }
            Err(e) if is_outage(&e) => Err(WriteError::Outage(e)),
            Err(e) => {
                // A redelivery or a refused value: nothing was stored.
                tracing::debug!(rows = rows.len(), reason = %database_reason(&e), "COPY refused the batch; inserting it row by row.");
                self.insert_trusted(rows).await
            }
        }
    }

    /// Copies the batch and announces what it stored: rows copied, and
    /// whether listeners were told.
    ///
    /// Three round trips on one connection, no explicit transaction: the
    /// `COPY` is one statement, so it stores all of its rows or none, and
    /// it commits as it ends. The floor is read before it (every id the
    /// `COPY` draws is above it: the sequence's cache is 1), and the
    /// notification after it, with the last id this session drew
    /// (`currval`) filled in by the database, so that no statement waits
    /// for a `BEGIN`, a `COMMIT` or a separate read of the last id.
    async fn copy_batch(&self, rows: &[StoredRow]) -> Result<(u64, bool), sqlx::Error> {
        let data = encode(rows);
        let mut conn = self.writes.acquire().await?;
        let floor: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT last_value FROM {ID_SEQUENCE}")))
            .fetch_one(&mut *conn)
            .await?;
        let mut copy = conn.copy_in_raw(COPY_SQL).await?;
        copy.send(data).await?;
        let copied = copy.finish().await?;
        if copied == 0 {
            return Ok((0, true));
        }
        let (earliest, latest) = time_range(rows);
        let rows = i64::try_from(copied).unwrap_or(i64::MAX);
        let notified = notify_copied(&mut conn, rows, floor, ID_SEQUENCE, (earliest, latest)).await;
        Ok((copied, notified))
    }
}

fn time_range(rows: &[StoredRow]) -> (DateTime<Utc>, DateTime<Utc>) {
    let mut times = rows.iter().map(|r| r.created_at);
    let first = times.next().unwrap_or_else(Utc::now);
    times.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t)))
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The version byte of `jsonb`'s binary form, followed by the JSON text.
const JSONB_VERSION: u8 = 1;

/// `rows` in `COPY`'s binary format: a signature, flags and header
/// extension; per row its field count and each field as a length (-1 for
/// NULL) and the type's binary form (text and `bytea` as their bytes,
/// integers big-endian, timestamps as microseconds since 2000-01-01, `jsonb`
/// as a version byte and the text); a -1 after the last row.
fn encode(rows: &[StoredRow]) -> Vec<u8> {
    let size: usize = rows
        .iter()
        .map(|r| {
            160 + r.raw_value.as_ref().map_or(0, Vec::len)
                + r.value_zstd.as_ref().map_or(0, Vec::len)
                + r.kafka_key.as_ref().map_or(0, Vec::len)
                + r.kafka_headers.as_ref().map_or(0, String::len)
                + r.source_topic.len()
        })
        .sum();
    let mut out = Buffer(Vec::with_capacity(19 + size + 2));
    out.0.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.0.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
    out.0.extend_from_slice(&0_i32.to_be_bytes()); // no header extension
    for r in rows {
        let f = &r.fields;
        out.0.extend_from_slice(&COLUMNS.to_be_bytes());
        out.text(f.customer_id.as_deref());
        out.text(f.runner_id.as_deref());
        out.text(f.order_id.as_deref());
        out.bytes(r.value_zstd.as_deref());
        out.text(f.status.as_deref());
        out.time(Some(r.created_at));
        out.text(Some(&r.source_topic));
        out.text(f.event_type.as_deref());
        out.text(f.correlation_id.as_deref());
        out.text(f.source_service.as_deref());
        out.bytes(r.kafka_partition.map(i32::to_be_bytes).as_ref().map(|b| &b[..]));
        out.bytes(r.kafka_offset.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
        out.bytes(r.kafka_key.as_deref());
        out.jsonb(r.kafka_headers.as_deref());
        out.time(r.kafka_timestamp);
        out.bytes(r.raw_value.as_deref());
        out.text(r.ingest_note.as_deref());
        out.text(r.normalizer.as_deref());
        out.text(r.normalizer_error.as_deref());
    }
    out.0.extend_from_slice(&(-1_i16).to_be_bytes());
    out.0
}

struct Buffer(Vec<u8>);

impl Buffer {
    fn len_prefix(&mut self, len: usize) {
        // A field over 2 GiB cannot reach here (a batch is bounded by
        // BATCH_MAX_BYTES); saturating keeps the stream well-formed and
        // PostgreSQL then refuses the batch, which the insert path handles.
        self.0.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    }

    fn bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.0.extend_from_slice(&(-1_i32).to_be_bytes()),
            Some(b) => {
                self.len_prefix(b.len());
                self.0.extend_from_slice(b);
            }
        }
    }

    fn text(&mut self, v: Option<&str>) {
        self.bytes(v.map(str::as_bytes));
    }

    fn time(&mut self, v: Option<DateTime<Utc>>) {
        let micros = v.map(|t| (t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
        self.bytes(micros.as_ref().map(|b| &b[..]));
    }

    fn jsonb(&mut self, v: Option<&str>) {
        match v {
            None => self.bytes(None),
            Some(text) => {
                self.len_prefix(text.len() + 1);
                self.0.push(JSONB_VERSION);
                self.0.extend_from_slice(text.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_count_from_postgres_epoch() {
        let mut b = Buffer(Vec::new());
        b.time(DateTime::from_timestamp(946_684_800, 0));
        assert_eq!(b.0, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut b = Buffer(Vec::new());
        b.time(None);
        assert_eq!(b.0, (-1_i32).to_be_bytes());
    }

    #[test]
    fn jsonb_carries_its_version() {
        let mut b = Buffer(Vec::new());
        b.jsonb(Some("{}"));
        assert_eq!(b.0, [0, 0, 0, 3, 1, b'{', b'}']);
    }
}
