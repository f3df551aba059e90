//! The load gate: a module version is compiled, checked against the
//! contract and its own manifest, and run over its golden samples before it
//! may go live; the same verdict the tester and the module store give.

use std::sync::Arc;

use chrono::Utc;

use super::manifest::{Manifest, content_hash, read_module_files};
use super::module::Module;
use super::quarantine::ModuleStats;
use super::registry::{Entry, Prepared, Source};
use super::routing::Route;
use super::{Modules, ModulesConfig};
use crate::config::ModulesArgs;
use crate::record::{Normalized, Record};
use anyhow::Context as _;
use notification_artifact::Key;

use crate::runtime::{Breaker, Cache, CallError, Compiler, Limits, Runtime};
use crate::samples::{self, Sample};
use crate::storage::module_store::StoredModule;

/// The sandbox defaults, the compiler budget and the compilation cache
/// `args` configure: components compile in a child process of this
/// executable, within `MODULE_COMPILE_MEMORY` and `MODULE_COMPILE_TIMEOUT`.
pub fn runtime_for(args: &ModulesArgs) -> anyhow::Result<Runtime> {
    let limits = Limits {
        memory_bytes: args.module_memory_limit,
        deadline: args.module_deadline,
        max_output_bytes: args.module_max_output,
        ..Limits::default()
    };
    let exe = match &args.module_compiler {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("cannot find this executable to compile modules with")?,
    };
    let compiler =
        Compiler::Child { exe, memory_bytes: args.module_compile_memory, timeout: args.module_compile_timeout };
    let key = match args.module_cache_key.as_deref().filter(|k| !k.is_empty()) {
        Some(secret) => Key::from_secret(secret.as_bytes()),
        None => Key::PUBLIC,
    };
    let dir = match &args.module_cache_dir {
        Some(dir) if dir.as_os_str() == "off" => None,
        Some(dir) => Some(dir.clone()),
        None => default_cache_dir(),
    };
    Runtime::with(limits, compiler, dir.map(|dir| Cache { dir, key }))
}

/// `$XDG_CACHE_HOME/notification-host/modules`, else under `$HOME/.cache`.
fn default_cache_dir() -> Option<std::path::PathBuf> {
    let base =
        std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()).map(std::path::PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| std::path::PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("notification-host").join("modules"))
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
    judge.apply(vec![Source::Stored(Arc::clone(&candidate))]);
    if let Some(rejection) = judge.rejections().into_iter().next() {
        return Err(rejection.reason);
    }
    if judge.list().len() != 1 {
        return Err("the module did not load".into());
    }
    drop(judge);
    Arc::try_unwrap(candidate).map_err(|_| "the module is still in use".to_owned())
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

/// Reads, compiles and judges one source: the manifest parses, its routes
/// compile, its limits are within `maxima`, the component loads under them
/// and names itself as the manifest does, and its samples pass. An
/// unchanged source (same content hash as `previous`) is not judged again.
/// Also returns the samples report when samples were judged.
pub(super) fn prepare(
    runtime: &Runtime,
    maxima: Limits,
    source: &Source,
    previous: Option<&Arc<Entry>>,
) -> (Result<Prepared, String>, Option<SamplesReport>) {
    let mut report = None;
    let result = judge(runtime, maxima, source, previous, &mut report);
    (result, report)
}

fn judge(
    runtime: &Runtime,
    maxima: Limits,
    source: &Source,
    previous: Option<&Arc<Entry>>,
    report: &mut Option<SamplesReport>,
) -> Result<Prepared, String> {
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
    let limits = manifest.limits.resolve(runtime.limits(), maxima)?;
    let module = runtime.load_with(&bytes, limits).map_err(|e| e.to_string())?;
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
        let judged = judge_samples(&loaded, &text);
        let verdict = judged.verdict();
        *report = Some(judged);
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
