//! A notification as the API answers it: the original service's shape
//! (camelCase), with the Kafka coordinates and the normalizer, or with
//! `API_COMPAT=original` exactly the original's.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::config::ApiCompat;
use crate::storage::Notification;

/// A notification as the original service returned it (camelCase), plus the
/// Kafka coordinates and the normalizer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationBody {
    /// The row id: a number; a string with `API_COMPAT=original`, where a
    /// row imported from the original service answers the original's id.
    #[schema(value_type = i64)]
    pub notification_id: serde_json::Value,
    pub customer_id: Option<String>,
    pub runner_id: Option<String>,
    pub order_id: Option<String>,
    /// The stored JSON document; the value as text when it was not JSON;
    /// null for a tombstone. With `API_COMPAT=original`, a Kafka record's
    /// event is the original's wrapper instead.
    #[schema(value_type = Object)]
    pub event: Option<Box<RawValue>>,
    pub status: Option<String>,
    /// The record's time, RFC 3339 with offset (with `API_COMPAT=original`, a
    /// naive UTC time with microseconds): its own, or when it was stored if
    /// its own was too far ahead to trust (then `kafkaTimestamp` differs).
    pub created_at: String,
    pub source_topic: String,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub source_service: Option<String>,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    /// The record's time as its producer gave it, RFC 3339, when it differs
    /// from `createdAt` (see `RECORD_TIME_TOLERANCE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_timestamp: Option<String>,
    /// `name@version` of the normalizer that produced the ids.
    pub normalizer: Option<String>,
    pub normalizer_error: Option<String>,
    pub ingest_note: Option<String>,
    /// The record's key when it is UTF-8 text without NUL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_key: Option<String>,
    /// The record's key in base64, when it is not such text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_key_b64: Option<String>,
    /// The record's headers in order, repeats kept: `[{"key", "value"}]`,
    /// with `value_b64` for a value that is not UTF-8 text.
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_headers: Option<Box<RawValue>>,
    /// The original service's id of a row imported from it
    /// (`import-legacy`); absent for rows the host stored itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_id: Option<String>,
    /// In a timeline: `direct` (names the order) or `correlated` (shares a
    /// correlation id with one that does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<&'static str>,
}

impl NotificationBody {
    /// The notification in the shape `compat` asks for.
    pub fn new(n: Notification, compat: ApiCompat) -> NotificationBody {
        let original = compat == ApiCompat::Original;
        let value = n.value();
        let document = match crate::storage::document_text(n.event_json.as_deref(), value.as_deref()) {
            Some(json) => RawValue::from_string(json.to_owned()).ok(),
            None => value
                .as_deref()
                .and_then(|bytes| serde_json::to_string(&String::from_utf8_lossy(bytes)).ok())
                .and_then(|s| RawValue::from_string(s).ok()),
        };
        drop(value);
        let event = if original && n.kafka_offset.is_some() {
            original_wrapper(
                &n.source_topic,
                &n.event_type,
                &n.correlation_id,
                &n.source_service,
                n.stored_at,
                document,
            )
        } else {
            document
        };
        NotificationBody {
            notification_id: if original {
                serde_json::Value::String(n.legacy_id.clone().unwrap_or_else(|| n.notification_id.to_string()))
            } else {
                serde_json::Value::from(n.notification_id)
            },
            customer_id: n.customer_id,
            runner_id: n.runner_id,
            order_id: n.order_id,
            event,
            status: n.status,
            created_at: if original { naive_utc(n.created_at) } else { rfc3339(n.created_at) },
            source_topic: n.source_topic,
            event_type: n.event_type,
            correlation_id: n.correlation_id,
            source_service: n.source_service,
            kafka_partition: n.kafka_partition,
            kafka_offset: n.kafka_offset,
            kafka_timestamp: n.kafka_timestamp.filter(|t| *t != n.created_at).map(rfc3339),
            normalizer: n.normalizer,
            normalizer_error: n.normalizer_error,
            ingest_note: n.ingest_note,
            kafka_key: n.kafka_key.as_deref().and_then(key_text).map(str::to_owned),
            kafka_key_b64: n
                .kafka_key
                .as_deref()
                .filter(|k| key_text(k).is_none())
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
            kafka_headers: n.kafka_headers.filter(|h| h != "[]").and_then(|h| RawValue::from_string(h).ok()),
            legacy_id: n.legacy_id,
            relation: None,
        }
    }
}

/// A key as text, when it is UTF-8 without NUL.
fn key_text(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok().filter(|k| !k.contains('\0'))
}

/// The original service's `event` for a Kafka record: `topic`, `event_type`,
/// `correlation_id`, `source_service`, `timestamp` (when it was stored,
/// naive UTC) and `payload` (the document's `payload`, else its `data`, else
/// the whole document).
fn original_wrapper(
    topic: &str,
    event_type: &Option<String>,
    correlation_id: &Option<String>,
    source_service: &Option<String>,
    stored_at: DateTime<Utc>,
    document: Option<Box<RawValue>>,
) -> Option<Box<RawValue>> {
    let document: serde_json::Value =
        document.and_then(|d| serde_json::from_str(d.get()).ok()).unwrap_or(serde_json::Value::Null);
    let payload = match &document {
        serde_json::Value::Object(o) => o.get("payload").or_else(|| o.get("data")).cloned().unwrap_or(document.clone()),
        _ => document.clone(),
    };
    let wrapper = json!({
        "topic": topic,
        "event_type": event_type,
        "correlation_id": correlation_id,
        "source_service": source_service,
        "timestamp": naive_utc(stored_at),
        "payload": payload,
    });
    RawValue::from_string(wrapper.to_string()).ok()
}

impl From<Notification> for NotificationBody {
    fn from(n: Notification) -> Self {
        NotificationBody::new(n, ApiCompat::Current)
    }
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Python's `datetime.isoformat()` of a naive UTC time, as the original
/// service answered: microseconds, left out when they are zero.
pub(super) fn naive_utc(t: DateTime<Utc>) -> String {
    let naive = t.naive_utc();
    if naive.and_utc().timestamp_subsec_micros() == 0 {
        naive.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}
