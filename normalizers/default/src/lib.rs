//! The built-in default rules as a normalizer component.
//!
//! The host runs the same rules natively; this component exists so that teams
//! have a complete, working template for their own normalizers, and so that
//! the golden tests can prove a component and the host agree on every sample.
//! Copy this crate, change `fields_for`, and keep the rest.

wit_bindgen::generate!({
    path: "../../wit/since_v1.0.0",
    world: "normalizer",
});

use exports::notification::normalizer::normalize::Guest;
use notification::normalizer::types::{Descriptor, Error, Fields, KafkaRecord};

struct DefaultNormalizer;

/// The rules this component applies to one record.
fn fields_for(record: &KafkaRecord) -> Fields {
    let f = normalizer_rules::normalize(record.value.as_deref());
    Fields {
        customer_id: f.customer_id,
        runner_id: f.runner_id,
        order_id: f.order_id,
        event_type: f.event_type,
        correlation_id: f.correlation_id,
        source_service: f.source_service,
        status: f.status,
    }
}

impl Guest for DefaultNormalizer {
    fn describe() -> Descriptor {
        Descriptor { name: normalizer_rules::NAME.to_owned(), version: normalizer_rules::VERSION.to_owned() }
    }

    fn normalize(record: KafkaRecord) -> Result<Fields, Error> {
        Ok(fields_for(&record))
    }

    fn normalize_batch(records: Vec<KafkaRecord>) -> Vec<Result<Fields, Error>> {
        records.iter().map(|r| Ok(fields_for(r))).collect()
    }
}

export!(DefaultNormalizer);
