//! `notification-host normalize`: the normalizer tester.
//!
//! Without a manifest it runs the built-in default (or a bare component)
//! over sample records and prints one JSON line per input line, in order.
//! With `expected` fields in the samples it is a golden test: every mismatch
//! is reported on standard error and the command fails, as it does when any
//! line is malformed.
//!
//! With `--manifest` or `--dir` it loads the modules through the very code
//! the live host uses ([`Modules::load_manifests`]), so its verdict is the
//! load-time verdict: contract, limits, samples gate. It prints, per module,
//! the verdict and every sample with the module the live routing would send
//! it to, what failed, and what the module printed; `--bless` records the
//! observed fields as expected, `--watch` runs again on every change.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::NormalizeArgs;
use crate::modules::{Module, Normalizer};
use crate::record::Normalized;
use crate::runtime::{Limits, Runtime};
use crate::samples::{self, OutputLine, Sample};

mod bless;
mod suite;

/// Runs the command, writing results to `out` and the report to `report`.
pub fn run(args: &NormalizeArgs, out: &mut dyn Write, report: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if args.manifest.is_none() && args.dir.is_none() {
        anyhow::ensure!(!args.bless && !args.watch, "--bless and --watch need --manifest or --dir");
        return bare(args, out, report);
    }
    if !args.watch {
        return suite::run(args, out);
    }
    suite::watch(args, out)
}

/// The built-in default, or a bare component, over the input's samples.
fn bare(args: &NormalizeArgs, out: &mut dyn Write, report: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let normalizer = match &args.module {
        Some(path) => {
            let runtime = Runtime::new(Limits::default())?;
            let module = runtime.load_file(path)?;
            let label = match module.descriptor() {
                Some(d) => format!("{}@{}", d.name, d.version),
                None => path.display().to_string(),
            };
            Normalizer::Module(Arc::new(Module { component: module, label, fallback: false }))
        }
        None => Normalizer::Builtin,
    };

    let lines = read_lines(args.input.as_deref())?;
    // Parse everything first so that a module sees the records as one batch,
    // as it does in the pipeline.
    let parsed: Vec<(usize, Result<Sample, String>)> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, samples::parse_line(line)))
        .collect();
    let records: Vec<_> = parsed.iter().filter_map(|(_, p)| p.as_ref().ok()).map(|s| s.record.clone()).collect();
    let mut results = normalizer.normalize(&records).into_iter();

    let mut out = BufWriter::new(out);
    let (mut malformed, mut mismatched) = (0usize, 0usize);
    for (line_no, parsed) in &parsed {
        match parsed {
            Ok(sample) => {
                let normalized: Normalized =
                    results.next().context("the normalizer answered fewer records than it was given")?;
                write_line(&mut out, &OutputLine::normalized(&normalized))?;
                if let Some(expected) = &sample.expected {
                    let diffs = samples::mismatches(expected, &normalized.fields);
                    if !diffs.is_empty() {
                        mismatched += 1;
                        for diff in diffs {
                            writeln!(report, "line {line_no}: {diff}")?;
                        }
                    }
                }
            }
            Err(reason) => {
                malformed += 1;
                let message = format!("line {line_no}: {reason}");
                writeln!(report, "{message}")?;
                write_line(&mut out, &OutputLine::malformed(&message))?;
            }
        }
    }
    out.flush()?;
    let total = parsed.len();
    if malformed + mismatched > 0 {
        writeln!(report, "{total} samples: {mismatched} mismatched, {malformed} malformed")?;
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn write_line(out: &mut (impl Write + ?Sized), line: &OutputLine<'_>) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Reads the input as lines. Invalid UTF-8 in a line makes only that line
/// malformed (it is replaced, then fails to parse as a sample).
fn read_lines(input: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = match input {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    reader
        .split(b'\n')
        .map(|line| {
            let line = line.context("failed to read the samples")?;
            Ok(String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned())
        })
        .collect()
}
