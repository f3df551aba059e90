//! The saga tables (see `migrations/0009_sagas.sql`): the learner's
//! transaction, the stuck sagas and the learned shapes as the API reads
//! them, and a trace's rows.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres, Transaction};

use super::reads::{COLUMNS, Notification, rows_after_sql};
use super::{Db, DbError, Position};
use crate::sagas::latencies::Latencies;
use crate::sagas::learn::{Flag, LearnRow, Model, Saga, Step, StepStats, Transition};

/// The learner's statements end within this, whatever the load.
const LEARN_STATEMENT_TIMEOUT: &str = "30s";

/// One learning transaction: it holds the learner's row, so one replica
/// learns at a time and every row is learned exactly once.
pub struct Learning {
    pub(super) tx: Transaction<'static, Postgres>,
    /// The last row learned: (stored transaction, row id).
    position: Option<(i64, i64)>,
    rows_learned: i64,
}

/// A stored row as the learner reads it, with its place in the stored
/// order.
#[derive(Debug, Clone)]
pub struct LearnerRow {
    pub row: LearnRow,
    pub stored_tx: i64,
    pub stored_at: DateTime<Utc>,
}

type StepTuple = (String, String, String, i64, i64, i64, bool, Option<f64>);
type TransitionTuple = (String, String, String, String, String, i64, Vec<i64>);
type LearnerTuple = (
    i64,
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

impl Db {
    /// Starts learning, or None when another replica is learning now.
    pub async fn begin_learning(&self) -> Result<Option<Learning>, DbError> {
        let mut tx = self.admin.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL statement_timeout = '{LEARN_STATEMENT_TIMEOUT}'")))
            .execute(&mut *tx)
            .await?;
        let row: Option<(Option<i64>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT stored_tx::text::int8, notification_id, rows_learned FROM saga_learner FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        Ok(row.map(|(tx_id, id, rows_learned)| Learning { tx, position: tx_id.zip(id), rows_learned }))
    }

    /// Forgets sagas idle for longer than `window` (at most `limit` at a
    /// time); what they taught stays.
    pub async fn forget_sagas(&self, window: Duration, limit: i64) -> Result<u64, DbError> {
        let done = sqlx::query(
            "DELETE FROM sagas WHERE saga_key IN \
             (SELECT saga_key FROM sagas WHERE last_at < now() - $1 * interval '1 second' LIMIT $2)",
        )
        .bind(window.as_secs_f64())
        .bind(limit)
        .execute(&self.admin)
        .await?;
        Ok(done.rows_affected())
    }
}

impl Learning {
    /// The next rows in stored order (only transactions that are over, so
    /// none committed later can sort before them).
    pub async fn next_rows(&mut self, limit: i64) -> Result<Vec<LearnerRow>, DbError> {
        let (after_tx, after_id) = self.position.map_or((None, None), |(t, i)| (Some(t.to_string()), Some(i)));
        let rows: Vec<LearnerTuple> = sqlx::query_as(
            "SELECT notification_id, stored_tx::text::int8, created_at, stored_at, correlation_id, order_id, \
                    source_service, event_type, status, \
                    hashtextextended(md5(coalesce(value_zstd, raw_value, convert_to(event::text, 'UTF8'))), 0) \
             FROM notifications \
             WHERE stored_tx IS NOT NULL AND stored_tx < pg_snapshot_xmin(pg_current_snapshot()) \
               AND ($1::text IS NULL OR (notifications.stored_tx, notification_id) > ($1::xid8, $2::int8)) \
             ORDER BY notifications.stored_tx, notification_id LIMIT $3",
        )
        .bind(after_tx)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, stored_tx, at, stored_at, correlation_id, order_id, service, event_type, status, doc_hash)| {
                LearnerRow {
                    row: LearnRow {
                        notification_id: id,
                        at,
                        correlation_id,
                        order_id,
                        service,
                        event_type,
                        status,
                        doc_hash,
                    },
                    stored_tx,
                    stored_at,
                }
            })
            .collect())
    }

    /// Every learned type with how many steps it has.
    pub async fn known_types(&mut self) -> Result<HashMap<String, usize>, DbError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT saga_type, count(*) FROM saga_steps GROUP BY saga_type")
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows.into_iter().map(|(t, n)| (t, usize::try_from(n).unwrap_or(usize::MAX))).collect())
    }

    /// Loads the learned steps and transitions of `types` into `model`.
    pub async fn load_types(&mut self, types: &[String], model: &mut Model) -> Result<(), DbError> {
        let steps: Vec<StepTuple> = sqlx::query_as(
            "SELECT saga_type, service, event, visits, position_sum, out_count, ends, successor_p99_ms \
             FROM saga_steps WHERE saga_type = ANY($1)",
        )
        .bind(types)
        .fetch_all(&mut *self.tx)
        .await?;
        for (t, service, event, visits, position_sum, out_count, ends, successor_p99_ms) in steps {
            model.steps.insert(
                (t, Step { service, event }),
                StepStats { visits, position_sum, out_count, successor_p99_ms, ends },
            );
        }
        let transitions: Vec<TransitionTuple> = sqlx::query_as(
            "SELECT saga_type, from_service, from_event, to_service, to_event, count, buckets \
             FROM saga_transitions WHERE saga_type = ANY($1)",
        )
        .bind(types)
        .fetch_all(&mut *self.tx)
        .await?;
        for (t, fs, fe, ts, te, count, buckets) in transitions {
            model.transitions.insert(
                (t, Step { service: fs, event: fe }, Step { service: ts, event: te }),
                Transition { count, latencies: Latencies::from_counts(&buckets) },
            );
        }
        Ok(())
    }

    /// The sagas stored under these keys.
    pub async fn sagas(&mut self, keys: &[String]) -> Result<Vec<Saga>, DbError> {
        type SagaTuple = (
            String,
            Option<String>,
            Option<String>,
            String,
            DateTime<Utc>,
            String,
            String,
            DateTime<Utc>,
            i64,
            i32,
            Vec<String>,
            Vec<i64>,
            String,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<SagaTuple> = sqlx::query_as(
            "SELECT saga_key, correlation_id, order_id, saga_type, started_at, last_service, last_event, last_at, \
                    last_notification_id, steps, statuses, recent, flags::text, flagged_at \
             FROM sagas WHERE saga_key = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    key,
                    correlation_id,
                    order_id,
                    saga_type,
                    started_at,
                    service,
                    event,
                    last_at,
                    last_id,
                    steps,
                    statuses,
                    recent,
                    flags,
                    flagged_at,
                )| Saga {
                    key,
                    correlation_id,
                    order_id,
                    saga_type,
                    started_at,
                    last: Step { service, event },
                    last_at,
                    last_notification_id: last_id,
                    steps,
                    statuses,
                    recent,
                    flags: serde_json::from_str::<Vec<Flag>>(&flags).unwrap_or_default(),
                    flagged_at,
                },
            )
            .collect())
    }

    /// Saves the sagas and what the model learned, moves the learner past
    /// `position`, and commits.
    pub async fn save(
        mut self,
        sagas: &[Saga],
        model: &Model,
        position: Option<(i64, i64)>,
        rows: i64,
    ) -> Result<(), DbError> {
        if !sagas.is_empty() {
            let doc: Vec<serde_json::Value> = sagas
                .iter()
                .map(|s| {
                    json!({
                        "saga_key": s.key, "correlation_id": s.correlation_id, "order_id": s.order_id,
                        "saga_type": s.saga_type, "started_at": s.started_at, "last_service": s.last.service,
                        "last_event": s.last.event, "last_at": s.last_at, "last_notification_id": s.last_notification_id,
                        "steps": s.steps, "statuses": s.statuses, "recent": s.recent, "flags": s.flags,
                        "flagged_at": s.flagged_at,
                    })
                })
                .collect();
            sqlx::query(
                "INSERT INTO sagas (saga_key, correlation_id, order_id, saga_type, started_at, last_service, last_event, \
                                    last_at, last_notification_id, steps, statuses, recent, flags, flagged_at) \
                 SELECT saga_key, correlation_id, order_id, saga_type, started_at, last_service, last_event, last_at, \
                        last_notification_id, steps, statuses, recent, flags, flagged_at \
                 FROM jsonb_to_recordset($1) AS r(saga_key text, correlation_id text, order_id text, saga_type text, \
                      started_at timestamptz, last_service text, last_event text, last_at timestamptz, \
                      last_notification_id int8, steps int4, statuses text[], recent int8[], flags jsonb, flagged_at timestamptz) \
                 ON CONFLICT (saga_key) DO UPDATE SET order_id = EXCLUDED.order_id, last_service = EXCLUDED.last_service, \
                      last_event = EXCLUDED.last_event, last_at = EXCLUDED.last_at, \
                      last_notification_id = EXCLUDED.last_notification_id, steps = EXCLUDED.steps, \
                      statuses = EXCLUDED.statuses, recent = EXCLUDED.recent, flags = EXCLUDED.flags, \
                      flagged_at = EXCLUDED.flagged_at, learned_at = now()",
            )
            .bind(serde_json::Value::Array(doc))
            .execute(&mut *self.tx)
            .await?;
        }
        let steps: Vec<serde_json::Value> = model
            .touched_steps
            .iter()
            .filter_map(|key| model.steps.get(key).map(|s| (key, s)))
            .map(|((t, step), s)| {
                json!({
                    "saga_type": t, "service": step.service, "event": step.event, "visits": s.visits,
                    "position_sum": s.position_sum, "out_count": s.out_count, "ends": s.ends,
                    "successor_p99_ms": s.successor_p99_ms,
                })
            })
            .collect();
        if !steps.is_empty() {
            sqlx::query(
                "INSERT INTO saga_steps (saga_type, service, event, visits, position_sum, out_count, ends, successor_p99_ms) \
                 SELECT * FROM jsonb_to_recordset($1) AS r(saga_type text, service text, event text, visits int8, \
                      position_sum int8, out_count int8, ends bool, successor_p99_ms float8) \
                 ON CONFLICT (saga_type, service, event) DO UPDATE SET visits = EXCLUDED.visits, \
                      position_sum = EXCLUDED.position_sum, out_count = EXCLUDED.out_count, ends = EXCLUDED.ends, \
                      successor_p99_ms = EXCLUDED.successor_p99_ms",
            )
            .bind(serde_json::Value::Array(steps))
            .execute(&mut *self.tx)
            .await?;
        }
        let transitions: Vec<serde_json::Value> = model
            .touched_transitions
            .iter()
            .filter_map(|key| model.transitions.get(key).map(|t| (key, t)))
            .map(|((saga_type, from, to), t)| {
                json!({
                    "saga_type": saga_type, "from_service": from.service, "from_event": from.event,
                    "to_service": to.service, "to_event": to.event, "count": t.count,
                    "buckets": t.latencies.counts(), "p50_ms": t.latencies.quantile(0.5),
                    "p90_ms": t.latencies.quantile(0.9), "p99_ms": t.latencies.quantile(0.99),
                })
            })
            .collect();
        if !transitions.is_empty() {
            sqlx::query(
                "INSERT INTO saga_transitions (saga_type, from_service, from_event, to_service, to_event, count, buckets, \
                                               p50_ms, p90_ms, p99_ms) \
                 SELECT * FROM jsonb_to_recordset($1) AS r(saga_type text, from_service text, from_event text, \
                      to_service text, to_event text, count int8, buckets int8[], p50_ms float8, p90_ms float8, p99_ms float8) \
                 ON CONFLICT (saga_type, from_service, from_event, to_service, to_event) DO UPDATE SET \
                      count = EXCLUDED.count, buckets = EXCLUDED.buckets, p50_ms = EXCLUDED.p50_ms, \
                      p90_ms = EXCLUDED.p90_ms, p99_ms = EXCLUDED.p99_ms",
            )
            .bind(serde_json::Value::Array(transitions))
            .execute(&mut *self.tx)
            .await?;
        }
        let (tx_id, id) = position.or(self.position).map_or((None, None), |(t, i)| (Some(t.to_string()), Some(i)));
        sqlx::query(
            "UPDATE saga_learner SET stored_tx = $1::xid8, notification_id = $2, rows_learned = $3, learned_at = now()",
        )
        .bind(tx_id)
        .bind(id)
        .bind(self.rows_learned.saturating_add(rows))
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Which stuck sagas to list.
#[derive(Debug, Clone, Default)]
pub struct StuckQuery {
    pub saga_type: Option<String>,
    pub service: Option<String>,
    pub event: Option<String>,
    /// Only sagas whose last step is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only overdue sagas (true), only flagged ones (false), or both.
    pub overdue: Option<bool>,
    /// Only sagas carrying a flag of this kind (`status_regression`, `duplicate`).
    pub flag: Option<String>,
    /// After this (last step's time, saga key).
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
    /// Overdue after this many times the learned p99.
    pub margin: f64,
    /// Sagas idle longer than this are not listed.
    pub window: Duration,
}

/// A stuck saga as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StuckRow {
    pub saga_key: String,
    pub correlation_id: Option<String>,
    pub order_id: Option<String>,
    pub saga_type: String,
    pub started_at: DateTime<Utc>,
    pub last_service: String,
    pub last_event: String,
    pub last_at: DateTime<Utc>,
    pub last_notification_id: i64,
    pub steps: i32,
    pub flags: String,
    pub successor_p99_ms: Option<f64>,
    pub idle_ms: f64,
    pub overdue: bool,
}

/// A learned step as the API reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub saga_type: String,
    pub service: String,
    pub event: String,
    pub visits: i64,
    pub position_sum: i64,
    pub ends: bool,
    pub successor_p99_ms: Option<f64>,
}

/// A learned transition as the API reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransitionRow {
    pub saga_type: String,
    pub from_service: String,
    pub from_event: String,
    pub to_service: String,
    pub to_event: String,
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Overdue: idle longer than the margin times its step's successor p99, by
/// its record time and since the learner saw it (a backlog being consumed
/// is not a stall).
const OVERDUE: &str = "st.successor_p99_ms IS NOT NULL \
     AND s.last_at < now() - st.successor_p99_ms * $1 * interval '1 millisecond' \
     AND s.learned_at < now() - st.successor_p99_ms * $1 * interval '1 millisecond'";

/// A [`StuckRow`] of each saga `from` yields (as `s`), with its last step's
/// threshold (margin $1), then `tail` (a filter, an order, a limit).
fn stuck_rows_sql(from: &str, tail: &str) -> String {
    format!(
        "SELECT s.saga_key, s.correlation_id, s.order_id, s.saga_type, s.started_at, s.last_service, s.last_event, \
                s.last_at, s.last_notification_id, s.steps, s.flags::text AS flags, st.successor_p99_ms, \
                (extract(epoch FROM now() - s.last_at) * 1000)::float8 AS idle_ms, \
                coalesce({OVERDUE}, false) AS overdue \
         FROM {from} \
         LEFT JOIN saga_steps st ON st.saga_type = s.saga_type AND st.service = s.last_service AND st.event = s.last_event \
         {tail}"
    )
}

impl Db {
    /// Sagas overdue or flagged, by the time of their last step, then key.
    pub async fn stuck_sagas(&self, q: &StuckQuery) -> Result<Vec<StuckRow>, DbError> {
        let (after_at, after_key) = q.after.clone().map_or((None, None), |(a, k)| (Some(a), Some(k)));
        let overdue_part = "SELECT s.saga_key FROM saga_steps st CROSS JOIN LATERAL ( \
               SELECT s.saga_key FROM sagas s \
               WHERE s.saga_type = st.saga_type AND s.last_service = st.service AND s.last_event = st.event \
                 AND s.last_at > now() - $2 * interval '1 second' \
                 AND s.last_at < now() - st.successor_p99_ms * $1 * interval '1 millisecond' \
                 AND s.learned_at < now() - st.successor_p99_ms * $1 * interval '1 millisecond' \
                 AND ($3::timestamptz IS NULL OR s.last_at >= $3) \
                 AND ($4::timestamptz IS NULL OR (s.last_at, s.saga_key) > ($4, $5::text)) \
               ORDER BY s.last_at, s.saga_key LIMIT $6) s \
             WHERE st.successor_p99_ms IS NOT NULL AND ($7::text IS NULL OR st.saga_type = $7) \
               AND ($8::text IS NULL OR st.service = $8) AND ($9::text IS NULL OR st.event = $9)";
        let flagged_part = "SELECT s.saga_key FROM sagas s \
             WHERE s.flagged_at IS NOT NULL AND s.last_at > now() - $2 * interval '1 second' \
               AND ($3::timestamptz IS NULL OR s.last_at >= $3) \
               AND ($4::timestamptz IS NULL OR (s.last_at, s.saga_key) > ($4, $5::text)) \
               AND ($7::text IS NULL OR s.saga_type = $7) AND ($8::text IS NULL OR s.last_service = $8) \
               AND ($9::text IS NULL OR s.last_event = $9) \
               AND ($10::text IS NULL OR s.flags @> jsonb_build_array(jsonb_build_object('kind', $10::text))) \
             ORDER BY s.last_at, s.saga_key LIMIT $6";
        let candidates = match (q.overdue, q.flag.is_some()) {
            (Some(true), _) => overdue_part.to_owned(),
            (Some(false), _) | (None, true) => flagged_part.to_owned(),
            (None, false) => format!("({overdue_part}) UNION ({flagged_part})"),
        };
        let sql = format!(
            "WITH candidates AS ({candidates}) {}",
            stuck_rows_sql("candidates JOIN sagas s USING (saga_key)", "ORDER BY s.last_at, s.saga_key LIMIT $6")
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(q.margin)
            .bind(q.window.as_secs_f64())
            .bind(q.since)
            .bind(after_at)
            .bind(after_key)
            .bind(q.limit)
            .bind(q.saga_type.as_deref())
            .bind(q.service.as_deref())
            .bind(q.event.as_deref())
            .bind(q.flag.as_deref())
            .fetch_all(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// How many sagas are overdue now, by type and last step: the largest
    /// `limit` groups.
    pub async fn stuck_counts(
        &self,
        margin: f64,
        window: Duration,
        limit: i64,
    ) -> Result<Vec<(String, String, String, i64)>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT st.saga_type, st.service, st.event, n FROM saga_steps st CROSS JOIN LATERAL ( \
               SELECT count(*) AS n FROM sagas s \
               WHERE s.saga_type = st.saga_type AND s.last_service = st.service AND s.last_event = st.event \
                 AND s.last_at > now() - $2 * interval '1 second' AND {OVERDUE}) c \
             WHERE st.successor_p99_ms IS NOT NULL AND n > 0 ORDER BY n DESC LIMIT $3"
        )))
        .bind(margin)
        .bind(window.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.admin)
        .await
        .map_err(DbError::from)
    }

    /// The learned steps and transitions, of one type or all, the most
    /// frequent first: at most `limit` of each.
    pub async fn saga_shapes(
        &self,
        saga_type: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<StepRow>, Vec<TransitionRow>), DbError> {
        let steps = sqlx::query_as(
            "SELECT saga_type, service, event, visits, position_sum, ends, successor_p99_ms FROM saga_steps \
             WHERE $1::text IS NULL OR saga_type = $1 ORDER BY visits DESC, saga_type, service, event LIMIT $2",
        )
        .bind(saga_type)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        let transitions = sqlx::query_as(
            "SELECT saga_type, from_service, from_event, to_service, to_event, count, p50_ms, p90_ms, p99_ms \
             FROM saga_transitions WHERE $1::text IS NULL OR saga_type = $1 \
             ORDER BY count DESC, saga_type, from_service, from_event, to_service, to_event LIMIT $2",
        )
        .bind(saga_type)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        Ok((steps, transitions))
    }

    /// The saga a row belongs to, if the learner has seen it: its type,
    /// last step, and whether it is overdue now.
    pub async fn saga_of(&self, key: &str, margin: f64) -> Result<Option<StuckRow>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(stuck_rows_sql("sagas s", "WHERE s.saga_key = $2")))
            .bind(margin)
            .bind(key)
            .fetch_optional(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// The rows of one trace (by the trace id in their headers), oldest
    /// first, at most `limit`, after `after` when given.
    pub async fn for_trace_each(
        &self,
        trace_id: &str,
        after: Option<Position>,
        limit: i64,
        visit: impl FnMut(Notification) -> ControlFlow<()>,
    ) -> Result<(), DbError> {
        let sql = rows_after_sql(COLUMNS, "notification_trace_id(kafka_headers) = $1::text");
        self.each_matching(&sql, trace_id, after, limit, visit).await
    }
}
