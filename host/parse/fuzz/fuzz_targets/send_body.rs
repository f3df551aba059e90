//! Any body of `POST /send-notification`: the parser answers a checked
//! notification or a client error, never panics, and what it accepts can be
//! stored as it is (ids present, bounded, without NUL; an event given), with
//! the original service's rules (no runner is NULL, never "None" or "null").
#![no_main]

use libfuzzer_sys::fuzz_target;
use notification_parse::request::{MAX_ID_BYTES, parse_send};

fuzz_target!(|data: &[u8]| {
    match parse_send(data) {
        Ok(n) => {
            for id in [Some(&n.customer_id), Some(&n.order_id), n.runner_id.as_ref()].into_iter().flatten() {
                assert!(!id.is_empty() && id.len() <= MAX_ID_BYTES && !id.contains('\0'), "{id:?} accepted");
            }
            assert!(!n.event.is_null());
            if let Some(r) = &n.runner_id {
                assert!(r != "None" && r != "null", "{r:?} stored as a runner id");
            }
        }
        Err(invalid) => assert!(!invalid.0.is_empty()),
    }
});
