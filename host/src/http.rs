//! The HTTP server (axum): the original service's endpoints, the queries
//! people need beyond them, health, readiness, metrics and the OpenAPI
//! document generated from these handlers.
//!
//! Every answer is JSON, errors included; a client never sees SQL or internal
//! error text (it is logged instead).

pub mod access;
mod admin;
mod api;
mod apidocs;
mod body;
pub mod console;
mod error;
mod extract;
mod sagas;
mod slots;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{ApiCompat, Role, ServeArgs};
use crate::metrics::{Metrics, RequestLabels, RouteLabel};
use crate::modules::{ModuleInfo, Modules};
use crate::status::Status;
use crate::storage::Db;
pub use access::{Token, TokenError};
pub use api::Timeline;
pub use body::NotificationBody;
pub use error::{ApiError, SendError};
pub use slots::AnswerSlots;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    /// When set, POST endpoints require it as a bearer token.
    pub api_token: Option<Token>,
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
    pub admin_token: Option<Token>,
    /// Largest `POST /admin/modules` body, in bytes.
    pub admin_max_body_bytes: usize,
    /// The module settings a pushed version is judged with.
    pub module_settings: Arc<crate::config::ModulesArgs>,
    /// When set, reads (the query API, `/normalizers`, the console) need it.
    pub read_token: Option<Token>,
    /// The console's live tail: new rows from any replica.
    pub live: Arc<console::LiveFeed>,
    /// What this replica does: `/ready` answers for it.
    pub role: Role,
    /// Most bytes of one answer (see `budget`).
    pub answer_max_bytes: usize,
    /// How many reads are answered at once (one per read connection).
    pub answer_slots: AnswerSlots,
    /// How stuck sagas are judged, and where trace ids link to.
    pub sagas: Arc<crate::config::SagaConfig>,
}

impl AppState {
    /// The state `serve` runs with, from its arguments: the tokens (a
    /// placeholder or too short a token is an error), CORS, the answers'
    /// shape and the module settings. The console's live tail ends at
    /// `shutdown`.
    pub fn new(
        args: &ServeArgs,
        db: Db,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
        modules: Arc<Modules>,
        shutdown: CancellationToken,
    ) -> Result<AppState, TokenError> {
        use crate::config::env;
        let http = &args.http;
        Ok(AppState {
            api_token: Token::configured(env::API_TOKEN, http.api_token.as_deref())?,
            admin_token: Token::configured(env::ADMIN_TOKEN, http.admin_token.as_deref())?,
            read_token: Token::configured(env::READ_TOKEN, http.read_token.as_deref())?,
            live: console::LiveFeed::new(db.clone(), metrics.clone(), shutdown),
            db,
            status,
            metrics,
            modules,
            max_body_bytes: http.max_body_bytes,
            compat: http.api_compat,
            cors_allowed_origins: http.cors_allowed_origins.clone().into(),
            admin_max_body_bytes: http.admin_max_body_bytes,
            module_settings: Arc::new(args.modules.clone()),
            role: args.role,
            sagas: Arc::new(args.sagas.clone()),
            answer_slots: AnswerSlots::new(args.db.max_connections as usize, args.db.read_timeout),
            answer_max_bytes: usize::try_from(http.answer_max_bytes.unwrap_or(crate::budget::DEFAULT_ANSWER_MAX_BYTES))
                .unwrap_or(usize::MAX),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "notification-host", description = "An audit log of every Kafka record, with the business ids its normalizer found."),
    tags((name = "orders", description = "The original service's endpoints"), (name = "queries"),
         (name = "sagas", description = "Learned saga shapes and the sagas stuck now"), (name = "operations"))
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
        .routes(routes!(ready_ingest))
        .routes(routes!(metrics))
        .routes(routes!(admin::push_module))
        .split_for_parts();
    let reads = OpenApiRouter::new().routes(routes!(normalizers));
    let (open, reads) = if role.serves_api() {
        let (send, send_doc) = OpenApiRouter::new().routes(routes!(api::send_notification)).split_for_parts();
        let reads = reads
            .routes(routes!(api::order_latest))
            .routes(routes!(api::order_all))
            .routes(routes!(api::order_timeline))
            .routes(routes!(api::correlation))
            .routes(routes!(api::trace))
            .routes(routes!(sagas::stuck))
            .routes(routes!(sagas::types))
            .routes(routes!(sagas::silent))
            .routes(routes!(api::list_notifications))
            .routes(routes!(api::one_notification));
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
        .merge(
            reads
                .route_layer(middleware::from_fn_with_state(state.clone(), slots::hold))
                .route_layer(middleware::from_fn_with_state(state.clone(), access::require_read)),
        )
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
    let method = crate::metrics::method_label(request.method().as_str());
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

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", example = json!({"status": "healthy"}))))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

/// Readiness for this replica's role, for load balancers and probes. On an
/// `all` or `api` replica: whether reads can be served (the database
/// answers), whatever the broker or the pipeline does, so that a broker
/// outage never takes the read API away. On an `ingest` replica: whether
/// records are being ingested (as `/ready/ingest`). A replica that consumes
/// also reports its ingest side under `ingest`.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, description = "Ready for this replica's role"), (status = 503, description = "Not ready, with the reasons")))]
async fn ready(State(state): State<AppState>) -> Response {
    let ingest = state.status.consumes().then(|| state.status.ingest_readiness());
    let mine = if state.role.serves_api() { state.status.api_readiness() } else { state.status.ingest_readiness() };
    let mut body = readiness_body(&mine);
    if let Some(ingest) = &ingest {
        body["ingest"] = readiness_body(ingest);
    }
    let status = if mine.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Whether this replica ingests: the consumer holds its assignment, the
/// database takes writes and the pipeline moves (a stall names what it is
/// stuck on). For alerting; `/ready` is what probes ask.
#[utoipa::path(get, path = "/ready/ingest", tag = "operations",
    responses((status = 200, description = "Ingesting"), (status = 503, description = "Not ingesting, with the reasons")))]
async fn ready_ingest(State(state): State<AppState>) -> Response {
    let ingest = state.status.ingest_readiness();
    let status = if ingest.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness_body(&ingest))).into_response()
}

fn readiness_body(readiness: &Result<(), Vec<String>>) -> serde_json::Value {
    match readiness {
        Ok(()) => json!({ "status": "ready" }),
        Err(reasons) => json!({ "status": "not ready", "reasons": reasons }),
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
        builtin: crate::modules::builtin_label(),
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
