//! The campus delivery platform's conventions, on top of the built-in
//! default rules (which this module runs first, then refines):
//!
//! - `authorize_payment` commands carry the customer as
//!   `payload.customer.clerkUserId`;
//! - on `user_commands`, `payload.user_id` is the customer;
//! - `payload.saga_id` is the correlation id when the envelope has none;
//! - the `ORDER_*` events of the order service's HTTP routes carry an order
//!   snapshot as a JSON *string* in `payload.event`; ids and status missing
//!   from the payload are taken from it.

wit_bindgen::generate!({
    path: "../../wit/since_v1.0.0",
    world: "normalizer",
});

use exports::notification::normalizer::normalize::Guest;
use notification::normalizer::types::{Descriptor, Error, Fields, KafkaRecord};
use serde_json::Value;

struct CampusDelivery;

/// A usable id: a non-empty string other than "None"/"null", or an integer.
fn id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() && s != "None" && s != "null" => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The rules, on the raw record: the default's fields, refined.
pub fn fields_for(topic: &str, value: Option<&[u8]>) -> normalizer_rules::Fields {
    let mut f = normalizer_rules::normalize(value);
    let Some(doc) = value
        .map(|v| v.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(v))
        .and_then(|v| serde_json::from_slice::<Value>(v).ok())
    else {
        return f;
    };
    let payload = doc.get("payload");
    let kind = doc.get("type").and_then(Value::as_str).unwrap_or_default();

    if f.customer_id.is_none() && kind == "authorize_payment" {
        f.customer_id = id(payload.and_then(|p| p.pointer("/customer/clerkUserId")));
    }
    if f.customer_id.is_none() && (topic == "user_commands" || topic.ends_with("_user_commands")) {
        f.customer_id = id(payload.and_then(|p| p.get("user_id")));
    }
    if f.correlation_id.is_none() {
        f.correlation_id = id(payload.and_then(|p| p.get("saga_id")));
    }
    if kind.starts_with("ORDER_") {
        let snapshot = payload
            .and_then(|p| p.get("event"))
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok());
        if let Some(snapshot) = snapshot {
            let fill = |slot: &mut Option<String>, keys: &[&str]| {
                if slot.is_none() {
                    *slot = keys.iter().find_map(|k| id(snapshot.get(*k)));
                }
            };
            fill(&mut f.order_id, &["orderId", "order_id", "id"]);
            fill(&mut f.customer_id, &["customerId", "customer_id"]);
            fill(&mut f.runner_id, &["runnerId", "runner_id"]);
            fill(&mut f.status, &["status"]);
        }
    }
    f
}

fn to_wit(f: normalizer_rules::Fields) -> Fields {
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

impl Guest for CampusDelivery {
    fn describe() -> Descriptor {
        Descriptor { name: "campus-delivery".into(), version: env!("CARGO_PKG_VERSION").into() }
    }

    fn normalize(input: KafkaRecord) -> Result<Fields, Error> {
        Ok(to_wit(fields_for(&input.topic, input.value.as_deref())))
    }

    fn normalize_batch(records: Vec<KafkaRecord>) -> Vec<Result<Fields, Error>> {
        records.iter().map(|r| Ok(to_wit(fields_for(&r.topic, r.value.as_deref())))).collect()
    }
}

export!(CampusDelivery);
