//! Rows from records: what is stored for a record and its normalizer's
//! answer (the value, once, compressed when that pays; NUL-free text;
//! representable times; headers as JSON), and the last-resort row for a
//! record PostgreSQL refuses.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::record::{Fields, Header, Normalized, Record};

/// One row of `notifications`, prepared from a record and what its
/// normalizer found.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub fields: Fields,
    pub created_at: DateTime<Utc>,
    pub source_topic: String,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub kafka_key: Option<Vec<u8>>,
    /// The headers as JSON text; None when the record has none.
    pub kafka_headers: Option<String>,
    pub kafka_timestamp: Option<DateTime<Utc>>,
    /// The exact value, when it is stored as it is.
    pub raw_value: Option<Vec<u8>>,
    /// The value as a zstd frame, when it is stored compressed (see
    /// [`super::value`]); exactly one of the two is set for a record that
    /// has a value.
    pub value_zstd: Option<Vec<u8>>,
    pub ingest_note: Option<String>,
    pub normalizer: Option<String>,
    pub normalizer_error: Option<String>,
    /// The record's own time was too far ahead to be trusted:
    /// `created_at` is when it was stored ([`TimeRule`]). Such a row is
    /// written so that a redelivery finds it though its `created_at` differs
    /// (see `storage/adjusted.rs`).
    pub time_adjusted: bool,
}

/// When a record's own time is trusted. A record dated more than
/// `tolerance` after it was stored (a clock in 2099, microseconds written as
/// milliseconds) would otherwise stay the latest of its order for ever and
/// escape retention; it is ordered and partitioned by the time it was
/// stored instead, its claimed time kept in `kafka_timestamp` and an ingest
/// note saying so. A record dated in the past is trusted however old: a
/// backfill keeps its history's times (and retention judges it by when it
/// was stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRule {
    /// How far ahead of the time it is stored a record's time may be.
    pub tolerance: chrono::Duration,
}

impl Default for TimeRule {
    fn default() -> Self {
        TimeRule { tolerance: chrono::Duration::minutes(10) }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl StoredRow {
    /// Prepares the row for a consumed record, its value stored as it is
    /// ([`StoredRow::compress_value`] compresses it), under the default
    /// [`TimeRule`].
    pub fn from_record(record: Record, normalized: Normalized) -> StoredRow {
        StoredRow::from_record_at(record, normalized, TimeRule::default(), Utc::now())
    }

    /// [`StoredRow::from_record`] at `now` under `rule`.
    pub fn from_record_at(record: Record, normalized: Normalized, rule: TimeRule, now: DateTime<Utc>) -> StoredRow {
        let mut notes = Vec::new();
        // A value that is not a JSON document is stored all the same; the
        // note says why the API answers it as text.
        if let Some(Err(reason)) = record.value.as_deref().map(any_json_document) {
            notes.push(reason);
        }
        let kafka_timestamp = match record.timestamp {
            Some(ms) => match representable_timestamp(ms) {
                Some(ts) => Some(ts),
                None => {
                    notes.push(format!("the record timestamp {ms} ms is outside what PostgreSQL can store"));
                    None
                }
            },
            None => {
                notes.push("the record has no timestamp".to_owned());
                None
            }
        };
        let time_adjusted = kafka_timestamp.is_some_and(|t| t > now + rule.tolerance);
        if let Some(claimed) = kafka_timestamp.filter(|_| time_adjusted) {
            notes.push(format!(
                "the record's time {} is more than {} s after it was stored; ordered by when it was stored",
                claimed.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                rule.tolerance.num_seconds()
            ));
        }
        notes.extend(normalized.notes);
        let (fields, nul_note) = without_nul(normalized.fields);
        notes.extend(nul_note);
        StoredRow {
            fields,
            // A fixed stand-in keeps the unique key stable across redeliveries.
            created_at: if time_adjusted { now } else { kafka_timestamp.unwrap_or(DateTime::UNIX_EPOCH) },
            time_adjusted,
            kafka_partition: Some(record.partition),
            kafka_offset: Some(record.offset),
            kafka_key: record.key,
            kafka_headers: (!record.headers.is_empty()).then(|| headers_json(&record.headers)),
            kafka_timestamp,
            raw_value: record.value,
            value_zstd: None,
            source_topic: record.topic,
            ingest_note: (!notes.is_empty()).then(|| notes.join("; ")),
            normalizer: Some(normalized.normalizer.replace('\0', "\u{FFFD}")),
            normalizer_error: normalized.error.map(|e| e.replace('\0', "\u{FFFD}")),
        }
    }

    /// The last resort for a record PostgreSQL refused: the exact value, key
    /// and headers, the Kafka coordinates and times, the normalizer's name,
    /// and a note saying what was dropped and why. Every text in it is the
    /// host's own, bounded and free of NUL: the headers are JSON the host
    /// wrote (NUL-free strings, anything else in base64), the note is cut to
    /// [`MAX_NOTE_BYTES`], and the topic name is bounded by Kafka. Nothing a
    /// normalizer or a JSON parser produced is left to refuse.
    pub fn last_resort(&self, reason: &str) -> StoredRow {
        let mut dropped = Vec::new();
        for (name, value) in named_fields(&self.fields) {
            if let Some(v) = value {
                dropped.push(format!("{name} ({} bytes)", v.len()));
            }
        }
        if let Some(e) = &self.normalizer_error {
            dropped.push(format!("the normalizer's error ({} bytes)", e.len()));
        }
        let normalizer = self.normalizer.clone().filter(|n| n.len() <= MAX_NORMALIZER_BYTES && !n.contains('\0'));
        if normalizer.is_none() && self.normalizer.is_some() {
            dropped.push("the normalizer's name".to_owned());
        }
        let mut note = format!(
            "PostgreSQL refused the row ({reason}); stored as a last resort with the exact value, key, headers and \
             Kafka coordinates; dropped: {}",
            if dropped.is_empty() { "nothing".to_owned() } else { dropped.join(", ") }
        );
        if let Some(earlier) = &self.ingest_note {
            note = format!("{earlier}; {note}");
        }
        StoredRow {
            fields: Fields::default(),
            created_at: self.created_at,
            source_topic: self.source_topic.clone(),
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
            kafka_key: self.kafka_key.clone(),
            kafka_headers: self.kafka_headers.clone(),
            kafka_timestamp: self.kafka_timestamp,
            raw_value: self.raw_value.clone(),
            value_zstd: self.value_zstd.clone(),
            ingest_note: Some(bounded_note(&note)),
            normalizer,
            normalizer_error: None,
            time_adjusted: self.time_adjusted,
        }
    }

    /// Stores the value as a zstd frame when that is an eighth smaller or
    /// more ([`super::value::compress`]); the exact bytes come back on every
    /// read.
    pub fn compress_value(&mut self) {
        if let Some(frame) = self.raw_value.as_deref().and_then(super::value::compress) {
            self.raw_value = None;
            self.value_zstd = Some(frame);
        }
    }

    /// The bytes of the value this row holds, compressed or not, for the
    /// batch's size bound.
    pub fn stored_value_bytes(&self) -> usize {
        self.raw_value.as_ref().or(self.value_zstd.as_ref()).map_or(0, Vec::len)
    }
}

/// The JSON document of a stored row: its `event` column where the row has
/// one (rows stored through the API, and Kafka records stored before the
/// value was kept once), or else the value itself when it is JSON.
pub fn document_text<'a>(event_json: Option<&'a str>, value: Option<&'a [u8]>) -> Option<&'a str> {
    event_json.or_else(|| any_json_document(value?).ok())
}

/// The value as JSON text (a leading byte order mark skipped), or why it is
/// not one the API can answer as a document. JSON with an unpaired
/// surrogate escape (`"\ud800"`) is refused too: strict parsers (Rust's
/// serde_json, Java's Jackson in its default mode) reject it, and one such
/// record must not make a whole answer unreadable, so it is answered as text.
fn any_json_document(bytes: &[u8]) -> Result<&str, String> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("the value is not valid UTF-8 (first invalid byte at {})", e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(if text.is_empty() { "the value is empty".into() } else { "the value is only white space".into() });
    }
    // Validates the whole document without building it (and without a depth
    // limit: nested values are skipped, not recursed into).
    serde_json::from_str::<&RawValue>(text).map_err(|e| format!("the value is not JSON: {e}"))?;
    if let Some(at) = unpaired_surrogate(text) {
        return Err(format!(
            "the value is JSON with an unpaired surrogate escape at byte {at}, which strict JSON parsers refuse"
        ));
    }
    Ok(text)
}

/// Where valid JSON text has a `\u` escape of a surrogate that is not half
/// of a pair, if anywhere.
fn unpaired_surrogate(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let escape = |at: usize| -> Option<u16> {
        let hex = b.get(at..at + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut i = 0;
    while let Some(pos) = b.get(i..).and_then(|rest| rest.iter().position(|&c| c == b'\\')) {
        let at = i + pos;
        match escape(at) {
            Some(0xD800..=0xDBFF) => match escape(at + 6) {
                Some(0xDC00..=0xDFFF) => i = at + 12,
                _ => return Some(at),
            },
            Some(0xDC00..=0xDFFF) => return Some(at),
            Some(_) => i = at + 6,
            // Any other escape is two characters (`\\` among them).
            None => i = at + 2,
        }
    }
    None
}

/// PostgreSQL's timestamptz covers 4713 BC to 294276 AD.
fn representable_timestamp(ms: i64) -> Option<DateTime<Utc>> {
    const MIN_MS: i64 = -210_866_803_200_000;
    const MAX_MS: i64 = 9_224_318_015_999_999;
    (MIN_MS..=MAX_MS).contains(&ms).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

/// The longest note the last resort writes; a longer one is cut, at a
/// character boundary, and says so.
pub const MAX_NOTE_BYTES: usize = 4096;

/// The longest normalizer name (`name@version`) the last resort keeps.
const MAX_NORMALIZER_BYTES: usize = 256;

fn bounded_note(note: &str) -> String {
    let clean = note.replace('\0', "\u{FFFD}");
    if clean.len() <= MAX_NOTE_BYTES {
        return clean;
    }
    const CUT: &str = " [note cut]";
    let mut end = MAX_NOTE_BYTES - CUT.len();
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &clean[..end])
}

/// The fields by column name.
fn named_fields(f: &Fields) -> [(&'static str, &Option<String>); 7] {
    [
        ("customer_id", &f.customer_id),
        ("runner_id", &f.runner_id),
        ("order_id", &f.order_id),
        ("event_type", &f.event_type),
        ("correlation_id", &f.correlation_id),
        ("source_service", &f.source_service),
        ("status", &f.status),
    ]
}

/// PostgreSQL text cannot hold NUL; such characters become U+FFFD and the
/// row says so. The exact value stays in `raw_value`.
fn without_nul(mut f: Fields) -> (Fields, Option<String>) {
    let mut touched = Vec::new();
    for (name, slot) in [
        ("customer_id", &mut f.customer_id),
        ("runner_id", &mut f.runner_id),
        ("order_id", &mut f.order_id),
        ("event_type", &mut f.event_type),
        ("correlation_id", &mut f.correlation_id),
        ("source_service", &mut f.source_service),
        ("status", &mut f.status),
    ] {
        if let Some(v) = slot.as_mut().filter(|v| v.contains('\0')) {
            *v = v.replace('\0', "\u{FFFD}");
            touched.push(name);
        }
    }
    let note = (!touched.is_empty()).then(|| format!("NUL characters replaced by U+FFFD in {}", touched.join(", ")));
    (f, note)
}

/// The inverse of [`headers_json`].
pub(super) fn headers_from_json(text: &str) -> Vec<Header> {
    #[derive(serde::Deserialize)]
    struct H {
        key: String,
        key_b64: Option<String>,
        value: Option<String>,
        value_b64: Option<String>,
    }
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.decode(s).ok();
    let parsed: Vec<H> = serde_json::from_str(text).unwrap_or_default();
    parsed
        .into_iter()
        .map(|h| {
            let value = match (h.value, h.value_b64) {
                (Some(v), _) => Some(v.into_bytes()),
                (None, Some(b)) => b64(b),
                (None, None) => None,
            };
            match h.key_b64.and_then(b64) {
                Some(name) => Header::from_bytes(name, value),
                None => Header::new(h.key, value),
            }
        })
        .collect()
}

/// Headers as a JSON array in their original order, every byte kept: a value
/// that is not NUL-free UTF-8 is given as base64 under `value_b64`, and a
/// name that is not (its text in `key` then has U+FFFD for what it cannot
/// show) also under `key_b64`.
fn headers_json(headers: &[Header]) -> String {
    let items: Vec<serde_json::Value> = headers
        .iter()
        .map(|h| {
            let mut item = serde_json::Map::new();
            item.insert("key".into(), h.key.replace('\0', "\u{FFFD}").into());
            let exact_name = h.key_bytes.clone().or_else(|| h.key.contains('\0').then(|| h.key.clone().into_bytes()));
            if let Some(name) = exact_name {
                item.insert("key_b64".into(), base64::engine::general_purpose::STANDARD.encode(name).into());
            }
            match h.value.as_deref() {
                None => {
                    item.insert("value".into(), serde_json::Value::Null);
                }
                Some(v) => match std::str::from_utf8(v) {
                    Ok(s) if !s.contains('\0') => {
                        item.insert("value".into(), s.into());
                    }
                    _ => {
                        item.insert("value_b64".into(), base64::engine::general_purpose::STANDARD.encode(v).into());
                    }
                },
            }
            serde_json::Value::Object(item)
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_documents_and_reasons() {
        assert_eq!(any_json_document(br#"{"a": 1}"#), Ok(r#"{"a": 1}"#));
        assert_eq!(any_json_document(b"\xEF\xBB\xBF[1]"), Ok("[1]"));
        assert_eq!(any_json_document(br#""str""#), Ok(r#""str""#));
        assert!(any_json_document(b"").unwrap_err().contains("empty"));
        assert!(any_json_document(b"  ").unwrap_err().contains("white space"));
        assert!(any_json_document(b"nope").unwrap_err().contains("not JSON"));
        assert!(any_json_document(b"{\"a\": \"\xff\"}").unwrap_err().contains("UTF-8"));
        // JSON that JSONB would refuse is JSON all the same.
        assert!(any_json_document(br#"{"a": "x\u0000y"}"#).is_ok());
        assert!(any_json_document(br#"{"a": "lone \ud800 surrogate"}"#).unwrap_err().contains("unpaired surrogate"));
        assert!(any_json_document(br#"{"a": "\udc00"}"#).is_err());
        assert!(any_json_document(br#"{"a": "pair \ud83d\ude00 ok", "b": "\\ud800 is text"}"#).is_ok());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(any_json_document(deep.as_bytes()).is_ok());
    }

    /// A repeated name, a null value and a binary value.
    fn mixed_headers() -> Vec<Header> {
        vec![Header::new("a", Some(b"1".to_vec())), Header::new("a", None), Header::new("bin", Some(vec![0xff, 0]))]
    }

    #[test]
    fn headers_keep_order_nulls_and_binary() {
        let h = mixed_headers();
        assert_eq!(
            headers_json(&h),
            r#"[{"key":"a","value":"1"},{"key":"a","value":null},{"key":"bin","value_b64":"/wA="}]"#
        );
    }

    #[test]
    fn headers_round_trip() {
        let h = mixed_headers();
        assert_eq!(headers_from_json(&headers_json(&h)), h);
    }

    #[test]
    fn header_names_that_are_not_text_keep_their_bytes() {
        let h = vec![Header::from_bytes(vec![0xff, b'n', 0xfe], Some(b"v".to_vec())), Header::new("with\0nul", None)];
        let json = headers_json(&h);
        assert_eq!(
            json,
            r#"[{"key":"�n�","key_b64":"/27+","value":"v"},{"key":"with�nul","key_b64":"d2l0aABudWw=","value":null}]"#
        );
        assert_eq!(headers_from_json(&json), h);
    }

    #[test]
    fn nul_in_fields_is_replaced_and_noted() {
        let (f, note) = without_nul(Fields { order_id: Some("a\0b".into()), ..Fields::default() });
        assert_eq!(f.order_id.as_deref(), Some("a\u{FFFD}b"));
        assert!(note.unwrap().contains("order_id"));
    }

    #[test]
    fn a_record_dated_too_far_ahead_is_ordered_by_when_it_was_stored() {
        let now = DateTime::from_timestamp(1_765_000_000, 0).unwrap();
        let at = |offset_s: i64| Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: Some((now.timestamp() + offset_s) * 1000),
            key: None,
            headers: vec![],
            value: Some(b"{}".to_vec()),
        };
        let rule = TimeRule { tolerance: chrono::Duration::minutes(10) };
        let row = |r| StoredRow::from_record_at(r, Normalized::default(), rule, now);
        let within = row(at(9 * 60));
        assert!(!within.time_adjusted && within.created_at == now + chrono::Duration::minutes(9));
        let ahead = row(at(3600));
        assert!(ahead.time_adjusted && ahead.created_at == now, "{ahead:?}");
        assert_eq!(ahead.kafka_timestamp, Some(now + chrono::Duration::hours(1)), "the claimed time is kept");
        assert!(ahead.ingest_note.as_deref().unwrap().contains("ordered by when it was stored"));
        let old = row(at(-86_400 * 3650));
        assert!(!old.time_adjusted, "the past is trusted however old");
    }

    #[test]
    fn timestamps_outside_postgres_range_fall_back() {
        assert!(representable_timestamp(1_700_000_000_000).is_some());
        assert!(representable_timestamp(i64::MAX).is_none());
        assert!(representable_timestamp(i64::MIN).is_none());
    }
}
