//! New rows as they are committed, by any replica: every write that stores
//! rows also notifies [`STORED_CHANNEL`], in the same transaction, with the
//! ranges of row ids and record times it stored. PostgreSQL delivers a
//! notification only when its transaction commits, in commit order, to
//! every listening connection, so a listener learns of each stored batch
//! once it is readable, whichever replica wrote it.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;

use super::{Db, DbError};

/// The channel the write path notifies.
pub const STORED_CHANNEL: &str = "notification_rows";

/// The SQL expression, over a set of just-inserted rows (`notification_id`,
/// `created_at`), that notifies [`STORED_CHANNEL`] of them: `rows
/// first_id last_id earliest_us latest_us` (times in microseconds since the
/// Unix epoch). NULL, and no notification, when the set is empty.
pub(super) fn notify_stored_sql() -> String {
    format!(
        "CASE WHEN count(*) > 0 THEN pg_notify('{STORED_CHANNEL}', concat_ws(' ', count(*), \
         min(notification_id), max(notification_id), \
         (extract(epoch FROM min(created_at)) * 1000000)::int8, \
         (extract(epoch FROM max(created_at)) * 1000000)::int8))::text END"
    )
}

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
