//! Quarantine: a module that fails on records in a row stops being called,
//! and comes back after a trial batch; what it prints is logged within a
//! budget.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ModulesConfig;
use super::module::fallback;
use super::registry::Entry;
use crate::metrics::{Metrics, ModuleFailureLabels, ModuleLabels};
use crate::record::{Normalized, Record};
use crate::runtime::{Breaker, CallError, Output};

/// Counters of one loaded module version.
#[derive(Debug, Default)]
pub struct ModuleStats {
    pub(super) calls: AtomicU64,
    pub(super) errors: AtomicU64,
    consecutive_failures: AtomicU64,
    /// When the module was quarantined (or last failed its trial); None
    /// while the breaker is closed.
    pub(super) quarantined_at: Mutex<Option<Instant>>,
    /// Quarantines and recoveries, for `GET /normalizers`.
    pub(super) quarantines: AtomicU64,
    pub(super) recoveries: AtomicU64,
    pub(super) last_error: Mutex<Option<String>>,
    /// What the module printed is logged at most [`OUTPUT_LOGS_PER_MINUTE`]
    /// times a minute; the rest is counted.
    output_log: Mutex<OutputLog>,
}

/// How many module outputs are logged per module version and minute.
const OUTPUT_LOGS_PER_MINUTE: u32 = 10;

#[derive(Debug, Default)]
struct OutputLog {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Entry {
    /// Logs what the module printed during a call, with the coordinates of
    /// the call's first record, within the module's log budget.
    fn log_output(&self, output: &Output, batch: &[&Record]) {
        let Ok(mut log) = self.stats.output_log.lock() else { return };
        let now = Instant::now();
        if log.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60)) {
            log.window = Some(now);
            log.logged = 0;
        }
        if log.logged >= OUTPUT_LOGS_PER_MINUTE {
            log.suppressed += 1;
            return;
        }
        log.logged += 1;
        let suppressed = std::mem::take(&mut log.suppressed);
        drop(log);
        let Some(first) = batch.get(output.first) else { return };
        tracing::warn!(
            module = %self.module.label,
            topic = %first.topic,
            partition = first.partition,
            offset = first.offset,
            records = output.len,
            suppressed_since_last = suppressed,
            output = %output.text,
            "Normalizer module printed output."
        );
    }
}

/// What a quarantined module's records get: the fallback, with the
/// quarantine as the reason.
fn quarantined(label: &str, records: &[&Record]) -> impl Iterator<Item = Option<Normalized>> {
    records.iter().map(move |r| Some(fallback(r, label, format!("{label} is quarantined after repeated failures"))))
}

/// Runs one module over its records, minding the circuit breaker: the module
/// stops being called as soon as it has failed `quarantine_after` records in
/// a row, even in the middle of a batch. A quarantined module is not called
/// until its cooldown has passed; then this batch is its trial.
/// One answer per record: the row's fields (the module's, or the fallback's
/// when it failed), or None when the module answered `unsupported` and the
/// record goes on to the next module.
pub(super) fn run(
    entry: &Entry,
    batch: &[&Record],
    config: &ModulesConfig,
    metrics: &Metrics,
) -> Vec<Option<Normalized>> {
    let stats = &entry.stats;
    let label = &entry.module.label;
    let since = stats.quarantined_at.lock().ok().and_then(|q| *q);
    let trial = match since {
        Some(at) if at.elapsed() < config.quarantine_cooldown => return quarantined(label, batch).collect(),
        Some(_) => true,
        None => false,
    };
    // A trial starts from zero failures: it has the full limit to prove
    // itself on this batch.
    let start = if trial { 0 } else { stats.consecutive_failures.load(Ordering::Relaxed) };
    let mut breaker = Breaker::new(start, config.quarantine_after);
    let started = Instant::now();
    let run = entry.module.normalize(batch, &mut breaker);
    for output in &run.output {
        entry.log_output(output, batch);
    }
    let answers = run.answers;
    let labels = ModuleLabels { module: entry.manifest.name.clone(), version: entry.manifest.version.clone() };
    metrics.module_call_seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    metrics.module_records.get_or_create(&labels).inc_by(answers.len() as u64);
    stats.calls.fetch_add(answers.len() as u64, Ordering::Relaxed);
    let mut out = Vec::with_capacity(batch.len());
    let mut last_error = None;
    for (normalized, error) in answers {
        if let Some(CallError::Unsupported(_)) = error {
            out.push(None);
            continue;
        }
        if let Some(e) = error {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            metrics
                .module_failures
                .get_or_create(&ModuleFailureLabels {
                    module: labels.module.clone(),
                    version: labels.version.clone(),
                    kind: e.kind(),
                })
                .inc();
            last_error = Some(e.to_string());
        }
        out.push(Some(normalized));
    }
    if let Some(e) = &last_error
        && let Ok(mut last) = stats.last_error.lock()
    {
        *last = Some(e.clone());
    }
    stats.consecutive_failures.store(breaker.in_a_row(), Ordering::Relaxed);
    if breaker.tripped() {
        let was_closed = !trial;
        if let Ok(mut q) = stats.quarantined_at.lock() {
            *q = Some(Instant::now());
        }
        if was_closed {
            stats.quarantines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                module = %label,
                failures = breaker.in_a_row(),
                error = last_error.as_deref().unwrap_or_default(),
                cooldown = ?config.quarantine_cooldown,
                "Normalizer module quarantined; its records get the built-in default's fields, and it gets a trial batch after the cooldown."
            );
        } else {
            tracing::warn!(
                module = %label,
                error = last_error.as_deref().unwrap_or_default(),
                "Normalizer module failed its trial batch; quarantined for another cooldown."
            );
        }
        out.extend(quarantined(label, &batch[out.len()..]));
    } else if trial {
        if let Ok(mut q) = stats.quarantined_at.lock() {
            *q = None;
        }
        stats.recoveries.fetch_add(1, Ordering::Relaxed);
        tracing::info!(module = %label, records = batch.len(), "Normalizer module passed its trial batch; it is live again.");
    }
    out
}
