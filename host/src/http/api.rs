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
use crate::storage::Notification;
use notification_parse::request::{
    ListParams, ListRequest, Position, RowsParams, encode_cursor, list_request, parse_send, rows_request, valid_id,
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
    let (after, limit) = rows_request(query.as_deref().unwrap_or_default())?;
    let rows = state.db.for_order(&order_id, after, i64::from(limit) + 1).await?;
    if rows.is_empty() && after.is_none() {
        return Err(ApiError::NotFound(NO_ORDER));
    }
    Ok(rows_answer(rows, limit, &format!("/order/{}", console::path_segment(&order_id)), state.compat))
}

/// A JSON array of at most `limit` rows (the query fetched one more, to
/// know whether there is a next page), with the next page's address in
/// `Link` and its cursor in `X-Next-Cursor`.
pub(super) fn rows_answer(mut rows: Vec<Notification>, limit: u32, path: &str, compat: ApiCompat) -> Response {
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|n| encode_cursor(Position { created_at: n.created_at, notification_id: n.notification_id }, false))
    } else {
        None
    };
    let mut response =
        Json(rows.into_iter().map(|n| NotificationBody::new(n, compat)).collect::<Vec<_>>()).into_response();
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
    let (after, limit) = rows_request(query.as_deref().unwrap_or_default())?;
    let rows = state.db.for_correlation(&correlation_id, after, i64::from(limit) + 1).await?;
    if rows.is_empty() && after.is_none() {
        return Err(ApiError::NotFound("No notifications found for this correlation id."));
    }
    Ok(rows_answer(rows, limit, &format!("/correlation/{}", console::path_segment(&correlation_id)), state.compat))
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
    let ListRequest { filter, after, descending, limit } = list_request(query.as_deref().unwrap_or_default())?;
    let mut rows = state.db.list(&filter, after, descending, i64::from(limit) + 1).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|n| {
            encode_cursor(Position { created_at: n.created_at, notification_id: n.notification_id }, descending)
        })
    } else {
        None
    };
    let notifications = rows.into_iter().map(|n| NotificationBody::new(n, state.compat)).collect();
    Ok(Json(Page { notifications, next_cursor }).into_response())
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
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(SendError::Invalid("Content-Type must be application/json.".into()));
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
