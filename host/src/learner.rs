//! The saga learner: every `SAGA_LEARN_INTERVAL`, one replica (whichever
//! takes the learner's row first) reads the rows stored since the last run
//! in stored order, runs them through the [`Model`](crate::sagas::Model) and
//! saves where each saga is and what the shapes learned, in one transaction
//! per batch: a crash or a second replica neither skips nor learns a row
//! twice. It runs on the host's own connections, never the writers', and
//! its statements have a time limit, so it cannot hold up ingestion.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::SagaConfig;
use crate::metrics::Metrics;
use crate::sagas::{Horizons, LearnRow, Limits, Model, Producer, Rates, Saga, Step, Taught};
use crate::storage::{Db, DbError};

/// Rows stored this recently are left for the next run, so that rows of a
/// saga stored a moment apart out of their time order (different
/// partitions, different writers) are learned in one batch, in time order.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Batches per run at most: a run that has more to learn ends and the next
/// one goes on, so a backlog never holds the connection for long.
const MAX_BATCHES_PER_RUN: usize = 50;
/// Sagas forgotten per run at most.
const FORGET_PER_RUN: i64 = 5_000;
/// How often the stuck gauge is counted (a count reads every overdue saga).
const STUCK_METRIC_EVERY: Duration = Duration::from_secs(15);
/// (type, step) series of the stuck gauge at most.
pub const STUCK_SERIES: i64 = 50;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Run {
    pub rows: u64,
    pub sagas: u64,
    pub taught: Taught,
    /// Whether another replica held the learner (nothing done).
    pub busy: bool,
    /// Producers whose rates were updated, and records of producers past
    /// `SAGA_MAX_PRODUCERS` (not counted).
    pub producers: Producers,
}

/// What a run did to the producers' rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Producers {
    pub updated: u64,
    pub untracked_rows: u64,
}

impl std::ops::AddAssign for Run {
    fn add_assign(&mut self, o: Run) {
        self.rows += o.rows;
        self.sagas += o.sagas;
        self.taught.transitions += o.taught.transitions;
        self.taught.late += o.taught.late;
        self.taught.flagged += o.taught.flagged;
        self.busy |= o.busy;
        self.producers.updated += o.producers.updated;
        self.producers.untracked_rows += o.producers.untracked_rows;
    }
}

fn limits(config: &SagaConfig) -> Limits {
    Limits {
        max_types: config.saga_max_types as usize,
        max_steps: config.saga_max_steps as usize,
        min_samples: i64::from(config.saga_min_samples),
    }
}

/// Learns from one batch of rows stored at least `settle` ago. Returns
/// what it did; `rows` below the batch size means it caught up.
pub async fn learn_batch(db: &Db, config: &SagaConfig, settle: Duration, metrics: &Metrics) -> Result<Run, DbError> {
    let Some(mut learning) = db.begin_learning().await? else {
        return Ok(Run { busy: true, ..Run::default() });
    };
    let mut rows = learning.next_rows(i64::from(config.saga_learn_batch)).await?;
    let cutoff = Utc::now() - chrono::Duration::from_std(settle).unwrap_or_default();
    if let Some(young) = rows.iter().position(|r| r.stored_at > cutoff) {
        rows.truncate(young);
    }
    let Some(last) = rows.last() else {
        learning.save(&[], &Model::default(), None, 0).await?;
        return Ok(Run::default());
    };
    let position = Some((last.stored_tx, last.row.notification_id));
    let count = rows.len() as u64;
    let producers = count_producers(&mut learning, config, &rows).await?;
    // Each saga's rows, in record-time order.
    let mut by_saga: BTreeMap<String, Vec<LearnRow>> = BTreeMap::new();
    for r in rows {
        if let Some(key) = r.row.saga_key() {
            by_saga.entry(key).or_default().push(r.row);
        }
    }
    for rows in by_saga.values_mut() {
        rows.sort_by_key(|r| (r.at, r.notification_id));
    }
    let keys: Vec<String> = by_saga.keys().cloned().collect();
    let mut stored: std::collections::HashMap<String, Saga> =
        learning.sagas(&keys).await?.into_iter().map(|s| (s.key.clone(), s)).collect();
    let mut model = Model { limits: Some(limits(config)), types: learning.known_types().await?, ..Model::default() };
    // The types these rows touch: their sagas' own, or the type a new
    // saga would get (its first step's event, or `(other)`).
    let mut types: HashSet<String> = stored.values().map(|s| s.saga_type.clone()).collect();
    for (key, rows) in &by_saga {
        if let (false, Some(first)) = (stored.contains_key(key), rows.first()) {
            types.insert(Step::of(first).event);
        }
    }
    types.insert(crate::sagas::learn::OTHER.to_owned());
    let types: Vec<String> = types.into_iter().collect();
    learning.load_types(&types, &mut model).await?;
    let mut taught = Taught::default();
    let mut sagas = Vec::with_capacity(by_saga.len());
    for (key, rows) in &by_saga {
        if let Some(saga) = model.learn(stored.remove(key), rows, &mut taught) {
            sagas.push(saga);
        }
    }
    model.judge_touched_types();
    let run = Run { rows: count, sagas: sagas.len() as u64, taught, busy: false, producers };
    learning.save(&sagas, &model, position, i64::try_from(count).unwrap_or(i64::MAX)).await?;
    for ((saga_type, from, to), ms) in &model.learned {
        let (from, to) = (format!("{}/{}", from.service, from.event), format!("{}/{}", to.service, to.event));
        metrics.saga_step(saga_type, &from, &to, ms / 1000.0);
    }
    Ok(run)
}

/// Counts `rows` into their producers' rates, in the learning transaction.
/// New producers are taken while fewer than `SAGA_MAX_PRODUCERS` are known.
async fn count_producers(
    learning: &mut crate::storage::Learning,
    config: &SagaConfig,
    rows: &[crate::storage::LearnerRow],
) -> Result<Producers, DbError> {
    let horizons = Horizons::of(config.saga_silence_window);
    let mut times: BTreeMap<Producer, Vec<chrono::DateTime<Utc>>> = BTreeMap::new();
    for r in rows {
        if let Some(p) = Producer::of(&r.row) {
            times.entry(p).or_default().push(r.row.at);
        }
    }
    if times.is_empty() {
        return Ok(Producers::default());
    }
    let keys: Vec<Producer> = times.keys().cloned().collect();
    let (mut stored, mut known) = learning.producers(&keys).await?;
    let mut done = Producers::default();
    let mut updated = Vec::with_capacity(times.len());
    for (producer, at) in times {
        let rates = match stored.remove(&producer) {
            Some(mut rates) => {
                at.iter().for_each(|t| rates.add(*t, horizons));
                rates
            }
            None if known < config.saga_max_producers as usize => {
                known += 1;
                let mut rates = Rates::first(at[0], horizons);
                at[1..].iter().for_each(|t| rates.add(*t, horizons));
                rates
            }
            None => {
                done.untracked_rows += at.len() as u64;
                continue;
            }
        };
        updated.push((producer, rates));
    }
    done.updated = updated.len() as u64;
    learning.save_producers(&updated).await?;
    Ok(done)
}

/// Learns until caught up (or `MAX_BATCHES_PER_RUN` batches).
pub async fn learn_run(db: &Db, config: &SagaConfig, settle: Duration, metrics: &Metrics) -> Result<Run, DbError> {
    let mut total = Run::default();
    for _ in 0..MAX_BATCHES_PER_RUN {
        let run = learn_batch(db, config, settle, metrics).await?;
        total += run;
        if run.busy || run.rows < u64::from(config.saga_learn_batch) {
            break;
        }
    }
    Ok(total)
}

/// Sets the stuck-sagas gauge from the database.
pub async fn refresh_stuck_metric(db: &Db, config: &SagaConfig, metrics: &Metrics) -> Result<(), DbError> {
    let counts = db.stuck_counts(config.saga_overdue_margin, config.saga_window, STUCK_SERIES).await?;
    metrics.saga_stuck.clear();
    for (saga_type, service, event, n) in counts {
        metrics.saga_stuck.get_or_create(&crate::metrics::SagaStepLabels::new(&saga_type, &service, &event)).set(n);
    }
    let silence = db.silent_producers(config).await?;
    metrics.producers_silent.clear();
    for p in silence.silent.iter().take(STUCK_SERIES as usize) {
        let labels =
            crate::metrics::ProducerLabels { service: p.producer.service.clone(), event: p.producer.event.clone() };
        metrics.producers_silent.get_or_create(&labels).set(1);
    }
    Ok(())
}

/// Runs the learner until shutdown.
pub async fn learn(db: Db, config: SagaConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    if config.saga_learn_interval.is_zero() {
        tracing::info!("Saga learning is off (SAGA_LEARN_INTERVAL=0s).");
        return;
    }
    let mut counted = None;
    let mut tick = tokio::time::interval(config.saga_learn_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match learn_run(&db, &config, SETTLE, &metrics).await {
            Ok(run) => {
                if run.rows > 0 {
                    tracing::debug!(
                        rows = run.rows,
                        sagas = run.sagas,
                        transitions = run.taught.transitions,
                        late = run.taught.late,
                        flagged = run.taught.flagged,
                        "Learned saga steps."
                    );
                }
                metrics.saga_rows_learned.inc_by(run.rows);
                metrics.saga_rows_late.inc_by(run.taught.late);
                metrics.saga_producer_rows_untracked.inc_by(run.producers.untracked_rows);
            }
            Err(error) => tracing::warn!(%error, "Saga learning failed; retrying on the next tick."),
        }
        if let Err(error) = db.forget_sagas(config.saga_window, FORGET_PER_RUN).await {
            tracing::debug!(%error, "Could not forget idle sagas yet.");
        }
        if let Err(error) = db.forget_producers(config.saga_window).await {
            tracing::debug!(%error, "Could not forget idle producers yet.");
        }
        if counted.is_none_or(|at: std::time::Instant| at.elapsed() >= STUCK_METRIC_EVERY) {
            counted = Some(std::time::Instant::now());
            if let Err(error) = refresh_stuck_metric(&db, &config, &metrics).await {
                tracing::debug!(%error, "Could not count stuck sagas yet.");
            }
        }
    }
}
