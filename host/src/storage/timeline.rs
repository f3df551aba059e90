//! An order's timeline: every row that names the order, a page at a time,
//! and around them the rows of the sagas they belong to.
//!
//! The order's own rows come first and are never crowded out: a page holds
//! up to `limit` of them in record-time order, and the next page starts
//! after the last one (a hot order pages; it never answers "not found"). The
//! saga rows are read per correlation id and only within the page's span of
//! time (from [`SAGA_CONTEXT`] before the order's first row to as much after
//! its last), at most [`PER_SAGA`] per saga: a correlation id shared by
//! thousands of other orders (a session id reused, a placeholder) adds the
//! rows near this order's, not the earliest thousands.

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;

use super::reads::{COLUMNS, Notification, Position, TIME_ORDER, for_column_sql_of, id_equals};
use super::{Db, DbError};

/// How far before the order's first row and after its last a saga's rows
/// are shown.
pub const SAGA_CONTEXT: chrono::Duration = chrono::Duration::days(1);

/// Most rows one saga adds to a page.
pub const PER_SAGA: i64 = 1000;

/// Most sagas (correlation ids) one page follows.
pub const MAX_SAGAS: usize = 32;

/// One page of a timeline.
#[derive(Debug)]
pub struct TimelinePage<T> {
    /// The order's own rows, oldest first.
    pub direct: Vec<T>,
    /// Rows sharing a correlation id with them, within the page's span,
    /// oldest first.
    pub correlated: Vec<T>,
    /// Whether the order has more rows after this page.
    pub more: bool,
    /// Whether saga rows after the order's last row were left out for the
    /// byte budget (they are at `GET /correlation/{id}`).
    pub sagas_cut: bool,
}

/// What the timeline needs to know of a row.
pub trait Timed {
    fn position(&self) -> Position;
    fn correlation_id(&self) -> Option<&str>;
    /// About what the row holds in memory: its value and document.
    fn bytes(&self) -> usize {
        0
    }
}

impl Timed for Notification {
    fn position(&self) -> Position {
        Position { created_at: self.created_at, notification_id: self.notification_id }
    }

    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    fn bytes(&self) -> usize {
        [
            self.raw_value.as_ref().map(Vec::len),
            self.value_zstd.as_ref().map(Vec::len),
            self.event_json.as_ref().map(String::len),
        ]
        .into_iter()
        .flatten()
        .sum()
    }
}

impl<T: Timed> TimelinePage<T> {
    /// Both kinds of row in record-time order, each with whether it names
    /// the order.
    pub fn merged(self) -> Vec<(T, bool)> {
        let mut all: Vec<(T, bool)> =
            self.direct.into_iter().map(|r| (r, true)).chain(self.correlated.into_iter().map(|r| (r, false))).collect();
        all.sort_by_key(|(r, _)| {
            let p = r.position();
            (p.created_at, p.notification_id)
        });
        all
    }
}

/// The rows of the sagas `$1` (an array of correlation ids) that do not name
/// the order `$2`, after the position (`$3`, `$4`) and at or before `$5`, at
/// most `$6` per saga; each saga read through its index.
pub(super) fn saga_rows_sql(columns: &str) -> String {
    format!(
        "SELECT n.* FROM UNNEST($1::text[]) AS s(correlation_id) CROSS JOIN LATERAL ( \
           SELECT {columns} FROM notifications WHERE {by_saga} AND order_id IS DISTINCT FROM $2::text \
           AND (created_at, notification_id) > ($3, $4::int8) AND created_at <= $5 \
           ORDER BY {TIME_ORDER} LIMIT $6) n ORDER BY {TIME_ORDER}",
        by_saga = id_equals("correlation_id", "s.correlation_id"),
    )
}

impl Db {
    /// A page of an order's timeline with every column, holding about
    /// `max_bytes` of values and documents at most (one row of the order
    /// more, when that row alone is larger): a hot order of megabyte records
    /// pages rather than being read whole into memory.
    pub async fn timeline(
        &self,
        order_id: &str,
        after: Option<Position>,
        limit: i64,
        max_bytes: usize,
    ) -> Result<TimelinePage<Notification>, DbError> {
        self.timeline_of(COLUMNS, order_id, after, limit, max_bytes).await
    }

    /// A page of an order's timeline as rows of `columns`.
    pub(super) async fn timeline_of<T>(
        &self,
        columns: &str,
        order_id: &str,
        after: Option<Position>,
        limit: i64,
        max_bytes: usize,
    ) -> Result<TimelinePage<T>, DbError>
    where
        T: Timed + Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let (after_time, after_id) = after.map_or((None, None), |p| (Some(p.created_at), Some(p.notification_id)));
        let limit_rows = usize::try_from(limit).unwrap_or(0);
        let (mut direct, mut bytes, mut more): (Vec<T>, usize, bool) = (Vec::new(), 0, false);
        let query = sqlx::query_as(sqlx::AssertSqlSafe(for_column_sql_of(columns, "order_id")))
            .bind(order_id)
            .bind(after_time)
            .bind(after_id)
            .bind(limit + 1);
        self.each(query, |row: T| {
            if direct.len() >= limit_rows || (!direct.is_empty() && bytes + row.bytes() > max_bytes) {
                more = true;
                return ControlFlow::Break(());
            }
            bytes += row.bytes();
            direct.push(row);
            ControlFlow::Continue(())
        })
        .await?;
        let (Some(first), Some(last)) = (direct.first(), direct.last()) else {
            return Ok(TimelinePage { direct, correlated: Vec::new(), more: false, sagas_cut: false });
        };
        // The span this page covers: from where the previous page ended (or
        // the context before the first row) to the last row (or the context
        // after it, on the last page).
        let from: (DateTime<Utc>, i64) = match after {
            Some(p) => (p.created_at, p.notification_id),
            None => (first.position().created_at - SAGA_CONTEXT, i64::MIN),
        };
        let to: DateTime<Utc> =
            if more { last.position().created_at } else { last.position().created_at + SAGA_CONTEXT };
        let mut sagas: Vec<&str> = direct.iter().filter_map(Timed::correlation_id).collect();
        sagas.sort_unstable();
        sagas.dedup();
        sagas.truncate(MAX_SAGAS);
        if sagas.is_empty() {
            return Ok(TimelinePage { direct, correlated: Vec::new(), more, sagas_cut: false });
        }
        let query = sqlx::query_as(sqlx::AssertSqlSafe(saga_rows_sql(columns)))
            .bind(&sagas)
            .bind(order_id)
            .bind(from.0)
            .bind(from.1)
            .bind(to)
            .bind(PER_SAGA);
        // The saga rows come in record-time order; where they pass what is
        // left of the budget, the page ends before that row's time: the order's
        // rows after it move to the next page, which starts from there. Past
        // the order's last row there is no next page: the saga's rest is left
        // out, and said to be.
        let mut correlated: Vec<T> = Vec::new();
        let mut cut: Option<Position> = None;
        self.each(query, |row: T| {
            if bytes + row.bytes() > max_bytes {
                cut = Some(row.position());
                return ControlFlow::Break(());
            }
            bytes += row.bytes();
            correlated.push(row);
            ControlFlow::Continue(())
        })
        .await?;
        let mut sagas_cut = false;
        if let Some(cut) = cut {
            let key = |p: Position| (p.created_at, p.notification_id);
            let before = direct.iter().take_while(|r| key(r.position()) < key(cut)).count().max(1);
            if before < direct.len() {
                direct.truncate(before);
                more = true;
                if let Some(last) = direct.last().map(|r| key(r.position())) {
                    correlated.retain(|r| key(r.position()) <= last);
                }
            } else {
                sagas_cut = true;
            }
        }
        Ok(TimelinePage { direct, correlated, more, sagas_cut })
    }
}
