//! The tester with manifests: the live host's load path, reported per sample.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{bless, read_lines, write_line};
use crate::config::NormalizeArgs;
use crate::modules::{ModuleInfo, Modules, ModulesConfig, SamplesReport};
use crate::runtime::Runtime;
use crate::samples::{self, OutputLine};

/// Judges the manifests once (blessing first when asked) and reports.
pub fn run(args: &NormalizeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let runtime = runtime(args)?;
    if args.bless {
        let modules = judge(args, &runtime)?;
        let mut blessed = 0;
        for manifest in manifests(args)? {
            if let Some(report) = modules.samples_report(&manifest) {
                blessed += bless::write(&manifest, &report, out)?;
            }
        }
        writeln!(out, "blessed {blessed} sample lines; judging again\n")?;
    }
    let modules = judge(args, &runtime)?;
    report(args, &modules, out)
}

/// Runs [`run`] now and again after every change to a file beside the
/// manifests, until interrupted.
pub fn watch(args: &NormalizeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use notify::Watcher as _;
    let dirs: Vec<PathBuf> = match (&args.manifest, &args.dir) {
        (Some(m), _) => vec![parent(m)],
        (None, Some(d)) => vec![d.clone()],
        (None, None) => anyhow::bail!("--watch needs --manifest or --dir"),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .context("cannot watch for changes")?;
    for dir in &dirs {
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
    }
    loop {
        if let Err(error) = run(args, out) {
            writeln!(out, "error: {error:#}")?;
        }
        writeln!(out, "watching {} for changes (Ctrl-C to stop)", dirs[0].display())?;
        out.flush()?;
        rx.recv().context("the watcher stopped")?;
        // A build writes several files; wait for it to settle.
        std::thread::sleep(Duration::from_millis(300));
        while rx.try_recv().is_ok() {}
        writeln!(out, "\n--- change seen, judging again ---")?;
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn runtime(args: &NormalizeArgs) -> anyhow::Result<Runtime> {
    crate::modules::runtime_for(&args.modules)
}

/// The manifests to judge, in the live host's (file-name) order.
fn manifests(args: &NormalizeArgs) -> anyhow::Result<Vec<PathBuf>> {
    if let Some(manifest) = &args.manifest {
        anyhow::ensure!(manifest.is_file(), "no manifest at {}", manifest.display());
        return Ok(vec![manifest.clone()]);
    }
    let dir = args.dir.as_deref().context("--manifest or --dir")?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    found.sort();
    Ok(found)
}

/// Loads the manifests exactly as the live host does.
fn judge(args: &NormalizeArgs, runtime: &Runtime) -> anyhow::Result<Arc<Modules>> {
    let m = &args.modules;
    let config = ModulesConfig {
        dir: None,
        quarantine_after: u64::MAX,
        quarantine_cooldown: m.module_quarantine_cooldown,
        maxima: crate::modules::maxima(m),
    };
    let modules = Arc::new(Modules::new(runtime.clone(), config));
    modules.load_manifests(manifests(args)?);
    Ok(modules)
}

fn report(args: &NormalizeArgs, modules: &Modules, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let live = modules.list();
    let rejections = modules.rejections();
    let mut ok = true;
    for manifest in manifests(args)? {
        let key = manifest.display().to_string();
        let info = live.iter().find(|i| i.manifest == key);
        match (info, rejections.iter().find(|r| r.manifest == key)) {
            (Some(info), None) => writeln!(out, "PASS {}@{}  ({key})\n     {}", info.name, info.version, limits(info))?,
            (_, Some(rejection)) => {
                ok = false;
                writeln!(out, "FAIL {key}\n     rejected at load: {}", rejection.reason)?;
            }
            (None, None) => {
                ok = false;
                writeln!(out, "FAIL {key}\n     not loaded")?;
            }
        }
        match modules.samples_report(&manifest) {
            Some(report) => samples_table(modules, info, &report, out)?,
            None => writeln!(out, "     no samples ran")?,
        }
        writeln!(out)?;
    }
    if let Some(input) = &args.input {
        ok &= routed_input(modules, input, out)?;
    }
    let verdict = if ok { "every module would go live" } else { "some modules would be rejected" };
    writeln!(out, "{verdict}")?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn limits(info: &ModuleInfo) -> String {
    format!(
        "contract {} · memory {} MiB · deadline {} ms · answer cap {} bytes{}",
        info.contract,
        info.memory_bytes >> 20,
        info.deadline_ms,
        info.max_output_bytes,
        if info.fallback { " · fallback on" } else { "" }
    )
}

fn samples_table(
    modules: &Modules,
    info: Option<&ModuleInfo>,
    report: &SamplesReport,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for (line, reason) in &report.malformed {
        writeln!(out, "     line {line}: not a valid sample: {reason}")?;
    }
    let own = info.map(|i| format!("{}@{}", i.name, i.version));
    for s in &report.samples {
        let verdict = match (&s.answer, &s.failure, s.mismatches.is_empty()) {
            (None, _, _) => "not run",
            (Some(_), Some(_), _) => "FAILED",
            (Some(_), None, false) => "MISMATCH",
            (Some(_), None, true) => "ok",
        };
        let routed = modules.route(&s.sample.record).unwrap_or_else(crate::modules::builtin_label);
        let note = match &own {
            Some(own) if *own != routed => format!("  (in this set, routed to {routed})"),
            _ => String::new(),
        };
        writeln!(out, "     line {:<4} {:<24} {verdict}{note}", s.line, s.sample.record.topic)?;
        if let Some(failure) = &s.failure {
            writeln!(out, "          the module failed: {failure}")?;
        }
        if let Some(why) = &s.passed_on {
            writeln!(
                out,
                "          unsupported ({why}): passed on to the next matching module, or the built-in default"
            )?;
        }
        for m in &s.mismatches {
            writeln!(out, "          {m}")?;
        }
        for text in &s.output {
            writeln!(out, "          the module printed:")?;
            for l in text.lines() {
                writeln!(out, "          | {l}")?;
            }
        }
    }
    if let Some(n) = report.stopped_after {
        writeln!(out, "     stopped after {n} failures in a row; the rest did not run")?;
    }
    Ok(())
}

/// The input file's records through the live routing, one JSON line each.
fn routed_input(modules: &Modules, input: &Path, out: &mut dyn Write) -> anyhow::Result<bool> {
    let lines = read_lines(Some(input))?;
    let mut ok = true;
    let mut parsed = Vec::new();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match samples::parse_line(line) {
            Ok(sample) => parsed.push((i + 1, sample)),
            Err(reason) => {
                ok = false;
                writeln!(out, "{}: line {}: not a valid sample: {reason}", input.display(), i + 1)?;
            }
        }
    }
    let records: Vec<_> = parsed.iter().map(|(_, s)| s.record.clone()).collect();
    let answers = modules.normalize(&records);
    writeln!(out, "{}: {} records through the routing:", input.display(), records.len())?;
    for ((line, sample), answer) in parsed.iter().zip(&answers) {
        write_line(out, &OutputLine::normalized(answer))?;
        if let Some(expected) = &sample.expected {
            for m in samples::mismatches(expected, &answer.fields) {
                ok = false;
                writeln!(out, "{}: line {line}: {m}", input.display())?;
            }
        }
    }
    Ok(ok)
}
