//! A record's page: the document laid out, the exact value, key, headers
//! (and the trace they name), coordinates, times, normalizer, error, note.

use chrono::TimeDelta;
use maud::{Markup, html};

use super::pages::{VALUE_SHOWN_BYTES, at, id_link};
use super::text::{clip, hex, hex_dump, pretty_json, span};
use crate::storage::{IdKind, Notification};

/// Most bytes of a value that is not UTF-8 shown as hex.
const HEX_SHOWN_BYTES: usize = 8 << 10;

/// One record whole: the document laid out, the exact value, key,
/// headers, coordinates, times, normalizer, error and note.
pub fn record(n: &Notification, value: Option<&[u8]>, document: Option<&str>, trace_url: Option<&str>) -> Markup {
    let api = format!("/notifications/{}", n.notification_id);
    let value_href = format!("/ui/record/{}/value", n.notification_id);
    let delay = n.kafka_timestamp.map(|t| n.stored_at - t);
    html! {
        h1 { "Record " (n.notification_id) }
        section class="summary" {
            p {
                code { (clip(&n.source_topic, 120)) } " partition " (n.kafka_partition.map_or("-".into(), |p| p.to_string()))
                " offset " (n.kafka_offset.map_or("-".into(), |o| o.to_string()))
                " · " a href=(api) { "this record over the API (JSON)" }
                @if value.is_some() { " · " a href=(value_href) { "the exact value (download)" } }
            }
            @if let Some(err) = &n.normalizer_error { p class="error-box" { strong { "Normalizer error: " } (clip(err, 4000)) } }
            @if let Some(note) = &n.ingest_note { p class="warn" { strong { "Ingest note: " } (clip(note, 4000)) } }
        }
        h2 { "What the normalizer found" }
        table class="kv" {
            tr { th { "normalizer" } td { code { (n.normalizer.as_deref().unwrap_or("—")) } } }
            @for (kind, label, value) in [(Some(IdKind::Order), "order", &n.order_id), (Some(IdKind::Customer), "customer", &n.customer_id),
                                           (Some(IdKind::Runner), "runner", &n.runner_id), (Some(IdKind::Correlation), "correlation id", &n.correlation_id),
                                           (None, "event type", &n.event_type), (None, "source service", &n.source_service), (None, "status", &n.status)] {
                tr { th { (label) } td {
                    @match (kind, value) {
                        (Some(k), Some(v)) => (id_link(k, v)),
                        (None, Some(v)) => code { (clip(v, 2000)) },
                        (_, None) => span class="muted" { "—" },
                    }
                } }
            }
        }
        h2 { "Kafka" }
        table class="kv" {
            tr { th { "topic" } td { code { (&n.source_topic) } } }
            tr { th { "partition, offset" } td { (n.kafka_partition.map_or("-".into(), |p| p.to_string())) ", " (n.kafka_offset.map_or("-".into(), |o| o.to_string())) } }
            tr { th { "record time" } td { (at(n.created_at)) " UTC" @if n.kafka_timestamp.is_none() { " " span class="muted" { "(the record had no usable timestamp)" } } } }
            tr { th { "stored at" } td { (at(n.stored_at)) " UTC"
                @if let Some(d) = delay { " " span class="muted" { "(" (span(d)) (if d >= TimeDelta::zero() { " after" } else { " before" }) " its record time)" } } } }
            tr { th { "key" } td { (bytes_inline(n.kafka_key.as_deref())) } }
            tr { th { "headers" } td { (headers(n.kafka_headers.as_deref())) } }
            @if let Some(trace) = &n.trace_id {
                tr { th { "trace" } td {
                    code { (trace) } " · " a href=(format!("/trace/{trace}")) { "the trace's records (JSON)" }
                    @if let Some(template) = trace_url { " · " a href=(template.replace("{trace_id}", trace)) rel="noreferrer" { "in the tracing UI" } }
                } }
            }
            tr { th { "value" } td { @match value { Some(v) => { (v.len()) " bytes" @if n.value_zstd.is_some() { " " span class="muted" { "(stored compressed: " (n.value_zstd.as_ref().map_or(0, Vec::len)) " bytes)" } } }, None if n.legacy_id.is_some() => "none: imported from the original service, which kept only its event", None => "a tombstone (no value)" } } }
            @if let Some(id) = &n.legacy_id { tr { th { "original service's id" } td { code { (id) } } } }
        }
        @if let Some(doc) = document {
            h2 { "Document" }
            @let (laid_out, cut) = pretty_json(doc, VALUE_SHOWN_BYTES);
            pre class="value" id="document" { (laid_out) }
            @if cut { p class="warn" { "The document is longer than " (VALUE_SHOWN_BYTES / 1024) " KiB and is cut here: see " a href=(api) { "the whole record" } "." } }
        }
        @if let Some(value) = value {
            h2 { "Exact value" }
            @match std::str::from_utf8(value) {
                Ok(text) => {
                    @let shown = clip_bytes(text, VALUE_SHOWN_BYTES);
                    pre class="value" id="value" { (shown) }
                    @if shown.len() < text.len() { p class="warn" { "The value is " (text.len()) " bytes; the first " (shown.len()) " are shown. " a href=(value_href) { "Download it whole" } "." } }
                },
                Err(_) => {
                    p class="muted" { "Not UTF-8 text; as hex:" }
                    @let (dump, cut) = hex_dump(value, HEX_SHOWN_BYTES);
                    pre class="value" id="value" { (dump) }
                    @if cut { p class="warn" { "The first " (HEX_SHOWN_BYTES) " of " (value.len()) " bytes are shown. " a href=(value_href) { "Download it whole" } "." } }
                },
            }
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn clip_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn bytes_inline(bytes: Option<&[u8]>) -> Markup {
    html! {
        @match bytes {
            None => span class="muted" { "none" },
            Some(b) => {
                @match std::str::from_utf8(b) {
                    Ok(text) => code { (clip(text, 2000)) },
                    Err(_) => { span class="muted" { "hex: " } code { (hex(&b[..b.len().min(512)])) @if b.len() > 512 { "…" } } },
                }
            },
        }
    }
}

/// The stored headers (JSON: `[{"key", "value" | "value_b64", "key_b64"?}]`).
fn headers(json: Option<&str>) -> Markup {
    let parsed: Vec<serde_json::Value> = json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    html! {
        @if parsed.is_empty() { span class="muted" { "none" } } @else {
            table class="list" {
                @for h in &parsed {
                    tr {
                        td { code { (clip(h["key"].as_str().unwrap_or_default(), 500)) } @if h.get("key_b64").is_some() { " " span class="badge" { "name not UTF-8" } } }
                        td {
                            @if let Some(v) = h["value"].as_str() { code { (clip(v, 2000)) } }
                            @else if let Some(b) = h["value_b64"].as_str() { span class="muted" { "base64: " } code { (clip(b, 2000)) } }
                            @else { span class="muted" { "null" } }
                        }
                    }
                }
            }
        }
    }
}
