//! The live tail: records as any replica stores them, streamed to browsers
//! as server-sent events.
//!
//! One [`LiveFeed`] per process listens to the database's notification of
//! each stored batch (so it hears every replica's writes, not only this
//! one's), reads that batch's rows once without their values, and hands
//! them to every open stream through a bounded broadcast. Each stream
//! filters, then sends what matched at most every [`FLUSH_EVERY`], keeping
//! at most [`MAX_PENDING`] rows between sends: a browser that cannot keep
//! up is sent fewer rows and told how many it missed, so the host's memory
//! stays bounded however fast records arrive. Streams end when the host
//! shuts down, so a graceful shutdown never waits on an open page.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::pages::LiveForm;
use super::text::clip;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::storage::{Db, EventSummary, Heard};

/// The route of the event stream (kept out of the latency histogram: a
/// stream lasts as long as the page is open).
pub const EVENTS_ROUTE: &str = "/ui/live/events";

/// Batches the broadcast holds for streams that are behind; a stream
/// further behind skips to the newest and says how many records it missed.
const BROADCAST_BATCHES: usize = 256;
/// How often a stream sends what matched.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most rows a stream holds between sends: beyond it the oldest are
/// dropped and counted as skipped.
const MAX_PENDING: usize = 500;
/// Messages queued for one browser connection; while they are unsent, rows
/// wait in the stream's bounded pending set.
const QUEUED_MESSAGES: usize = 2;
/// Longest text of one field sent to the browser.
const FIELD_CHARS: usize = 200;
/// Row ids remembered to drop rows two notifications both name.
const SEEN_IDS: usize = 50_000;

/// One stored batch as the streams see it.
#[derive(Debug)]
struct LiveBatch {
    /// Rows the feed had passed on before this batch: a stream that sees a
    /// jump knows how many it missed.
    total_before: u64,
    rows: Vec<EventSummary>,
    /// Notifications may have been missed just before this batch (the
    /// listening connection was lost, or a batch could not be read).
    gap: bool,
}

/// The process's one listener, shared by every open stream; it runs only
/// while a stream is open.
pub struct LiveFeed {
    db: Db,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tx: broadcast::Sender<Arc<LiveBatch>>,
    /// Whether the listening task runs; changed only under this lock, with
    /// the receiver count, so a stream never subscribes to a feed that has
    /// just decided to stop.
    running: Mutex<bool>,
}

impl LiveFeed {
    pub fn new(db: Db, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Arc<LiveFeed> {
        let (tx, _) = broadcast::channel(BROADCAST_BATCHES);
        Arc::new(LiveFeed { db, metrics, shutdown, tx, running: Mutex::new(false) })
    }

    fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Arc<LiveBatch>> {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rx = self.tx.subscribe();
        if !*running {
            *running = true;
            tokio::spawn(self.clone().listen());
        }
        rx
    }

    /// Whether the task should stop: nobody is watching. Decided under the
    /// lock `subscribe` takes.
    fn stop_if_unwatched(&self) -> bool {
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tx.receiver_count() == 0 {
            *running = false;
            true
        } else {
            false
        }
    }

    async fn listen(self: Arc<Self>) {
        let mut listener = None;
        let mut total = 0u64;
        let mut seen = Seen::default();
        let mut gap = false;
        loop {
            if self.stop_if_unwatched() {
                return;
            }
            let l = match listener.as_mut() {
                Some(l) => l,
                None => match self.db.listen_stored().await {
                    Ok(l) => listener.insert(l),
                    Err(error) => {
                        tracing::warn!(%error, "The live tail cannot listen to the database; retrying.");
                        gap = true;
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            let heard = tokio::select! {
                () = self.shutdown.cancelled() => return,
                heard = l.next() => heard,
            };
            let batch = match heard {
                Ok(Heard::Stored(batch)) => batch,
                Ok(Heard::Reconnected) => {
                    gap = true;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "The live tail lost the database; reconnecting.");
                    listener = None;
                    gap = true;
                    continue;
                }
            };
            match self.db.stored_rows(&batch).await {
                Ok(rows) => {
                    let rows: Vec<EventSummary> = rows.into_iter().filter(|r| seen.insert(r.notification_id)).collect();
                    let n = rows.len() as u64;
                    // No receivers is not an error: the next turn stops.
                    let _ = self.tx.send(Arc::new(LiveBatch { total_before: total, rows, gap }));
                    total += n;
                    gap = false;
                }
                Err(error) => {
                    tracing::warn!(%error, "The live tail could not read a stored batch.");
                    gap = true;
                }
            }
        }
    }
}

/// Row ids recently passed on, bounded.
#[derive(Default)]
struct Seen {
    order: VecDeque<i64>,
    ids: HashSet<i64>,
}

impl Seen {
    /// True the first time `id` is seen.
    fn insert(&mut self, id: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

/// What a stream shows; empty fields match everything.
#[derive(Debug, Clone)]
struct Filter {
    topic: Option<String>,
    event_type: Option<String>,
    service: Option<String>,
    id: Option<String>,
}

impl Filter {
    fn new(form: LiveForm) -> Filter {
        let some = |s: String| (!s.is_empty()).then_some(s);
        Filter {
            topic: some(form.topic),
            event_type: some(form.event_type),
            service: some(form.service),
            id: some(form.id),
        }
    }

    fn matches(&self, r: &EventSummary) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        is(&self.topic, Some(&r.source_topic))
            && is(&self.event_type, r.event_type.as_deref())
            && is(&self.service, r.source_service.as_deref())
            && self.id.as_deref().is_none_or(|id| {
                [&r.order_id, &r.customer_id, &r.runner_id, &r.correlation_id].iter().any(|v| v.as_deref() == Some(id))
            })
    }
}

/// One row as the browser gets it: fields cut to [`FIELD_CHARS`].
#[derive(Debug, Serialize)]
struct LiveRow {
    id: i64,
    at: String,
    at_ms: i64,
    topic: String,
    partition: Option<i32>,
    offset: Option<i64>,
    event_type: Option<String>,
    order_id: Option<String>,
    customer_id: Option<String>,
    runner_id: Option<String>,
    correlation_id: Option<String>,
    source_service: Option<String>,
    status: Option<String>,
    /// "normalizer error" or "ingest note" when the record has one.
    flag: Option<&'static str>,
}

impl From<&EventSummary> for LiveRow {
    fn from(r: &EventSummary) -> LiveRow {
        let cut = |s: &Option<String>| s.as_deref().map(|s| clip(s, FIELD_CHARS).into_owned());
        LiveRow {
            id: r.notification_id,
            at: r.created_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            at_ms: r.created_at.timestamp_millis(),
            topic: clip(&r.source_topic, FIELD_CHARS).into_owned(),
            partition: r.kafka_partition,
            offset: r.kafka_offset,
            event_type: cut(&r.event_type),
            order_id: cut(&r.order_id),
            customer_id: cut(&r.customer_id),
            runner_id: cut(&r.runner_id),
            correlation_id: cut(&r.correlation_id),
            source_service: cut(&r.source_service),
            status: cut(&r.status),
            flag: if r.normalizer_error.is_some() {
                Some("normalizer error")
            } else if r.ingest_note.is_some() {
                Some("ingest note")
            } else {
                None
            },
        }
    }
}

/// One message to the browser: rows oldest first, how many records were
/// not shown since the last message, and whether notifications may have
/// been missed.
#[derive(Debug, Serialize)]
struct Message<'a> {
    rows: &'a VecDeque<LiveRow>,
    skipped: u64,
    gap: bool,
}

/// `GET /ui/live/events`: the stream, filtered by `topic`, `event_type`,
/// `service` and `id` (any of the four ids).
pub async fn events(State(state): State<AppState>, Query(form): Query<LiveForm>) -> impl IntoResponse {
    let rx = state.live.subscribe();
    let (tx, out) = mpsc::channel::<Event>(QUEUED_MESSAGES);
    let _ = tx.try_send(Event::default().event("ready").retry(Duration::from_secs(2)).data("connected"));
    tokio::spawn(forward(rx, Filter::new(form), tx, state.live.shutdown.clone(), state.live.metrics.clone()));
    let stream = futures_util::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|event| (Ok::<Event, Infallible>(event), out))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Counts an open stream in `/metrics` while it lives.
struct OpenStream(Arc<Metrics>);

impl OpenStream {
    fn new(metrics: Arc<Metrics>) -> OpenStream {
        metrics.live_streams.inc();
        OpenStream(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.live_streams.dec();
    }
}

/// Moves one stream's matching rows from the feed to its browser until the
/// browser goes away or the host shuts down.
async fn forward(
    mut rx: broadcast::Receiver<Arc<LiveBatch>>,
    filter: Filter,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let _open = OpenStream::new(metrics.clone());
    let mut pending: VecDeque<LiveRow> = VecDeque::new();
    let mut skipped = 0u64;
    let mut gap = false;
    // The feed's running total after the last batch this stream took.
    let mut expected: Option<u64> = None;
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = tx.try_send(Event::default().event("bye").data("the host is shutting down"));
                return;
            }
            () = tx.closed() => return,
            batch = rx.recv() => match batch {
                Ok(batch) => {
                    if let Some(before) = expected.filter(|e| batch.total_before > *e) {
                        skipped += batch.total_before - before;
                    }
                    expected = Some(batch.total_before + batch.rows.len() as u64);
                    gap |= batch.gap;
                    for row in batch.rows.iter().filter(|r| filter.matches(r)) {
                        pending.push_back(LiveRow::from(row));
                        if pending.len() > MAX_PENDING {
                            pending.pop_front();
                            skipped += 1;
                        }
                    }
                }
                // Counted by the jump in the next batch's running total.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = flush.tick() => {
                if pending.is_empty() && skipped == 0 && !gap {
                    continue;
                }
                let Ok(data) = serde_json::to_string(&Message { rows: &pending, skipped, gap }) else { continue };
                match tx.try_send(Event::default().event("rows").data(data)) {
                    Ok(()) => {
                        if skipped > 0 {
                            metrics.live_skipped.inc_by(skipped);
                        }
                        pending.clear();
                        skipped = 0;
                        gap = false;
                    }
                    // The browser has not taken the last messages yet: keep
                    // the newest rows and try again at the next tick.
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}
