//! The HTTP server (axum): the original service's endpoints, the queries
//! people need beyond them, health, readiness, metrics and the OpenAPI
//! document generated from these handlers.
//!
//! Every answer is JSON, errors included; a client never sees SQL or internal
//! error text (it is logged instead).

mod error;
mod extract;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::{Metrics, RequestLabels, RouteLabel};
use crate::modules::{ModuleInfo, Modules};
use crate::status::Status;
use crate::storage::{Db, Notification};
pub use error::{ApiError, SendError};
use extract::ApiPath;
use notification_parse::request::{
    ListParams, ListRequest, Position, encode_cursor, list_request, parse_send, valid_id,
};

/// Most events a timeline returns.
const TIMELINE_LIMIT: i64 = 5000;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    /// When set, POST endpoints require `Authorization: Bearer <token>`.
    pub api_token: Option<Arc<str>>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The normalizer modules, for `GET /normalizers`.
    pub modules: Arc<Modules>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "notification-host", description = "An audit log of every Kafka record, with the business ids its normalizer found."),
    tags((name = "orders", description = "The original service's endpoints"), (name = "queries"), (name = "operations"))
)]
struct ApiDoc;

/// The routes and the OpenAPI document describing exactly those routes.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(order_latest))
        .routes(routes!(order_all))
        .routes(routes!(order_timeline))
        .routes(routes!(correlation))
        .routes(routes!(list_notifications))
        .routes(routes!(send_notification))
        .routes(routes!(normalizers))
        .split_for_parts()
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The application's routes, without a socket (tests call it directly).
pub fn router(state: AppState) -> Router {
    let (api, doc) = routes();
    let doc = Arc::new(doc);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
    .fallback(|| async { ApiError::NotFound("No such endpoint.") })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(middleware::from_fn_with_state(state.clone(), track))
    .with_state(state)
}

/// Counts requests by route template (never the raw path, which would let
/// clients create unbounded label sets) and times them.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.http_requests.get_or_create(&RequestLabels { route: route.clone(), method, status }).inc();
    state.metrics.http_seconds.get_or_create(&RouteLabel { route }).observe(started.elapsed().as_secs_f64());
    response
}

/// A notification as the original service returned it (camelCase), plus the
/// Kafka coordinates and the normalizer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationBody {
    pub notification_id: i64,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    /// The stored JSON document; the value as text when it was not JSON;
    /// null for a tombstone.
    #[schema(value_type = Object)]
    pub event: Option<Box<RawValue>>,
    pub status: Option<String>,
    /// The record's own time, RFC 3339 with offset.
    pub created_at: String,
    pub source_topic: String,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub source_service: Option<String>,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    /// `name@version` of the normalizer that produced the ids.
    pub normalizer: Option<String>,
    pub normalizer_error: Option<String>,
    pub ingest_note: Option<String>,
    /// In a timeline: `direct` (names the order) or `correlated` (shares a
    /// correlation id with one that does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<&'static str>,
}

impl From<Notification> for NotificationBody {
    fn from(n: Notification) -> Self {
        let event = match (n.event_json, n.raw_value) {
            (Some(json), _) => RawValue::from_string(json).ok(),
            (None, Some(bytes)) => {
                serde_json::to_string(&String::from_utf8_lossy(&bytes)).ok().and_then(|s| RawValue::from_string(s).ok())
            }
            (None, None) => None,
        };
        NotificationBody {
            notification_id: n.notification_id,
            customer_id: n.customer_id,
            runner_id: n.runner_id,
            order_id: n.order_id,
            event,
            status: n.status,
            created_at: rfc3339(n.created_at),
            source_topic: n.source_topic,
            event_type: n.event_type,
            correlation_id: n.correlation_id,
            source_service: n.source_service,
            kafka_partition: n.kafka_partition,
            kafka_offset: n.kafka_offset,
            normalizer: n.normalizer,
            normalizer_error: n.normalizer_error,
            ingest_note: n.ingest_note,
            relation: None,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

const NO_ORDER: &str = "No notifications found for this order.";

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", example = json!({"status": "healthy"}))))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

/// Readiness: the database answers and the consumer holds its assignment.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready, with the reasons")))]
async fn ready(State(state): State<AppState>) -> Response {
    match state.status.readiness() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready", "reasons": reasons })))
            .into_response(),
    }
}

/// The normalizers in use.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NormalizersBody {
    /// `name@version` of the built-in default, used for records no module matches.
    pub builtin: String,
    /// The modules directory, when one is configured.
    pub directory: Option<String>,
    /// Live modules in routing order (the first match wins).
    pub modules: Vec<ModuleInfo>,
    /// Module files that were refused (the previous version, if any, stays live).
    #[schema(value_type = Vec<Object>)]
    pub rejected: Vec<crate::modules::Rejection>,
}

/// Each loaded module with its version, content hash, routes, load time,
/// calls, errors and quarantine state, and the latest rejections.
#[utoipa::path(get, path = "/normalizers", tag = "operations", responses((status = 200, body = NormalizersBody)))]
async fn normalizers(State(state): State<AppState>) -> Json<NormalizersBody> {
    Json(NormalizersBody {
        builtin: crate::normalize::builtin_label(),
        directory: state.modules.dir().map(|d| d.display().to_string()),
        modules: state.modules.list(),
        rejected: state.modules.rejections(),
    })
}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.database_up.set(i64::from(state.status.db_up()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode()).into_response()
}

/// The latest notification of an order by record time (ties broken by
/// topic, partition, offset).
#[utoipa::path(get, path = "/order/{order_id}/latest", tag = "orders",
    params(("order_id" = String, Path, description = "The order id")),
    responses((status = 200, body = NotificationBody), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id")))]
async fn order_latest(State(state): State<AppState>, ApiPath(order_id): ApiPath<String>) -> Result<Response, ApiError> {
    valid_id(&order_id, "order id")?;
    match state.db.latest_for_order(&order_id).await? {
        Some(n) => Ok(Json(NotificationBody::from(n)).into_response()),
        None => Err(ApiError::NotFound(NO_ORDER)),
    }
}

/// Every notification of an order, oldest first.
#[utoipa::path(get, path = "/order/{order_id}", tag = "orders",
    params(("order_id" = String, Path, description = "The order id")),
    responses((status = 200, body = Vec<NotificationBody>), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id")))]
async fn order_all(State(state): State<AppState>, ApiPath(order_id): ApiPath<String>) -> Result<Response, ApiError> {
    valid_id(&order_id, "order id")?;
    let rows = state.db.for_order(&order_id).await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound(NO_ORDER));
    }
    Ok(Json(rows.into_iter().map(NotificationBody::from).collect::<Vec<_>>()).into_response())
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
    responses((status = 200, body = Timeline), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id")))]
async fn order_timeline(
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
            ..n.into()
        })
        .collect();
    Ok(Json(Timeline { order_id, correlation_ids, events, truncated }).into_response())
}

/// One saga's events across all services, oldest first.
#[utoipa::path(get, path = "/correlation/{correlation_id}", tag = "queries",
    params(("correlation_id" = String, Path, description = "The correlation (saga) id")),
    responses((status = 200, body = Vec<NotificationBody>), (status = 404, description = "No notifications found for this correlation id."),
              (status = 400, description = "Invalid correlation id")))]
async fn correlation(
    State(state): State<AppState>,
    ApiPath(correlation_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    valid_id(&correlation_id, "correlation id")?;
    let rows = state.db.for_correlation(&correlation_id).await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound("No notifications found for this correlation id."));
    }
    Ok(Json(rows.into_iter().map(NotificationBody::from).collect::<Vec<_>>()).into_response())
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
    responses((status = 200, body = Page), (status = 400, description = "Invalid filter, limit, order or cursor")))]
async fn list_notifications(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
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
    Ok(Json(Page { notifications: rows.into_iter().map(NotificationBody::from).collect(), next_cursor })
        .into_response())
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
    responses((status = 201, body = Sent), (status = 400, description = "Invalid body"),
              (status = 401, description = "Missing or wrong bearer token"), (status = 413, description = "Body too large")),
    security((), ("bearer" = [])))]
async fn send_notification(
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
    let stored = state.db.insert_api(&new).await.map_err(SendError::from_db)?;
    let body = Sent { success: true, message: "Notification created successfully", notification: stored.into() };
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
    let Some(expected) = &state.api_token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) { Ok(()) } else { Err(SendError::Unauthorized) }
}
