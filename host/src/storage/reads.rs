//! The API's queries: one order, one correlation id, a timeline, filtered
//! pages, and the plans PostgreSQL chooses for them.

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};

use super::Db;
use super::DbError;

/// A stored notification as the API reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    pub notification_id: i64,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    /// The `event` column as text (never parsed on the way out): the
    /// document of an API row, or of a record stored before the value was
    /// kept once; see [`Notification::document`].
    pub event_json: Option<String>,
    /// The value as stored: as it is, or as a zstd frame ([`Notification::value`]
    /// gives the exact bytes either way).
    pub raw_value: Option<Vec<u8>>,
    pub value_zstd: Option<Vec<u8>>,
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
    /// The record timestamp as the broker gave it (None when it had none).
    pub kafka_timestamp: Option<DateTime<Utc>>,
    /// The headers as stored: JSON text.
    pub kafka_headers: Option<String>,
    /// The transaction that stored the row (the stored order's key); None
    /// for rows stored before it was kept.
    pub stored_tx: Option<i64>,
    /// The original service's id of a row imported from it
    /// (`import-legacy`); None for every row the host stored itself.
    pub legacy_id: Option<String>,
    /// The trace id its headers carry (`traceparent`, `b3`), if any.
    pub trace_id: Option<String>,
}

pub(super) const COLUMNS: &str = "notification_id, customer_id, runner_id, order_id, event::text AS event_json, raw_value, value_zstd, \
     status, created_at, source_topic, event_type, correlation_id, source_service, kafka_partition, kafka_offset, \
     normalizer, normalizer_error, ingest_note, stored_at, kafka_key, kafka_timestamp, kafka_headers::text AS kafka_headers, \
     stored_tx::text::int8 AS stored_tx, legacy_id, notification_trace_id(kafka_headers) AS trace_id";

/// Record-time order, ties broken by the row id (the order rows were
/// written: within a partition, offset order). The same keyset as
/// `GET /notifications`, so every list of rows pages with one cursor form.
pub(super) const TIME_ORDER: &str = "created_at, notification_id";
pub(super) const TIME_ORDER_DESC: &str = "created_at DESC, notification_id DESC";

pub use notification_parse::request::{ListAfter, ListFilter, ListOrder, NewApiNotification, Position, StoredPosition};

impl Notification {
    /// The exact value; None for a tombstone. A frame that cannot be read
    /// (a damaged row) is logged and read as no value.
    pub fn value(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        super::value::stored_value(self.raw_value.as_deref(), self.value_zstd.as_deref()).unwrap_or_else(|error| {
            tracing::error!(notification_id = self.notification_id, %error, "A stored value cannot be read.");
            None
        })
    }
}

/// The id columns rows are read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdColumn {
    Order,
    Correlation,
}

impl IdColumn {
    fn name(self) -> &'static str {
        match self {
            IdColumn::Order => "order_id",
            IdColumn::Correlation => "correlation_id",
        }
    }
}

/// A visitor that keeps every row.
fn keep(rows: &mut Vec<Notification>) -> impl FnMut(Notification) -> ControlFlow<()> + '_ {
    |n| {
        rows.push(n);
        ControlFlow::Continue(())
    }
}

impl Db {
    /// The latest notification of an order by record time.
    pub async fn latest_for_order(&self, order_id: &str) -> Result<Option<Notification>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(latest_sql()))
            .bind(order_id)
            .fetch_optional(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// One notification by its row id. The id is not the partition key, so
    /// every month's partition is asked (each through its primary key).
    pub async fn notification(&self, notification_id: i64) -> Result<Option<Notification>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(notification_sql()))
            .bind(notification_id)
            .fetch_optional(&self.reads)
            .await
            .map_err(DbError::from)
    }

    /// Notifications of an order, oldest first: at most `limit`, after
    /// `after` when given.
    pub async fn for_order(
        &self,
        order_id: &str,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Notification>, DbError> {
        let mut rows = Vec::new();
        self.for_id_each(IdColumn::Order, order_id, after, limit, keep(&mut rows)).await?;
        Ok(rows)
    }

    /// Notifications of one correlation (saga) id, oldest first: at most
    /// `limit`, after `after` when given.
    pub async fn for_correlation(
        &self,
        correlation_id: &str,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<Notification>, DbError> {
        let mut rows = Vec::new();
        self.for_id_each(IdColumn::Correlation, correlation_id, after, limit, keep(&mut rows)).await?;
        Ok(rows)
    }

    /// Notifications of one id, oldest first, at most `limit`, after
    /// `after` when given, handed to `visit` one at a time (it may stop
    /// early). The read is canceled if it is dropped unfinished.
    pub async fn for_id_each(
        &self,
        column: IdColumn,
        id: &str,
        after: Option<Position>,
        limit: i64,
        visit: impl FnMut(Notification) -> ControlFlow<()>,
    ) -> Result<(), DbError> {
        self.each_matching(&for_column_sql(column.name()), id, after, limit, visit).await
    }

    /// Runs `sql` (rows matching the text $1 after an optional position
    /// $2, $3, at most $4: [`rows_after_sql`]) through [`Db::each`].
    pub(super) async fn each_matching(
        &self,
        sql: &str,
        value: &str,
        after: Option<Position>,
        limit: i64,
        visit: impl FnMut(Notification) -> ControlFlow<()>,
    ) -> Result<(), DbError> {
        let (created_at, notification_id) =
            after.map_or((None, None), |p| (Some(p.created_at), Some(p.notification_id)));
        let query =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(value).bind(created_at).bind(notification_id).bind(limit);
        self.each(query, visit).await
    }

    /// One page of notifications matching `filter` in `order`, after
    /// `after` when given. Keyset pagination: rows stored meanwhile never
    /// shift a page, so no row is repeated. In record-time order a row
    /// stored later with an earlier time sorts before pages already read
    /// (consumer lag, a late producer); in [`ListOrder::Stored`] it sorts
    /// after them, so a client that pages to the end and tails never skips
    /// one.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListAfter>,
        order: ListOrder,
        limit: i64,
    ) -> Result<Vec<Notification>, DbError> {
        let mut rows = Vec::new();
        self.list_each(filter, after, order, limit, keep(&mut rows)).await?;
        Ok(rows)
    }

    /// [`Db::list`], handing the rows to `visit` one at a time (it may stop
    /// early). The read is canceled if it is dropped unfinished.
    pub async fn list_each(
        &self,
        filter: &ListFilter,
        after: Option<ListAfter>,
        order: ListOrder,
        limit: i64,
        visit: impl FnMut(Notification) -> ControlFlow<()>,
    ) -> Result<(), DbError> {
        let mut qb = list_query("", filter, after, order, limit);
        self.each(qb.build_query_as(), visit).await
    }

    /// The plans PostgreSQL chooses for the API's queries, by query name, as
    /// `EXPLAIN` text. The benchmark prints them and the tests assert that each
    /// one is served by an index.
    pub async fn explain_api_queries(&self, sample: &QuerySample) -> Result<Vec<(&'static str, String)>, DbError> {
        let (order_id, correlation_id) = (sample.order_id.as_str(), sample.correlation_id.as_str());
        let text = |rows: Vec<String>| rows.join("\n");
        let mut plans = Vec::new();
        let latest = format!("EXPLAIN {}", latest_sql());
        plans.push((
            "latest",
            text(sqlx::query_scalar(sqlx::AssertSqlSafe(latest)).bind(order_id).fetch_all(&self.reads).await?),
        ));
        for (name, column, id) in [("order", "order_id", order_id), ("correlation", "correlation_id", correlation_id)] {
            let sql = format!("EXPLAIN {}", for_column_sql(column));
            let plan = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(None::<DateTime<Utc>>)
                .bind(None::<i64>)
                .bind(1001_i64)
                .fetch_all(&self.reads)
                .await?;
            plans.push((name, text(plan)));
        }
        let sagas = format!("EXPLAIN {}", super::timeline::saga_rows_sql(COLUMNS));
        let now = Utc::now();
        let plan = sqlx::query_scalar(sqlx::AssertSqlSafe(sagas))
            .bind(vec![correlation_id])
            .bind(order_id)
            .bind(now - chrono::Duration::days(30))
            .bind(i64::MIN)
            .bind(now)
            .bind(super::timeline::PER_SAGA)
            .fetch_all(&self.reads)
            .await?;
        plans.push(("timeline sagas", text(plan)));
        // Each filter alone, in each order.
        for (name, filter) in sample.filters() {
            for order in [ListOrder::Oldest, ListOrder::Newest, ListOrder::Stored] {
                let plan = list_query("EXPLAIN ", &filter, None, order, 101)
                    .build_query_scalar()
                    .fetch_all(&self.reads)
                    .await?;
                plans.push((name, text(plan)));
            }
        }
        Ok(plans)
    }
}

/// Ids and a time range that a table holds, for [`Db::explain_api_queries`]:
/// the plans are asked for with these values.
#[derive(Debug, Clone)]
pub struct QuerySample {
    pub order_id: String,
    pub correlation_id: String,
    pub customer_id: String,
    pub runner_id: String,
    pub event_type: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl QuerySample {
    /// Every filter `GET /notifications` serves alone, and each unindexed
    /// one with what bounds it (alone it is refused before a query is
    /// planned), by name.
    pub fn filters(&self) -> Vec<(&'static str, ListFilter)> {
        let some = |v: &String| Some(v.clone());
        vec![
            ("list: nothing", ListFilter::default()),
            ("list: customer_id", ListFilter { customer_id: some(&self.customer_id), ..Default::default() }),
            ("list: runner_id", ListFilter { runner_id: some(&self.runner_id), ..Default::default() }),
            ("list: order_id", ListFilter { order_id: some(&self.order_id), ..Default::default() }),
            ("list: correlation_id", ListFilter { correlation_id: some(&self.correlation_id), ..Default::default() }),
            (
                "list: since and until",
                ListFilter { since: Some(self.since), until: Some(self.until), ..Default::default() },
            ),
            (
                "list: event_type with customer_id",
                ListFilter {
                    customer_id: some(&self.customer_id),
                    event_type: some(&self.event_type),
                    ..Default::default()
                },
            ),
            (
                "list: event_type with since and until",
                ListFilter {
                    event_type: some(&self.event_type),
                    since: Some(self.since),
                    until: Some(self.until),
                    ..Default::default()
                },
            ),
        ]
    }
}

impl Db {
    /// The partitions of `notifications` that hold rows now (the default
    /// partition included): those whose full scan an index must spare.
    pub async fn partitions_holding_rows(&self) -> Result<Vec<String>, DbError> {
        let partitions: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'notifications'::regclass ORDER BY 1",
        )
        .fetch_all(&self.reads)
        .await?;
        let mut holding = Vec::new();
        for name in partitions {
            // The name comes from the catalogue; quoted as an identifier.
            let sql = format!("SELECT EXISTS (SELECT 1 FROM ONLY \"{}\")", name.replace('"', "\"\""));
            if sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql)).fetch_one(&self.reads).await? {
                holding.push(name);
            }
        }
        Ok(holding)
    }
}

/// The full scans in an `EXPLAIN` plan of tables that hold rows (from
/// [`Db::partitions_holding_rows`], or the parent table itself): each is a
/// query an index should have served. A scan of an empty partition (a
/// month not reached yet) costs nothing and is not counted.
pub fn full_scans_of_rows<'a>(plan: &'a str, holding: &[String]) -> Vec<&'a str> {
    plan.lines()
        .filter(|line| {
            line.split("Seq Scan on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|table| table == "notifications" || holding.iter().any(|h| h == table))
        })
        .map(str::trim)
        .collect()
}

/// The query of [`Db::list`], optionally prefixed (with `EXPLAIN`).
fn list_query(
    prefix: &str,
    filter: &ListFilter,
    after: Option<ListAfter>,
    order: ListOrder,
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
    if order == ListOrder::Stored {
        // Only transactions that are over: one still running (or not yet
        // visible) has a transaction id at or above the snapshot's xmin, so
        // a row it commits later sorts after every position returned now.
        qb.push(" AND stored_tx IS NOT NULL AND stored_tx < pg_snapshot_xmin(pg_current_snapshot())");
    }
    match after {
        Some(ListAfter::Time(p)) => {
            qb.push(if order == ListOrder::Newest {
                " AND (created_at, notification_id) < ("
            } else {
                " AND (created_at, notification_id) > ("
            });
            qb.push_bind(p.created_at).push(", ").push_bind(p.notification_id).push(")");
        }
        Some(ListAfter::Stored(p)) => {
            qb.push(" AND (notifications.stored_tx, notification_id) > (")
                .push_bind(p.stored_tx.to_string())
                .push("::xid8, ")
                .push_bind(p.notification_id)
                .push(")");
        }
        None => {}
    }
    qb.push(match order {
        ListOrder::Oldest => " ORDER BY created_at, notification_id LIMIT ",
        ListOrder::Newest => " ORDER BY created_at DESC, notification_id DESC LIMIT ",
        // Qualified: the bare name would sort by the selected text cast.
        ListOrder::Stored => " ORDER BY notifications.stored_tx, notification_id LIMIT ",
    });
    qb.push_bind(limit);
    qb
}

/// The id columns whose indexes hold a hash of the value (migration 0002):
/// a query finds candidates by the hash and keeps the exact matches.
const HASHED_ID_COLUMNS: [&str; 4] = ["order_id", "customer_id", "runner_id", "correlation_id"];

/// `column` equals the text `param`, in the form the hash index serves.
pub(super) fn id_equals(column: &str, param: &str) -> String {
    debug_assert!(HASHED_ID_COLUMNS.contains(&column.rsplit('.').next().unwrap_or(column)));
    format!("hashtextextended({column}, 0) = hashtextextended({param}, 0) AND {column} = {param}")
}

/// One row by its id ($1).
pub(super) fn notification_sql() -> String {
    format!("SELECT {COLUMNS} FROM notifications WHERE notification_id = $1 LIMIT 1")
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
    for_column_sql_of(COLUMNS, column)
}

pub(super) fn for_column_sql_of(columns: &str, column: &str) -> String {
    rows_after_sql(columns, &id_equals(column, "$1::text"))
}

/// Rows where `condition` holds (on $1), after an optional (created_at,
/// notification_id) position ($2, $3), at most $4, in record-time order.
pub(super) fn rows_after_sql(columns: &str, condition: &str) -> String {
    format!(
        "SELECT {columns} FROM notifications WHERE {condition} \
         AND ($2::timestamptz IS NULL OR (created_at, notification_id) > ($2, $3::int8)) \
         ORDER BY {TIME_ORDER} LIMIT $4"
    )
}
