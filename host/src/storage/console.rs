//! The console's reads: events without their values (for timelines, the
//! live tail and a customer's or runner's events), the orders seen most
//! recently, and which kinds of id a search term is.
//!
//! A timeline of 500 events must render in milliseconds, so these queries
//! leave out the value, the document, the key and the headers (a record
//! detail reads those, for one row) and use the same hash indexes as the
//! API.

use chrono::{DateTime, Utc};

use super::Db;
use super::DbError;
use super::live::StoredBatch;
use super::reads::{Position, TIME_ORDER_DESC, for_column_sql_of, id_equals};
use super::timeline::{Timed, TimelinePage};

/// One event as a timeline or the live tail shows it: every column but
/// the value, the document, the key and the headers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventSummary {
    pub notification_id: i64,
    pub created_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub source_topic: String,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub event_type: Option<String>,
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub correlation_id: Option<String>,
    pub source_service: Option<String>,
    pub status: Option<String>,
    pub normalizer: Option<String>,
    pub normalizer_error: Option<String>,
    pub ingest_note: Option<String>,
}

impl Timed for EventSummary {
    fn position(&self) -> Position {
        Position { created_at: self.created_at, notification_id: self.notification_id }
    }

    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
}

const SUMMARY_COLUMNS: &str = "notification_id, created_at, stored_at, source_topic, kafka_partition, kafka_offset, \
     event_type, order_id, customer_id, runner_id, correlation_id, source_service, status, normalizer, \
     normalizer_error, ingest_note, octet_length(raw_value) AS value_bytes";

/// The kinds of id a search term can be, in the order a search prefers
/// them when a term is more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Order,
    Correlation,
    Customer,
    Runner,
}

impl IdKind {
    pub const ALL: [IdKind; 4] = [IdKind::Order, IdKind::Correlation, IdKind::Customer, IdKind::Runner];

    /// The column holding this kind of id.
    pub fn column(self) -> &'static str {
        match self {
            IdKind::Order => "order_id",
            IdKind::Correlation => "correlation_id",
            IdKind::Customer => "customer_id",
            IdKind::Runner => "runner_id",
        }
    }
}

/// An order seen recently, with its latest event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentOrder {
    pub order_id: String,
    pub last_at: DateTime<Utc>,
    pub event_type: Option<String>,
    /// The latest status any of its recent events carried.
    pub status: Option<String>,
    pub source_service: Option<String>,
    /// Its events among the recent rows looked at.
    pub events: i64,
}

/// How many of the newest rows the landing page looks at for its recent
/// orders: enough for a screenful of orders, bounded whatever the table's
/// size.
const RECENT_ROWS: i64 = 2000;

/// The orders of the newest rows: $1 orders from the newest $2 rows.
const RECENT_ORDERS_SQL: &str = "SELECT order_id, max(created_at) AS last_at, count(*) AS events, \
     (array_agg(event_type ORDER BY created_at DESC, notification_id DESC))[1] AS event_type, \
     (array_agg(status ORDER BY created_at DESC, notification_id DESC) FILTER (WHERE status IS NOT NULL))[1] AS status, \
     (array_agg(source_service ORDER BY created_at DESC, notification_id DESC))[1] AS source_service \
     FROM (SELECT order_id, created_at, notification_id, event_type, status, source_service FROM notifications \
           WHERE order_id IS NOT NULL AND created_at <= now() + interval '1 day' \
           ORDER BY created_at DESC, notification_id DESC LIMIT $2) recent \
     GROUP BY order_id ORDER BY last_at DESC, order_id LIMIT $1";

/// Whether $1 is stored as each kind of id, in [`IdKind::ALL`]'s order.
fn search_sql() -> String {
    let exists: Vec<String> = IdKind::ALL
        .iter()
        .map(|k| format!("EXISTS (SELECT 1 FROM notifications WHERE {})", id_equals(k.column(), "$1::text")))
        .collect();
    format!("SELECT {}", exists.join(", "))
}

/// The newest $2 events naming $1 as a `kind` id.
fn latest_of_sql(kind: IdKind) -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM notifications WHERE {} ORDER BY {TIME_ORDER_DESC} LIMIT $2",
        id_equals(kind.column(), "$1::text")
    )
}

/// Rows with ids $1 to $2 and record times $3 to $4.
fn stored_rows_sql() -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM notifications WHERE created_at BETWEEN $3 AND $4 \
         AND notification_id BETWEEN $1 AND $2 ORDER BY notification_id"
    )
}

impl Db {
    /// A page of an order's timeline, as events without their values (see
    /// [`Db::timeline`]).
    pub async fn timeline_events(
        &self,
        order_id: &str,
        after: Option<Position>,
        limit: i64,
    ) -> Result<TimelinePage<EventSummary>, DbError> {
        // Events without their values: the row limit bounds them.
        self.timeline_of(SUMMARY_COLUMNS, order_id, after, limit, usize::MAX).await
    }

    /// One correlation id's events, oldest first, at most `limit`.
    pub async fn correlation_events(&self, correlation_id: &str, limit: i64) -> Result<Vec<EventSummary>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(for_column_sql_of(SUMMARY_COLUMNS, "correlation_id")))
            .bind(correlation_id)
            .bind(None::<DateTime<Utc>>)
            .bind(None::<i64>)
            .bind(limit)
            .fetch_all(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// The newest events naming `id` as a `kind` id, newest first.
    pub async fn latest_events_of(&self, kind: IdKind, id: &str, limit: i64) -> Result<Vec<EventSummary>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(latest_of_sql(kind)))
            .bind(id)
            .bind(limit)
            .fetch_all(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// The kinds of id `id` is stored as, in [`IdKind::ALL`]'s order.
    pub async fn id_kinds(&self, id: &str) -> Result<Vec<IdKind>, DbError> {
        let exists: Vec<String> = IdKind::ALL
            .iter()
            .map(|k| format!("EXISTS (SELECT 1 FROM notifications WHERE {})", id_equals(k.column(), "$1::text")))
            .collect();
        let sql = format!("SELECT {}", exists.join(", "));
        let row: (bool, bool, bool, bool) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(&self.reads).await?;
        let found = [row.0, row.1, row.2, row.3];
        Ok(IdKind::ALL.into_iter().zip(found).filter(|(_, f)| *f).map(|(k, _)| k).collect())
    }

    /// The orders of the newest rows (by record time, up to a day ahead of
    /// now, so a record dated in the far future does not stay on top),
    /// newest first, at most `limit`.
    pub async fn recent_orders(&self, limit: i64) -> Result<Vec<RecentOrder>, DbError> {
        sqlx::query_as(RECENT_ORDERS_SQL)
            .bind(limit)
            .bind(RECENT_ROWS)
            .fetch_all(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// The plans PostgreSQL chooses for the console's own queries (those
    /// the API's [`Db::explain_api_queries`] does not cover), by name.
    pub async fn explain_console_queries(
        &self,
        order_id: &str,
        customer_id: &str,
    ) -> Result<Vec<(&'static str, String)>, DbError> {
        let text = |rows: Vec<String>| rows.join("\n");
        let explain = |sql: &str| sqlx::AssertSqlSafe(format!("EXPLAIN {sql}"));
        let mut plans = Vec::new();
        let recent = sqlx::query_scalar(explain(RECENT_ORDERS_SQL)).bind(30_i64).bind(RECENT_ROWS);
        plans.push(("recent orders", text(recent.fetch_all(&self.reads).await?)));
        let search = sqlx::query_scalar(explain(&search_sql())).bind(order_id);
        plans.push(("search", text(search.fetch_all(&self.reads).await?)));
        let customer = sqlx::query_scalar(explain(&latest_of_sql(IdKind::Customer))).bind(customer_id).bind(500_i64);
        plans.push(("customer", text(customer.fetch_all(&self.reads).await?)));
        let record = sqlx::query_scalar(explain(&super::reads::notification_sql())).bind(1_i64);
        plans.push(("record", text(record.fetch_all(&self.reads).await?)));
        // A batch of the newest rows.
        let now: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(created_at) FROM notifications WHERE created_at <= now() + interval '1 day'",
        )
        .fetch_one(&self.reads)
        .await?;
        let now = now.unwrap_or_else(Utc::now);
        let live = sqlx::query_scalar(explain(&stored_rows_sql()))
            .bind(1_i64)
            .bind(1000_i64)
            .bind(now - chrono::TimeDelta::minutes(1))
            .bind(now);
        plans.push(("live batch", text(live.fetch_all(&self.reads).await?)));
        Ok(plans)
    }

    /// The rows one committed write stored (from its notification), in row
    /// order. The ranges may also take in rows another replica wrote at
    /// the same time; a reader that follows every notification removes
    /// those it has already seen.
    pub async fn stored_rows(&self, batch: &StoredBatch) -> Result<Vec<EventSummary>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(stored_rows_sql()))
            .bind(batch.first_id)
            .bind(batch.last_id)
            .bind(batch.earliest)
            .bind(batch.latest)
            .fetch_all(&self.reads)
            .await
            .map_err(DbError::from)
    }
}
