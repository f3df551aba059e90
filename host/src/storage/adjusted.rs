//! Rows whose time is not their record's own: a record dated too far ahead
//! is stored at the time it was stored ([`super::TimeRule`]), which differs
//! between deliveries, so the unique key (which holds `created_at`) cannot
//! tell a redelivery from a new record. Such a record is written in a
//! transaction of its own together with its coordinates in
//! `notifications_adjusted`, whose primary key makes it once; and every
//! batch first drops the records that table says were stored already, so a
//! record stored with an adjusted time is not stored again with its own
//! time when, redelivered later, its time no longer looks ahead. Such
//! records are rare; a batch without them costs one indexed lookup by offset
//! range.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use super::write::{database_reason, insert_on, into_write_error, is_outage};
use super::{Db, Reduced, StoredRow, WriteError, Written};

impl Db {
    /// `rows` without the records stored earlier with an adjusted time, and
    /// the rows whose time is adjusted now.
    pub(super) async fn split_times<'r>(
        &self,
        rows: &'r [StoredRow],
    ) -> Result<(Cow<'r, [StoredRow]>, Vec<&'r StoredRow>), sqlx::Error> {
        let adjusted: Vec<&StoredRow> = rows.iter().filter(|r| r.time_adjusted).collect();
        // Offset ranges per partition of the records in this batch.
        let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        for r in rows.iter().filter(|r| !r.time_adjusted) {
            let (Some(partition), Some(offset)) = (r.kafka_partition, r.kafka_offset) else { continue };
            let range = ranges.entry((r.source_topic.as_str(), partition)).or_insert((offset, offset));
            range.0 = range.0.min(offset);
            range.1 = range.1.max(offset);
        }
        if ranges.is_empty() {
            let trusted = if adjusted.is_empty() {
                Cow::Borrowed(rows)
            } else {
                Cow::Owned(rows.iter().filter(|r| !r.time_adjusted).cloned().collect())
            };
            return Ok((trusted, adjusted));
        }
        let (topics, partitions, lows, highs): (Vec<&str>, Vec<i32>, Vec<i64>, Vec<i64>) = ranges
            .iter()
            .map(|((t, p), (lo, hi))| (*t, *p, *lo, *hi))
            .fold((Vec::new(), Vec::new(), Vec::new(), Vec::new()), |(mut t, mut p, mut l, mut h), (a, b, c, d)| {
                t.push(a);
                p.push(b);
                l.push(c);
                h.push(d);
                (t, p, l, h)
            });
        let stored: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT a.source_topic, a.kafka_partition, a.kafka_offset FROM notifications_adjusted a \
             JOIN UNNEST($1::text[], $2::int4[], $3::int8[], $4::int8[]) AS r(topic, part, lo, hi) \
             ON a.source_topic = r.topic AND a.kafka_partition = r.part AND a.kafka_offset BETWEEN r.lo AND r.hi",
        )
        .bind(&topics)
        .bind(&partitions)
        .bind(&lows)
        .bind(&highs)
        .fetch_all(&self.writes)
        .await?;
        let trusted = if stored.is_empty() {
            if adjusted.is_empty() {
                Cow::Borrowed(rows)
            } else {
                Cow::Owned(rows.iter().filter(|r| !r.time_adjusted).cloned().collect())
            }
        } else {
            let stored: HashSet<(&str, i32, i64)> = stored.iter().map(|(t, p, o)| (t.as_str(), *p, *o)).collect();
            Cow::Owned(
                rows.iter()
                    .filter(|r| !r.time_adjusted)
                    .filter(|r| {
                        !stored.contains(&(
                            r.source_topic.as_str(),
                            r.kafka_partition.unwrap_or_default(),
                            r.kafka_offset.unwrap_or_default(),
                        ))
                    })
                    .cloned()
                    .collect(),
            )
        };
        Ok((trusted, adjusted))
    }

    /// Writes each row whose time is adjusted in a transaction of its own,
    /// with its coordinates in `notifications_adjusted`: a record already
    /// there is skipped (a redelivery), and one PostgreSQL refuses is stored
    /// through the last resort in the same way.
    pub(super) async fn write_adjusted(&self, rows: &[&StoredRow], written: &mut Written) -> Result<(), WriteError> {
        for row in rows {
            match self.write_one_adjusted(row).await {
                Ok(stored) => written.add(stored, self).await,
                Err(e) if is_outage(&e) => return Err(WriteError::Outage(e)),
                Err(e) => {
                    let reason = database_reason(&e);
                    let last = row.last_resort(&reason);
                    let stored = self.write_one_adjusted(&last).await.map_err(|e| match into_write_error(e) {
                        WriteError::LastResortRefused { reason, .. } => WriteError::LastResortRefused {
                            topic: row.source_topic.clone(),
                            partition: row.kafka_partition.unwrap_or_default(),
                            offset: row.kafka_offset.unwrap_or_default(),
                            reason,
                        },
                        outage => outage,
                    })?;
                    tracing::warn!(topic = %row.source_topic, %reason, "PostgreSQL refused the row; stored the record through the last resort.");
                    written.reduced.push(Reduced {
                        topic: row.source_topic.clone(),
                        partition: row.kafka_partition.unwrap_or_default(),
                        offset: row.kafka_offset.unwrap_or_default(),
                    });
                    written.add(stored, self).await;
                }
            }
        }
        Ok(())
    }

    async fn write_one_adjusted(&self, row: &StoredRow) -> Result<Option<super::StoredBatch>, sqlx::Error> {
        let mut tx = self.writes.begin().await?;
        let first: Option<bool> = sqlx::query_scalar(
            "INSERT INTO notifications_adjusted (source_topic, kafka_partition, kafka_offset, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        )
        .bind(&row.source_topic)
        .bind(row.kafka_partition)
        .bind(row.kafka_offset)
        .bind(row.created_at)
        .fetch_optional(&mut *tx)
        .await?;
        if first.is_none() {
            // Stored at an earlier delivery.
            return Ok(None);
        }
        let stored = insert_on(&mut *tx, std::slice::from_ref(row)).await?;
        tx.commit().await?;
        Ok(stored)
    }
}
