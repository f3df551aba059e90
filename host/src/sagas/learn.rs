//! Learning saga shapes from stored rows: which step follows which, how
//! long it takes, which steps end a saga, and what is unusual about a saga
//! (a status going backwards, the same event stored twice). Pure: the
//! learner job loads the state from the database, runs a batch of rows
//! through [`Model::learn`] and saves what changed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::latencies::Latencies;

/// The name of types and steps beyond the configured bounds.
pub const OTHER: &str = "(other)";
/// Longest service or event name kept in a step (longer ones are cut at a
/// character boundary).
pub const MAX_NAME_CHARS: usize = 120;
/// A step is an ending step when at least this share of the sagas that
/// reached it went no further.
pub const END_SHARE: f64 = 0.1;
/// Statuses, document hashes and flags kept per saga.
const KEEP_STATUSES: usize = 32;
const KEEP_RECENT: usize = 16;
const KEEP_FLAGS: usize = 8;

/// A step of a saga: who emitted it and what it was (the event type, with
/// the status in parentheses when the record has both).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub service: String,
    pub event: String,
}

impl Step {
    /// The step a row is.
    pub fn of(row: &LearnRow) -> Step {
        let event = match (row.event_type.as_deref(), row.status.as_deref()) {
            (Some(t), Some(s)) => format!("{t} ({s})"),
            (Some(t), None) => t.to_owned(),
            (None, Some(s)) => s.to_owned(),
            (None, None) => "(none)".to_owned(),
        };
        Step { service: cut(row.service.as_deref().unwrap_or("(unknown)")), event: cut(&event) }
    }

    fn other() -> Step {
        Step { service: OTHER.into(), event: OTHER.into() }
    }
}

/// `s` cut to [`MAX_NAME_CHARS`] characters.
pub(super) fn cut(s: &str) -> String {
    s.chars().take(MAX_NAME_CHARS).collect()
}

/// What the learner reads of a stored row.
#[derive(Debug, Clone)]
pub struct LearnRow {
    pub notification_id: i64,
    pub at: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub order_id: Option<String>,
    pub service: Option<String>,
    pub event_type: Option<String>,
    pub status: Option<String>,
    /// A hash of the record's JSON document, when it has one.
    pub doc_hash: Option<i64>,
}

impl LearnRow {
    /// The saga the row belongs to: its correlation id, else its order id.
    pub fn saga_key(&self) -> Option<String> {
        let (prefix, id) = match (self.correlation_id.as_deref(), self.order_id.as_deref()) {
            (Some(c), _) if !c.is_empty() => ("c:", c),
            (_, Some(o)) if !o.is_empty() => ("o:", o),
            _ => return None,
        };
        Some(key_of(prefix, id))
    }
}

/// The key of the saga of a correlation id.
pub fn correlation_key(id: &str) -> String {
    key_of("c:", id)
}

/// The key of the saga of an order id (for records without a correlation id).
pub fn order_key(id: &str) -> String {
    key_of("o:", id)
}

/// A saga key small enough for any index: ids over 200 bytes are keyed by
/// their SHA-256.
fn key_of(prefix: &str, id: &str) -> String {
    if id.len() <= 200 {
        return format!("{prefix}{id}");
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}sha256:{hex}")
}

/// What is unusual about a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// A status the saga had already left, or one that the learned shape
    /// puts well before the saga's last step, reached by a rare transition.
    StatusRegression,
    /// The same document stored again at another offset.
    Duplicate,
}

/// One unusual thing, where and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    pub kind: FlagKind,
    pub step: Step,
    pub at: DateTime<Utc>,
    pub notification_id: i64,
    pub detail: String,
}

/// Where a saga is.
#[derive(Debug, Clone, PartialEq)]
pub struct Saga {
    pub key: String,
    pub correlation_id: Option<String>,
    pub order_id: Option<String>,
    pub saga_type: String,
    pub started_at: DateTime<Utc>,
    pub last: Step,
    pub last_at: DateTime<Utc>,
    pub last_notification_id: i64,
    pub steps: i32,
    pub statuses: Vec<String>,
    pub recent: Vec<i64>,
    pub flags: Vec<Flag>,
    pub flagged_at: Option<DateTime<Utc>>,
}

impl Saga {
    fn flag(&mut self, kind: FlagKind, step: Step, row: &LearnRow, detail: String) {
        if self.flags.len() >= KEEP_FLAGS {
            self.flags.remove(0);
        }
        self.flags.push(Flag { kind, step, at: row.at, notification_id: row.notification_id, detail });
        self.flagged_at = Some(self.flagged_at.map_or(row.at, |f| f.max(row.at)));
    }
}

/// How often a step was reached, at which position, and how often another
/// step followed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    pub visits: i64,
    pub position_sum: i64,
    pub out_count: i64,
    /// The largest learned p99 among the steps that follow this one (None:
    /// an ending step, or none learned yet).
    pub successor_p99_ms: Option<f64>,
    pub ends: bool,
}

impl StepStats {
    #[allow(clippy::cast_precision_loss)]
    fn mean_position(&self) -> f64 {
        if self.visits == 0 { 0.0 } else { self.position_sum as f64 / self.visits as f64 }
    }
}

/// How often one step followed another, and how long it took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub count: i64,
    pub latencies: Latencies,
}

/// The bounds of what is learned.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_types: usize,
    pub max_steps: usize,
    pub min_samples: i64,
}

impl Limits {
    /// Transitions learned per type: twice its steps. Past it, a new
    /// transition is learned as going to `(other)` (one more per step at
    /// most), so producers sending steps in every order cannot grow a
    /// type's graph (and what the learner loads) with the square of its
    /// steps.
    pub fn max_transitions(&self) -> usize {
        self.max_steps.saturating_mul(2)
    }
}

/// What a batch taught, beyond the saved state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taught {
    pub transitions: u64,
    /// Rows older than their saga's last step when they were learned: not
    /// learned as transitions.
    pub late: u64,
    pub flagged: u64,
}

/// Key of a step within its type, and of a transition.
pub type StepKey = (String, Step);
pub type TransitionKey = (String, Step, Step);

/// The learned shapes of the types a batch touches.
#[derive(Debug, Default)]
pub struct Model {
    pub steps: HashMap<StepKey, StepStats>,
    pub transitions: HashMap<TransitionKey, Transition>,
    /// Every learned type, with how many steps it has.
    pub types: HashMap<String, usize>,
    pub touched_types: HashSet<String>,
    pub touched_steps: HashSet<StepKey>,
    pub touched_transitions: HashSet<TransitionKey>,
    pub limits: Option<Limits>,
    /// Each transition learned by this batch with its time in milliseconds
    /// (for the step-latency metric).
    pub learned: Vec<(TransitionKey, f64)>,
}

impl Model {
    fn limits(&self) -> Limits {
        self.limits.unwrap_or(Limits { max_types: 100, max_steps: 50, min_samples: 20 })
    }

    /// The type a new saga starting at `step` gets.
    fn type_of(&mut self, step: &Step) -> String {
        let name = step.event.clone();
        if self.types.contains_key(&name) {
            return name;
        }
        if self.types.len() < self.limits().max_types {
            self.types.insert(name.clone(), 0);
            return name;
        }
        self.types.entry(OTHER.to_owned()).or_insert(0);
        OTHER.to_owned()
    }

    /// `step` as learned within `saga_type` (`(other)` past the bound).
    fn step_in(&mut self, saga_type: &str, step: Step) -> Step {
        if self.steps.contains_key(&(saga_type.to_owned(), step.clone())) {
            return step;
        }
        let max = self.limits().max_steps;
        let count = self.types.entry(saga_type.to_owned()).or_insert(0);
        if *count < max.saturating_sub(1) {
            *count += 1;
            step
        } else {
            if !self.steps.contains_key(&(saga_type.to_owned(), Step::other())) {
                *count += 1;
            }
            Step::other()
        }
    }

    fn transitions_of(&self, saga_type: &str) -> usize {
        self.transitions.keys().filter(|(t, _, _)| t == saga_type).count()
    }

    fn visit(&mut self, saga_type: &str, step: &Step, position: i32) {
        let key = (saga_type.to_owned(), step.clone());
        let stats = self.steps.entry(key.clone()).or_default();
        stats.visits += 1;
        stats.position_sum += i64::from(position);
        self.touched_steps.insert(key);
        self.touched_types.insert(saga_type.to_owned());
    }

    /// Runs one saga's new rows (in record-time order) through the model:
    /// returns the saga as it is now, or None when no row has a saga key.
    pub fn learn(&mut self, mut saga: Option<Saga>, rows: &[LearnRow], taught: &mut Taught) -> Option<Saga> {
        for row in rows {
            let key = row.saga_key()?;
            let raw = Step::of(row);
            let Some(s) = saga.as_mut() else {
                let saga_type = self.type_of(&raw);
                let step = self.step_in(&saga_type, raw);
                self.visit(&saga_type, &step, 0);
                saga = Some(Saga {
                    key,
                    correlation_id: row.correlation_id.clone(),
                    order_id: row.order_id.clone(),
                    saga_type,
                    started_at: row.at,
                    last: step,
                    last_at: row.at,
                    last_notification_id: row.notification_id,
                    steps: 1,
                    statuses: row.status.iter().cloned().collect(),
                    recent: row.doc_hash.into_iter().collect(),
                    flags: Vec::new(),
                    flagged_at: None,
                });
                continue;
            };
            if s.order_id.is_none() {
                s.order_id.clone_from(&row.order_id);
            }
            if let Some(hash) = row.doc_hash {
                if s.recent.contains(&hash) {
                    let step = self.step_in(&s.saga_type.clone(), raw);
                    s.flag(FlagKind::Duplicate, step, row, "the same document was stored before in this saga".into());
                    taught.flagged += 1;
                    continue;
                }
                if s.recent.len() >= KEEP_RECENT {
                    s.recent.remove(0);
                }
                s.recent.push(hash);
            }
            if row.at < s.last_at {
                taught.late += 1;
                continue;
            }
            let saga_type = s.saga_type.clone();
            let step = self.step_in(&saga_type, raw);
            if let Some(status) = row.status.as_deref() {
                if let Some(detail) = self.backwards(&saga_type, s, &step, status) {
                    s.flag(FlagKind::StatusRegression, step.clone(), row, detail);
                    taught.flagged += 1;
                }
                if s.statuses.last().map(String::as_str) != Some(status) {
                    if s.statuses.len() >= KEEP_STATUSES {
                        s.statuses.remove(0);
                    }
                    s.statuses.push(status.to_owned());
                }
            }
            #[allow(clippy::cast_precision_loss)]
            let ms = (row.at - s.last_at).num_microseconds().map_or(f64::MAX, |us| us as f64 / 1000.0);
            let mut tkey = (saga_type.clone(), s.last.clone(), step.clone());
            if !self.transitions.contains_key(&tkey)
                && self.transitions_of(&saga_type) >= self.limits().max_transitions()
            {
                tkey.2 = Step::other();
            }
            let t = self.transitions.entry(tkey.clone()).or_default();
            t.count += 1;
            t.latencies.add(ms);
            self.touched_transitions.insert(tkey.clone());
            self.learned.push((tkey, ms));
            let from = (saga_type.clone(), s.last.clone());
            self.steps.entry(from.clone()).or_default().out_count += 1;
            self.touched_steps.insert(from);
            self.visit(&saga_type, &step, s.steps);
            taught.transitions += 1;
            s.last = step;
            s.last_at = row.at;
            s.last_notification_id = row.notification_id;
            s.steps = s.steps.saturating_add(1);
        }
        saga
    }

    /// Why reaching `status` at `step` goes backwards, if it does: the saga
    /// left that status before, or the learned shape puts `step` at least a
    /// step before the saga's last one and rarely goes there from it.
    fn backwards(&self, saga_type: &str, saga: &Saga, step: &Step, status: &str) -> Option<String> {
        let last_status = saga.statuses.last().map(String::as_str);
        if last_status != Some(status) && saga.statuses.iter().any(|s| s == status) {
            return Some(format!("{} → {status}: the saga had left {status} before", last_status.unwrap_or("?")));
        }
        let min = self.limits().min_samples;
        let from = self.steps.get(&(saga_type.to_owned(), saga.last.clone()))?;
        let to = self.steps.get(&(saga_type.to_owned(), step.clone()))?;
        if from.out_count < min || from.visits < min || to.visits < min {
            return None;
        }
        let seen =
            self.transitions.get(&(saga_type.to_owned(), saga.last.clone(), step.clone())).map_or(0, |t| t.count);
        let rare = seen.saturating_mul(100) < from.out_count;
        (rare && to.mean_position() + 1.0 <= from.mean_position()).then(|| {
            format!(
                "{} → {}: learned at position {:.1}, after {:.1}, and taken from there by {seen} of {} sagas",
                saga.last.event,
                step.event,
                to.mean_position(),
                from.mean_position(),
                from.out_count
            )
        })
    }

    /// Sets each touched type's steps' ending flag and successor p99.
    pub fn judge_touched_types(&mut self) {
        let min = self.limits().min_samples;
        let mut p99: HashMap<StepKey, f64> = HashMap::new();
        for ((t, from, _), tr) in &self.transitions {
            if !self.touched_types.contains(t) || tr.count < min {
                continue;
            }
            if let Some(q) = tr.latencies.quantile(0.99) {
                let e = p99.entry((t.clone(), from.clone())).or_insert(q);
                *e = e.max(q);
            }
        }
        for (key, stats) in &mut self.steps {
            if !self.touched_types.contains(&key.0) {
                continue;
            }
            #[allow(clippy::cast_precision_loss)]
            let stopped = (stats.visits - stats.out_count).max(0) as f64 / stats.visits.max(1) as f64;
            stats.ends = stats.visits >= min && stopped >= END_SHARE;
            stats.successor_p99_ms = if stats.ends { None } else { p99.get(key).copied() };
            self.touched_steps.insert(key.clone());
        }
    }
}
