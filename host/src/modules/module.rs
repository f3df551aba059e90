//! Choosing and running a normalizer for a batch of records.
//!
//! The built-in default runs natively. A module runs in the WASM runtime; when
//! it fails for a record, that record keeps the built-in default's fields and
//! the failure is recorded next to it, so a broken module never loses data.

use std::sync::Arc;

use crate::record::{Fields, Normalized, Record};
use crate::runtime::{Breaker, CallError, Component, Output};

/// `name@version` of the built-in default rules.
pub fn builtin_label() -> String {
    format!("{}@{}", normalizer_rules::NAME, normalizer_rules::VERSION)
}

/// The built-in default's answer for one record, with the placeholders it
/// left out.
pub fn builtin(record: &Record) -> Normalized {
    let explained = normalizer_rules::normalize_explained(record.value.as_deref());
    Normalized {
        fields: explained.fields,
        normalizer: builtin_label(),
        error: None,
        notes: placeholder_notes(&explained.placeholders),
    }
}

/// What the row's ingest note says of placeholders left out.
pub fn placeholder_notes(placeholders: &[normalizer_rules::Placeholder]) -> Vec<String> {
    placeholders
        .iter()
        .map(|p| {
            let shown: String = p.value.chars().take(40).collect();
            format!("{} {:?} is a placeholder, stored as absent", p.field, shown)
        })
        .collect()
}

/// The built-in default's fields for one record.
pub fn builtin_fields(record: &Record) -> Fields {
    normalizer_rules::normalize(record.value.as_deref())
}

/// What a record gets when its module does not answer for it (the module
/// failed on it, or is quarantined): the built-in default's fields, under the
/// module's name, with why. The one place a module's failure becomes a row.
pub fn fallback(record: &Record, module: &str, why: impl std::fmt::Display) -> Normalized {
    let explained = normalizer_rules::normalize_explained(record.value.as_deref());
    Normalized {
        fields: explained.fields,
        normalizer: module.to_owned(),
        error: Some(format!("{why}; fields from {}", builtin_label())),
        notes: placeholder_notes(&explained.placeholders),
    }
}

/// A normalizer the pipeline can run.
#[derive(Clone)]
pub enum Normalizer {
    /// The built-in default rules, native.
    Builtin,
    /// A WASM component.
    Module(Arc<Module>),
}

/// A normalizer module: a component together with how it is named and used.
pub struct Module {
    pub component: Component,
    /// `name@version`, as recorded on every row it produces.
    pub label: String,
    /// Fill the fields the module leaves empty from the built-in default.
    pub fallback: bool,
}

impl Normalizer {
    /// `name@version` of this normalizer.
    pub fn label(&self) -> String {
        match self {
            Normalizer::Builtin => builtin_label(),
            Normalizer::Module(m) => m.label.clone(),
        }
    }

    /// Normalizes `records`, one answer per record, in order. CPU-bound: run it
    /// off the async runtime's worker threads.
    pub fn normalize(&self, records: &[Record]) -> Vec<Normalized> {
        match self {
            Normalizer::Builtin => records.iter().map(builtin).collect(),
            Normalizer::Module(loaded) => {
                let refs: Vec<&Record> = records.iter().collect();
                let mut answers: Vec<Normalized> =
                    loaded.normalize(&refs, &mut Breaker::unlimited()).answers.into_iter().map(|(n, _)| n).collect();
                // An unlimited breaker never stops early; should it, the rest
                // still gets an answer.
                answers.extend(records[answers.len()..].iter().map(builtin));
                answers
            }
        }
    }
}

/// A module's answers for records, and what it printed on the way.
pub struct ModuleRun {
    /// One per record, in order, with the module's failure if any (the
    /// fields then come from the built-in default). Ends early if the
    /// breaker tripped.
    pub answers: Vec<(Normalized, Option<CallError>)>,
    /// What the module's calls printed (see [`Output`]).
    pub output: Vec<Output>,
}

impl Module {
    /// Runs the module over `records` until `breaker` trips.
    pub fn normalize(&self, records: &[&Record], breaker: &mut Breaker) -> ModuleRun {
        let run = self.component.normalize(records, breaker);
        let answers = run
            .answers
            .into_iter()
            .zip(records)
            .map(|(answer, record)| match answer {
                Ok(mut fields) => {
                    // No normalizer's placeholder becomes an id: a module
                    // answering "unknown" has not named an order either.
                    let mut notes = placeholder_notes(&normalizer_rules::strip_placeholders(&mut fields));
                    if self.fallback {
                        let builtin = builtin(record);
                        fields.fill_from(builtin.fields);
                        notes.extend(builtin.notes);
                    }
                    (Normalized { fields, normalizer: self.label.clone(), error: None, notes }, None)
                }
                Err(error) => (fallback(record, &self.label, &error), Some(error)),
            })
            .collect();
        ModuleRun { answers, output: run.output }
    }
}
