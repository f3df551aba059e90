//! The on-call console under `/ui`: search by any id, an order's timeline
//! across services, a saga's trace, each record whole, the live tail and
//! the normalizers, for an engineer woken by "order 4242 is stuck".
//!
//! Rendered on the server (maud); the only script is the live tail's, and
//! it and the stylesheet are compiled into the binary, so the console works
//! air-gapped. Every page is sent with a strict Content-Security-Policy (no
//! inline script or style, nothing from another origin) whose violations
//! are reported to `/ui/csp-report` and counted in `/metrics`. With
//! `READ_TOKEN` set, the console asks for the token once and keeps it in
//! an `HttpOnly`, `SameSite=Strict` cookie ([`super::access`]).

mod live;
mod pages;
mod record;
mod sagas;
mod text;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use maud::Markup;
use sha2::{Digest as _, Sha256};

pub use live::{EVENTS_ROUTE, LiveFeed};
use pages::{LiveForm, TimelineEvent, TimelineHead};
pub use text::path_segment;

use super::AppState;
use super::access;
use crate::storage::{DbError, IdKind, document_text};
use notification_parse::request::valid_id;

/// Most events an order or saga page shows.
const TIMELINE_EVENTS: usize = 5000;
/// Most events a customer or runner page shows.
const ID_EVENTS: usize = 500;
/// Orders on the landing page.
const RECENT_ORDERS: i64 = 30;
/// Largest CSP report read.
const CSP_REPORT_BYTES: usize = 16 << 10;

/// Which part of the console a page belongs to (the highlighted tab).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Search,
    Live,
    Sagas,
    Normalizers,
    None,
}

/// The stylesheet and the script, with addresses that change with their
/// content, so a browser may cache them for good.
pub struct Assets {
    css: &'static str,
    js: &'static str,
    pub css_path: String,
    pub js_path: String,
}

pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let css = include_str!("console/assets/console.css");
    let js = include_str!("console/assets/console.js");
    let tag = |s: &str| {
        let digest = Sha256::digest(s.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()
    };
    Assets {
        css,
        js,
        css_path: format!("/ui/assets/console-{}.css", tag(css)),
        js_path: format!("/ui/assets/console-{}.js", tag(js)),
    }
});

/// The policy every console response carries: only this origin's script,
/// style, images and connections; no inline script or style, no plugins,
/// no framing; violations reported.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; report-uri /ui/csp-report";

/// The console's routes (served by replicas that serve the API).
pub fn router(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/ui", get(landing))
        .route("/ui/", get(landing))
        .route("/ui/search", get(search))
        .route("/ui/order/{id}", get(order))
        .route("/ui/correlation/{id}", get(correlation))
        .route("/ui/customer/{id}", get(customer))
        .route("/ui/runner/{id}", get(runner))
        .route("/ui/record/{id}", get(record))
        .route("/ui/record/{id}/value", get(record_value))
        .route("/ui/live", get(live_page))
        .route(EVENTS_ROUTE, get(live::events))
        .route("/ui/normalizers", get(normalizers))
        .route("/ui/sagas", get(sagas::stuck_page))
        .route("/ui/sagas/type", get(sagas::type_page))
        .route("/ui/logout", post(logout))
        .route("/ui/{*rest}", get(unknown))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_console));
    Router::new()
        .merge(pages)
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/csp-report", post(csp_report))
        .layer(middleware::from_fn(security_headers))
}

/// Errors of the console: a page with a status, never internal text.
#[derive(Debug)]
enum UiError {
    NotFound(String),
    Invalid(String),
    Database(DbError),
}

impl From<DbError> for UiError {
    fn from(e: DbError) -> UiError {
        UiError::Database(e)
    }
}

impl From<notification_parse::request::Invalid> for UiError {
    fn from(e: notification_parse::request::Invalid) -> UiError {
        UiError::Invalid(e.0)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            UiError::Invalid(m) => (StatusCode::BAD_REQUEST, "Not a valid request", m),
            UiError::Database(e) => {
                tracing::error!(error = %e, "Console query failed.");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "The database did not answer; try again in a moment.".to_owned(),
                )
            }
        };
        (status, page(title, Nav::None, pages::problem(title, &message))).into_response()
    }
}

/// A whole page.
fn page(title: &str, nav: Nav, body: Markup) -> Html<String> {
    Html(pages::layout(title, nav, false, body).into_string())
}

/// A whole page, with a sign-out button when a read token is configured.
fn signed_page(state: &AppState, title: &str, nav: Nav, body: Markup) -> Html<String> {
    Html(pages::layout(title, nav, state.read_token.is_some(), body).into_string())
}

/// The console's security headers, on every response under `/ui`.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/ui/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Lets a request through when no read token is set or it carries it;
/// otherwise a page asks for the token (and an event stream gets 401).
async fn require_console(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.read_token else { return next.run(request).await };
    if token.allows(request.headers()) {
        return next.run(request).await;
    }
    if request.method() != Method::GET || request.uri().path() == EVENTS_ROUTE {
        return access::unauthorized();
    }
    let cross_site = request.headers().get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
    if cross_site {
        // A browser withholds SameSite=Strict cookies on a navigation from
        // another site; the same page reloaded from here gets them.
        return Html(pages::reload().into_string()).into_response();
    }
    let next_path = request.uri().path_and_query().map_or("/ui", |p| p.as_str());
    Redirect::to(&format!("/ui/login?next={}", path_segment(next_path))).into_response()
}

/// Where a sign-in may send the browser: a console path, never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui") && !next.starts_with("//") && !next.contains('\\') { next } else { "/ui" }
}

#[derive(Debug, serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(State(state): State<AppState>, query: Result<Query<LoginQuery>, QueryRejection>) -> Response {
    if state.read_token.is_none() {
        return Redirect::to("/ui").into_response();
    }
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    page("Sign in", Nav::None, pages::login(safe_next(&next), false)).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(token) = &state.read_token else { return Redirect::to("/ui").into_response() };
    let Ok(axum::Form(form)) = form else {
        return (StatusCode::BAD_REQUEST, page("Sign in", Nav::None, pages::login("/ui", true))).into_response();
    };
    let next = safe_next(&form.next).to_owned();
    if !token.matches(&form.token) {
        tracing::warn!("A console sign-in gave a wrong read token.");
        return (StatusCode::UNAUTHORIZED, page("Sign in", Nav::None, pages::login(&next, true))).into_response();
    }
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&token.sign_in_cookie(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout(headers: HeaderMap) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&access::sign_out_cookie(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = if format!("/ui/assets/{file}") == ASSETS.css_path {
        (ASSETS.css, "text/css; charset=utf-8")
    } else if format!("/ui/assets/{file}") == ASSETS.js_path {
        (ASSETS.js, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")], body)
        .into_response()
}

/// Counts a browser's report of a Content-Security-Policy violation and logs
/// it (at most one line per ten seconds).
async fn csp_report(State(state): State<AppState>, body: Bytes) -> StatusCode {
    static LAST_LOGGED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    state.metrics.csp_violations.inc();
    let report = String::from_utf8_lossy(&body[..body.len().min(CSP_REPORT_BYTES)]).into_owned();
    let mut last = LAST_LOGGED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
        *last = Some(Instant::now());
        tracing::warn!(report = %text::clip(&report, 2000), "A browser reported a Content-Security-Policy violation in the console.");
    }
    StatusCode::NO_CONTENT
}

async fn landing(State(state): State<AppState>) -> Result<Html<String>, UiError> {
    let recent = state.db.recent_orders(RECENT_ORDERS).await?;
    Ok(signed_page(&state, "Orders", Nav::Search, pages::landing(&recent, Utc::now())))
}

#[derive(Debug, serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// Goes to the page of whatever kind of id the term is stored as; with
/// several kinds, lets the engineer choose. A term pasted with spaces
/// around it is tried as given first, then trimmed.
async fn search(
    State(state): State<AppState>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, UiError> {
    let Ok(Query(SearchQuery { q })) = query else {
        return Err(UiError::Invalid("The search term is not valid (percent-encoded UTF-8 expected).".into()));
    };
    let mut term = q.as_str();
    valid_id(term, "The search term")?;
    let mut kinds = state.db.id_kinds(term).await?;
    if kinds.is_empty() && term.trim() != term && !term.trim().is_empty() {
        term = term.trim();
        kinds = state.db.id_kinds(term).await?;
    }
    match kinds.as_slice() {
        [] => Err(UiError::NotFound(format!(
            "No record names “{}” as an order, customer, runner or correlation id.",
            text::clip(term, 200)
        ))),
        [kind] => Ok(Redirect::to(&pages::id_href(*kind, term)).into_response()),
        several => Ok(signed_page(&state, "Which id?", Nav::Search, pages::choose(term, several)).into_response()),
    }
}

/// A path segment id, validated as the API validates ids.
fn path_id(path: Result<Path<String>, axum::extract::rejection::PathRejection>) -> Result<String, UiError> {
    let Ok(Path(id)) = path else {
        return Err(UiError::Invalid("The path is not valid (percent-encoded UTF-8 expected).".into()));
    };
    valid_id(&id, "The id")?;
    Ok(id)
}

async fn order(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Html<String>, UiError> {
    let id = path_id(path)?;
    let page = state.db.timeline_events(&id, None, TIMELINE_EVENTS as i64).await?;
    if page.direct.is_empty() {
        return Err(UiError::NotFound(format!("No record names the order “{}”.", text::clip(&id, 200))));
    }
    let more = page.more;
    // Every event of the order itself; saga events in the room left.
    let mut room = TIMELINE_EVENTS.saturating_sub(page.direct.len());
    let all = page.merged();
    let shown = all.len();
    let rows: Vec<(crate::storage::EventSummary, bool)> = all
        .into_iter()
        .filter(|(_, direct)| {
            *direct || {
                let fits = room > 0;
                room = room.saturating_sub(1);
                fits
            }
        })
        .collect();
    let truncated = (more || rows.len() < shown).then_some(TIMELINE_EVENTS);
    let events: Vec<TimelineEvent<'_>> =
        rows.iter().map(|(event, direct)| TimelineEvent { event, direct: *direct }).collect();
    let mut correlation_ids: Vec<&str> =
        rows.iter().filter(|(_, d)| *d).filter_map(|(e, _)| e.correlation_id.as_deref()).collect();
    correlation_ids.sort_unstable();
    correlation_ids.dedup();
    let head = TimelineHead {
        kind: IdKind::Order,
        id: &id,
        api_href: format!("/order/{}/timeline", path_segment(&id)),
        correlation_ids,
        truncated,
    };
    let mut keys: Vec<String> = head.correlation_ids.iter().map(|c| crate::sagas::learn::correlation_key(c)).collect();
    keys.push(crate::sagas::learn::order_key(&id));
    let banner = sagas::overdue_banner(&state, &keys).await;
    Ok(signed_page(
        &state,
        &format!("Order {}", text::clip(&id, 60)),
        Nav::Search,
        maud::html! { @if let Some(b) = banner { (b) } (pages::timeline(&head, &events, Utc::now())) },
    ))
}

async fn correlation(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Html<String>, UiError> {
    let id = path_id(path)?;
    let rows = state.db.correlation_events(&id, TIMELINE_EVENTS as i64 + 1).await?;
    if rows.is_empty() {
        return Err(UiError::NotFound(format!("No record has the correlation id “{}”.", text::clip(&id, 200))));
    }
    let truncated = (rows.len() > TIMELINE_EVENTS).then_some(TIMELINE_EVENTS);
    let events: Vec<TimelineEvent<'_>> =
        rows.iter().take(TIMELINE_EVENTS).map(|event| TimelineEvent { event, direct: true }).collect();
    let head = TimelineHead {
        kind: IdKind::Correlation,
        id: &id,
        api_href: format!("/correlation/{}", path_segment(&id)),
        correlation_ids: Vec::new(),
        truncated,
    };
    Ok(signed_page(
        &state,
        &format!("Saga {}", text::clip(&id, 60)),
        Nav::Search,
        pages::timeline(&head, &events, Utc::now()),
    ))
}

async fn customer(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Html<String>, UiError> {
    events_of(&state, IdKind::Customer, path_id(path)?).await
}

async fn runner(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Html<String>, UiError> {
    events_of(&state, IdKind::Runner, path_id(path)?).await
}

async fn events_of(state: &AppState, kind: IdKind, id: String) -> Result<Html<String>, UiError> {
    let events = state.db.latest_events_of(kind, &id, ID_EVENTS as i64).await?;
    if events.is_empty() {
        let what = if kind == IdKind::Customer { "customer" } else { "runner" };
        return Err(UiError::NotFound(format!("No record names the {what} “{}”.", text::clip(&id, 200))));
    }
    let param = if kind == IdKind::Customer { "customer_id" } else { "runner_id" };
    let api = format!("/notifications?{param}={}&order=desc", path_segment(&id));
    let title = format!("{} {}", if kind == IdKind::Customer { "Customer" } else { "Runner" }, text::clip(&id, 60));
    Ok(signed_page(state, &title, Nav::Search, pages::events_of(kind, &id, &events, ID_EVENTS, &api)))
}

/// A row id from the path.
fn row_id(path: Result<Path<String>, axum::extract::rejection::PathRejection>) -> Result<i64, UiError> {
    let Ok(Path(id)) = path else { return Err(UiError::Invalid("The path is not valid.".into())) };
    id.parse().map_err(|_| UiError::Invalid("A record number is a whole number.".into()))
}

async fn record(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Html<String>, UiError> {
    let id = row_id(path)?;
    let Some(n) = state.db.notification(id).await? else {
        return Err(UiError::NotFound(format!("There is no record {id}.")));
    };
    let value = n.value();
    let document = document_text(n.event_json.as_deref(), value.as_deref());
    Ok(signed_page(
        &state,
        &format!("Record {id}"),
        Nav::None,
        record::record(&n, value.as_deref(), document, state.sagas.trace_url_template.as_deref()),
    ))
}

/// The exact value as a download: served as bytes, never rendered.
async fn record_value(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, UiError> {
    let id = row_id(path)?;
    let Some(value) = state.db.notification(id).await?.and_then(|n| n.value().map(std::borrow::Cow::into_owned)) else {
        return Err(UiError::NotFound(format!("Record {id} has no value.")));
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"record-{id}.bin\"")),
        ],
        value,
    )
        .into_response())
}

async fn live_page(
    State(state): State<AppState>,
    query: Result<Query<LiveForm>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let Ok(Query(form)) = query else { return Err(UiError::Invalid("The filters are not valid.".into())) };
    let mut events = String::from(EVENTS_ROUTE);
    let params: Vec<String> =
        [("topic", &form.topic), ("event_type", &form.event_type), ("service", &form.service), ("id", &form.id)]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", path_segment(v)))
            .collect();
    if !params.is_empty() {
        events.push('?');
        events.push_str(&params.join("&"));
    }
    Ok(signed_page(&state, "Live", Nav::Live, pages::live(&form, &events)))
}

async fn normalizers(State(state): State<AppState>) -> Html<String> {
    let directory = state.modules.dir().map(|d| d.display().to_string());
    let body = pages::normalizers(
        &crate::modules::builtin_label(),
        directory.as_deref(),
        &state.modules.list(),
        &state.modules.rejections(),
    );
    signed_page(&state, "Normalizers", Nav::Normalizers, body)
}

async fn unknown() -> UiError {
    UiError::NotFound("There is no such page in the console.".into())
}
