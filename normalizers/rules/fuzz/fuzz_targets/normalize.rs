//! Any bytes a producer can send: the default rules must answer (never
//! panic, never hang), and every field they return must be text the value
//! really contained (no placeholders).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fields = normalizer_rules::normalize(Some(data));
    for value in [
        &fields.customer_id,
        &fields.runner_id,
        &fields.order_id,
        &fields.event_type,
        &fields.correlation_id,
        &fields.source_service,
        &fields.status,
    ]
    .into_iter()
    .flatten()
    {
        assert!(!value.is_empty() && value != "None" && value != "null", "unusable value {value:?} returned");
    }
    // A second run gives the same answer.
    assert_eq!(normalizer_rules::normalize(Some(data)), fields);
});
