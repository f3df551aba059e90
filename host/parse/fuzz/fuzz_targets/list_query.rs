//! Any query string of `GET /notifications`: the parser answers a checked
//! request or a client error, never panics; whatever it accepts is within
//! the documented bounds, and a cursor it hands out reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use notification_parse::request::{
    ListAfter, ListOrder, MAX_ID_BYTES, MAX_LIMIT, decode_cursor, decode_list_cursor, encode_cursor,
    encode_stored_cursor, list_request, valid_id,
};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    // The same text as a path segment (an order or correlation id).
    let _ = valid_id(query, "order id");
    match list_request(query) {
        Ok(request) => {
            assert!((1..=MAX_LIMIT).contains(&request.limit));
            let f = &request.filter;
            for id in [
                &f.customer_id,
                &f.runner_id,
                &f.order_id,
                &f.correlation_id,
                &f.event_type,
                &f.source_topic,
                &f.source_service,
            ]
            .into_iter()
            .flatten()
            {
                assert!(!id.is_empty() && id.len() <= MAX_ID_BYTES && !id.contains('\0'), "{id:?} accepted");
            }
            if let Some(after) = request.after {
                let cursor = match after {
                    ListAfter::Time(p) => encode_cursor(p, request.order == ListOrder::Newest),
                    ListAfter::Stored(p) => encode_stored_cursor(p),
                };
                assert_eq!(decode_list_cursor(&cursor, request.order), Ok(after));
                for other in [ListOrder::Oldest, ListOrder::Newest, ListOrder::Stored] {
                    if other != request.order {
                        assert!(decode_list_cursor(&cursor, other).is_err(), "a cursor is bound to its order");
                    }
                }
            }
        }
        Err(invalid) => assert!(!invalid.0.is_empty()),
    }
    // Any text as a cursor on its own.
    if let Ok(p) = decode_cursor(query, false) {
        assert_eq!(decode_cursor(&encode_cursor(p, false), false), Ok(p));
    }
});
