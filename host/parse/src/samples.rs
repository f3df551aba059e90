//! The sample-record format of `notification-host normalize`: one JSON object
//! per line describing a Kafka record, optionally with the fields a normalizer
//! is expected to find. Lines printed by `kcat -J` are accepted too, so that
//! samples can be captured from a live topic.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::record::{Fields, Header, Normalized, Record};

/// The field names a sample's `expected` object may name.
pub const FIELD_NAMES: [&str; 7] =
    ["customer_id", "runner_id", "order_id", "event_type", "correlation_id", "source_service", "status"];

/// Keys of our own format.
const OWN_KEYS: [&str; 11] = [
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "key_b64",
    "headers",
    "value_text",
    "value_b64",
    "value",
    "expected",
];
/// Keys of `kcat -J` output.
const KCAT_KEYS: [&str; 5] = ["payload", "ts", "tstype", "broker", "key_schema_id"];

/// A parsed sample line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub record: Record,
    /// Expected values for the fields it names (`None`: expected null).
    pub expected: Option<BTreeMap<String, Option<String>>>,
}

/// Parses one sample line. The error says what is wrong, without the line
/// number (the caller adds it).
pub fn parse_line(line: &str) -> Result<Sample, String> {
    let members: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if let Some(unknown) = members.keys().find(|k| !OWN_KEYS.contains(&k.as_str()) && !KCAT_KEYS.contains(&k.as_str()))
    {
        return Err(format!("unknown key {unknown:?}"));
    }
    let get = |k: &str| members.get(k).map(|v| v.get());

    let topic: String = match get("topic") {
        Some(raw) => serde_json::from_str(raw).map_err(|_| "\"topic\" must be a string".to_string())?,
        None => return Err("missing \"topic\"".into()),
    };
    let partition: i32 = optional_number(get("partition"), "partition")?.unwrap_or(0);
    let offset: i64 = optional_number(get("offset"), "offset")?.unwrap_or(0);
    let timestamp: Option<i64> = match (get("timestamp"), get("ts")) {
        (Some(_), Some(_)) => return Err("give \"timestamp\" or \"ts\", not both".into()),
        (Some(raw), None) | (None, Some(raw)) => {
            serde_json::from_str(raw).map_err(|_| "the timestamp must be an integer (ms) or null".to_string())?
        }
        (None, None) => None,
    };
    let key: Option<Vec<u8>> = match (get("key"), get("key_b64")) {
        (Some(_), Some(_)) => return Err("give \"key\" or \"key_b64\", not both".into()),
        (Some(raw), None) => serde_json::from_str::<Option<String>>(raw)
            .map_err(|_| "\"key\" must be a string or null".to_string())?
            .map(String::into_bytes),
        (None, Some(raw)) => match serde_json::from_str::<Option<String>>(raw)
            .map_err(|_| "\"key_b64\" must be a base64 string or null".to_string())?
        {
            Some(t) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(t.as_bytes())
                    .map_err(|e| format!("\"key_b64\" is not valid base64: {e}"))?,
            ),
            None => None,
        },
        (None, None) => None,
    };
    let headers = match get("headers") {
        Some(raw) => parse_headers(raw)?,
        None => Vec::new(),
    };

    let given: Vec<&str> =
        ["value_text", "value_b64", "value", "payload"].into_iter().filter(|k| members.contains_key(*k)).collect();
    if given.len() > 1 {
        return Err(format!("give only one of value_text, value_b64, value (got {})", given.join(", ")));
    }
    let value: Option<Vec<u8>> = match given.first().copied() {
        None => None,
        Some(k @ ("value_text" | "payload")) => {
            let text: Option<String> = serde_json::from_str(get(k).unwrap_or("null"))
                .map_err(|_| format!("{k:?} must be a string or null"))?;
            text.map(String::into_bytes)
        }
        Some("value_b64") => {
            let text: Option<String> = serde_json::from_str(get("value_b64").unwrap_or("null"))
                .map_err(|_| "\"value_b64\" must be a base64 string or null".to_string())?;
            match text {
                Some(t) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(t.as_bytes())
                        .map_err(|e| format!("\"value_b64\" is not valid base64: {e}"))?,
                ),
                None => None,
            }
        }
        Some(_) => Some(minify(get("value").unwrap_or("null")).into_bytes()),
    };

    let expected = match get("expected") {
        Some(raw) => Some(parse_expected(raw)?),
        None => None,
    };

    Ok(Sample { record: Record { topic, partition, offset, timestamp, key, headers, value }, expected })
}

fn optional_number<T: serde::de::DeserializeOwned>(raw: Option<&str>, name: &str) -> Result<Option<T>, String> {
    match raw {
        Some(raw) => serde_json::from_str(raw).map_err(|_| format!("{name:?} must be an integer")),
        None => Ok(None),
    }
}

/// Headers as `{"name": "value" | null}` or, as `kcat -J` prints them, a flat
/// `["name", "value", ...]` array.
fn parse_headers(raw: &str) -> Result<Vec<Header>, String> {
    if let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw) {
        return map
            .into_iter()
            .map(|(key, v)| match v {
                serde_json::Value::String(s) => Ok(Header::new(key, Some(s.into_bytes()))),
                serde_json::Value::Null => Ok(Header::new(key, None)),
                _ => Err(format!("header {key:?} must be a string or null")),
            })
            .collect();
    }
    if let Ok(flat) = serde_json::from_str::<Vec<Option<String>>>(raw) {
        if flat.len() % 2 != 0 {
            return Err("a header array needs name/value pairs".into());
        }
        return flat
            .chunks(2)
            .map(|pair| match &pair[0] {
                Some(key) => Ok(Header::new(key.clone(), pair[1].clone().map(String::into_bytes))),
                None => Err("a header name cannot be null".to_string()),
            })
            .collect();
    }
    Err("\"headers\" must be an object of strings or a [name, value, ...] array".into())
}

fn parse_expected(raw: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let map: BTreeMap<String, Option<String>> =
        serde_json::from_str(raw).map_err(|_| "\"expected\" must be an object of strings or nulls".to_string())?;
    if let Some(unknown) = map.keys().find(|k| !FIELD_NAMES.contains(&k.as_str())) {
        return Err(format!("\"expected\" names an unknown field {unknown:?}"));
    }
    Ok(map)
}

/// A record as a sample line (no `expected`): coordinates, key, headers
/// (as a `[name, value, ...]` array, so repeated names and order survive)
/// and the exact value: `value_text` when it is UTF-8, else `value_b64`;
/// the key likewise. A header value that is not UTF-8 is written with
/// replacement characters, since the format holds header values as text.
pub fn to_line(record: &Record) -> String {
    use serde_json::{Map, Value, json};
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut line = Map::new();
    line.insert("topic".into(), json!(record.topic));
    line.insert("partition".into(), json!(record.partition));
    line.insert("offset".into(), json!(record.offset));
    line.insert("timestamp".into(), json!(record.timestamp));
    match record.key.as_deref().map(std::str::from_utf8) {
        None => {}
        Some(Ok(text)) => {
            line.insert("key".into(), json!(text));
        }
        Some(Err(_)) => {
            line.insert("key_b64".into(), json!(b64(record.key.as_deref().unwrap_or_default())));
        }
    }
    if !record.headers.is_empty() {
        let flat: Vec<Value> = record
            .headers
            .iter()
            .flat_map(|h| [json!(h.key), h.value.as_deref().map_or(Value::Null, |v| json!(String::from_utf8_lossy(v)))])
            .collect();
        line.insert("headers".into(), Value::Array(flat));
    }
    match record.value.as_deref().map(std::str::from_utf8) {
        None => {
            line.insert("value_text".into(), Value::Null);
        }
        Some(Ok(text)) => {
            line.insert("value_text".into(), json!(text));
        }
        Some(Err(_)) => {
            line.insert("value_b64".into(), json!(b64(record.value.as_deref().unwrap_or_default())));
        }
    }
    Value::Object(line).to_string()
}

/// Removes the insignificant white space from valid JSON text without
/// re-encoding anything, so numbers keep every digit and strings every escape.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// One output line of `notification-host normalize`.
#[derive(Debug, Serialize)]
pub struct OutputLine<'a> {
    pub customer_id: Option<&'a str>,
    pub runner_id: Option<&'a str>,
    pub order_id: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub source_service: Option<&'a str>,
    pub status: Option<&'a str>,
    pub normalizer: Option<&'a str>,
    pub error: Option<&'a str>,
    /// What was left out of the fields and why (a placeholder such as
    /// `"unknown"` where an id belongs); absent when nothing was.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub notes: &'a [String],
}

impl<'a> OutputLine<'a> {
    /// The line for a normalized record.
    pub fn normalized(n: &'a Normalized) -> Self {
        OutputLine {
            normalizer: Some(&n.normalizer),
            error: n.error.as_deref(),
            notes: &n.notes,
            ..Self::fields(&n.fields)
        }
    }

    /// The line for an input line that could not be parsed.
    pub fn malformed(error: &'a str) -> Self {
        OutputLine { error: Some(error), ..Self::fields(&EMPTY) }
    }

    fn fields(f: &'a Fields) -> Self {
        OutputLine {
            customer_id: f.customer_id.as_deref(),
            runner_id: f.runner_id.as_deref(),
            order_id: f.order_id.as_deref(),
            event_type: f.event_type.as_deref(),
            correlation_id: f.correlation_id.as_deref(),
            source_service: f.source_service.as_deref(),
            status: f.status.as_deref(),
            normalizer: None,
            error: None,
            notes: &[],
        }
    }
}

static EMPTY: Fields = Fields {
    customer_id: None,
    runner_id: None,
    order_id: None,
    event_type: None,
    correlation_id: None,
    source_service: None,
    status: None,
};

/// The value of the field named `name` (one of [`FIELD_NAMES`]).
pub fn field<'a>(f: &'a Fields, name: &str) -> Option<&'a str> {
    match name {
        "customer_id" => f.customer_id.as_deref(),
        "runner_id" => f.runner_id.as_deref(),
        "order_id" => f.order_id.as_deref(),
        "event_type" => f.event_type.as_deref(),
        "correlation_id" => f.correlation_id.as_deref(),
        "source_service" => f.source_service.as_deref(),
        "status" => f.status.as_deref(),
        _ => None,
    }
}

/// Every difference between what a sample expects and what was found, as
/// human-readable lines.
pub fn mismatches(expected: &BTreeMap<String, Option<String>>, found: &Fields) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(name, want)| {
            let got = field(found, name);
            (got != want.as_deref()).then(|| format!("{name}: expected {}, got {}", show(want.as_deref()), show(got)))
        })
        .collect()
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_lines_read_back_as_the_same_record() {
        let records = [
            Record {
                topic: "t".into(),
                partition: 2,
                offset: 41,
                timestamp: Some(1_700_000_000_000),
                key: Some(b"k-1".to_vec()),
                headers: vec![
                    Header::new("a", Some(b"1".to_vec())),
                    Header::new("a", None),
                    Header::new("b", Some(b"2".to_vec())),
                ],
                value: Some(br#"{"n": 1.50, "s": "\u00e9"}"#.to_vec()),
            },
            Record {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                timestamp: None,
                key: Some(vec![0xff, 0x00]),
                headers: vec![],
                value: Some(vec![0xfe, 0x01]),
            },
            Record {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                timestamp: None,
                key: None,
                headers: vec![],
                value: None,
            },
        ];
        for record in records {
            let sample = parse_line(&to_line(&record)).unwrap();
            assert_eq!(sample.record, record);
            assert_eq!(sample.expected, None);
        }
    }

    #[test]
    fn own_format_with_every_value_kind() {
        let s = parse_line(r#"{"topic": "t", "value_text": "{\"a\": 1}"}"#).unwrap();
        assert_eq!(s.record.value.as_deref(), Some(&b"{\"a\": 1}"[..]));
        let s = parse_line(r#"{"topic": "t", "value_b64": "/w=="}"#).unwrap();
        assert_eq!(s.record.value.as_deref(), Some(&[0xFF][..]));
        let s =
            parse_line(r#"{"topic": "t", "value": {"order_id": 123456789012345678901234567890, "s": "a b"}}"#).unwrap();
        assert_eq!(s.record.value.as_deref(), Some(&br#"{"order_id":123456789012345678901234567890,"s":"a b"}"#[..]));
        let s = parse_line(r#"{"topic": "t"}"#).unwrap();
        assert_eq!(s.record.value, None);
        let s = parse_line(r#"{"topic": "t", "value_text": null}"#).unwrap();
        assert_eq!(s.record.value, None);
    }

    #[test]
    fn kcat_json_lines() {
        let s = parse_line(
            r#"{"topic":"orders","partition":2,"offset":7,"tstype":"create","ts":1700000000000,"broker":1,"headers":["producer","svc","x",null],"key":"k1","payload":"{}"}"#,
        )
        .unwrap();
        assert_eq!(s.record.partition, 2);
        assert_eq!(s.record.offset, 7);
        assert_eq!(s.record.timestamp, Some(1_700_000_000_000));
        assert_eq!(s.record.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(s.record.header("producer"), Some("svc"));
        assert_eq!(s.record.headers[1].value, None);
        assert_eq!(s.record.value.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn malformed_lines_say_why() {
        assert!(parse_line("nope").unwrap_err().contains("not a JSON object"));
        assert!(parse_line(r#"{"value_text": "x"}"#).unwrap_err().contains("missing \"topic\""));
        assert!(parse_line(r#"{"topic": "t", "value_txt": "x"}"#).unwrap_err().contains("unknown key"));
        assert!(parse_line(r#"{"topic": "t", "value_text": "x", "value": 1}"#).unwrap_err().contains("only one"));
        assert!(parse_line(r#"{"topic": "t", "value_b64": "%%%"}"#).unwrap_err().contains("base64"));
        assert!(parse_line(r#"{"topic": "t", "expected": {"orderid": "x"}}"#).unwrap_err().contains("unknown field"));
    }

    #[test]
    fn mismatch_report() {
        let s = parse_line(r#"{"topic": "t", "expected": {"order_id": "o1", "status": null}}"#).unwrap();
        let found = Fields { order_id: Some("o2".into()), status: Some("s".into()), ..Fields::default() };
        let m = mismatches(s.expected.as_ref().unwrap(), &found);
        assert_eq!(m, vec![r#"order_id: expected "o1", got "o2""#, r#"status: expected null, got "s""#]);
    }
}
