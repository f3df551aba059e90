//! Shadow versions: a stored version that runs beside the live one on live
//! traffic. Its answers are compared with the live module's and never
//! stored; every record where they differ is counted, and a bounded sample
//! of them kept (coordinates and the fields that differ), so a team sees what
//! a new version would change before promoting it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::metrics::{Metrics, ModuleLabels};
use crate::modules::Module;
use crate::record::{Normalized, Record};
use crate::runtime::Breaker;
use crate::samples::{FIELD_NAMES, field};

/// How many differing records a shadow keeps, newest first.
pub const SHADOW_SAMPLES: usize = 20;

/// Failures in a row after which a shadow stops being called, and how long
/// it then rests: a broken shadow costs a few calls per cooldown, not a
/// deadline per batch.
const SHADOW_FAILURES: u64 = 3;
const SHADOW_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// One field the two versions answered differently.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldDiff {
    pub field: String,
    pub live: Option<String>,
    pub shadow: Option<String>,
}

/// A record the shadow answered differently.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDiff {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub fields: Vec<FieldDiff>,
    /// The shadow's failure on the record, if it failed.
    pub shadow_error: Option<String>,
}

/// What `GET /normalizers` shows of a shadow.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowInfo {
    pub version: String,
    pub hash: String,
    /// Records compared on this replica since the shadow was loaded.
    pub records: u64,
    /// Of those, records where the shadow answered differently.
    pub differing: u64,
    /// The latest differing records (at most [`SHADOW_SAMPLES`]).
    pub samples: Vec<ShadowDiff>,
    /// Whether it is resting after failing on records in a row (its
    /// batches meanwhile are not compared).
    pub resting: bool,
}

/// A loaded shadow version and what it has seen.
pub struct Shadow {
    pub name: String,
    pub version: String,
    pub hash: String,
    module: std::sync::Arc<Module>,
    records: AtomicU64,
    differing: AtomicU64,
    samples: Mutex<VecDeque<ShadowDiff>>,
    /// When it last failed on [`SHADOW_FAILURES`] records in a row.
    tripped_at: Mutex<Option<std::time::Instant>>,
}

impl Shadow {
    pub fn new(name: String, version: String, hash: String, module: std::sync::Arc<Module>) -> Shadow {
        Shadow {
            name,
            version,
            hash,
            module,
            records: AtomicU64::new(0),
            differing: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
            tripped_at: Mutex::new(None),
        }
    }

    /// Runs the shadow over the records the live module just answered and
    /// compares: `live[i]` is the live answer for `batch[i]` (None when the
    /// live module passed the record on, which is not compared). After
    /// [`SHADOW_FAILURES`] failures in a row the shadow rests for
    /// [`SHADOW_COOLDOWN`], so a broken or slow shadow cannot stall
    /// ingestion.
    pub fn compare(&self, batch: &[&Record], live: &[Option<Normalized>], metrics: &Metrics) {
        if self.resting() {
            return;
        }
        let mut breaker = Breaker::new(0, SHADOW_FAILURES);
        let run = self.module.normalize(batch, &mut breaker);
        if breaker.tripped() {
            tracing::warn!(
                module = %self.name, version = %self.version, cooldown = ?SHADOW_COOLDOWN,
                "Shadow version failed on records in a row; it rests before its next batch."
            );
            if let Ok(mut t) = self.tripped_at.lock() {
                *t = Some(std::time::Instant::now());
            }
        }
        let (mut records, mut differing) = (0u64, 0u64);
        for ((record, live), (shadow, error)) in batch.iter().zip(live).zip(run.answers) {
            let Some(live) = live else { continue };
            records += 1;
            let fields: Vec<FieldDiff> = FIELD_NAMES
                .iter()
                .filter_map(|name| {
                    let (l, s) = (field(&live.fields, name), field(&shadow.fields, name));
                    (l != s).then(|| FieldDiff {
                        field: (*name).to_owned(),
                        live: l.map(str::to_owned),
                        shadow: s.map(str::to_owned),
                    })
                })
                .collect();
            if fields.is_empty() && error.is_none() {
                continue;
            }
            differing += 1;
            if let Ok(mut samples) = self.samples.lock() {
                if samples.len() == SHADOW_SAMPLES {
                    samples.pop_back();
                }
                samples.push_front(ShadowDiff {
                    topic: record.topic.clone(),
                    partition: record.partition,
                    offset: record.offset,
                    fields,
                    shadow_error: error.map(|e| e.to_string()),
                });
            }
        }
        self.records.fetch_add(records, Ordering::Relaxed);
        self.differing.fetch_add(differing, Ordering::Relaxed);
        let labels = ModuleLabels { module: self.name.clone(), version: self.version.clone() };
        metrics.module_shadow_records.get_or_create(&labels).inc_by(records);
        metrics.module_shadow_differences.get_or_create(&labels).inc_by(differing);
    }

    fn resting(&self) -> bool {
        self.tripped_at.lock().ok().and_then(|t| *t).is_some_and(|at| at.elapsed() < SHADOW_COOLDOWN)
    }

    pub fn info(&self) -> ShadowInfo {
        ShadowInfo {
            version: self.version.clone(),
            hash: self.hash.clone(),
            records: self.records.load(Ordering::Relaxed),
            differing: self.differing.load(Ordering::Relaxed),
            samples: self.samples.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default(),
            resting: self.resting(),
        }
    }
}
