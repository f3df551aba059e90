//! Any line given to `notification-host normalize` (or found in a module's
//! golden samples): the parser answers a sample or an error, never panics,
//! and a parsed sample goes through the rest of the command's path (the
//! built-in rules, the comparison with `expected`, the output line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use notification_parse::record::Normalized;
use notification_parse::samples::{FIELD_NAMES, OutputLine, mismatches, parse_line};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    match parse_line(line) {
        Ok(sample) => {
            // A parsed line parses the same way again.
            assert_eq!(parse_line(line).as_ref(), Ok(&sample));
            let fields = normalizer_rules::normalize(sample.record.value.as_deref());
            if let Some(expected) = &sample.expected {
                assert!(expected.keys().all(|k| FIELD_NAMES.contains(&k.as_str())), "unknown field accepted");
                let diffs = mismatches(expected, &fields);
                assert!(diffs.len() <= expected.len());
            }
            let normalized = Normalized { fields, normalizer: "default@1.0.0".into(), error: None, notes: Vec::new() };
            serde_json::to_string(&OutputLine::normalized(&normalized)).expect("an output line serializes");
        }
        Err(error) => {
            assert!(!error.is_empty());
            serde_json::to_string(&OutputLine::malformed(&error)).expect("an error line serializes");
        }
    }
});
