//! What the REST API accepts: ids in paths and filters, the query string of
//! `GET /notifications` with its opaque cursors, and the body of
//! `POST /send-notification`. Each parser answers a value the storage layer
//! can use as it is, or an [`Invalid`] whose text is safe to show a client.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Longest id accepted in a path, a filter or a body. Ids of any length are
/// stored and indexed (by hash); this bounds only what a request may carry.
pub const MAX_ID_BYTES: usize = 32_768;
/// Page size of `GET /notifications` when none is given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size of `GET /notifications`.
pub const MAX_LIMIT: u32 = 1000;

/// A request the API refuses; the text says why and is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks an id taken from a path or a filter.
pub fn valid_id(value: &str, what: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(Invalid(format!("{what} must be 1 to {MAX_ID_BYTES} bytes long.")));
    }
    if value.contains('\0') {
        return Err(Invalid(format!("{what} must not contain NUL characters.")));
    }
    Ok(())
}

/// Filters of `GET /notifications`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    pub correlation_id: Option<String>,
    pub event_type: Option<String>,
    pub source_topic: Option<String>,
    pub source_service: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A keyset position in record-time order: the last row of the previous
/// page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub created_at: DateTime<Utc>,
    pub notification_id: i64,
}

/// A keyset position in stored order: the transaction that stored the last
/// row of the previous page, and its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPosition {
    pub stored_tx: i64,
    pub notification_id: i64,
}

/// The order of `GET /notifications`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Record time, oldest first (`asc`, the default).
    Oldest,
    /// Record time, newest first (`desc`).
    Newest,
    /// The order rows were stored in (`stored`): a page never skips a row,
    /// however late a record arrives or its writer commits.
    Stored,
}

/// Where a page of `GET /notifications` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListAfter {
    Time(Position),
    Stored(StoredPosition),
}

/// The query parameters of `GET /notifications`, as they arrive.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    customer_id: Option<String>,
    runner_id: Option<String>,
    order_id: Option<String>,
    correlation_id: Option<String>,
    event_type: Option<String>,
    source_topic: Option<String>,
    source_service: Option<String>,
    /// Only records at or after this time (RFC 3339).
    since: Option<String>,
    /// Only records before this time (RFC 3339).
    until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// `asc` (record time, oldest first; the default), `desc` (newest
    /// first), or `stored`: the order rows were stored in, with a cursor
    /// that never skips a row, however late a record arrives (for clients
    /// that tail the log). Record times are still returned, and `since` and
    /// `until` still filter by them.
    order: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A checked `GET /notifications` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: ListFilter,
    /// Where the previous page ended.
    pub after: Option<ListAfter>,
    pub order: ListOrder,
    pub limit: u32,
    /// Query parameters the endpoint does not know, ignored (as the
    /// original service ignored them: a cache-buster such as `_=123` must
    /// not fail a request).
    pub ignored: Vec<String>,
    /// The cursor as given, checked.
    pub cursor: Option<String>,
}

const LIST_PARAMS: [&str; 12] = [
    "customer_id",
    "runner_id",
    "order_id",
    "correlation_id",
    "event_type",
    "source_topic",
    "source_service",
    "since",
    "until",
    "limit",
    "order",
    "cursor",
];

/// Most ignored parameter names reported, and the longest name kept.
const IGNORED_SHOWN: usize = 20;
const IGNORED_NAME_BYTES: usize = 64;

/// The query string with only the `known` parameters, and the names of the
/// others (at most [`IGNORED_SHOWN`], each cut to [`IGNORED_NAME_BYTES`]).
fn known_only(query: &str, known: &[&str]) -> Result<(String, Vec<String>), Invalid> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| Invalid(format!("Invalid query: {e}.")))?;
    let (keep, skip): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(k, _)| known.contains(&k.as_str()));
    let mut ignored: Vec<String> = skip
        .into_iter()
        .map(|(k, _)| {
            let mut end = k.len().min(IGNORED_NAME_BYTES);
            while !k.is_char_boundary(end) {
                end -= 1;
            }
            k[..end].to_owned()
        })
        .collect();
    ignored.sort();
    ignored.dedup();
    ignored.truncate(IGNORED_SHOWN);
    let kept = serde_urlencoded::to_string(&keep).map_err(|e| Invalid(format!("Invalid query: {e}.")))?;
    Ok((kept, ignored))
}

/// Filters with no index of their own: a request must bound them by an id
/// or by a time range, or PostgreSQL would walk the whole log for a rare
/// value.
const UNINDEXED: [&str; 3] = ["event_type", "source_topic", "source_service"];

/// Parses the raw (still percent-encoded) query string of `GET /notifications`.
pub fn list_request(query: &str) -> Result<ListRequest, Invalid> {
    let (query, ignored) = known_only(query, &LIST_PARAMS)?;
    let p: ListParams = serde_urlencoded::from_str(&query).map_err(|e| Invalid(format!("Invalid query: {e}.")))?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Invalid(format!("limit must be between 1 and {MAX_LIMIT}.")));
    }
    let order = match p.order.as_deref() {
        None | Some("asc") => ListOrder::Oldest,
        Some("desc") => ListOrder::Newest,
        Some("stored") => ListOrder::Stored,
        Some(_) => return Err(Invalid("order must be asc, desc or stored.".into())),
    };
    for (value, what) in [
        (&p.customer_id, "customer_id"),
        (&p.runner_id, "runner_id"),
        (&p.order_id, "order_id"),
        (&p.correlation_id, "correlation_id"),
        (&p.event_type, "event_type"),
        (&p.source_topic, "source_topic"),
        (&p.source_service, "source_service"),
    ] {
        if let Some(v) = value {
            valid_id(v, what)?;
        }
    }
    let filter = ListFilter {
        customer_id: p.customer_id,
        runner_id: p.runner_id,
        order_id: p.order_id,
        correlation_id: p.correlation_id,
        event_type: p.event_type,
        source_topic: p.source_topic,
        source_service: p.source_service,
        since: p.since.as_deref().map(|s| parse_time(s, "since")).transpose()?,
        until: p.until.as_deref().map(|s| parse_time(s, "until")).transpose()?,
    };
    let by_id = filter.customer_id.is_some()
        || filter.runner_id.is_some()
        || filter.order_id.is_some()
        || filter.correlation_id.is_some();
    let by_range = filter.since.is_some() && filter.until.is_some();
    let unindexed = filter.event_type.is_some() || filter.source_topic.is_some() || filter.source_service.is_some();
    if unindexed && !by_id && !by_range {
        return Err(Invalid(format!(
            "{} have no index of their own: combine them with an id (customer_id, runner_id, order_id or \
             correlation_id) or a time range (since and until).",
            UNINDEXED.join(", ")
        )));
    }
    let after = p.cursor.as_deref().map(|c| decode_list_cursor(c, order)).transpose()?;
    Ok(ListRequest { filter, after, order, limit, ignored, cursor: p.cursor })
}

/// Most rows `GET /order/{id}` and `GET /correlation/{id}` return when the
/// request names no `limit`: far more than an order's events (tens), so an
/// ordinary order gets the original service's full answer in one response.
pub const DEFAULT_ROWS_PER_ID: u32 = 1000;
/// The largest `limit` those endpoints accept.
pub const MAX_ROWS_PER_ID: u32 = 10_000;

/// The query parameters of `GET /order/{id}` and `GET /correlation/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RowsParams {
    /// Most rows in the answer, 1 to 10,000 (default 1000). When more rows
    /// exist, the answer carries `Link: <...>; rel="next"` and `X-Next-Cursor`.
    limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous answer.
    cursor: Option<String>,
}

/// A checked request for the rows of one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsRequest {
    /// Where the previous answer ended.
    pub after: Option<Position>,
    pub limit: u32,
    /// Query parameters the endpoint does not know, ignored.
    pub ignored: Vec<String>,
}

/// Parses the query string of `GET /order/{id}` and `GET /correlation/{id}`:
/// where to start and how many rows at most. Parameters it does not know
/// are ignored, as the original service ignored them.
pub fn rows_request(query: &str) -> Result<RowsRequest, Invalid> {
    let (query, ignored) = known_only(query, &["limit", "cursor"])?;
    let p: RowsParams = serde_urlencoded::from_str(&query).map_err(|e| Invalid(format!("Invalid query: {e}.")))?;
    let limit = p.limit.unwrap_or(DEFAULT_ROWS_PER_ID);
    if !(1..=MAX_ROWS_PER_ID).contains(&limit) {
        return Err(Invalid(format!("limit must be between 1 and {MAX_ROWS_PER_ID}.")));
    }
    let after = p.cursor.as_deref().map(|c| decode_cursor(c, false)).transpose()?;
    Ok(RowsRequest { after, limit, ignored })
}

/// Names the query parameters a request may carry that an endpoint does
/// not know: they are ignored.
pub fn ignored_params(query: &str, known: &[&str]) -> Result<Vec<String>, Invalid> {
    known_only(query, known).map(|(_, ignored)| ignored)
}

/// Parses an RFC 3339 timestamp given as the parameter `what`.
pub fn parse_time(s: &str, what: &str) -> Result<DateTime<Utc>, Invalid> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Invalid(format!("{what} must be an RFC 3339 timestamp, e.g. 2025-04-04T10:00:00Z.")))
}

/// The earliest and latest times PostgreSQL's `timestamptz` holds, in
/// microseconds since the Unix epoch.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;
const PG_MAX_MICROS: i64 = 9_224_318_015_999_999;

/// Cursors are opaque to clients: base64url of `v1.<micros>.<id>.<a|d>`.
/// A cursor is bound to the order it was made for.
pub fn encode_cursor(p: Position, descending: bool) -> String {
    let raw =
        format!("v1.{}.{}.{}", p.created_at.timestamp_micros(), p.notification_id, if descending { 'd' } else { 'a' });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A cursor of stored order: base64url of `v1.<stored_tx>.<id>.s`.
pub fn encode_stored_cursor(p: StoredPosition) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1.{}.{}.s", p.stored_tx, p.notification_id))
}

/// Reads a cursor of `GET /notifications` made for `order`.
pub fn decode_list_cursor(cursor: &str, order: ListOrder) -> Result<ListAfter, Invalid> {
    match order {
        ListOrder::Oldest => decode_cursor(cursor, false).map(ListAfter::Time),
        ListOrder::Newest => decode_cursor(cursor, true).map(ListAfter::Time),
        ListOrder::Stored => {
            let invalid = || Invalid("cursor is not valid (use next_cursor from the previous page).".into());
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
            let text = String::from_utf8(bytes).map_err(|_| invalid())?;
            let parts: Vec<&str> = text.split('.').collect();
            let [version, tx, id, direction] = parts.as_slice() else { return Err(invalid()) };
            if *version != "v1" || *direction != "s" {
                return Err(invalid());
            }
            let stored_tx: i64 = tx.parse().map_err(|_| invalid())?;
            if stored_tx < 0 {
                return Err(invalid());
            }
            let notification_id = id.parse().map_err(|_| invalid())?;
            Ok(ListAfter::Stored(StoredPosition { stored_tx, notification_id }))
        }
    }
}

/// Reads a cursor made by [`encode_cursor`] for the same order.
pub fn decode_cursor(cursor: &str, descending: bool) -> Result<Position, Invalid> {
    let invalid = || Invalid("cursor is not valid (use next_cursor from the previous page).".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let parts: Vec<&str> = text.split('.').collect();
    let [version, micros, id, direction] = parts.as_slice() else { return Err(invalid()) };
    if *version != "v1" || *direction != if descending { "d" } else { "a" } {
        return Err(invalid());
    }
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    // Only times PostgreSQL can hold (4713 BC to 294276 AD): no stored row
    // lies beyond, and PostgreSQL refuses to compare with such a time.
    if !(PG_MIN_MICROS..=PG_MAX_MICROS).contains(&micros) {
        return Err(invalid());
    }
    let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let notification_id = id.parse().map_err(|_| invalid())?;
    Ok(Position { created_at, notification_id })
}

/// The original service's answer to a request without a body (or with a
/// body Python finds falsy: `null`, `{}`, `[]`, `""`, `0`, `false`).
pub const NO_DATA: &str = "No data provided";
/// The original service's answer when `customerId`, `orderId` or `event` is
/// missing or falsy (null, empty, zero).
pub const MISSING_FIELDS: &str = "Missing required fields";

/// A notification sent through `POST /send-notification`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiNotification {
    pub customer_id: String,
    pub order_id: String,
    /// NULL for an absent runner, as the original stored `""`, `"None"` and
    /// `"null"`.
    pub runner_id: Option<String>,
    /// The event as sent; stored wrapped as `{"message": <event>}`.
    pub event: Value,
}

/// Parses the body of `POST /send-notification` as the original service did:
/// `customerId`, `orderId` and `event` are required and must not be falsy
/// (missing, null, `""`, `0`, `false`, `{}` or `[]`); ids may be strings or
/// integers; `runnerId` is optional, and absent, null, `""`, `"None"` and
/// `"null"` all mean no runner. Where the original failed with a 500 (an id
/// that is an object, a body that is a JSON list), this answers 400 and says
/// why.
pub fn parse_send(body: &[u8]) -> Result<NewApiNotification, Invalid> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Invalid(NO_DATA.into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| Invalid("The body is not valid JSON.".into()))?;
    if !truthy(&value) {
        return Err(Invalid(NO_DATA.into()));
    }
    let Value::Object(mut fields) = value else {
        return Err(Invalid("The body must be a JSON object.".into()));
    };
    let (customer, order, event) = (fields.remove("customerId"), fields.remove("orderId"), fields.remove("event"));
    if ![&customer, &order, &event].iter().all(|v| v.as_ref().is_some_and(truthy)) {
        return Err(Invalid(MISSING_FIELDS.into()));
    }
    let customer_id = body_id(customer, "customerId")?.unwrap_or_default();
    let order_id = body_id(order, "orderId")?.unwrap_or_default();
    let runner_id = match fields.remove("runnerId") {
        Some(Value::String(s)) if ["", "None", "null"].contains(&s.as_str()) => None,
        other => body_id(other, "runnerId")?,
    };
    Ok(NewApiNotification { customer_id, order_id, runner_id, event: event.unwrap_or_default() })
}

/// Python's truthiness of a JSON value, which the original service tested.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// An id from the body: text, or an integer written as text; None when
/// absent or null.
fn body_id(v: Option<Value>, name: &str) -> Result<Option<String>, Invalid> {
    let text = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => return Err(Invalid(format!("{name} must be a string or an integer."))),
    };
    if text.len() > MAX_ID_BYTES || text.contains('\0') {
        return Err(Invalid(format!("{name} must be at most {MAX_ID_BYTES} bytes, without NUL.")));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let p = Position {
            created_at: DateTime::from_timestamp_micros(1_743_760_800_123_456).unwrap(),
            notification_id: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(p, false), false).unwrap(), p);
        assert!(decode_cursor(&encode_cursor(p, false), true).is_err(), "a cursor is bound to its order");
        for bad in ["", "!!", "djEuMS4y", &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1.x.1.a")] {
            assert!(decode_cursor(bad, false).is_err(), "{bad}");
        }
        // Times PostgreSQL cannot hold are refused, not passed on.
        for raw in ["v1.-1000000000000000000.1.a", "v1.9223372036854775807.1.a", "v1.-210866803200000001.1.a"] {
            let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            assert!(decode_cursor(&cursor, false).is_err(), "{raw}");
        }
        let edge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1.-210866803200000000.1.a");
        assert!(decode_cursor(&edge, false).is_ok(), "PostgreSQL's earliest time is a time");
    }

    #[test]
    fn list_queries() {
        let r = list_request("order_id=o%201&since=2025-04-04T10:00:00Z&order=desc&limit=5").unwrap();
        assert_eq!(r.filter.order_id.as_deref(), Some("o 1"));
        assert_eq!(r.order, ListOrder::Newest);
        assert_eq!(r.limit, 5);
        assert_eq!(list_request("").unwrap().limit, DEFAULT_LIMIT);
        for bad in ["limit=0", "limit=1001", "limit=-1", "order=up", "since=yesterday", "order_id=", "cursor=x"] {
            assert!(list_request(bad).is_err(), "{bad}");
        }
        // Unknown parameters are ignored, and named.
        let r = list_request("_=12345&order_id=o&nope=1&_=6").unwrap();
        assert_eq!(r.filter.order_id.as_deref(), Some("o"));
        assert_eq!(r.ignored, ["_", "nope"]);
        let r = rows_request("_=12345&limit=5").unwrap();
        assert_eq!((r.limit, r.ignored.as_slice()), (5, &["_".to_owned()][..]));
    }

    #[test]
    fn stored_cursors_round_trip_and_stay_in_their_order() {
        let p = StoredPosition { stored_tx: 123_456, notification_id: 42 };
        let c = encode_stored_cursor(p);
        assert_eq!(decode_list_cursor(&c, ListOrder::Stored), Ok(ListAfter::Stored(p)));
        assert!(decode_list_cursor(&c, ListOrder::Oldest).is_err(), "a cursor is bound to its order");
        let time = encode_cursor(Position { created_at: DateTime::UNIX_EPOCH, notification_id: 1 }, false);
        assert!(decode_list_cursor(&time, ListOrder::Stored).is_err());
        let r = list_request(&format!("order=stored&cursor={c}")).unwrap();
        assert_eq!((r.order, r.after), (ListOrder::Stored, Some(ListAfter::Stored(p))));
    }

    #[test]
    fn unindexed_filters_need_an_id_or_a_time_range() {
        for alone in ["event_type=x", "source_topic=t", "source_service=s", "event_type=x&since=2025-04-04T10:00:00Z"] {
            let e = list_request(alone).unwrap_err();
            assert!(e.0.contains("no index of their own"), "{alone}: {e}");
        }
        for bounded in [
            "event_type=x&order_id=o",
            "source_topic=t&customer_id=c",
            "source_service=s&since=2025-04-04T10:00:00Z&until=2025-04-05T10:00:00Z",
        ] {
            assert!(list_request(bounded).is_ok(), "{bounded}");
        }
    }

    #[test]
    fn send_body_validation() {
        assert!(parse_send(br#"{"customerId": "c", "orderId": 42, "event": "ORDER_CREATED"}"#).is_ok());
        let n = parse_send(br#"{"customerId": "c", "orderId": "o", "event": {"type": "x"}, "runnerId": "r"}"#).unwrap();
        assert_eq!((n.order_id.as_str(), n.runner_id.as_deref()), ("o", Some("r")));
        for runner in [r#""""#, r#""None""#, r#""null""#, "null"] {
            let body = format!(r#"{{"customerId": "c", "orderId": "o", "event": "x", "runnerId": {runner}}}"#);
            assert_eq!(parse_send(body.as_bytes()).unwrap().runner_id, None, "{runner}");
        }
        assert_eq!(parse_send(br#"{"customerId": "c", "orderId": "o", "event": "x"}"#).unwrap().runner_id, None);
        for no_data in [&b""[..], b"  ", b"null", b"{}", b"[]", b"\"\"", b"0", b"false"] {
            assert_eq!(parse_send(no_data), Err(Invalid(NO_DATA.into())), "{}", String::from_utf8_lossy(no_data));
        }
        for missing in [
            &br#"{"orderId": "o", "event": "e"}"#[..],
            br#"{"customerId": "", "orderId": "o", "event": "e"}"#,
            br#"{"customerId": "c", "orderId": 0, "event": "e"}"#,
            br#"{"customerId": "c", "orderId": "o"}"#,
            br#"{"customerId": "c", "orderId": "o", "event": ""}"#,
            br#"{"customerId": "c", "orderId": "o", "event": {}}"#,
            br#"{"customerId": null, "orderId": "o", "event": "e"}"#,
        ] {
            assert_eq!(
                parse_send(missing),
                Err(Invalid(MISSING_FIELDS.into())),
                "{}",
                String::from_utf8_lossy(missing)
            );
        }
        for bad in [
            &br#"[1]"#[..],
            br#"not json"#,
            br#"{"customerId": {"a": 1}, "orderId": "o", "event": "e"}"#,
            br#"{"customerId": "c", "orderId": 1.5, "event": "e"}"#,
            br#"{"customerId": "c", "orderId": "o", "event": "e", "runnerId": ["r"]}"#,
        ] {
            let e = parse_send(bad).unwrap_err();
            assert!(e.0 != NO_DATA && e.0 != MISSING_FIELDS, "{}: {e}", String::from_utf8_lossy(bad));
        }
    }
}
