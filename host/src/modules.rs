//! Normalizer modules: the modules directory, routing records to modules,
//! and swapping in new versions without a restart.
//!
//! Each module is a manifest (`*.toml`) in `NORMALIZERS_DIR` naming its
//! component and, optionally, golden samples, beside it:
//!
//! ```toml
//! name = "campus-delivery"
//! version = "1.0.0"
//! component = "campus-delivery.wasm"
//! samples = "campus-delivery.samples.jsonl"   # optional
//! fallback = true                              # fill null fields from the built-in default
//! [match]
//! topics = ["order_*", "re:^payment[-_].*$"]   # globs, or regexes after "re:"
//! header = "producer=payment-service"          # optional: a header the record must carry
//! ```
//!
//! A record goes to the first module (manifests in file-name order) whose
//! rules match it, otherwise to the built-in default. A new or changed
//! module is compiled off the message path, checked against the contract and
//! run over its samples; only then is the registry swapped (an `ArcSwap`, so
//! batches in flight finish with the version they started with). A module
//! that fails any step is rejected and its previous version stays live.
//!
//! A module that fails (trap, deadline, memory, output size) on
//! `quarantine_after` records in a row is quarantined: its records get the
//! built-in default's fields. The breaker is half-open: after
//! `quarantine_cooldown` the next batch for the module is a trial, and a
//! trial that does not trip the breaker again brings the module back (a
//! short burst of failures, such as CPU starvation running past the
//! wall-clock deadline, does not switch a good module off for good). A trial
//! that trips it starts a new cooldown. A new version starts closed.

mod gate;
mod manifest;
mod module;
mod quarantine;
mod registry;
mod routing;
mod shadow;
mod store_watch;
mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::ModulesArgs;
use crate::metrics::{Metrics, ModuleInfoLabels, ModuleLabels};
use crate::record::{Normalized, Record};
use crate::runtime::{Limits, Runtime};
use crate::storage::module_store::StoredModule;
pub use gate::{SampleResult, SamplesReport, judge_samples, maxima, runtime_for, validate_for_store};
use manifest::manifest_name;
pub use manifest::{FieldRule, FieldSpec, Manifest, ManifestLimits, MatchRules, content_hash, read_module_files};
pub use module::{Module, ModuleRun, Normalizer, builtin, builtin_fields, builtin_label, fallback};
use quarantine::run;
use registry::info;
use registry::{Entry, Prepared, Registry, Source};
pub use registry::{ModuleInfo, Rejection, ShadowRef, SourceKey};
use routing::Doc;
pub use shadow::{FieldDiff, Shadow, ShadowDiff, ShadowInfo};
pub use store_watch::{refresh as refresh_store, watch_store};
pub use watcher::watch;

/// How modules are loaded and judged.
#[derive(Debug, Clone)]
pub struct ModulesConfig {
    pub dir: Option<PathBuf>,
    /// Failures in a row that quarantine a module.
    pub quarantine_after: u64,
    /// How long a quarantined module waits before a trial batch.
    pub quarantine_cooldown: Duration,
    /// The most a manifest's `[limits]` may ask for.
    pub maxima: Limits,
}

/// The module registry: the normalizer the pipeline calls.
pub struct Modules {
    runtime: Runtime,
    config: ModulesConfig,
    /// Per module version: records, failures by kind, time, quarantine.
    metrics: Arc<Metrics>,
    current: ArcSwap<Registry>,
    rejections: Mutex<BTreeMap<SourceKey, Rejection>>,
    /// The samples gate's last report per source, for the tester.
    reports: Mutex<BTreeMap<SourceKey, SamplesReport>>,
    /// The module store's live versions, as last read.
    store: Mutex<Vec<Arc<StoredModule>>>,
    /// Shadow versions from the store, by module name.
    shadows: ArcSwap<HashMap<String, Arc<Shadow>>>,
    /// The shadow versions the store last named, loaded or not.
    shadows_seen: Mutex<Vec<ShadowRef>>,
    /// Serializes reloads (the watcher and the poller may both ask).
    reload_lock: Mutex<()>,
    /// The module running now and since when, for the stall watchdog.
    running: Mutex<Option<(String, std::time::Instant)>>,
}

impl Modules {
    pub fn new(runtime: Runtime, config: ModulesConfig) -> Modules {
        Modules::with_metrics(runtime, config, Arc::new(Metrics::default()))
    }

    /// Modules that report to `metrics` (the host's `/metrics`).
    pub fn with_metrics(runtime: Runtime, config: ModulesConfig, metrics: Arc<Metrics>) -> Modules {
        Modules {
            runtime,
            config,
            metrics,
            current: ArcSwap::from_pointee(Registry::default()),
            rejections: Mutex::new(BTreeMap::new()),
            reports: Mutex::new(BTreeMap::new()),
            store: Mutex::new(Vec::new()),
            shadows: ArcSwap::from_pointee(HashMap::new()),
            shadows_seen: Mutex::new(Vec::new()),
            reload_lock: Mutex::new(()),
            running: Mutex::new(None),
        }
    }

    /// The one way the commands assemble the modules: the sandbox limits and
    /// directory `args` configure, loaded once. `quarantine` is false for a
    /// one-shot command (`check`, `renormalize`), which judges every record.
    /// A configured directory that does not exist is an error.
    pub async fn load(args: &ModulesArgs, quarantine: bool, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Modules>> {
        let config = ModulesConfig {
            dir: args.normalizers_dir.clone(),
            quarantine_after: if quarantine { args.module_quarantine_after.max(1) } else { u64::MAX },
            quarantine_cooldown: args.module_quarantine_cooldown,
            maxima: maxima(args),
        };
        if let Some(dir) = &config.dir {
            anyhow::ensure!(dir.is_dir(), "NORMALIZERS_DIR {} is not a directory", dir.display());
        }
        let modules = Arc::new(Modules::with_metrics(runtime_for(args)?, config, metrics));
        if modules.dir().is_some() {
            let m = modules.clone();
            tokio::task::spawn_blocking(move || m.reload()).await?;
        }
        Ok(modules)
    }

    pub fn dir(&self) -> Option<&Path> {
        self.config.dir.as_deref()
    }

    /// Normalizes a batch: each record by the first module that matches it,
    /// or the built-in default. A module that answers `unsupported` passes
    /// the record on to the next module that matches it, and the last one to
    /// the built-in default; the row names whoever answered. CPU-bound; call
    /// it off the async workers.
    pub fn normalize(&self, records: &[Record]) -> Vec<Normalized> {
        let registry = self.current.load();
        if registry.entries.is_empty() {
            return Normalizer::Builtin.normalize(records);
        }
        let mut docs: Vec<Doc<'_>> = records.iter().map(Doc::new).collect();
        let mut out: Vec<Option<Normalized>> = vec![None; records.len()];
        // Each round sends every waiting record to the next module after
        // `from` whose rules match it.
        let mut waiting: Vec<(usize, usize)> = (0..records.len()).map(|i| (i, 0)).collect();
        while !waiting.is_empty() {
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, from) in waiting.drain(..) {
                let next = registry.entries[from..]
                    .iter()
                    .position(|e| e.route.matches(&records[i], &mut docs[i]))
                    .map(|p| from + p);
                match next {
                    Some(m) => groups.entry(m).or_default().push(i),
                    None => out[i] = Some(builtin(&records[i])),
                }
            }
            let shadows = self.shadows.load();
            for (m, indices) in groups {
                let batch: Vec<&Record> = indices.iter().map(|&i| &records[i]).collect();
                let entry = &registry.entries[m];
                self.set_running(Some(&entry.module.label));
                let answers = run(entry, &batch, &self.config, &self.metrics);
                self.set_running(None);
                // A shadow of this module sees the same records, after it.
                if let Some(shadow) = shadows.get(&entry.manifest.name) {
                    shadow.compare(&batch, &answers, &self.metrics);
                }
                for (i, answer) in indices.into_iter().zip(answers) {
                    match answer {
                        None => waiting.push((i, m + 1)),
                        Some(n) => out[i] = Some(n),
                    }
                }
            }
        }
        out.into_iter().zip(records).map(|(n, r)| n.unwrap_or_else(|| builtin(r))).collect()
    }

    fn set_running(&self, module: Option<&str>) {
        if let Ok(mut running) = self.running.lock() {
            *running = module.map(|m| (m.to_owned(), std::time::Instant::now()));
        }
    }

    /// The module the pipeline is running now (`name@version`), and for how
    /// long.
    pub fn running(&self) -> Option<(String, Duration)> {
        self.running.lock().ok()?.as_ref().map(|(m, since)| (m.clone(), since.elapsed()))
    }

    /// The live modules.
    pub fn list(&self) -> Vec<ModuleInfo> {
        // The live set first: `set_store` publishes shadows before it, so a
        // promoted version is never listed beside its own shadow.
        let current = self.current.load();
        let shadows = self.shadows.load();
        current
            .entries
            .iter()
            .map(|e| {
                let mut i = info(e);
                i.shadow = shadows.get(&e.manifest.name).map(|s| s.info());
                i
            })
            .collect()
    }

    /// The shadow versions this replica runs.
    pub fn shadows(&self) -> Vec<Arc<Shadow>> {
        self.shadows.load().values().cloned().collect()
    }

    /// The latest rejection per manifest that is not live at its newest content.
    /// Sets the per-version gauges of `/metrics` from the live modules: one
    /// `module_info` series per live version (a replaced version's series is
    /// gone), and whether it is quarantined.
    pub fn refresh_metrics(&self) {
        self.metrics.module_info.clear();
        self.metrics.module_quarantined.clear();
        for m in self.list() {
            let labels = ModuleLabels { module: m.name.clone(), version: m.version.clone() };
            self.metrics.module_quarantined.get_or_create(&labels).set(i64::from(m.quarantined));
            self.metrics
                .module_info
                .get_or_create(&ModuleInfoLabels { module: m.name, version: m.version, hash: m.hash })
                .set(1);
        }
    }

    /// The samples gate's last report for a manifest (the tester shows it).
    pub fn samples_report(&self, manifest: &Path) -> Option<SamplesReport> {
        self.reports.lock().ok()?.get(&SourceKey::File(manifest.to_path_buf())).cloned()
    }

    /// Which module the live routing sends `record` to: its `name@version`,
    /// or None for the built-in default.
    pub fn route(&self, record: &Record) -> Option<String> {
        let registry = self.current.load();
        let mut doc = Doc::new(record);
        registry.entries.iter().find(|e| e.route.matches(record, &mut doc)).map(|e| e.module.label.clone())
    }

    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections.lock().map(|r| r.values().cloned().collect()).unwrap_or_default()
    }

    /// Rescans the modules directory and swaps in what changed. Blocking
    /// (compiles components); call it off the async workers.
    pub fn reload(&self) {
        let Ok(_guard) = self.reload_lock.lock() else { return };
        self.reload_locked();
    }

    /// [`Modules::reload`] with the reload lock held.
    fn reload_locked(&self) {
        // The sources are gathered under the lock, so a reload that started
        // earlier cannot apply an older store set over a newer one.
        let mut sources: Vec<Source> = Vec::new();
        if let Some(dir) = self.config.dir.clone() {
            match std::fs::read_dir(&dir) {
                Ok(rd) => sources.extend(
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                        .map(Source::File),
                ),
                Err(error) => {
                    // Keep the live directory modules as they are; store
                    // changes still apply.
                    tracing::warn!(dir = %dir.display(), %error, "Cannot read the modules directory; keeping its live modules.");
                    let live = self.current.load();
                    sources.extend(live.entries.iter().filter_map(|e| match &e.source {
                        Source::File(path) => Some(Source::File(path.clone())),
                        Source::Stored(_) => None,
                    }));
                }
            }
        }
        if let Ok(store) = self.store.lock() {
            sources.extend(store.iter().cloned().map(Source::Stored));
        }
        self.apply_locked(sources);
    }

    /// Replaces the module store's live and shadow versions (the store
    /// watcher calls this) and reloads. Blocking (compiles components).
    pub fn set_store(&self, live: Vec<Arc<StoredModule>>, shadows: Vec<Arc<StoredModule>>) {
        // One lock over both, and the shadows are published before the live
        // set: whoever sees a promoted live version sees its shadow gone.
        let Ok(_guard) = self.reload_lock.lock() else { return };
        if let Ok(mut store) = self.store.lock() {
            *store = live;
        }
        if let Ok(mut seen) = self.shadows_seen.lock() {
            *seen = shadows.iter().map(|m| ShadowRef::of(m)).collect();
        }
        let previous = self.shadows.load_full();
        let mut next = HashMap::new();
        for m in shadows {
            let key = SourceKey::Shadow(m.name.clone());
            if let Some(kept) = previous.get(&m.name).filter(|s| s.hash == m.hash) {
                next.insert(m.name.clone(), Arc::clone(kept));
                continue;
            }
            match self.prepare(&Source::Stored(Arc::clone(&m)), None, key.clone()) {
                Ok(Prepared::New(entry)) => {
                    tracing::info!(module = %entry.module.label, "Shadow version loaded; its answers are compared, not stored.");
                    if let Ok(mut r) = self.rejections.lock() {
                        r.remove(&key);
                    }
                    next.insert(
                        m.name.clone(),
                        Arc::new(Shadow::new(
                            m.name.clone(),
                            m.version.clone(),
                            m.hash.clone(),
                            Arc::clone(&entry.module),
                        )),
                    );
                }
                Ok(Prepared::Unchanged(_)) => {}
                Err(reason) => {
                    tracing::error!(module = %m.name, version = %m.version, %reason, "Shadow version rejected.");
                    if let Ok(mut r) = self.rejections.lock() {
                        r.insert(key.clone(), Rejection::new(&key, reason));
                    }
                }
            }
        }
        if let Ok(mut r) = self.rejections.lock() {
            let wanted: Vec<SourceKey> = self
                .shadows_seen
                .lock()
                .map(|s| s.iter().map(|seen| SourceKey::Shadow(seen.name.clone())).collect())
                .unwrap_or_default();
            r.retain(|k, _| !matches!(k, SourceKey::Shadow(_)) || wanted.contains(k));
        }
        self.shadows.store(Arc::new(next));
        self.reload_locked();
    }

    /// The shadow versions the store last named (loaded or rejected): the
    /// store watcher fetches a shadow only when this changes.
    pub fn shadows_seen(&self) -> Vec<ShadowRef> {
        self.shadows_seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The module store's versions this replica holds.
    pub fn store_versions(&self) -> Vec<Arc<StoredModule>> {
        self.store.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Makes exactly these manifests the live set, as a directory scan
    /// does (the tester judges with it). Blocking (compiles components).
    pub fn load_manifests(&self, manifests: Vec<PathBuf>) {
        self.apply(manifests.into_iter().map(Source::File).collect());
    }

    /// Makes exactly these sources the live set (see [`Modules::apply_locked`]).
    fn apply(&self, sources: Vec<Source>) {
        let Ok(_guard) = self.reload_lock.lock() else { return };
        self.apply_locked(sources);
    }

    /// Makes exactly these sources the live set, in routing order (a file by
    /// its name, a stored module as if its manifest were `<name>.toml`):
    /// unchanged ones stay, new or changed ones go through the gate, rejected
    /// ones keep their previous version. A stored module that is live wins
    /// over a file manifest of the same name; a stored version that is
    /// refused, with nothing earlier from the store to keep, leaves the file
    /// serving. The caller holds `reload_lock`.
    fn apply_locked(&self, mut sources: Vec<Source>) {
        sources.sort_by_key(Source::order);
        let previous = self.current.load_full();
        let by_key: HashMap<&SourceKey, &Arc<Entry>> = previous.entries.iter().map(|e| (&e.key, e)).collect();
        let keys: Vec<SourceKey> = sources.iter().map(Source::key).collect();
        let mut prepared: HashMap<SourceKey, Arc<Entry>> = HashMap::new();
        let mut changed = false;
        let mut take = |source: &Source,
                        result: Result<Prepared, String>,
                        prepared: &mut HashMap<SourceKey, Arc<Entry>>| {
            let key = source.key();
            match result {
                Ok(Prepared::Unchanged(entry)) => {
                    // The files are back to the live version: an earlier
                    // rejection no longer describes them.
                    if let Ok(mut r) = self.rejections.lock() {
                        r.remove(&key);
                    }
                    prepared.insert(key, entry);
                }
                Ok(Prepared::New(entry)) => {
                    tracing::info!(module = %entry.module.label, hash = %entry.hash, source = %key, "Normalizer module loaded.");
                    if let Ok(mut r) = self.rejections.lock() {
                        r.remove(&key);
                    }
                    prepared.insert(key, Arc::new(*entry));
                    changed = true;
                }
                Err(reason) => {
                    let kept = by_key.get(&key).map(|e| e.module.label.clone());
                    tracing::error!(
                        source = %key, %reason, kept = kept.as_deref().unwrap_or("none"),
                        "Normalizer module rejected; the previous version stays live."
                    );
                    if let Ok(mut r) = self.rejections.lock() {
                        r.insert(key.clone(), Rejection::new(&key, reason));
                    }
                    if let Some(entry) = by_key.get(&key) {
                        prepared.insert(key, Arc::clone(entry));
                    }
                }
            }
        };
        // The store first: which names it serves decides the files' fate.
        for source in sources.iter().filter(|s| matches!(s, Source::Stored(_))) {
            let result = self.prepare(source, by_key.get(&source.key()).copied(), source.key());
            take(source, result, &mut prepared);
        }
        let served_by_store: HashMap<String, String> = prepared
            .values()
            .filter(|e| matches!(e.source, Source::Stored(_)))
            .map(|e| (e.manifest.name.clone(), e.manifest.version.clone()))
            .collect();
        for source in sources.iter().filter(|s| matches!(s, Source::File(_))) {
            let Source::File(path) = source else { continue };
            let result = match manifest_name(path).and_then(|n| served_by_store.get(&n).map(|v| (n, v))) {
                Some((name, version)) => Err(format!("overridden by the module store, where {name}@{version} is live")),
                None => self.prepare(source, by_key.get(&source.key()).copied(), source.key()),
            };
            take(source, result, &mut prepared);
        }
        // A file overridden by the store leaves the live set.
        let entries: Vec<Arc<Entry>> = sources
            .iter()
            .filter_map(|s| prepared.get(&s.key()).cloned())
            .filter(|e| matches!(e.source, Source::Stored(_)) || !served_by_store.contains_key(&e.manifest.name))
            .collect();
        if entries.len() != previous.entries.len()
            || entries.iter().zip(previous.entries.iter()).any(|(a, b)| !Arc::ptr_eq(a, b))
        {
            changed = true;
            for gone in previous.entries.iter().filter(|e| !entries.iter().any(|n| Arc::ptr_eq(n, e))) {
                if !entries.iter().any(|n| n.key == gone.key) {
                    tracing::info!(module = %gone.module.label, "Normalizer module removed.");
                }
            }
        }
        if let Ok(mut r) = self.rejections.lock() {
            r.retain(|k, _| keys.contains(k) || matches!(k, SourceKey::Shadow(_)));
        }
        if changed {
            self.current.store(Arc::new(Registry { entries }));
        }
    }

    /// Reads, compiles and judges one source through the gate, keeping its
    /// samples report under `key`.
    fn prepare(&self, source: &Source, previous: Option<&Arc<Entry>>, key: SourceKey) -> Result<Prepared, String> {
        let (result, report) = gate::prepare(&self.runtime, self.config.maxima, source, previous);
        if let Some(report) = report
            && let Ok(mut reports) = self.reports.lock()
        {
            reports.insert(key, report);
        }
        result
    }
}
