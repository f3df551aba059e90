//! The {{name}} normalizer: the host's built-in answer, refined where this
//! producer differs from the common conventions.

wit_bindgen::generate!({ path: "wit", world: "normalizer" });

use exports::notification::normalizer::normalize::Guest;
use notification::normalizer::host::builtin_fields;
use notification::normalizer::types::{Descriptor, Error, Fields, KafkaRecord};
use serde_json::Value;

struct Normalizer;

impl Guest for Normalizer {
    fn describe() -> Descriptor {
        Descriptor { name: "{{name}}".into(), version: "0.1.0".into() }
    }

    fn normalize(record: KafkaRecord) -> Result<Fields, Error> {
        // What the host would store without this module.
        let mut fields = builtin_fields(&record);
        let Some(doc) = record.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()) else {
            // Not JSON (or a tombstone): the built-in answer stands.
            return Ok(fields);
        };
        // This producer names the runner `courier_id`.
        if fields.runner_id.is_none() {
            fields.runner_id = doc.pointer("/payload/courier_id").and_then(Value::as_str).map(str::to_owned);
        }
        Ok(fields)
    }

    fn normalize_batch(records: Vec<KafkaRecord>) -> Vec<Result<Fields, Error>> {
        records.into_iter().map(Self::normalize).collect()
    }
}

export!(Normalizer);
