//! The REST API's handlers: the original service's endpoints (an order's
//! notifications, its latest, sending one) and the queries beyond them
//! (timelines, correlation ids, filtered pages, one row).

use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::body::NotificationBody;
use super::extract::ApiPath;
use super::{ApiError, AppState, SendError, console};
use crate::config::ApiCompat;
use std::ops::ControlFlow;

use crate::storage::{IdColumn, Notification};
use notification_parse::request::{
    ListOrder, ListParams, ListRequest, Position, RowsParams, RowsRequest, StoredPosition, encode_cursor,
    encode_stored_cursor, list_request, parse_send, rows_request, valid_id,
};

pub(super) const NO_ORDER: &str = "No notifications found for this order.";

/// The latest notification of an order by record time (ties broken by
/// the row id: the row written later).
#[utoipa::path(get, path = "/order/{order_id}/latest", tag = "orders",
    params(("order_id" = String, Path, description = "The order id")),
    responses((status = 200, body = NotificationBody, description = "The order's latest notification"), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id")))]
pub(super) async fn order_latest(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    valid_id(&order_id, "order id")?;
    match state.db.latest_for_order(&order_id).await? {
        Some(n) => Ok(Json(NotificationBody::new(n, state.compat)).into_response()),
        None => Err(ApiError::NotFound(NO_ORDER)),
    }
}

/// Every notification of an order, oldest first, as the original answered:
/// a JSON array. At most `limit` rows (default 1000); when more exist, the
/// `Link` (`rel="next"`) and `X-Next-Cursor` headers lead to the rest.
#[utoipa::path(get, path = "/order/{order_id}", tag = "orders",
    params(("order_id" = String, Path, description = "The order id"), RowsParams),
    responses((status = 200, body = Vec<NotificationBody>, description = "The order's notifications, oldest first",
               headers(("Link" = String, description = "`<url>; rel=\"next\"` when more rows exist"),
                       ("X-Next-Cursor" = String, description = "Pass as `cursor` for the next rows"))),
              (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id, limit or cursor")))]
pub(super) async fn order_all(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    valid_id(&order_id, "order id")?;
    let RowsRequest { after, limit, ignored } = rows_request(query.as_deref().unwrap_or_default())?;
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, ListOrder::Oldest);
    state.db.for_id_each(IdColumn::Order, &order_id, after, i64::from(limit) + 1, |n| rows.push(n)).await?;
    if rows.is_empty() && after.is_none() {
        return Err(ApiError::NotFound(NO_ORDER));
    }
    Ok(with_ignored(rows.into_array_response(&format!("/order/{}", console::path_segment(&order_id))), &ignored))
}

/// A JSON array built row by row as the rows arrive, bounded by a count and
/// by a byte budget: it ends at `limit` rows or at the last whole row that
/// fits `max_bytes` (always at least one row), and says where the rest
/// starts. No more than the budget and one row is ever held, however large
/// the rows.
pub(super) struct JsonRows {
    out: Vec<u8>,
    count: u32,
    limit: u32,
    max_bytes: usize,
    compat: ApiCompat,
    order: ListOrder,
    /// The last row in the answer: its cursor.
    last: Option<String>,
    /// Whether rows were left out (by the count or the budget).
    more: bool,
    /// In stored order, where to resume even on the last page: a tailing
    /// client asks again from there (the request's own cursor when the page
    /// is empty).
    resume: Option<Option<String>>,
}

impl JsonRows {
    pub(super) fn new(limit: u32, max_bytes: usize, compat: ApiCompat, order: ListOrder) -> JsonRows {
        JsonRows { out: vec![b'['], count: 0, limit, max_bytes, compat, order, last: None, more: false, resume: None }
    }

    /// Always gives a cursor (stored order): the last row's, or `given`.
    pub(super) fn resuming_from(mut self, given: Option<String>) -> JsonRows {
        self.resume = Some(given);
        self
    }

    /// Takes a row, or says to stop.
    pub(super) fn push(&mut self, n: Notification) -> ControlFlow<()> {
        if self.count >= self.limit {
            self.more = true;
            return ControlFlow::Break(());
        }
        let cursor = match self.order {
            ListOrder::Stored => n.stored_tx.map(|stored_tx| {
                encode_stored_cursor(StoredPosition { stored_tx, notification_id: n.notification_id })
            }),
            order => Some(encode_cursor(
                Position { created_at: n.created_at, notification_id: n.notification_id },
                order == ListOrder::Newest,
            )),
        };
        let Ok(json) = serde_json::to_vec(&NotificationBody::new(n, self.compat)) else {
            return ControlFlow::Continue(());
        };
        if self.count > 0 && self.out.len() + json.len() + 2 > self.max_bytes {
            self.more = true;
            return ControlFlow::Break(());
        }
        if self.count > 0 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(&json);
        self.count += 1;
        self.last = cursor;
        ControlFlow::Continue(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The cursor of the rest, when rows were left out.
    fn next_cursor(&self) -> Option<String> {
        match &self.resume {
            // Before any row: the start of the log.
            Some(given) => self
                .last
                .clone()
                .or_else(|| given.clone())
                .or_else(|| Some(encode_stored_cursor(StoredPosition { stored_tx: 0, notification_id: 0 }))),
            None => self.last.clone().filter(|_| self.more),
        }
    }

    /// The array, closed.
    fn array(mut self) -> (Vec<u8>, Option<String>) {
        let next = self.next_cursor();
        self.out.push(b']');
        (self.out, next)
    }

    /// The array as the original service answered, with the next page's
    /// address in `Link` and its cursor in `X-Next-Cursor` when rows were
    /// left out.
    pub(super) fn into_array_response(self, path: &str) -> Response {
        let limit = self.limit;
        let (body, next) = self.array();
        let mut response = json_response(body);
        if let Some(cursor) = next {
            let link = format!("<{path}?cursor={cursor}&limit={limit}>; rel=\"next\"");
            for (name, value) in [(header::LINK, link), (header::HeaderName::from_static("x-next-cursor"), cursor)] {
                if let Ok(v) = header::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, v);
                }
            }
        }
        response
    }

    /// A [`Page`]: `{"notifications": [...], "next_cursor": ...}`.
    fn into_page_response(self) -> Response {
        let (array, next) = self.array();
        let mut body = Vec::with_capacity(array.len() + 64);
        body.extend_from_slice(b"{\"notifications\":");
        body.extend_from_slice(&array);
        body.extend_from_slice(b",\"next_cursor\":");
        body.extend_from_slice(serde_json::to_string(&next).unwrap_or_else(|_| "null".into()).as_bytes());
        body.push(b'}');
        json_response(body)
    }
}

/// Names the query parameters the request carried that the endpoint does
/// not know (and ignored) in `X-Ignored-Parameters`, and in the debug log.
fn with_ignored(mut response: Response, ignored: &[String]) -> Response {
    if !ignored.is_empty() {
        let names = ignored.join(", ");
        tracing::debug!(ignored = %names, "Ignored unknown query parameters.");
        if let Ok(v) = header::HeaderValue::from_str(&names) {
            response.headers_mut().insert(header::HeaderName::from_static("x-ignored-parameters"), v);
        }
    }
    response
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An order's timeline across services.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub order_id: String,
    /// The correlation (saga) ids of this page's own events.
    pub correlation_ids: Vec<String>,
    /// Oldest first; each marked `direct` (names the order) or `correlated`
    /// (shares a correlation id with an event that does, and lies within
    /// a day of the order's events).
    pub events: Vec<NotificationBody>,
    /// True when the order has more events after this page.
    pub truncated: bool,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The order's own events, and the events of the sagas they name around
/// them, in record-time order: the status of an order across services. A
/// page holds at most `limit` of the order's own events (default 1000) and
/// what fits the answer's byte budget; the order's events are never
/// crowded out by a busy saga, and `nextCursor` leads on.
#[utoipa::path(get, path = "/order/{order_id}/timeline", tag = "queries",
    params(("order_id" = String, Path, description = "The order id"), RowsParams),
    responses((status = 200, body = Timeline, description = "The order's events and the events correlated with them"), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id, limit or cursor")))]
pub(super) async fn order_timeline(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    valid_id(&order_id, "order id")?;
    let RowsRequest { after, limit, ignored } = rows_request(query.as_deref().unwrap_or_default())?;
    let page = state.db.timeline(&order_id, after, i64::from(limit), state.answer_max_bytes).await?;
    if page.direct.is_empty() && after.is_none() {
        return Err(ApiError::NotFound(NO_ORDER));
    }
    let mut correlation_ids: Vec<String> = page.direct.iter().filter_map(|n| n.correlation_id.clone()).collect();
    correlation_ids.sort();
    correlation_ids.dedup();
    let (more, sagas_cut) = (page.more, page.sagas_cut);
    // Events in order, each serialized once, until the byte budget: a cut
    // ends after the last event of the order itself that fits, so the next
    // page (which starts there) shows what was left out.
    let mut events: Vec<Vec<u8>> = Vec::new();
    let (mut bytes, mut kept, mut last_direct) = (0usize, 0usize, None);
    let mut cut = false;
    for (n, direct) in page.merged() {
        let position = Position { created_at: n.created_at, notification_id: n.notification_id };
        let body = NotificationBody {
            relation: Some(if direct { "direct" } else { "correlated" }),
            ..NotificationBody::new(n, state.compat)
        };
        let Ok(json) = serde_json::to_vec(&body) else { continue };
        if last_direct.is_some() && bytes + json.len() + 1 > state.answer_max_bytes {
            cut = true;
            break;
        }
        bytes += json.len() + 1;
        events.push(json);
        if direct {
            last_direct = Some(position);
            kept = events.len();
        }
    }
    if cut {
        events.truncate(kept);
    }
    let next_cursor = (more || cut).then(|| last_direct.map(|p| encode_cursor(p, false))).flatten();
    let mut body = Vec::with_capacity(bytes + 256);
    body.extend_from_slice(b"{\"orderId\":");
    body.extend_from_slice(serde_json::to_string(&order_id).unwrap_or_default().as_bytes());
    body.extend_from_slice(b",\"correlationIds\":");
    body.extend_from_slice(serde_json::to_string(&correlation_ids).unwrap_or_default().as_bytes());
    body.extend_from_slice(b",\"events\":[");
    body.extend_from_slice(&events.join(&b","[..]));
    body.extend_from_slice(b"],\"truncated\":");
    body.extend_from_slice(if next_cursor.is_some() || sagas_cut { b"true" } else { b"false" });
    body.extend_from_slice(b",\"nextCursor\":");
    body.extend_from_slice(serde_json::to_string(&next_cursor).unwrap_or_else(|_| "null".into()).as_bytes());
    body.push(b'}');
    Ok(with_ignored(json_response(body), &ignored))
}

/// One saga's events across all services, oldest first: a JSON array of at
/// most `limit` rows (default 1000), paged like `GET /order/{order_id}`.
#[utoipa::path(get, path = "/correlation/{correlation_id}", tag = "queries",
    params(("correlation_id" = String, Path, description = "The correlation (saga) id"), RowsParams),
    responses((status = 200, body = Vec<NotificationBody>, description = "The saga's notifications, oldest first",
               headers(("Link" = String, description = "`<url>; rel=\"next\"` when more rows exist"),
                       ("X-Next-Cursor" = String, description = "Pass as `cursor` for the next rows"))),
              (status = 404, description = "No notifications found for this correlation id."),
              (status = 400, description = "Invalid correlation id, limit or cursor")))]
pub(super) async fn correlation(
    State(state): State<AppState>,
    ApiPath(correlation_id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    valid_id(&correlation_id, "correlation id")?;
    let RowsRequest { after, limit, ignored } = rows_request(query.as_deref().unwrap_or_default())?;
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, ListOrder::Oldest);
    state.db.for_id_each(IdColumn::Correlation, &correlation_id, after, i64::from(limit) + 1, |n| rows.push(n)).await?;
    if rows.is_empty() && after.is_none() {
        return Err(ApiError::NotFound("No notifications found for this correlation id."));
    }
    Ok(with_ignored(
        rows.into_array_response(&format!("/correlation/{}", console::path_segment(&correlation_id))),
        &ignored,
    ))
}

/// Every notification of one trace, oldest first: records whose headers
/// carry this trace id (W3C `traceparent`, else B3 `b3` or `X-B3-TraceId`,
/// names in any case). 32 hex digits; a 16-digit B3 id is padded with
/// zeros as W3C does. Paged as `/correlation/{id}`.
#[utoipa::path(get, path = "/trace/{trace_id}", tag = "queries",
    params(("trace_id" = String, Path, description = "The trace id: 32 (or 16) hex digits"), RowsParams),
    responses((status = 200, body = Vec<NotificationBody>, description = "The trace's notifications, oldest first"),
              (status = 404, description = "No notifications found for this trace."),
              (status = 400, description = "Not a trace id, or an invalid limit or cursor")))]
pub(super) async fn trace(
    State(state): State<AppState>,
    ApiPath(trace_id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let trace_id = trace_id.to_ascii_lowercase();
    let hex = trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex && (trace_id.len() == 32 || trace_id.len() == 16)) || trace_id.bytes().all(|b| b == b'0') {
        return Err(ApiError::Invalid("trace_id must be 32 (or 16) hex digits, not all zero.".into()));
    }
    let trace_id = format!("{trace_id:0>32}");
    let RowsRequest { after, limit, ignored } = rows_request(query.as_deref().unwrap_or_default())?;
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, ListOrder::Oldest);
    state.db.for_trace_each(&trace_id, after, i64::from(limit) + 1, |n| rows.push(n)).await?;
    if rows.is_empty() && after.is_none() {
        return Err(ApiError::NotFound("No notifications found for this trace."));
    }
    Ok(with_ignored(rows.into_array_response(&format!("/trace/{trace_id}")), &ignored))
}

/// One notification by its row id (`notificationId`).
#[utoipa::path(get, path = "/notifications/{notification_id}", tag = "queries",
    params(("notification_id" = i64, Path, description = "The row id, `notificationId` in answers")),
    responses((status = 200, body = NotificationBody, description = "The notification"), (status = 404, description = "No such notification."),
              (status = 400, description = "Not a row id")))]
pub(super) async fn one_notification(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::Invalid("notification_id must be a whole number.".into()))?;
    match state.db.notification(id).await? {
        Some(n) => Ok(Json(NotificationBody::new(n, state.compat)).into_response()),
        None => Err(ApiError::NotFound("No such notification.")),
    }
}

/// A page of notifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    pub notifications: Vec<NotificationBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Notifications matching every given filter, in record-time order (or, with
/// `order=stored`, the order they were stored in), with keyset pagination
/// (stable while rows are being inserted). In stored order `next_cursor` is
/// given on every page, the last too: a tailing client asks again from it
/// and never misses a row, however late a record's own time.
#[utoipa::path(get, path = "/notifications", tag = "queries", params(ListParams),
    responses((status = 200, body = Page, description = "One page of notifications"), (status = 400, description = "Invalid filter, limit, order or cursor")))]
pub(super) async fn list_notifications(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let ListRequest { filter, after, order, limit, ignored, cursor } =
        list_request(query.as_deref().unwrap_or_default())?;
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, order);
    if order == ListOrder::Stored {
        rows = rows.resuming_from(cursor);
    }
    state.db.list_each(&filter, after, order, i64::from(limit) + 1, |n| rows.push(n)).await?;
    Ok(with_ignored(rows.into_page_response(), &ignored))
}

/// The body of `POST /send-notification`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"customerId": "user_2abc", "orderId": "42", "event": {"type": "ORDER_CREATED"}, "runnerId": null}))]
#[allow(dead_code)] // documents the accepted body; parsed by `parse_send`
struct SendNotification {
    #[schema(rename = "customerId")]
    customer_id: String,
    #[schema(rename = "orderId")]
    order_id: String,
    #[schema(value_type = Object)]
    event: serde_json::Value,
    #[schema(rename = "runnerId")]
    runner_id: Option<String>,
}

/// The answer of `POST /send-notification`.
#[derive(Debug, Serialize, ToSchema)]
struct Sent {
    success: bool,
    message: &'static str,
    notification: NotificationBody,
}

/// Stores a notification sent directly (source topic `api`).
#[utoipa::path(post, path = "/send-notification", tag = "orders", request_body = SendNotification,
    responses((status = 201, body = Sent, description = "Stored; the stored notification"), (status = 400, description = "Invalid body"),
              (status = 401, description = "Missing or wrong bearer token"), (status = 413, description = "Body too large")),
    security((), ("bearer" = [])))]
pub(super) async fn send_notification(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, SendError> {
    authorize(&state, &headers)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| is_json_media_type(v.trim()));
    if !is_json {
        return Err(SendError::Invalid("Content-Type must be application/json (or application/*+json).".into()));
    }
    let body = axum::body::to_bytes(request.into_body(), state.max_body_bytes).await.map_err(|e| {
        if over_limit(&e) {
            SendError::TooLarge(state.max_body_bytes)
        } else {
            SendError::Invalid("The body could not be read (malformed or interrupted transfer).".into())
        }
    })?;
    let new = parse_send(&body)?;
    let stored = state.db.insert_api(&new, &body).await.map_err(SendError::from_db)?;
    let body = Sent {
        success: true,
        message: "Notification created successfully",
        notification: NotificationBody::new(stored, state.compat),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `application/json` or a structured-syntax suffix type
/// `application/<anything>+json`, as the original service (Flask's
/// `request.is_json`) accepted.
fn is_json_media_type(media: &str) -> bool {
    let media = media.to_ascii_lowercase();
    media == "application/json"
        || media
            .strip_prefix("application/")
            .and_then(|sub| sub.strip_suffix("+json"))
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Whether reading a body failed because it passed the size cap (rather than
/// because the transfer itself was broken).
fn over_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), SendError> {
    match &state.api_token {
        Some(token) if !token.in_bearer(headers) => Err(SendError::Unauthorized),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_its_structured_suffixes_are_json() {
        for yes in ["application/json", "Application/JSON", "application/vnd.api+json", "application/merge-patch+json"]
        {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "application/+json", "text/x+json", "application/a/b+json"] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
