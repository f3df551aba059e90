//! The console's saga pages: "Stuck now" (the sagas overdue or flagged,
//! with the learned types) and one type's learned graph, drawn on the
//! server as SVG (steps as boxes in the order they come, transitions with
//! their counts and p50/p99). No script; every name a producer chose is
//! escaped text.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Html;
use chrono::{TimeDelta, Utc};
use maud::{Markup, html};

use super::pages::at;
use super::text::{clip, path_segment, span};
use super::{Nav, UiError, signed_page};
use crate::http::AppState;
use crate::http::sagas::{SagaShape, SilentProducers, StuckSaga, shapes};
use crate::storage::StuckQuery;

/// Most stuck sagas the page lists (the API pages through all of them).
const STUCK_SHOWN: i64 = 200;
/// Most steps and transitions read for the types list and a graph.
const SHAPE_ROWS: i64 = 2000;
/// Longest step name in a box (whole in its tooltip).
const BOX_CHARS: usize = 30;

fn ms(v: f64) -> String {
    span(TimeDelta::milliseconds(v.clamp(0.0, 1e15) as i64))
}

/// `/ui/sagas`: the stuck sagas and the learned types.
pub(super) async fn stuck_page(State(state): State<AppState>) -> Result<Html<String>, UiError> {
    let q = StuckQuery {
        limit: STUCK_SHOWN + 1,
        margin: state.sagas.saga_overdue_margin,
        window: state.sagas.saga_window,
        ..StuckQuery::default()
    };
    let mut rows = state.db.stuck_sagas(&q).await?;
    let more = rows.len() > STUCK_SHOWN as usize;
    rows.truncate(STUCK_SHOWN as usize);
    let stuck: Vec<StuckSaga> = rows.into_iter().map(StuckSaga::from_row).collect();
    let (steps, transitions) = state.db.saga_shapes(None, SHAPE_ROWS).await?;
    let learned = shapes(steps, transitions, SHAPE_ROWS);
    let silence = SilentProducers::from_silence(state.db.silent_producers(&state.sagas).await?);
    let body = html! {
        h1 { "Stuck now" }
        p class="muted" {
            "Sagas idle longer than " (state.sagas.saga_overdue_margin) "× the learned p99 of every step that can follow their last one, "
            "or whose status went backwards, or with an event stored twice. "
            a href="/sagas/stuck" { "The same over the API (JSON)" } "."
        }
        @if stuck.is_empty() {
            p id="none-stuck" { "No saga is stuck." }
        } @else {
            table class="list" id="stuck" {
                thead { tr { th { "saga" } th { "type" } th { "stopped at" } th { "idle" } th { "× p99" } th { "why" } } }
                tbody {
                    @for s in &stuck {
                        tr data-key=(s.saga_key) {
                            td {
                                @if let Some(o) = &s.order_id { a href=(format!("/ui/order/{}", path_segment(o))) { "order " (clip(o, 64)) } br; }
                                @if let Some(c) = &s.correlation_id { a href=(format!("/ui/correlation/{}", path_segment(c))) class="muted" { (clip(c, 64)) } }
                            }
                            td { a href=(type_href(&s.saga_type)) { (clip(&s.saga_type, 80)) } }
                            td { code { (clip(&s.last_step.event, 80)) } " " span class="muted" { "from " (clip(&s.last_step.service, 60)) } br; (at(s.last_event_at)) }
                            td { (ms(s.idle_ms)) }
                            td { @match s.overdue_by_p99 { Some(x) => (format!("{x:.1}")), None => span class="muted" { "—" } } }
                            td { @for r in &s.reasons { span class="badge" { (r) } " " } }
                        }
                    }
                }
            }
            @if more { p class="warn" { "The first " (STUCK_SHOWN) " are shown; " a href="/sagas/stuck" { "the API" } " pages through all of them." } }
        }
        h2 { "Gone silent" }
        p class="muted" {
            "Producers whose rate over the last " (span(TimeDelta::from_std(state.sagas.saga_silence_window).unwrap_or_default()))
            " of the log's time fell under a tenth of their usual rate. "
            a href="/sagas/silent" { "JSON" } "."
        }
        @if silence.silent.is_empty() {
            p id="none-silent" { "No producer has gone silent (" (silence.producers) " known)." }
        } @else {
            table class="list" id="silent" {
                thead { tr { th { "service" } th { "event" } th { "last record" } th { "silent for" } th { "usually / min" } th { "now / min" } } }
                tbody {
                    @for p in silence.silent.iter().take(STUCK_SHOWN as usize) {
                        tr {
                            td { (clip(&p.service, 80)) }
                            td { code { (clip(&p.event, 80)) } }
                            td { (at(p.last_event_at)) }
                            td { (ms(p.silent_for_seconds * 1000.0)) }
                            td { (format!("{:.1}", p.baseline_per_minute)) }
                            td { (format!("{:.2}", p.recent_per_minute)) }
                        }
                    }
                }
            }
        }
        h2 { "Learned saga types" }
        @if learned.types.is_empty() {
            p class="muted" { "Nothing learned yet: a transition counts once it was seen " (state.sagas.saga_min_samples) " times." }
        } @else {
            table class="list" id="types" {
                thead { tr { th { "type" } th { "sagas" } th { "steps" } th { "transitions" } } }
                tbody {
                    @for t in &learned.types {
                        tr {
                            td { a href=(type_href(&t.saga_type)) { (clip(&t.saga_type, 120)) } }
                            td { (t.steps.first().map_or(0, |s| s.visits)) }
                            td { (t.steps.len()) }
                            td { (t.transitions.len()) }
                        }
                    }
                }
            }
        }
    };
    Ok(signed_page(&state, "Stuck now", Nav::Sagas, body))
}

fn type_href(saga_type: &str) -> String {
    let name: String = form_urlencoded::byte_serialize(saga_type.as_bytes()).collect();
    format!("/ui/sagas/type?name={name}")
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct TypeQuery {
    name: String,
}

/// `/ui/sagas/type?name=…`: one type's learned graph.
pub(super) async fn type_page(
    State(state): State<AppState>,
    query: Result<Query<TypeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, UiError> {
    let Ok(Query(TypeQuery { name })) = query else {
        return Err(UiError::Invalid("Name a saga type: /ui/sagas/type?name=…".into()));
    };
    let (steps, transitions) = state.db.saga_shapes(Some(&name), SHAPE_ROWS).await?;
    let Some(shape) = shapes(steps, transitions, SHAPE_ROWS).types.into_iter().next() else {
        return Err(UiError::NotFound(format!("No saga type “{}” has been learned.", clip(&name, 200))));
    };
    let body = html! {
        h1 { "Saga type " code { (clip(&shape.saga_type, 200)) } }
        p class="muted" {
            "Learned from the records' own times. A box is a step (service, event) with the sagas that reached it; "
            "an arrow, a transition with how often it was taken and its p50 / p99. "
            a href=(format!("/sagas/types?type={}", form_urlencoded::byte_serialize(shape.saga_type.as_bytes()).collect::<String>())) { "The same over the API (JSON)" } "."
        }
        (graph(&shape))
        h2 { "Steps" }
        table class="list" id="steps" {
            thead { tr { th { "step" } th { "service" } th { "sagas" } th { "position" } th { "overdue after" } } }
            tbody {
                @for s in &shape.steps {
                    tr {
                        td { code { (clip(&s.step.event, 200)) } @if s.ends { " " span class="badge" { "ends" } } }
                        td { (clip(&s.step.service, 120)) }
                        td { (s.visits) }
                        td { (format!("{:.1}", s.mean_position)) }
                        td { @match s.next_step_p99_ms { Some(p) => (ms(p * state.sagas.saga_overdue_margin)), None => span class="muted" { "—" } } }
                    }
                }
            }
        }
    };
    Ok(signed_page(&state, "Saga type", Nav::Sagas, body))
}

/// The graph as SVG: steps in columns by their mean position, rows in the
/// order of their visits; transitions as arrows labelled with their count
/// and p50/p99 (an arrow that goes back curves below).
pub fn graph(shape: &SagaShape) -> Markup {
    const W: f64 = 230.0;
    const H: f64 = 46.0;
    const GAP_X: f64 = 90.0;
    const GAP_Y: f64 = 40.0;
    let mut place: HashMap<(&str, &str), (f64, f64)> = HashMap::new();
    let mut rows_in: HashMap<i64, usize> = HashMap::new();
    for s in &shape.steps {
        let column = s.mean_position.round().max(0.0) as i64;
        let row = rows_in.entry(column).or_insert(0);
        place.insert(
            (&s.step.service, &s.step.event),
            (10.0 + column as f64 * (W + GAP_X), 10.0 + *row as f64 * (H + GAP_Y)),
        );
        *row += 1;
    }
    let width = place.values().map(|p| p.0 + W + 10.0).fold(300.0, f64::max);
    let height = place.values().map(|p| p.1 + H + 60.0).fold(120.0, f64::max);
    html! {
        svg class="graph" id="graph" xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="the saga type's learned graph" {
            defs { marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" { path d="M 0 0 L 10 5 L 0 10 z" class="arrow-head" {} } }
            @for t in &shape.transitions {
                @if let (Some(&(fx, fy)), Some(&(tx, ty))) = (place.get(&(t.from.service.as_str(), t.from.event.as_str())), place.get(&(t.to.service.as_str(), t.to.event.as_str()))) {
                    @let (x1, y1, x2, y2) = (fx + W, fy + H / 2.0, tx, ty + H / 2.0);
                    @let back = x2 <= x1;
                    @let d = if back {
                        format!("M {} {} C {} {} {} {} {} {}", fx + W / 2.0, fy + H, fx + W / 2.0, fy + H + 50.0, tx + W / 2.0, ty + H + 50.0, tx + W / 2.0, ty + H)
                    } else {
                        format!("M {x1} {y1} C {} {y1} {} {y2} {x2} {y2}", x1 + GAP_X / 2.0, x2 - GAP_X / 2.0)
                    };
                    @let (lx, ly) = if back { ((fx + tx + W) / 2.0, fy.max(ty) + H + 45.0) } else { ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 6.0) };
                    g class="transition" {
                        title { (clip(&t.from.event, 200)) " → " (clip(&t.to.event, 200)) ": " (t.count) " times" }
                        path d=(d) class="edge" marker-end="url(#arrow)" {}
                        text x=(lx) y=(ly) class="edge-label" text-anchor="middle" {
                            (t.count) @if let (Some(p50), Some(p99)) = (t.p50_ms, t.p99_ms) { " · " (ms(p50)) " / " (ms(p99)) }
                        }
                    }
                }
            }
            @for s in &shape.steps {
                @if let Some(&(x, y)) = place.get(&(s.step.service.as_str(), s.step.event.as_str())) {
                    g class=(if s.ends { "step ends" } else { "step" }) data-event=(s.step.event) {
                        title { (clip(&s.step.service, 200)) ": " (clip(&s.step.event, 400)) " (" (s.visits) " sagas)" }
                        rect x=(x) y=(y) width=(W) height=(H) rx="6" {}
                        text x=(x + 8.0) y=(y + 18.0) class="step-event" { (clip(&s.step.event, BOX_CHARS)) }
                        text x=(x + 8.0) y=(y + 36.0) class="step-service" { (clip(&s.step.service, BOX_CHARS)) " · " (s.visits) }
                    }
                }
            }
        }
    }
}

/// A banner for the order page when the saga the order belongs to is
/// overdue or flagged now.
pub(super) async fn overdue_banner(state: &AppState, keys: &[String]) -> Option<Markup> {
    for key in keys.iter().take(8) {
        let Ok(Some(row)) = state.db.saga_of(key, state.sagas.saga_overdue_margin).await else { continue };
        let s = StuckSaga::from_row(row);
        if s.reasons.is_empty() {
            continue;
        }
        let idle = Utc::now() - s.last_event_at;
        return Some(html! {
            p class="error-box" id="overdue" {
                strong { "Stuck: " }
                @if let Some(x) = s.overdue_by_p99 {
                    "overdue at " code { (clip(&s.last_step.event, 120)) } " from " (clip(&s.last_step.service, 80)) " for " (span(idle))
                    (format!(", {x:.1}× the learned p99 of what comes next"))
                } @else {
                    (s.reasons.join(", ")) " at " code { (clip(&s.last_step.event, 120)) }
                }
                " · " a href=(type_href(&s.saga_type)) { "its type's graph" }
            }
        });
    }
    None
}
