//! New rows as they are committed, by any replica: every write that stores
//! rows then notifies [`STORED_CHANNEL`] with the ranges of row ids and
//! record times it stored. The notification is sent after the write has
//! committed, in a statement of its own: PostgreSQL refuses to commit a
//! transaction whose notifications do not fit its queue (a listener that
//! stopped reading fills it), and a write must never fail for the sake of
//! the console's live tail. A listener therefore learns of each stored batch
//! once it is readable, whichever replica wrote it; one that cannot be told
//! is counted (`notification_notify_failures_total`), its rows stored all
//! the same.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;

use super::{Db, DbError};

/// The channel the write path notifies.
pub const STORED_CHANNEL: &str = "notification_rows";

/// The SQL columns, over a set of just-inserted rows (`notification_id`,
/// `created_at`), that [`StoredBatch::from_summary`] reads back: count,
/// first and last id, earliest and latest record time.
pub(super) const STORED_SUMMARY_SQL: &str =
    "count(*)::int8, min(notification_id), max(notification_id), min(created_at), max(created_at)";

/// The summary [`STORED_SUMMARY_SQL`] selects.
pub(super) type Summary = (i64, Option<i64>, Option<i64>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// What one committed write stored: its rows' ids and record times lie in
/// these ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBatch {
    pub rows: i64,
    pub first_id: i64,
    pub last_id: i64,
    pub earliest: DateTime<Utc>,
    pub latest: DateTime<Utc>,
}

impl StoredBatch {
    /// The batch a summary describes; None when it stored no row.
    pub(super) fn from_summary((rows, first, last, earliest, latest): Summary) -> Option<StoredBatch> {
        (rows > 0).then_some(StoredBatch {
            rows,
            first_id: first?,
            last_id: last?,
            earliest: earliest?,
            latest: latest?,
        })
    }

    /// The notification's payload: `rows first_id last_id earliest_us
    /// latest_us` (times in microseconds since the Unix epoch).
    pub fn payload(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.rows,
            self.first_id,
            self.last_id,
            self.earliest.timestamp_micros(),
            self.latest.timestamp_micros()
        )
    }

    /// Reads a notification's payload; None when it is not one the write
    /// path sends.
    pub fn parse(payload: &str) -> Option<StoredBatch> {
        let mut parts = payload.split(' ').map(str::parse::<i64>);
        let mut next = || parts.next()?.ok();
        let (rows, first_id, last_id, earliest, latest) = (next()?, next()?, next()?, next()?, next()?);
        Some(StoredBatch {
            rows,
            first_id,
            last_id,
            earliest: DateTime::from_timestamp_micros(earliest)?,
            latest: DateTime::from_timestamp_micros(latest)?,
        })
    }
}

/// Tells listeners what a `COPY` just stored on `conn`, with
/// [`StoredBatch::payload`]'s form, its last id being the last one this
/// session drew from `sequence` (`currval`, filled in by the database, so
/// that no statement reads it first). Returns whether it was sent.
pub(super) async fn notify_copied(
    conn: &mut sqlx::PgConnection,
    rows: i64,
    first_id: i64,
    sequence: &str,
    (earliest, latest): (DateTime<Utc>, DateTime<Utc>),
) -> bool {
    let sent = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_notify($1, concat_ws(' ', $2::int8, $3::int8, currval('{sequence}'), $4::int8, $5::int8))"
    )))
    .bind(STORED_CHANNEL)
    .bind(rows)
    .bind(first_id)
    .bind(earliest.timestamp_micros())
    .bind(latest.timestamp_micros())
    .execute(conn)
    .await;
    told(sent, rows)
}

/// Whether a notification was sent; a failure is logged, never an error of
/// the write.
fn told<T>(sent: Result<T, sqlx::Error>, rows: i64) -> bool {
    match sent {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, rows, "Could not notify listeners of stored rows; the rows are stored, the live tail misses them.");
            false
        }
    }
}

/// What a listener heard.
#[derive(Debug)]
pub enum Heard {
    Stored(StoredBatch),
    /// The connection was lost and has been opened again: notifications
    /// sent meanwhile were missed.
    Reconnected,
}

/// A connection listening on a channel: it holds one connection of the pool
/// while it lives.
pub struct Listener {
    listener: PgListener,
}

impl Db {
    /// Tells every listener what a committed write stored, on a writer's
    /// connection, in a statement of its own. Returns whether it was sent;
    /// a failure is logged, never an error of the write.
    pub(super) async fn notify_stored(&self, batch: &StoredBatch) -> bool {
        self.notify_stored_on(&self.writes, batch).await
    }

    /// [`Db::notify_stored`] on a connection of `pool`.
    pub(super) async fn notify_stored_on(&self, pool: &sqlx::PgPool, batch: &StoredBatch) -> bool {
        let sent =
            sqlx::query("SELECT pg_notify($1, $2)").bind(STORED_CHANNEL).bind(batch.payload()).execute(pool).await;
        told(sent, batch.rows)
    }

    /// Listens on `channel`.
    pub async fn listen(&self, channel: &str) -> Result<Listener, DbError> {
        let mut listener = PgListener::connect_with(&self.admin).await?;
        listener.listen(channel).await?;
        Ok(Listener { listener })
    }

    /// Listens for stored batches.
    pub async fn listen_stored(&self) -> Result<StoredListener, DbError> {
        Ok(StoredListener { listener: self.listen(STORED_CHANNEL).await? })
    }
}

impl Listener {
    /// The next notification's payload, or None when the connection was
    /// lost and has been opened again (notifications sent meanwhile were
    /// missed). An error means the database cannot be reached now; calling
    /// again reconnects.
    pub async fn recv(&mut self) -> Result<Option<String>, DbError> {
        Ok(self.listener.try_recv().await?.map(|n| n.payload().to_owned()))
    }
}

/// A connection listening on [`STORED_CHANNEL`].
pub struct StoredListener {
    listener: Listener,
}

impl StoredListener {
    /// The next batch stored by any replica, or word that some were missed.
    /// An error means the database cannot be reached now; calling again
    /// reconnects.
    pub async fn next(&mut self) -> Result<Heard, DbError> {
        loop {
            match self.listener.recv().await? {
                None => return Ok(Heard::Reconnected),
                Some(payload) => match StoredBatch::parse(&payload) {
                    Some(batch) => return Ok(Heard::Stored(batch)),
                    None => tracing::debug!(%payload, "Ignoring a notification of another form."),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_written_as_they_are_read() {
        let b = StoredBatch::parse("3 10 12 1743760800000000 1743760801500000").unwrap();
        assert_eq!(StoredBatch::parse(&b.payload()), Some(b));
    }

    #[test]
    fn payloads_read_back() {
        let b = StoredBatch::parse("3 10 12 1743760800000000 1743760801500000").unwrap();
        assert_eq!((b.rows, b.first_id, b.last_id), (3, 10, 12));
        assert_eq!(b.earliest.timestamp_micros(), 1_743_760_800_000_000);
        assert_eq!(b.latest.timestamp_micros(), 1_743_760_801_500_000);
        for bad in ["", "3 10 12", "a b c d e", "3 10 12 1 x"] {
            assert_eq!(StoredBatch::parse(bad), None, "{bad:?}");
        }
    }
}
