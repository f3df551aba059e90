//! The HTTP server (axum): the original service's endpoints, the queries
//! people need beyond them, health, readiness, metrics and the OpenAPI
//! document generated from these handlers.
//!
//! Every answer is JSON, errors included; a client never sees SQL or internal
//! error text (it is logged instead).

pub mod access;
mod admin;
mod apidocs;
pub mod console;
mod error;
mod extract;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{ApiCompat, Role};
use crate::metrics::{Metrics, RequestLabels, RouteLabel};
use crate::modules::{ModuleInfo, Modules};
use crate::status::Status;
use crate::storage::{Db, Notification};
pub use error::{ApiError, SendError};
use extract::ApiPath;
use notification_parse::request::{
    ListParams, ListRequest, Position, RowsParams, encode_cursor, list_request, parse_send, rows_request, valid_id,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

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
    /// The shape of notifications in answers (`API_COMPAT`).
    pub compat: ApiCompat,
    /// Origins allowed to call the API from a browser (`CORS_ALLOWED_ORIGINS`).
    pub cors_allowed_origins: Arc<[String]>,
    /// The token `POST /admin/modules` requires; None turns pushes over
    /// HTTP off.
    pub admin_token: Option<Arc<str>>,
    /// Largest `POST /admin/modules` body, in bytes.
    pub admin_max_body_bytes: usize,
    /// The module settings a pushed version is judged with.
    pub module_settings: Arc<crate::config::ModulesArgs>,
    /// When set, reads (the query API, `/normalizers`, the console) need it.
    pub read_token: Option<access::ReadToken>,
    /// The console's live tail: new rows from any replica.
    pub live: Arc<console::LiveFeed>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "notification-host", description = "An audit log of every Kafka record, with the business ids its normalizer found."),
    tags((name = "orders", description = "The original service's endpoints"), (name = "queries"), (name = "operations"))
)]
struct ApiDoc;

/// The routes a replica of `role` serves: those open to anyone (health,
/// readiness, metrics, writes with their own tokens), those that read the
/// log (behind the read token when one is set), and the OpenAPI document
/// describing exactly those routes.
fn routes(role: Role) -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (open, open_doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(admin::push_module))
        .split_for_parts();
    let reads = OpenApiRouter::new().routes(routes!(normalizers));
    let (open, reads) = if role.serves_api() {
        let (send, send_doc) = OpenApiRouter::new().routes(routes!(send_notification)).split_for_parts();
        let reads = reads
            .routes(routes!(order_latest))
            .routes(routes!(order_all))
            .routes(routes!(order_timeline))
            .routes(routes!(correlation))
            .routes(routes!(list_notifications))
            .routes(routes!(one_notification));
        let mut doc = open_doc;
        doc.merge(send_doc);
        ((open.merge(send), doc), reads)
    } else {
        ((open, open_doc), reads)
    };
    let (reads, reads_doc) = reads.split_for_parts();
    let (open, mut doc) = open;
    doc.merge(reads_doc);
    (open, reads, doc)
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(Role::All).2
}

/// The application's routes, without a socket (tests call it directly).
pub fn router(state: AppState) -> Router {
    router_for(state, Role::All)
}

/// The routes of a replica of `role`: an `ingest` replica serves health,
/// readiness, metrics and the normalizers only; the others also serve the
/// API and the console.
pub fn router_for(state: AppState, role: Role) -> Router {
    let (open, reads, doc) = routes(role);
    let doc_json = serde_json::to_value(&doc).unwrap_or_default();
    let reference = apidocs::page(&doc_json).into_string();
    let doc = Arc::new(doc);
    let mut router = open
        .merge(reads.route_layer(middleware::from_fn_with_state(state.clone(), access::require_read)))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound("No such endpoint.") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    if role.serves_api() {
        router = router.merge(console::router(&state));
    }
    for path in ["/apidocs", "/apidocs/"] {
        let page = reference.clone();
        router = router.route(path, axum::routing::get(move || async move { axum::response::Html(page) }));
    }
    let router = match cors_layer(&state.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(middleware::from_fn_with_state(state.clone(), track)).with_state(state)
}

/// CORS for the configured origins (`*` for any), or none.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| header::HeaderValue::from_str(o.trim()).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
            .expose_headers([header::LINK, header::HeaderName::from_static("x-next-cursor")]),
    )
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
    // A live-tail stream is answered at once and then lasts as long as its
    // page: its time is not a latency.
    if route != console::EVENTS_ROUTE {
        state.metrics.http_seconds.get_or_create(&RouteLabel { route }).observe(started.elapsed().as_secs_f64());
    }
    response
}

/// A notification as the original service returned it (camelCase), plus the
/// Kafka coordinates and the normalizer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationBody {
    /// The row id: a number; a string with `API_COMPAT=original`.
    #[schema(value_type = i64)]
    pub notification_id: serde_json::Value,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    /// The stored JSON document; the value as text when it was not JSON;
    /// null for a tombstone. With `API_COMPAT=original`, a Kafka record's
    /// event is the original's wrapper instead.
    #[schema(value_type = Object)]
    pub event: Option<Box<RawValue>>,
    pub status: Option<String>,
    /// The record's own time, RFC 3339 with offset; with
    /// `API_COMPAT=original`, a naive UTC time with microseconds.
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
    /// The record's key when it is UTF-8 text without NUL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_key: Option<String>,
    /// The record's key in base64, when it is not such text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_key_b64: Option<String>,
    /// The record's headers in order, repeats kept: `[{"key", "value"}]`,
    /// with `value_b64` for a value that is not UTF-8 text.
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_headers: Option<Box<RawValue>>,
    /// In a timeline: `direct` (names the order) or `correlated` (shares a
    /// correlation id with one that does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<&'static str>,
}

impl NotificationBody {
    /// The notification in the shape `compat` asks for.
    pub fn new(n: Notification, compat: ApiCompat) -> NotificationBody {
        let original = compat == ApiCompat::Original;
        let value = n.value();
        let document = match crate::storage::document_text(n.event_json.as_deref(), value.as_deref()) {
            Some(json) => RawValue::from_string(json.to_owned()).ok(),
            None => value
                .as_deref()
                .and_then(|bytes| serde_json::to_string(&String::from_utf8_lossy(bytes)).ok())
                .and_then(|s| RawValue::from_string(s).ok()),
        };
        drop(value);
        let event = if original && n.kafka_offset.is_some() {
            original_wrapper(
                &n.source_topic,
                &n.event_type,
                &n.correlation_id,
                &n.source_service,
                n.stored_at,
                document,
            )
        } else {
            document
        };
        NotificationBody {
            notification_id: if original {
                serde_json::Value::String(n.notification_id.to_string())
            } else {
                serde_json::Value::from(n.notification_id)
            },
            customer_id: n.customer_id,
            runner_id: n.runner_id,
            order_id: n.order_id,
            event,
            status: n.status,
            created_at: if original { naive_utc(n.created_at) } else { rfc3339(n.created_at) },
            source_topic: n.source_topic,
            event_type: n.event_type,
            correlation_id: n.correlation_id,
            source_service: n.source_service,
            kafka_partition: n.kafka_partition,
            kafka_offset: n.kafka_offset,
            normalizer: n.normalizer,
            normalizer_error: n.normalizer_error,
            ingest_note: n.ingest_note,
            kafka_key: n.kafka_key.as_deref().and_then(key_text).map(str::to_owned),
            kafka_key_b64: n
                .kafka_key
                .as_deref()
                .filter(|k| key_text(k).is_none())
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
            kafka_headers: n.kafka_headers.filter(|h| h != "[]").and_then(|h| RawValue::from_string(h).ok()),
            relation: None,
        }
    }
}

/// A key as text, when it is UTF-8 without NUL.
fn key_text(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok().filter(|k| !k.contains('\0'))
}

/// The original service's `event` for a Kafka record: `topic`, `event_type`,
/// `correlation_id`, `source_service`, `timestamp` (when it was stored,
/// naive UTC) and `payload` (the document's `payload`, else its `data`, else
/// the whole document).
fn original_wrapper(
    topic: &str,
    event_type: &Option<String>,
    correlation_id: &Option<String>,
    source_service: &Option<String>,
    stored_at: DateTime<Utc>,
    document: Option<Box<RawValue>>,
) -> Option<Box<RawValue>> {
    let document: serde_json::Value =
        document.and_then(|d| serde_json::from_str(d.get()).ok()).unwrap_or(serde_json::Value::Null);
    let payload = match &document {
        serde_json::Value::Object(o) => o.get("payload").or_else(|| o.get("data")).cloned().unwrap_or(document.clone()),
        _ => document.clone(),
    };
    let wrapper = json!({
        "topic": topic,
        "event_type": event_type,
        "correlation_id": correlation_id,
        "source_service": source_service,
        "timestamp": naive_utc(stored_at),
        "payload": payload,
    });
    RawValue::from_string(wrapper.to_string()).ok()
}

impl From<Notification> for NotificationBody {
    fn from(n: Notification) -> Self {
        NotificationBody::new(n, ApiCompat::Current)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Python's `datetime.isoformat()` of a naive UTC time, as the original
/// service answered: microseconds, left out when they are zero.
fn naive_utc(t: DateTime<Utc>) -> String {
    let naive = t.naive_utc();
    if naive.and_utc().timestamp_subsec_micros() == 0 {
        naive.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
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
#[utoipa::path(get, path = "/normalizers", tag = "operations", responses((status = 200, body = NormalizersBody, description = "The built-in default, live modules and rejections")))]
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
    state.modules.refresh_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode()).into_response()
}

/// The latest notification of an order by record time (ties broken by
/// topic, partition, offset).
#[utoipa::path(get, path = "/order/{order_id}/latest", tag = "orders",
    params(("order_id" = String, Path, description = "The order id")),
    responses((status = 200, body = NotificationBody, description = "The order's latest notification"), (status = 404, description = "No notifications found for this order."),
              (status = 400, description = "Invalid order id")))]
async fn order_latest(State(state): State<AppState>, ApiPath(order_id): ApiPath<String>) -> Result<Response, ApiError> {
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
async fn order_all(
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
fn rows_answer(mut rows: Vec<Notification>, limit: u32, path: &str, compat: ApiCompat) -> Response {
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
async fn correlation(
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
async fn one_notification(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
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
pub(crate) fn over_limit(error: &axum::Error) -> bool {
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
