//! `GET /sagas/stuck` and `GET /sagas/types`: which sagas are stuck now
//! and the shapes they were judged by, as the saga learner learned them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, console};
use crate::sagas::{Flag, Step};
use crate::storage::{StepRow, StuckQuery, StuckRow, TransitionRow};

/// Most sagas in one page of `/sagas/stuck`.
pub const MAX_STUCK_PAGE: i64 = 500;
const DEFAULT_STUCK_PAGE: i64 = 100;
/// Most steps and most transitions in one `/sagas/types` answer.
pub const MAX_SHAPE_ROWS: i64 = 5_000;

/// Filters of `GET /sagas/stuck`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the query string, parsed by `stuck_query`
struct StuckParams {
    /// Only sagas of this type (the event of their first step).
    #[param(rename = "type")]
    saga_type: Option<String>,
    /// Only sagas whose last step is this event.
    step: Option<String>,
    /// Only sagas whose last step came from this source service.
    service: Option<String>,
    /// Only sagas whose last step is at or after this time (RFC 3339).
    since: Option<String>,
    /// `overdue`, `status_regression` or `duplicate`: only sagas stuck for
    /// this reason.
    reason: Option<String>,
    /// Sagas per page, 1 to 500 (default 100).
    limit: Option<i64>,
    /// `next` of the previous page.
    cursor: Option<String>,
}

/// A saga that is overdue or was flagged.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StuckSaga {
    /// `c:` and the correlation id, or `o:` and the order id (ids over 200
    /// bytes by their SHA-256).
    pub saga_key: String,
    pub correlation_id: Option<String>,
    pub order_id: Option<String>,
    /// The event of the saga's first step.
    pub saga_type: String,
    pub started_at: DateTime<Utc>,
    pub last_step: Step,
    /// The record time of the last step.
    pub last_event_at: DateTime<Utc>,
    pub last_notification_id: i64,
    pub steps: i32,
    /// Milliseconds since the last step.
    pub idle_ms: f64,
    /// The largest learned p99 of the steps that follow the last one.
    pub next_step_p99_ms: Option<f64>,
    /// How overdue: idle time over that p99 (only when overdue).
    pub overdue_by_p99: Option<f64>,
    /// `overdue`, `status_regression`, `duplicate`.
    pub reasons: Vec<String>,
    pub flags: Vec<Flag>,
    /// Where to read the saga: the order's timeline, else the correlation id's rows.
    pub timeline: String,
}

/// A page of stuck sagas, oldest last step first.
#[derive(Debug, Serialize, ToSchema)]
pub struct StuckPage {
    pub sagas: Vec<StuckSaga>,
    /// Pass as `cursor` for the next page; null at the end.
    pub next: Option<String>,
}

impl StuckSaga {
    pub fn from_row(row: StuckRow) -> StuckSaga {
        let flags: Vec<Flag> = serde_json::from_str(&row.flags).unwrap_or_default();
        let mut reasons = Vec::new();
        if row.overdue {
            reasons.push("overdue".to_owned());
        }
        for f in &flags {
            let kind =
                serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            if !reasons.contains(&kind) {
                reasons.push(kind);
            }
        }
        let timeline = match (&row.order_id, &row.correlation_id) {
            (Some(o), _) => format!("/order/{}/timeline", console::path_segment(o)),
            (None, Some(c)) => format!("/correlation/{}", console::path_segment(c)),
            (None, None) => String::new(),
        };
        StuckSaga {
            saga_key: row.saga_key,
            correlation_id: row.correlation_id,
            order_id: row.order_id,
            saga_type: row.saga_type,
            started_at: row.started_at,
            last_step: Step { service: row.last_service, event: row.last_event },
            last_event_at: row.last_at,
            last_notification_id: row.last_notification_id,
            steps: row.steps,
            idle_ms: row.idle_ms.max(0.0),
            next_step_p99_ms: row.successor_p99_ms,
            overdue_by_p99: row
                .successor_p99_ms
                .filter(|_| row.overdue)
                .map(|p| row.idle_ms / p.max(f64::MIN_POSITIVE)),
            reasons,
            flags,
            timeline,
        }
    }
}

fn encode_cursor(at: DateTime<Utc>, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s1.{}.{key}", at.timestamp_micros()))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::Invalid("cursor is not one this endpoint gave.".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, '.');
    let (Some("s1"), Some(micros), Some(key)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let at = micros.parse::<i64>().ok().and_then(DateTime::from_timestamp_micros).ok_or_else(bad)?;
    Ok((at, key.to_owned()))
}

/// Parses `/sagas/stuck`'s query string (unknown parameters are ignored, as
/// everywhere in the API).
fn stuck_query(state: &AppState, query: &str) -> Result<StuckQuery, ApiError> {
    let config = &state.sagas;
    let mut q = StuckQuery {
        limit: DEFAULT_STUCK_PAGE,
        margin: config.saga_overdue_margin,
        window: config.saga_window,
        ..StuckQuery::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "type" => q.saga_type = Some(value),
            "step" => q.event = Some(value),
            "service" => q.service = Some(value),
            "since" => {
                let since = DateTime::parse_from_rfc3339(&value).map_err(|_| {
                    ApiError::Invalid("since must be an RFC 3339 time, e.g. 2026-12-07T10:00:00Z.".into())
                })?;
                q.since = Some(since.with_timezone(&Utc));
            }
            "reason" => match value.as_str() {
                "overdue" => q.overdue = Some(true),
                "status_regression" | "duplicate" => {
                    q.overdue = Some(false);
                    q.flag = Some(value);
                }
                _ => return Err(ApiError::Invalid("reason must be overdue, status_regression or duplicate.".into())),
            },
            "limit" => {
                q.limit = value.parse::<i64>().ok().filter(|l| (1..=MAX_STUCK_PAGE).contains(l)).ok_or_else(|| {
                    ApiError::Invalid(format!("limit must be a whole number from 1 to {MAX_STUCK_PAGE}."))
                })?;
            }
            "cursor" => q.after = Some(decode_cursor(&value)?),
            _ => {}
        }
    }
    Ok(q)
}

/// Sagas stuck now: overdue (idle longer than `SAGA_OVERDUE_MARGIN` times
/// the learned p99 of every step that can follow their last one, and not
/// at an ending step) or flagged (a status gone backwards, the same event
/// stored twice), oldest last step first, in keyset pages.
#[utoipa::path(get, path = "/sagas/stuck", tag = "sagas", params(StuckParams),
    responses((status = 200, body = StuckPage, description = "Stuck sagas"), (status = 400, description = "Invalid filter or cursor")))]
pub(super) async fn stuck(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<StuckPage>, ApiError> {
    let mut q = stuck_query(&state, query.as_deref().unwrap_or_default())?;
    let limit = q.limit;
    q.limit = limit + 1;
    let mut rows = state.db.stuck_sagas(&q).await?;
    let next = if rows.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        rows.last().map(|r| encode_cursor(r.last_at, &r.saga_key))
    } else {
        None
    };
    Ok(Json(StuckPage { sagas: rows.into_iter().map(StuckSaga::from_row).collect(), next }))
}

/// A learned step of a saga type.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShapeStep {
    #[serde(flatten)]
    pub step: Step,
    /// Sagas that reached it.
    pub visits: i64,
    /// Its average position in its sagas (0: the first step).
    pub mean_position: f64,
    /// At least a tenth of the sagas that reached it went no further.
    pub ends: bool,
    /// The largest learned p99 of the steps that follow it: a saga idle
    /// here longer than `SAGA_OVERDUE_MARGIN` times this is overdue.
    pub next_step_p99_ms: Option<f64>,
}

/// A learned transition between two steps.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShapeTransition {
    pub from: Step,
    pub to: Step,
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The learned graph of one saga type.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaShape {
    pub saga_type: String,
    pub steps: Vec<ShapeStep>,
    pub transitions: Vec<ShapeTransition>,
}

/// Every learned saga type's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaShapes {
    pub types: Vec<SagaShape>,
    /// True when the answer stopped at its bound (5,000 steps and 5,000
    /// transitions, the most frequent first): ask for one `type`.
    pub truncated: bool,
}

/// Builds the graphs from the stored rows.
pub fn shapes(steps: Vec<StepRow>, transitions: Vec<TransitionRow>, limit: i64) -> SagaShapes {
    let truncated = steps.len() as i64 >= limit || transitions.len() as i64 >= limit;
    let mut by_type: BTreeMap<String, SagaShape> = BTreeMap::new();
    for s in steps {
        #[allow(clippy::cast_precision_loss)]
        let mean_position = if s.visits > 0 { s.position_sum as f64 / s.visits as f64 } else { 0.0 };
        by_type
            .entry(s.saga_type.clone())
            .or_insert_with(|| SagaShape { saga_type: s.saga_type.clone(), steps: vec![], transitions: vec![] })
            .steps
            .push(ShapeStep {
                step: Step { service: s.service, event: s.event },
                visits: s.visits,
                mean_position,
                ends: s.ends,
                next_step_p99_ms: s.successor_p99_ms,
            });
    }
    for t in transitions {
        by_type
            .entry(t.saga_type.clone())
            .or_insert_with(|| SagaShape { saga_type: t.saga_type.clone(), steps: vec![], transitions: vec![] })
            .transitions
            .push(ShapeTransition {
                from: Step { service: t.from_service, event: t.from_event },
                to: Step { service: t.to_service, event: t.to_event },
                count: t.count,
                p50_ms: t.p50_ms,
                p90_ms: t.p90_ms,
                p99_ms: t.p99_ms,
            });
    }
    let mut types: Vec<SagaShape> = by_type.into_values().collect();
    for t in &mut types {
        t.steps.sort_by(|a, b| a.mean_position.total_cmp(&b.mean_position).then(b.visits.cmp(&a.visits)));
    }
    types.sort_by_key(|t| std::cmp::Reverse(t.steps.first().map_or(0, |s| s.visits)));
    SagaShapes { types, truncated }
}

/// The learned saga types: each one's steps (how often reached, at which
/// position, whether it ends a saga) and transitions (how often, p50, p90
/// and p99 of the time between the two steps' records).
#[utoipa::path(get, path = "/sagas/types", tag = "sagas",
    params(("type" = Option<String>, Query, description = "Only this saga type")),
    responses((status = 200, body = SagaShapes, description = "Learned saga types")))]
pub(super) async fn types(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SagaShapes>, ApiError> {
    let query = query.unwrap_or_default();
    let saga_type =
        form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "type").map(|(_, v)| v.into_owned());
    let (steps, transitions) = state.db.saga_shapes(saga_type.as_deref(), MAX_SHAPE_ROWS).await?;
    Ok(Json(shapes(steps, transitions, MAX_SHAPE_ROWS)))
}

/// A producer gone silent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilentProducer {
    /// The source service.
    pub service: String,
    /// The event type it sends (its status when its records have none).
    pub event: String,
    /// Records per minute over `SAGA_SILENCE_WINDOW`, at `judgedAt`.
    pub recent_per_minute: f64,
    /// Records per minute over twelve such windows, as of its last record:
    /// what it usually sends.
    pub baseline_per_minute: f64,
    /// The record time of its last record.
    pub last_event_at: DateTime<Utc>,
    /// Seconds from its last record to `judgedAt`.
    pub silent_for_seconds: f64,
    /// Records counted since it was first seen.
    pub events: i64,
}

/// The producers silent now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SilentProducers {
    /// The log's own clock: the newest record time learned, at which every
    /// rate is judged (null before any record was learned).
    pub judged_at: Option<DateTime<Utc>>,
    /// Producers known (at most `SAGA_MAX_PRODUCERS`).
    pub producers: usize,
    /// The silent ones, the busiest baseline first.
    pub silent: Vec<SilentProducer>,
}

impl SilentProducers {
    pub fn from_silence(s: crate::sagas::producers::Silence) -> SilentProducers {
        let at = s.judged_at;
        SilentProducers {
            judged_at: at,
            producers: s.producers,
            silent: s
                .silent
                .into_iter()
                .map(|j| SilentProducer {
                    silent_for_seconds: at.map_or(0.0, |at| (at - j.rates.last_at).as_seconds_f64().max(0.0)),
                    service: j.producer.service,
                    event: j.producer.event,
                    recent_per_minute: j.recent_per_minute,
                    baseline_per_minute: j.baseline_per_minute,
                    last_event_at: j.rates.last_at,
                    events: j.rates.events,
                })
                .collect(),
        }
    }
}

/// Producers gone silent: a (source service, event type) whose rate over
/// `SAGA_SILENCE_WINDOW` fell under a tenth of its usual rate (over twelve
/// windows, as of its last record), when that rate would have sent at least
/// `SAGA_MIN_SAMPLES` records in a window. Judged on record times, at the
/// newest record learned.
#[utoipa::path(get, path = "/sagas/silent", tag = "sagas",
    responses((status = 200, body = SilentProducers, description = "Producers silent now")))]
pub(super) async fn silent(State(state): State<AppState>) -> Result<Json<SilentProducers>, ApiError> {
    Ok(Json(SilentProducers::from_silence(state.db.silent_producers(&state.sagas).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_others() {
        let at = DateTime::from_timestamp_micros(1_765_000_000_123_456).unwrap();
        let c = encode_cursor(at, "c:a.b.c");
        assert_eq!(decode_cursor(&c).unwrap(), (at, "c:a.b.c".to_owned()));
        for bad in ["", "!!", "czEuMQ", "eDEuMS5h"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
