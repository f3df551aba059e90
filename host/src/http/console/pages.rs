//! The console's pages, rendered on the server with maud. maud escapes every
//! value it writes into text and attributes, so nothing a record holds can
//! become markup; links to ids are same-site paths with the id
//! percent-encoded as one segment, so no id can become another URL.

use std::borrow::Cow;

use chrono::{DateTime, TimeDelta, Utc};
use maud::{DOCTYPE, Markup, html};

use super::text::{clip, path_segment, span};
use super::{ASSETS, Nav};
use crate::modules::{ModuleInfo, Rejection};
use crate::storage::{EventSummary, IdKind, RecentOrder};

/// Longest id shown whole; longer ones are cut (whole in link and tooltip).
const ID_CHARS: usize = 64;
/// Longest error or note shown on a card.
const NOTE_CHARS: usize = 300;
/// Most of a value or document shown on a record's page (the rest: a link).
pub const VALUE_SHOWN_BYTES: usize = 64 << 10;
/// Gaps between events longer than this are collapsed into one line.
const LONG_GAP_SECS: i64 = 600;

/// The frame of every page.
pub fn layout(title: &str, nav: Nav, signed_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · notification-host" }
                link rel="stylesheet" href=(ASSETS.css_path);
                script src=(ASSETS.js_path) defer {}
            }
            body {
                header class="top" {
                    a class="brand" href="/ui" { "notification-host" }
                    nav {
                        a href="/ui" class=[(nav == Nav::Search).then_some("active")] { "Orders" }
                        a href="/ui/live" class=[(nav == Nav::Live).then_some("active")] { "Live" }
                        a href="/ui/sagas" class=[(nav == Nav::Sagas).then_some("active")] { "Stuck now" }
                        a href="/ui/normalizers" class=[(nav == Nav::Normalizers).then_some("active")] { "Normalizers" }
                    }
                    form class="search" action="/ui/search" method="get" {
                        input type="search" name="q" aria-label="id" required
                            placeholder="order, customer, runner or correlation id";
                        button type="submit" { "Find" }
                    }
                    @if signed_in {
                        form action="/ui/logout" method="post" { button type="submit" { "Sign out" } }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A time in UTC with milliseconds.
pub(super) fn at(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S%.3f")) } }
}

fn kind_path(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Order => "order",
        IdKind::Correlation => "correlation",
        IdKind::Customer => "customer",
        IdKind::Runner => "runner",
    }
}

fn kind_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Order => "order",
        IdKind::Correlation => "correlation id",
        IdKind::Customer => "customer",
        IdKind::Runner => "runner",
    }
}

/// The console's address of an id's page.
pub fn id_href(kind: IdKind, id: &str) -> String {
    format!("/ui/{}/{}", kind_path(kind), path_segment(id))
}

/// A link to an id's page, the id cut when long.
pub(super) fn id_link(kind: IdKind, id: &str) -> Markup {
    html! { a href=(id_href(kind, id)) title=(clip(id, 2000)) { code { (clip(id, ID_CHARS)) } } }
}

fn record_href(id: i64) -> String {
    format!("/ui/record/{id}")
}

/// The landing page: search and the orders seen most recently.
pub fn landing(recent: &[RecentOrder], now: DateTime<Utc>) -> Markup {
    html! {
        h1 { "Find an order or a saga" }
        form class="filters" action="/ui/search" method="get" {
            label { "Order id, customer id, runner id or correlation id"
                input type="search" name="q" required autofocus; }
            button type="submit" { "Find" }
        }
        h2 { "Recent orders" }
        @if recent.is_empty() {
            p class="muted" { "No order has been stored yet." }
        } @else {
            table class="list" {
                thead { tr { th { "order" } th { "last event" } th { "status" } th { "service" } th { "when (UTC)" } th { "ago" } th { "events" } } }
                tbody {
                    @for o in recent {
                        tr {
                            td { (id_link(IdKind::Order, &o.order_id)) }
                            td { (o.event_type.as_deref().map_or(Cow::Borrowed("—"), |t| clip(t, ID_CHARS))) }
                            td { @if let Some(s) = &o.status { span class="status" { (clip(s, ID_CHARS)) } } }
                            td { (o.source_service.as_deref().map_or(Cow::Borrowed(""), |s| clip(s, ID_CHARS))) }
                            td { (at(o.last_at)) }
                            td { (span(now - o.last_at)) }
                            td { (o.events) }
                        }
                    }
                }
            }
            p class="muted" { "From the newest 2,000 events stored, by record time." }
        }
    }
}

/// The page for a search term that is stored as more than one kind of id.
pub fn choose(q: &str, kinds: &[IdKind]) -> Markup {
    html! {
        h1 { "“" (clip(q, ID_CHARS)) "” is more than one kind of id" }
        ul { @for k in kinds { li { a href=(id_href(*k, q)) { "the " (kind_name(*k)) " " code { (clip(q, ID_CHARS)) } } } } }
    }
}

/// The page for what cannot be shown: nothing stored under an id, a
/// request that is not valid, a database that does not answer.
pub fn problem(title: &str, message: &str) -> Markup {
    html! { h1 { (title) } p { (message) } p { a href="/ui" { "Back to the search" } } }
}

/// An event on a timeline, and whether it names the page's order.
pub struct TimelineEvent<'a> {
    pub event: &'a EventSummary,
    pub direct: bool,
}

/// What a timeline page is about.
pub struct TimelineHead<'a> {
    pub kind: IdKind,
    pub id: &'a str,
    /// The JSON of the same events over the API.
    pub api_href: String,
    /// The correlation ids of the order's own events (order pages).
    pub correlation_ids: Vec<&'a str>,
    pub truncated: Option<usize>,
}

/// One row of a timeline, with what the template needs from the rows
/// before it.
struct Row<'a> {
    event: &'a EventSummary,
    direct: bool,
    lane: usize,
    /// Time since the previous event.
    gap: Option<TimeDelta>,
    /// The status before and after, when this event changed it.
    change: Option<(Option<&'a str>, &'a str)>,
}

/// An order's timeline or a saga's trace: one lane per source service,
/// oldest first, the time between events, status changes, flagged records,
/// long gaps collapsed, and where it stopped.
pub fn timeline(head: &TimelineHead<'_>, events: &[TimelineEvent<'_>], now: DateTime<Utc>) -> Markup {
    let mut lanes: Vec<(Option<&str>, usize)> = Vec::new();
    let mut rows = Vec::with_capacity(events.len());
    let mut status: Option<&str> = None;
    let mut previous_at: Option<DateTime<Utc>> = None;
    for e in events {
        let service = e.event.source_service.as_deref();
        let lane = match lanes.iter().position(|(s, _)| *s == service) {
            Some(i) => i,
            None => {
                lanes.push((service, 0));
                lanes.len() - 1
            }
        };
        lanes[lane].1 += 1;
        let change = e.event.status.as_deref().filter(|s| Some(*s) != status).map(|s| (status, s));
        if let Some((_, new)) = change {
            status = Some(new);
        }
        rows.push(Row {
            event: e.event,
            direct: e.direct || head.kind != IdKind::Order,
            lane,
            gap: previous_at.map(|p| e.event.created_at - p),
            change,
        });
        previous_at = Some(e.event.created_at);
    }
    let flagged = events.iter().filter(|e| is_flagged(e.event)).count();
    let direct = events.iter().filter(|e| e.direct).count();
    let title_kind = match head.kind {
        IdKind::Order => "Order",
        IdKind::Correlation => "Saga",
        IdKind::Customer => "Customer",
        IdKind::Runner => "Runner",
    };
    html! {
        h1 { (title_kind) " " code title=(clip(head.id, 2000)) { (clip(head.id, 120)) } }
        section class="summary" {
            @if let Some(last) = events.last().map(|e| e.event) {
                p class="stopped" id="stopped" {
                    "Stopped at " strong { (last.event_type.as_deref().map_or(Cow::Borrowed("an event without a type"), |t| clip(t, ID_CHARS))) }
                    " from " strong { (last.source_service.as_deref().map_or(Cow::Borrowed("an unnamed service"), |s| clip(s, ID_CHARS))) }
                    ", " strong { (span(now - last.created_at)) } (if last.created_at <= now { " ago" } else { " in the future" })
                    " (" (at(last.created_at)) " UTC). "
                    a href=(record_href(last.notification_id)) { "The last record" }
                }
                p {
                    "Status now: " @match status { Some(s) => span class="status" { (clip(s, ID_CHARS)) }, None => span class="muted" { "none reported" } }
                }
            }
            p {
                (events.len()) " events"
                @if head.kind == IdKind::Order { " (" (direct) " naming the order, " (events.len() - direct) " correlated through its sagas)" }
                " across " (lanes.len()) " services"
                @if flagged > 0 { ", " span class="flag error" { (flagged) " flagged" } }
                "."
            }
            @if !head.correlation_ids.is_empty() {
                p { "Sagas: " @for (i, c) in head.correlation_ids.iter().enumerate() { @if i > 0 { ", " } (id_link(IdKind::Correlation, c)) } }
            }
            p class="muted" { a href=(head.api_href) { "The same events as JSON" } }
            @if let Some(n) = head.truncated { p class="warn" { "Only the first " (n) " events are shown." } }
        }
        table class="timeline" id="timeline" {
            thead { tr {
                th class="when" { "time (UTC)" }
                @for (service, n) in &lanes { th { (service.map_or(Cow::Borrowed("(no service)"), |s| clip(s, 40))) " " small { "(" (n) ")" } } }
            } }
            tbody {
                @for (i, row) in rows.iter().enumerate() {
                    @if let Some(g) = row.gap.filter(|g| g.num_seconds() > LONG_GAP_SECS) {
                        tr class="gap" { td colspan=(lanes.len() + 1) { "⋯ " (span(g)) " without events ⋯" } }
                    }
                    tr class=(spacing(row.gap)) data-id=(row.event.notification_id) data-type=[row.event.event_type.as_deref()] {
                        td class="when" {
                            (row.event.created_at.format("%H:%M:%S%.3f")) br;
                            small { @match row.gap { Some(g) => { "+" (span(g)) }, None => { (row.event.created_at.format("%Y-%m-%d")) } } }
                        }
                        @for lane in 0..lanes.len() {
                            @if lane == row.lane {
                                td { (card(row.event, row.direct, row.change, i + 1 == rows.len())) }
                            } @else { td {} }
                        }
                    }
                }
            }
        }
    }
}

/// The row class spacing events by the time between them.
fn spacing(gap: Option<TimeDelta>) -> &'static str {
    match gap.map(|g| g.num_milliseconds()) {
        None => "d0",
        Some(ms) if ms < 1_000 => "d0",
        Some(ms) if ms < 10_000 => "d1",
        Some(ms) if ms < 60_000 => "d2",
        Some(ms) if ms <= LONG_GAP_SECS * 1000 => "d3",
        Some(_) => "d0",
    }
}

fn is_flagged(e: &EventSummary) -> bool {
    e.normalizer_error.is_some() || e.ingest_note.is_some()
}

fn card(e: &EventSummary, direct: bool, status_change: Option<(Option<&str>, &str)>, last: bool) -> Markup {
    let mut class = String::from("card");
    if !direct {
        class.push_str(" correlated");
    }
    if is_flagged(e) {
        class.push_str(" flagged");
    }
    if last {
        class.push_str(" last");
    }
    html! {
        div class=(class) {
            a class="type" href=(record_href(e.notification_id)) {
                (e.event_type.as_deref().map_or(Cow::Borrowed("(no event type)"), |t| clip(t, ID_CHARS)))
            }
            " "
            @match status_change {
                Some((Some(was), now)) => span class="status changed" title="status changed" { (clip(was, 30)) " → " (clip(now, 30)) },
                Some((None, now)) => span class="status changed" title="first status" { "→ " (clip(now, 30)) },
                None => { @if let Some(s) = &e.status { span class="status" { (clip(s, 30)) } } },
            }
            @if !direct { " " span class="badge" { "correlated" } }
            div class="meta" {
                (clip(&e.source_topic, 60)) " [" (e.kafka_partition.map_or("-".into(), |p| p.to_string())) "] @"
                (e.kafka_offset.map_or("-".into(), |o| o.to_string()))
                @if let Some(o) = &e.order_id { " · order " (id_link(IdKind::Order, o)) }
                @if let Some(c) = &e.customer_id { " · customer " (id_link(IdKind::Customer, c)) }
                @if let Some(r) = &e.runner_id { " · runner " (id_link(IdKind::Runner, r)) }
            }
            @if let Some(err) = &e.normalizer_error { div class="flag error" { "normalizer error: " (clip(err, NOTE_CHARS)) } }
            @if let Some(note) = &e.ingest_note { div class="flag note" { "ingest note: " (clip(note, NOTE_CHARS)) } }
        }
    }
}

/// A customer's or runner's newest events.
pub fn events_of(kind: IdKind, id: &str, events: &[EventSummary], limit: usize, api_href: &str) -> Markup {
    let mut orders: Vec<&str> = Vec::new();
    for e in events {
        if let Some(o) = e.order_id.as_deref()
            && !orders.contains(&o)
        {
            orders.push(o);
        }
    }
    html! {
        h1 { (if kind == IdKind::Customer { "Customer " } else { "Runner " }) code title=(clip(id, 2000)) { (clip(id, 120)) } }
        section class="summary" {
            p { (events.len()) " newest events" @if events.len() >= limit { " (at most " (limit) ")" } ", naming " (orders.len()) " orders." }
            @if !orders.is_empty() {
                p { "Orders: " @for (i, o) in orders.iter().enumerate() { @if i > 0 { ", " } (id_link(IdKind::Order, o)) } }
            }
            p class="muted" { a href=(api_href) { "The same events as JSON" } }
        }
        (event_table(events))
    }
}

fn event_table(events: &[EventSummary]) -> Markup {
    html! {
        table class="list" {
            thead { tr { th { "time (UTC)" } th { "event" } th { "order" } th { "status" } th { "service" } th { "topic" } th { "" } } }
            tbody {
                @for e in events {
                    tr {
                        td class="mono" { (at(e.created_at)) }
                        td { a href=(record_href(e.notification_id)) { (e.event_type.as_deref().map_or(Cow::Borrowed("(no event type)"), |t| clip(t, ID_CHARS))) } }
                        td { @if let Some(o) = &e.order_id { (id_link(IdKind::Order, o)) } }
                        td { @if let Some(s) = &e.status { span class="status" { (clip(s, 30)) } } }
                        td { (e.source_service.as_deref().map_or(Cow::Borrowed(""), |s| clip(s, 40))) }
                        td class="mono" { (clip(&e.source_topic, 60)) " [" (e.kafka_partition.map_or("-".into(), |p| p.to_string())) "] @" (e.kafka_offset.map_or("-".into(), |o| o.to_string())) }
                        td { @if e.normalizer_error.is_some() { span class="flag error" { "normalizer error" } } @if e.ingest_note.is_some() { span class="flag note" { "note" } } }
                    }
                }
            }
        }
    }
}

/// Filters of the live tail, as given.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct LiveForm {
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub id: String,
}

/// The live tail's page; the script fills the table from `events_href`.
pub fn live(form: &LiveForm, events_href: &str) -> Markup {
    html! {
        h1 { "Live" }
        p class="muted" { "New records as any replica stores them, newest first." }
        form class="filters" action="/ui/live" method="get" {
            label { "topic" input name="topic" value=(form.topic); }
            label { "event type" input name="event_type" value=(form.event_type); }
            label { "service" input name="service" value=(form.service); }
            label { "id (order, customer, runner or correlation)" input name="id" value=(form.id); }
            button type="submit" { "Filter" }
            a href="/ui/live" { "clear" }
        }
        p id="live-status" { "Connecting…" }
        p id="live-skipped" class="warn" hidden {}
        table class="list" id="tail" data-events=(events_href) data-max-rows="500" {
            thead { tr { th { "record time (UTC)" } th { "topic [partition] @offset" } th { "event" } th { "order" } th { "customer" } th { "runner" } th { "correlation" } th { "service" } th { "status" } th { "" } } }
            tbody {}
        }
    }
}

/// The normalizers page: the built-in default, live modules and versions,
/// rejected files with their reasons.
pub fn normalizers(builtin: &str, directory: Option<&str>, modules: &[ModuleInfo], rejected: &[Rejection]) -> Markup {
    html! {
        h1 { "Normalizers" }
        section class="summary" {
            p { "Built-in default: " code { (builtin) } " (records no module takes, and records a module failed on)." }
            p { "Modules directory: " @match directory { Some(d) => code { (d) }, None => span class="muted" { "none configured" } } }
            p class="muted" { a href="/normalizers" { "The same as JSON" } }
        }
        h2 { "Live modules, in routing order" }
        @if modules.is_empty() { p class="muted" { "No module is live: every record gets the built-in default." } } @else {
            table class="list" id="modules" {
                thead { tr { th { "module" } th { "contract" } th { "source" } th { "routes" } th { "limits" } th { "calls" } th { "errors" } th { "state" } th { "shadow" } } }
                tbody {
                    @for m in modules {
                        tr data-module=(m.name) {
                            td { strong { (m.name) } " " code { (m.version) } br; small class="mono" { (clip(&m.hash, 16)) } br; small { "since " (at(m.loaded_at)) } }
                            td { (m.contract) }
                            td { code { (clip(&m.manifest, 80)) } }
                            td {
                                @for r in &m.routes { code { (r) } " " }
                                @if let Some(h) = &m.header { br; "header " code { (h) } }
                                @if let Some(k) = &m.key { br; "key " code { (k) } }
                                @for f in &m.fields { br; code { (f) } }
                                @if m.fallback { br; small { "fills gaps from the default" } }
                            }
                            td { small { (m.memory_bytes >> 20) " MiB · " (m.deadline_ms) " ms · " (m.max_output_bytes) " B" } }
                            td { (m.calls) }
                            td { (m.errors) @if let Some(e) = &m.last_error { br; span class="flag error" { (clip(e, NOTE_CHARS)) } } }
                            td {
                                @if m.quarantined { span class="flag error" { "quarantined" } } @else { span class="status changed" { "live" } }
                                @if m.quarantines > 0 { br; small { (m.quarantines) " quarantines, " (m.recoveries) " recoveries" } }
                            }
                            td {
                                @if let Some(s) = &m.shadow {
                                    code { (s.version) } @if s.resting { " " span class="badge" { "resting" } } br;
                                    small { (s.differing) " of " (s.records) " records differ" }
                                } @else { span class="muted" { "—" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Rejected files" }
        @if rejected.is_empty() { p class="muted" { "None." } } @else {
            table class="list" id="rejected" {
                thead { tr { th { "file" } th { "why" } th { "when (UTC)" } } }
                tbody { @for r in rejected { tr { td { code { (r.manifest) } } td { (clip(&r.reason, 2000)) } td { (at(r.at)) } } } }
            }
        }
    }
}

/// The sign-in page.
pub fn login(next: &str, failed: bool) -> Markup {
    html! {
        div class="login" {
            h1 { "Sign in to the console" }
            p { "The log holds customer data; this host asks for its read token (" code { "READ_TOKEN" } ")." }
            @if failed { p class="error-box" { "That is not the read token." } }
            form action="/ui/login" method="post" {
                input type="hidden" name="next" value=(next);
                label { "Read token" input type="password" name="token" autocomplete="current-password" required autofocus; }
                button type="submit" { "Sign in" }
            }
        }
    }
}

/// The page an unauthenticated cross-site navigation gets: it reloads
/// itself from this site, so a `SameSite=Strict` cookie the browser holds
/// is sent (a link from a chat or a pager is a cross-site navigation).
pub fn reload() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; meta http-equiv="refresh" content="0"; title { "notification-host" } }
            body { p { "Checking your session…" } } }
    }
}
