//! `normalize --bless`: the observed fields become each sample's `expected`.
//!
//! Every other member of a sample line keeps its text and its place; only
//! `expected` is replaced (or appended). A sample the module failed on keeps
//! its line, and is reported.

use std::fmt;
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::modules::{Manifest, SamplesReport};
use crate::record::Fields;
use crate::samples::{self, FIELD_NAMES};

/// A JSON object's members in the order written.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((k, v));
                }
                Ok(Ordered(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Rewrites the samples file of `manifest` from `report`; returns how many
/// lines changed, and prints each change.
pub fn write(manifest: &Path, report: &SamplesReport, out: &mut dyn Write) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let parsed: Manifest = toml::from_str(&text).with_context(|| format!("invalid manifest {}", manifest.display()))?;
    let Some(samples_file) = parsed.samples else { return Ok(0) };
    let path = manifest.parent().unwrap_or(Path::new(".")).join(samples_file);
    if !report.malformed.is_empty() {
        writeln!(out, "not blessing {}: it has lines that are not valid samples", path.display())?;
        return Ok(0);
    }
    let original = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let mut changed = 0;
    for s in &report.samples {
        let Some(line) = lines.get_mut(s.line - 1) else { continue };
        let answer = match (&s.answer, &s.failure) {
            (Some(answer), None) => answer,
            (_, Some(failure)) => {
                writeln!(out, "{}:{}: left as it is, the module failed: {failure}", path.display(), s.line)?;
                continue;
            }
            (None, None) => continue,
        };
        let before = s.sample.expected.clone().unwrap_or_default();
        let diffs: Vec<String> = FIELD_NAMES
            .iter()
            .filter_map(|name| {
                let now = samples::field(&answer.fields, name);
                match before.get(*name) {
                    Some(was) if was.as_deref() == now => None,
                    Some(was) => Some(format!("{name}: {} → {}", show(was.as_deref()), show(now))),
                    None => Some(format!("{name}: (not expected) → {}", show(now))),
                }
            })
            .collect();
        if diffs.is_empty() {
            continue;
        }
        *line = with_expected(line, &answer.fields)
            .with_context(|| format!("{}:{}: cannot rewrite the line", path.display(), s.line))?;
        changed += 1;
        writeln!(out, "{}:{}: {}", path.display(), s.line, diffs.join("; "))?;
    }
    if changed > 0 {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(changed)
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "null".to_owned(), |s| format!("{s:?}"))
}

/// The line with `expected` set to `fields`, every other member unchanged.
fn with_expected(line: &str, fields: &Fields) -> anyhow::Result<String> {
    let Ordered(mut members) = serde_json::from_str(line)?;
    // In the contract's field order, spaced like the rest of the line.
    let mut pairs = Vec::with_capacity(FIELD_NAMES.len());
    for name in FIELD_NAMES {
        pairs.push(format!(
            "{}: {}",
            serde_json::to_string(name)?,
            serde_json::to_string(&samples::field(fields, name))?
        ));
    }
    let expected = RawValue::from_string(format!("{{{}}}", pairs.join(", ")))?;
    match members.iter_mut().find(|(k, _)| k == "expected") {
        Some((_, v)) => *v = expected,
        None => members.push(("expected".to_owned(), expected)),
    }
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| Ok(format!("{}: {}", serde_json::to_string(k)?, v.get())))
        .collect::<Result<_, serde_json::Error>>()?;
    Ok(format!("{{{}}}", body.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_is_replaced_in_place_and_the_rest_kept_verbatim() {
        let fields = Fields { order_id: Some("42".into()), ..Fields::default() };
        let line = r#"{"topic": "t", "value_text": "{\"n\": 1.50}", "expected": {"order_id": "1"}, "key": "k"}"#;
        let out = with_expected(line, &fields).unwrap();
        assert!(out.starts_with(r#"{"topic": "t", "value_text": "{\"n\": 1.50}", "expected": {"#), "{out}");
        assert!(out.ends_with(r#", "key": "k"}"#), "{out}");
        let sample = samples::parse_line(&out).unwrap();
        let expected = sample.expected.unwrap();
        assert_eq!(expected.get("order_id"), Some(&Some("42".to_owned())));
        assert_eq!(expected.get("status"), Some(&None));
        assert_eq!(expected.len(), 7);
        let appended = with_expected(r#"{"topic": "t"}"#, &fields).unwrap();
        assert!(appended.starts_with(r#"{"topic": "t", "expected": "#), "{appended}");
    }
}
