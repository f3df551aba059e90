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

mod shadow;
mod store_watch;
mod watcher;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ModulesArgs;
use crate::metrics::{Metrics, ModuleFailureLabels, ModuleInfoLabels, ModuleLabels};
use crate::normalize::{Module, Normalizer, builtin, fallback};
use crate::record::{Normalized, Record};
use crate::runtime::{Breaker, CallError, CompileCache, Limits, Output, Runtime};
use crate::samples::{self, Sample};
use crate::storage::module_store::StoredModule;
pub use shadow::{FieldDiff, Shadow, ShadowDiff, ShadowInfo};
pub use store_watch::{refresh as refresh_store, watch_store};
pub use watcher::watch;

/// A module manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The component file, relative to the manifest.
    pub component: PathBuf,
    /// Golden samples (the `notification-host normalize` format) that must
    /// all pass before the module goes live.
    pub samples: Option<PathBuf>,
    /// Fill the fields the module leaves null from the built-in default.
    #[serde(default)]
    pub fallback: bool,
    #[serde(rename = "match")]
    pub rules: MatchRules,
    /// The module's own sandbox limits, within the host's maxima.
    #[serde(default)]
    pub limits: ManifestLimits,
}

/// Limits a manifest may set for its module; each absent one is the
/// host's default (`MODULE_MEMORY_LIMIT`, `MODULE_DEADLINE`,
/// `MODULE_MAX_OUTPUT`), and none may exceed the host's maximum.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// Linear memory one instance may grow to, in MiB.
    pub memory_mib: Option<u64>,
    /// Wall-clock time one call may take, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Total bytes of the strings one record's answer may carry.
    pub max_output_bytes: Option<usize>,
}

impl ManifestLimits {
    /// The limits a module runs under: its own where it sets them, else
    /// `defaults`; an error names every limit above `maxima`.
    pub fn resolve(&self, defaults: Limits, maxima: Limits) -> Result<Limits, String> {
        let mut limits = defaults;
        let mut over = Vec::new();
        if let Some(mib) = self.memory_mib {
            let bytes = usize::try_from(mib).ok().and_then(|m| m.checked_mul(1 << 20)).unwrap_or(usize::MAX);
            if bytes > maxima.memory_bytes || mib == 0 {
                over.push(format!(
                    "limits.memory_mib = {mib} is not within 1..={} (MODULE_MEMORY_MAX)",
                    maxima.memory_bytes >> 20
                ));
            }
            limits.memory_bytes = bytes;
        }
        if let Some(ms) = self.deadline_ms {
            let deadline = Duration::from_millis(ms);
            if deadline > maxima.deadline || ms == 0 {
                over.push(format!(
                    "limits.deadline_ms = {ms} is not within 1..={} (MODULE_DEADLINE_MAX)",
                    maxima.deadline.as_millis()
                ));
            }
            limits.deadline = deadline;
        }
        if let Some(bytes) = self.max_output_bytes {
            if bytes > maxima.max_output_bytes {
                over.push(format!(
                    "limits.max_output_bytes = {bytes} is above the host's {} (MODULE_MAX_OUTPUT)",
                    maxima.max_output_bytes
                ));
            }
            limits.max_output_bytes = bytes;
        }
        if over.is_empty() { Ok(limits) } else { Err(over.join("; ")) }
    }
}

/// Which records a module serves: all of its rules must hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MatchRules {
    /// Topic globs, or regular expressions written `re:<regex>`.
    pub topics: Vec<String>,
    /// `name=value`: a header the record must carry (first occurrence).
    pub header: Option<String>,
    /// A glob the record's key (as UTF-8 text) must match.
    pub key: Option<String>,
    /// Members of the record's JSON value, by dotted path (`source`,
    /// `payload.sourceService`, `data.type`): a string is an exact value; a
    /// table says `equals`, `glob` or `present`.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldRule>,
}

/// What a member of the value must be.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum FieldRule {
    /// Exactly this (a string member, or a number or boolean written so).
    Equals(String),
    /// `{ equals = "..." }`, `{ glob = "..." }` or `{ present = true|false }`.
    Spec(FieldSpec),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub equals: Option<String>,
    pub glob: Option<String>,
    /// Present and not null (true), or absent or null (false).
    pub present: Option<bool>,
}

/// A compiled field rule.
#[derive(Debug, Clone)]
enum FieldTest {
    Equals(String),
    Glob(globset::GlobMatcher),
    Present(bool),
}

/// Compiled match rules.
#[derive(Debug, Clone)]
struct Route {
    globs: GlobSet,
    regexes: Vec<Regex>,
    header: Option<(String, String)>,
    key: Option<globset::GlobMatcher>,
    fields: Vec<(Vec<String>, FieldTest)>,
}

impl Route {
    fn new(rules: &MatchRules) -> Result<Route, String> {
        if rules.topics.is_empty() {
            return Err("match.topics is empty".into());
        }
        let mut globs = GlobSetBuilder::new();
        let mut regexes = Vec::new();
        for t in &rules.topics {
            match t.strip_prefix("re:") {
                Some(re) => regexes.push(Regex::new(re).map_err(|e| format!("bad topic regex {re:?}: {e}"))?),
                None => {
                    globs.add(Glob::new(t).map_err(|e| format!("bad topic glob {t:?}: {e}"))?);
                }
            }
        }
        let header = match &rules.header {
            Some(h) => match h.split_once('=') {
                Some((k, v)) if !k.is_empty() => Some((k.to_owned(), v.to_owned())),
                _ => return Err(format!("match.header must be name=value, got {h:?}")),
            },
            None => None,
        };
        let glob = |what: &str, g: &str| {
            Glob::new(g).map(|g| g.compile_matcher()).map_err(|e| format!("bad {what} glob {g:?}: {e}"))
        };
        let key = rules.key.as_deref().map(|k| glob("match.key", k)).transpose()?;
        let mut fields = Vec::new();
        for (path, rule) in &rules.fields {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(format!("match.fields: {path:?} is not a dotted path of member names"));
            }
            let test = match rule {
                FieldRule::Equals(v) => FieldTest::Equals(v.clone()),
                FieldRule::Spec(FieldSpec { equals: Some(v), glob: None, present: None }) => {
                    FieldTest::Equals(v.clone())
                }
                FieldRule::Spec(FieldSpec { equals: None, glob: Some(g), present: None }) => {
                    FieldTest::Glob(glob(&format!("match.fields.{path}"), g)?)
                }
                FieldRule::Spec(FieldSpec { equals: None, glob: None, present: Some(p) }) => FieldTest::Present(*p),
                FieldRule::Spec(_) => {
                    return Err(format!("match.fields.{path} needs exactly one of equals, glob or present"));
                }
            };
            fields.push((segments, test));
        }
        Ok(Route { globs: globs.build().map_err(|e| e.to_string())?, regexes, header, key, fields })
    }

    fn matches(&self, record: &Record, doc: &mut Doc<'_>) -> bool {
        let topic_ok = self.globs.is_match(&record.topic) || self.regexes.iter().any(|r| r.is_match(&record.topic));
        topic_ok
            && self.header.as_ref().is_none_or(|(k, v)| record.header(k) == Some(v.as_str()))
            && self.key.as_ref().is_none_or(|g| {
                record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).is_some_and(|k| g.is_match(k))
            })
            && self.fields.iter().all(|(path, test)| {
                let value = doc.member(path);
                match test {
                    FieldTest::Present(want) => value.is_some() == *want,
                    FieldTest::Equals(want) => matches!(value, Some(Member::Text(v)) if v == *want),
                    FieldTest::Glob(g) => matches!(value, Some(Member::Text(v)) if g.is_match(&v)),
                }
            })
    }
}

/// A member of a record's value, as field rules see it.
enum Member {
    /// A string's content, or a number's or boolean's JSON text.
    Text(String),
    /// An object or an array: present, never equal to a string.
    Structured,
}

/// A record's value, parsed at most once however many modules' field rules
/// look at it, and then only as far as their paths go: each object on a
/// path is split into its members' raw JSON text once, not decoded.
struct Doc<'a> {
    value: Option<&'a [u8]>,
    /// Objects by dotted path ("" is the value itself); None: not an object.
    objects: HashMap<String, Option<Members>>,
}

type Members = HashMap<String, Box<serde_json::value::RawValue>>;

impl<'a> Doc<'a> {
    fn new(record: &'a Record) -> Doc<'a> {
        Doc { value: record.value.as_deref(), objects: HashMap::new() }
    }

    /// The object at `path[..depth]`, split into members on first use.
    fn object(&mut self, path: &[String], depth: usize) -> Option<&Members> {
        let key = path[..depth].join(".");
        if !self.objects.contains_key(&key) {
            let parsed = if depth == 0 {
                self.value.and_then(|bytes| {
                    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
                    serde_json::from_slice::<Members>(bytes).ok()
                })
            } else {
                let parent = self.object(path, depth - 1)?;
                parent.get(&path[depth - 1]).and_then(|raw| serde_json::from_str::<Members>(raw.get()).ok())
            };
            self.objects.insert(key.clone(), parsed);
        }
        self.objects.get(&key)?.as_ref()
    }

    /// The member at `path`; None when it is absent or null.
    fn member(&mut self, path: &[String]) -> Option<Member> {
        let (last, _) = path.split_last()?;
        let text = self.object(path, path.len() - 1)?.get(last)?.get();
        match text.as_bytes().first()? {
            b'"' => serde_json::from_str::<String>(text).ok().map(Member::Text),
            // Numbers and booleans as sent: every digit kept.
            b'-' | b'0'..=b'9' | b't' | b'f' => Some(Member::Text(text.to_owned())),
            b'{' | b'[' => Some(Member::Structured),
            _ => None,
        }
    }
}

/// Counters of one loaded module version.
#[derive(Debug, Default)]
pub struct ModuleStats {
    calls: AtomicU64,
    errors: AtomicU64,
    consecutive_failures: AtomicU64,
    /// When the module was quarantined (or last failed its trial); None
    /// while the breaker is closed.
    quarantined_at: Mutex<Option<Instant>>,
    /// Quarantines and recoveries, for `GET /normalizers`.
    quarantines: AtomicU64,
    recoveries: AtomicU64,
    last_error: Mutex<Option<String>>,
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

/// One live module version.
pub struct Entry {
    /// The manifest's path, or `store:<name>` for a stored module.
    key: String,
    /// Where it came from.
    source: Source,
    manifest: Manifest,
    /// The content hash ([`content_hash`]).
    hash: String,
    loaded_at: DateTime<Utc>,
    route: Route,
    module: Arc<Module>,
    stats: ModuleStats,
}

/// A module that was refused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub manifest: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The live set of modules, in routing order.
#[derive(Default)]
struct Registry {
    entries: Vec<Arc<Entry>>,
}

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
    rejections: Mutex<BTreeMap<String, Rejection>>,
    /// The samples gate's last report per manifest, for the tester.
    reports: Mutex<BTreeMap<String, SamplesReport>>,
    /// The module store's live versions, as last read.
    store: Mutex<Vec<Arc<StoredModule>>>,
    /// Shadow versions from the store, by module name.
    shadows: ArcSwap<HashMap<String, Arc<Shadow>>>,
    /// The shadow versions the store last named, loaded or not.
    shadows_seen: Mutex<Vec<(String, String, String)>>,
    /// Serializes reloads (the watcher and the poller may both ask).
    reload_lock: Mutex<()>,
}

/// What `GET /normalizers` reports of one module.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// The contract version the component implements.
    pub contract: String,
    pub manifest: String,
    pub routes: Vec<String>,
    pub header: Option<String>,
    /// The key glob of `[match]`, if any.
    pub key: Option<String>,
    /// The value's member rules of `[match]`, as `path op value`.
    pub fields: Vec<String>,
    pub fallback: bool,
    pub loaded_at: DateTime<Utc>,
    pub calls: u64,
    pub errors: u64,
    pub quarantined: bool,
    /// Times the breaker opened, and times a trial batch closed it again.
    pub quarantines: u64,
    pub recoveries: u64,
    pub last_error: Option<String>,
    /// The limits its calls run under.
    pub memory_bytes: usize,
    pub deadline_ms: u64,
    pub max_output_bytes: usize,
    /// A version running in shadow beside this one, and what it changed.
    pub shadow: Option<ShadowInfo>,
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
                let answers = run(entry, &batch, &self.config, &self.metrics);
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

    /// The live modules.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let shadows = self.shadows.load();
        self.current
            .load()
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
        self.reports.lock().ok()?.get(&manifest.display().to_string()).cloned()
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
        if let Ok(mut store) = self.store.lock() {
            *store = live;
        }
        self.reload();
        let Ok(_guard) = self.reload_lock.lock() else { return };
        if let Ok(mut seen) = self.shadows_seen.lock() {
            *seen = shadows.iter().map(|m| (m.name.clone(), m.version.clone(), m.hash.clone())).collect();
        }
        let previous = self.shadows.load_full();
        let mut next = HashMap::new();
        for m in shadows {
            let key = format!("store-shadow:{}", m.name);
            if let Some(kept) = previous.get(&m.name).filter(|s| s.hash == m.hash) {
                next.insert(m.name.clone(), Arc::clone(kept));
                continue;
            }
            match self.prepare(&Source::Stored(Arc::clone(&m)), None, &key) {
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
                        r.insert(key.clone(), Rejection { manifest: key, reason, at: Utc::now() });
                    }
                }
            }
        }
        if let Ok(mut r) = self.rejections.lock() {
            let wanted: Vec<String> = self
                .shadows_seen
                .lock()
                .map(|s| s.iter().map(|(n, _, _)| format!("store-shadow:{n}")).collect())
                .unwrap_or_default();
            r.retain(|k, _| !k.starts_with("store-shadow:") || wanted.contains(k));
        }
        self.shadows.store(Arc::new(next));
    }

    /// The shadow versions the store last named (loaded or rejected): the
    /// store watcher fetches a shadow only when this changes.
    pub fn shadows_seen(&self) -> Vec<(String, String, String)> {
        self.shadows_seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The module store's versions this replica holds.
    pub fn store_versions(&self) -> Vec<Arc<StoredModule>> {
        self.store.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Makes exactly these manifests the live set, as a directory scan
    /// does (the tester judges with it). Blocking (compiles components).
    pub fn load_manifests(&self, manifests: Vec<PathBuf>) {
        let Ok(_guard) = self.reload_lock.lock() else { return };
        self.apply_locked(manifests.into_iter().map(Source::File).collect());
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
        let by_key: HashMap<&str, &Arc<Entry>> = previous.entries.iter().map(|e| (e.key.as_str(), e)).collect();
        let keys: Vec<String> = sources.iter().map(Source::key).collect();
        let mut prepared: HashMap<String, Arc<Entry>> = HashMap::new();
        let mut changed = false;
        let mut take = |source: &Source,
                        result: Result<Prepared, String>,
                        prepared: &mut HashMap<String, Arc<Entry>>| {
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
                    tracing::info!(module = %entry.module.label, hash = %entry.hash, manifest = %key, "Normalizer module loaded.");
                    if let Ok(mut r) = self.rejections.lock() {
                        r.remove(&key);
                    }
                    prepared.insert(key, Arc::new(*entry));
                    changed = true;
                }
                Err(reason) => {
                    let kept = by_key.get(key.as_str()).map(|e| e.module.label.clone());
                    tracing::error!(
                        manifest = %key, %reason, kept = kept.as_deref().unwrap_or("none"),
                        "Normalizer module rejected; the previous version stays live."
                    );
                    if let Ok(mut r) = self.rejections.lock() {
                        r.insert(key.clone(), Rejection { manifest: key.clone(), reason, at: Utc::now() });
                    }
                    if let Some(entry) = by_key.get(key.as_str()) {
                        prepared.insert(key, Arc::clone(entry));
                    }
                }
            }
        };
        // The store first: which names it serves decides the files' fate.
        for source in sources.iter().filter(|s| matches!(s, Source::Stored(_))) {
            let result = self.prepare(source, by_key.get(source.key().as_str()).copied(), &source.key());
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
                None => self.prepare(source, by_key.get(source.key().as_str()).copied(), &source.key()),
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
            r.retain(|k, _| keys.contains(k) || k.starts_with("store-shadow:"));
        }
        if changed {
            self.current.store(Arc::new(Registry { entries }));
        }
    }

    /// Reads, compiles and judges one source; its samples report is kept
    /// under `report_key`.
    fn prepare(&self, source: &Source, previous: Option<&Arc<Entry>>, report_key: &str) -> Result<Prepared, String> {
        let (manifest_text, bytes, samples_text) = match source {
            Source::File(path) => read_module_files(path)?,
            Source::Stored(m) => (m.manifest.clone(), m.component.clone(), m.samples.clone()),
        };
        let manifest: Manifest = toml::from_str(&manifest_text).map_err(|e| format!("invalid manifest: {e}"))?;
        let hash = content_hash(&bytes, &manifest_text, samples_text.as_deref());
        if let Some(previous) = previous
            && previous.hash == hash
        {
            return Ok(Prepared::Unchanged(Arc::clone(previous)));
        }

        let route = Route::new(&manifest.rules)?;
        let limits = manifest.limits.resolve(self.runtime.limits(), self.config.maxima)?;
        let module = self.runtime.load_with(&bytes, limits).map_err(|e| e.to_string())?;
        // The manifest names the code it ships: a component that calls
        // itself something else is the wrong file, or an unbumped version.
        if let Some(d) = module.descriptor()
            && (d.name != manifest.name || d.version != manifest.version)
        {
            return Err(format!(
                "the component describes itself as {}@{}, but the manifest says {}@{}; they must match",
                d.name, d.version, manifest.name, manifest.version
            ));
        }
        let loaded = Arc::new(Module {
            component: module,
            label: format!("{}@{}", manifest.name, manifest.version),
            fallback: manifest.fallback,
        });
        if let Some(text) = samples_text {
            let report = judge_samples(&loaded, &text);
            let verdict = report.verdict();
            if let Ok(mut reports) = self.reports.lock() {
                reports.insert(report_key.to_owned(), report);
            }
            verdict?;
        }
        Ok(Prepared::New(Box::new(Entry {
            key: source.key(),
            source: source.clone(),
            manifest,
            hash,
            loaded_at: Utc::now(),
            route,
            module: loaded,
            stats: ModuleStats::default(),
        })))
    }
}

/// The sandbox defaults and the compilation cache `args` configure.
pub fn runtime_for(args: &ModulesArgs) -> anyhow::Result<Runtime> {
    let limits = Limits {
        memory_bytes: args.module_memory_limit,
        deadline: args.module_deadline,
        max_output_bytes: args.module_max_output,
        ..Limits::default()
    };
    let cache = match &args.module_cache_dir {
        Some(dir) if dir.as_os_str() == "off" => CompileCache::Off,
        Some(dir) => CompileCache::Dir(dir.clone()),
        None => CompileCache::Default,
    };
    Runtime::with_cache(limits, &cache)
}

/// The most a manifest's `[limits]` may ask for, as `args` configure.
pub fn maxima(args: &ModulesArgs) -> Limits {
    Limits {
        memory_bytes: args.module_memory_max.max(args.module_memory_limit),
        deadline: args.module_deadline_max.max(args.module_deadline),
        max_output_bytes: args.module_max_output,
        ..Limits::default()
    }
}

/// Judges a version for the module store exactly as a replica will load it
/// (contract, limits, routes, samples gate), with this host's module
/// settings. Returns what to store, or every reason it would be refused.
/// Blocking (compiles the component).
pub fn validate_for_store(
    args: &ModulesArgs,
    manifest: String,
    component: Vec<u8>,
    samples: Option<String>,
) -> Result<StoredModule, String> {
    let parsed: Manifest = toml::from_str(&manifest).map_err(|e| format!("invalid manifest: {e}"))?;
    // The samples gate cannot be skipped by leaving the samples out.
    match (&parsed.samples, &samples) {
        (Some(file), None) => {
            return Err(format!("the manifest names samples ({}) but none were given", file.display()));
        }
        (None, Some(_)) => return Err("samples were given but the manifest names none".into()),
        _ => {}
    }
    let hash = content_hash(&component, &manifest, samples.as_deref());
    let candidate = Arc::new(StoredModule {
        name: parsed.name.clone(),
        version: parsed.version.clone(),
        manifest,
        component,
        samples,
        hash,
    });
    let runtime = runtime_for(args).map_err(|e| format!("{e:#}"))?;
    let judge = Modules::new(
        runtime,
        ModulesConfig {
            dir: None,
            quarantine_after: u64::MAX,
            quarantine_cooldown: args.module_quarantine_cooldown,
            maxima: maxima(args),
        },
    );
    if let Ok(_guard) = judge.reload_lock.lock() {
        judge.apply_locked(vec![Source::Stored(Arc::clone(&candidate))]);
    }
    if let Some(rejection) = judge.rejections().into_iter().next() {
        return Err(rejection.reason);
    }
    if judge.list().len() != 1 {
        return Err("the module did not load".into());
    }
    drop(judge);
    Arc::try_unwrap(candidate).map_err(|_| "the module is still in use".to_owned())
}

/// Where a module comes from.
#[derive(Clone)]
enum Source {
    /// A manifest in the modules directory, with files beside it.
    File(PathBuf),
    /// A version in the module store.
    Stored(Arc<StoredModule>),
}

impl Source {
    /// What names it in rejections, reports and `GET /normalizers`.
    fn key(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Stored(m) => format!("store:{}", m.name),
        }
    }

    /// Its place in the routing order.
    fn order(&self) -> String {
        match self {
            Source::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            Source::Stored(m) => format!("{}.toml", m.name),
        }
    }
}

/// The `name` a manifest file declares, if it can be read.
fn manifest_name(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    toml::from_str::<Manifest>(&text).ok().map(|m| m.name)
}

/// A manifest's text, its component's bytes and its samples' text.
pub fn read_module_files(path: &Path) -> Result<(String, Vec<u8>, Option<String>), String> {
    let manifest_text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the manifest: {e}"))?;
    let manifest: Manifest = toml::from_str(&manifest_text).map_err(|e| format!("invalid manifest: {e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let component_path = base.join(&manifest.component);
    let bytes = std::fs::read(&component_path)
        .map_err(|e| format!("cannot read the component {}: {e}", component_path.display()))?;
    let samples_text = match &manifest.samples {
        Some(s) => Some(
            std::fs::read_to_string(base.join(s))
                .map_err(|e| format!("cannot read the samples {}: {e}", s.display()))?,
        ),
        None => None,
    };
    Ok((manifest_text, bytes, samples_text))
}

/// First 32 hex digits (128 bits) of the SHA-256 of a module's component,
/// manifest and samples, each prefixed by its length so that no two
/// different triples hash alike: what tells one version's content from
/// another's.
pub fn content_hash(component: &[u8], manifest: &str, samples: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for part in [component, manifest.as_bytes()] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    match samples {
        Some(text) => {
            hasher.update([1]);
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
        None => hasher.update([0]),
    }
    hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
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

enum Prepared {
    Unchanged(Arc<Entry>),
    New(Box<Entry>),
}

/// How many sample failures a rejection reports.
const SAMPLE_FAILURES_SHOWN: usize = 5;

/// One sample line as the gate judged it.
#[derive(Debug, Clone)]
pub struct SampleResult {
    /// Line number in the samples file (from 1).
    pub line: usize,
    pub sample: Sample,
    /// The module's answer (with its fallback applied); None when the gate
    /// stopped before this sample.
    pub answer: Option<Normalized>,
    /// How the module failed on it, if it did.
    pub failure: Option<String>,
    /// The module answered `unsupported` (why): live, the next matching
    /// module gets the record; `answer` holds the built-in default's fields.
    pub passed_on: Option<String>,
    /// Differences from the sample's `expected` fields.
    pub mismatches: Vec<String>,
    /// What the module printed while normalizing this sample alone.
    pub output: Vec<String>,
}

/// A module's samples, judged: the one verdict both the load-time gate and
/// `notification-host normalize` give.
#[derive(Debug, Clone, Default)]
pub struct SamplesReport {
    pub samples: Vec<SampleResult>,
    /// Lines that are not valid samples: line number and reason.
    pub malformed: Vec<(usize, String)>,
    /// Set when the gate stopped after this many failures in a row.
    pub stopped_after: Option<u64>,
}

impl SamplesReport {
    /// Every reason the samples fail, as lines.
    pub fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> =
            self.malformed.iter().map(|(line, reason)| format!("samples line {line}: {reason}")).collect();
        if let Some(n) = self.stopped_after {
            failures.push(format!("stopped after {n} failures in a row"));
        }
        for s in &self.samples {
            if let Some(f) = &s.failure {
                failures.push(format!("line {}: the module failed: {f}", s.line));
            }
            failures.extend(s.mismatches.iter().map(|m| format!("line {}: {m}", s.line)));
        }
        failures
    }

    /// Ok when every sample parsed, ran and matched.
    pub fn verdict(&self) -> Result<(), String> {
        let failures = self.failures();
        if failures.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = failures.iter().take(SAMPLE_FAILURES_SHOWN + 1).map(String::as_str).collect();
        Err(format!("{} sample failures: {}", failures.len(), shown.join("; ")))
    }
}

/// Runs a module's golden samples as one batch, the way the pipeline calls
/// it; every line must parse, and every sample run and match.
pub fn judge_samples(module: &Module, text: &str) -> SamplesReport {
    let mut report = SamplesReport::default();
    let mut parsed = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match samples::parse_line(line) {
            Ok(sample) => parsed.push((i + 1, sample)),
            Err(reason) => report.malformed.push((i + 1, reason)),
        }
    }
    if !report.malformed.is_empty() {
        return report;
    }
    let records: Vec<&Record> = parsed.iter().map(|(_, s)| &s.record).collect();
    // Any failure rejects the version; a handful is enough to show why, and
    // stopping there keeps a module that spins on every sample from holding
    // the reload for a deadline per sample.
    let mut breaker = Breaker::new(0, SAMPLE_FAILURES_SHOWN as u64);
    let run = module.normalize(&records, &mut breaker);
    if breaker.tripped() {
        report.stopped_after = Some(breaker.in_a_row());
    }
    let mut answers = run.answers.into_iter();
    for (i, (line, sample)) in parsed.into_iter().enumerate() {
        // `unsupported` is an answer, not a failure: live, the record goes on
        // to the next module; alone, it gets the built-in default's fields.
        let (answer, failure, passed_on) = match answers.next() {
            Some((normalized, Some(CallError::Unsupported(why)))) => (Some(normalized), None, Some(why)),
            Some((normalized, error)) => (Some(normalized), error.map(|e| e.to_string()), None),
            None => (None, None, None),
        };
        let mismatches = match (&answer, &sample.expected, &failure) {
            (Some(a), Some(expected), None) => samples::mismatches(expected, &a.fields),
            _ => Vec::new(),
        };
        let output = run.output.iter().filter(|o| o.len == 1 && o.first == i).map(|o| o.text.clone()).collect();
        report.samples.push(SampleResult { line, sample, answer, failure, passed_on, mismatches, output });
    }
    // A failing sample that ran inside a batch printed into the batch's
    // output; run it alone to show what it prints itself.
    let batch_printed = run.output.iter().any(|o| o.len > 1);
    if batch_printed {
        for s in report.samples.iter_mut().filter(|s| s.output.is_empty() && !s.mismatches.is_empty()) {
            let alone = module.normalize(&[&s.sample.record], &mut Breaker::unlimited());
            s.output = alone.output.into_iter().map(|o| o.text).collect();
        }
    }
    report
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
fn run(entry: &Entry, batch: &[&Record], config: &ModulesConfig, metrics: &Metrics) -> Vec<Option<Normalized>> {
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

fn info(e: &Entry) -> ModuleInfo {
    ModuleInfo {
        name: e.manifest.name.clone(),
        version: e.manifest.version.clone(),
        hash: e.hash.clone(),
        contract: e.module.component.contract().to_owned(),
        manifest: e.key.clone(),
        routes: e.manifest.rules.topics.clone(),
        header: e.manifest.rules.header.clone(),
        key: e.manifest.rules.key.clone(),
        fields: e
            .manifest
            .rules
            .fields
            .iter()
            .map(|(path, rule)| match rule {
                FieldRule::Equals(v) | FieldRule::Spec(FieldSpec { equals: Some(v), .. }) => format!("{path} = {v:?}"),
                FieldRule::Spec(FieldSpec { glob: Some(g), .. }) => format!("{path} glob {g:?}"),
                FieldRule::Spec(FieldSpec { present, .. }) => format!("{path} present = {}", present.unwrap_or(true)),
            })
            .collect(),
        fallback: e.manifest.fallback,
        loaded_at: e.loaded_at,
        calls: e.stats.calls.load(Ordering::Relaxed),
        errors: e.stats.errors.load(Ordering::Relaxed),
        quarantined: e.stats.quarantined_at.lock().ok().is_some_and(|q| q.is_some()),
        quarantines: e.stats.quarantines.load(Ordering::Relaxed),
        recoveries: e.stats.recoveries.load(Ordering::Relaxed),
        last_error: e.stats.last_error.lock().ok().and_then(|l| l.clone()),
        memory_bytes: e.module.component.limits().memory_bytes,
        deadline_ms: u64::try_from(e.module.component.limits().deadline.as_millis()).unwrap_or(u64::MAX),
        max_output_bytes: e.module.component.limits().max_output_bytes,
        shadow: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, headers: &[(&str, &str)]) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            headers: headers.iter().map(|(k, v)| crate::record::Header::new(*k, Some(v.as_bytes().to_vec()))).collect(),
            value: None,
        }
    }

    fn hits(route: &Route, record: Record) -> bool {
        let mut doc = Doc::new(&record);
        route.matches(&record, &mut doc)
    }

    #[test]
    fn routes_match_globs_regexes_and_headers() {
        let r = Route::new(&MatchRules {
            topics: vec!["order_*".into(), "re:^pay(ment)?-.*$".into()],
            header: None,
            key: None,
            fields: BTreeMap::new(),
        })
        .unwrap();
        assert!(hits(&r, record("order_events", &[])));
        assert!(hits(&r, record("payment-events", &[])));
        assert!(!hits(&r, record("user_events", &[])));
        let r = Route::new(&MatchRules {
            topics: vec!["*".into()],
            header: Some("producer=payment-service".into()),
            key: None,
            fields: BTreeMap::new(),
        })
        .unwrap();
        assert!(hits(&r, record("x", &[("producer", "payment-service")])));
        assert!(!hits(&r, record("x", &[("producer", "order-service")])));
        assert!(!hits(&r, record("x", &[])));
        assert!(Route::new(&MatchRules { topics: vec![], header: None, key: None, fields: BTreeMap::new() }).is_err());
        assert!(
            Route::new(&MatchRules { topics: vec!["re:(".into()], header: None, key: None, fields: BTreeMap::new() })
                .is_err()
        );
        assert!(
            Route::new(&MatchRules {
                topics: vec!["x".into()],
                header: Some("novalue".into()),
                key: None,
                fields: BTreeMap::new()
            })
            .is_err()
        );
    }

    #[test]
    fn manifests_parse_strictly() {
        let m: Manifest = toml::from_str(
            "name = \"a\"\nversion = \"1.2.0\"\ncomponent = \"a.wasm\"\nfallback = true\n[match]\ntopics = [\"*\"]\n",
        )
        .unwrap();
        assert_eq!(m.name, "a");
        assert!(m.fallback);
        assert!(
            toml::from_str::<Manifest>(
                "name = \"a\"\nversion = \"1\"\ncomponent = \"a.wasm\"\nsurprise = 1\n[match]\ntopics = [\"*\"]\n"
            )
            .is_err()
        );
    }
}
