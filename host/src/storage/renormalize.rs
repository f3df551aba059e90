//! `renormalize`'s reads and writes: stored Kafka records back as records,
//! and their fields replaced by what the normalizers answer now.

use chrono::{DateTime, Utc};

use super::DbError;
use super::rows::headers_from_json;
use super::write::{database_reason, is_outage};
use super::{Db, StoredRow};
use crate::record::{Fields, Record};

/// A stored Kafka record as `renormalize` reads it back: the record exactly
/// as it was consumed, and what its normalizer found then.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub notification_id: i64,
    pub record: Record,
    pub fields: Fields,
    pub normalizer: Option<String>,
}

impl Db {
    /// A page of stored Kafka records (not API rows) to normalize again, in
    /// id order after `after_id`, optionally limited to one topic and an
    /// offset range.
    pub async fn stored_records(
        &self,
        topic: Option<&str>,
        offsets: (Option<i64>, Option<i64>),
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, DbError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            notification_id: i64,
            source_topic: String,
            kafka_partition: Option<i32>,
            kafka_offset: Option<i64>,
            kafka_timestamp: Option<DateTime<Utc>>,
            kafka_key: Option<Vec<u8>>,
            kafka_headers: Option<String>,
            raw_value: Option<Vec<u8>>,
            value_zstd: Option<Vec<u8>>,
            customer_id: Option<String>,
            runner_id: Option<String>,
            order_id: Option<String>,
            event_type: Option<String>,
            correlation_id: Option<String>,
            source_service: Option<String>,
            status: Option<String>,
            normalizer: Option<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT notification_id, source_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, \
             kafka_headers::text AS kafka_headers, raw_value, value_zstd, customer_id, runner_id, order_id, event_type, \
             correlation_id, source_service, status, normalizer \
             FROM notifications WHERE kafka_offset IS NOT NULL AND notification_id > $1 \
             AND ($2::text IS NULL OR source_topic = $2) AND ($3::int8 IS NULL OR kafka_offset >= $3) \
             AND ($4::int8 IS NULL OR kafka_offset <= $4) ORDER BY notification_id LIMIT $5",
        )
        .bind(after_id)
        .bind(topic)
        .bind(offsets.0)
        .bind(offsets.1)
        .bind(limit)
        .fetch_all(&self.writes)
        .await?;
        rows.into_iter()
            .map(|r| {
                let value = super::value::stored_value(r.raw_value.as_deref(), r.value_zstd.as_deref())
                    .map_err(|e| sqlx::Error::Decode(format!("row {}: {e}", r.notification_id).into()))?
                    .map(std::borrow::Cow::into_owned);
                Ok(StoredRecord {
                    notification_id: r.notification_id,
                    record: Record {
                        topic: r.source_topic,
                        partition: r.kafka_partition.unwrap_or_default(),
                        offset: r.kafka_offset.unwrap_or_default(),
                        timestamp: r.kafka_timestamp.map(|t| t.timestamp_millis()),
                        key: r.kafka_key,
                        headers: r.kafka_headers.as_deref().map(headers_from_json).unwrap_or_default(),
                        value,
                    },
                    fields: Fields {
                        customer_id: r.customer_id,
                        runner_id: r.runner_id,
                        order_id: r.order_id,
                        event_type: r.event_type,
                        correlation_id: r.correlation_id,
                        source_service: r.source_service,
                        status: r.status,
                    },
                    normalizer: r.normalizer,
                })
            })
            .collect()
    }

    /// Replaces the normalizer's fields of the given rows (by id). A row
    /// PostgreSQL refuses (found by halving the page, as [`Db::insert`]
    /// does) keeps the fields it had; it is returned with the reason, and
    /// every other row is updated. An outage is an error.
    pub async fn update_fields(&self, rows: &[(i64, StoredRow)]) -> Result<(u64, Vec<(i64, String)>), DbError> {
        let (mut updated, mut refused) = (0, Vec::new());
        let mut todo = vec![rows];
        while let Some(slice) = todo.pop() {
            if slice.is_empty() {
                continue;
            }
            match self.update_batch(slice).await {
                Ok(n) => updated += n,
                Err(e) if is_outage(&e) => return Err(e.into()),
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
        .execute(&self.writes)
        .await?;
        Ok(result.rows_affected())
    }
}
