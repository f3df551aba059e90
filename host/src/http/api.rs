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
    ListParams, ListRequest, Position, RowsParams, RowsRequest, encode_cursor, list_request, parse_send, rows_request,
    valid_id,
};

/// Most events a timeline returns.
const TIMELINE_LIMIT: i64 = 5000;

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
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, false);
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
    descending: bool,
    /// The last row in the answer.
    last: Option<Position>,
    /// Whether rows were left out (by the count or the budget).
    more: bool,
}

impl JsonRows {
    pub(super) fn new(limit: u32, max_bytes: usize, compat: ApiCompat, descending: bool) -> JsonRows {
        JsonRows { out: vec![b'['], count: 0, limit, max_bytes, compat, descending, last: None, more: false }
    }

    /// Takes a row, or says to stop.
    pub(super) fn push(&mut self, n: Notification) -> ControlFlow<()> {
        if self.count >= self.limit {
            self.more = true;
            return ControlFlow::Break(());
        }
        let position = Position { created_at: n.created_at, notification_id: n.notification_id };
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
        self.last = Some(position);
        ControlFlow::Continue(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The cursor of the rest, when rows were left out.
    fn next_cursor(&self) -> Option<String> {
        self.last.filter(|_| self.more).map(|p| encode_cursor(p, self.descending))
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
    /// The correlation (saga) ids of the order's own events.
    pub correlation_ids: Vec<String>,
    /// Oldest first; each marked `direct` or `correlated`.
    pub events: Vec<NotificationBody>,
    /// True when the timeline was cut at its size limit.
    pub truncated: bool,
}

/// The order's own events plus every event sharing a correlation id with
/// them, in record-time order: the status of an order across services.
#[utoipa::path(get, path = "/order/{order_id}/timeline", tag = "queries",
    params(("order_id" = String, Path, description = "The order id")),
    responses((status = 200, body = Timeline, description = "The order's events and the events correlated with them"), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id")))]
pub(super) async fn order_timeline(
    State(state): State<AppState>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    valid_id(&order_id, "order id")?;
    let rows = state.db.timeline(&order_id, TIMELINE_LIMIT + 1).await?;
    if !rows.iter().any(|(_, direct)| *direct) {
        return Err(ApiError::NotFound(NO_ORDER));
    }
    let truncated = rows.len() as i64 > TIMELINE_LIMIT;
    let mut correlation_ids: Vec<String> =
        rows.iter().filter(|(_, d)| *d).filter_map(|(n, _)| n.correlation_id.clone()).collect();
    correlation_ids.sort();
    correlation_ids.dedup();
    let events = rows
        .into_iter()
        .take(TIMELINE_LIMIT as usize)
        .map(|(n, direct)| NotificationBody {
            relation: Some(if direct { "direct" } else { "correlated" }),
            ..NotificationBody::new(n, state.compat)
        })
        .collect();
    Ok(Json(Timeline { order_id, correlation_ids, events, truncated }).into_response())
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
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, false);
    state.db.for_id_each(IdColumn::Correlation, &correlation_id, after, i64::from(limit) + 1, |n| rows.push(n)).await?;
    if rows.is_empty() && after.is_none() {
        return Err(ApiError::NotFound("No notifications found for this correlation id."));
    }
    Ok(with_ignored(
        rows.into_array_response(&format!("/correlation/{}", console::path_segment(&correlation_id))),
        &ignored,
    ))
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

/// Notifications matching every given filter, in record-time order, with
/// keyset pagination (stable while rows are being inserted).
#[utoipa::path(get, path = "/notifications", tag = "queries", params(ListParams),
    responses((status = 200, body = Page, description = "One page of notifications"), (status = 400, description = "Invalid filter, limit, order or cursor")))]
pub(super) async fn list_notifications(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let ListRequest { filter, after, descending, limit, ignored } = list_request(query.as_deref().unwrap_or_default())?;
    let mut rows = JsonRows::new(limit, state.answer_max_bytes, state.compat, descending);
    state.db.list_each(&filter, after, descending, i64::from(limit) + 1, |n| rows.push(n)).await?;
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
